#pragma once
// The volume contract (docs/ARCHITECTURE.md, "Volume"): what every kmodkit volume has (the state
// directory .kmodkit, its lock and its staging directory), and the modules volume's kernel trees
// (their layout, manifests, generations and how one is published). init-modules writes the
// modules volume, kmod-builder reads and adds to it, seed-data keeps its state on the data volume;
// all three meet here, so none depends on another.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/files.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::volume {

namespace fs = std::filesystem;

// "usr/lib/modules/<kver>": where a release's modules tree is, relative to the volume (merged /usr).
std::string modules_dir(std::string_view kernel_release);

// A kmodkit volume: a directory with the toolkit's state in .kmodkit/, where one lock orders the
// processes that write it and staging/ holds what they have not placed yet (on the volume itself,
// so placing it is a rename()).
class Volume {
 public:
  explicit Volume(fs::path root) : root_(std::move(root)) {}
  const fs::path& root() const { return root_; }
  fs::path state_dir() const { return root_ / ".kmodkit"; }
  fs::path staging_dir() const { return state_dir() / "staging"; }

  // Creates the staging directory (and .kmodkit); cannot create (73) when the volume is read-only
  // or missing.
  Result<void> prepare() const;
  // Takes .kmodkit/lock, waiting at most `timeout` and logging while it waits; temporary
  // failure (75) when the wait runs out.
  Result<files::FileLock> lock(std::chrono::milliseconds timeout) const;
  // Removes what an interrupted run left in staging. Only under the lock.
  Result<void> clear_staging() const;

 private:
  fs::path root_;
};

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

// A process's hold on a release's tree (ModulesVolume::use()): a shared flock() on the release's
// use record, which gc needs exclusively before it may remove the tree. Released on destruction,
// or when the process dies. An empty hold (held() false) holds nothing: the volume had no state
// directory yet, so there was no tree to protect.
class TreeUse {
 public:
  TreeUse() = default;
  bool held() const { return static_cast<bool>(fd_); }

 private:
  friend class ModulesVolume;
  explicit TreeUse(files::Fd fd) : fd_(std::move(fd)) {}
  files::Fd fd_;
};

enum class GcMode { remove, dry_run };

// What collect_unused() removes: trees whose last use is older than `keep_unused`, never
// `current_release` (the release the calling run serves).
struct GcPolicy {
  std::chrono::seconds keep_unused{0};
  std::string current_release;
  GcMode mode = GcMode::remove;
};

struct GcReport {
  size_t removed = 0;  // releases whose tree or cache entries were (or, in a dry run, would be) removed
  size_t kept = 0;
  size_t blobs = 0;    // image blobs removed (or that would be)
  uint64_t bytes = 0;  // freed, or that would be
};

// The modules volume's layout: each release's tree is a generation, .kmodkit/trees/<name>/
// holding root/ (a tree that mirrors the root file system) and manifest.json; the symlink
// .kmodkit/kernels/<kver> names the current generation and is the only thing a publish changes,
// with one rename(). The paths readers know (usr/lib/modules/<kver>, the headers directory,
// .kmodkit/kernels/<kver>.json) are symlinks that lead through it and never change.
class ModulesVolume : public Volume {
 public:
  using Volume::Volume;
  // A generation a publish replaced is not removed at once: a lookup through the public links
  // that read the commit link just before the rename may still be walking into it. It holds a
  // file named kRetiredMarker whose mtime is when it was replaced, and the first locked run
  // (clear_staging(), gc) after retired_grace removes it.
  static constexpr const char* kRetiredMarker = "retired";
  static constexpr std::chrono::seconds retired_grace{60};
  fs::path manifest_path(std::string_view kernel_release) const;
  fs::path trees_dir() const { return state_dir() / "trees"; }
  // .kmodkit/blobs/sha256: the image layers the oci source pulled, each named by its SHA-256 and
  // written under the lock (a temporary <hex>.partial renamed after its digest is checked). A
  // blob's mtime is its last use: a pull that reuses it touches it.
  fs::path blobs_dir() const { return state_dir() / "blobs" / "sha256"; }
  // .kmodkit/kernels/<kver>: the commit point, a symlink to the current generation.
  fs::path current_link(std::string_view kernel_release) const;

  // The name of the release's current generation (what current_link() leads to); "" when it
  // has none (no tree, or one laid out before generations). A reader that read the tree between
  // two calls that return the same name read one generation whole.
  std::string generation(std::string_view kernel_release) const;

  // The manifest of a complete tree for the release: it parses, names the release, and the
  // paths it lists exist. Otherwise nullopt, with the reason in `why_not`.
  std::optional<Manifest> complete_tree(std::string_view kernel_release, std::string* why_not) const;
  // As complete_tree, except that a manifest the storage failed to read (EIO) is that error (74),
  // not an incomplete tree: a failing disk is never taken for a tree to lay out or a missing one.
  Result<std::optional<Manifest>> find_tree(std::string_view kernel_release, std::string* why_not) const;

  // .kmodkit/used/<kver>: the release's use record. Its mtime is the tree's last use; a shared
  // flock() on it means a process is using the tree now (docs/ARCHITECTURE.md, "Kernel upgrades").
  fs::path use_record(std::string_view kernel_release) const;

  // Records that the release's tree is used now (sets its use record's mtime, creating it) and
  // holds it until the returned TreeUse is destroyed, so gc leaves the tree alone. Call before
  // reading the tree. Waits only while a gc removes this very release. On a read-only volume the
  // record is held without setting its time. An empty hold when the volume has no .kmodkit yet
  // (or, read-only, no record); usage error (64) for a name that is not a release; cannot create
  // (73) when the record cannot be written.
  Result<TreeUse> use(std::string_view kernel_release) const;

  // Removes the trees of releases no process holds and none used within policy.keep_unused
  // (their manifest, generation and public links), with kmod-builder's cache entries, records
  // and logs for them; releases that only have cache entries left are judged the same way. A
  // release's last use is its use record's mtime, else its manifest's creation time, else its
  // newest cache entry's. Image blobs (blobs_dir()) not used within policy.keep_unused go too,
  // and the .partial files of a pull that was killed. Each tree is moved into staging (its commit link first, so what is
  // left is never trusted) and then deleted: a kill leaves what the next clear_staging() and
  // collect_unused() remove. Logs one line per release removed and kept. In remove mode only
  // under the lock, after clear_staging(); a dry run changes nothing. Cannot create (73)
  // naming the path that could not be moved or removed.
  Result<GcReport> collect_unused(const GcPolicy& policy) const;

  // Creates the toolkit's directories and the merged-/usr `lib` link; cannot create (73) when
  // the volume is read-only or missing.
  Result<void> prepare() const;
  // Removes what an interrupted run left: staging, and generations no release points at (a
  // publish killed before its commit), and generations replaced more than retired_grace ago.
  // Only under the lock.
  Result<void> clear_staging() const;
  // Publishes a finished generation as the release's tree, replacing the tree it had whole:
  // `staged` (a directory in staging holding root/) gets the manifest, is made durable and moved
  // to trees/; the public paths are made links through the release's commit link (a directory an
  // older layout left there is moved aside); the commit link is renamed over; the replaced
  // generation, with what kmod-builder had installed in it, is marked retired (removed after
  // retired_grace by a later run). Killed at any point, the
  // volume holds the old tree or the new one, whole, and what the next clear_staging() removes.
  // Only under the lock. Cannot create (73) naming the path.
  Result<void> publish(const fs::path& staged, const Manifest& manifest) const;

 private:
  Result<void> remove_unused_generations(std::string_view why) const;
};

}  // namespace kmodkit::volume
