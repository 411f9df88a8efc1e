#pragma once
// `firewall preflight`: what the pod got and what the node is, checked against what the firewall
// will ask for, before it starts. A DPDK pod on a badly tuned node (shared CPUs, a VF on the other
// NUMA node, hugepages elsewhere, no IOMMU) runs at a fraction of its speed with no error
// anywhere; each check here says pass, warn or fail with one line of evidence and one of fix.
// Needs no DPDK: everything is read from sysfs and procfs under a root directory, which tests
// point at fixture trees.

#include <cstdint>
#include <string>
#include <vector>

#include "kmodkit/result.hpp"
#include "sizing.hpp"

namespace kmodkit::firewall {

// What the firewall will ask of the node: its own options and the pod's resources.
struct Demand {
  std::vector<std::string> ports;  // PCI addresses of its ports
  std::string driver;              // the driver its ports need: vfio-pci, igb_uio ("": any)
  int cpu_request = 0;             // the container's CPUs (requests = limits), 0 when not given
  uint32_t flows = 1 << 20;
  uint32_t mbufs = 0;
  uint16_t ring_size = 1024;
  std::string huge_dir;            // the hugepage mount ("": the node's default page size)
};

enum class Outcome { pass, warn, fail };
const char* outcome_name(Outcome v);

// One check's outcome: `fix` is empty on a pass.
struct Check {
  std::string name;  // cpus, numa, hugepages, device ADDRESS, iommu, module-signatures
  Outcome outcome = Outcome::pass;
  std::string evidence;
  std::string fix;
};

// Runs every check. `root` holds the node as the container sees it: root/proc (self/status for
// the cpuset, cmdline, mounts, meminfo), root/sys (devices/system/cpu and node, bus/pci/devices,
// kernel/iommu_groups, class/iommu, kernel/mm/hugepages, fs/cgroup, module, kernel/security)
// and root/dev (the device files the container was given). What cannot be read is a warning
// saying so, never an error.
std::vector<Check> run_preflight(const std::string& root, const Demand& demand);

// The report: one line per check, verdict, name and evidence, the fix on the next line; then a
// summary line ("preflight: 1 fail, 2 warn, 5 pass").
std::string format_report(const std::vector<Check>& checks);
// The same as one JSON object: {"verdict": worst, "checks": [{"check", "verdict", "evidence", "fix"}]}.
std::string format_report_json(const std::vector<Check>& checks);

// The worst verdict of all checks (pass when there are none).
Outcome worst(const std::vector<Check>& checks);

// `firewall preflight [options]` (argv[0] is "preflight"): prints the report (JSON when the log
// format is) and returns the exit code: 0, or 78 when a check failed and --on-fail is stop.
int preflight_main(int argc, char** argv);

}  // namespace kmodkit::firewall
