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
