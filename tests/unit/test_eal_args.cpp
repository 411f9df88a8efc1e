// The firewall's EAL command line from what the pod was given: CPU lists, the SR-IOV device
// plugin's PCIDEVICE_* variables (and the device files its _INFO JSON names), hugepages.
#include <catch2/catch.hpp>

#include <algorithm>

#include "eal_args.hpp"
#include "helpers.hpp"

using namespace kmodkit::firewall;
using kmodkit::test::TempDir;

namespace {

bool has_sequence(const std::vector<std::string>& args, const std::vector<std::string>& seq) {
  return std::search(args.begin(), args.end(), seq.begin(), seq.end()) != args.end();
}

}  // namespace

TEST_CASE("CPU lists are ranges and single CPUs, and bad ones name the text", "[unit][eal]") {
  CHECK(*parse_cpu_list("0-3,8,10-11") == std::vector<int>{0, 1, 2, 3, 8, 10, 11});
  CHECK(*parse_cpu_list("5") == std::vector<int>{5});
  for (const char* bad : {"", "3-1", "a", "1-", "-2", "0,,x", "2048"}) {
    INFO(bad);
    auto r = parse_cpu_list(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == kmodkit::ExitCode::usage);
  }
}

TEST_CASE("device plugin ports come with the device files their _INFO names", "[unit][eal]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "vfio-61", "");
  kmodkit::test::write_file(tmp / "vfio", "");
  const std::string info = R"({"0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"},
      "vfio": {"dev-mount": ")" + (tmp / "vfio-61").string() + R"(", "mount": ")" + (tmp / "vfio").string() + R"("}}})";
  auto ports = device_plugin_ports({"PATH=/usr/bin", "PCIDEVICE_INTEL_COM_SRIOV_DPDK=0000:3b:02.0,0000:3b:02.1",
                                    "PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO=" + info, "PCIDEVICE_OTHER=0000:5e:00.2"});
  REQUIRE(ports);
  REQUIRE(ports->size() == 3);
  CHECK((*ports)[0].address == "0000:3b:02.0");
  CHECK((*ports)[0].driver == "vfio");
  CHECK((*ports)[0].mounts.size() == 2);
  CHECK((*ports)[1].address == "0000:3b:02.1");
  CHECK((*ports)[1].mounts.empty());  // not in the JSON
  CHECK((*ports)[2].variable == "PCIDEVICE_OTHER");

  SECTION("a device file that is not in the container is a configuration error naming it") {
    auto missing = device_plugin_ports({"PCIDEVICE_R=0000:3b:02.0", R"(PCIDEVICE_R_INFO={"0000:3b:02.0": {"uio": {"mount": ")" +
                                                                        (tmp / "uio7").string() + R"("}}})"});
    REQUIRE_FALSE(missing);
    CHECK(missing.error().code == kmodkit::ExitCode::config);
    CHECK_THAT(missing.error().message, Catch::Contains("PCIDEVICE_R_INFO") && Catch::Contains("uio7") &&
                                            Catch::Contains("0000:3b:02.0"));
  }
  SECTION("_INFO that is not the device plugin's JSON is refused") {
    for (const char* bad : {"{", "[1,2]", R"({"0000:3b:02.0": 5})"}) {
      INFO(bad);
      auto r = device_plugin_ports({"PCIDEVICE_R=0000:3b:02.0", std::string("PCIDEVICE_R_INFO=") + bad});
      REQUIRE_FALSE(r);
      CHECK_THAT(r.error().message, Catch::Contains("PCIDEVICE_R_INFO"));
    }
  }
}

// The annotation as Multus writes it for the pod of deploy/overlays/kubernetes: the cluster's
// default network first (no device-info), then the two SR-IOV networks in the order of the pod's
// k8s.v1.cni.cncf.io/networks annotation, each with the VF the device plugin gave it.
const char* const multus_two_sriov = R"([{
    "name": "cbr0",
    "interface": "eth0",
    "ips": [
        "10.244.1.17"
    ],
    "mac": "0a:58:0a:f4:01:11",
    "default": true,
    "dns": {}
},{
    "name": "kmodkit/kmodkit-outside",
    "interface": "net1",
    "dns": {},
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:af:06.3"
        }
    }
},{
    "name": "kmodkit/kmodkit-inside",
    "interface": "net2",
    "dns": {},
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:af:06.0"
        }
    }
}])";

TEST_CASE("the pod's networks order the ports, whatever order the device plugin lists them in", "[unit][eal]") {
  // The device plugin lists the two VFs of one resource in no particular order.
  auto plugin = device_plugin_ports({"PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK=0000:af:06.0,0000:af:06.3"});
  REQUIRE(plugin);
  auto ports = network_status_ports(multus_two_sriov, "/etc/podinfo/network-status", *plugin);
  REQUIRE(ports);
  REQUIRE(ports->size() == 2);
  CHECK((*ports)[0].address == "0000:af:06.3");  // outside: port A
  CHECK((*ports)[0].network == "kmodkit/kmodkit-outside");
  CHECK((*ports)[0].interface == "net1");
  CHECK((*ports)[1].address == "0000:af:06.0");  // inside: port B
  CHECK((*ports)[1].network == "kmodkit/kmodkit-inside");
  CHECK((*ports)[1].interface == "net2");

  SECTION("without PCIDEVICE_* variables the annotation alone decides") {
    auto alone = network_status_ports(multus_two_sriov, "network-status", {});
    REQUIRE(alone);
    CHECK(alone->size() == 2);
  }
  SECTION("an address the device plugin did not give the pod is a configuration error naming it and the file") {
    auto other = device_plugin_ports({"PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK=0000:af:06.0,0000:af:06.1"});
    REQUIRE(other);
    auto r = network_status_ports(multus_two_sriov, "/etc/podinfo/network-status", *other);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == kmodkit::ExitCode::config);
    CHECK_THAT(r.error().message, Catch::Contains("/etc/podinfo/network-status") && Catch::Contains("0000:af:06.3") &&
                                      Catch::Contains("kmodkit/kmodkit-outside") &&
                                      Catch::Contains("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK"));
  }
}

TEST_CASE("a host-device network with a PCI device is a port; networks without one are not", "[unit][eal]") {
  // Mellanox VFs moved whole into the pod by the host-device CNI (the kmodkit-mlx network): the
  // device plugin's device-info carries the RDMA device and the PF too. A macvlan network and a
  // vDPA device are no ports of the firewall.
  const char* const status = R"([{
    "name": "k8s-pod-network",
    "ips": [
        "192.168.185.80"
    ],
    "default": true,
    "dns": {}
},{
    "name": "kmodkit/kmodkit-mlx",
    "interface": "net1",
    "mac": "b8:ce:f6:2a:10:02",
    "dns": {},
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:3b:00.2",
            "rdma-device": "mlx5_2",
            "pf-pci-address": "0000:3b:00.0"
        }
    }
},{
    "name": "kmodkit/management",
    "interface": "net2",
    "ips": [
        "192.0.2.10"
    ],
    "mac": "5e:9a:34:11:0c:7d",
    "dns": {}
},{
    "name": "kmodkit/vdpa-net",
    "interface": "net3",
    "dns": {},
    "device-info": {
        "type": "vdpa",
        "version": "1.1.0",
        "vdpa": {
            "parent-device": "vdpa:0000:65:00.3",
            "driver": "vhost",
            "path": "/dev/vhost-vdpa-1",
            "pci-address": "0000:65:00.3"
        }
    }
},{
    "name": "kmodkit/kmodkit-mlx",
    "interface": "net4",
    "mac": "b8:ce:f6:2a:10:03",
    "dns": {},
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:3b:00.3",
            "rdma-device": "mlx5_3",
            "pf-pci-address": "0000:3b:00.0"
        }
    }
}])";
  auto plugin = device_plugin_ports({"PCIDEVICE_NVIDIA_COM_MLNX_SRIOV_NETDEVICE=0000:3b:00.3,0000:3b:00.2"});
  REQUIRE(plugin);
  auto ports = network_status_ports(status, "network-status", *plugin);
  REQUIRE(ports);
  REQUIRE(ports->size() == 2);
  CHECK((*ports)[0].address == "0000:3b:00.2");
  CHECK((*ports)[0].interface == "net1");
  CHECK((*ports)[1].address == "0000:3b:00.3");
  CHECK((*ports)[1].interface == "net4");
}

TEST_CASE("a network-status that is empty, not the annotation's JSON or without PCI networks is refused naming the file", "[unit][eal]") {
  struct Case {
    const char* text;
    kmodkit::ExitCode code;
    const char* says;
  };
  const Case cases[] = {
      // The downward API writes an empty file when the pod has no such annotation.
      {"", kmodkit::ExitCode::no_input, "is empty"},
      {"\n", kmodkit::ExitCode::no_input, "is empty"},
      {R"([{"name": "cbr0", "default": true,)", kmodkit::ExitCode::data_err, "is not JSON"},
      {R"({"name": "kmodkit/kmodkit-outside"})", kmodkit::ExitCode::data_err, "not a list"},
      {"null", kmodkit::ExitCode::data_err, "not a list"},
      {R"([{"name": "cbr0"}, 5])", kmodkit::ExitCode::data_err, "network 2 is not an object"},
      {R"([{"name": "a", "device-info": "pci"}])", kmodkit::ExitCode::data_err, "network 1 (a): its device-info is not an object"},
      {R"([{"name": "a", "device-info": {"type": "pci", "version": "1.1.0"}}])", kmodkit::ExitCode::data_err,
       "network 1 (a): its device-info of type pci has no pci-address"},
      {R"([{"name": "a", "device-info": {"type": "pci", "pci": {"pci-address": 7}}}])", kmodkit::ExitCode::data_err,
       "network 1 (a): its device-info of type pci has no pci-address"},
      {R"([{"name": "a", "device-info": {"type": "pci", "pci": {"pci-address": "0000:af:06.0"}}},
           {"name": "b", "device-info": {"type": "pci", "pci": {"pci-address": "0000:af:06.0"}}}])",
       kmodkit::ExitCode::data_err, "network 2 (b): 0000:af:06.0 is the PCI device of network 1 (a) too"},
      // Multus ran, but attached no network with a PCI device.
      {R"([{"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.17"], "default": true, "dns": {}}])",
       kmodkit::ExitCode::config, "names no network with a PCI device"},
      {"[]", kmodkit::ExitCode::config, "names no network with a PCI device"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto r = network_status_ports(c.text, "/etc/podinfo/network-status", {});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == c.code);
    CHECK_THAT(r.error().message, Catch::StartsWith("/etc/podinfo/network-status") && Catch::Contains(c.says));
  }
}

TEST_CASE("EAL arguments: lcores, a unique prefix, ports or vdevs, memory", "[unit][eal]") {
  EalInput in;
  in.vdevs = {"net_null0", "net_null1"};
  const auto mine = allowed_cpus();
  REQUIRE_FALSE(mine.empty());
  in.cpus = {mine.back()};
  in.no_huge_mb = 256;
  auto a = eal_arguments(in);
  REQUIRE(a);
  CHECK(has_sequence(*a, {"-l", std::to_string(mine.back())}));
  CHECK(has_sequence(*a, {"--no-pci"}));
  CHECK(has_sequence(*a, {"--vdev", "net_null0", "--vdev", "net_null1"}));
  CHECK(has_sequence(*a, {"--no-huge", "-m", "256"}));
  CHECK(std::any_of(a->begin(), a->end(), [](const std::string& s) { return s.starts_with("kmodkit-fw-"); }));

  EalInput pci;
  pci.pci = {"0000:3b:02.0", "0000:3b:02.1"};
  pci.huge_dir = "/dev/hugepages-1Gi";
  pci.file_prefix = "fw-0";
  auto b = eal_arguments(pci);
  REQUIRE(b);
  CHECK(has_sequence(*b, {"-a", "0000:3b:02.0", "-a", "0000:3b:02.1"}));
  CHECK(has_sequence(*b, {"--huge-dir", "/dev/hugepages-1Gi"}));
  CHECK(has_sequence(*b, {"--file-prefix", "fw-0"}));
  CHECK_FALSE(has_sequence(*b, {"--no-pci"}));
  // On hugepages the files are unlinked once mapped, unless secondary processes are to attach;
  // without hugepages there is nothing to unlink.
  CHECK(has_sequence(*b, {"--huge-unlink"}));
  CHECK_FALSE(has_sequence(*a, {"--huge-unlink"}));
  pci.secondary_processes = true;
  auto kept = eal_arguments(pci);
  REQUIRE(kept);
  CHECK_FALSE(has_sequence(*kept, {"--huge-unlink"}));
  CHECK(b->at(1) == "-l");  // the process's own CPUs (sched_getaffinity)
  CHECK_FALSE(b->at(2).empty());

  in.cpus = {1000};  // not in this process's cpuset
  auto c = eal_arguments(in);
  REQUIRE_FALSE(c);
  CHECK(c.error().code == kmodkit::ExitCode::config);
  CHECK_THAT(c.error().message, Catch::Contains("CPU 1000 is not one this process may run on"));
}

TEST_CASE("no free hugepage of any size is refused before EAL, saying how to get some", "[unit][eal]") {
  TempDir sys;
  kmodkit::test::write_file(sys / "hugepages-2048kB/free_hugepages", "0\n");
  kmodkit::test::write_file(sys / "hugepages-1048576kB/free_hugepages", "0\n");
  auto none = check_free_hugepages(sys.path.string());
  REQUIRE_FALSE(none);
  CHECK(none.error().code == kmodkit::ExitCode::config);
  CHECK_THAT(none.error().message, Catch::Contains("no free hugepages") && Catch::Contains("2048kB") &&
                                       Catch::Contains("1048576kB") && Catch::Contains("--no-huge-mb"));

  kmodkit::test::write_file(sys / "hugepages-1048576kB/free_hugepages", "2\n");  // one size is enough
  CHECK(check_free_hugepages(sys.path.string()));

  auto missing = check_free_hugepages((sys / "absent").string());
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Catch::Contains("lists no size"));
}
