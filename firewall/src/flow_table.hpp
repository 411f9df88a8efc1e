#pragma once
// One worker's flow table: rte_hash from the symmetric FlowKey to a slot of a preallocated
// array of flows. Each worker owns its table (symmetric RSS sends both directions of a flow to
// the same worker), so there is one writer and no lock; nothing is allocated after create().
// A full table refuses new flows (the caller counts and drops them): established flows are
// never evicted to make room.

#include <rte_hash.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flow.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

struct Flow {
  FlowTrack track;
  int32_t rule = -1;      // the rule that allowed it (-1: the policy)
  uint32_t last_seen = 0; // seconds, the caller's clock
  uint64_t packets = 0;
};

class FlowTable {
 public:
  // Needs an initialised EAL. Configuration error (78) when rte_hash cannot be made (memory).
  static Result<FlowTable> create(const std::string& name, uint32_t capacity, int socket_id);
  FlowTable(FlowTable&&) noexcept;
  FlowTable& operator=(FlowTable&&) noexcept;
  ~FlowTable();

  // The flow of a key, or nullptr.
  Flow* find(const FlowKey& key);
  // Looks up a burst at once: flows[i] is the flow of keys[i] or nullptr. n <= 64.
  void find_bulk(const FlowKey* const* keys, Flow** flows, uint32_t n);
  // A new flow for the key (its fields zeroed), or nullptr when the table is full.
  Flow* insert(const FlowKey& key);
  // Removes flows idle past their state's timeout, looking at most `budget` entries from where
  // the last call stopped (a sweep spread over the polling loop). Returns how many it removed.
  uint32_t expire(uint32_t now, const Timeouts& timeouts, uint32_t budget);

  uint32_t size() const;
  uint32_t capacity() const { return capacity_; }

 private:
  FlowTable() = default;
  rte_hash* hash_ = nullptr;
  std::vector<Flow> flows_;
  uint32_t capacity_ = 0;
  uint32_t cursor_ = 0;
};

}  // namespace kmodkit::firewall
