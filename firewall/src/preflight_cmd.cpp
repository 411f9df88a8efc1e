// `firewall preflight`: options, the report on stdout, and the exit code (preflight.hpp).
#include <cstdio>

#include "eal_args.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "preflight.hpp"

namespace kmodkit::firewall {
namespace {

enum class OnFail { stop, carry_on };

struct PreflightOptions {
  Demand demand;
  std::vector<std::string> ports;
  std::string network_status;
  std::string root = "/";
  OnFail on_fail = OnFail::stop;
};

// The ports as the firewall will find them: --port, else the networks of --network-status,
// else the PCIDEVICE_* variables.
Result<std::vector<std::string>> ports_of(const PreflightOptions& opt) {
  if (!opt.ports.empty()) return opt.ports;
  const auto plugin = KK_TRY(device_plugin_ports(process_environment()));
  std::vector<std::string> out;
  if (!opt.network_status.empty()) {
    const auto text = KK_TRY_CTX(files::read_file(opt.network_status, 256 << 10), "network-status file");
    for (const auto& p : KK_TRY(network_status_ports(text, opt.network_status, plugin))) out.push_back(p.address);
  } else {
    for (const auto& p : plugin) out.push_back(p.address);
  }
  return out;
}

Result<void> preflight(PreflightOptions& opt) {
  opt.demand.ports = KK_TRY(ports_of(opt));
  auto checks = run_preflight(opt.root, opt.demand);
  if (opt.demand.ports.empty()) {
    checks.insert(checks.begin() + 3, Check{"devices", Outcome::warn, "no ports: no --port, --network-status or PCIDEVICE_* variable",
                                            "give preflight the firewall's KMODKIT_NETWORK_STATUS and the SR-IOV resources"});
  }
  const std::string report = log::json_lines() ? format_report_json(checks) : format_report(checks);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);
  std::string failed;
  for (const auto& c : checks) {
    if (c.outcome == Outcome::fail) failed += (failed.empty() ? "" : ", ") + c.name;
  }
  if (failed.empty()) return {};
  if (opt.on_fail == OnFail::carry_on) {
    log::get("firewall")->warn("the node fails the checks {}; going on (--on-fail continue)", failed);
    return {};
  }
  return fail(ExitCode::config, "the node fails the checks " + failed + " (see the report; --on-fail continue lets the pod start anyway)");
}

}  // namespace

int preflight_main(int argc, char** argv) {
  PreflightOptions opt;
  const cli::Program program{
      "firewall preflight",
      "Checks what the pod got and what the node is against what the firewall will ask for: CPUs, NUMA, "
      "hugepages, devices, IOMMU, module signatures; each pass, warn or fail with its evidence and a fix.",
      "Examples:\n"
      "  firewall preflight                                   # in the pod's last init container\n"
      "  firewall preflight --port 0000:af:06.0 --port 0000:af:06.1 --driver vfio-pci --cpus 4\n"
      "Exit codes: 0 every check passed or warned (or --on-fail continue), 64 usage, 65 invalid network-status file,\n"
      "66 network-status file missing, 78 a check failed (the report says which and how to fix it).",
      {
          {"port", cli::Kind::list, "", "PCI",
           "PCI addresses of the firewall's ports (default: the networks of --network-status, else the PCIDEVICE_* variables)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             opt.ports = v;
             return {};
           }},
          {"network-status", cli::Kind::value, "", "FILE", "Multus's network-status annotation, as the firewall reads it",
           cli::store(opt.network_status)},
          {"driver", cli::Kind::value, "", "NAME", "the driver the ports must be bound to: vfio-pci or igb_uio (default: any)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             const std::string d = v.empty() ? "" : v.front();
             if (!d.empty() && d != "vfio-pci" && d != "igb_uio" && d != "uio_pci_generic") {
               return fail(ExitCode::usage, "--driver " + d + ": not vfio-pci, igb_uio or uio_pci_generic");
             }
             opt.demand.driver = d;
             return {};
           }},
          {"cpus", cli::Kind::value, "0", "N", "the CPUs the firewall's container requests (requests = limits; 0: not checked)",
           cli::store_integer("cpus", opt.demand.cpu_request, 0, 4096)},
          {"flows", cli::Kind::value, "1048576", "N", "the firewall's --flows", cli::store_integer("flows", opt.demand.flows, 64, 1LL << 28)},
          {"mbufs", cli::Kind::value, "0", "N", "the firewall's --mbufs", cli::store_integer("mbufs", opt.demand.mbufs, 0, 1LL << 26)},
          {"huge-dir", cli::Kind::value, "", "DIR", "the firewall's hugepage mount (default: the node's default page size)",
           cli::store(opt.demand.huge_dir)},
          {"on-fail", cli::Kind::value, "stop", "stop|continue", "what a failed check does: stop the pod (exit 78) or only report",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (v.front() == "stop") opt.on_fail = OnFail::stop;
             else if (v.front() == "continue") opt.on_fail = OnFail::carry_on;
             else return fail(ExitCode::usage, "--on-fail " + v.front() + ": not stop or continue");
             return {};
           }},
          {"root", cli::Kind::value, "/", "DIR", "read proc/, sys/ and dev/ under DIR (tests)", cli::store(opt.root)},
      }};
  return cli::run_main(program, argc, argv, [&] { return preflight(opt); });
}

}  // namespace kmodkit::firewall
