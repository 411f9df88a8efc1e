#pragma once
// Connection tracking that needs no DPDK: the symmetric flow key (both directions of a flow
// give the same key, so one lookup finds it), the TCP state machine, and the timeouts.

#include <array>
#include <cstdint>

#include "packet.hpp"

namespace kmodkit::firewall {

// What an ICMP or ICMPv6 message is to connection tracking, as Linux conntrack reads it
// (nf_conntrack_proto_icmp.c, nf_conntrack_proto_icmpv6.c).
enum class IcmpRole : uint8_t {
  not_icmp,  // not ICMP over IPv4 nor ICMPv6 over IPv6: tracked by ports (0 for other protocols)
  request,   // a query that opens a flow: echo, timestamp, information, address mask (v4 8, 13, 15,
             // 17); echo, node information (v6 128, 139)
  reply,     // its answer (v4 0, 14, 16, 18; v6 129, 140): matches the query's flow, opens none
  error,     // quotes the packet it is about (v4 3, 4, 11, 12; v6 1-4): related to the quoted
             // packet's flow, never a flow of its own
  other,     // everything else, redirects (v4 5, v6 137) included: never tracked, the rules decide
};
IcmpRole icmp_role(const Packet& p);

// Whether a packet has a flow of its own to look up: not ICMP, or an ICMP query or reply.
inline bool has_flow_key(const Packet& p) {
  const IcmpRole r = icmp_role(p);
  return r == IcmpRole::not_icmp || r == IcmpRole::request || r == IcmpRole::reply;
}

// Both directions of a flow map to this key: the lower (address, port) end first. ICMP queries
// (has_flow_key) have the identifier as lo_port and, as hi_port, the query's request type and
// which end asked (`type << 8 | asker_is_lo`): a reply matches only its own kind of query from
// the other end, and a request in the reverse direction is a flow of its own.
struct FlowKey {
  std::array<uint8_t, 16> lo_addr{}, hi_addr{};
  uint16_t lo_port = 0, hi_port = 0;
  uint8_t proto = 0;
  uint8_t family = 0;                 // 4 or 6
  uint8_t pair = 0;
  uint8_t pad[9] = {};
  bool operator==(const FlowKey&) const = default;
};
// 48 bytes, a multiple of 16: rte_hash compares such keys with vector instructions (its
// rte_hash_k48_cmp_eq) rather than memcmp.
static_assert(sizeof(FlowKey) == 48);

// The key of an IPv4 flow in the flow table: the same ends in the same order, in 16 bytes
// (rte_hash hashes and compares that in a few instructions, a third of the 48-byte key's work).
struct FlowKey4 {
  uint32_t lo_addr = 0, hi_addr = 0;  // as in the packet (network byte order)
  uint16_t lo_port = 0, hi_port = 0;
  uint8_t proto = 0;
  uint8_t pair = 0;
  uint8_t pad[2] = {};
  bool operator==(const FlowKey4&) const = default;
};
static_assert(sizeof(FlowKey4) == 16);

// The key of an IPv4 packet's flow (has_flow_key must hold), in place; `from_lo` as flow_key gives it.
void flow_key4(const Packet& p, int pair, FlowKey4& k, bool* from_lo);

// The key of a packet (has_flow_key must hold), and whether the packet travels from the key's lo
// end to its hi end.
// Written in place (the data plane builds a burst's keys where the bulk lookup reads them).
void flow_key(const Packet& p, int pair, FlowKey& k, bool* from_lo);
inline FlowKey flow_key(const Packet& p, int pair, bool* from_lo) {
  FlowKey k;
  flow_key(p, pair, k, from_lo);
  return k;
}

enum class FlowState : uint8_t {
  syn_sent,     // TCP: the initiator's SYN seen
  syn_received, // TCP: the SYN-ACK seen
  established,  // TCP: the handshake completed; UDP/ICMP: a reply seen
  fin_wait,     // TCP: one side sent FIN
  closing,      // TCP: both sides sent FIN
  closed,       // TCP: RST, or the last ACK after both FINs (lingers briefly)
  new_flow,     // UDP/ICMP: only the initiator has spoken
};
const char* state_name(FlowState s);

struct Timeouts {  // seconds, per state (UDP/ICMP use new_flow and established)
  uint32_t syn = 30, established_tcp = 3600, fin = 120, closed = 10;
  uint32_t udp_new = 30, udp_established = 120, icmp = 30;
};

struct FlowTrack {
  FlowState state = FlowState::new_flow;
  uint8_t proto = 0;
  bool initiator_lo = true;  // which end opened the flow
  uint8_t fins = 0;          // bit 0: the initiator sent FIN, bit 1: the responder
};

// What tracking says of a packet of a known flow.
enum class Verdict : uint8_t { pass, drop_invalid };

// Starts tracking a flow whose first packet the rules allowed. A TCP flow must start with a
// SYN (without ACK), an ICMP flow with a request; anything else is invalid (a mid-stream packet
// or a reply of an unknown flow).
bool start_flow(const Packet& p, bool from_lo, FlowTrack* t);

// Advances the state of a tracked flow with one of its packets; `from_lo` as flow_key gives it.
Verdict track(FlowTrack& t, const Packet& p, bool from_lo);

// How long the flow may stay idle in its state.
uint32_t idle_timeout(const FlowTrack& t, const Timeouts& to);

// Whether a full table may evict the flow to make room for a new one, as conntrack's early drop
// takes only flows that are not ASSURED: a TCP flow before its handshake completed or after it
// closed, a UDP or ICMP flow the other end never answered. Established flows are never evicted.
bool evictable(const FlowTrack& t);

// The protocols the flow counters are kept by.
enum class FlowProto : uint8_t { tcp, udp, icmp, icmpv6, other, count_ };
constexpr int kFlowProtos = static_cast<int>(FlowProto::count_);
inline FlowProto flow_proto(uint8_t ip_proto) {
  switch (ip_proto) {
    case 6: return FlowProto::tcp;
    case 17: return FlowProto::udp;
    case 1: return FlowProto::icmp;
    case 58: return FlowProto::icmpv6;
    default: return FlowProto::other;
  }
}
// "tcp", "udp", "icmp", "icmpv6", "other": the metrics' proto label.
const char* flow_proto_name(FlowProto p);

}  // namespace kmodkit::firewall
