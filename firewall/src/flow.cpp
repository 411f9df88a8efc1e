#include "flow.hpp"

#include <cstring>

namespace kmodkit::firewall {

FlowKey flow_key(const Packet& p, int pair, bool* from_lo) {
  FlowKey k;
  k.proto = p.proto;
  k.family = p.l3 == L3::ipv6 ? 6 : 4;
  k.pair = static_cast<uint8_t>(pair);
  const size_t n = k.family == 6 ? 16 : 4;
  const bool icmp = p.proto == 1 || p.proto == 58;
  const uint16_t sport = icmp ? p.icmp_id : p.src_port;
  const uint16_t dport = icmp ? p.icmp_id : p.dst_port;
  const int c = std::memcmp(p.src.data(), p.dst.data(), n);
  const bool src_low = c < 0 || (c == 0 && sport <= dport);
  *from_lo = src_low;
  std::memcpy((src_low ? k.lo_addr : k.hi_addr).data(), p.src.data(), n);
  std::memcpy((src_low ? k.hi_addr : k.lo_addr).data(), p.dst.data(), n);
  k.lo_port = src_low ? sport : dport;
  k.hi_port = src_low ? dport : sport;
  return k;
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
