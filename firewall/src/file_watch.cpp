#include "file_watch.hpp"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace kmodkit::firewall {

Result<FileWatch> FileWatch::open(const std::string& file) {
  const std::filesystem::path path(file);
  std::string dir = path.parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    return fail(ExitCode::config, "cannot watch " + file + " for changes: inotify: " + std::strerror(errno) +
                                      (errno == EMFILE ? " (the node's fs.inotify.max_user_instances is used up)" : ""));
  }
  // IN_CREATE only for symlinks (checked when it comes): a regular file created is still empty.
  if (inotify_add_watch(fd, dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR) < 0) {
    const int err = errno;
    ::close(fd);
    return fail(err == ENOENT || err == ENOTDIR ? ExitCode::no_input : ExitCode::config,
                "cannot watch " + dir + " for changes to " + path.filename().string() + ": " + std::strerror(err) +
                    (err == ENOSPC ? " (the node's fs.inotify.max_user_watches is used up)" : ""));
  }
  return FileWatch(fd, dir, path.filename().string());
}

FileWatch::FileWatch(FileWatch&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), dir_(std::move(o.dir_)), name_(std::move(o.name_)) {}

FileWatch& FileWatch::operator=(FileWatch&& o) noexcept {
  std::swap(fd_, o.fd_);
  std::swap(dir_, o.dir_);
  std::swap(name_, o.name_);
  return *this;
}

FileWatch::~FileWatch() {
  if (fd_ >= 0) ::close(fd_);
}

bool FileWatch::changed() {
  bool changed = false;
  alignas(inotify_event) char buf[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;  // EAGAIN: nothing more (a queue overflow shows as IN_Q_OVERFLOW below)
    for (ssize_t at = 0; at < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if ((ev->mask & IN_Q_OVERFLOW) != 0) {  // events were lost: assume the worst
        changed = true;
        continue;
      }
      if (ev->len == 0) continue;
      const std::string name = ev->name;
      if (name != name_ && name != "..data") continue;
      if ((ev->mask & IN_CREATE) != 0) {
        struct stat st{};
        if (::lstat((dir_ + "/" + name).c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) continue;
      }
      changed = true;
    }
  }
  return changed;
}

}  // namespace kmodkit::firewall
