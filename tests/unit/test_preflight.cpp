// firewall preflight on fixture trees of /proc, /sys and /dev: each check's pass, warn and fail.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "helpers.hpp"
#include "preflight.hpp"

using namespace kmodkit;
using namespace kmodkit::firewall;
namespace fs = std::filesystem;

namespace {

// A node as a container sees it, in a temporary directory: by default a well-tuned one. Two NUMA
// nodes of 8 CPUs (0-7 node 0, 8-15 node 1; CPU n's hyperthread sibling is n^1), CPUs 2-7 and
// 10-15 isolated, the container on 2-5; two VFs on node 0 on vfio-pci, each in an IOMMU group of
// its own with its /dev/vfio node; 512 free 2 MiB pages on node 0, the container allowed 1 GiB
// of them; an Intel IOMMU on; signatures enforced; no lockdown.
struct FakeNode {
  kmodkit::test::TempDir tmp;
  std::string root = tmp.path.string();

  void file(const std::string& rel, const std::string& content) {
    fs::create_directories((tmp.path / rel).parent_path());
    kmodkit::test::write_file(tmp.path / rel, content + "\n");
  }
  void link(const std::string& rel, const std::string& target) {
    fs::create_directories((tmp.path / rel).parent_path());
    fs::remove(tmp.path / rel);
    fs::create_symlink(target, tmp.path / rel);
  }
  void cpuset(const std::string& list) { file("proc/self/status", "Name:\tfirewall\nCpus_allowed_list:\t" + list + "\nMems_allowed_list:\t0-1"); }
  void vf(const std::string& addr, int node, const std::string& driver, int group) {
    const std::string dev = "sys/bus/pci/devices/" + addr;
    file(dev + "/numa_node", std::to_string(node));
    if (!driver.empty()) link(dev + "/driver", "../../../bus/pci/drivers/" + driver);
    if (group >= 0) {
      link(dev + "/iommu_group", "../../../kernel/iommu_groups/" + std::to_string(group));
      link("sys/kernel/iommu_groups/" + std::to_string(group) + "/devices/" + addr, "../../../../bus/pci/devices/" + addr);
      file("sys/kernel/iommu_groups/" + std::to_string(group) + "/type", "DMA-FQ");
      file("dev/vfio/" + std::to_string(group), "");
    }
  }
  void free_pages(int node, int pages) {
    file("sys/devices/system/node/node" + std::to_string(node) + "/hugepages/hugepages-2048kB/free_hugepages", std::to_string(pages));
  }

  FakeNode() {
    file("sys/devices/system/cpu/online", "0-15");
    file("sys/devices/system/cpu/isolated", "2-7,10-15");
    for (int cpu = 0; cpu < 16; ++cpu) {
      const int lo = cpu & ~1;
      file("sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list",
           std::to_string(lo) + "-" + std::to_string(lo + 1));
    }
    file("sys/devices/system/node/node0/cpulist", "0-7");
    file("sys/devices/system/node/node1/cpulist", "8-15");
    cpuset("2-5");
    file("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on isolcpus=2-7,10-15 hugepages=1024");
    file("proc/meminfo", "MemTotal:       65536000 kB\nHugepagesize:       2048 kB");
    file("proc/mounts", "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0");
    file("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "512");
    free_pages(0, 512);
    free_pages(1, 0);
    file("sys/fs/cgroup/hugetlb.2MB.max", std::to_string(1ULL << 30));
    file("sys/class/iommu/dmar0/uevent", "");
    file("sys/module/module/parameters/sig_enforce", "Y");
    file("sys/kernel/security/lockdown", "[none] integrity confidentiality");
    file("dev/vfio/vfio", "");
    vf("0000:af:06.0", 0, "vfio-pci", 61);
    vf("0000:af:06.1", 0, "vfio-pci", 62);
  }

  Demand demand() const {
    Demand d;
    d.ports = {"0000:af:06.0", "0000:af:06.1"};
    d.driver = "vfio-pci";
    d.cpu_request = 4;
    d.flows = 1 << 20;
    d.huge_dir = "/dev/hugepages";
    return d;
  }
};

const Check& named(const std::vector<Check>& checks, const std::string& name) {
  for (const auto& c : checks) {
    if (c.name == name) return c;
  }
  FAIL("no check " << name);
  return checks.front();
}

}  // namespace

TEST_CASE("a well-tuned node passes every check, each with its evidence", "[unit][preflight]") {
  FakeNode n;
  const auto checks = run_preflight(n.root, n.demand());
  INFO(format_report(checks));
  CHECK(worst(checks) == Outcome::pass);
  REQUIRE(checks.size() == 7);
  CHECK(named(checks, "cpus").evidence == "cpuset 2-5 (4 CPUs) of the node's 0-15, isolated (2-7,10-15), whole cores, exclusive");
  CHECK(named(checks, "numa").evidence == "CPUs and VFs on node 0, free hugepages on node 0");
  CHECK_THAT(named(checks, "hugepages").evidence,
             Catch::StartsWith("the firewall needs about 284 MiB of 2 MiB pages (1048576 flows, 2 ports, 3 workers); "
                               "the container may use 1024 MiB (hugetlb.2MB.max), the node has 1024 MiB free"));
  CHECK(named(checks, "device 0000:af:06.0").evidence == "0000:af:06.0 on vfio-pci, IOMMU group 61 of its own, /dev/vfio/61 present");
  CHECK(named(checks, "iommu").evidence == "IOMMU on (dmar0); intel_iommu=on");
  CHECK_THAT(named(checks, "module-signatures").evidence, Catch::StartsWith("sig_enforce=Y: only modules signed") && Catch::EndsWith("; lockdown=none"));
  for (const auto& c : checks) CHECK(c.fix.empty());
}

TEST_CASE("CPUs that are shared, split across cores, too many or not isolated are warnings with a fix", "[unit][preflight]") {
  const struct {
    const char* cpuset;
    const char* evidence;
    const char* fix;
  } cases[] = {
      {"0-15", "not pinned: the container may run on every CPU of the node", "cpuManagerPolicy: static"},  // the shared pool
      {"2-7", "the container asks for 4 CPUs, its cpuset has 6", "requests = limits"},
      {"3-6", "not whole cores: CPU 3's sibling 2 and 1 more are outside the cpuset", "full-pcpus-only"},  // half a core
      {"0-3", "CPUs 0-1 are not among the isolated CPUs 2-7,10-15", "reservedSystemCPUs"},
  };
  for (const auto& k : cases) {
    FakeNode n;
    n.cpuset(k.cpuset);
    const auto c = named(run_preflight(n.root, n.demand()), "cpus");
    INFO("cpuset " << k.cpuset << ": " << c.evidence);
    CHECK(c.outcome == Outcome::warn);
    CHECK_THAT(c.evidence, Catch::Contains(k.evidence));
    CHECK_THAT(c.fix, Catch::Contains(k.fix));
  }
}

TEST_CASE("a VF, CPUs or hugepages on another NUMA node are a warning naming both nodes", "[unit][preflight]") {
  FakeNode n;
  SECTION("a VF on node 1") {
    n.vf("0000:af:06.1", 1, "vfio-pci", 62);
    const auto c = named(run_preflight(n.root, n.demand()), "numa");
    CHECK(c.outcome == Outcome::warn);
    CHECK(c.evidence == "VF 0000:af:06.1 is on NUMA node 1, the CPUs 2-5 on node 0");
    CHECK_THAT(c.fix, Catch::Contains("single-numa-node"));
  }
  SECTION("the free hugepages on node 1 only") {
    n.free_pages(0, 0);
    n.free_pages(1, 512);
    const auto c = named(run_preflight(n.root, n.demand()), "numa");
    CHECK(c.outcome == Outcome::warn);
    CHECK(c.evidence == "the free 2 MiB hugepages are on node 1, the CPUs on node 0");
  }
  SECTION("CPUs on both nodes") {
    n.cpuset("6-9");
    const auto c = named(run_preflight(n.root, n.demand()), "numa");
    CHECK(c.outcome == Outcome::warn);
    CHECK_THAT(c.evidence, Catch::Contains("the CPUs 6-9 span nodes 0-1"));
  }
  SECTION("a firmware that gives no locality (numa_node -1) is not a finding") {
    n.vf("0000:af:06.1", -1, "vfio-pci", 62);
    CHECK(named(run_preflight(n.root, n.demand()), "numa").outcome == Outcome::pass);
  }
}

TEST_CASE("too few hugepages for the pod, or a hugepage mount that is not one, fail", "[unit][preflight]") {
  FakeNode n;
  SECTION("the container's hugetlb limit is below the need") {
    n.file("sys/fs/cgroup/hugetlb.2MB.max", std::to_string(128ULL << 20));
    const auto c = named(run_preflight(n.root, n.demand()), "hugepages");
    CHECK(c.outcome == Outcome::fail);
    CHECK_THAT(c.evidence, Catch::Contains("the container may use 128 MiB (hugetlb.2MB.max)"));
    CHECK_THAT(c.fix, Catch::Contains("hugepages-2Mi"));
    // Fewer flows fit.
    Demand d = n.demand();
    d.flows = 65536;
    CHECK(named(run_preflight(n.root, d), "hugepages").outcome == Outcome::pass);
  }
  SECTION("the node has too few free pages") {
    n.file("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "16");
    CHECK(named(run_preflight(n.root, n.demand()), "hugepages").outcome == Outcome::fail);
  }
  SECTION("the hugepage directory is not a hugetlbfs mount") {
    n.file("proc/mounts", "tmpfs /dev/hugepages tmpfs rw 0 0");
    const auto c = named(run_preflight(n.root, n.demand()), "hugepages");
    CHECK(c.outcome == Outcome::fail);
    CHECK(c.evidence == "/dev/hugepages is a tmpfs mount, not hugetlbfs");
  }
  SECTION("1 GiB pages, as the mount's pagesize says") {
    n.file("proc/mounts", "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1G 0 0");
    n.file("sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "2");
    n.file("sys/fs/cgroup/hugetlb.1GB.max", "max");
    const auto c = named(run_preflight(n.root, n.demand()), "hugepages");
    CHECK(c.outcome == Outcome::pass);
    CHECK_THAT(c.evidence, Catch::Contains("of 1 GiB pages") && Catch::Contains("the node has 2048 MiB free"));
  }
}

TEST_CASE("a VF on the wrong driver, without its vfio group node or sharing its group is named with the fix", "[unit][preflight]") {
  FakeNode n;
  SECTION("on the kernel's driver") {
    n.vf("0000:af:06.0", 0, "iavf", -1);
    const auto c = named(run_preflight(n.root, n.demand()), "device 0000:af:06.0");
    CHECK(c.outcome == Outcome::fail);
    CHECK(c.evidence == "0000:af:06.0 is bound to iavf, the firewall needs vfio-pci");
    CHECK(c.fix == "run kmod-builder bind with KMODKIT_DRIVER=vfio-pci before the firewall");
  }
  SECTION("the container lacks /dev/vfio/N") {
    fs::remove(n.tmp.path / "dev/vfio/62");
    const auto c = named(run_preflight(n.root, n.demand()), "device 0000:af:06.1");
    CHECK(c.outcome == Outcome::fail);
    CHECK_THAT(c.evidence, Catch::EndsWith("but the container has no /dev/vfio/62"));
  }
  SECTION("another device in the group") {
    n.link("sys/kernel/iommu_groups/61/devices/0000:af:00.0", "../../../../bus/pci/devices/0000:af:00.0");
    n.link("sys/bus/pci/devices/0000:af:00.0/driver", "../../../bus/pci/drivers/ice");
    const auto c = named(run_preflight(n.root, n.demand()), "device 0000:af:06.0");
    CHECK(c.outcome == Outcome::warn);
    CHECK_THAT(c.evidence, Catch::Contains("IOMMU group 61 shared with 0000:af:00.0 (ice)"));
  }
  SECTION("not on the bus") {
    Demand d = n.demand();
    d.ports.push_back("0000:b0:00.0");
    CHECK(named(run_preflight(n.root, d), "device 0000:b0:00.0").outcome == Outcome::fail);
  }
  SECTION("igb_uio with its /dev/uioN") {
    n.vf("0000:af:06.0", 0, "igb_uio", -1);
    n.file("sys/bus/pci/devices/0000:af:06.0/uio/uio0/name", "igb_uio");
    n.file("dev/uio0", "");
    Demand d = n.demand();
    d.driver = "";
    const auto c = named(run_preflight(n.root, d), "device 0000:af:06.0");
    CHECK(c.outcome == Outcome::pass);
    CHECK(c.evidence == "0000:af:06.0 on igb_uio, /dev/uio0 present");
    fs::remove(n.tmp.path / "dev/uio0");
    const auto without = named(run_preflight(n.root, d), "device 0000:af:06.0");
    CHECK(without.outcome == Outcome::warn);
    CHECK(without.evidence == "0000:af:06.0 on igb_uio, no /dev/uio0 in this container");
  }
}

TEST_CASE("without --driver, a port must be on a driver DPDK drives, and the IOMMU checks follow the drivers bound", "[unit][preflight]") {
  FakeNode n;
  Demand d = n.demand();
  d.driver = "";
  CHECK(worst(run_preflight(n.root, d)) == Outcome::pass);
  n.vf("0000:af:06.0", 0, "iavf", -1);
  auto c = named(run_preflight(n.root, d), "device 0000:af:06.0");
  CHECK(c.outcome == Outcome::fail);
  CHECK(c.evidence == "0000:af:06.0 is bound to iavf, a kernel network driver DPDK cannot share");
  n.vf("0000:af:06.0", 0, "mlx5_core", -1);  // bifurcated: DPDK's mlx5 driver works beside it
  CHECK(named(run_preflight(n.root, d), "device 0000:af:06.0").outcome == Outcome::pass);
  // Both on igb_uio, behind the IOMMU that translates: the iommu check fails as for --driver igb_uio.
  n.vf("0000:af:06.0", 0, "igb_uio", 61);
  n.vf("0000:af:06.1", 0, "igb_uio", 62);
  CHECK(named(run_preflight(n.root, d), "iommu").outcome == Outcome::fail);
}

TEST_CASE("the IOMMU must be on for vfio-pci and pass addresses through for igb_uio", "[unit][preflight]") {
  FakeNode n;
  SECTION("vfio-pci without an IOMMU") {
    fs::remove_all(n.tmp.path / "sys/class/iommu");
    n.file("proc/cmdline", "root=/dev/sda1");
    const auto c = named(run_preflight(n.root, n.demand()), "iommu");
    CHECK(c.outcome == Outcome::fail);
    CHECK(c.evidence == "no IOMMU (none in /sys/class/iommu); no IOMMU option on the kernel command line");
  }
  Demand uio = n.demand();
  uio.driver = "igb_uio";
  SECTION("igb_uio behind a translating IOMMU") {
    const auto c = named(run_preflight(n.root, uio), "iommu");
    CHECK(c.outcome == Outcome::fail);
    CHECK_THAT(c.evidence, Catch::EndsWith("; 0000:af:06.0's DMA is translated"));
    CHECK_THAT(c.fix, Catch::Contains("iommu=pt"));
  }
  SECTION("igb_uio with iommu=pt (identity domains)") {
    n.file("proc/cmdline", "intel_iommu=on iommu=pt");
    n.file("sys/kernel/iommu_groups/61/type", "identity");
    n.file("sys/kernel/iommu_groups/62/type", "identity");
    const auto c = named(run_preflight(n.root, uio), "iommu");
    CHECK(c.outcome == Outcome::pass);
    CHECK(c.evidence == "IOMMU on (dmar0); intel_iommu=on iommu=pt");
  }
}

TEST_CASE("a locked-down kernel fails igb_uio; the signature policy is stated", "[unit][preflight]") {
  FakeNode n;
  n.file("sys/kernel/security/lockdown", "none [integrity] confidentiality");
  Demand uio = n.demand();
  uio.driver = "igb_uio";
  const auto c = named(run_preflight(n.root, uio), "module-signatures");
  CHECK(c.outcome == Outcome::fail);
  CHECK_THAT(c.evidence, Catch::EndsWith("; lockdown=integrity"));
  CHECK_THAT(c.fix, Catch::Contains("use vfio-pci"));
  CHECK(named(run_preflight(n.root, n.demand()), "module-signatures").outcome == Outcome::pass);
  n.file("sys/module/module/parameters/sig_enforce", "N");
  CHECK_THAT(named(run_preflight(n.root, n.demand()), "module-signatures").evidence, Catch::StartsWith("sig_enforce=N: unsigned modules load"));
}

TEST_CASE("the report is a line per check with its fix, and a summary; or one JSON object", "[unit][preflight]") {
  FakeNode n;
  n.vf("0000:af:06.1", 1, "vfio-pci", 62);
  n.file("sys/fs/cgroup/hugetlb.2MB.max", std::to_string(64ULL << 20));
  const auto checks = run_preflight(n.root, n.demand());
  const std::string text = format_report(checks);
  CHECK_THAT(text, Catch::Contains("warn  numa: VF 0000:af:06.1 is on NUMA node 1, the CPUs 2-5 on node 0\n      fix: set the kubelet's"));
  CHECK_THAT(text, Catch::Contains("fail  hugepages: "));
  CHECK_THAT(text, Catch::EndsWith("preflight: 1 fail, 1 warn, 5 pass\n"));
  const auto doc = nlohmann::json::parse(format_report_json(checks));
  CHECK(doc["verdict"] == "fail");
  REQUIRE(doc["checks"].size() == 7);
  CHECK(doc["checks"][1]["check"] == "numa");
  CHECK(doc["checks"][1]["verdict"] == "warn");
  CHECK(doc["checks"][0]["fix"] == "");
}
