#pragma once
// How a kernel's files are laid out on the modules volume (ARCHITECTURE.md): merged /usr,
// the headers tree and its `build` link, and what a module build needs from it.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/archive.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::init::layout {

namespace fs = std::filesystem;

// Merged /usr: "lib/modules/x" -> "usr/lib/modules/x"; other paths unchanged.
std::string relocate_merged_usr(std::string_view path);
// Documentation and manual pages are left out of the volume.
bool wanted(std::string_view path);
// The extraction policy for a staging root: merged /usr, no documentation.
archive::Policy policy(const fs::path& staged_root);

// What a staged tree offers for one kernel release.
struct Headers {
  std::string dir;                   // headers tree, relative to the root ("" when none found)
  std::vector<std::string> missing;  // what a module build needs and the tree lacks
  bool complete() const { return !dir.empty() && missing.empty(); }
  std::string describe_missing() const;  // "Makefile, scripts/mod/modpost"
};

// Finds the headers of `kernel_release` under `root` (through usr/lib/modules/<kver>/build, or
// the RHEL and Debian places) and lists what a module build would miss.
Headers find_headers(const fs::path& root, std::string_view kernel_release);

// Finishes a staged tree so stock tools work on it inside the volume: the `build` link, a
// Makefile that includes by absolute path (Debian's) made relative, the `lib` link, and
// modules.dep when a modules tree came without one (depmod -b).
Result<void> finish(const fs::path& root, std::string_view kernel_release, const Headers& headers);

// Whether the tree under `root` has a modules tree for the release (modules.order,
// modules.dep or a kernel/ directory).
bool has_modules_tree(const fs::path& root, std::string_view kernel_release);

// What the tree under `root` holds, counted on disk (files, directories, symlinks, bytes of
// regular files), so a manifest describes exactly what is there. Input missing (66) when it
// cannot be read.
Result<archive::Stats> measure(const fs::path& root);

}  // namespace kmodkit::init::layout
