#pragma once
// Container images as a source of kernel trees: the registry's Distribution API (OCI
// distribution-spec) over core's libcurl wrapper, and OCI image layers applied in order with their
// whiteouts (image-spec's layer.md).

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

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

// One challenge of a WWW-Authenticate header (RFC 7235 section 4.1): its scheme as sent
// ("Bearer", "Basic") and its parameters, names lower-cased, quoted values unescaped.
struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};

// Parses a WWW-Authenticate value, which may hold several challenges ("Basic realm=\"r\", Bearer
// realm=\"https://auth/token\",service=\"reg\""). A token68 credential form is kept as the
// parameter "" . Data error (65) saying where the header stops being one: an unterminated quoted
// string, a parameter without a value, a character no token has.
Result<std::vector<Challenge>> parse_challenges(std::string_view header);

// A descriptor (image-spec's descriptor.md) as far as init-modules uses it.
struct Descriptor {
  std::string media_type;
  std::string digest;    // "sha256:<64 lower-case hex digits>"
  uint64_t size = 0;
  std::string platform;  // an index entry's "os/architecture[/variant]", "unknown" without one
};

// A manifest document as the registry sent it: an index (OCI image index or Docker manifest
// list) with its entries, or an image manifest (OCI or Docker schema 2) with its config and
// layers, each layer a tar, tar+gzip or tar+zstd one.
struct Manifest {
  std::string media_type;
  bool index = false;
  std::vector<Descriptor> manifests;  // an index's
  Descriptor config;                  // an image manifest's
  std::vector<Descriptor> layers;
};

// Parses a manifest or index; `content_type` is the response's Content-Type, used when the
// document names no mediaType. Data error (65) naming `where`: not a JSON object, another media
// type, an entry or layer without a sha256 digest, a layer that is not a tar.
Result<Manifest> parse_manifest(std::string_view body, std::string_view content_type, const std::string& where);

// The kernel-version label of an image config blob (a driver toolkit carries one), "" without.
std::string kernel_label(std::string_view config);

}  // namespace kmodkit::init::oci
