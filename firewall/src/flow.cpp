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

}  // namespace

void flow_key(const Packet& p, int pair, FlowKey& k, bool* from_lo) {
  k = FlowKey{};
  k.proto = p.proto;
  k.pair = static_cast<uint8_t>(pair);
  const bool icmp = p.proto == 1 || p.proto == 58;
  const uint16_t sport = icmp ? p.icmp_id : p.src_port;
  const uint16_t dport = icmp ? p.icmp_id : p.dst_port;
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
}

void flow_key4(const Packet& p, int pair, FlowKey4& k, bool* from_lo) {
  const bool icmp = p.proto == 1;
  const uint16_t sport = icmp ? p.icmp_id : p.src_port;
  const uint16_t dport = icmp ? p.icmp_id : p.dst_port;
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
  k.proto = p.proto;
  k.pair = static_cast<uint8_t>(pair);
  k.pad[0] = k.pad[1] = 0;
}

const char* state_name(FlowState s) {
  static constexpr const char* names[] = {"syn_sent", "syn_received", "established", "fin_wait", "closing", "closed", "new"};
  return names[static_cast<int>(s)];
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
  return true;
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
