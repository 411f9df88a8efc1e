// libFuzzer target: seed-data's readers on arbitrary text: seed.json (what it remembers on the
// volume of each file it seeded, which decides what is the operator's edit) and its --config
// file. An accepted seed.json writes back to text that reads again unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "seed.hpp"

namespace seed = kmodkit::seed;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto m = seed::parse_manifest(text, "seed.json")) {
    const std::string again = seed::manifest_json(*m);
    auto back = seed::parse_manifest(again, "again.json");
    if (!back || seed::manifest_json(*back) != again) std::abort();
  }
  seed::Config config;
  (void)seed::parse_config(text, "seed-data.json", config);
  return 0;
}
