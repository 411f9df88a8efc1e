#pragma once
// The data plane's counters: what each worker counts, and the two ways the control thread reads
// them out, the text printed on SIGUSR1 and at exit and the snapshot /metrics formats.

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "flow.hpp"
#include "metrics.hpp"
#include "packet.hpp"
#include "rules.hpp"

namespace kmodkit::firewall {

// Why a packet was dropped; one counter each (plus one per Malformed reason).
// not_syn: a TCP packet of no flow that is not a SYN; unsolicited_reply: an ICMP reply of no flow.
enum class Drop : uint8_t { rule, policy, invalid_state, not_syn, unsolicited_reply, table_full, fragment, non_ip, tx_full, count_ };
const char* drop_name(Drop d);

// A counter one worker writes and another thread reads for printing: relaxed atomic loads and
// stores (plain moves on x86), no locked read-modify-write on the packet path.
class Count {
 public:
  Count() = default;
  Count(Count&& o) noexcept : v_(o.v_.load(std::memory_order_relaxed)) {}
  Count& operator++() { return *this += 1; }
  Count& operator+=(uint64_t n) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    return *this;
  }
  operator uint64_t() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

struct alignas(64) Counters {
  // passed_untracked: allowed by the rules without a flow (later fragments, ICMP that opens none)
  Count rx, tx, passed_state, passed_related, passed_untracked, arp_nd;
  Count busy_polls, idle_polls;  // loops over the ports that received something, and that did not
  // The flow table's, by flow_proto: flows taken in, let go after their timeout, evicted to make
  // room (a full table, flow_table.hpp), and refused (a full table with nothing to evict).
  Count flows_created[kFlowProtos], flows_expired[kFlowProtos], flows_evicted[kFlowProtos], flows_refused[kFlowProtos];
  Count drops[static_cast<int>(Drop::count_)];
  Count malformed[static_cast<int>(Malformed::count_)];
};
// Sums over the protocols.
uint64_t total(const Count (&by_proto)[kFlowProtos]);

// The rules file's reloads, as Prometheus counts its own configuration's.
struct ReloadStats {
  uint64_t ok = 0, failed = 0;
  double last_success_unix = 0;  // the rules in force: the start's load, or the last good reload
  bool last_ok = true;
};

// What the counters are read from: the control thread's view of a run.
struct CounterView {
  const RuleSet& rules;
  const std::vector<std::vector<Count>>& hits;  // [worker][rule]: each rule's matches
  const std::vector<uint64_t>& carried;         // [rule]: its matches under the rule sets reloads replaced
  const std::vector<Counters>& per_lcore;       // [worker]
  const std::vector<std::pair<uint16_t, std::string>>& ports;  // port id, device name
  const std::vector<unsigned>& lcores;          // [worker]: its lcore id
  uint32_t flow_capacity = 0;                   // flows each worker's table holds
  ReloadStats reloads;
  uint32_t mbufs = 0, mbufs_in_use = 0;         // the packet buffer pool: its size, and out of it (caches count as free)
};

// The counters as text (per port, per worker, per drop reason, per rule): what SIGUSR1 and the
// exit print.
std::string format_counters(const CounterView& view);

// The same as a snapshot for format_metrics: the ports' stats and xstats, then per worker lcore,
// per flow protocol, per drop reason and per rule, and the reloads.
MetricsSnapshot snapshot_metrics(const CounterView& view);

}  // namespace kmodkit::firewall
