// The firewall's rule language: what it accepts, and errors that name file, line and column.
#include <catch2/catch.hpp>

#include "rules.hpp"

using namespace kmodkit;
using namespace kmodkit::firewall;

TEST_CASE("a rules file with every kind of rule parses in order, first match first", "[unit][rules]") {
  const std::string text =
      "# the pod's firewall\n"
      "policy deny\n"
      "\n"
      "allow tcp from 10.0.0.0/8 to any port 22,80,443-444 dir a-to-b   # ssh and web\n"
      "allow udp from any port 1024-65535 to 192.0.2.53 port 53\n"
      "allow icmp type 8 from any to 192.0.2.0/24\n"
      "allow icmp6 type 128 from 2001:db8::/32 to any\n"
      "deny ip6 from 2001:db8:bad::/48 to any on pair 1\n"
      "allow ip from any to any dir b-to-a\r\n";
  auto set = parse_rules(text, "fw.rules");
  INFO((set ? "" : set.error().message));
  REQUIRE(set);
  CHECK(set->policy == Action::deny);
  REQUIRE(set->rules.size() == 6);
  const auto& ssh = set->rules[0];
  CHECK(ssh.line == 4);
  CHECK(ssh.action == Action::allow);
  CHECK(ssh.proto == Proto::tcp);
  CHECK(ssh.src.family == 4);
  CHECK(ssh.src.length == 8);
  CHECK(ssh.src.addr[0] == 10);
  CHECK(ssh.dst.family == 0);
  CHECK(ssh.dst_ports == std::vector<PortRange>{{22, 22}, {80, 80}, {443, 444}});
  CHECK(ssh.direction == Direction::a_to_b);
  CHECK(ssh.text == "allow tcp from 10.0.0.0/8 to any port 22,80,443-444 dir a-to-b");
  CHECK(ssh.family() == 4);
  CHECK(set->rules[1].src_ports == std::vector<PortRange>{{1024, 65535}});
  CHECK(set->rules[1].dst.length == 32);
  CHECK(set->rules[2].icmp_type == 8);
  CHECK(set->rules[3].family() == 6);
  CHECK(set->rules[4].pair == 1);
  CHECK(set->rules[4].dst.family == 0);
  CHECK(set->rules[5].family() == 0);
  CHECK(set->rules[5].direction == Direction::b_to_a);
}

TEST_CASE("mistakes are data errors naming file, line and column", "[unit][rules]") {
  struct Bad {
    const char* text;
    const char* where;
    const char* says;
  };
  for (const auto& bad : {
           Bad{"allow tcp from 10.0.0.0/33 to any", "r:1:16:", "length over 32"},
           Bad{"policy deny\nallow tcp from 10.0.0.1/8 to any", "r:2:16:", "host bits set past /8"},
           Bad{"allow tcpp from any to any", "r:1:7:", "not a protocol"},
           Bad{"permit tcp from any to any", "r:1:1:", "not allow, deny or policy"},
           Bad{"allow icmp from any to any port 80", "r:1:28:", "ports need tcp or udp"},
           Bad{"allow tcp from any to any port 80-20", "r:1:32:", "runs backwards"},
           Bad{"allow tcp from any to any port 70000", "r:1:32:", "not a port"},
           Bad{"allow tcp type 3 from any to any", "r:1:11:", "'type' needs icmp"},
           Bad{"allow tcp from 10.0.0.0/8 to 2001:db8::1", "r:1:1:", "mixes an IPv4 and an IPv6"},
           Bad{"allow icmp6 from 10.0.0.0/8 to any", "r:1:7:", "icmp6 is IPv6"},
           Bad{"allow tcp from any from any", "r:1:20:", "given twice"},
           Bad{"allow tcp from", "r:1:15:", "an address is missing"},
           Bad{"allow tcp dir up", "r:1:15:", "not a direction"},
           Bad{"allow tcp on pair 99", "r:1:19:", "not a port pair number"},
           Bad{"allow tcp from nowhere to any", "r:1:16:", "not an address"},
           Bad{"policy maybe", "r:1:8:", "policy is"},
           Bad{"policy deny\npolicy allow", "r:2:1:", "given twice"},
       }) {
    INFO(bad.text);
    auto r = parse_rules(bad.text, "r");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
    CHECK_THAT(r.error().message, Catch::StartsWith(bad.where) && Catch::Contains(bad.says));
  }
}

TEST_CASE("prefixes of both families, hosts and any", "[unit][rules]") {
  auto any = parse_prefix("any");
  REQUIRE(any);
  CHECK(any->family == 0);
  auto host = parse_prefix("2001:db8::1");
  REQUIRE(host);
  CHECK(host->family == 6);
  CHECK(host->length == 128);
  CHECK(host->addr[15] == 1);
  auto zero = parse_prefix("0.0.0.0/0");
  REQUIRE(zero);
  CHECK(zero->length == 0);
  CHECK_FALSE(parse_prefix("10.0.0.0/"));
  CHECK_FALSE(parse_prefix("2001:db8::/129"));
}
