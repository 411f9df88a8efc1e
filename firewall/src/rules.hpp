#pragma once
// The firewall's rule language: a readable text format, first match wins, compiled later into
// rte_acl contexts (IPv4 and IPv6). firewall/README.md documents it with examples.
//
//   policy deny
//   allow tcp from 10.0.0.0/8 to any port 22,80,443 dir a-to-b   # ssh and web
//   allow icmp type 8 from any to 192.0.2.0/24
//   deny ip6 from 2001:db8:bad::/48 to any on pair 1

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

enum class Action : uint8_t { allow, deny };
// `ip` is any protocol over IPv4 or IPv6, `ip4`/`ip6` restrict the family, `any` == `ip`.
enum class Proto : uint8_t { ip, ip4, ip6, tcp, udp, icmp, icmp6 };
// Which way a packet crosses its port pair: from port A to port B, the reverse, or either.
enum class Direction : uint8_t { any, a_to_b, b_to_a };

// An address prefix; family 0 matches any address of either family.
struct Prefix {
  int family = 0;  // 0, 4 or 6
  std::array<uint8_t, 16> addr{};  // network byte order; IPv4 in the first 4 bytes
  int length = 0;
  bool operator==(const Prefix&) const = default;
};

struct PortRange {
  uint16_t low = 0, high = 65535;
  bool operator==(const PortRange&) const = default;
};

struct Rule {
  int line = 0;                      // in the rules file, for counters and messages
  Action action = Action::deny;
  Proto proto = Proto::ip;
  Prefix src, dst;
  std::vector<PortRange> src_ports;  // empty: any
  std::vector<PortRange> dst_ports;
  int icmp_type = -1;                // -1: any
  int pair = -1;                     // -1: every port pair
  Direction direction = Direction::any;
  std::string text;                  // the rule as written, without its comment
  // The family the rule can match: 4, 6, or 0 for both.
  int family() const;
};

struct RuleSet {
  Action policy = Action::deny;      // for a new flow no rule matches
  bool policy_given = false;
  std::vector<Rule> rules;
};

// Parses a rules file. Errors are data errors (65) that name the file, line and column:
// "fw.rules:3:21: '10.0.0.0/33' is not an IPv4 prefix: length over 32".
Result<RuleSet> parse_rules(std::string_view text, const std::string& file);

// The warning for a rule set without a rule (an empty or all-comment file), naming the file and
// what then happens to every new flow: the policy decides it. "" when there are rules.
std::string no_rules_warning(const RuleSet& set, const std::string& file);

// How a reloaded rule set continues the one in force, rule by rule: kept_from[i] is the index in
// `before` of the rule whose text (spacing aside) rule i of `after` has, so its counters go on,
// or -1 for a rule added. A text written several times pairs up in order.
struct RuleDiff {
  std::vector<int> kept_from;
  size_t added = 0, removed = 0, kept = 0;
};
RuleDiff diff_rules(const RuleSet& before, const RuleSet& after);

// Parses "any", an address (a host) or an address/length prefix of either family; the message
// says what is wrong (without position).
Result<Prefix> parse_prefix(std::string_view text);

}  // namespace kmodkit::firewall
