#pragma once
// Binding PCI devices (the pod's VFs) to the driver the data plane needs, through sysfs:
// driver_override, unbind, drivers_probe; and giving them back to the driver they had.
// Every path takes a root, so the logic runs on fixture trees in tests.

#include <filesystem>
#include <string>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

struct BindConfig {
  fs::path sysfs = "/sys";
  fs::path dev = "/dev";
  fs::path proc = "/proc";
  fs::path state_dir;                // where the original drivers are remembered
  fs::path volume = "/modules";      // whose modules tree an in-tree driver is loaded from
  std::string kernel_release;        // of the running kernel (uname -r)
  std::vector<std::string> devices;  // PCI addresses; empty: those in PCIDEVICE_* variables
  std::string driver = "igb_uio";    // igb_uio, vfio-pci, uio_pci_generic
  bool dry_run = false;
  double settle_s = 3;               // how long to wait for /dev/uioN or /dev/vfio/N
};

// The PCI addresses the SR-IOV device plugin gave the container: every PCIDEVICE_<RESOURCE>
// variable (comma-separated addresses); PCIDEVICE_<RESOURCE>_INFO JSON is not an address list.
std::vector<std::string> devices_from_environment();

// Binds each device to config.driver, idempotently, remembering its original driver. An in-tree
// driver (vfio-pci, uio_pci_generic) that is not loaded is loaded first from the volume's modules
// tree (load_in_tree); igb_uio is kmod-builder load's to load. Refuses a
// device that carries a route of the host or whose interface is up (78), and for vfio-pci an
// IOMMU group with a member on another driver (78). Checks that /dev/uioN (igb_uio,
// uio_pci_generic) or /dev/vfio/<group> (vfio-pci) appears.
Result<void> bind_devices(const BindConfig& config);

// Gives each device back to the driver it had before bind_devices (or to whatever driver the
// kernel picks when none was remembered).
Result<void> unbind_devices(const BindConfig& config);

}  // namespace kmodkit::kmod_builder
