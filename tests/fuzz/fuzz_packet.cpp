// libFuzzer target: the firewall's packet parser (and the ICMP-quote parser after it) on
// arbitrary bytes. ASan and UBSan catch any read outside the frame; the data plane's inline
// fast path must give exactly what the full parser gives whenever it takes a packet.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>

#include "packet.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so reading past the end is a heap overflow ASan reports.
  std::vector<uint8_t> frame(data, data + size);
  const auto p = kmodkit::firewall::parse_packet(frame.data(), frame.size());
  kmodkit::firewall::Packet inner;
  (void)kmodkit::firewall::parse_quoted(frame.data(), frame.size(), p, &inner);
  kmodkit::firewall::Packet fast;
  if (kmodkit::firewall::parse_ipv4_fast(frame.data(), frame.size(), fast) && !(fast == p)) {
    std::fprintf(stderr, "parse_ipv4_fast and parse_packet disagree\n");
    std::abort();
  }
  return 0;
}
