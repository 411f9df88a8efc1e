// The rule set compiled into rte_acl: first match wins, families, prefixes, ports, ICMP types,
// pairs and directions, burst classification.
#include <catch2/catch.hpp>
#include <arpa/inet.h>

#include <vector>

#include "acl.hpp"

using namespace kmodkit;
using namespace kmodkit::firewall;

namespace {

Packet v4(uint8_t proto, const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  Packet p;
  p.l3 = L3::ipv4;
  p.proto = proto;
  inet_pton(AF_INET, src, p.src.data());
  inet_pton(AF_INET, dst, p.dst.data());
  p.src_port = sport;
  p.dst_port = dport;
  p.has_l4 = true;
  return p;
}

Packet v6(uint8_t proto, const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  Packet p = v4(0, "0.0.0.0", "0.0.0.0", sport, dport);
  p.l3 = L3::ipv6;
  p.proto = proto;
  inet_pton(AF_INET6, src, p.src.data());
  inet_pton(AF_INET6, dst, p.dst.data());
  return p;
}

int classify4(const Classifier& c, const Packet& p, int pair = 0, Direction d = Direction::a_to_b) {
  Key4 k;
  make_key(p, pair, d, &k);
  return c.classify(k);
}

int classify6(const Classifier& c, const Packet& p, int pair = 0, Direction d = Direction::a_to_b) {
  Key6 k;
  make_key(p, pair, d, &k);
  return c.classify(k);
}

Classifier build(const std::string& text, const std::string& name) {
  auto set = parse_rules(text, "t.rules");
  REQUIRE(set);
  auto c = Classifier::build(*set, name, 0);
  INFO((c ? "" : c.error().message));
  REQUIRE(c);
  return std::move(*c);
}

}  // namespace

TEST_CASE("the first matching rule wins, and no match leaves the policy to decide", "[unit][acl]") {
  auto c = build("allow tcp from 10.0.0.0/8 to any port 22\n"
                 "deny tcp from any to any port 1-1024\n"
                 "allow udp from any to 192.0.2.53 port 53\n",
                 "first");
  CHECK(classify4(c, v4(6, "10.1.2.3", "192.0.2.1", 40000, 22)) == 0);
  CHECK(classify4(c, v4(6, "11.1.2.3", "192.0.2.1", 40000, 22)) == 1);
  CHECK(classify4(c, v4(6, "10.1.2.3", "192.0.2.1", 40000, 2000)) == -1);
  CHECK(classify4(c, v4(17, "10.1.2.3", "192.0.2.53", 40000, 53)) == 2);
  CHECK(classify4(c, v4(17, "10.1.2.3", "192.0.2.54", 40000, 53)) == -1);
  CHECK(c.acl_rules4() == 3);
  CHECK(c.acl_rules6() == 1);  // only the rule with no address covers IPv6 too
  CHECK(classify6(c, v6(6, "2001:db8::1", "2001:db8::2", 1, 80)) == 1);
}

TEST_CASE("IPv6 prefixes, ICMP types, port lists, pairs and directions", "[unit][acl]") {
  auto c = build("deny ip6 from 2001:db8:bad::/48 to any\n"
                 "allow icmp6 type 128 from any to any\n"
                 "allow icmp type 8 from any to 192.0.2.0/24\n"
                 "allow tcp from any to any port 80,443,8000-8080 on pair 1 dir a-to-b\n",
                 "kinds");
  CHECK(classify6(c, v6(6, "2001:db8:bad:1::1", "2001:db8::2", 1, 80)) == 0);
  CHECK(classify6(c, v6(6, "2001:db8:bae::1", "2001:db8::2", 1, 80)) == -1);
  auto ping6 = v6(58, "2001:db8::1", "2001:db8::2", 0, 0);
  ping6.icmp_type = 128;
  CHECK(classify6(c, ping6) == 1);
  ping6.icmp_type = 129;
  CHECK(classify6(c, ping6) == -1);
  auto ping = v4(1, "198.51.100.1", "192.0.2.9", 0, 0);
  ping.icmp_type = 8;
  CHECK(classify4(c, ping) == 2);
  ping.icmp_type = 0;
  CHECK(classify4(c, ping) == -1);
  const auto web = v4(6, "198.51.100.1", "192.0.2.9", 5555, 8042);
  CHECK(classify4(c, web, 1, Direction::a_to_b) == 3);
  CHECK(classify4(c, web, 1, Direction::b_to_a) == -1);
  CHECK(classify4(c, web, 0, Direction::a_to_b) == -1);
  CHECK(classify4(c, v4(6, "198.51.100.1", "192.0.2.9", 5555, 8081), 1) == -1);
  CHECK(c.acl_rules4() == 1 + 3);  // icmp + three port ranges
}

TEST_CASE("a burst is classified as its packets one by one", "[unit][acl]") {
  auto c = build("allow udp from any to any port 1000-1999\ndeny udp from 10.0.0.0/8 to any\n", "burst");
  std::vector<Key4> keys(100);
  std::vector<const Key4*> ptrs;
  for (int i = 0; i < 100; ++i) {
    make_key(v4(17, i % 2 ? "10.0.0.1" : "11.0.0.1", "192.0.2.1", 1, static_cast<uint16_t>(900 + 20 * i)), 0,
             Direction::a_to_b, &keys[static_cast<size_t>(i)]);
    ptrs.push_back(&keys[static_cast<size_t>(i)]);
  }
  std::vector<int> results(100);
  c.classify(ptrs.data(), results.data(), 100);
  for (size_t i = 0; i < 100; ++i) CHECK(results[i] == c.classify(keys[i]));
  CHECK(std::count(results.begin(), results.end(), 0) == 50);
}

TEST_CASE("an empty rule set builds and matches nothing", "[unit][acl]") {
  auto c = build("policy allow\n", "empty");
  CHECK(classify4(c, v4(6, "10.0.0.1", "10.0.0.2", 1, 2)) == -1);
  CHECK(classify6(c, v6(6, "2001:db8::1", "2001:db8::2", 1, 2)) == -1);
}
