#pragma once
// The modules volume: manifests, the lock, staging, and placing a finished tree.

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kmodkit/files.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::init {

namespace fs = std::filesystem;

// A package (or archive) a tree was made from.
struct PackageRecord {
  std::string name, version, sha256, url;
  uint64_t size = 0;
};

// <vol>/.kmodkit/kernels/<kver>.json: what a complete tree holds and where it came from.
// Written last; a tree without one is not trusted.
struct Manifest {
  static constexpr int kFormat = 1;
  std::string kernel_release;
  std::string os;                  // os-release ID and VERSION_ID, "debian 12"
  std::string source;              // "apt", "host", "kheaders", "archive"
  std::string location;            // where that source found it
  std::vector<PackageRecord> packages;
  std::string headers;             // relative to the volume
  std::string modules;             // relative to the volume; "" when no modules tree
  uint64_t files = 0, bytes = 0;
  double seconds = 0;
  std::string created;             // RFC 3339, UTC

  std::string to_json() const;
  // Parses a manifest; data error (65) naming `origin` when it is not one.
  static Result<Manifest> from_json(std::string_view text, const std::string& origin);
};

class Volume {
 public:
  explicit Volume(fs::path root) : root_(std::move(root)) {}
  const fs::path& root() const { return root_; }
  fs::path state_dir() const { return root_ / ".kmodkit"; }
  fs::path manifest_path(std::string_view kernel_release) const;
  fs::path staging_dir() const { return state_dir() / "staging"; }

  // The manifest of a complete tree for the release: it parses, names the release, and the
  // paths it lists exist. Otherwise nullopt, with the reason in `why_not`.
  std::optional<Manifest> complete_tree(std::string_view kernel_release, std::string* why_not) const;

  // Creates the toolkit's directories and the merged-/usr `lib` link; cannot create (73) when
  // the volume is read-only or missing.
  Result<void> prepare() const;
  // Takes .kmodkit/lock, waiting at most `timeout`.
  Result<files::FileLock> lock(std::chrono::milliseconds timeout) const;
  // Removes what an interrupted run left in staging. Only under the lock.
  Result<void> clear_staging() const;
  // Moves a finished staged tree into place: each path that does not exist yet in the volume is
  // renamed there whole (so nothing is ever seen half-written); existing directories are
  // entered; an existing file or link is kept. Returns the paths placed.
  Result<std::vector<std::string>> place(const fs::path& staged_root) const;
  Result<void> write_manifest(const Manifest& manifest) const;

 private:
  fs::path root_;
};

}  // namespace kmodkit::init
