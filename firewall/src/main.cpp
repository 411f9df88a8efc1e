// firewall: the pod's main container. Options, signals and EAL start-up; the data plane is in
// dataplane.cpp.
#include <rte_eal.h>
#include <rte_errno.h>

#include <atomic>
#include <csignal>
#include <cstdio>

#include "dataplane.hpp"
#include "eal_args.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"

namespace {

kmodkit::firewall::Signals g_signals;

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

}  // namespace

namespace kmodkit::firewall {
namespace {

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

}  // namespace

int main(int argc, char** argv) {
  std::string rules_file;
  EalInput eal;
  DataplaneConfig dp;
  bool print_eal_args = false;
  cli::Program program{
      "firewall",
      "A stateful L3/L4 firewall between port pairs, in poll mode on DPDK.",
      "Examples:\n"
      "  firewall --rules /etc/fw/fw.rules                                   # in the pod: PCIDEVICE_*, cpuset\n"
      "  firewall --rules fw.rules --vdev 'net_pcap0,rx_pcap=a.pcap,tx_pcap=a-out.pcap' \\\n"
      "           --vdev 'net_pcap1,rx_pcap=b.pcap,tx_pcap=b-out.pcap' --no-huge-mb 512 --duration 2\n"
      "Ports pair up in order: 0<->1, 2<->3, ... Counters print on SIGUSR1 and at exit; SIGHUP reloads the\n"
      "rules (open flows stay open; a bad file keeps the rules in force); SIGTERM or SIGINT stops, at any\n"
      "moment of start-up too, cleaning up as it goes (exit 0).\n"
      "Exit codes: 0 done or stopped, 64 usage, 65 invalid rules file, 66 rules file missing, 69 a port does\n"
      "not start, 78 ports, lcores or memory missing.",
      {
          {"rules", cli::Kind::value, "/etc/kmodkit/firewall.rules", "FILE", "the rules file (see firewall/README.md)",
           cli::store(rules_file)},
          {"port", cli::Kind::list, "", "PCI", "PCI addresses of the ports (default: the PCIDEVICE_* variables)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             eal.pci = v;
             return {};
           }},
          {"vdev", cli::Kind::list, "", "SPEC", "a virtual device instead (net_pcap, net_ring, net_tap, net_null, ...); "
           "repeatable; the environment variable separates them with ';'",
           [&](const std::vector<std::string>& v) -> Result<void> {
             eal.vdevs = v;
             return {};
           },
           ';'},
          {"lcores", cli::Kind::value, "", "CPUS", "CPUs to run on, e.g. 2-3 (default: the container's cpuset)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (!v.empty() && !v.front().empty()) eal.cpus = KK_TRY(parse_cpu_list(v.front()));
             return {};
           }},
          {"lcore-map", cli::Kind::value, "", "MAP",
           "EAL's --lcores map instead of --lcores, e.g. '(0-2)@(0-1)': more workers than CPUs (tests)",
           cli::store(eal.lcore_map)},
          {"flows", cli::Kind::value, "1048576", "N", "flow table size over all workers; a full table drops new flows",
           [&](const std::vector<std::string>& v) -> Result<void> {
             dp.flows = static_cast<uint32_t>(KK_TRY(cli::parse_integer("flows", v.front(), 64, 1LL << 28)));
             return {};
           }},
          {"mbufs", cli::Kind::value, "0", "N", "packet buffers in the pool (0: what the rings need; more for "
           "devices that hold packets, such as net_pcap's infinite_rx)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             dp.mbufs = static_cast<uint32_t>(KK_TRY(cli::parse_integer("mbufs", v.front(), 0, 1LL << 26)));
             return {};
           }},
          {"timeout", cli::Kind::list, "", "STATE=SECONDS",
           "an idle timeout: tcp-syn (30), tcp-established (3600), tcp-fin (120), tcp-closed (10), udp-new (30), "
           "udp-established (120), icmp (30); repeatable, or comma-separated",
           [&](const std::vector<std::string>& v) -> Result<void> { return set_timeouts(v, dp.timeouts); }},
          {"huge-dir", cli::Kind::value, "", "DIR", "the hugepage mount (default: EAL's search)", cli::store(eal.huge_dir)},
          {"no-huge-mb", cli::Kind::value, "0", "MB", "run without hugepages on this much memory (tests, demos)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             eal.no_huge_mb = static_cast<int>(KK_TRY(cli::parse_integer("no-huge-mb", v.front(), 0, 1 << 20)));
             return {};
           }},
          {"file-prefix", cli::Kind::value, "", "NAME", "EAL's --file-prefix (default: kmodkit-fw-<pid>)", cli::store(eal.file_prefix)},
          {"secondary-processes", cli::Kind::flag, "", "",
           "let DPDK's secondary processes (dpdk-proc-info, dpdk-dumpcap) attach: keeps the hugepage files and EAL's runtime "
           "directory, which a process killed with SIGKILL then leaves behind until a run with the same --file-prefix "
           "(default: hugepage files are unlinked once mapped, the runtime directory is removed on exit)",
           cli::store_flag(eal.secondary_processes)},
          {"duration", cli::Kind::value, "0", "SECONDS", "stop after this long (0: until SIGTERM)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             dp.duration_s = KK_TRY(cli::parse_seconds("duration", v.front()));
             return {};
           }},
          {"pass-non-ip", cli::Kind::flag, "", "", "forward EtherTypes other than IPv4, IPv6 and ARP (default: drop)",
           cli::store_flag(dp.pass_non_ip)},
          {"print-eal-args", cli::Kind::flag, "", "", "print the EAL arguments built from the pod's resources and exit",
           cli::store_flag(print_eal_args)},
      }};
  return cli::run_main(program, argc, argv, [&]() -> Result<void> {
    const auto stopped = [](const char* stage) -> Result<void> {
      log::get("firewall")->info("stop requested {}: stopped before forwarding", stage);
      return {};
    };
    auto text = KK_TRY_CTX(files::read_file(rules_file, 64 << 20), "rules file");
    auto rules = KK_TRY(parse_rules(text, rules_file));
    auto args = KK_TRY(eal_arguments(eal));
    if (print_eal_args) {
      std::string line;
      for (const auto& a : args) line += (line.empty() ? "" : " ") + a;
      std::printf("%s\n", line.c_str());
      return {};
    }
    log::get("firewall")->info("{}: {} rules, policy {}", rules_file, rules.rules.size(),
                               rules.policy == Action::allow ? "allow" : "deny");
    if (const auto warning = no_rules_warning(rules, rules_file); !warning.empty()) log::get("firewall")->warn("{}", warning);
    if (eal.no_huge_mb == 0) KK_TRY(check_free_hugepages());
    if (g_signals.stop.load()) return stopped("while the rules were read");
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    // EAL leaves its runtime directory (config, telemetry and multi-process sockets) behind;
    // with no secondary process to use it, it goes with the process it served.
    const auto remove_runtime_dir = [&] {
      if (eal.secondary_processes) return;
      const std::string dir = rte_eal_get_runtime_dir();
      if (dir.empty()) return;
      if (auto removed = files::remove_tree(dir); !removed) {
        log::get("firewall")->warn("{}", removed.error().message);
      }
    };
    if (rte_eal_init(static_cast<int>(cargs.size()), cargs.data()) < 0) {
      const int err = rte_errno;
      remove_runtime_dir();
      return fail(ExitCode::config, std::string("EAL did not start (") + rte_strerror(err) +
                                        "): check the ports, lcores and hugepages it was given");
    }
    dp.rules_file = rules_file;
    auto result = g_signals.stop.load() ? stopped("while EAL started") : run_dataplane(std::move(rules), dp, g_signals);
    rte_eal_cleanup();
    remove_runtime_dir();
    return result;
  });
}

}  // namespace kmodkit::firewall

int main(int argc, char** argv) {
  take_signals();
  return kmodkit::firewall::main(argc, argv);
}
