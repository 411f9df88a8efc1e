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
  echo.icmp_type = 8;
  echo.icmp_id = 77;
  echo.has_l4 = true;
  bool lo = false;
  const auto k = flow_key(echo, 0, &lo);
  CHECK(k.lo_port == 77);
  CHECK(k.hi_port == (8 << 8 | 1));  // an echo request, asked by the lo end
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

namespace {

Packet icmp(int family, const char* src, const char* dst, uint8_t type, uint16_t word) {
  Packet p;
  p.l3 = family == 4 ? L3::ipv4 : L3::ipv6;
  p.proto = family == 4 ? 1 : 58;
  inet_pton(family == 4 ? AF_INET : AF_INET6, src, p.src.data());
  inet_pton(family == 4 ? AF_INET : AF_INET6, dst, p.dst.data());
  p.icmp_type = type;
  p.icmp_id = word;
  p.has_l4 = true;
  return p;
}

}  // namespace

TEST_CASE("ICMP: a query and its reply share a key; a reverse request, another kind of reply and errors do not", "[unit][flow]") {
  for (int family : {4, 6}) {
    INFO("IPv" << family);
    const char* a = family == 4 ? "10.0.0.1" : "2001:db8::1";
    const char* b = family == 4 ? "192.0.2.1" : "2001:db8:1::1";
    const uint8_t echo = family == 4 ? 8 : 128, echo_reply = family == 4 ? 0 : 129;
    const uint8_t other_reply = family == 4 ? 14 : 140;  // timestamp / node information reply
    const auto request = icmp(family, a, b, echo, 0);
    CHECK(icmp_role(request) == IcmpRole::request);
    CHECK(icmp_role(icmp(family, b, a, echo_reply, 0)) == IcmpRole::reply);
    bool lo = false, back_lo = false, ignored = false;
    const auto k = flow_key(request, 0, &lo);
    CHECK(flow_key(icmp(family, b, a, echo_reply, 0), 0, &back_lo) == k);
    CHECK(lo != back_lo);
    CHECK_FALSE(flow_key(icmp(family, b, a, echo, 0), 0, &ignored) == k);        // the other end asking
    CHECK_FALSE(flow_key(icmp(family, a, b, echo_reply, 0), 0, &ignored) == k);  // a reply from the asker
    CHECK_FALSE(flow_key(icmp(family, b, a, other_reply, 0), 0, &ignored) == k);
    CHECK_FALSE(flow_key(icmp(family, b, a, echo_reply, 1), 0, &ignored) == k);  // another identifier
    // A host asking itself: the request and its reply still meet.
    CHECK(flow_key(icmp(family, a, a, echo, 5), 0, &ignored) == flow_key(icmp(family, a, a, echo_reply, 5), 0, &ignored));
    // Only a request opens a flow.
    FlowTrack t;
    CHECK(start_flow(request, lo, &t));
    CHECK_FALSE(start_flow(icmp(family, b, a, echo_reply, 0), back_lo, &t));
  }
  // Errors quote what they are about; redirects and the rest are never tracked.
  for (uint8_t type : {3, 4, 11, 12}) CHECK(icmp_role(icmp(4, "192.0.2.1", "10.0.0.1", type, 0)) == IcmpRole::error);
  for (uint8_t type : {1, 2, 3, 4}) CHECK(icmp_role(icmp(6, "2001:db8::1", "2001:db8::2", type, 0)) == IcmpRole::error);
  for (uint8_t type : {5, 9, 10}) CHECK(icmp_role(icmp(4, "192.0.2.1", "10.0.0.1", type, 0)) == IcmpRole::other);
  for (uint8_t type : {133, 135, 137}) CHECK(icmp_role(icmp(6, "2001:db8::1", "2001:db8::2", type, 0)) == IcmpRole::other);
  CHECK_FALSE(has_flow_key(icmp(4, "192.0.2.1", "10.0.0.1", 3, 0)));
  // The IPv4 table's key agrees with the generic one.
  const auto request = icmp(4, "192.0.2.1", "10.0.0.1", 13, 9);
  bool lo4 = false, lo = false;
  FlowKey4 k4;
  flow_key4(request, 2, k4, &lo4);
  const auto k = flow_key(request, 2, &lo);
  CHECK(lo4 == lo);
  CHECK(k4.lo_port == k.lo_port);
  CHECK(k4.hi_port == k.hi_port);
}
