#include "preflight.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "eal_args.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::firewall {
namespace fs = std::filesystem;

const char* outcome_name(Outcome v) {
  switch (v) {
    case Outcome::pass: return "pass";
    case Outcome::warn: return "warn";
    default: return "fail";
  }
}

namespace {

// A file's content without its trailing newline; nullopt when it cannot be read.
std::optional<std::string> read(const fs::path& path) {
  auto text = files::read_file(path, 1 << 20);
  if (!text) return std::nullopt;
  std::string s = std::move(*text);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The last component of a symlink's target ("vfio-pci" of .../drivers/vfio-pci); "" when none.
std::string link_name(const fs::path& link) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(link, ec);
  return ec ? "" : target.filename().string();
}

std::vector<int> cpu_list(const std::optional<std::string>& text) {
  if (!text || text->empty()) return {};
  auto cpus = parse_cpu_list(*text);
  return cpus ? *cpus : std::vector<int>{};
}

// "2-5,8" for a set of CPUs (or node numbers).
std::string list_text(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(v[i]) + (j > i ? "-" + std::to_string(v[j]) : "");
    i = j + 1;
  }
  return out;
}

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// "2 MiB" / "1 GiB" for a page size in kB.
std::string page_name(uint64_t kb) { return kb >= (1 << 20) ? std::to_string(kb >> 20) + " GiB" : std::to_string(kb >> 10) + " MiB"; }

// The node as the container sees it, read once.
struct Node {
  fs::path root;
  std::vector<int> cpuset;                  // the container's (Cpus_allowed_list)
  std::vector<int> online;
  std::map<int, std::vector<int>> nodes;    // NUMA node -> its CPUs
  std::string cmdline;

  fs::path sys(const std::string& rel) const { return root / "sys" / rel; }
  fs::path proc(const std::string& rel) const { return root / "proc" / rel; }

  int node_of_cpu(int cpu) const {
    for (const auto& [n, cpus] : nodes) {
      if (std::find(cpus.begin(), cpus.end(), cpu) != cpus.end()) return n;
    }
    return -1;
  }
  // The value of a kernel command-line parameter ("" when absent, "1" for a bare word).
  std::string param(const std::string& name) const {
    for (const auto& word : text::split_items(cmdline, ' ')) {
      if (word == name) return "1";
      if (word.starts_with(name + "=")) return word.substr(name.size() + 1);
    }
    return "";
  }
};

Node read_node(const std::string& root) {
  Node n;
  n.root = root;
  if (auto status = read(n.proc("self/status"))) {
    for (const auto& line : text::split_items(*status, '\n')) {
      if (line.starts_with("Cpus_allowed_list:")) n.cpuset = cpu_list(std::string(text::trim(line.substr(18))));
    }
  }
  n.online = cpu_list(read(n.sys("devices/system/cpu/online")));
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(n.sys("devices/system/node"), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.starts_with("node") && std::all_of(name.begin() + 4, name.end(), ::isdigit)) {
      n.nodes[std::stoi(name.substr(4))] = cpu_list(read(e.path() / "cpulist"));
    }
  }
  n.cmdline = read(n.proc("cmdline")).value_or("");
  return n;
}

// The hugepage size the firewall will use (kB): its mount's pagesize= option, else the node's
// default; 0 when neither can be read. `problem` says what is wrong with the mount.
uint64_t page_size_kb(const Node& n, const std::string& huge_dir, std::string& problem) {
  if (!huge_dir.empty()) {
    bool found = false;
    uint64_t kb = 0;
    for (const auto& line : text::split_items(read(n.proc("mounts")).value_or(""), '\n')) {
      const auto f = text::split_items(line, ' ');
      if (f.size() < 4 || f[1] != huge_dir) continue;
      found = true;
      if (f[2] != "hugetlbfs") {
        problem = huge_dir + " is a " + f[2] + " mount, not hugetlbfs";
        continue;
      }
      problem.clear();
      kb = 0;
      for (const auto& opt : text::split_items(f[3], ',')) {
        if (!opt.starts_with("pagesize=")) continue;
        const std::string v = opt.substr(9);
        const uint64_t num = std::strtoull(v.c_str(), nullptr, 10);
        const char unit = v.empty() ? 'k' : v.back();
        kb = unit == 'G' ? num << 20 : unit == 'M' ? num << 10 : num;
      }
    }
    if (!found) problem = huge_dir + " is not a mount point (no hugetlbfs there)";
    if (kb != 0) return kb;
  }
  for (const auto& line : text::split_items(read(n.proc("meminfo")).value_or(""), '\n')) {
    if (line.starts_with("Hugepagesize:")) return std::strtoull(line.c_str() + 13, nullptr, 10);
  }
  return 0;
}

Check check_cpus(const Node& n, const Demand& d) {
  Check c{"cpus", Outcome::pass, "", ""};
  if (n.cpuset.empty()) return {"cpus", Outcome::warn, "the container's cpuset cannot be read (/proc/self/status)", "run preflight in the pod"};
  c.evidence = "cpuset " + list_text(n.cpuset) + " (" + std::to_string(n.cpuset.size()) + " CPUs) of the node's " + list_text(n.online);
  std::vector<std::string> problems, fixes;
  if (n.online.size() > 1 && n.cpuset.size() >= n.online.size()) {
    problems.push_back("not pinned: the container may run on every CPU of the node");
    fixes.push_back("give the pod Guaranteed QoS with whole CPUs (requests = limits) on a node whose kubelet runs cpuManagerPolicy: static");
  } else if (d.cpu_request > 0 && static_cast<int>(n.cpuset.size()) != d.cpu_request) {
    problems.push_back("the container asks for " + std::to_string(d.cpu_request) + " CPUs, its cpuset has " +
                       std::to_string(n.cpuset.size()) + " (the shared pool, not CPUs of its own)");
    fixes.push_back("whole CPUs with requests = limits and the kubelet's cpuManagerPolicy: static give exclusive CPUs");
  }
  std::vector<std::string> split;
  for (int cpu : n.cpuset) {
    for (int sib : cpu_list(read(n.sys("devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list")))) {
      if (std::find(n.cpuset.begin(), n.cpuset.end(), sib) == n.cpuset.end()) {
        split.push_back("CPU " + std::to_string(cpu) + "'s sibling " + std::to_string(sib));
      }
    }
  }
  if (!split.empty()) {
    problems.push_back("not whole cores: " + split.front() + (split.size() > 1 ? " and " + std::to_string(split.size() - 1) + " more" : "") +
                       " are outside the cpuset (another container shares those cores)");
    fixes.push_back("set the kubelet's cpuManagerPolicyOptions full-pcpus-only: \"true\" and request an even number of CPUs");
  }
  const auto isolated = cpu_list(read(n.sys("devices/system/cpu/isolated")));
  if (!isolated.empty()) {
    std::vector<int> outside;
    for (int cpu : n.cpuset) {
      if (std::find(isolated.begin(), isolated.end(), cpu) == isolated.end()) outside.push_back(cpu);
    }
    // One CPU may stay outside: the main lcore runs the control loop, not a poll loop.
    if (outside.size() > 1 || (outside.size() == 1 && n.cpuset.size() == 1)) {
      problems.push_back("CPUs " + list_text(outside) + " are not among the isolated CPUs " + list_text(isolated));
      fixes.push_back("give the pod CPUs of the isolated set: the kubelet's reservedSystemCPUs should be the CPUs isolcpus leaves out");
    } else {
      c.evidence += ", isolated (" + list_text(isolated) + ")";
    }
  }
  if (problems.empty()) {
    c.evidence += ", whole cores, exclusive";
    return c;
  }
  c.outcome = Outcome::warn;
  c.evidence = c.evidence + ": " + problems.front() + (problems.size() > 1 ? "; " + problems[1] : "");
  c.fix = fixes.front();
  return c;
}

Check check_numa(const Node& n, const Demand& d, uint64_t page_kb) {
  Check c{"numa", Outcome::pass, "", ""};
  if (n.nodes.size() <= 1) {
    c.evidence = n.nodes.empty() ? "the node shows no NUMA topology (one node)" : "the node has one NUMA node";
    return c;
  }
  std::set<int> cpu_nodes;
  for (int cpu : n.cpuset) {
    if (int node = n.node_of_cpu(cpu); node >= 0) cpu_nodes.insert(node);
  }
  std::vector<std::string> findings;
  std::set<int> all = cpu_nodes;
  for (const auto& port : d.ports) {
    const auto text = read(n.sys("bus/pci/devices/" + port + "/numa_node"));
    const int node = text ? std::atoi(text->c_str()) : -1;
    if (node < 0) continue;  // the firmware gives no locality
    all.insert(node);
    if (!cpu_nodes.empty() && !cpu_nodes.contains(node)) {
      findings.push_back("VF " + port + " is on NUMA node " + std::to_string(node) + ", the CPUs " + list_text(n.cpuset) +
                         " on node " + list_text({cpu_nodes.begin(), cpu_nodes.end()}));
    }
  }
  std::set<int> page_nodes;
  if (page_kb != 0) {
    for (const auto& [node, cpus] : n.nodes) {
      const auto free = read(n.sys("devices/system/node/node" + std::to_string(node) + "/hugepages/hugepages-" +
                                   std::to_string(page_kb) + "kB/free_hugepages"));
      if (free && std::atoll(free->c_str()) > 0) page_nodes.insert(node);
    }
    if (!page_nodes.empty() && !cpu_nodes.empty()) {
      bool overlap = false;
      for (int node : cpu_nodes) overlap = overlap || page_nodes.contains(node);
      if (!overlap) {
        findings.push_back("the free " + page_name(page_kb) + " hugepages are on node " + list_text({page_nodes.begin(), page_nodes.end()}) +
                           ", the CPUs on node " + list_text({cpu_nodes.begin(), cpu_nodes.end()}));
      }
    }
  }
  if (cpu_nodes.size() > 1) findings.push_back("the CPUs " + list_text(n.cpuset) + " span nodes " + list_text({cpu_nodes.begin(), cpu_nodes.end()}));
  if (findings.empty()) {
    c.evidence = "CPUs and VFs on node " + list_text({all.begin(), all.end()}) +
                 (page_nodes.empty() ? "" : ", free hugepages on node " + list_text({page_nodes.begin(), page_nodes.end()}));
    return c;
  }
  c.outcome = Outcome::warn;
  c.evidence = findings.front() + (findings.size() > 1 ? "; " + findings[1] : "");
  c.fix = "set the kubelet's topologyManagerPolicy: single-numa-node (with the memory manager's Static policy), or give the pod VFs "
          "from an SR-IOV resource of the CPUs' node";
  return c;
}

Check check_hugepages(const Node& n, const Demand& d) {
  Check c{"hugepages", Outcome::pass, "", ""};
  std::string mount_problem;
  const uint64_t kb = page_size_kb(n, d.huge_dir, mount_problem);
  if (!mount_problem.empty()) {
    return {"hugepages", Outcome::fail, mount_problem, "mount an emptyDir with medium HugePages-2Mi or HugePages-1Gi there"};
  }
  if (kb == 0) return {"hugepages", Outcome::fail, "the node has no hugepages (no Hugepagesize in /proc/meminfo)", "reserve hugepages on the node (hugepages=N on the kernel command line)"};
  const size_t workers = n.cpuset.size() > 1 ? n.cpuset.size() - 1 : 1;
  const uint64_t page = kb * 1024;
  const uint64_t needed = (page - 1 + hugepage_bytes_needed(std::max<size_t>(d.ports.size(), 2), static_cast<uint16_t>(workers), d.ring_size, d.mbufs, d.flows)) / page * page;  // whole pages
  const std::string size = page_name(kb);
  const auto free_pages = read(n.sys("kernel/mm/hugepages/hugepages-" + std::to_string(kb) + "kB/free_hugepages"));
  const uint64_t node_free = free_pages ? std::strtoull(free_pages->c_str(), nullptr, 10) * kb * 1024 : 0;
  // The container's hugetlb limit (cgroup v2, else v1): what the kubelet set from its requests.
  const std::string unit = kb >= (1 << 20) ? std::to_string(kb >> 20) + "GB" : std::to_string(kb >> 10) + "MB";
  std::optional<uint64_t> limit;
  std::string limit_file;
  for (const std::string& rel : {"fs/cgroup/hugetlb." + unit + ".max", "fs/cgroup/hugetlb/hugetlb." + unit + ".limit_in_bytes"}) {
    if (auto v = read(n.sys(rel))) {
      limit_file = "hugetlb." + unit + (rel.ends_with(".max") ? ".max" : ".limit_in_bytes");
      if (*v != "max") {
        const uint64_t bytes = std::strtoull(v->c_str(), nullptr, 10);
        if (bytes < (1ULL << 62)) limit = bytes;
      }
      break;
    }
  }
  const uint64_t available = limit ? std::min(*limit, node_free) : node_free;
  c.evidence = "the firewall needs about " + mib(needed) + " of " + size + " pages (" + std::to_string(d.flows) + " flows, " +
               std::to_string(std::max<size_t>(d.ports.size(), 2)) + " ports, " + std::to_string(workers) + " worker" +
               (workers == 1 ? "" : "s") + "); " +
               (limit ? "the container may use " + mib(*limit) + " (" + limit_file + "), " : "") + "the node has " + mib(node_free) + " free";
  if (available < needed) {
    c.outcome = Outcome::fail;
    c.fix = "request more hugepages-" + std::string(kb >= (1 << 20) ? "1Gi" : "2Mi") + " (requests = limits) and reserve them on the node, or lower --flows";
  }
  return c;
}

bool dpdk_driver(const std::string& driver);

Check check_device(const Node& n, const Demand& d, const std::string& port) {
  Check c{"device " + port, Outcome::pass, "", ""};
  const fs::path dev = n.sys("bus/pci/devices/" + port);
  std::error_code ec;
  if (!fs::exists(dev, ec)) {
    return {c.name, Outcome::fail, port + " is not on the node's PCI bus", "check the SR-IOV device plugin's resource and the pod's network-status"};
  }
  const std::string driver = link_name(dev / "driver");
  if (driver.empty()) return {c.name, Outcome::fail, port + " is bound to no driver", "run kmod-builder bind before the firewall"};
  if (!d.driver.empty() && driver != d.driver) {
    return {c.name, Outcome::fail, port + " is bound to " + driver + ", the firewall needs " + d.driver,
            "run kmod-builder bind with KMODKIT_DRIVER=" + d.driver + " before the firewall"};
  }
  if (d.driver.empty() && !dpdk_driver(driver)) {
    return {c.name, Outcome::fail, port + " is bound to " + driver + ", a kernel network driver DPDK cannot share",
            "run kmod-builder bind (vfio-pci, or igb_uio without an IOMMU) before the firewall"};
  }
  c.evidence = port + " on " + driver;
  if (driver == "vfio-pci") {
    const std::string group = link_name(dev / "iommu_group");
    if (group.empty()) return {c.name, Outcome::fail, c.evidence + ", in no IOMMU group", "boot the node with its IOMMU on (intel_iommu=on)"};
    c.evidence += ", IOMMU group " + group;
    std::vector<std::string> others;
    for (const auto& e : fs::directory_iterator(n.sys("kernel/iommu_groups/" + group + "/devices"), ec)) {
      const std::string other = e.path().filename().string();
      if (other == port) continue;
      const std::string other_driver = link_name(e.path() / "driver");
      others.push_back(other + (other_driver.empty() ? "" : " (" + other_driver + ")"));
    }
    for (const std::string& node : {std::string("/dev/vfio/vfio"), "/dev/vfio/" + group}) {
      if (!fs::exists(n.root / node.substr(1), ec)) {
        return {c.name, Outcome::fail, c.evidence + ", but the container has no " + node,
                "request the VF's SR-IOV resource in this container: the device plugin mounts " + node};
      }
    }
    if (!others.empty()) {
      c.outcome = Outcome::warn;
      c.evidence += " shared with " + others.front() + (others.size() > 1 ? " and " + std::to_string(others.size() - 1) + " more" : "");
      c.fix = "vfio takes a group whole: every device of it must be on vfio-pci or on no driver; a NIC with ACS gives each VF a group of its own";
    } else {
      c.evidence += " of its own, /dev/vfio/" + group + " present";
    }
  } else if (driver == "igb_uio" || driver == "uio_pci_generic") {
    const std::string uio = [&] {
      for (const auto& e : fs::directory_iterator(dev / "uio", ec)) return e.path().filename().string();
      return std::string();
    }();
    if (uio.empty()) return {c.name, Outcome::fail, c.evidence + ", but without a uio device", "reload igb_uio and bind the device again"};
    if (!fs::exists(n.root / "dev" / uio, ec)) {
      // A privileged firewall, as igb_uio needs (it maps the BARs through sysfs), has every
      // device; an unprivileged preflight may not.
      c.outcome = Outcome::warn;
      c.evidence += ", no /dev/" + uio + " in this container";
      c.fix = "run the firewall privileged with igb_uio: it maps the device's BARs through sysfs and needs /dev/" + uio;
      return c;
    }
    c.evidence += ", /dev/" + uio + " present";
  }
  return c;
}

// Drivers DPDK drives a port through: user-space I/O, or a bifurcated kernel driver (Mellanox:
// DPDK's mlx5 and mlx4 drivers work beside the kernel's).
bool dpdk_driver(const std::string& driver) {
  return driver == "vfio-pci" || driver == "igb_uio" || driver == "uio_pci_generic" || driver == "mlx5_core" || driver == "mlx4_core";
}

// The drivers the checks of the IOMMU and lockdown are about: --driver, else those the ports
// are bound to.
std::set<std::string> drivers_in_use(const Node& n, const Demand& d) {
  if (!d.driver.empty()) return {d.driver};
  std::set<std::string> out;
  for (const auto& port : d.ports) {
    if (auto drv = link_name(n.sys("bus/pci/devices/" + port + "/driver")); !drv.empty()) out.insert(drv);
  }
  return out;
}

// Whether the IOMMU translates the addresses of this group's devices (default domain DMA, not
// identity = passthrough); nullopt when the kernel does not say.
std::optional<bool> translated(const Node& n, const std::string& port) {
  const std::string group = link_name(n.sys("bus/pci/devices/" + port + "/iommu_group"));
  if (group.empty()) return std::nullopt;
  const auto type = read(n.sys("kernel/iommu_groups/" + group + "/type"));
  if (!type) return std::nullopt;
  return *type != "identity";
}

Check check_iommu(const Node& n, const Demand& d, const std::set<std::string>& drivers) {
  Check c{"iommu", Outcome::pass, "", ""};
  std::vector<std::string> units;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(n.sys("class/iommu"), ec)) units.push_back(e.path().filename().string());
  std::sort(units.begin(), units.end());
  std::string args;
  for (const char* p : {"intel_iommu", "amd_iommu", "iommu", "iommu.passthrough"}) {
    if (const auto v = n.param(p); !v.empty()) args += std::string(args.empty() ? "" : " ") + p + "=" + v;
  }
  const std::string cmdline = args.empty() ? "no IOMMU option on the kernel command line" : args;
  const bool passthrough = n.param("iommu") == "pt" || n.param("iommu.passthrough") == "1";
  if (units.empty()) {
    c.evidence = "no IOMMU (none in /sys/class/iommu); " + cmdline;
    if (drivers.contains("vfio-pci")) {
      c.outcome = Outcome::fail;
      c.fix = "boot the node with intel_iommu=on (AMD: on by default) and VT-d/AMD-Vi in the firmware, or use igb_uio";
    }
    return c;
  }
  c.evidence = "IOMMU on (" + units.front() + (units.size() > 1 ? " and " + std::to_string(units.size() - 1) + " more" : "") + "); " + cmdline;
  if (drivers.contains("igb_uio") || drivers.contains("uio_pci_generic")) {
    for (const auto& port : d.ports) {
      const auto t = translated(n, port);
      if ((t && *t) || (!t && !passthrough)) {
        c.outcome = Outcome::fail;
        c.evidence += "; " + port + "'s DMA is translated" + (t ? "" : " (no iommu=pt)");
        c.fix = "igb_uio gives devices physical addresses, which a translating IOMMU faults: boot with iommu=pt, or use vfio-pci";
        break;
      }
    }
  }
  return c;
}

Check check_signatures(const Node& n, const std::set<std::string>& drivers) {
  const bool uio = drivers.contains("igb_uio") || drivers.contains("uio_pci_generic");
  Check c{"module-signatures", Outcome::pass, "", ""};
  const auto enforce = read(n.sys("module/module/parameters/sig_enforce"));
  const auto lockdown_text = read(n.sys("kernel/security/lockdown"));
  std::string lockdown;
  if (lockdown_text) {
    const auto open = lockdown_text->find('['), close = lockdown_text->find(']');
    if (open != std::string::npos && close > open) lockdown = lockdown_text->substr(open + 1, close - open - 1);
  }
  if (!enforce) {
    c.evidence = "the kernel does not check module signatures (no sig_enforce parameter)";
  } else if (*enforce == "Y") {
    c.evidence = "sig_enforce=Y: only modules signed by a key the kernel trusts load (kmod-builder signs them; its key must be enrolled)";
  } else {
    c.evidence = "sig_enforce=N: unsigned modules load (tainting the kernel)";
  }
  if (lockdown.empty()) {
    c.evidence += "; lockdown " + std::string(lockdown_text ? "unknown" : "unreadable (no securityfs)");
    if (uio) {
      c.outcome = Outcome::warn;
      c.fix = "check /sys/kernel/security/lockdown on the node: a locked-down kernel refuses igb_uio's BAR mappings";
    }
  } else {
    c.evidence += "; lockdown=" + lockdown;
    if (lockdown != "none" && uio) {
      c.outcome = Outcome::fail;
      c.fix = "a locked-down kernel refuses mapping PCI BARs through sysfs, which DPDK does with igb_uio: use vfio-pci";
    } else if (lockdown != "none" && enforce && *enforce != "Y") {
      c.evidence += " (modules must be signed all the same)";
    }
  }
  return c;
}

}  // namespace

std::vector<Check> run_preflight(const std::string& root, const Demand& d) {
  const Node n = read_node(root);
  std::string ignored;
  const uint64_t page_kb = page_size_kb(n, d.huge_dir, ignored);
  std::vector<Check> checks = {check_cpus(n, d), check_numa(n, d, page_kb), check_hugepages(n, d)};
  for (const auto& port : d.ports) checks.push_back(check_device(n, d, port));
  const auto drivers = drivers_in_use(n, d);
  checks.push_back(check_iommu(n, d, drivers));
  checks.push_back(check_signatures(n, drivers));
  return checks;
}

Outcome worst(const std::vector<Check>& checks) {
  Outcome v = Outcome::pass;
  for (const auto& c : checks) v = std::max(v, c.outcome);
  return v;
}

std::string format_report(const std::vector<Check>& checks) {
  std::string out;
  int counts[3] = {};
  for (const auto& c : checks) {
    ++counts[static_cast<int>(c.outcome)];
    out += std::string(outcome_name(c.outcome)) + "  " + c.name + ": " + c.evidence + "\n";
    if (!c.fix.empty()) out += "      fix: " + c.fix + "\n";
  }
  out += "preflight: " + std::to_string(counts[2]) + " fail, " + std::to_string(counts[1]) + " warn, " + std::to_string(counts[0]) + " pass\n";
  return out;
}

std::string format_report_json(const std::vector<Check>& checks) {
  nlohmann::ordered_json doc = {{"verdict", outcome_name(worst(checks))}, {"checks", nlohmann::ordered_json::array()}};
  for (const auto& c : checks) {
    doc["checks"].push_back({{"check", c.name}, {"verdict", outcome_name(c.outcome)}, {"evidence", c.evidence}, {"fix", c.fix}});
  }
  return doc.dump() + "\n";
}

}  // namespace kmodkit::firewall
