#pragma once
// Files: errno translated once, fsync and atomic rename, staging directories, and the volume
// lock (flock with a bounded wait that logs while it waits).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

struct stat;

namespace kmodkit::files {

namespace fs = std::filesystem;

// Turns an errno value into an Error "what: strerror". ENOSPC, EDQUOT and EROFS become
// cant_create (73), EACCES/EPERM no_perm (77); anything else gets `fallback`.
Error errno_error(std::string_view what, int err, ExitCode fallback = ExitCode::cant_create);

// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release() { int fd = fd_; fd_ = -1; return fd; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Writes all of `data` to `fd`, retrying short writes and EINTR. Returns 0 or the errno.
int write_all(int fd, const char* data, size_t size);

// Opens a path; the error names the path.
Result<Fd> open_file(const fs::path& path, int flags, mode_t mode = 0644);

// fsync() of a file or directory by path.
Result<void> fsync_path(const fs::path& path);
// syncfs() of the file system holding `path`: one call that makes a whole staged tree durable,
// much cheaper than an fsync per file.
Result<void> sync_filesystem(const fs::path& path);
// rename(); the error names both paths (cannot create, 73, or what errno maps to).
Result<void> rename_path(const fs::path& from, const fs::path& to);
// rename() then fsync() of the destination's directory.
Result<void> rename_durable(const fs::path& from, const fs::path& to);
// Writes `content` to a temporary file beside `path`, fsyncs it and renames it into place.
Result<void> write_file_atomic(const fs::path& path, std::string_view content, mode_t mode = 0644);
// Reads a whole (small) file; input missing (66) when it does not exist.
Result<std::string> read_file(const fs::path& path, size_t max_bytes = 64 << 20);
// Creates a directory and its parents; the error names the path.
Result<void> make_dirs(const fs::path& path);
// Removes a tree; a missing tree is fine.
Result<void> remove_tree(const fs::path& path);
// As remove_tree, for a tree a process may still be writing a last file into (a compiler whose
// parent was killed, a writer that ignored the lock): tries again while the tree is not yet
// empty, for up to 10 s.
Result<void> remove_tree_settled(const fs::path& path);
// Creates or replaces a symlink atomically (symlink to a temporary name, then rename).
Result<void> replace_symlink(const fs::path& target, const fs::path& link);

// One entry met by walk_tree(): the descriptor of its directory and its name there (for the
// *at() calls), its whole path, its path below the root, and its lstat.
struct WalkEntry {
  int dir_fd;
  const char* name;
  const std::string& path;  // a string: a std::filesystem::path splits itself into components
  const std::string& rel;
  const struct stat& st;
};
// Visits every entry below `root` (not the root itself), depth first in readdir order as
// std::filesystem's recursive iterator goes, a directory before what it holds; never follows a
// symlink. Each directory is read through its descriptor, so nothing looks a whole path up per
// entry. A directory that cannot be read is input missing (66) naming it; `visit` may stop the
// walk by returning an error.
Result<void> walk_tree(const fs::path& root, const std::function<Result<void>(const WalkEntry&)>& visit);

// A fresh directory under `parent` named "<prefix>.<pid>.<random>", removed with its contents
// on destruction unless keep() was called.
class StagingDir {
 public:
  static Result<StagingDir> create(const fs::path& parent, std::string_view prefix);
  StagingDir(StagingDir&& other) noexcept : path_(std::move(other.path_)), dev_(other.dev_), ino_(other.ino_) {
    other.path_.clear();
  }
  StagingDir& operator=(StagingDir&&) = delete;
  StagingDir(const StagingDir&) = delete;
  ~StagingDir();
  const fs::path& path() const { return path_; }
  void keep() { path_.clear(); }
  // Whether the directory is still there, the one create() made (a writer that creates parent
  // directories as it goes would make another at the same path). Another process removes it only when it ignored the
  // volume's lock (under the lock, leftovers of killed runs are removed): e.g. a pod on a file
  // system that does not pass flock() between its clients.
  bool intact() const;
  // `cause` as the run reports it: when the directory is gone, a temporary failure (75) that
  // says another process removed it, with `cause` after; otherwise `cause` unchanged.
  Error explain(Error cause) const;

 private:
  StagingDir(fs::path p, uint64_t dev, uint64_t ino) : path_(std::move(p)), dev_(dev), ino_(ino) {}
  fs::path path_;
  uint64_t dev_ = 0;
  uint64_t ino_ = 0;
};

// Removes the directories StagingDir::create(parent, prefix) made in processes that no longer
// run (killed with SIGKILL before their destructor ran). Returns how many were removed.
Result<size_t> remove_stale_staging(const fs::path& parent, std::string_view prefix);

// Flushes the file system holding `path` every `interval` on a thread of its own while a tree is
// being written there, so the disk works while the CPU decompresses and the final
// sync_filesystem() finds little left to write. Stops (and joins) on destruction.
class BackgroundSync {
 public:
  BackgroundSync(fs::path path, std::chrono::milliseconds interval);
  ~BackgroundSync();
  BackgroundSync(const BackgroundSync&) = delete;
  BackgroundSync& operator=(const BackgroundSync&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// An exclusive flock() on a lock file, released on destruction (or when the process dies, so a
// kill -9 never leaves the volume locked).
class FileLock {
 public:
  // Waits at most `timeout` for the lock, logging a line every `log_every` while waiting.
  // Fails with temp_fail (75) when the wait runs out.
  static Result<FileLock> acquire(const fs::path& path, std::chrono::milliseconds timeout,
                                  std::chrono::milliseconds log_every = std::chrono::seconds(5));
  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  // How long acquire() waited.
  std::chrono::milliseconds waited() const { return waited_; }

 private:
  FileLock(Fd fd, std::chrono::milliseconds waited) : fd_(std::move(fd)), waited_(waited) {}
  Fd fd_;
  std::chrono::milliseconds waited_{0};
};

}  // namespace kmodkit::files
