#include "kmodkit/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>
#include <thread>
#include <condition_variable>
#include <mutex>

#include "kmodkit/log.hpp"

namespace kmodkit::files {

Error errno_error(std::string_view what, int err, ExitCode fallback) {
  ExitCode code = fallback;
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EROFS: code = ExitCode::cant_create; break;
    case EIO: code = ExitCode::io_err; break;  // never "missing": the file is there, its storage failed
    case EACCES:
    case EPERM: code = ExitCode::no_perm; break;
    default: break;
  }
  return Error{code, std::string(what) + ": " + std::strerror(err)};
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

Result<Fd> open_file(const fs::path& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return fail(ExitCode::no_input, path.string() + ": " + std::strerror(err));
    return fail(errno_error(path.string(), err));
  }
  return Fd(fd);
}

Result<void> fsync_path(const fs::path& path) {
  auto fd = KK_TRY(open_file(path, O_RDONLY | O_NOFOLLOW));
  if (::fsync(fd.get()) != 0) return fail(errno_error("fsync " + path.string(), errno));
  return {};
}

Result<void> sync_filesystem(const fs::path& path) {
  auto fd = KK_TRY(open_file(path, O_RDONLY | O_DIRECTORY));
  if (::syncfs(fd.get()) != 0) return fail(errno_error("syncfs " + path.string(), errno));
  return {};
}

Result<void> rename_path(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return fail(errno_error("rename " + from.string() + " to " + to.string(), errno));
  }
  return {};
}

Result<void> rename_durable(const fs::path& from, const fs::path& to) {
  KK_TRY(rename_path(from, to));
  return fsync_path(to.parent_path().empty() ? fs::path(".") : to.parent_path());
}

Result<void> write_file_atomic(const fs::path& path, std::string_view content, mode_t mode) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    auto fd = KK_TRY(open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    if (int err = write_all(fd.get(), content.data(), content.size()); err != 0) {
      ::unlink(tmp.c_str());
      return fail(errno_error("write " + tmp.string(), err));
    }
    if (::fsync(fd.get()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return fail(errno_error("fsync " + tmp.string(), err));
    }
  }
  auto renamed = rename_durable(tmp, path);
  if (!renamed) ::unlink(tmp.c_str());
  return renamed;
}

Result<std::string> read_file(const fs::path& path, size_t max_bytes) {
  auto fd = KK_TRY(open_file(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_error("read " + path.string(), errno, ExitCode::no_input));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return fail(ExitCode::data_err, path.string() + ": larger than " +
                                          std::to_string(max_bytes) + " bytes");
    }
  }
  return out;
}

Result<void> make_dirs(const fs::path& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return fail(errno_error("create directory " + path.string(), ec.value()));
  return {};
}

Result<void> remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return fail(errno_error("remove " + path.string(), ec.value()));
  }
  return {};
}

Result<void> remove_tree_settled(const fs::path& path) {
  for (int attempt = 0;; ++attempt) {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (!ec || ec == std::errc::no_such_file_or_directory) return {};
    if (ec != std::errc::directory_not_empty || attempt == 100) return fail(errno_error("remove " + path.string(), ec.value()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Result<void> replace_symlink(const fs::path& target, const fs::path& link) {
  fs::path tmp = link;
  tmp += ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) {
    return fail(errno_error("symlink " + tmp.string(), errno));
  }
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(errno_error("rename " + tmp.string() + " to " + link.string(), err));
  }
  return {};
}

Result<StagingDir> StagingDir::create(const fs::path& parent, std::string_view prefix) {
  KK_TRY(make_dirs(parent));
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".%d.%08x", ::getpid(), rd());
    fs::path p = parent / (std::string(prefix) + suffix);
    if (::mkdir(p.c_str(), 0755) == 0) {
      struct stat st{};
      if (::lstat(p.c_str(), &st) == 0) return StagingDir(p, st.st_dev, st.st_ino);
      // Removed at once by a process that ignored the volume's lock: a fresh one.
      if (errno != ENOENT) return fail(errno_error("stat staging directory " + p.string(), errno));
      KK_TRY(make_dirs(parent));
      continue;
    }
    if (errno != EEXIST) return fail(errno_error("create staging directory " + p.string(), errno));
  }
  return fail(ExitCode::cant_create, "could not create a unique staging directory in " + parent.string());
}

Result<size_t> remove_stale_staging(const fs::path& parent, std::string_view prefix) {
  size_t removed = 0;
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return removed;
  const std::string start = std::string(prefix) + ".";
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(start)) continue;
    // "<prefix>.<pid>.<random>"
    const auto last = name.rfind('.');
    const auto before = last == std::string::npos || last == 0 ? std::string::npos : name.rfind('.', last - 1);
    if (before == std::string::npos || before + 1 >= last) continue;
    const std::string pid_text = name.substr(before + 1, last - before - 1);
    pid_t pid = 0;
    const char* end = pid_text.data() + pid_text.size();
    if (auto [ptr, err] = std::from_chars(pid_text.data(), end, pid); err != std::errc() || ptr != end || pid <= 0) continue;
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    // A compiler the dead owner started may still be finishing a file in it (a process killed
    // by hand takes only its direct children with it).
    KK_TRY(remove_tree_settled(e.path()));
    ++removed;
  }
  return removed;
}

bool StagingDir::intact() const {
  if (path_.empty()) return true;
  struct stat st{};
  if (::lstat(path_.c_str(), &st) != 0) return errno != ENOENT;
  return st.st_dev == dev_ && st.st_ino == ino_;
}

Error StagingDir::explain(Error cause) const {
  if (intact()) return cause;
  return Error{ExitCode::temp_fail, path_.string() + " was removed while this run was writing it: another process changed the "
                                    "volume without holding its lock (does the volume's file system pass flock() between "
                                    "pods?); run again (" + cause.message + ")"};
}

StagingDir::~StagingDir() {
  if (!path_.empty()) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
}

namespace {

Result<void> walk_dir(int fd, const std::string& dir, const std::string& rel,
                      const std::function<Result<void>(const WalkEntry&)>& visit) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(fd), ::closedir);
  if (!d) {
    const int err = errno;
    ::close(fd);
    return fail(errno_error(dir + " cannot be read", err, ExitCode::no_input));
  }
  for (;;) {
    errno = 0;
    const struct dirent* e = ::readdir(d.get());
    if (e == nullptr) {
      if (errno != 0) return fail(errno_error(dir + " cannot be read", errno, ExitCode::no_input));
      return {};
    }
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + std::string(name);
    const std::string sub_rel = rel.empty() ? std::string(name) : rel + "/" + std::string(name);
    struct stat st{};
    if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return fail(errno_error(path, errno, ExitCode::no_input));
    }
    KK_TRY(visit(WalkEntry{fd, e->d_name, path, sub_rel, st}));
    if (S_ISDIR(st.st_mode)) {
      const int sub = ::openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) return fail(errno_error(path + " cannot be read", errno, ExitCode::no_input));
      KK_TRY(walk_dir(sub, path, sub_rel, visit));
    }
  }
}

}  // namespace

Result<void> walk_tree(const fs::path& root, const std::function<Result<void>(const WalkEntry&)>& visit) {
  const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error(root.string() + " cannot be read", errno, ExitCode::no_input));
  // Without a trailing slash, so that entries are "root/name" (as fs::path's / gave them).
  std::string dir = root.string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return walk_dir(fd, dir == "/" ? std::string() : dir, "", visit);
}

struct BackgroundSync::State {
  std::mutex mutex;
  std::condition_variable wake;
  bool stop = false;
  std::thread thread;
};

BackgroundSync::BackgroundSync(fs::path path, std::chrono::milliseconds interval)
    : state_(std::make_unique<State>()) {
  state_->thread = std::thread([s = state_.get(), path = std::move(path), interval] {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    std::unique_lock lock(s->mutex);
    while (!s->wake.wait_for(lock, interval, [s] { return s->stop; })) {
      lock.unlock();
      ::syncfs(fd);  // an error here shows again in the final sync_filesystem()
      lock.lock();
    }
    ::close(fd);
  });
}

BackgroundSync::~BackgroundSync() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stop = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
}

Result<FileLock> FileLock::acquire(const fs::path& path, std::chrono::milliseconds timeout,
                                   std::chrono::milliseconds log_every) {
  using clock = std::chrono::steady_clock;
  auto fd = KK_TRY(open_file(path, O_RDWR | O_CREAT, 0644));
  const auto start = clock::now();
  auto next_log = start + log_every;
  auto pause = std::chrono::milliseconds(20);
  for (;;) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start);
      return FileLock(std::move(fd), waited);
    }
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return fail(errno_error("lock " + path.string(), errno, ExitCode::temp_fail));
    }
    const auto now = clock::now();
    const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - start);
    if (now - start >= timeout) {
      return fail(ExitCode::temp_fail,
                  "gave up waiting for the lock " + path.string() + " after " +
                      std::to_string(waited.count()) + " s: another process is still working on the volume");
    }
    if (now >= next_log) {
      log::get("lock")->info("waiting for {} held by another process ({} s so far)", path.string(),
                             waited.count());
      next_log = now + log_every;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(250));
  }
}

}  // namespace kmodkit::files
