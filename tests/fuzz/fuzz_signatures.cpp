// libFuzzer target: kmod-builder's signatures file (kmodkit-signatures/1, what build
// --signatures reads from a ConfigMap) on arbitrary text: JSON, the certificate it carries
// (OpenSSL's PEM and DER readers), base64 and each CMS signature.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "detached.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)kmodkit::kmod_builder::Signatures::parse(text, "signatures.json");
  (void)kmodkit::kmod_builder::signing::parse_certificate(text, "certificate");
  (void)kmodkit::kmod_builder::signing::signature_hash(text);
  return 0;
}
