#pragma once
// Loading the installed modules into the running kernel with libkmod, and unloading them:
// the node's signature policy read first, the kernel's answers turned into sentences.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

// The node's module policy, from sysfs and securityfs.
struct KernelPolicy {
  bool sig_enforce = false;     // /sys/module/module/parameters/sig_enforce
  std::string lockdown = "none";  // the bracketed word of /sys/kernel/security/lockdown
  bool lockdown_known = false;
  std::string describe() const;
};
KernelPolicy read_policy(const fs::path& sysfs, const fs::path& securityfs);

// Whether the kernel holds a key whose description names the signer (a line of /proc/keys of
// type asymmetric containing it); nullopt when /proc/keys cannot be read.
std::optional<bool> kernel_knows_signer(const fs::path& proc_keys, const std::string& signer);

// The GNU build id of a module file (its .note.gnu.build-id) and of a loaded module
// (/sys/module/<name>/notes/.note.gnu.build-id), as hex; "" when there is none.
std::string build_id_of_file(const fs::path& ko);
std::string build_id_of_loaded(const fs::path& sysfs, const std::string& name);

struct LoadConfig {
  fs::path volume = "/modules";
  std::string kernel_release;
  std::vector<std::string> recipes;  // empty: every recipe installed for the kernel
  std::vector<std::string> params;   // "module.key=value" (or "key=value" with one module)
  fs::path sysfs = "/sys";
  fs::path securityfs = "/sys/kernel/security";
  fs::path proc_keys = "/proc/keys";
  bool replace = false;
  bool force = false;  // unload: even with devices bound
  bool dry_run = false;
};

// Loads each recipe's in-tree dependencies, then its modules, with the parameters from the
// recipe and the command line. A module already loaded from the same build (same build id) is
// fine; from another build it is an error (78) unless `replace`. The kernel's refusals map to
// exit codes: ENOKEY/EKEYREJECTED/EBADMSG and EPERM 77, ENOEXEC 65.
Result<void> load_modules(const LoadConfig& config);

// Loads an in-tree module by name (vfio-pci, uio_pci_generic: the drivers bind takes that the
// kernel ships) with what it depends on, soft dependencies included, from the volume's modules
// tree of config.kernel_release, as modprobe would; nothing when it is loaded already. Uses
// config's volume, kernel_release, sysfs, securityfs and dry_run. 66 when the tree has no such
// module; the kernel's refusals as load_modules maps them.
Result<void> load_in_tree(const LoadConfig& config, const std::string& name);

// Unloads each recipe's modules (not their in-tree dependencies), refusing while a device is
// bound to one of them unless `force`.
Result<void> unload_modules(const LoadConfig& config);

}  // namespace kmodkit::kmod_builder
