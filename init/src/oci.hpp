#pragma once
// Container images as a source of kernel trees: the registry's Distribution API (OCI
// distribution-spec) over core's libcurl wrapper, and OCI image layers applied in order with their
// whiteouts (image-spec's layer.md).

#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::init::oci {

// An image reference: [registry/]repository[:tag][@sha256:hex]. Without a registry (no '.' or
// ':' in the first component, and not localhost) it is Docker Hub's, as docker pull reads it.
struct Reference {
  std::string registry;    // "quay.io", "127.0.0.1:5000"; "registry-1.docker.io" for Docker Hub
  std::string repository;  // "openshift/driver-toolkit"; "library/x" for Docker Hub's x
  std::string tag;         // "" when only a digest is given
  std::string digest;      // "sha256:<hex>" or ""
  std::string text;        // as given
};

// Parses an image reference; usage error (64) naming it when it is not one.
Result<Reference> parse_reference(std::string_view text);

// The Go architecture name (an image's platform) of a Debian architecture: amd64, arm64,
// armhf -> arm, i386 -> 386, ppc64el -> ppc64le, s390x.
std::string go_arch(std::string_view debian_arch);

}  // namespace kmodkit::init::oci
