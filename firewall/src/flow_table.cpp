#include "flow_table.hpp"

#include <rte_errno.h>
#include <rte_hash_crc.h>

#include <cstring>

namespace kmodkit::firewall {

Result<FlowTable> FlowTable::create(const std::string& name, uint32_t capacity, int socket_id) {
  FlowTable t;
  rte_hash_parameters p{};
  p.name = name.c_str();
  p.entries = capacity;
  p.key_len = sizeof(FlowKey);
  p.hash_func = rte_hash_crc;  // CRC32 instructions where the CPU has them
  p.hash_func_init_val = 0;
  p.socket_id = socket_id;
  // Exactly `capacity` flows fit (no bucket overflow surprises below that).
  p.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
  t.hash_ = rte_hash_create(&p);
  if (t.hash_ == nullptr) {
    return fail(ExitCode::config, "flow table " + name + " of " + std::to_string(capacity) +
                                      " flows cannot be made: " + std::strerror(rte_errno));
  }
  t.capacity_ = capacity;
  t.flows_.resize(capacity + 1);  // rte_hash positions are 0..capacity (it keeps one spare)
  return t;
}

FlowTable::FlowTable(FlowTable&& o) noexcept
    : hash_(o.hash_), flows_(std::move(o.flows_)), capacity_(o.capacity_), cursor_(o.cursor_) {
  o.hash_ = nullptr;
}

FlowTable& FlowTable::operator=(FlowTable&& o) noexcept {
  std::swap(hash_, o.hash_);
  flows_ = std::move(o.flows_);
  capacity_ = o.capacity_;
  cursor_ = o.cursor_;
  return *this;
}

FlowTable::~FlowTable() {
  if (hash_ != nullptr) rte_hash_free(hash_);
}

Flow* FlowTable::find(const FlowKey& key) {
  const int32_t pos = rte_hash_lookup(hash_, &key);
  return pos < 0 ? nullptr : &flows_[static_cast<size_t>(pos)];
}

void FlowTable::find_bulk(const FlowKey* const* keys, Flow** flows, uint32_t n) {
  int32_t pos[64];
  rte_hash_lookup_bulk(hash_, reinterpret_cast<const void**>(const_cast<const FlowKey**>(keys)), n, pos);
  for (uint32_t i = 0; i < n; ++i) flows[i] = pos[i] < 0 ? nullptr : &flows_[static_cast<size_t>(pos[i])];
}

Flow* FlowTable::insert(const FlowKey& key) {
  if (size() >= capacity_) return nullptr;
  const int32_t pos = rte_hash_add_key(hash_, &key);
  if (pos < 0) return nullptr;
  Flow& f = flows_[static_cast<size_t>(pos)];
  f = Flow{};
  return &f;
}

uint32_t FlowTable::expire(uint32_t now, const Timeouts& timeouts, uint32_t budget) {
  uint32_t removed = 0;
  const void* key = nullptr;
  void* data = nullptr;
  for (uint32_t seen = 0; seen < budget; ++seen) {
    const int32_t pos = rte_hash_iterate(hash_, &key, &data, &cursor_);
    if (pos < 0) {  // the end: start over next time
      cursor_ = 0;
      break;
    }
    const Flow& f = flows_[static_cast<size_t>(pos)];
    if (now - f.last_seen > idle_timeout(f.track, timeouts)) {
      FlowKey copy;
      std::memcpy(&copy, key, sizeof copy);
      if (rte_hash_del_key(hash_, &copy) >= 0) ++removed;
    }
  }
  return removed;
}

uint32_t FlowTable::size() const { return static_cast<uint32_t>(rte_hash_count(hash_)); }

}  // namespace kmodkit::firewall
