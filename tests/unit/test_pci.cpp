// Binding and policy logic on fixture sysfs trees laid out as a real kernel's (the QEMU test,
// tests/qemu/load-test.sh, runs the same code on a real one).
#include <catch2/catch.hpp>

#include <cstdlib>

#include "helpers.hpp"
#include "load.hpp"
#include "pci.hpp"

using namespace kmodkit;
using namespace kmodkit::kmod_builder;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr const char* kNic = "0000:00:03.0";

// /sys as a 6.1 guest with an e1000 NIC at 00:03.0 has it: the device under devices/, linked
// from bus/pci/devices, its driver and IOMMU group as relative links, its interface under net/.
struct FakeSys {
  TempDir tmp;
  fs::path sys = tmp / "sys", dev = tmp / "dev", proc = tmp / "proc";
  fs::path device = sys / "devices/pci0000:00" / kNic;
  FakeSys() {
    fs::create_directories(sys / "bus/pci/devices");
    fs::create_directories(device / "net/eth0");
    fs::create_directories(sys / "bus/pci/drivers/e1000");
    fs::create_directories(sys / "bus/pci/drivers/igb_uio");
    fs::create_directories(sys / "bus/pci/drivers/vfio-pci");
    fs::create_directories(sys / "class/net/eth0");
    fs::create_directories(dev);
    fs::create_symlink("../../../devices/pci0000:00/" + std::string(kNic), sys / "bus/pci/devices" / kNic);
    test::write_file(device / "driver_override", "(null)\n");
    test::write_file(sys / "bus/pci/drivers_probe", "");
    test::write_file(sys / "bus/pci/drivers/e1000/unbind", "");
    test::write_file(sys / "bus/pci/drivers/e1000/bind", "");
    test::write_file(sys / "class/net/eth0/flags", "0x1002\n");  // down
    test::write_file(proc / "net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n");
    set_driver("e1000");
  }
  void set_driver(const std::string& d) {
    fs::remove(device / "driver");
    if (!d.empty()) fs::create_symlink("../../../bus/pci/drivers/" + d, device / "driver");
  }
  BindConfig config(const std::string& driver = "igb_uio") const {
    BindConfig c;
    c.sysfs = sys;
    c.dev = dev;
    c.proc = proc;
    c.state_dir = tmp / "state";
    c.devices = {kNic};
    c.driver = driver;
    c.settle_s = 0.2;
    return c;
  }
};

}  // namespace

TEST_CASE("a device whose interface is up or carries a host route is not taken", "[unit][pci]") {
  FakeSys f;
  test::write_file(f.sys / "class/net/eth0/flags", "0x1003\n");
  auto up = bind_devices(f.config());
  REQUIRE_FALSE(up);
  CHECK(up.error().code == ExitCode::config);
  CHECK_THAT(up.error().message, Catch::Contains("is in use: its interface eth0 is up"));

  test::write_file(f.sys / "class/net/eth0/flags", "0x1002\n");
  test::write_file(f.proc / "net/route", "Iface\tDestination\tGateway\nenp0s3\t00000000\t0202000A\neth0\t0002000A\t00000000\n");
  auto route = bind_devices(f.config());
  REQUIRE_FALSE(route);
  CHECK_THAT(route.error().message, Catch::Contains("carries a route of the host on eth0"));
  CHECK(test::read_file(f.device / "driver_override") == "(null)\n");  // nothing written
}

TEST_CASE("binding writes driver_override, unbind and drivers_probe, and remembers the driver", "[unit][pci]") {
  FakeSys f;
  // A fixture kernel does not move the device: the step must notice the driver did not take it.
  auto r = bind_devices(f.config());
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::unavailable);
  CHECK_THAT(r.error().message, Catch::Contains("igb_uio did not take 0000:00:03.0") && Catch::Contains("now on e1000"));
  CHECK(test::read_file(f.device / "driver_override") == "igb_uio\n");
  CHECK(test::read_file(f.sys / "bus/pci/drivers/e1000/unbind") == std::string(kNic) + "\n");
  CHECK(test::read_file(f.sys / "bus/pci/drivers_probe") == std::string(kNic) + "\n");
  CHECK_THAT(test::read_file(f.tmp / "state" / (std::string(kNic) + ".json")), Catch::Contains("\"driver\":\"e1000\""));

  // Bound, with its uio node: a second run changes nothing.
  f.set_driver("igb_uio");
  fs::create_directories(f.device / "uio/uio0");
  test::write_file(f.dev / "uio0", "");
  test::write_file(f.sys / "bus/pci/drivers_probe", "");
  auto again = bind_devices(f.config());
  REQUIRE(again);
  CHECK(test::read_file(f.sys / "bus/pci/drivers_probe").empty());

  // Unbind gives it back to the remembered driver through its bind file.
  fs::remove(f.device / "driver");
  auto back = unbind_devices(f.config());
  REQUIRE_FALSE(back);  // the fixture does not rebind either
  CHECK(test::read_file(f.sys / "bus/pci/drivers/e1000/bind") == std::string(kNic) + "\n");
  CHECK(test::read_file(f.device / "driver_override") == "\n");
  CHECK_THAT(back.error().message, Catch::Contains("did not go back to e1000"));
}

TEST_CASE("vfio-pci needs every device of the IOMMU group on vfio-pci or on no driver", "[unit][pci]") {
  FakeSys f;
  fs::create_directories(f.sys / "kernel/iommu_groups/7/devices");
  fs::create_symlink("../../../kernel/iommu_groups/7", f.device / "iommu_group");
  fs::create_symlink("../../../../devices/pci0000:00/" + std::string(kNic), f.sys / "kernel/iommu_groups/7/devices" / kNic);
  const fs::path sibling = f.sys / "devices/pci0000:00/0000:00:03.1";
  fs::create_directories(sibling);
  fs::create_symlink("../../../devices/pci0000:00/0000:00:03.1", f.sys / "bus/pci/devices/0000:00:03.1");
  fs::create_symlink("../../../bus/pci/drivers/e1000", sibling / "driver");
  fs::create_symlink("../../../../devices/pci0000:00/0000:00:03.1", f.sys / "kernel/iommu_groups/7/devices/0000:00:03.1");
  auto r = bind_devices(f.config("vfio-pci"));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::config);
  CHECK_THAT(r.error().message, Catch::Contains("shares IOMMU group 7 with 0000:00:03.1, which is bound to e1000"));

  auto no_group = FakeSys();
  auto g = bind_devices(no_group.config("vfio-pci"));
  REQUIRE_FALSE(g);
  CHECK_THAT(g.error().message, Catch::Contains("has no IOMMU group"));
}

TEST_CASE("bad addresses, missing devices and drivers are named", "[unit][pci]") {
  FakeSys f;
  auto c = f.config();
  c.devices = {"00:03.0"};
  auto bad = bind_devices(c);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ExitCode::usage);
  c.devices = {"0000:00:09.0"};
  auto missing = bind_devices(c);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == ExitCode::no_input);
  fs::remove_all(f.sys / "bus/pci/drivers/igb_uio");
  auto no_driver = bind_devices(f.config("igb_uio"));
  REQUIRE_FALSE(no_driver);
  CHECK(no_driver.error().code == ExitCode::unavailable);
  CHECK_THAT(no_driver.error().message, Catch::Contains("driver igb_uio is not loaded") && Catch::Contains("kmod-builder load first"));
  // An in-tree driver is loaded from the volume's modules tree; this volume has none.
  auto in_tree = f.config("uio_pci_generic");
  in_tree.volume = f.tmp / "volume";
  in_tree.kernel_release = "6.1.0-99-amd64";
  auto no_tree = bind_devices(in_tree);
  REQUIRE_FALSE(no_tree);
  INFO(no_tree.error().message);
  CHECK(no_tree.error().code == ExitCode::no_input);
  CHECK_THAT(no_tree.error().message, Catch::Contains("6.1.0-99-amd64"));
}

TEST_CASE("the SR-IOV device plugin's PCIDEVICE_ variables name the devices", "[unit][pci]") {
  ::setenv("PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE", "0000:3b:02.1,0000:3b:02.0", 1);
  ::setenv("PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE_INFO", R"({"0000:3b:02.0":{"generic":{"deviceID":"0000:3b:02.0"}}})", 1);
  CHECK(devices_from_environment() == std::vector<std::string>{"0000:3b:02.0", "0000:3b:02.1"});
  ::unsetenv("PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE");
  ::unsetenv("PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE_INFO");
}

TEST_CASE("the node's signature policy is read from sysfs and securityfs", "[unit][policy]") {
  TempDir tmp;
  auto open = read_policy(tmp / "sys", tmp / "security");
  CHECK_FALSE(open.sig_enforce);
  CHECK_FALSE(open.lockdown_known);
  test::write_file(tmp / "sys/module/module/parameters/sig_enforce", "Y\n");
  test::write_file(tmp / "security/lockdown", "none [integrity] confidentiality\n");
  auto locked = read_policy(tmp / "sys", tmp / "security");
  CHECK(locked.sig_enforce);
  CHECK(locked.lockdown == "integrity");
  CHECK(locked.describe() == "module.sig_enforce=1, lockdown=integrity");
  test::write_file(tmp / "keys", "1f5d9c5e I------     1 perm 1f030000     0     0 asymmetric Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1 X509.rsa a7046f8a []\n");
  CHECK(kernel_knows_signer(tmp / "keys", "Debian Secure Boot CA") == std::optional<bool>(true));
  CHECK(kernel_knows_signer(tmp / "keys", "kmodkit test key") == std::optional<bool>(false));
  CHECK_FALSE(kernel_knows_signer(tmp / "no-keys", "x").has_value());
}
