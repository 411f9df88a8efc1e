#pragma once
// Tells when a file may have changed, with inotify on its directory (a watch on the file itself
// would follow the old inode after a rename or a ConfigMap update). Events that mean "the file's
// new content is complete" count: the file written and closed, a file or symlink renamed into
// its name, a symlink created under its name, and the directory's `..data` symlink renamed into
// place, which is how the kubelet updates a ConfigMap or Secret volume (it writes the new files
// into a timestamped directory, points `..data_tmp` at it and renames that over `..data`). A
// file merely created or still being written does not count, so a half-written file is never
// read. (A volume mounted with subPath is never updated by the kubelet: nothing can follow it.)

#include <string>

#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

class FileWatch {
 public:
  // Watches the directory of `file`. Errors: 78 when inotify cannot be set up (the node's
  // fs.inotify.max_user_instances or max_user_watches used up), 66 when the directory is missing.
  static Result<FileWatch> open(const std::string& file);
  FileWatch(FileWatch&& o) noexcept;
  FileWatch& operator=(FileWatch&& o) noexcept;
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;
  ~FileWatch();

  // Reads what happened since the last call, without blocking: true when any of it may have
  // changed the file's content (see above).
  bool changed();

 private:
  FileWatch(int fd, std::string dir, std::string name) : fd_(fd), dir_(std::move(dir)), name_(std::move(name)) {}
  int fd_ = -1;
  std::string dir_, name_;
};

}  // namespace kmodkit::firewall
