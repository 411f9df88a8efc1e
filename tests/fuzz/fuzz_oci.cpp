// libFuzzer target: init-modules' container image parsers on arbitrary text: image references
// ([registry/]repository[:tag][@digest], Docker Hub's defaults), the registry's WWW-Authenticate
// challenges (RFC 7235), manifests and indexes (OCI and Docker schema 2) and an image config's
// kernel-version label. What a parser accepts must hold what its contract says.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "oci.hpp"

namespace oci = kmodkit::init::oci;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)oci::parse_reference(text);
  if (auto challenges = oci::parse_challenges(text)) {
    if (challenges->empty()) std::abort();
    for (const auto& c : *challenges) {
      if (c.scheme.empty()) std::abort();
      for (const auto& [name, value] : c.params) {
        for (const char ch : name) {
          if (ch >= 'A' && ch <= 'Z') std::abort();  // names are lower-cased
        }
      }
    }
  }
  if (auto m = oci::parse_manifest(text, "application/vnd.oci.image.manifest.v1+json", "fuzz")) {
    for (const auto* list : {&m->manifests, &m->layers}) {
      for (const auto& d : *list) {
        if (d.digest.size() != 71 || !d.digest.starts_with("sha256:")) std::abort();
      }
    }
    if (!m->index && m->config.digest.size() != 71) std::abort();
  }
  (void)oci::kernel_label(text);
  return 0;
}
