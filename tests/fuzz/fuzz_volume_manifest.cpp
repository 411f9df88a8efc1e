// libFuzzer target: the modules volume's tree manifest (<vol>/.kmodkit/kernels/<kver>.json, which
// kmod-builder trusts to find the headers) on arbitrary text. What it accepts names paths inside
// the volume, and writes back to text it reads again unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kmodkit/volume.hpp"

using kmodkit::volume::Manifest;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = Manifest::from_json(text, "fuzz.json");
  if (!m) return 0;
  if (m->headers.empty() || m->headers.starts_with('/') || m->modules.starts_with('/')) std::abort();
  const std::string again = m->to_json();
  auto back = Manifest::from_json(again, "again.json");
  if (!back || back->to_json() != again) std::abort();
  return 0;
}
