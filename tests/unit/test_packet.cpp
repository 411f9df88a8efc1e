// The data plane's packet parser on crafted frames: fields, fragments, extension headers,
// ICMP errors quoting a flow, and every truncation of every frame.
#include <catch2/catch.hpp>

#include <vector>

#include "packet.hpp"

using namespace kmodkit::firewall;
using Bytes = std::vector<uint8_t>;

namespace {

void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

Bytes ethernet(uint16_t type, int vlans = 0) {
  Bytes b(12, 0xAA);
  for (int i = 0; i < vlans; ++i) {
    put16(b, i == 0 && vlans == 2 ? 0x88A8 : 0x8100);
    put16(b, static_cast<uint16_t>(100 + i));
  }
  put16(b, type);
  return b;
}

Bytes ipv4(uint8_t proto, const Bytes& payload, uint16_t frag = 0, int option_words = 0) {
  Bytes b;
  b.push_back(static_cast<uint8_t>(0x40 | (5 + option_words)));
  b.push_back(0);
  put16(b, static_cast<uint16_t>(20 + option_words * 4 + payload.size()));
  put16(b, 1);
  put16(b, frag);
  b.push_back(64);
  b.push_back(proto);
  put16(b, 0);
  for (uint8_t x : {10, 0, 0, 1, 192, 0, 2, 7}) b.push_back(x);
  for (int i = 0; i < option_words * 4; ++i) b.push_back(1);  // NOPs
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes ipv6(uint8_t next, const Bytes& payload) {
  Bytes b = {0x60, 0, 0, 0};
  put16(b, static_cast<uint16_t>(payload.size()));
  b.push_back(next);
  b.push_back(64);
  for (int i = 0; i < 16; ++i) b.push_back(i == 0 ? 0x20 : i == 15 ? 1 : 0);
  for (int i = 0; i < 16; ++i) b.push_back(i == 0 ? 0x20 : i == 15 ? 2 : 0);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint8_t offset_words = 5) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  for (int i = 0; i < 8; ++i) b.push_back(0);
  b.push_back(static_cast<uint8_t>(offset_words << 4));
  b.push_back(flags);
  for (int i = 0; i < 6; ++i) b.push_back(0);
  return b;
}

Bytes udp(uint16_t sport, uint16_t dport) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put16(b, 8);
  put16(b, 0);
  return b;
}

Bytes icmp(uint8_t type, uint8_t code, uint16_t id, const Bytes& rest = {}) {
  Bytes b = {type, code, 0, 0};
  put16(b, id);
  put16(b, 1);
  b.insert(b.end(), rest.begin(), rest.end());
  return b;
}

Bytes frame(Bytes eth, const Bytes& l3) {
  eth.insert(eth.end(), l3.begin(), l3.end());
  return eth;
}

Packet parse(const Bytes& b) { return parse_packet(b.data(), b.size()); }

}  // namespace

TEST_CASE("a tagged IPv4 TCP SYN gives addresses, ports and flags", "[unit][packet]") {
  const auto f = frame(ethernet(0x0800, 1), ipv4(6, tcp(40000, 443, TcpFlag::syn)));
  const auto p = parse(f);
  CHECK(p.malformed == Malformed::none);
  CHECK(p.l3 == L3::ipv4);
  CHECK(p.vlans == 1);
  CHECK(p.proto == 6);
  CHECK(p.src[0] == 10);
  CHECK(p.dst[3] == 7);
  CHECK(p.src_port == 40000);
  CHECK(p.dst_port == 443);
  CHECK(p.tcp_flags == TcpFlag::syn);
  CHECK(p.l3_offset == 18);
  CHECK(p.l4_offset == 38);
}

TEST_CASE("IPv4 options, fragments, QinQ and Ethernet padding", "[unit][packet]") {
  auto opts = parse(frame(ethernet(0x0800, 2), ipv4(17, udp(53, 5353), 0, 2)));
  CHECK(opts.malformed == Malformed::none);
  CHECK(opts.vlans == 2);
  CHECK(opts.l4_offset == 14 + 8 + 28);
  CHECK(opts.dst_port == 5353);

  auto first = parse(frame(ethernet(0x0800), ipv4(17, udp(1, 2), 0x2000)));  // MF, offset 0
  CHECK(first.fragment);
  CHECK_FALSE(first.later_fragment);
  CHECK(first.has_l4);
  auto later = parse(frame(ethernet(0x0800), ipv4(17, Bytes(16, 0), 0x0003)));  // offset 24 bytes
  CHECK(later.fragment);
  CHECK(later.later_fragment);
  CHECK_FALSE(later.has_l4);
  CHECK(later.malformed == Malformed::none);

  auto padded = frame(ethernet(0x0800), ipv4(17, udp(7, 9)));
  padded.resize(60, 0);  // minimum frame size
  auto pp = parse(padded);
  CHECK(pp.malformed == Malformed::none);
  CHECK(pp.l4_length == 8);
}

TEST_CASE("IPv6 extension headers are walked to find L4, fragments included", "[unit][packet]") {
  Bytes hop = {44, 0, 1, 4, 0, 0, 0, 0};  // hop-by-hop, next: fragment
  Bytes frag = {17, 0, 0, 1, 0, 0, 0, 7};  // fragment offset 0, M set, next: UDP
  Bytes payload = hop;
  payload.insert(payload.end(), frag.begin(), frag.end());
  auto u = udp(546, 547);
  payload.insert(payload.end(), u.begin(), u.end());
  auto p = parse(frame(ethernet(0x86DD), ipv6(0, payload)));
  CHECK(p.malformed == Malformed::none);
  CHECK(p.l3 == L3::ipv6);
  CHECK(p.fragment);
  CHECK_FALSE(p.later_fragment);
  CHECK(p.proto == 17);
  CHECK(p.src_port == 546);
  CHECK(p.src[15] == 1);

  auto echo = parse(frame(ethernet(0x86DD), ipv6(58, icmp(128, 0, 0x1234))));
  CHECK(echo.icmp_type == 128);
  CHECK(echo.icmp_id == 0x1234);
  auto arp = parse(frame(ethernet(0x0806), Bytes(28, 0)));
  CHECK(arp.l3 == L3::arp);
}

TEST_CASE("an ICMP error quotes the flow it is about", "[unit][packet]") {
  // Port unreachable from 192.0.2.7 about a UDP packet 10.0.0.1:5000 -> 192.0.2.7:53.
  const auto quoted = ipv4(17, udp(5000, 53));
  auto f = frame(ethernet(0x0800), ipv4(1, icmp(3, 3, 0, Bytes(quoted.begin(), quoted.begin() + 28))));
  const auto outer = parse(f);
  REQUIRE(outer.malformed == Malformed::none);
  Packet inner;
  REQUIRE(parse_quoted(f.data(), f.size(), outer, &inner));
  CHECK(inner.proto == 17);
  CHECK(inner.src_port == 5000);
  CHECK(inner.dst_port == 53);
  // An echo request quotes nothing.
  auto ping = frame(ethernet(0x0800), ipv4(1, icmp(8, 0, 7)));
  CHECK_FALSE(parse_quoted(ping.data(), ping.size(), parse(ping), &inner));
}

TEST_CASE("malformed frames are named, never read past their end", "[unit][packet]") {
  CHECK(parse(Bytes(10, 0)).malformed == Malformed::short_ethernet);
  CHECK(parse(frame(ethernet(0x8100), {})).malformed == Malformed::short_vlan);
  auto three = ethernet(0x8100, 2);
  three.resize(three.size() - 2);
  put16(three, 0x8100);
  put16(three, 1);
  put16(three, 0x0800);
  CHECK(parse(three).malformed == Malformed::too_many_vlans);
  auto ihl = frame(ethernet(0x0800), ipv4(6, tcp(1, 2, 0)));
  ihl[14] = 0x44;
  CHECK(parse(ihl).malformed == Malformed::short_ipv4);
  auto total = frame(ethernet(0x0800), ipv4(6, tcp(1, 2, 0)));
  total[16] = 0x10;  // total length 4096, beyond the frame
  CHECK(parse(total).malformed == Malformed::bad_ipv4_length);
  CHECK(parse(frame(ethernet(0x0800), ipv4(6, tcp(1, 2, 0, 15)))).malformed == Malformed::bad_tcp_offset);
  CHECK(parse(frame(ethernet(0x0800), ipv4(6, Bytes(10, 0)))).malformed == Malformed::short_l4);
  CHECK(parse(frame(ethernet(0x86DD), ipv6(0, Bytes{17, 9}))).malformed == Malformed::bad_ipv6_chain);

  // Every prefix of every valid frame parses without reading past its end (the ASan build
  // checks the reads); a cut frame is malformed or stops before L4, never a wrong port.
  const std::vector<Bytes> frames = {
      frame(ethernet(0x0800, 1), ipv4(6, tcp(40000, 443, TcpFlag::syn))),
      frame(ethernet(0x0800, 2), ipv4(17, udp(53, 5353), 0, 2)),
      frame(ethernet(0x86DD), ipv6(58, icmp(128, 0, 1))),
      frame(ethernet(0x0800), ipv4(1, icmp(3, 3, 0, ipv4(17, udp(5000, 53))))),
  };
  for (const auto& f : frames) {
    const auto whole = parse(f);
    REQUIRE(whole.malformed == Malformed::none);
    for (size_t n = 0; n < f.size(); ++n) {
      Bytes cut(f.begin(), f.begin() + static_cast<long>(n));
      cut.shrink_to_fit();
      const auto p = parse(cut);
      INFO("cut at " << n);
      if (p.has_l4 && whole.has_l4) CHECK(p.src_port == whole.src_port);
      Packet inner;
      (void)parse_quoted(cut.data(), cut.size(), p, &inner);
    }
  }
  CHECK(std::string(malformed_name(Malformed::bad_tcp_offset)) == "bad_tcp_offset");
}

TEST_CASE("the inline IPv4 fast path takes the common packets and agrees with the full parser", "[unit][packet]") {
  Bytes with_options = tcp(40000, 443, TcpFlag::ack, 8);
  with_options.resize(32, 1);  // 12 bytes of TCP options (NOPs)
  const Bytes common[] = {
      frame(ethernet(0x0800), ipv4(6, tcp(40000, 443, TcpFlag::syn))),
      frame(ethernet(0x0800), ipv4(6, with_options)),
      frame(ethernet(0x0800), ipv4(17, udp(5353, 53))),
  };
  for (const auto& f : common) {
    Packet fast;
    REQUIRE(parse_ipv4_fast(f.data(), f.size(), fast));
    CHECK(fast == parse(f));
  }
  Bytes padded = frame(ethernet(0x0800), ipv4(17, udp(1, 2)));
  padded.resize(60, 0);  // Ethernet padding past the IP total length
  Packet fast;
  REQUIRE(parse_ipv4_fast(padded.data(), padded.size(), fast));
  CHECK(fast == parse(padded));
  CHECK(fast.l4_length == 8);
  // Everything else is left to the full parser.
  const Bytes others[] = {
      frame(ethernet(0x0800, 1), ipv4(6, tcp(1, 2, TcpFlag::syn))),            // VLAN tag
      frame(ethernet(0x0800), ipv4(6, tcp(1, 2, TcpFlag::syn), 0, 1)),         // IP options
      frame(ethernet(0x0800), ipv4(17, udp(1, 2), 0x2000)),                    // first fragment
      frame(ethernet(0x0800), ipv4(17, udp(1, 2), 0x0010)),                    // later fragment
      frame(ethernet(0x0800), ipv4(1, icmp(8, 0, 7))),                         // ICMP
      frame(ethernet(0x0800), ipv4(6, tcp(1, 2, TcpFlag::syn, 4))),            // bad TCP offset
      frame(ethernet(0x86DD), ipv6(17, udp(1, 2))),                            // IPv6
  };
  for (const auto& f : others) {
    Packet p;
    CHECK_FALSE(parse_ipv4_fast(f.data(), f.size(), p));
  }
  Bytes cut = frame(ethernet(0x0800), ipv4(6, tcp(1, 2, TcpFlag::syn)));
  cut.resize(cut.size() - 1);  // total length beyond the frame
  Packet p;
  CHECK_FALSE(parse_ipv4_fast(cut.data(), cut.size(), p));
}
