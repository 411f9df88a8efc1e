// libFuzzer target: init-modules' image references (registry/repository:tag@digest, Docker
// Hub's defaults) on arbitrary text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "oci.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)kmodkit::init::oci::parse_reference(text);
  return 0;
}
