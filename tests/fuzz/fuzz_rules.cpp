// libFuzzer target: the firewall's rules parser on arbitrary text. It must return a rule set or
// an error naming FILE:LINE:COL, never crash, read out of bounds or overflow (ASan, UBSan).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rules.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto rules = kmodkit::firewall::parse_rules(text, "fuzz.rules");
  (void)rules;
  return 0;
}
