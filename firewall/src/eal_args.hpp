#pragma once
// The EAL command line, built from what the pod was given: the SR-IOV device plugin's PCI
// addresses (or explicit ports, or virtual devices), the container's cpuset, the hugepages.

#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

struct EalInput {
  std::vector<std::string> pci;    // PCI addresses; empty: PCIDEVICE_* variables (when no vdevs)
  std::vector<std::string> vdevs;  // net_pcap0,rx_pcap=..., net_ring0, ...
  std::vector<int> cpus;           // empty: the process's affinity (the container's cpuset)
  std::string lcore_map;           // EAL's --lcores map instead (e.g. "0@0,(1,2)@1"); overrides cpus
  std::string huge_dir;            // empty: EAL's default
  int no_huge_mb = 0;              // > 0: --no-huge -m N (tests, demos)
  std::string file_prefix;         // empty: kmodkit-fw-<pid>
  // Keep the hugepage files so that DPDK's secondary processes (dpdk-proc-info, dpdk-dumpcap) can
  // attach. Otherwise EAL unlinks each file once mapped (--huge-unlink): the kernel gives the pages
  // back when the process ends, however it ends, and nothing is left in the hugepage mount.
  bool secondary_processes = false;
  std::string log_level = "notice";
};

// The CPUs this process may run on, from sched_getaffinity (the cgroup cpuset, v1 or v2).
std::vector<int> allowed_cpus();

// "0-3,8,10-11" -> {0,1,2,3,8,10,11}; usage error naming the text.
Result<std::vector<int>> parse_cpu_list(const std::string& text);

// A port the SR-IOV device plugin gave the pod: PCIDEVICE_<RESOURCE>=addr,addr,... and, from its
// newer PCIDEVICE_<RESOURCE>_INFO JSON ({"addr": {"generic": {...}, "vfio": {"dev-mount":
// "/dev/vfio/61", "mount": "/dev/vfio/vfio"}}}), the device files it mounted for that address.
struct DevicePluginPort {
  std::string address;
  std::string variable;             // PCIDEVICE_<RESOURCE>
  std::string driver;               // vfio, uio, ... from _INFO ("" without one)
  std::vector<std::string> mounts;  // device files the container must have
};

// The ports of NAME=VALUE environment entries. Configuration error (78) naming the variable when
// an _INFO value is not the device plugin's JSON, or names a device file that is missing here
// (DPDK would fail later with a less clear message).
Result<std::vector<DevicePluginPort>> device_plugin_ports(const std::vector<std::string>& environment);

// This process's environment as NAME=VALUE entries, for device_plugin_ports().
std::vector<std::string> process_environment();

// A port the pod's networks give, from Multus's k8s.v1.cni.cncf.io/network-status annotation: an
// entry whose device-info (the Network Plumbing WG's device-info spec) is of type pci.
struct NetworkPort {
  std::string address;    // device-info.pci.pci-address, e.g. 0000:af:06.0
  std::string network;    // the entry's "name" (namespace/network)
  std::string interface;  // the entry's "interface" ("" without one)
};

// The PCI ports of a network-status annotation (`text`, the content of `file`, which errors
// name), in the annotation's order, which is the order of the pod's networks: port A of a pair
// is the first such network, B the second. When `device_plugin` is not empty (PCIDEVICE_*
// variables are set), each address must be one of its addresses. Errors: 66 when `text` is
// empty (the pod has no such annotation), 65 when it is not a list of network objects or a pci
// entry has no address or repeats one, 78 when it names no PCI network or an address the device
// plugin did not give the pod.
Result<std::vector<NetworkPort>> network_status_ports(std::string_view text, const std::string& file,
                                                      const std::vector<DevicePluginPort>& device_plugin);

// Whether the node has a free hugepage of any size (`sysfs`: /sys/kernel/mm/hugepages, one
// hugepages-<size>kB directory per size). Configuration error (78) saying how to get some when
// none is free: EAL would stop with a bare errno.
Result<void> check_free_hugepages(const std::string& sysfs = "/sys/kernel/mm/hugepages");

// argv for rte_eal_init, program name first. Configuration error (78) when there is no port.
Result<std::vector<std::string>> eal_arguments(const EalInput& in);

}  // namespace kmodkit::firewall
