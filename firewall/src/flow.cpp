#include "flow.hpp"

#include <cstring>

namespace kmodkit::firewall {
namespace {

// Compares two addresses' bytes as unsigned big-endian words: <0, 0, >0 as memcmp would.
template <typename Word>
int compare_be(const uint8_t* a, const uint8_t* b) {
  Word x, y;
  std::memcpy(&x, a, sizeof x);
  std::memcpy(&y, b, sizeof y);
  if constexpr (sizeof(Word) == 8) {
    x = __builtin_bswap64(x);
    y = __builtin_bswap64(y);
  } else {
    x = __builtin_bswap32(x);
    y = __builtin_bswap32(y);
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

// ICMP queries and their replies: the request's type for a reply's, 0 for any other type.
uint8_t icmp_request_type(const Packet& p) {
  if (p.l3 == L3::ipv4) {
    switch (p.icmp_type) {
      case 8: case 13: case 15: case 17: return p.icmp_type;
      case 0: return 8;
      case 14: case 16: case 18: return static_cast<uint8_t>(p.icmp_type - 1);
      default: return 0;
    }
  }
  switch (p.icmp_type) {
    case 128: case 139: return p.icmp_type;
    case 129: case 140: return static_cast<uint8_t>(p.icmp_type - 1);
    default: return 0;
  }
}

bool is_icmp(const Packet& p) { return (p.l3 == L3::ipv4 && p.proto == 1) || (p.l3 == L3::ipv6 && p.proto == 58); }

// The ports that order a packet's key ends when its addresses are equal: TCP and UDP ports, 0
// for other protocols; for an ICMP query or reply, 0 and 1 so that a request comes from lo and a
// reply from hi (icmp_key_ports then writes the key's real ports).
void key_ports(const Packet& p, uint16_t* sport, uint16_t* dport) {
  if (is_icmp(p)) {
    const bool reply = icmp_request_type(p) != p.icmp_type;
    *sport = reply ? 1 : 0;
    *dport = reply ? 0 : 1;
  } else {
    *sport = p.src_port;
    *dport = p.dst_port;
  }
}

// An ICMP query's key ports, once the ends are ordered: the identifier, and the request type with
// the end that asked.
void icmp_key_ports(const Packet& p, bool src_low, uint16_t* lo_port, uint16_t* hi_port) {
  const uint8_t request = icmp_request_type(p);
  const bool asker_lo = request == p.icmp_type ? src_low : !src_low;
  *lo_port = p.icmp_id;
  *hi_port = static_cast<uint16_t>(request << 8 | (asker_lo ? 1 : 0));
}

}  // namespace

IcmpRole icmp_role(const Packet& p) {
  if (!is_icmp(p)) return IcmpRole::not_icmp;
  if (!p.has_l4) return IcmpRole::other;  // a later fragment: no type to read
  if (const uint8_t request = icmp_request_type(p); request != 0) {
    return request == p.icmp_type ? IcmpRole::request : IcmpRole::reply;
  }
  const uint8_t t = p.icmp_type;
  if (p.l3 == L3::ipv4 ? (t == 3 || t == 4 || t == 11 || t == 12) : (t >= 1 && t <= 4)) return IcmpRole::error;
  return IcmpRole::other;
}

void flow_key(const Packet& p, int pair, FlowKey& k, bool* from_lo) {
  k = FlowKey{};
  k.proto = p.proto;
  k.pair = static_cast<uint8_t>(pair);
  uint16_t sport, dport;
  key_ports(p, &sport, &dport);
  // Addresses compared as big-endian words in registers (memcmp is a library call per packet).
  int c;
  if (p.l3 == L3::ipv6) {
    k.family = 6;
    c = compare_be<uint64_t>(p.src.data(), p.dst.data());
    if (c == 0) c = compare_be<uint64_t>(p.src.data() + 8, p.dst.data() + 8);
  } else {
    k.family = 4;
    c = compare_be<uint32_t>(p.src.data(), p.dst.data());
  }
  const bool src_low = c < 0 || (c == 0 && sport <= dport);
  *from_lo = src_low;
  // Both arrays are 16 bytes and zero past an IPv4 address, so copying all 16 is right for both.
  k.lo_addr = src_low ? p.src : p.dst;
  k.hi_addr = src_low ? p.dst : p.src;
  k.lo_port = src_low ? sport : dport;
  k.hi_port = src_low ? dport : sport;
  if (is_icmp(p)) icmp_key_ports(p, src_low, &k.lo_port, &k.hi_port);
}

void flow_key4(const Packet& p, int pair, FlowKey4& k, bool* from_lo) {
  uint16_t sport, dport;
  key_ports(p, &sport, &dport);
  uint32_t src, dst;
  std::memcpy(&src, p.src.data(), 4);
  std::memcpy(&dst, p.dst.data(), 4);
  const uint32_t s = __builtin_bswap32(src), d = __builtin_bswap32(dst);
  const bool src_low = s < d || (s == d && sport <= dport);
  *from_lo = src_low;
  k.lo_addr = src_low ? src : dst;
  k.hi_addr = src_low ? dst : src;
  k.lo_port = src_low ? sport : dport;
  k.hi_port = src_low ? dport : sport;
  if (is_icmp(p)) icmp_key_ports(p, src_low, &k.lo_port, &k.hi_port);
  k.proto = p.proto;
  k.pair = static_cast<uint8_t>(pair);
  k.pad[0] = k.pad[1] = 0;
}

const char* state_name(FlowState s) {
  static constexpr const char* names[] = {"syn_sent", "syn_received", "established", "fin_wait", "closing", "closed", "new"};
  return names[static_cast<int>(s)];
}

const char* flow_proto_name(FlowProto p) {
  static constexpr const char* names[] = {"tcp", "udp", "icmp", "icmpv6", "other"};
  return names[static_cast<int>(p)];
}

bool evictable(const FlowTrack& t) {
  switch (t.state) {
    case FlowState::syn_sent:
    case FlowState::syn_received:
    case FlowState::closed:
    case FlowState::new_flow: return true;
    default: return false;
  }
}

bool start_flow(const Packet& p, bool from_lo, FlowTrack* t) {
  *t = FlowTrack{};
  t->proto = p.proto;
  t->initiator_lo = from_lo;
  if (p.proto == 6) {
    const uint8_t f = p.tcp_flags;
    if ((f & TcpFlag::syn) == 0 || (f & (TcpFlag::ack | TcpFlag::rst | TcpFlag::fin)) != 0) return false;
    t->state = FlowState::syn_sent;
    return true;
  }
  t->state = FlowState::new_flow;
  const IcmpRole role = icmp_role(p);
  return role == IcmpRole::not_icmp || role == IcmpRole::request;
}

Verdict track(FlowTrack& t, const Packet& p, bool from_lo) {
  const bool from_initiator = from_lo == t.initiator_lo;
  if (t.proto != 6) {
    if (!from_initiator) t.state = FlowState::established;
    return Verdict::pass;
  }
  const uint8_t f = p.tcp_flags;
  if ((f & TcpFlag::rst) != 0) {
    t.state = FlowState::closed;
    return Verdict::pass;
  }
  switch (t.state) {
    case FlowState::syn_sent:
      if (!from_initiator && (f & (TcpFlag::syn | TcpFlag::ack)) == (TcpFlag::syn | TcpFlag::ack)) {
        t.state = FlowState::syn_received;
      } else if (!(from_initiator && (f & TcpFlag::syn) != 0 && (f & TcpFlag::ack) == 0)) {
        return Verdict::drop_invalid;  // only SYN retransmissions or the SYN-ACK belong here
      }
      return Verdict::pass;
    case FlowState::syn_received:
      if (from_initiator && (f & TcpFlag::ack) != 0 && (f & TcpFlag::syn) == 0) t.state = FlowState::established;
      break;
    case FlowState::closed:
      // A new SYN on a closed flow's tuple reopens it (port reuse after TIME_WAIT).
      if (from_initiator && (f & TcpFlag::syn) != 0 && (f & TcpFlag::ack) == 0) {
        t.state = FlowState::syn_sent;
        t.fins = 0;
        return Verdict::pass;
      }
      return (f & TcpFlag::ack) != 0 ? Verdict::pass : Verdict::drop_invalid;
    default:
      break;
  }
  if ((f & TcpFlag::fin) != 0 && (t.state == FlowState::established || t.state == FlowState::fin_wait ||
                                  t.state == FlowState::syn_received)) {
    t.fins |= from_initiator ? 1 : 2;
    t.state = t.fins == 3 ? FlowState::closing : FlowState::fin_wait;
  } else if (t.state == FlowState::closing && (f & TcpFlag::ack) != 0 && (f & TcpFlag::fin) == 0) {
    t.state = FlowState::closed;  // the last ACK
  }
  return Verdict::pass;
}

uint32_t idle_timeout(const FlowTrack& t, const Timeouts& to) {
  if (t.proto == 6) {
    switch (t.state) {
      case FlowState::syn_sent:
      case FlowState::syn_received: return to.syn;
      case FlowState::established: return to.established_tcp;
      case FlowState::fin_wait:
      case FlowState::closing: return to.fin;
      default: return to.closed;
    }
  }
  if (t.proto == 1 || t.proto == 58) return to.icmp;
  return t.state == FlowState::established ? to.udp_established : to.udp_new;
}

}  // namespace kmodkit::firewall
