#include "packet.hpp"

#include <cstring>

namespace kmodkit::firewall {
namespace {

constexpr uint16_t kEthIPv4 = 0x0800, kEthIPv6 = 0x86DD, kEthArp = 0x0806, kEthVlan = 0x8100, kEthQinQ = 0x88A8;
constexpr uint8_t kTcp = 6, kUdp = 17, kIcmp = 1, kIcmp6 = 58;

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// L4 fields of a first fragment or unfragmented packet; `avail` bytes of L4 are in the frame.
void parse_l4(const uint8_t* l4, size_t avail, Packet& p, bool quoted) {
  switch (p.proto) {
    case kTcp:
    case kUdp:
      // A quote carries only the first 8 bytes of the L4 header: ports are there, flags too
      // for TCP (bytes 13), so a quote is read as far as it goes.
      if (avail < (quoted ? 8u : p.proto == kTcp ? 20u : 8u)) {
        p.malformed = Malformed::short_l4;
        return;
      }
      p.src_port = be16(l4);
      p.dst_port = be16(l4 + 2);
      if (p.proto == kTcp && !quoted) {
        const size_t offset = static_cast<size_t>(l4[12] >> 4) * 4;
        if (offset < 20 || offset > avail) {
          p.malformed = Malformed::bad_tcp_offset;
          return;
        }
        p.tcp_flags = l4[13];
      }
      p.has_l4 = true;
      return;
    case kIcmp:
    case kIcmp6:
      if (avail < 8) {
        p.malformed = Malformed::short_l4;
        return;
      }
      p.icmp_type = l4[0];
      p.icmp_code = l4[1];
      p.icmp_id = be16(l4 + 4);
      p.has_l4 = true;
      return;
    default:
      return;  // other protocols: addresses only
  }
}

// Parses an IP packet at `ip` (`len` bytes to the end of the frame or quote).
void parse_ip(const uint8_t* base, const uint8_t* ip, size_t len, uint16_t ethertype, Packet& p, bool quoted) {
  p.l3_offset = static_cast<uint16_t>(ip - base);
  if (ethertype == kEthIPv4) {
    p.l3 = L3::ipv4;
    if (len < 20 || (ip[0] >> 4) != 4 || (ip[0] & 0x0F) < 5) {
      p.malformed = Malformed::short_ipv4;
      return;
    }
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0F) * 4;
    const size_t total = be16(ip + 2);
    if (ihl > len || (!quoted && (total < ihl || total > len))) {
      p.malformed = ihl > len ? Malformed::short_ipv4 : Malformed::bad_ipv4_length;
      return;
    }
    const size_t end = quoted ? len : total;  // Ethernet padding past total length is not payload
    p.proto = ip[9];
    std::memcpy(p.src.data(), ip + 12, 4);
    std::memcpy(p.dst.data(), ip + 16, 4);
    const uint16_t frag = be16(ip + 6);
    const uint16_t offset = frag & 0x1FFF;
    p.fragment = (frag & 0x2000) != 0 || offset != 0;
    p.later_fragment = offset != 0;
    p.l4_offset = static_cast<uint16_t>(p.l3_offset + ihl);
    p.l4_length = static_cast<uint16_t>(end - ihl);
    if (!p.later_fragment) parse_l4(ip + ihl, end - ihl, p, quoted);
    return;
  }
  p.l3 = L3::ipv6;
  if (len < 40 || (ip[0] >> 4) != 6) {
    p.malformed = Malformed::short_ipv6;
    return;
  }
  const size_t payload = be16(ip + 4);
  if (!quoted && 40 + payload > len) {
    p.malformed = Malformed::short_ipv6;
    return;
  }
  const size_t end = quoted ? len : 40 + payload;
  std::memcpy(p.src.data(), ip + 8, 16);
  std::memcpy(p.dst.data(), ip + 24, 16);
  uint8_t next = ip[6];
  size_t off = 40;
  // Extension headers: hop-by-hop, routing, fragment, destination options, AH; at most 8.
  for (int i = 0; i < 8; ++i) {
    if (next == 0 || next == 43 || next == 60 || next == 51) {
      if (off + 2 > end) {
        p.malformed = Malformed::bad_ipv6_chain;
        return;
      }
      const size_t hlen = next == 51 ? (static_cast<size_t>(ip[off + 1]) + 2) * 4 : (static_cast<size_t>(ip[off + 1]) + 1) * 8;
      if (off + hlen > end) {
        p.malformed = Malformed::bad_ipv6_chain;
        return;
      }
      next = ip[off];
      off += hlen;
      continue;
    }
    if (next == 44) {  // fragment header: 8 bytes
      if (off + 8 > end) {
        p.malformed = Malformed::bad_ipv6_chain;
        return;
      }
      const uint16_t frag = be16(ip + off + 2);
      p.fragment = true;
      p.later_fragment = (frag & 0xFFF8) != 0;
      next = ip[off];
      off += 8;
      continue;
    }
    break;
  }
  if (next == 0 || next == 43 || next == 60 || next == 51 || next == 44) {
    p.malformed = Malformed::bad_ipv6_chain;
    return;
  }
  p.proto = next;
  p.l4_offset = static_cast<uint16_t>(p.l3_offset + off);
  p.l4_length = static_cast<uint16_t>(end - off);
  if (!p.later_fragment) parse_l4(ip + off, end - off, p, quoted);
}

}  // namespace

const char* malformed_name(Malformed m) {
  static constexpr const char* names[] = {"none",      "short_ethernet", "short_vlan",     "too_many_vlans",
                                          "short_ipv4", "bad_ipv4_length", "short_ipv6",   "bad_ipv6_chain",
                                          "short_l4",  "bad_tcp_offset"};
  const auto i = static_cast<size_t>(m);
  return i < sizeof names / sizeof names[0] ? names[i] : "unknown";
}

void parse_packet(const uint8_t* data, size_t len, Packet& p) {
  p = Packet{};
  if (len < 14) {
    p.malformed = Malformed::short_ethernet;
    return;
  }
  size_t off = 12;
  uint16_t type = be16(data + off);
  while (type == kEthVlan || type == kEthQinQ) {
    if (++p.vlans > 2) {
      p.malformed = Malformed::too_many_vlans;
      return;
    }
    off += 4;
    if (off + 2 > len) {
      p.malformed = Malformed::short_vlan;
      return;
    }
    type = be16(data + off);
  }
  off += 2;
  if (type == kEthArp) {
    p.l3 = L3::arp;
    return;
  }
  if (type != kEthIPv4 && type != kEthIPv6) return;  // other L2 protocols: policy decides
  parse_ip(data, data + off, len - off, type, p, false);
}

bool parse_quoted(const uint8_t* data, size_t len, const Packet& outer, Packet* inner) {
  if (!outer.has_l4 || outer.malformed != Malformed::none) return false;
  const bool v4 = outer.l3 == L3::ipv4 && outer.proto == kIcmp &&
                  (outer.icmp_type == 3 || outer.icmp_type == 11 || outer.icmp_type == 12);
  const bool v6 = outer.l3 == L3::ipv6 && outer.proto == kIcmp6 && outer.icmp_type >= 1 && outer.icmp_type <= 4;
  if (!v4 && !v6) return false;
  const size_t quote = static_cast<size_t>(outer.l4_offset) + 8;  // after the ICMP header
  const size_t end = static_cast<size_t>(outer.l4_offset) + outer.l4_length;
  if (quote >= end || end > len) return false;
  *inner = Packet{};
  inner->vlans = outer.vlans;
  parse_ip(data, data + quote, end - quote, v4 ? kEthIPv4 : kEthIPv6, *inner, true);
  return inner->malformed == Malformed::none && inner->has_l4;
}

}  // namespace kmodkit::firewall
