#pragma once
// What can be read of the node through its read-only host mount.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kmodkit::init::host {

namespace fs = std::filesystem;

struct OsInfo {
  std::string id;          // "debian", "ubuntu", "rhcos", "rhel", "fedora", "flatcar"; "" unknown
  std::string id_like;     // "rhel fedora"
  std::string version_id;  // "12", "4.14"
  std::string rhel_version;  // RHCOS's RHEL_VERSION ("9.4"): its VERSION_ID is OpenShift's
  std::string origin;      // the file it was read from
  bool debian_family() const;
  bool rhel_family() const;
  std::string describe() const;  // "debian 12" or "unknown"
};

// Reads <root>/etc/os-release, else <root>/usr/lib/os-release.
OsInfo read_os_release(const fs::path& root);
// OsInfo for an ID given by the user ("ubuntu"); families follow from the ID.
OsInfo os_from_id(std::string_view id);

// Resolves `rel` inside `root` as if `root` were "/": symlinks are followed (absolute targets
// from `root`), ".." stops at `root`. Returns the resolved path relative to `root`, or nullopt
// when it does not exist.
std::optional<std::string> resolve_in_root(const fs::path& root, std::string_view rel);

}  // namespace kmodkit::init::host
