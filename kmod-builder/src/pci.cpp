#include "pci.hpp"

#include <fcntl.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/text.hpp"
#include "load.hpp"

extern char** environ;

namespace kmodkit::kmod_builder {
namespace {

using json = nlohmann::json;

bool valid_address(const std::string& a) {
  static const std::regex re("^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\\.[0-7]$");
  return std::regex_match(a, re);
}

fs::path device_dir(const BindConfig& c, const std::string& a) { return c.sysfs / "bus/pci/devices" / a; }

// The driver a device is bound to, or "".
std::string current_driver(const BindConfig& c, const std::string& a) {
  std::error_code ec;
  const auto target = fs::read_symlink(device_dir(c, a) / "driver", ec);
  return ec ? "" : target.filename().string();
}

std::string read_trimmed(const fs::path& p) {
  auto t = files::read_file(p, 1 << 20);
  return t ? std::string(text::trim(*t)) : "";
}

// sysfs attributes are written whole and in place (as the shell's echo > does), never through a temporary file.
Result<void> write_attr(const fs::path& p, const std::string& value) {
  auto fd = KK_TRY(files::open_file(p, O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (int err = files::write_all(fd.get(), value.data(), value.size()); err != 0) {
    return fail(files::errno_error("write '" + std::string(text::trim(value)) + "' to " + p.string(), err, ExitCode::software));
  }
  return {};
}

std::vector<std::string> interfaces(const BindConfig& c, const std::string& a) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(device_dir(c, a) / "net", ec)) out.push_back(e.path().filename().string());
  return out;
}

// Why the device must not be taken, or "".
std::string in_use(const BindConfig& c, const std::string& a) {
  const auto routes = files::read_file(c.proc / "net/route", 1 << 20);
  for (const auto& ifname : interfaces(c, a)) {
    if (routes) {
      for (auto line : text::split(*routes, "\n")) {
        auto fields = text::split_items(std::string(line), '\t');
        if (!fields.empty() && fields[0] == ifname) {
          return a + " carries a route of the host on " + ifname + " (" + (c.proc / "net/route").string() + ")";
        }
      }
    }
    const auto flags = read_trimmed(c.sysfs / "class/net" / ifname / "flags");
    if (!flags.empty() && (std::strtoul(flags.c_str(), nullptr, 16) & 0x1) != 0) {
      return a + " is in use: its interface " + ifname + " is up";
    }
  }
  return "";
}

std::string iommu_group(const BindConfig& c, const std::string& a) {
  std::error_code ec;
  const auto target = fs::read_symlink(device_dir(c, a) / "iommu_group", ec);
  return ec ? "" : target.filename().string();
}

// The device node the driver gives the device, once it is there.
Result<std::string> wait_for_node(const BindConfig& c, const std::string& a) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long long>(c.settle_s * 1000));
  std::string node;
  do {
    std::error_code ec;
    if (c.driver == "vfio-pci") {
      const auto group = iommu_group(c, a);
      if (!group.empty()) node = (c.dev / "vfio" / group).string();
    } else {
      for (const auto& e : fs::directory_iterator(device_dir(c, a) / "uio", ec)) node = (c.dev / e.path().filename()).string();
    }
    if (!node.empty() && fs::exists(node, ec)) return node;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  return fail(ExitCode::unavailable, a + " is bound to " + c.driver + " but " + (node.empty() ? "no device node" : node) +
                                         " did not appear within " + std::to_string(static_cast<int>(c.settle_s)) + " s");
}

fs::path state_file(const BindConfig& c, const std::string& a) { return c.state_dir / (a + ".json"); }

Result<std::vector<std::string>> addresses(const BindConfig& c) {
  auto list = c.devices.empty() ? devices_from_environment() : c.devices;
  if (list.empty()) return fail(ExitCode::usage, "no devices: give PCI addresses, or run where PCIDEVICE_* variables are set");
  for (const auto& a : list) {
    if (!valid_address(a)) return fail(ExitCode::usage, "'" + a + "' is not a PCI address (dddd:bb:dd.f)");
    std::error_code ec;
    if (!fs::is_directory(device_dir(c, a), ec)) {
      return fail(ExitCode::no_input, "PCI device " + a + " does not exist (" + device_dir(c, a).string() + ")");
    }
  }
  return list;
}

}  // namespace

std::vector<std::string> devices_from_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry = *e;
    const auto eq = entry.find('=');
    const std::string name = entry.substr(0, eq);
    if (!name.starts_with("PCIDEVICE_") || name.ends_with("_INFO") || eq == std::string::npos) continue;
    for (const auto& a : text::split_items(entry.substr(eq + 1), ',')) {
      if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> bind_devices(const BindConfig& c) {
  auto logger = log::get("kmod-builder");
  const auto list = KK_TRY(addresses(c));
  std::error_code ec;
  if (!fs::is_directory(c.sysfs / "bus/pci/drivers" / c.driver, ec)) {
    if (c.driver == "vfio-pci" || c.driver == "uio_pci_generic") {
      LoadConfig lc;
      lc.volume = c.volume;
      lc.kernel_release = c.kernel_release;
      lc.sysfs = c.sysfs;
      lc.dry_run = c.dry_run;
      KK_TRY(load_in_tree(lc, c.driver));
    } else if (!c.dry_run) {
      return fail(ExitCode::unavailable, "driver " + c.driver + " is not loaded (no " +
                                             (c.sysfs / "bus/pci/drivers" / c.driver).string() + "): kmod-builder load first");
    }
  }
  for (const auto& a : list) {
    const std::string was = current_driver(c, a);
    if (was == c.driver) {
      const auto node = KK_TRY(wait_for_node(c, a));
      logger->info("{}: already bound to {} ({})", a, c.driver, node);
      continue;
    }
    if (auto why = in_use(c, a); !why.empty()) return fail(ExitCode::config, "refusing to take " + why);
    if (c.driver == "vfio-pci") {
      const auto group = iommu_group(c, a);
      if (group.empty()) return fail(ExitCode::config, a + " has no IOMMU group: vfio-pci needs the IOMMU on (intel_iommu=on)");
      for (const auto& m : fs::directory_iterator(c.sysfs / "kernel/iommu_groups" / group / "devices", ec)) {
        const auto other = m.path().filename().string();
        const auto d = current_driver(c, other);
        if (other != a && !d.empty() && d != "vfio-pci" && std::find(list.begin(), list.end(), other) == list.end()) {
          return fail(ExitCode::config, a + " shares IOMMU group " + group + " with " + other + ", which is bound to " + d +
                                            ": every device of the group must be bound to vfio-pci or have no driver");
        }
      }
    }
    if (c.dry_run) {
      logger->info("dry run: would bind {} to {} (now {})", a, c.driver, was.empty() ? "no driver" : was);
      continue;
    }
    if (!fs::exists(state_file(c, a), ec)) {
      KK_TRY(files::make_dirs(c.state_dir));
      KK_TRY(files::write_file_atomic(state_file(c, a), json{{"address", a}, {"driver", was}}.dump() + "\n"));
    }
    KK_TRY(write_attr(device_dir(c, a) / "driver_override", c.driver + "\n"));
    if (!was.empty()) KK_TRY(write_attr(device_dir(c, a) / "driver/unbind", a + "\n"));
    KK_TRY(write_attr(c.sysfs / "bus/pci/drivers_probe", a + "\n"));
    if (current_driver(c, a) != c.driver) {
      return fail(ExitCode::unavailable, c.driver + " did not take " + a + " (it is now on " +
                                             (current_driver(c, a).empty() ? "no driver" : current_driver(c, a)) +
                                             "); the kernel log says why");
    }
    const auto node = KK_TRY(wait_for_node(c, a));
    logger->info("{}: bound to {} (was {}), {}", a, c.driver, was.empty() ? "no driver" : was, node);
  }
  return {};
}

Result<void> unbind_devices(const BindConfig& c) {
  auto logger = log::get("kmod-builder");
  const auto list = KK_TRY(addresses(c));
  for (const auto& a : list) {
    std::string original;
    bool remembered = false;
    if (auto text = files::read_file(state_file(c, a)); text) {
      json s = json::parse(*text, nullptr, false);
      if (!s.is_discarded() && s.is_object() && s.contains("driver") && s["driver"].is_string()) {
        original = s["driver"].get<std::string>();
        remembered = true;
      }
    }
    const std::string now = current_driver(c, a);
    if (c.dry_run) {
      logger->info("dry run: would give {} back to {} (now {})", a, original.empty() ? "the kernel's choice" : original,
                   now.empty() ? "no driver" : now);
      continue;
    }
    KK_TRY(write_attr(device_dir(c, a) / "driver_override", "\n"));
    if (!now.empty() && now != original) KK_TRY(write_attr(device_dir(c, a) / "driver/unbind", a + "\n"));
    if (current_driver(c, a).empty()) {
      if (!original.empty()) {
        KK_TRY(write_attr(c.sysfs / "bus/pci/drivers" / original / "bind", a + "\n"));
      } else {
        KK_TRY(write_attr(c.sysfs / "bus/pci/drivers_probe", a + "\n"));
      }
    }
    const std::string after = current_driver(c, a);
    if (remembered && after != original) {
      return fail(ExitCode::unavailable, a + " did not go back to " + (original.empty() ? "no driver" : original) +
                                             " (it is on " + (after.empty() ? "no driver" : after) + ")");
    }
    if (remembered) KK_TRY(files::remove_tree(state_file(c, a)));
    logger->info("{}: back on {} (was {})", a, after.empty() ? "no driver" : after, now.empty() ? "no driver" : now);
  }
  return {};
}

}  // namespace kmodkit::kmod_builder
