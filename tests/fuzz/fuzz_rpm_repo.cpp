// libFuzzer target: init-modules' dnf repository parsers on arbitrary text: .repo files (with
// $releasever and $basearch to substitute), dnf.conf's [main] gpgcheck, repomd.xml through
// expat, and primary.xml read as a stream (the split points taken from the input, so elements,
// attributes and UTF-8 sequences cross chunk boundaries).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "rpm_repo.hpp"

namespace rpm = kmodkit::init::rpm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const rpm::RepoVars vars{"9", "x86_64"};
  (void)rpm::parse_repo_file(text, "fuzz.repo", vars, rpm::GpgCheckDefault::off);
  (void)rpm::parse_main_gpgcheck(text, "dnf.conf", rpm::GpgCheckDefault::off);
  (void)rpm::parse_repomd_primary(text, "repomd.xml");

  size_t found = 0;
  rpm::PrimaryReader primary("primary.xml", "kernel-devel-uname-r", "5.14.0-362.8.1.el9_3.x86_64",
                             [&](rpm::Provider&& p) {
                               if (p.href.empty() || p.checksum.empty()) std::abort();  // the contract says 65
                               ++found;
                             });
  const size_t step = size == 0 ? 1 : 1 + data[0] % 64;
  bool ok = true;
  for (size_t at = 0; at < size && ok; at += step) ok = static_cast<bool>(primary.feed(text.substr(at, step)));
  if (ok) (void)primary.finish();
  return 0;
}
