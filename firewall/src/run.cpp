// The firewall's process, top to bottom: signals, options, EAL, ports, rules, workers,
// forwarding until a stop request, orderly stop. The data plane itself is in dataplane.cpp.
#include "run.hpp"

#include <rte_eal.h>
#include <rte_errno.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string_view>
#include <utility>

#include "dataplane.hpp"
#include "eal_args.hpp"
#include "metrics_server.hpp"
#include "preflight.hpp"
#include "telemetry.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"

namespace kmodkit::firewall {
namespace {

Signals g_signals;

void on_signal(int sig) {
  if (sig == SIGUSR1) g_signals.print.store(true);
  else if (sig == SIGHUP) g_signals.reload.store(true);
  else g_signals.stop.store(true);
}

// Stop, print and reload requests are taken from the first instruction of main: a pod is
// deleted at any moment of its start, and the default action of each of these signals ends the
// process where it stands (EAL's runtime directory left behind). SA_RESTART: EAL's system calls
// go on after a handler ran; each start-up stage looks at the stop request when it is done.
void take_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) sigaction(sig, &sa, nullptr);
}

// Whether a stop was requested; if so, logs the stage it came after.
bool stop_requested_after(const char* stage) {
  if (!g_signals.stop.load()) return false;
  log::get("firewall")->info("stop requested while {}: stopped before forwarding", stage);
  return true;
}

struct Options {
  EalInput eal;
  std::string network_status;  // Multus's network-status annotation as a file; "" for none
  std::string metrics;         // HOST:PORT of the metrics endpoint; "" for none
  DataplaneConfig dataplane;
  bool print_eal_args = false;
};

// "udp-new=5" and the like into the timeouts; usage error naming the item.
Result<void> set_timeouts(const std::vector<std::string>& items, Timeouts& to) {
  const std::pair<const char*, uint32_t Timeouts::*> names[] = {
      {"tcp-syn", &Timeouts::syn},         {"tcp-established", &Timeouts::established_tcp},
      {"tcp-fin", &Timeouts::fin},         {"tcp-closed", &Timeouts::closed},
      {"udp-new", &Timeouts::udp_new},     {"udp-established", &Timeouts::udp_established},
      {"icmp", &Timeouts::icmp}};
  for (const auto& item : items) {
    const auto eq = item.find('=');
    const std::string name = item.substr(0, eq);
    uint32_t Timeouts::*field = nullptr;
    for (const auto& [n, f] : names) {
      if (name == n) field = f;
    }
    if (eq == std::string::npos || field == nullptr) {
      return fail(ExitCode::usage, "--timeout '" + item + "': expected STATE=SECONDS with STATE one of tcp-syn, "
                                   "tcp-established, tcp-fin, tcp-closed, udp-new, udp-established, icmp");
    }
    to.*field = static_cast<uint32_t>(KK_TRY(cli::parse_integer("timeout " + name, item.substr(eq + 1), 1, 7 * 24 * 3600)));
  }
  return {};
}

// The options, each declared once: flag, KMODKIT_* variable, default, help; stored in `opt`.
cli::Program options_table(Options& opt) {
  return cli::Program{
      "firewall",
      "A stateful L3/L4 firewall between port pairs, in poll mode on DPDK.",
      "Examples:\n"
      "  firewall --rules /etc/fw/fw.rules                                   # in the pod: PCIDEVICE_*, cpuset\n"
      "  firewall --rules fw.rules --vdev 'net_pcap0,rx_pcap=a.pcap,tx_pcap=a-out.pcap' \\\n"
      "           --vdev 'net_pcap1,rx_pcap=b.pcap,tx_pcap=b-out.pcap' --no-huge-mb 512 --duration 2\n"
      "Ports pair up in order: 0<->1, 2<->3, ... Counters print on SIGUSR1 and at exit; SIGHUP, or the rules\n"
      "file changing (a ConfigMap update too), reloads the rules (open flows stay open; a bad file keeps the\n"
      "rules in force); SIGTERM or SIGINT stops, at any moment of start-up too, cleaning up as it goes\n"
      "(exit 0).\n"
      "Before it starts, `firewall preflight` checks the node and the pod (firewall preflight --help).\n"
      "Exit codes: 0 done or stopped, 64 usage, 65 invalid rules or network-status file, 66 rules or\n"
      "network-status file missing or empty, 69 a port does not start, 78 ports, lcores or memory missing.",
      {
          {"rules", cli::Kind::value, "/etc/kmodkit/firewall.rules", "FILE", "the rules file (see firewall/README.md)",
           cli::store(opt.dataplane.rules_file)},
          {"metrics", cli::Kind::value, "", "HOST:PORT",
           "serve the counters in the Prometheus text format at http://HOST:PORT/metrics (default: off)",
           cli::store(opt.metrics)},
          {"port", cli::Kind::list, "", "PCI",
           "PCI addresses of the ports (default: the networks of --network-status, else the PCIDEVICE_* variables)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             opt.eal.pci = v;
             return {};
           }},
          {"network-status", cli::Kind::value, "", "FILE",
           "Multus's k8s.v1.cni.cncf.io/network-status annotation (the downward API's file): the ports are its "
           "networks' PCI devices in the order of the pod's networks, port A of a pair the first; each must be one of "
           "the PCIDEVICE_* addresses when those are set; not consulted with --port or --vdev",
           cli::store(opt.network_status)},
          {"vdev", cli::Kind::list, "", "SPEC", "a virtual device instead (net_pcap, net_ring, net_tap, net_null, ...); "
           "repeatable; the environment variable separates them with ';'",
           [&](const std::vector<std::string>& v) -> Result<void> {
             opt.eal.vdevs = v;
             return {};
           },
           ';'},
          {"lcores", cli::Kind::value, "", "CPUS", "CPUs to run on, e.g. 2-3 (default: the container's cpuset)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (!v.empty() && !v.front().empty()) opt.eal.cpus = KK_TRY(parse_cpu_list(v.front()));
             return {};
           }},
          {"lcore-map", cli::Kind::value, "", "MAP",
           "EAL's --lcores map instead of --lcores, e.g. '(0-2)@(0-1)': more workers than CPUs (tests)",
           cli::store(opt.eal.lcore_map)},
          {"flows", cli::Kind::value, "1048576", "N", "flow table size over all workers; a full table evicts an unanswered flow, else drops the new one",
           cli::store_integer("flows", opt.dataplane.flows, 64, 1LL << 28)},
          {"mbufs", cli::Kind::value, "0", "N", "packet buffers in the pool (0: what the rings need; more for "
           "devices that hold packets, such as net_pcap's infinite_rx)",
           cli::store_integer("mbufs", opt.dataplane.mbufs, 0, 1LL << 26)},
          {"timeout", cli::Kind::list, "", "STATE=SECONDS",
           "an idle timeout: tcp-syn (30), tcp-established (3600), tcp-fin (120), tcp-closed (10), udp-new (30), "
           "udp-established (120), icmp (30); repeatable, or comma-separated",
           [&](const std::vector<std::string>& v) -> Result<void> { return set_timeouts(v, opt.dataplane.timeouts); }},
          {"huge-dir", cli::Kind::value, "", "DIR", "the hugepage mount (default: EAL's search)", cli::store(opt.eal.huge_dir)},
          {"no-huge-mb", cli::Kind::value, "0", "MB", "run without hugepages on this much memory (tests, demos)",
           cli::store_integer("no-huge-mb", opt.eal.no_huge_mb, 0, 1 << 20)},
          {"file-prefix", cli::Kind::value, "", "NAME", "EAL's --file-prefix (default: kmodkit-fw-<pid>)", cli::store(opt.eal.file_prefix)},
          {"secondary-processes", cli::Kind::flag, "", "",
           "let DPDK's secondary processes (dpdk-proc-info, dpdk-dumpcap) attach: keeps the hugepage files and EAL's runtime "
           "directory, which a process killed with SIGKILL then leaves behind until a run with the same --file-prefix "
           "(default: hugepage files are unlinked once mapped, the runtime directory is removed on exit)",
           cli::store_flag(opt.eal.secondary_processes)},
          {"duration", cli::Kind::value, "0", "SECONDS", "stop after this long (0: until SIGTERM)",
           cli::store_seconds("duration", opt.dataplane.duration_s)},
          {"pass-non-ip", cli::Kind::flag, "", "", "forward EtherTypes other than IPv4, IPv6 and ARP (default: drop)",
           cli::store_flag(opt.dataplane.pass_non_ip)},
          {"print-eal-args", cli::Kind::flag, "", "", "print the EAL arguments built from the pod's resources and exit",
           cli::store_flag(opt.print_eal_args)},
      }};
}

// The rules file, read and parsed, and its text. Errors: 66 missing or unreadable, 65 invalid.
Result<std::pair<RuleSet, std::string>> read_rules(const std::string& file) {
  auto text = KK_TRY_CTX(files::read_file(file, 64 << 20), "rules file");
  auto rules = KK_TRY(parse_rules(text, file));
  return std::pair{std::move(rules), std::move(text)};
}

// A watch on the rules file's directory, set before the file is read so that no change after
// the read is missed; nullopt (with a warning: SIGHUP still reloads) when inotify cannot.
std::optional<FileWatch> watch_rules(const std::string& file) {
  auto watch = FileWatch::open(file);
  if (!watch) {
    // A missing directory: the read that follows says so.
    if (watch.error().code != ExitCode::no_input) log::get("firewall")->warn("{}; the rules reload on SIGHUP only", watch.error().message);
    return std::nullopt;
  }
  return std::move(*watch);
}

// The PCI addresses of the pod's networks, in their order, from the network-status file `file`;
// logs which network each port is. Errors: 66 when the file cannot be read, and those of
// device_plugin_ports and network_status_ports.
Result<std::vector<std::string>> ports_of_networks(const std::string& file) {
  // The API server takes at most 256 KiB of annotations per object.
  const auto text = KK_TRY_CTX(files::read_file(file, 256 << 10), "network-status file");
  const auto plugin = KK_TRY(device_plugin_ports(process_environment()));
  const auto ports = KK_TRY(network_status_ports(text, file, plugin));
  std::vector<std::string> addresses;
  for (size_t i = 0; i < ports.size(); ++i) {
    const auto& p = ports[i];
    log::get("firewall")->info("port {} (pair {}, side {}) is {}: network {}{}", i, i / 2, i % 2 == 0 ? 'a' : 'b', p.address,
                               p.network.empty() ? "without a name" : p.network,
                               p.interface.empty() ? "" : ", interface " + p.interface);
    addresses.push_back(p.address);
  }
  return addresses;
}

// The EAL arguments on one line, for --print-eal-args.
Result<void> print_eal_arguments(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& a : args) line += (line.empty() ? "" : " ") + a;
  std::printf("%s\n", line.c_str());
  return {};
}

// The rules in force at the start, and a warning when there are none.
void log_rules(const RuleSet& rules, const std::string& file) {
  log::get("firewall")->info("{}: {} rules, policy {}", file, rules.rules.size(), rules.policy == Action::allow ? "allow" : "deny");
  if (const auto warning = no_rules_warning(rules, file); !warning.empty()) log::get("firewall")->warn("{}", warning);
}

// EAL for one run: started by start(); when it goes, rte_eal_cleanup() and the removal of EAL's
// runtime directory (config, telemetry and multi-process sockets), which EAL leaves behind.
class Eal {
 public:
  Eal(std::vector<std::string> args, bool secondary_processes)
      : args_(std::move(args)), secondary_processes_(secondary_processes) {}
  Eal(const Eal&) = delete;
  Eal& operator=(const Eal&) = delete;
  ~Eal() {
    if (!started_) return;
    rte_eal_cleanup();
    remove_runtime_dir();
  }

  // rte_eal_init with the arguments. Errors: 78 when EAL does not start (its runtime directory
  // removed).
  Result<void> start() {
    std::vector<char*> cargs;
    for (auto& a : args_) cargs.push_back(a.data());
    if (rte_eal_init(static_cast<int>(cargs.size()), cargs.data()) < 0) {
      const int err = rte_errno;
      remove_runtime_dir();
      return fail(ExitCode::config, std::string("EAL did not start (") + rte_strerror(err) +
                                        "): check the ports, lcores and hugepages it was given");
    }
    started_ = true;
    return {};
  }

 private:
  // With no secondary process to use it, the runtime directory goes with the process it served.
  void remove_runtime_dir() const {
    if (secondary_processes_) return;
    const std::string dir = rte_eal_get_runtime_dir();
    if (dir.empty()) return;
    if (auto removed = files::remove_tree(dir); !removed) log::get("firewall")->warn("{}", removed.error().message);
  }

  std::vector<std::string> args_;  // EAL may keep pointers into them
  bool secondary_processes_;
  bool started_ = false;
};

// From the options to an orderly stop. Start-up takes seconds (a large ACL, many ports): a stop
// request is looked at after each stage, and what the stages built is undone in reverse order
// as `dataplane` and `eal` go (ports stopped and closed, then rte_eal_cleanup()).
Result<void> start_and_forward(const Options& opt) {
  const std::string& rules_file = opt.dataplane.rules_file;
  // Read and parse the rules first: a bad file fails before EAL touches a device.
  std::optional<FileWatch> watch = watch_rules(rules_file);
  auto [rules, rules_text] = KK_TRY(read_rules(rules_file));
  // Build EAL's arguments from the options and the pod's resources (its networks' order,
  // PCIDEVICE_*, cpuset). The device plugin lists the VFs of one resource in no set order; the
  // network-status annotation says which network (outside, inside) each one is.
  EalInput eal_input = opt.eal;
  if (eal_input.pci.empty() && eal_input.vdevs.empty() && !opt.network_status.empty()) {
    eal_input.pci = KK_TRY(ports_of_networks(opt.network_status));
  }
  if (!opt.metrics.empty()) KK_TRY(MetricsServer::parse_address(opt.metrics));
  auto args = KK_TRY(eal_arguments(eal_input));
  if (opt.print_eal_args) return print_eal_arguments(args);
  log_rules(rules, rules_file);
  // Check for a free hugepage: EAL would stop on none with a bare errno.
  if (opt.eal.no_huge_mb == 0) KK_TRY(check_free_hugepages());
  if (stop_requested_after("the rules were read")) return {};
  // Initialise EAL; cleaned up when `eal` goes.
  Eal eal(std::move(args), opt.eal.secondary_processes);
  KK_TRY(eal.start());
  if (stop_requested_after("EAL started")) return {};
  // Find the ports (in pairs) and the lcores the workers run on.
  Dataplane dataplane(opt.dataplane, g_signals);
  KK_TRY(dataplane.find_ports_and_lcores());
  // Load the rules: compile them for every worker and put them in force.
  KK_TRY(dataplane.load_rules(std::move(rules)));
  if (stop_requested_after("the rules were compiled")) return {};
  // Open the ports: configure and start each; stopped and closed when `dataplane` goes.
  KK_TRY(dataplane.open_ports());
  if (stop_requested_after("the ports started")) return {};
  // Make a flow table per worker.
  KK_TRY(dataplane.make_flow_tables());
  if (stop_requested_after("the flow tables were made")) return {};
  // The project's commands in DPDK telemetry (telemetry.hpp), answered while `telemetry` lives.
  Telemetry telemetry(dataplane);
  // The metrics endpoint, from a control thread; it stops before the data plane goes.
  std::unique_ptr<MetricsServer> metrics;
  if (!opt.metrics.empty()) metrics = KK_TRY(MetricsServer::start(opt.metrics, dataplane));
  if (watch) dataplane.follow_rules_file(std::move(*watch), std::move(rules_text));
  // Start the workers and wait: reload on SIGHUP or a change of the file, counters on SIGUSR1,
  // until SIGTERM/SIGINT or --duration.
  dataplane.forward_until_stopped();
  metrics.reset();
  // Orderly stop: the workers have returned; print the counters, then ports and EAL close in turn.
  dataplane.print_counters();
  return {};
}

}  // namespace

int run(int argc, char** argv) {
  // The subcommand: checks of the node, run as the pod's last init container.
  if (argc > 1 && std::string_view(argv[1]) == "preflight") return preflight_main(argc - 1, argv + 1);
  // Take the signals before anything else (see take_signals).
  take_signals();
  // Parse the options, set up logging, run; an error becomes one sentence and an exit code.
  Options opt;
  return cli::run_main(options_table(opt), argc, argv, [&] { return start_and_forward(opt); });
}

}  // namespace kmodkit::firewall
