#pragma once
// The poll-mode data plane: ports in pairs (port 2i <-> port 2i+1, bump in the wire), worker
// lcores each owning one RX/TX queue of every port and a flow table of its own; established
// flows are looked up first and only a flow's first packet meets the rules.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "acl.hpp"
#include "counters.hpp"
#include "file_watch.hpp"
#include "flow.hpp"
#include "kmodkit/result.hpp"
#include "metrics.hpp"
#include "packet.hpp"
#include "rules.hpp"

namespace kmodkit::firewall {

struct DataplaneConfig {
  std::string rules_file;    // read again on a reload
  uint32_t flows = 1 << 20;  // over all workers
  Timeouts timeouts;
  bool pass_arp_nd = true;   // ARP and IPv6 neighbour discovery pass by policy
  bool pass_non_ip = false;  // other EtherTypes
  uint16_t ring_size = 1024;
  uint32_t mbufs = 0;        // packet buffers in the pool; 0: what the rings need
  double duration_s = 0;     // > 0: stop after that long (tests, benchmarks)
};

// What the control thread is asked to do, by signals.
struct Signals {
  std::atomic<bool> stop{false};    // SIGTERM, SIGINT
  std::atomic<bool> print{false};   // SIGUSR1: print the counters
  std::atomic<bool> reload{false};  // SIGHUP: read the rules file again
};

// The data plane of one run, built stage by stage by the start-up (run.cpp) so that a stop
// request can be looked at between stages. Whatever a stage built goes with the object, in
// reverse order: the flow tables, the ports (stopped and closed), the RCU state, the rules.
// EAL must be initialised before and cleaned up after.
class Dataplane {
 public:
  Dataplane(const DataplaneConfig& config, Signals& signals);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // The ports EAL found and the lcores the workers run on (the main lcore when it is alone).
  // Errors: 78 when the ports do not come in pairs.
  Result<void> find_ports_and_lcores();
  // Compiles the rules for every worker and puts them in force, with the RCU state a reload
  // needs. Errors: those of the compilation, 78 when RCU finds no memory.
  Result<void> load_rules(RuleSet rules);
  // Makes the packet buffer pool and configures and starts each port in turn, returning early
  // (without error) on a stop request. Errors: 78 for memory or a port that cannot be
  // configured, 69 when a port does not start.
  Result<void> open_ports();
  // Makes each worker's flow table. Errors: 78 for memory.
  Result<void> make_flow_tables();
  // Launches the workers and runs the control loop until `stop` is set or the duration ends: on
  // `print` the counters are printed; on `reload` the rules file is read and compiled again and
  // put in force without stopping the workers (RCU): flows already open stay open, new flows meet
  // the new rules; a file that does not parse or compile leaves the rules in force and is logged.
  // Returns once every worker has returned.
  void forward_until_stopped();
  // Makes the control loop follow the rules file: when `watch` sees it change, it is reloaded as
  // on SIGHUP, unless its text is `text` (the one in force) still: the kubelet swaps a ConfigMap
  // volume's files when any key of the ConfigMap changes.
  void follow_rules_file(FileWatch watch, std::string text);
  // Prints the counters to stdout.
  void print_counters() const;
  // A fresh snapshot of the counters (counters.hpp), for /metrics and telemetry: asked of the
  // control loop, which answers within its next tick (50 ms). Thread-safe; nullopt when no
  // answer came within `timeout` (the data plane is not forwarding yet, or has stopped).
  std::optional<MetricsSnapshot> snapshot(std::chrono::milliseconds timeout);
  // Liveness and readiness, as the control loop last judged them (every 50 ms): "" when well,
  // else why not. Healthy: forwarding, and every worker lcore has polled within the last second
  // (and the control loop itself looked within it). Ready: healthy, every port's link up, and
  // the rules file as it is now in force (a reload that failed makes it unready until a good
  // file is reloaded). Thread-safe.
  std::string unhealthy_because() const;
  std::string unready_because() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace kmodkit::firewall
