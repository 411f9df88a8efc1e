// Connection tracking: symmetric keys, the TCP state machine through its states, UDP and ICMP
// replies, and the timeout of each state.
#include <catch2/catch.hpp>
#include <arpa/inet.h>

#include "flow.hpp"

using namespace kmodkit::firewall;

namespace {

Packet tcp(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint8_t flags) {
  Packet p;
  p.l3 = L3::ipv4;
  p.proto = 6;
  inet_pton(AF_INET, src, p.src.data());
  inet_pton(AF_INET, dst, p.dst.data());
  p.src_port = sport;
  p.dst_port = dport;
  p.tcp_flags = flags;
  p.has_l4 = true;
  return p;
}

Packet reverse(Packet p, uint8_t flags) {
  std::swap(p.src, p.dst);
  std::swap(p.src_port, p.dst_port);
  p.tcp_flags = flags;
  return p;
}

}  // namespace

TEST_CASE("both directions of a flow have one key, distinct flows do not", "[unit][flow]") {
  const auto out = tcp("10.0.0.1", 40000, "192.0.2.1", 443, TcpFlag::syn);
  bool out_lo = false, back_lo = true;
  const auto k1 = flow_key(out, 0, &out_lo);
  const auto k2 = flow_key(reverse(out, TcpFlag::syn | TcpFlag::ack), 0, &back_lo);
  CHECK(k1 == k2);
  CHECK(out_lo != back_lo);
  bool ignored = false;
  CHECK_FALSE(flow_key(out, 1, &ignored) == k1);  // another port pair
  CHECK_FALSE(flow_key(tcp("10.0.0.1", 40001, "192.0.2.1", 443, 0), 0, &ignored) == k1);
  // Same address both ways (a host talking to itself): the ports decide.
  const auto self = tcp("10.0.0.1", 5000, "10.0.0.1", 6000, 0);
  bool a = false, b = false;
  CHECK(flow_key(self, 0, &a) == flow_key(reverse(self, 0), 0, &b));
  CHECK(a != b);
}

TEST_CASE("TCP is tracked through handshake, data, FINs and the last ACK", "[unit][flow]") {
  const auto syn = tcp("10.0.0.1", 40000, "192.0.2.1", 443, TcpFlag::syn);
  bool lo = false;
  (void)flow_key(syn, 0, &lo);
  FlowTrack t;
  REQUIRE(start_flow(syn, lo, &t));
  CHECK(t.state == FlowState::syn_sent);
  CHECK(track(t, syn, lo) == Verdict::pass);  // a retransmitted SYN
  CHECK(track(t, reverse(syn, TcpFlag::ack), !lo) == Verdict::drop_invalid);  // no SYN-ACK yet
  CHECK(track(t, reverse(syn, TcpFlag::syn | TcpFlag::ack), !lo) == Verdict::pass);
  CHECK(t.state == FlowState::syn_received);
  track(t, tcp("10.0.0.1", 40000, "192.0.2.1", 443, TcpFlag::ack), lo);
  CHECK(t.state == FlowState::established);
  track(t, reverse(syn, TcpFlag::ack | TcpFlag::psh), !lo);
  CHECK(t.state == FlowState::established);
  track(t, tcp("10.0.0.1", 40000, "192.0.2.1", 443, TcpFlag::fin | TcpFlag::ack), lo);
  CHECK(t.state == FlowState::fin_wait);
  track(t, reverse(syn, TcpFlag::fin | TcpFlag::ack), !lo);
  CHECK(t.state == FlowState::closing);
  track(t, tcp("10.0.0.1", 40000, "192.0.2.1", 443, TcpFlag::ack), lo);
  CHECK(t.state == FlowState::closed);
  // Port reuse: a new SYN reopens it.
  CHECK(track(t, syn, lo) == Verdict::pass);
  CHECK(t.state == FlowState::syn_sent);
  // RST closes from any state.
  track(t, reverse(syn, TcpFlag::rst), !lo);
  CHECK(t.state == FlowState::closed);
}

TEST_CASE("a TCP flow must start with a SYN", "[unit][flow]") {
  FlowTrack t;
  CHECK_FALSE(start_flow(tcp("10.0.0.1", 1, "10.0.0.2", 2, TcpFlag::ack), true, &t));
  CHECK_FALSE(start_flow(tcp("10.0.0.1", 1, "10.0.0.2", 2, TcpFlag::syn | TcpFlag::ack), true, &t));
  CHECK(start_flow(tcp("10.0.0.1", 1, "10.0.0.2", 2, TcpFlag::syn), true, &t));
}

TEST_CASE("UDP and ICMP echo become established on a reply, each state has its timeout", "[unit][flow]") {
  Packet udp;
  udp.l3 = L3::ipv4;
  udp.proto = 17;
  FlowTrack t;
  REQUIRE(start_flow(udp, true, &t));
  const Timeouts to;
  CHECK(t.state == FlowState::new_flow);
  CHECK(idle_timeout(t, to) == to.udp_new);
  track(t, udp, true);
  CHECK(t.state == FlowState::new_flow);
  track(t, udp, false);
  CHECK(t.state == FlowState::established);
  CHECK(idle_timeout(t, to) == to.udp_established);

  Packet echo = udp;
  echo.proto = 1;
  echo.icmp_id = 77;
  bool lo = false;
  const auto k = flow_key(echo, 0, &lo);
  CHECK(k.lo_port == 77);
  CHECK(k.hi_port == 77);
  REQUIRE(start_flow(echo, lo, &t));
  CHECK(idle_timeout(t, to) == to.icmp);

  FlowTrack tcp_t;
  tcp_t.proto = 6;
  for (auto [state, want] : {std::pair{FlowState::syn_sent, to.syn}, std::pair{FlowState::established, to.established_tcp},
                             std::pair{FlowState::closing, to.fin}, std::pair{FlowState::closed, to.closed}}) {
    tcp_t.state = state;
    CHECK(idle_timeout(tcp_t, to) == want);
  }
  CHECK(std::string(state_name(FlowState::syn_received)) == "syn_received");
}
