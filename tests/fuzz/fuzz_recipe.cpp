// libFuzzer target: kmod-builder's recipe readers on arbitrary text: the JSON recipe and
// dkms.conf (read, never executed), and the canonical form of what they accept.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "recipe.hpp"

namespace kb = kmodkit::kmod_builder;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto r = kb::parse_json(text, "fuzz.json", "/nonexistent")) (void)r->canonical();
  if (auto r = kb::parse_dkms_conf(text, "dkms.conf", "/nonexistent")) (void)r->canonical();
  return 0;
}
