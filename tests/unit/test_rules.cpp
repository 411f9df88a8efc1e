// The firewall's rule language: what it accepts, and errors that name file, line and column.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

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

// Random edits of a valid file (bytes replaced, inserted, dropped; tokens swapped for others
// the grammar knows): every result either parses into rules that keep the parser's invariants,
// or is refused as bad data naming the file, a line and a column. Deterministic (a fixed seed);
// the asan build runs it under AddressSanitizer and UBSan.
TEST_CASE("random edits of a rules file are parsed or refused with file:line:col, never worse", "[unit][rules]") {
  const std::string valid =
      "policy allow\n"
      "allow tcp from 10.0.0.0/8 to any port 22,80,443-444 dir a-to-b   # web\n"
      "allow udp from any port 1024-65535 to 192.0.2.53 port 53\n"
      "allow icmp type 8 from any to 192.0.2.0/24\n"
      "allow icmp6 type 128 from 2001:db8::/32 to any\n"
      "deny ip6 from 2001:db8:bad::/48 to ::1 on pair 1\n"
      "deny ip4 from 203.0.113.7 to any dir b-to-a\n";
  const std::vector<std::string> tokens = {"allow", "deny", "policy", "tcp", "udp", "icmp", "icmp6", "ip", "ip4", "ip6",
                                           "any", "from", "to", "port", "type", "on", "pair", "dir", "a-to-b", "b-to-a",
                                           "#", ",", "-", "/", ":", "::", "0", "65535", "65536", "4294967296", "/33",
                                           "/129", "999.1.1.1", "1:2:3:4:5:6:7:8:9", "\n", " ", "\t", "\r", std::string(1, '\0')};
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  auto next = [&](uint64_t bound) {  // xorshift64*
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (state * 0x2545F4914F6CDD1DULL) % bound;
  };
  int parsed = 0, refused = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = valid;
    const uint64_t edits = 1 + next(4);
    for (uint64_t e = 0; e < edits; ++e) {
      const size_t at = text.empty() ? 0 : next(text.size());
      switch (next(4)) {
        case 0: if (!text.empty()) text[at] = static_cast<char>(next(256)); break;
        case 1: text.insert(at, 1, static_cast<char>(next(256))); break;
        case 2: text.erase(at, 1 + next(8)); break;
        default: {
          const std::string& t = tokens[next(tokens.size())];
          text.insert(at, t);
        }
      }
    }
    auto set = parse_rules(text, "fuzz.rules");
    if (!set) {
      ++refused;
      INFO(text);
      REQUIRE(set.error().code == ExitCode::data_err);
      const std::string& m = set.error().message;
      size_t pos = std::string("fuzz.rules:").size();
      REQUIRE(m.starts_with("fuzz.rules:"));
      for (int field = 0; field < 2; ++field) {  // line, then column
        const size_t digits = m.find_first_not_of("0123456789", pos);
        REQUIRE(digits != std::string::npos);
        REQUIRE(digits > pos);
        REQUIRE(m[digits] == ':');
        pos = digits + 1;
      }
      continue;
    }
    ++parsed;
    for (const Rule& r : set->rules) {
      INFO(r.text);
      for (const Prefix* p : {&r.src, &r.dst}) {
        REQUIRE((p->family == 0 || p->family == 4 || p->family == 6));
        REQUIRE(p->length >= 0);
        REQUIRE(p->length <= (p->family == 4 ? 32 : p->family == 6 ? 128 : 0));
      }
      for (const auto* ports : {&r.src_ports, &r.dst_ports}) {
        for (const PortRange& p : *ports) REQUIRE(p.low <= p.high);
      }
      REQUIRE(r.icmp_type >= -1);
      REQUIRE(r.icmp_type <= 255);
      REQUIRE(r.pair >= -1);
      REQUIRE(r.line >= 1);
    }
  }
  // Both outcomes happened, many times.
  CHECK(parsed > 100);
  CHECK(refused > 10000);
}

TEST_CASE("a rules file without rules is named in a warning that says what the policy does", "[unit][rules]") {
  auto empty = parse_rules("", "fw.rules");
  REQUIRE(empty);
  CHECK(no_rules_warning(*empty, "fw.rules") == "fw.rules holds no rules: every new flow is dropped by the policy (policy deny, the default)");
  auto comments = parse_rules("# nothing yet\n\n   # still nothing\npolicy allow  # for now\n", "fw.rules");
  REQUIRE(comments);
  CHECK(no_rules_warning(*comments, "fw.rules") == "fw.rules holds no rules: every new flow is allowed by the policy (policy allow)");
  auto one = parse_rules("allow ip from any to any\n", "fw.rules");
  REQUIRE(one);
  CHECK(no_rules_warning(*one, "fw.rules").empty());
}

TEST_CASE("a reload keeps the rules whose text did not change, spacing aside, and pairs repeated ones in order", "[unit][rules]") {
  auto before = parse_rules("allow tcp from any to any port 22\n"
                            "deny udp from any to any\n"
                            "allow icmp from any to any\n"
                            "allow icmp from any to any\n",
                            "old.rules");
  auto after = parse_rules("# a comment and a moved rule\n"
                           "allow icmp from any to any   # now first\n"
                           "allow   tcp from any to any port 22\n"
                           "allow tcp from any to any port 23\n"
                           "allow icmp from any to any\n"
                           "allow icmp from any to any\n",
                           "new.rules");
  REQUIRE(before);
  REQUIRE(after);
  const RuleDiff d = diff_rules(*before, *after);
  CHECK(d.kept_from == std::vector<int>{2, 0, -1, 3, -1});
  CHECK(d.kept == 3);
  CHECK(d.added == 2);
  CHECK(d.removed == 1);
}
