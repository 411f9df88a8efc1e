#pragma once
// The firewall's own commands in DPDK telemetry (EAL's socket dpdk_telemetry.v2 in its runtime
// directory; `dpdk-telemetry.py -f PREFIX` connects), beside DPDK's /ethdev/... ones:
//   /kmodkit/flows[,LCORE]  the flow tables, by protocol: entries, created, expired, evicted,
//                           insert failures; over all workers, or one worker lcore's
//   /kmodkit/rules[,FIRST]  the rules in force with their hits, 100 from the FIRST (0), and the
//                           reloads; "next" gives the FIRST of the following page
//   /kmodkit/health         liveness and readiness as /healthz and /readyz judge them
// Each answer is a snapshot the control loop takes (Dataplane::snapshot), as for /metrics.

#include "dataplane.hpp"

namespace kmodkit::firewall {

// Registers the commands (once per process: EAL keeps them) and points them at `dataplane`
// while this object lives; after it, they answer an error. Needs an initialised EAL.
class Telemetry {
 public:
  explicit Telemetry(Dataplane& dataplane);
  ~Telemetry();
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;
};

}  // namespace kmodkit::firewall
