#pragma once
// The packet parser of the data plane: Ethernet, 802.1Q/802.1ad tags, IPv4 (options,
// fragments), IPv6 (extension headers as far as needed to find L4), TCP, UDP, ICMP, ICMPv6,
// ARP. Works on a byte span (an mbuf's data), reads nothing outside it, allocates nothing and
// never throws: a packet it cannot trust comes back as malformed with the reason, for the
// drop counters.

#include <array>
#include <cstddef>
#include <cstdint>

namespace kmodkit::firewall {

enum class L3 : uint8_t { other, arp, ipv4, ipv6 };

// Why a packet was found malformed (one counter each). `none` for a packet that parsed.
enum class Malformed : uint8_t {
  none,
  short_ethernet,   // shorter than an Ethernet header
  short_vlan,       // a VLAN tag cut off
  too_many_vlans,   // more than two tags
  short_ipv4,       // IPv4 header cut off, or IHL < 5
  bad_ipv4_length,  // total length below the header or beyond the frame
  short_ipv6,       // IPv6 header cut off, or payload length beyond the frame
  bad_ipv6_chain,   // an extension header cut off, or too many of them
  short_l4,         // TCP/UDP/ICMP header cut off (first fragments and unfragmented packets)
  bad_tcp_offset,   // TCP data offset < 5 or beyond the segment
  count_,
};
const char* malformed_name(Malformed m);

// TCP flags, as in the header.
enum TcpFlag : uint8_t { fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10 };

struct Packet {
  L3 l3 = L3::other;
  Malformed malformed = Malformed::none;
  uint8_t vlans = 0;                 // tags seen (kept untouched: the firewall is transparent at L2)
  uint8_t proto = 0;                 // IP protocol / IPv6 next header of the L4 payload
  std::array<uint8_t, 16> src{}, dst{};  // addresses; IPv4 in the first 4 bytes
  uint16_t src_port = 0, dst_port = 0;   // TCP/UDP, host byte order
  uint8_t icmp_type = 0, icmp_code = 0;
  uint16_t icmp_id = 0;              // ICMP bytes 4-5, host byte order: a query's or reply's identifier
                                     // (read whatever the type; only queries and replies mean it so)
  uint8_t tcp_flags = 0;
  bool fragment = false;             // any fragment
  bool later_fragment = false;       // not the first fragment: no L4 header in it
  bool has_l4 = false;               // ports/type were read
  uint16_t l3_offset = 0, l4_offset = 0;
  uint16_t l4_length = 0;            // bytes from l4_offset to the end of the IP payload
  bool operator==(const Packet&) const = default;
};

// Parses `len` bytes of a frame starting at its Ethernet header into `p` (all of it rewritten).
// In place, for the data plane: a Packet returned by value and copied right away is read back
// with wide loads from narrow stores, which stalls store forwarding on every packet.
void parse_packet(const uint8_t* data, size_t len, Packet& p);
inline Packet parse_packet(const uint8_t* data, size_t len) {
  Packet p;
  parse_packet(data, len, p);
  return p;
}

// The common case of the data plane, inline: an untagged IPv4 packet without options that is
// not a fragment, carrying a complete TCP or UDP header. Fills `p` exactly as parse_packet
// would and returns true; returns false for anything else (then parse_packet decides). The fuzz
// target checks the two agree on every input.
inline bool parse_ipv4_fast(const uint8_t* d, size_t len, Packet& p) {
  if (len < 34 || d[12] != 0x08 || d[13] != 0x00 || d[14] != 0x45) return false;
  const uint8_t* ip = d + 14;
  const size_t total = static_cast<size_t>(ip[2]) << 8 | ip[3];
  if (total > len - 14 || (ip[6] & 0x3F) != 0 || ip[7] != 0) return false;  // beyond the frame, MF or offset
  const uint8_t proto = ip[9];
  const uint8_t* l4 = ip + 20;
  const size_t avail = total < 20 ? 0 : total - 20;
  if (proto == 6) {
    if (avail < 20) return false;
    const size_t offset = static_cast<size_t>(l4[12] >> 4) * 4;
    if (offset < 20 || offset > avail) return false;
  } else if (proto != 17 || avail < 8) {
    return false;
  }
  p = Packet{};
  p.l3 = L3::ipv4;
  p.proto = proto;
  __builtin_memcpy(p.src.data(), ip + 12, 4);
  __builtin_memcpy(p.dst.data(), ip + 16, 4);
  p.src_port = static_cast<uint16_t>(l4[0] << 8 | l4[1]);
  p.dst_port = static_cast<uint16_t>(l4[2] << 8 | l4[3]);
  if (proto == 6) p.tcp_flags = l4[13];
  p.has_l4 = true;
  p.l3_offset = 14;
  p.l4_offset = 34;
  p.l4_length = static_cast<uint16_t>(avail);
  return true;
}

// ICMP(v6) error messages (destination unreachable, time exceeded, parameter problem, packet
// too big) quote the IP header and first 8 bytes of the packet that caused them: the quoted
// packet parsed as if it had been sent the other way, so its flow can be looked up. Returns
// false when `outer` is not such an error or the quote is cut off.
bool parse_quoted(const uint8_t* data, size_t len, const Packet& outer, Packet* inner);

}  // namespace kmodkit::firewall
