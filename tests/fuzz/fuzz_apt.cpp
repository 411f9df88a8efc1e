// libFuzzer target: init-modules' Debian repository parsers on arbitrary text: Release and
// InRelease files (clear-signature armour stripped first), the Packages index fed in chunks
// (the split point taken from the input, so stanzas cross chunk boundaries), Depends fields,
// one-line sources.list and deb822 .sources files.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "apt.hpp"

namespace apt = kmodkit::init::apt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)apt::parse_release(apt::strip_clearsign(text));
  apt::PackagesParser packages("http://fuzz.invalid/debian", [](std::string_view) { return true; });
  const size_t cut = size == 0 ? 0 : data[0] % size;
  if (packages.feed(text.substr(0, cut)) && packages.feed(text.substr(cut))) {
    if (auto list = packages.finish()) {
      for (const auto& p : *list) (void)apt::parse_depends(p.depends);
    }
  }
  for (const auto& [key, value] : apt::parse_stanza(text)) (void)apt::parse_depends(value);
  (void)apt::parse_one_line(text, "fuzz.list");
  (void)apt::parse_deb822(text, "fuzz.sources");
  return 0;
}
