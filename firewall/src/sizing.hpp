#pragma once
// How much the firewall asks of the node's memory, in one place: the data plane sizes its pool
// and tables with it, and preflight checks the pod's hugepages against it.

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace kmodkit::firewall {

// The packet buffers the firewall's pool holds when --mbufs does not ask for more: every RX
// and TX ring of every port full, a burst in flight per queue, and some for the lcore caches.
inline uint32_t mbufs_needed(size_t ports, uint16_t queues, uint16_t ring_size) {
  return static_cast<uint32_t>(ports) * queues * (ring_size * 2u + 32u) + 4096;
}

// Hugepage memory a flow table takes per flow, at most (both families' rte_hash tables and flow
// arrays): a capacity at or just below a power of two gets twice the buckets (flow_table.cpp),
// about 225 bytes a flow; others about 190.
constexpr uint64_t kFlowBytes = 228;

// About how much hugepage memory the firewall asks EAL for: its packet buffers (at least
// mbufs_needed), each the mbuf (128 bytes), its headroom and data room (2176) and the mempool's
// object header and alignment (128); its flow tables; and EAL's own (memzones, rings, the
// rules' ACL tries), taken as 16 MiB. (Measured with 2 MiB pages: 2,097,152 flows and one worker
// take 456 MiB with 8,256 buffers, against 491 estimated. A large rule set's ACL tries come on top.)
inline uint64_t hugepage_bytes_needed(size_t ports, uint16_t queues, uint16_t ring_size, uint32_t mbufs, uint32_t flows) {
  constexpr uint64_t kMbufBytes = 128 + 2176 + 128;
  constexpr uint64_t kEalBytes = 16ULL << 20;
  const uint64_t buffers = std::max(mbufs, mbufs_needed(ports, queues, ring_size));
  return buffers * kMbufBytes + static_cast<uint64_t>(flows) * kFlowBytes + kEalBytes;
}

}  // namespace kmodkit::firewall
