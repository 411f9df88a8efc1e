#include "eal_args.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"

extern char** environ;

namespace kmodkit::firewall {

std::vector<int> allowed_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

Result<std::vector<int>> parse_cpu_list(const std::string& text) {
  std::vector<int> out;
  for (const auto& item : text::split_items(text, ',')) {
    const auto dash = item.find('-');
    int lo = 0, hi = 0;
    const std::string a = item.substr(0, dash), b = dash == std::string::npos ? a : item.substr(dash + 1);
    auto ra = std::from_chars(a.data(), a.data() + a.size(), lo);
    auto rb = std::from_chars(b.data(), b.data() + b.size(), hi);
    if (ra.ec != std::errc() || ra.ptr != a.data() + a.size() || rb.ec != std::errc() || rb.ptr != b.data() + b.size() ||
        lo < 0 || hi < lo || hi >= 1024) {
      return fail(ExitCode::usage, "'" + text + "' is not a CPU list such as 0-3,8");
    }
    for (int c = lo; c <= hi; ++c) out.push_back(c);
  }
  if (out.empty()) return fail(ExitCode::usage, "'" + text + "' names no CPU");
  return out;
}

Result<std::vector<DevicePluginPort>> device_plugin_ports(const std::vector<std::string>& environment) {
  std::vector<DevicePluginPort> ports;
  std::map<std::string, std::string> infos;  // PCIDEVICE_<RESOURCE> -> its _INFO JSON
  for (const auto& entry : environment) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = entry.substr(0, eq);
    if (!name.starts_with("PCIDEVICE_")) continue;
    if (name.ends_with("_INFO")) {
      infos[name.substr(0, name.size() - 5)] = entry.substr(eq + 1);
      continue;
    }
    for (const auto& a : text::split_items(entry.substr(eq + 1), ',')) ports.push_back({a, name, "", {}});
  }
  for (auto& port : ports) {
    const auto info = infos.find(port.variable);
    if (info == infos.end()) continue;
    const std::string var = port.variable + "_INFO";
    const auto json = nlohmann::json::parse(info->second, nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
      return fail(ExitCode::config, var + " is not the device plugin's JSON (an object keyed by PCI address)");
    }
    const auto dev = json.find(port.address);
    if (dev == json.end()) continue;
    if (!dev->is_object()) return fail(ExitCode::config, var + ": the entry of " + port.address + " is not an object");
    for (const auto& [driver, details] : dev->items()) {
      if (driver == "generic" || !details.is_object()) continue;
      port.driver = driver;
      for (const auto& [key, value] : details.items()) {
        if ((key == "mount" || key == "dev-mount") && value.is_string()) port.mounts.push_back(value.get<std::string>());
      }
    }
    for (const auto& m : port.mounts) {
      std::error_code ec;
      if (!std::filesystem::exists(m, ec)) {
        return fail(ExitCode::config, var + ": " + port.address + " needs " + m + " (" + port.driver +
                                          "), which is not in this container: the device plugin's mounts are missing");
      }
    }
  }
  return ports;
}

Result<void> check_free_hugepages(const std::string& sysfs) {
  std::error_code ec;
  std::string sizes;
  for (const auto& dir : std::filesystem::directory_iterator(sysfs, ec)) {
    const std::string name = dir.path().filename().string();
    if (!name.starts_with("hugepages-")) continue;
    const auto content = files::read_file(dir.path() / "free_hugepages", 64).value_or("");
    const std::string_view count = text::trim(content);
    long free = 0;
    if (std::from_chars(count.data(), count.data() + count.size(), free).ec == std::errc() && free > 0) return {};
    sizes += (sizes.empty() ? "" : ", ") + name.substr(10);
  }
  return fail(ExitCode::config, "no free hugepages on this node (" + (sizes.empty() ? sysfs + " lists no size" : "sizes " + sizes) +
                                    "): give the pod hugepages-2Mi or hugepages-1Gi, or reserve some "
                                    "(echo N > /proc/sys/vm/nr_hugepages); tests can run without them with --no-huge-mb");
}

Result<std::vector<std::string>> eal_arguments(const EalInput& in) {
  std::vector<std::string> pci = in.pci;
  if (pci.empty() && in.vdevs.empty()) {
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
    for (const auto& port : KK_TRY(device_plugin_ports(env))) pci.push_back(port.address);
  }
  if (pci.empty() && in.vdevs.empty()) {
    return fail(ExitCode::config, "no ports: give --port PCI_ADDRESS or --vdev SPEC, or run where the SR-IOV device "
                                  "plugin sets PCIDEVICE_* variables");
  }
  std::vector<std::string> a = {"firewall"};
  if (!in.lcore_map.empty()) {
    a.insert(a.end(), {"--lcores", in.lcore_map});  // EAL checks the CPUs of a map itself
  } else {
    const auto allowed = allowed_cpus();
    const auto cpus = in.cpus.empty() ? allowed : in.cpus;
    if (cpus.empty()) return fail(ExitCode::config, "no CPU to run on");
    for (int c : cpus) {
      if (std::find(allowed.begin(), allowed.end(), c) == allowed.end()) {
        std::string list;
        for (int x : allowed) list += (list.empty() ? "" : ",") + std::to_string(x);
        return fail(ExitCode::config, "CPU " + std::to_string(c) + " is not one this process may run on (its cpuset: " + list + ")");
      }
    }
    std::string lcores;
    for (int c : cpus) lcores += (lcores.empty() ? "" : ",") + std::to_string(c);
    a.insert(a.end(), {"-l", lcores});
  }
  a.insert(a.end(), {"--file-prefix", in.file_prefix.empty() ? "kmodkit-fw-" + std::to_string(::getpid()) : in.file_prefix});
  if (pci.empty()) a.push_back("--no-pci");
  for (const auto& p : pci) {
    a.push_back("-a");
    a.push_back(p);
  }
  for (const auto& v : in.vdevs) {
    a.push_back("--vdev");
    a.push_back(v);
  }
  if (in.no_huge_mb > 0) {
    a.insert(a.end(), {"--no-huge", "-m", std::to_string(in.no_huge_mb)});
  } else {
    if (!in.huge_dir.empty()) a.insert(a.end(), {"--huge-dir", in.huge_dir});
    if (!in.secondary_processes) a.push_back("--huge-unlink");
  }
  a.push_back("--log-level=" + in.log_level);
  return a;
}

}  // namespace kmodkit::firewall
