#pragma once
// The poll-mode data plane: ports in pairs (port 2i <-> port 2i+1, bump in the wire), worker
// lcores each owning one RX/TX queue of every port and a flow table of its own; established
// flows are looked up first and only a flow's first packet meets the rules.

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "acl.hpp"
#include "flow.hpp"
#include "kmodkit/result.hpp"
#include "packet.hpp"
#include "rules.hpp"

namespace kmodkit::firewall {

// Why a packet was dropped; one counter each (plus one per Malformed reason).
enum class Drop : uint8_t { rule, policy, invalid_state, not_syn, table_full, fragment, non_ip, tx_full, count_ };
const char* drop_name(Drop d);

struct alignas(64) Counters {
  uint64_t rx = 0, tx = 0, passed_state = 0, passed_related = 0, new_flows = 0, expired = 0, arp_nd = 0;
  uint64_t drops[static_cast<int>(Drop::count_)] = {};
  uint64_t malformed[static_cast<int>(Malformed::count_)] = {};
  std::vector<uint64_t> rule_hits;  // per rule, sized before the workers start
};

struct DataplaneConfig {
  uint32_t flows = 1 << 20;  // over all workers
  Timeouts timeouts;
  bool pass_arp_nd = true;   // ARP and IPv6 neighbour discovery pass by policy
  bool pass_non_ip = false;  // other EtherTypes
  uint16_t ring_size = 1024;
  double duration_s = 0;     // > 0: stop after that long (tests, benchmarks)
};

// Runs the data plane until `stop` is set (SIGTERM) or the duration ends; on `print` (SIGUSR1)
// the counters are printed. EAL must be initialised. Errors: 78 for a port count that is not
// even or ports that cannot be configured, 69 when a port cannot start.
Result<void> run_dataplane(const RuleSet& rules, const DataplaneConfig& config, std::atomic<bool>& stop,
                           std::atomic<bool>& print);

// The counters of all workers as text (per port, per lcore, per rule, per drop reason).
std::string format_counters(const RuleSet& rules, const std::vector<Counters>& per_lcore,
                            const std::vector<std::pair<uint16_t, std::string>>& ports);

}  // namespace kmodkit::firewall
