#include "flow_table.hpp"

#include <rte_common.h>
#include <rte_errno.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include <cstring>
#include <utility>

#include "sizing.hpp"

namespace kmodkit::firewall {
namespace {

constexpr uint32_t kHashInit = 0;

// rte_hash has a power of two of 8-entry buckets, enough for `entries` keys. Filled to the
// last bucket entry, each insertion searches a cuckoo path through the whole table (measured:
// about 13,000 cycles per insertion and removal in a full table of 2^21 flows, against 900 at
// 85%); a table whose capacity is at or just below a power of two therefore gets the next one
// (one entry more than the power of two asks for it: the key store grows by that one key, the
// buckets, 8 bytes an entry, double).
constexpr double kMaxBucketLoad = 0.85;

uint32_t hash_entries(uint32_t capacity) {
  const uint64_t buckets = rte_align64pow2(capacity);
  if (static_cast<double>(capacity) <= kMaxBucketLoad * static_cast<double>(buckets)) return capacity;
  return static_cast<uint32_t>(buckets + 1);
}

rte_hash* make_hash(const std::string& name, uint32_t entries, uint32_t key_len, int socket_id) {
  rte_hash_parameters p{};
  p.name = name.c_str();
  p.entries = entries;
  p.key_len = key_len;
  p.hash_func = rte_hash_crc;  // CRC32 instructions where the CPU has them; lookups compute it inline
  p.hash_func_init_val = kHashInit;
  p.socket_id = socket_id;
  // Exactly `entries` flows fit (no bucket overflow surprises below that).
  p.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
  return rte_hash_create(&p);
}

FlowKey4 narrow(const FlowKey& k) {
  FlowKey4 n;
  std::memcpy(&n.lo_addr, k.lo_addr.data(), 4);
  std::memcpy(&n.hi_addr, k.hi_addr.data(), 4);
  n.lo_port = k.lo_port;
  n.hi_port = k.hi_port;
  n.proto = k.proto;
  n.pair = k.pair;
  return n;
}

}  // namespace

Result<FlowTable> FlowTable::create(const std::string& name, uint32_t capacity, int socket_id) {
  FlowTable t;
  t.capacity_ = capacity;
  const auto make = [&](Family& family, const std::string& table, uint32_t key_len) -> Result<void> {
    family.key_len = key_len;
    const uint32_t entries = hash_entries(capacity);
    family.hash = make_hash(table, entries, key_len, socket_id);
    if (family.hash != nullptr) {  // rte_hash positions are 0..entries (it keeps one spare)
      family.slots = entries + 1;
      family.flows = static_cast<Flow*>(
          rte_zmalloc_socket(table.c_str(), sizeof(Flow) * family.slots, RTE_CACHE_LINE_SIZE, socket_id));
    }
    if (family.hash == nullptr || family.flows == nullptr) {
      // Both families' tables and flow arrays: about kFlowBytes a flow.
      return fail(ExitCode::config, "a flow table of " + std::to_string(capacity) + " flows needs about " +
                                        std::to_string((capacity * kFlowBytes >> 20) + 1) +
                                        " MB of hugepages that EAL could not give: reserve more hugepages or lower --flows");
    }
    return {};
  };
  KK_TRY(make(t.v4_, name + "_4", sizeof(FlowKey4)));
  KK_TRY(make(t.v6_, name + "_6", sizeof(FlowKey)));
  return t;
}

FlowTable::FlowTable(FlowTable&& o) noexcept
    : v4_(std::exchange(o.v4_, {})), v6_(std::exchange(o.v6_, {})), capacity_(o.capacity_) {}

FlowTable& FlowTable::operator=(FlowTable&& o) noexcept {
  std::swap(v4_, o.v4_);
  std::swap(v6_, o.v6_);
  capacity_ = o.capacity_;
  return *this;
}

void FlowTable::release(Family& f) {
  if (f.hash != nullptr) rte_hash_free(f.hash);
  rte_free(f.flows);
  f = {};
}

FlowTable::~FlowTable() {
  release(v4_);
  release(v6_);
}

Flow* FlowTable::find(const FlowKey& key) {
  int32_t pos;
  Family& f = key.family == 4 ? v4_ : v6_;
  if (key.family == 4) {
    const FlowKey4 k = narrow(key);
    pos = rte_hash_lookup(f.hash, &k);
  } else {
    pos = rte_hash_lookup(f.hash, &key);
  }
  return pos < 0 ? nullptr : &f.flows[pos];
}

template <typename Key>
void FlowTable::lookup(Family& f, const Key* keys, Flow** flows, uint32_t n) {
  const void* ptrs[64];
  hash_sig_t sigs[64];
  int32_t pos[64];
  for (uint32_t i = 0; i < n; ++i) {
    ptrs[i] = &keys[i];
    sigs[i] = rte_hash_crc(&keys[i], sizeof(Key), kHashInit);
  }
  rte_hash_lookup_with_hash_bulk(f.hash, ptrs, sigs, n, pos);
  for (uint32_t i = 0; i < n; ++i) flows[i] = pos[i] < 0 ? nullptr : &f.flows[pos[i]];
}

void FlowTable::find_bulk(const FlowKey4* keys, Flow** flows, uint32_t n) { lookup(v4_, keys, flows, n); }
void FlowTable::find_bulk(const FlowKey* keys, Flow** flows, uint32_t n) { lookup(v6_, keys, flows, n); }

Flow* FlowTable::insert(const FlowKey& key, int* evicted) {
  Family& f = key.family == 4 ? v4_ : v6_;
  if (size() >= capacity_) {
    // Either family's flows count against the capacity: the key's own first, then the other's.
    int proto = evict_one(f);
    if (proto < 0) proto = evict_one(key.family == 4 ? v6_ : v4_);
    if (proto < 0) return nullptr;
    if (evicted != nullptr) *evicted = proto;
  }
  int32_t pos;
  if (key.family == 4) {
    const FlowKey4 k = narrow(key);
    pos = rte_hash_add_key(f.hash, &k);
  } else {
    pos = rte_hash_add_key(f.hash, &key);
  }
  if (pos < 0) return nullptr;
  f.flows[pos] = Flow{};
  f.flows[pos].used = true;
  return &f.flows[pos];
}

bool FlowTable::remove_at(Family& f, uint32_t pos) {
  void* key = nullptr;
  bool removed = false;
  if (rte_hash_get_key_with_position(f.hash, static_cast<int32_t>(pos), &key) == 0) {
    alignas(16) unsigned char copy[sizeof(FlowKey)];  // not a pointer into the table being changed
    std::memcpy(copy, key, f.key_len);
    removed = rte_hash_del_key(f.hash, copy) >= 0;
  }
  f.flows[pos].used = false;
  return removed;
}

int FlowTable::evict_one(Family& f) {
  const uint32_t slots = f.slots;
  for (uint32_t seen = 0; seen < kEvictWindow; ++seen) {
    const uint32_t pos = f.evict_at;
    f.evict_at = f.evict_at + 1 == slots ? 0 : f.evict_at + 1;
    const Flow& flow = f.flows[pos];
    if (!flow.used || !evictable(flow.track)) continue;
    const uint8_t proto = flow.track.proto;
    if (remove_at(f, pos)) return proto;
  }
  return -1;
}

uint32_t FlowTable::expire(Family& f, uint32_t now, const Timeouts& timeouts, uint32_t budget, uint32_t* by_proto) {
  uint32_t removed = 0;
  const uint32_t slots = f.slots;
  for (uint32_t seen = 0; seen < budget && seen < slots; ++seen) {
    const uint32_t pos = f.cursor;
    f.cursor = f.cursor + 1 == slots ? 0 : f.cursor + 1;
    const Flow& flow = f.flows[pos];
    if (!flow.used || now - flow.last_seen <= idle_timeout(flow.track, timeouts)) continue;
    const uint8_t proto = flow.track.proto;
    if (remove_at(f, pos)) {
      ++removed;
      if (by_proto != nullptr) ++by_proto[static_cast<int>(flow_proto(proto))];
    }
  }
  return removed;
}

uint32_t FlowTable::expire(uint32_t now, const Timeouts& timeouts, uint32_t budget, uint32_t* by_proto) {
  return expire(v4_, now, timeouts, budget, by_proto) + expire(v6_, now, timeouts, budget, by_proto);
}

uint32_t FlowTable::size() const {
  return static_cast<uint32_t>(rte_hash_count(v4_.hash) + rte_hash_count(v6_.hash));
}

}  // namespace kmodkit::firewall
