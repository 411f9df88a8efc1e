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

namespace {

// The string member `key` of a JSON object, "" when it is absent or not a string (json::value
// would throw on another type).
std::string string_member(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The device plugin's addresses as its variables list them: "PCIDEVICE_A=x,y PCIDEVICE_B=z".
std::string describe(const std::vector<DevicePluginPort>& ports) {
  std::string out;
  for (size_t i = 0; i < ports.size(); ++i) {
    const bool same_variable = i > 0 && ports[i - 1].variable == ports[i].variable;
    out += same_variable ? "," : std::string(i == 0 ? "" : " ") + ports[i].variable + "=";
    out += ports[i].address;
  }
  return out;
}

}  // namespace

std::vector<std::string> process_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

// The annotation is the Network Plumbing WG's network-status (its multi-net-spec; the entries'
// type is NetworkStatus in network-attachment-definition-client): a JSON list of
// {"name", "interface", "ips", "mac", "default", "dns", "device-info"} in the order of the pod's
// networks annotation, the cluster's default network first. device-info is the device-info
// spec's: {"type": "pci", "version": "1.1.0", "pci": {"pci-address": ..., "rdma-device": ...,
// "pf-pci-address": ...}}, or of type vdpa, vhost-user or memif, which are no ports here.
Result<std::vector<NetworkPort>> network_status_ports(std::string_view text, const std::string& file,
                                                      const std::vector<DevicePluginPort>& device_plugin) {
  // The downward API writes an empty file for an annotation the pod does not have (yet).
  if (text::trim(text).empty()) {
    return fail(ExitCode::no_input, file + " is empty: the pod has no k8s.v1.cni.cncf.io/network-status annotation, "
                                           "which Multus writes when it attaches the pod's networks");
  }
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded()) {
    return fail(ExitCode::data_err, file + " is not JSON, as Multus's network-status annotation is (a list of networks)");
  }
  if (!json.is_array()) {
    return fail(ExitCode::data_err, file + " is not a list of networks, as Multus's network-status annotation is");
  }
  std::vector<NetworkPort> ports;
  std::vector<std::string> whose;  // "network 2 (kmodkit/kmodkit-outside)" of each port, for errors
  for (size_t i = 0; i < json.size(); ++i) {
    const auto& entry = json[i];
    std::string which = "network " + std::to_string(i + 1);
    if (!entry.is_object()) return fail(ExitCode::data_err, file + ": " + which + " is not an object");
    const std::string name = string_member(entry, "name");
    if (!name.empty()) which += " (" + name + ")";
    const auto info = entry.find("device-info");
    if (info == entry.end()) continue;  // the default network, macvlan, ...: no device of its own
    if (!info->is_object()) return fail(ExitCode::data_err, file + ": " + which + ": its device-info is not an object");
    if (string_member(*info, "type") != "pci") continue;
    const auto pci = info->find("pci");
    const std::string address = pci != info->end() && pci->is_object() ? string_member(*pci, "pci-address") : "";
    if (address.empty()) {
      return fail(ExitCode::data_err, file + ": " + which + ": its device-info of type pci has no pci-address");
    }
    for (size_t j = 0; j < ports.size(); ++j) {
      if (ports[j].address == address) {
        return fail(ExitCode::data_err, file + ": " + which + ": " + address + " is the PCI device of " + whose[j] + " too");
      }
    }
    // A device the device plugin did not give this pod is not the container's to drive.
    if (!device_plugin.empty() && std::none_of(device_plugin.begin(), device_plugin.end(),
                                               [&](const DevicePluginPort& p) { return p.address == address; })) {
      return fail(ExitCode::config, file + ": " + which + ": " + address +
                                        " is not one of the PCI devices the device plugin gave the pod (" +
                                        describe(device_plugin) + ")");
    }
    ports.push_back({address, name, string_member(entry, "interface")});
    whose.push_back(which);
  }
  if (ports.empty()) {
    return fail(ExitCode::config, file + " names no network with a PCI device (device-info of type pci): attach the "
                                         "pod's SR-IOV networks, or give the ports with --port");
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
    for (const auto& port : KK_TRY(device_plugin_ports(process_environment()))) pci.push_back(port.address);
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
