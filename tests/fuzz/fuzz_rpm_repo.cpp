// libFuzzer target: init-modules' dnf repository parsers on arbitrary text: .repo files (with
// $releasever and $basearch to substitute), dnf.conf's [main] gpgcheck, and repomd.xml through
// expat.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rpm_repo.hpp"

namespace rpm = kmodkit::init::rpm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const rpm::RepoVars vars{"9", "x86_64"};
  (void)rpm::parse_repo_file(text, "fuzz.repo", vars, rpm::GpgCheckDefault::off);
  (void)rpm::parse_main_gpgcheck(text, "dnf.conf", rpm::GpgCheckDefault::off);
  (void)rpm::parse_repomd_primary(text, "repomd.xml");
  return 0;
}
