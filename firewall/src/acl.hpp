#pragma once
// The rule set compiled into rte_acl contexts, one for IPv4 and one for IPv6: the classifier
// the data plane consults for the first packet of a flow only.

#include <rte_acl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "kmodkit/result.hpp"
#include "packet.hpp"
#include "rules.hpp"

namespace kmodkit::firewall {

// The classification key of a packet, laid out as the rte_acl field definitions read it
// (DPDK-NOTES: the first field is one byte, the rest in 4-byte groups; network byte order).
struct alignas(8) Key4 {
  uint8_t proto;
  uint8_t pad[3];
  uint32_t src, dst;
  uint16_t src_port, dst_port;  // ICMP: type in src_port
  uint32_t where;               // (pair << 2) | direction bit: 1 a-to-b, 2 b-to-a
};
struct alignas(8) Key6 {
  uint8_t proto;
  uint8_t pad[3];
  uint32_t src[4], dst[4];
  uint16_t src_port, dst_port;
  uint32_t where;
};

// Fills the key of a parsed packet that crossed `pair` in `direction` (Direction::a_to_b or b_to_a).
void make_key(const Packet& p, int pair, Direction direction, Key4* key);
void make_key(const Packet& p, int pair, Direction direction, Key6* key);

class Classifier {
 public:
  // Compiles the rules (port lists become one ACL rule per combination) into contexts named
  // "<name>4" and "<name>6" (rte_acl returns a live context of the same name, so a reload uses
  // another name). Needs an initialised EAL. Configuration error (78) when rte_acl refuses.
  static Result<Classifier> build(const RuleSet& rules, const std::string& name, int socket_id);
  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;
  ~Classifier();

  // The index in RuleSet::rules of the first rule that matches, or -1 (the policy decides).
  int classify(const Key4& key) const;
  int classify(const Key6& key) const;
  // Bulk forms for a burst: results[i] as above.
  void classify(const Key4* const* keys, int* results, uint32_t n) const;
  void classify(const Key6* const* keys, int* results, uint32_t n) const;

  size_t acl_rules4() const { return rules4_; }
  size_t acl_rules6() const { return rules6_; }

 private:
  Classifier() = default;
  rte_acl_ctx* ctx4_ = nullptr;
  rte_acl_ctx* ctx6_ = nullptr;
  size_t rules4_ = 0, rules6_ = 0;
};

}  // namespace kmodkit::firewall
