#include "acl.hpp"

#include <arpa/inet.h>
#include <rte_errno.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace kmodkit::firewall {
namespace {

constexpr uint32_t kDirAtoB = 1, kDirBtoA = 2;

enum Field4 { f4_proto, f4_src, f4_dst, f4_sport, f4_dport, f4_where, f4_count };
enum Field6 { f6_proto, f6_src0, f6_src1, f6_src2, f6_src3, f6_dst0, f6_dst1, f6_dst2, f6_dst3, f6_sport, f6_dport, f6_where, f6_count };

RTE_ACL_RULE_DEF(Rule4, f4_count);
RTE_ACL_RULE_DEF(Rule6, f6_count);

rte_acl_field_def field(uint8_t type, uint8_t size, uint8_t index, uint8_t input, size_t offset) {
  return rte_acl_field_def{type, size, index, input, static_cast<uint32_t>(offset)};
}

std::vector<rte_acl_field_def> defs4() {
  return {field(RTE_ACL_FIELD_TYPE_BITMASK, 1, f4_proto, 0, offsetof(Key4, proto)),
          field(RTE_ACL_FIELD_TYPE_MASK, 4, f4_src, 1, offsetof(Key4, src)),
          field(RTE_ACL_FIELD_TYPE_MASK, 4, f4_dst, 2, offsetof(Key4, dst)),
          field(RTE_ACL_FIELD_TYPE_RANGE, 2, f4_sport, 3, offsetof(Key4, src_port)),
          field(RTE_ACL_FIELD_TYPE_RANGE, 2, f4_dport, 3, offsetof(Key4, dst_port)),
          field(RTE_ACL_FIELD_TYPE_BITMASK, 4, f4_where, 4, offsetof(Key4, where))};
}

std::vector<rte_acl_field_def> defs6() {
  std::vector<rte_acl_field_def> d = {field(RTE_ACL_FIELD_TYPE_BITMASK, 1, f6_proto, 0, offsetof(Key6, proto))};
  for (uint8_t i = 0; i < 4; ++i) {
    d.push_back(field(RTE_ACL_FIELD_TYPE_MASK, 4, static_cast<uint8_t>(f6_src0 + i), static_cast<uint8_t>(1 + i),
                      offsetof(Key6, src) + 4 * i));
  }
  for (uint8_t i = 0; i < 4; ++i) {
    d.push_back(field(RTE_ACL_FIELD_TYPE_MASK, 4, static_cast<uint8_t>(f6_dst0 + i), static_cast<uint8_t>(5 + i),
                      offsetof(Key6, dst) + 4 * i));
  }
  d.push_back(field(RTE_ACL_FIELD_TYPE_RANGE, 2, f6_sport, 9, offsetof(Key6, src_port)));
  d.push_back(field(RTE_ACL_FIELD_TYPE_RANGE, 2, f6_dport, 9, offsetof(Key6, dst_port)));
  d.push_back(field(RTE_ACL_FIELD_TYPE_BITMASK, 4, f6_where, 10, offsetof(Key6, where)));
  return d;
}

uint8_t proto_number(Proto p) {
  switch (p) {
    case Proto::tcp: return 6;
    case Proto::udp: return 17;
    case Proto::icmp: return 1;
    case Proto::icmp6: return 58;
    default: return 0;
  }
}

// The 32-bit word `i` of an address prefix, in host order, and how many of its bits count.
uint32_t word(const Prefix& p, int i) {
  uint32_t w;
  std::memcpy(&w, p.addr.data() + 4 * i, 4);
  return ntohl(w);
}
uint32_t word_bits(const Prefix& p, int i) {
  const int bits = p.length - 32 * i;
  return static_cast<uint32_t>(bits < 0 ? 0 : bits > 32 ? 32 : bits);
}

// Fills the fields every rule has, for one port-range combination.
template <typename R>
void common(R& r, const Rule& rule, int index, size_t count, int proto_f, int sport_f, int dport_f, int where_f,
            const PortRange& sp, const PortRange& dp) {
  r.data.category_mask = 1;
  r.data.priority = static_cast<int32_t>(RTE_ACL_MAX_PRIORITY - static_cast<uint32_t>(index));  // first match wins
  r.data.userdata = static_cast<uint32_t>(index + 1);
  (void)count;
  const uint8_t proto = proto_number(rule.proto);
  r.field[proto_f].value.u8 = proto;
  r.field[proto_f].mask_range.u8 = proto != 0 ? 0xff : 0;
  PortRange s = sp, d = dp;
  if (rule.icmp_type >= 0) s = {static_cast<uint16_t>(rule.icmp_type), static_cast<uint16_t>(rule.icmp_type)};
  r.field[sport_f].value.u16 = s.low;
  r.field[sport_f].mask_range.u16 = s.high;
  r.field[dport_f].value.u16 = d.low;
  r.field[dport_f].mask_range.u16 = d.high;
  uint32_t value = 0, mask = 0;
  if (rule.pair >= 0) {
    value |= static_cast<uint32_t>(rule.pair) << 2;
    mask |= ~uint32_t{3};
  }
  if (rule.direction != Direction::any) {
    value |= rule.direction == Direction::a_to_b ? kDirAtoB : kDirBtoA;
    mask |= 3;
  }
  r.field[where_f].value.u32 = value;
  r.field[where_f].mask_range.u32 = mask;
}

std::vector<PortRange> or_any(const std::vector<PortRange>& v) { return v.empty() ? std::vector<PortRange>{PortRange{}} : v; }

Error acl_error(const std::string& what) {
  return Error{ExitCode::config, what + ": " + std::strerror(rte_errno)};
}

uint32_t where_of(int pair, Direction d) {
  return (static_cast<uint32_t>(pair) << 2) | (d == Direction::b_to_a ? kDirBtoA : kDirAtoB);
}

}  // namespace

void make_key(const Packet& p, int pair, Direction direction, Key4* k) {
  std::memset(k, 0, sizeof *k);
  k->proto = p.proto;
  std::memcpy(&k->src, p.src.data(), 4);
  std::memcpy(&k->dst, p.dst.data(), 4);
  const bool icmp = p.proto == 1;
  k->src_port = htons(icmp ? p.icmp_type : p.src_port);
  k->dst_port = htons(icmp ? 0 : p.dst_port);
  k->where = htonl(where_of(pair, direction));
}

void make_key(const Packet& p, int pair, Direction direction, Key6* k) {
  std::memset(k, 0, sizeof *k);
  k->proto = p.proto;
  std::memcpy(k->src, p.src.data(), 16);
  std::memcpy(k->dst, p.dst.data(), 16);
  const bool icmp = p.proto == 58;
  k->src_port = htons(icmp ? p.icmp_type : p.src_port);
  k->dst_port = htons(icmp ? 0 : p.dst_port);
  k->where = htonl(where_of(pair, direction));
}

Result<Classifier> Classifier::build(const RuleSet& set, const std::string& name, int socket_id) {
  Classifier c;
  std::vector<Rule4> r4;
  std::vector<Rule6> r6;
  for (size_t i = 0; i < set.rules.size(); ++i) {
    const Rule& rule = set.rules[i];
    const int fam = rule.family();
    for (const auto& sp : or_any(rule.src_ports)) {
      for (const auto& dp : or_any(rule.dst_ports)) {
        if (fam == 0 || fam == 4) {
          Rule4 r{};
          common(r, rule, static_cast<int>(i), set.rules.size(), f4_proto, f4_sport, f4_dport, f4_where, sp, dp);
          r.field[f4_src].value.u32 = word(rule.src, 0);
          r.field[f4_src].mask_range.u32 = rule.src.family == 0 ? 0 : word_bits(rule.src, 0);
          r.field[f4_dst].value.u32 = word(rule.dst, 0);
          r.field[f4_dst].mask_range.u32 = rule.dst.family == 0 ? 0 : word_bits(rule.dst, 0);
          r4.push_back(r);
        }
        if (fam == 0 || fam == 6) {
          Rule6 r{};
          common(r, rule, static_cast<int>(i), set.rules.size(), f6_proto, f6_sport, f6_dport, f6_where, sp, dp);
          for (int w = 0; w < 4; ++w) {
            r.field[f6_src0 + w].value.u32 = word(rule.src, w);
            r.field[f6_src0 + w].mask_range.u32 = rule.src.family == 0 ? 0 : word_bits(rule.src, w);
            r.field[f6_dst0 + w].value.u32 = word(rule.dst, w);
            r.field[f6_dst0 + w].mask_range.u32 = rule.dst.family == 0 ? 0 : word_bits(rule.dst, w);
          }
          r6.push_back(r);
        }
      }
    }
  }
  auto make = [&](const std::string& n, size_t fields, const std::vector<rte_acl_field_def>& defs, const void* rules,
                  size_t count) -> Result<rte_acl_ctx*> {
    if (count == 0) return static_cast<rte_acl_ctx*>(nullptr);  // nothing of this family: the policy decides
    rte_acl_param param{};
    param.name = n.c_str();
    param.socket_id = socket_id;
    param.rule_size = static_cast<uint32_t>(RTE_ACL_RULE_SZ(fields));
    param.max_rule_num = static_cast<uint32_t>(std::max<size_t>(count, 1));
    rte_acl_ctx* ctx = rte_acl_create(&param);
    if (ctx == nullptr) return fail(acl_error("rte_acl_create " + n));
    if (count > 0 && rte_acl_add_rules(ctx, static_cast<const rte_acl_rule*>(rules), static_cast<uint32_t>(count)) != 0) {
      rte_acl_free(ctx);
      return fail(acl_error("rte_acl_add_rules " + n));
    }
    rte_acl_config cfg{};
    cfg.num_categories = 1;
    cfg.num_fields = static_cast<uint32_t>(defs.size());
    std::memcpy(cfg.defs, defs.data(), defs.size() * sizeof defs[0]);
    if (int err = rte_acl_build(ctx, &cfg); err != 0) {
      rte_acl_free(ctx);
      rte_errno = -err;
      return fail(acl_error("rte_acl_build " + n + " (" + std::to_string(count) + " rules)"));
    }
    return ctx;
  };
  c.ctx4_ = KK_TRY(make(name + "4", f4_count, defs4(), r4.data(), r4.size()));
  c.rules4_ = r4.size();
  c.ctx6_ = KK_TRY(make(name + "6", f6_count, defs6(), r6.data(), r6.size()));
  c.rules6_ = r6.size();
  return c;
}

Classifier::Classifier(Classifier&& o) noexcept : ctx4_(o.ctx4_), ctx6_(o.ctx6_), rules4_(o.rules4_), rules6_(o.rules6_) {
  o.ctx4_ = o.ctx6_ = nullptr;
}
Classifier& Classifier::operator=(Classifier&& o) noexcept {
  std::swap(ctx4_, o.ctx4_);
  std::swap(ctx6_, o.ctx6_);
  rules4_ = o.rules4_;
  rules6_ = o.rules6_;
  return *this;
}
Classifier::~Classifier() {
  if (ctx4_ != nullptr) rte_acl_free(ctx4_);
  if (ctx6_ != nullptr) rte_acl_free(ctx6_);
}

namespace {

// rte_acl_classify over a burst, 64 keys at a time; results are rule indexes or -1. A family
// with no rules has no context: nothing matches.
template <typename Key>
void classify_bulk(const rte_acl_ctx* ctx, const Key* const* keys, int* results, uint32_t n) {
  if (ctx == nullptr) {
    std::fill(results, results + n, -1);
    return;
  }
  uint32_t raw[64];
  for (uint32_t done = 0; done < n; done += 64) {
    const uint32_t m = std::min<uint32_t>(64, n - done);
    rte_acl_classify(ctx, reinterpret_cast<const uint8_t**>(const_cast<const Key**>(keys + done)), raw, m, 1);
    for (uint32_t i = 0; i < m; ++i) results[done + i] = static_cast<int>(raw[i]) - 1;
  }
}

}  // namespace

void Classifier::classify(const Key4* const* keys, int* results, uint32_t n) const { classify_bulk(ctx4_, keys, results, n); }
void Classifier::classify(const Key6* const* keys, int* results, uint32_t n) const { classify_bulk(ctx6_, keys, results, n); }

int Classifier::classify(const Key4& key) const {
  const Key4* k = &key;
  int r = -1;
  classify(&k, &r, 1);
  return r;
}

int Classifier::classify(const Key6& key) const {
  const Key6* k = &key;
  int r = -1;
  classify(&k, &r, 1);
  return r;
}

}  // namespace kmodkit::firewall
