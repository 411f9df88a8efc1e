#include "rules.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <optional>
#include <unordered_map>

namespace kmodkit::firewall {
namespace {

struct Token {
  std::string_view text;
  int column = 0;  // 1-based
};

// Splits a line (its comment already cut) into words; commas stay inside words ("22,80").
std::vector<Token> tokenize(std::string_view line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back({line.substr(start, i - start), static_cast<int>(start) + 1});
  }
  return out;
}

std::optional<long> number(std::string_view s, long min, long max) {
  long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < min || v > max) return std::nullopt;
  return v;
}

Result<std::vector<PortRange>> parse_ports(std::string_view text) {
  std::vector<PortRange> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const auto item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const auto dash = item.find('-');
    auto low = number(item.substr(0, dash), 0, 65535);
    auto high = dash == std::string_view::npos ? low : number(item.substr(dash + 1), 0, 65535);
    if (!low || !high) {
      return fail(ExitCode::data_err, "'" + std::string(item) + "' is not a port or a port range (0-65535)");
    }
    if (*low > *high) return fail(ExitCode::data_err, "port range '" + std::string(item) + "' runs backwards");
    out.push_back({static_cast<uint16_t>(*low), static_cast<uint16_t>(*high)});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

int Rule::family() const {
  if (proto == Proto::ip4 || proto == Proto::icmp) return 4;
  if (proto == Proto::ip6 || proto == Proto::icmp6) return 6;
  return src.family != 0 ? src.family : dst.family;
}

Result<Prefix> parse_prefix(std::string_view text) {
  Prefix p;
  if (text == "any") return p;
  const auto slash = text.find('/');
  const std::string addr(text.substr(0, slash));
  const bool v6 = addr.find(':') != std::string::npos;
  p.family = v6 ? 6 : 4;
  const int max = v6 ? 128 : 32;
  if (inet_pton(v6 ? AF_INET6 : AF_INET, addr.c_str(), p.addr.data()) != 1) {
    return fail(ExitCode::data_err, "'" + std::string(text) + "' is not an address, a prefix or 'any'");
  }
  p.length = max;
  if (slash != std::string_view::npos) {
    auto len = number(text.substr(slash + 1), 0, 1000);
    if (!len) return fail(ExitCode::data_err, "'" + std::string(text) + "' has no prefix length after '/'");
    if (*len > max) {
      return fail(ExitCode::data_err, "'" + std::string(text) + "' is not an IPv" + (v6 ? "6" : "4") +
                                          " prefix: length over " + std::to_string(max));
    }
    p.length = static_cast<int>(*len);
  }
  // Host bits set below the prefix length are a mistake worth naming, not a silent mask.
  for (int bit = p.length; bit < max; ++bit) {
    if ((p.addr[static_cast<size_t>(bit / 8)] >> (7 - bit % 8)) & 1) {
      return fail(ExitCode::data_err, "'" + std::string(text) + "' has host bits set past /" + std::to_string(p.length));
    }
  }
  return p;
}

Result<RuleSet> parse_rules(std::string_view text, const std::string& file) {
  RuleSet set;
  int lineno = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++lineno;
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto tokens = tokenize(line);
    if (tokens.empty()) continue;
    auto error = [&](const Token& at, const std::string& what) {
      return fail(ExitCode::data_err, file + ":" + std::to_string(lineno) + ":" + std::to_string(at.column) + ": " + what);
    };
    auto end_error = [&](const std::string& what) {
      Token end{line, static_cast<int>(line.find_last_not_of(" \t") + 2)};
      return error(end, what);
    };

    if (tokens[0].text == "policy") {
      if (tokens.size() != 2 || (tokens[1].text != "allow" && tokens[1].text != "deny")) {
        return error(tokens.size() > 1 ? tokens[1] : tokens[0], "policy is 'policy allow' or 'policy deny'");
      }
      if (set.policy_given) return error(tokens[0], "policy is given twice");
      set.policy = tokens[1].text == "allow" ? Action::allow : Action::deny;
      set.policy_given = true;
      continue;
    }

    Rule r;
    r.line = lineno;
    const auto first = line.find_first_not_of(" \t");
    r.text = std::string(line.substr(first, line.find_last_not_of(" \t") - first + 1));
    if (tokens[0].text == "allow") r.action = Action::allow;
    else if (tokens[0].text == "deny") r.action = Action::deny;
    else return error(tokens[0], "'" + std::string(tokens[0].text) + "' is not allow, deny or policy");
    if (tokens.size() < 2) return end_error("a protocol is missing after '" + std::string(tokens[0].text) + "'");
    static const std::pair<std::string_view, Proto> protos[] = {
        {"ip", Proto::ip}, {"any", Proto::ip}, {"ip4", Proto::ip4}, {"ip6", Proto::ip6}, {"tcp", Proto::tcp},
        {"udp", Proto::udp}, {"icmp", Proto::icmp}, {"icmp6", Proto::icmp6}};
    const auto* proto = std::find_if(std::begin(protos), std::end(protos), [&](const auto& p) { return p.first == tokens[1].text; });
    if (proto == std::end(protos)) {
      return error(tokens[1], "'" + std::string(tokens[1].text) + "' is not a protocol (ip, ip4, ip6, tcp, udp, icmp, icmp6)");
    }
    r.proto = proto->second;
    const bool has_ports = r.proto == Proto::tcp || r.proto == Proto::udp;
    const bool is_icmp = r.proto == Proto::icmp || r.proto == Proto::icmp6;

    bool seen_from = false, seen_to = false, seen_type = false, seen_on = false, seen_dir = false;
    for (size_t i = 2; i < tokens.size(); ++i) {
      const auto& kw = tokens[i];
      auto value = [&](const char* what) -> Result<Token> {
        if (i + 1 >= tokens.size()) return end_error(std::string(what) + " is missing after '" + std::string(kw.text) + "'");
        return tokens[++i];
      };
      auto once = [&](bool& seen) -> Result<void> {
        if (seen) return error(kw, "'" + std::string(kw.text) + "' is given twice");
        seen = true;
        return {};
      };
      if (kw.text == "from" || kw.text == "to") {
        const bool from = kw.text == "from";
        KK_TRY(once(from ? seen_from : seen_to));
        const Token at = KK_TRY(value("an address"));
        auto prefix = parse_prefix(at.text);
        if (!prefix) return error(at, prefix.error().message);
        (from ? r.src : r.dst) = *prefix;
        if (i + 1 < tokens.size() && tokens[i + 1].text == "port") {
          const Token port_kw = tokens[++i];
          if (!has_ports) return error(port_kw, "ports need tcp or udp, not " + std::string(tokens[1].text));
          const Token ports = KK_TRY(value("a port list"));
          auto parsed = parse_ports(ports.text);
          if (!parsed) return error(ports, parsed.error().message);
          (from ? r.src_ports : r.dst_ports) = *parsed;
        }
      } else if (kw.text == "type") {
        KK_TRY(once(seen_type));
        if (!is_icmp) return error(kw, "'type' needs icmp or icmp6, not " + std::string(tokens[1].text));
        const Token at = KK_TRY(value("an ICMP type"));
        auto t = number(at.text, 0, 255);
        if (!t) return error(at, "'" + std::string(at.text) + "' is not an ICMP type (0-255)");
        r.icmp_type = static_cast<int>(*t);
      } else if (kw.text == "on") {
        KK_TRY(once(seen_on));
        if (i + 2 >= tokens.size() || tokens[i + 1].text != "pair") return end_error("'on' is followed by 'pair N'");
        ++i;
        const Token at = tokens[++i];
        auto n = number(at.text, 0, 63);
        if (!n) return error(at, "'" + std::string(at.text) + "' is not a port pair number (0-63)");
        r.pair = static_cast<int>(*n);
      } else if (kw.text == "dir") {
        KK_TRY(once(seen_dir));
        const Token at = KK_TRY(value("a direction"));
        if (at.text == "a-to-b") r.direction = Direction::a_to_b;
        else if (at.text == "b-to-a") r.direction = Direction::b_to_a;
        else if (at.text == "any") r.direction = Direction::any;
        else return error(at, "'" + std::string(at.text) + "' is not a direction (a-to-b, b-to-a, any)");
      } else if (kw.text == "port") {
        return error(kw, "'port' follows an address: 'from ADDR port P' or 'to ADDR port P'");
      } else {
        return error(kw, "'" + std::string(kw.text) + "' is not one of from, to, port, type, on, dir");
      }
    }
    // One family per rule: the addresses and the protocol must agree.
    const int fam_src = r.src.family, fam_dst = r.dst.family;
    if (fam_src != 0 && fam_dst != 0 && fam_src != fam_dst) {
      return error(tokens[0], "the rule mixes an IPv4 and an IPv6 address");
    }
    const int fam_addr = fam_src != 0 ? fam_src : fam_dst;
    const int fam_proto = r.proto == Proto::ip4 || r.proto == Proto::icmp ? 4 : r.proto == Proto::ip6 || r.proto == Proto::icmp6 ? 6 : 0;
    if (fam_addr != 0 && fam_proto != 0 && fam_addr != fam_proto) {
      return error(tokens[1], std::string(tokens[1].text) + " is IPv" + std::to_string(fam_proto) + " but the rule's addresses are IPv" +
                                  std::to_string(fam_addr));
    }
    set.rules.push_back(std::move(r));
  }
  return set;
}

std::string no_rules_warning(const RuleSet& set, const std::string& file) {
  if (!set.rules.empty()) return "";
  const bool allow = set.policy == Action::allow;
  return file + " holds no rules: every new flow is " + (allow ? "allowed" : "dropped") + " by the policy (policy " +
         (allow ? "allow" : "deny") + (set.policy_given ? ")" : ", the default)");
}

RuleDiff diff_rules(const RuleSet& before, const RuleSet& after) {
  // A rule's text with each run of blanks as one space: re-indenting a file changes no rule.
  const auto normal = [](const std::string& text) {
    std::string out;
    for (const char c : text) {
      const bool blank = c == ' ' || c == '\t';
      if (blank && (out.empty() || out.back() == ' ')) continue;
      out += blank ? ' ' : c;
    }
    return out;
  };
  std::unordered_map<std::string, std::deque<int>> old_by_text;
  for (size_t i = 0; i < before.rules.size(); ++i) old_by_text[normal(before.rules[i].text)].push_back(static_cast<int>(i));
  RuleDiff d;
  d.kept_from.reserve(after.rules.size());
  for (const auto& rule : after.rules) {
    auto it = old_by_text.find(normal(rule.text));
    if (it == old_by_text.end() || it->second.empty()) {
      d.kept_from.push_back(-1);
      ++d.added;
      continue;
    }
    d.kept_from.push_back(it->second.front());
    it->second.pop_front();
    ++d.kept;
  }
  d.removed = before.rules.size() - d.kept;
  return d;
}

}  // namespace kmodkit::firewall
