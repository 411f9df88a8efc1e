#pragma once
// One worker's flow table: rte_hash from the symmetric flow key to a slot of a preallocated
// array of flows, on hugepages. IPv4 flows live in a table with a 16-byte key (rte_hash hashes
// and compares it in a few instructions), IPv6 flows in one with the 48-byte FlowKey; together
// they hold at most `capacity` flows. Each worker owns its table (symmetric RSS sends both
// directions of a flow to the same worker), so there is one writer and no lock; nothing is
// allocated after create(). A full table makes room as conntrack's early drop does, by evicting
// a flow nobody answered (evictable() in flow.hpp) among a few slots it looks at; when it finds
// none it refuses the new flow (the caller counts and drops it): established flows are never
// evicted to make room.

#include <rte_hash.h>

#include <cstdint>
#include <string>

#include "flow.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

struct Flow {
  FlowTrack track;
  uint32_t last_seen = 0; // seconds, the caller's clock
  bool used = false;      // the slot holds a flow (the expiry sweep reads the array, not the hash)
};

class FlowTable {
 public:
  // Needs an initialised EAL. Configuration error (78) when the tables cannot be made (memory).
  static Result<FlowTable> create(const std::string& name, uint32_t capacity, int socket_id);
  FlowTable(FlowTable&&) noexcept;
  FlowTable& operator=(FlowTable&&) noexcept;
  ~FlowTable();

  // The flow of a key of either family, or nullptr.
  Flow* find(const FlowKey& key);
  // Looks up a burst at once: flows[i] is the flow of keys[i] or nullptr. n <= 64.
  void find_bulk(const FlowKey4* keys, Flow** flows, uint32_t n);
  void find_bulk(const FlowKey* keys, Flow** flows, uint32_t n);
  // The flows a full table looks at for one to evict (a window that moves on each time).
  static constexpr uint32_t kEvictWindow = 8;
  // A new flow for the key (its fields zeroed), or nullptr when the table is full and none of
  // the kEvictWindow flows it looked at was evictable. When it evicted a flow to make room,
  // *evicted (when given) gets that flow's IP protocol; else it is left as it was.
  Flow* insert(const FlowKey& key, int* evicted = nullptr);
  // Removes flows idle past their state's timeout, looking at `budget` slots of each family's
  // flow array from where the last call stopped (a sweep spread over the polling loop: a full
  // pass takes capacity / budget calls). Returns how many it removed; by_proto (when given,
  // kFlowProtos entries) gets each removal added by flow_proto.
  uint32_t expire(uint32_t now, const Timeouts& timeouts, uint32_t budget, uint32_t* by_proto = nullptr);

  uint32_t size() const;
  uint32_t capacity() const { return capacity_; }
  // The slots the expiry sweep goes through in a full pass (each family has as many).
  uint32_t slots() const { return v4_.slots; }

 private:
  struct Family {
    rte_hash* hash = nullptr;
    Flow* flows = nullptr;  // indexed by rte_hash's key position
    uint32_t key_len = 0;   // sizeof FlowKey4 or FlowKey
    uint32_t slots = 0;     // the flow array's size: rte_hash's entries + 1 (at least capacity + 1)
    uint32_t cursor = 0;    // where the expiry sweep goes on
    uint32_t evict_at = 0;  // where the next look for a flow to evict starts
  };
  FlowTable() = default;
  static void release(Family& f);
  template <typename Key>
  void lookup(Family& f, const Key* keys, Flow** flows, uint32_t n);
  uint32_t expire(Family& f, uint32_t now, const Timeouts& timeouts, uint32_t budget, uint32_t* by_proto);
  // Removes the flow at a position; false when rte_hash has no key there.
  bool remove_at(Family& f, uint32_t pos);
  // Evicts one evictable flow among kEvictWindow of the family's slots; its protocol, or -1.
  int evict_one(Family& f);
  Family v4_, v6_;
  uint32_t capacity_ = 0;
};

}  // namespace kmodkit::firewall
