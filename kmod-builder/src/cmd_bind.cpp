// `kmod-builder bind` and `kmod-builder unbind`: their options, then pci.cpp's bind_devices or
// unbind_devices.
#include <string>
#include <vector>

#include "commands.hpp"
#include "pci.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {

int bind_main(int argc, char** argv) {
  const std::string sub = argv[0];
  BindConfig bc;
  fs::path volume = "/modules";
  const bool bind = sub == "bind";
  std::vector<cli::Option> options = {
      {"device", cli::Kind::list, "", "ADDRESS", "PCI addresses (default: those in the PCIDEVICE_* variables)",
       [&](const std::vector<std::string>& v) -> Result<void> {
         bc.devices = v;
         return {};
       }},
      {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume (the original drivers are kept in .kmodkit/bind)",
       cli::store(volume)},
      {"sysfs", cli::Kind::value, "/sys", "DIR", "sysfs of the node", cli::store(bc.sysfs)},
      {"dev", cli::Kind::value, "/dev", "DIR", "where device nodes appear", cli::store(bc.dev)},
      {"proc", cli::Kind::value, "/proc", "DIR", "procfs (routes)", cli::store(bc.proc)},
      {"dry-run", cli::Kind::flag, "", "", "say what would be done; change nothing", cli::store_flag(bc.dry_run)},
  };
  if (bind) {
    options.push_back({"driver", cli::Kind::value, "igb_uio", "DRIVER", "igb_uio, vfio-pci or uio_pci_generic",
                       cli::store(bc.driver)});
    options.push_back(release_option(bc.kernel_release, "the running kernel, whose modules tree on the volume an in-tree "
                                                        "driver (vfio-pci, uio_pci_generic) is loaded from (default: uname -r)"));
  }
  cli::Program program{"kmod-builder " + sub,
                       bind ? "Binds PCI devices to the data plane's driver through sysfs, remembering their driver."
                            : "Gives PCI devices back to the driver they had before bind.",
                       "Exit codes: 0 done, 64 usage, 66 no such device, 69 the driver did not take it, 78 refused "
                       "(route, up, IOMMU group).",
                       options};
  return cli::run_main(program, argc, argv, [&]() -> Result<void> {
    bc.state_dir = state_dir(volume) / "bind";
    bc.volume = volume;
    return bind ? bind_devices(bc) : unbind_devices(bc);
  });
}

}  // namespace kmodkit::kmod_builder
