// The benchmarks' traffic generator speaks TCP correctly: the exchange answer() drives is the
// seven packets of a real short connection, with consistent numbers and valid checksums, and the
// firewall's own tracker takes it from SYN to closed.
#include <catch2/catch.hpp>
#include <rte_ip.h>
#include <rte_tcp.h>

#include <vector>

#include "flow.hpp"
#include "frames.hpp"
#include "histogram.hpp"
#include "packet.hpp"

using namespace kmodkit;
using namespace kmodkit::bench;

namespace {

struct Step {
  uint8_t flags;
  Side from;
};

firewall::Packet parsed(const std::vector<uint8_t>& f, uint16_t len) {
  firewall::Packet p;
  firewall::parse_packet(f.data(), len, p);
  return p;
}

// Both checksums, computed again on a copy with the fields zeroed, equal those in the frame.
bool checksums_valid(std::vector<uint8_t> f) {
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(f.data() + kEthLen);
  auto* tcp = reinterpret_cast<rte_tcp_hdr*>(ip + 1);
  const uint16_t ip_sum = ip->hdr_checksum, tcp_sum = tcp->cksum;
  ip->hdr_checksum = 0;
  tcp->cksum = 0;
  return rte_ipv4_cksum(ip) == ip_sum && rte_ipv4_udptcp_cksum(ip, tcp) == tcp_sum;
}

}  // namespace

TEST_CASE("a churn connection is the seven packets of a short TCP exchange, and the firewall tracks it to closed",
          "[trafficgen]") {
  const Tuple t = tuple_of(123456, kChurnPort);
  std::vector<uint8_t> frame(2048), data(2048);
  uint16_t len = write_segment(frame.data(), t, Side::client, tcp::syn, client_isn(t), 0, 0);
  REQUIRE(len == kMinFrame);
  REQUIRE(number_of(frame.data(), len) == 123456);

  firewall::FlowTrack track;
  bool lo = false;
  firewall::Packet p = parsed(frame, len);
  (void)firewall::flow_key(p, 0, &lo);
  REQUIRE(firewall::start_flow(p, lo, &track));
  const auto follow = [&](const std::vector<uint8_t>& f, uint16_t n) {
    const firewall::Packet q = parsed(f, n);
    bool from_lo = false;
    (void)firewall::flow_key(q, 0, &from_lo);
    return firewall::track(track, q, from_lo);
  };

  // Each packet goes through the device to the other side, which answers it.
  const Step expected[] = {{tcp::syn | tcp::ack, Side::server}, {tcp::ack, Side::client},
                           {tcp::fin | tcp::ack, Side::server}, {tcp::fin | tcp::ack, Side::client},
                           {tcp::ack, Side::server}};
  REQUIRE(answer(frame.data(), &len, Side::server) == Next::reply);  // SYN -> SYN-ACK
  Seen seen;
  REQUIRE(inspect(frame.data(), len, &seen));
  CHECK(seen.flags == expected[0].flags);
  CHECK(checksums_valid(frame));
  CHECK(follow(frame, len) == firewall::Verdict::pass);

  REQUIRE(answer(frame.data(), &len, Side::client) == Next::reply_and_data);  // SYN-ACK -> ACK + data
  REQUIRE(inspect(frame.data(), len, &seen));
  CHECK(seen.flags == expected[1].flags);
  CHECK(checksums_valid(frame));
  CHECK(follow(frame, len) == firewall::Verdict::pass);
  const uint16_t dlen = write_data(frame.data(), data.data());
  REQUIRE(inspect(data.data(), dlen, &seen));
  CHECK(seen.flags == (tcp::psh | tcp::ack));
  CHECK(seen.payload == kDataLen);
  CHECK(checksums_valid(data));
  CHECK(follow(data, dlen) == firewall::Verdict::pass);
  CHECK(track.state == firewall::FlowState::established);

  // The server hears the ACK (nothing to say) and the data (it closes).
  uint16_t ack_len = len;
  CHECK(answer(frame.data(), &ack_len, Side::server) == Next::drop);
  uint16_t n = dlen;
  REQUIRE(answer(data.data(), &n, Side::server) == Next::reply);
  REQUIRE(inspect(data.data(), n, &seen));
  CHECK(seen.flags == expected[2].flags);
  CHECK(follow(data, n) == firewall::Verdict::pass);
  REQUIRE(answer(data.data(), &n, Side::client) == Next::reply);
  REQUIRE(inspect(data.data(), n, &seen));
  CHECK(seen.flags == expected[3].flags);
  CHECK(follow(data, n) == firewall::Verdict::pass);
  REQUIRE(answer(data.data(), &n, Side::server) == Next::reply);
  REQUIRE(inspect(data.data(), n, &seen));
  CHECK(seen.flags == expected[4].flags);
  CHECK(checksums_valid(data));
  CHECK(follow(data, n) == firewall::Verdict::pass);
  CHECK(track.state == firewall::FlowState::closed);
  CHECK(answer(data.data(), &n, Side::client) == Next::done);
  CHECK(number_of(data.data(), n) == 123456);
}

TEST_CASE("the generator's sequence numbers follow the bytes: each answer acknowledges what it received",
          "[trafficgen]") {
  const Tuple t = tuple_of(7, kChurnPort);
  std::vector<uint8_t> f(2048), d(2048);
  uint16_t len = write_segment(f.data(), t, Side::client, tcp::syn, client_isn(t), 0, 0);
  const auto seq_ack = [](const std::vector<uint8_t>& b) {
    const auto* tcp = reinterpret_cast<const rte_tcp_hdr*>(b.data() + kEthLen + kIpLen);
    return std::pair{rte_be_to_cpu_32(tcp->sent_seq), rte_be_to_cpu_32(tcp->recv_ack)};
  };
  const uint32_t c = client_isn(t), s = server_isn(t);
  answer(f.data(), &len, Side::server);
  CHECK(seq_ack(f) == std::pair{s, c + 1});
  answer(f.data(), &len, Side::client);
  CHECK(seq_ack(f) == std::pair{c + 1, s + 1});
  uint16_t n = write_data(f.data(), d.data());
  CHECK(seq_ack(d) == std::pair{c + 1, s + 1});
  answer(d.data(), &n, Side::server);  // FIN-ACK: acknowledges the 16 data bytes
  CHECK(seq_ack(d) == std::pair{s + 1, c + 1 + kDataLen});
  answer(d.data(), &n, Side::client);  // FIN-ACK: acknowledges the server's FIN
  CHECK(seq_ack(d) == std::pair{c + 1 + kDataLen, s + 2});
  answer(d.data(), &n, Side::server);  // the last ACK
  CHECK(seq_ack(d) == std::pair{s + 2, c + 2 + kDataLen});
}

TEST_CASE("a frame not of the generator, or heard on its own side, is foreign", "[trafficgen]") {
  const Tuple t = tuple_of(1, kChurnPort);
  std::vector<uint8_t> f(2048, 0);
  uint16_t len = write_segment(f.data(), t, Side::client, tcp::syn, client_isn(t), 0, 0);
  uint16_t n = len;
  CHECK(answer(f.data(), &n, Side::client) == Next::foreign);  // a client's SYN back at the client side
  f[13] = 0xdd;                                                // not IPv4
  CHECK(answer(f.data(), &n, Side::server) == Next::foreign);
  f[13] = 0x00;
  CHECK(answer(f.data(), &len, Side::server) == Next::reply);
  n = 30;  // cut short
  CHECK(answer(f.data(), &n, Side::client) == Next::foreign);
}

TEST_CASE("tuples of distinct connection numbers differ, and number_of gives the number back", "[trafficgen]") {
  std::vector<uint8_t> f(2048);
  for (uint64_t k : {0ULL, 1ULL, 65535ULL, 65536ULL, 1000000ULL, 65536ULL * 64511 + 65535}) {
    const Tuple t = tuple_of(k, kFlowPort);
    const uint16_t len = write_segment(f.data(), t, Side::server, tcp::ack, 1, 2, 0);
    CHECK(number_of(f.data(), len) == k);
  }
  CHECK(tuple_of(5, kChurnPort).client != tuple_of(6, kChurnPort).client);
}

TEST_CASE("the TSC stamp rides in the trailer and reads back", "[trafficgen]") {
  std::vector<uint8_t> f(2048);
  const Tuple t = tuple_of(3, kFlowPort);
  const uint16_t len = write_segment(f.data(), t, Side::client, tcp::psh | tcp::ack, 1, 1, 536);
  stamp(f.data(), len, 0x123456789abcULL);
  CHECK(stamp_of(f.data(), len) == 0x123456789abcULL);
  CHECK(checksums_valid(f));  // the trailer is outside the checksums
}

TEST_CASE("latency percentiles are exact to 1/32 over a wide range", "[trafficgen]") {
  Histogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.record(v);
  CHECK(h.count() == 100000);
  CHECK(h.max() == 100000);
  for (double f : {0.5, 0.99, 0.999}) {
    const double want = f * 100000;
    const auto got = static_cast<double>(h.percentile(f));
    CHECK(got >= want);
    CHECK(got <= want * (1 + 1.0 / 32) + 1);
  }
  Histogram empty;
  CHECK(empty.percentile(0.5) == 0);
}
