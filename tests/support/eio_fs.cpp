// eio_fs: a FUSE passthrough of a directory whose file reads fail with EIO, for the volume-fault
// campaign (tests/reliability/volume_faults.py): a disk whose medium went bad under the volume.
//
//   eio_fs ROOT MOUNTPOINT --eio-read REGEX [-- FUSE OPTION...]
//
// Everything under MOUNTPOINT is ROOT's (same inode numbers, so hard links and a staging
// directory's identity hold), except that read() of a regular file whose path (relative to
// ROOT, e.g. ".kmodkit/seed.json") matches REGEX (ECMAScript, searched) fails with EIO. Writes,
// metadata and directory listings work. Runs in the foreground until unmounted or sent SIGTERM
// (it unmounts then). Needs /dev/fuse and the right to mount (root).
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

namespace {

int g_root = -1;
std::regex g_eio_read;

// The path FUSE hands an operation ("/a/b", "/") as one relative to ROOT ("a/b", ".").
std::string rel(const char* path) {
  while (*path == '/') ++path;
  return *path == '\0' ? std::string(".") : std::string(path);
}

int err(int r) { return r < 0 ? -errno : r; }

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (fi != nullptr) return err(::fstat(static_cast<int>(fi->fh), st));
  return err(::fstatat(g_root, rel(path).c_str(), st, AT_SYMLINK_NOFOLLOW));
}

int op_readlink(const char* path, char* buf, size_t size) {
  const ssize_t n = ::readlinkat(g_root, rel(path).c_str(), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

int op_mknod(const char* path, mode_t mode, dev_t dev) { return err(::mknodat(g_root, rel(path).c_str(), mode, dev)); }
int op_mkdir(const char* path, mode_t mode) { return err(::mkdirat(g_root, rel(path).c_str(), mode)); }
int op_unlink(const char* path) { return err(::unlinkat(g_root, rel(path).c_str(), 0)); }
int op_rmdir(const char* path) { return err(::unlinkat(g_root, rel(path).c_str(), AT_REMOVEDIR)); }
int op_symlink(const char* target, const char* link) { return err(::symlinkat(target, g_root, rel(link).c_str())); }

int op_rename(const char* from, const char* to, unsigned int flags) {
  return err(::renameat2(g_root, rel(from).c_str(), g_root, rel(to).c_str(), flags));
}

int op_link(const char* from, const char* to) { return err(::linkat(g_root, rel(from).c_str(), g_root, rel(to).c_str(), 0)); }

int op_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
  if (fi != nullptr) return err(::fchmod(static_cast<int>(fi->fh), mode));
  return err(::fchmodat(g_root, rel(path).c_str(), mode, 0));
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  if (fi != nullptr) return err(::fchown(static_cast<int>(fi->fh), uid, gid));
  return err(::fchownat(g_root, rel(path).c_str(), uid, gid, AT_SYMLINK_NOFOLLOW));
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (fi != nullptr) return err(::ftruncate(static_cast<int>(fi->fh), size));
  const int fd = ::openat(g_root, rel(path).c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  const int r = err(::ftruncate(fd, size));
  ::close(fd);
  return r;
}

int op_utimens(const char* path, const struct timespec tv[2], fuse_file_info* fi) {
  if (fi != nullptr) return err(::futimens(static_cast<int>(fi->fh), tv));
  return err(::utimensat(g_root, rel(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

// The file handle holds the descriptor in its low 32 bits; bit 32 marks a file whose reads fail.
int open_at(const char* path, int flags, mode_t mode, fuse_file_info* fi) {
  const std::string r = rel(path);
  const int fd = ::openat(g_root, r.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  if (std::regex_search(r, g_eio_read)) fi->fh |= uint64_t{1} << 32;
  return 0;
}

int op_open(const char* path, fuse_file_info* fi) { return open_at(path, fi->flags, 0, fi); }
int op_create(const char* path, mode_t mode, fuse_file_info* fi) { return open_at(path, fi->flags | O_CREAT, mode, fi); }

int fd_of(const fuse_file_info* fi) { return static_cast<int>(fi->fh & 0xffffffffu); }
bool failing(const fuse_file_info* fi) { return (fi->fh >> 32) != 0; }

int op_read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  if (failing(fi)) return -EIO;
  const ssize_t n = ::pread(fd_of(fi), buf, size, off);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_write(const char*, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  const ssize_t n = ::pwrite(fd_of(fi), buf, size, off);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_statfs(const char*, struct statvfs* st) { return err(::fstatvfs(g_root, st)); }
int op_release(const char*, fuse_file_info* fi) { return err(::close(fd_of(fi))); }

int op_fsync(const char*, int datasync, fuse_file_info* fi) {
  return err(datasync != 0 ? ::fdatasync(fd_of(fi)) : ::fsync(fd_of(fi)));
}

int op_flush(const char*, fuse_file_info* fi) {
  // As close() would: report a delayed write error.
  const int dup = ::dup(fd_of(fi));
  if (dup < 0) return -errno;
  return err(::close(dup));
}

int op_opendir(const char* path, fuse_file_info* fi) {
  const int fd = ::openat(g_root, rel(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int op_readdir(const char*, void* buf, fuse_fill_dir_t filler, off_t, fuse_file_info* fi, fuse_readdir_flags) {
  // All entries in one call (offset 0 each): libfuse pages them out.
  const int fd = ::dup(static_cast<int>(fi->fh));
  if (fd < 0) return -errno;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return -errno;
  }
  ::rewinddir(d);
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) break;
    struct stat st{};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (filler(buf, e->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  const int r = errno;
  ::closedir(d);
  return -r;
}

int op_releasedir(const char*, fuse_file_info* fi) { return err(::close(static_cast<int>(fi->fh))); }

int op_access(const char* path, int mask) { return err(::faccessat(g_root, rel(path).c_str(), mask, AT_EACCESS)); }

int op_fallocate(const char*, int mode, off_t off, off_t len, fuse_file_info* fi) {
  return err(::fallocate(fd_of(fi), mode, off, len));
}

off_t op_lseek(const char*, off_t off, int whence, fuse_file_info* fi) {
  const off_t r = ::lseek(fd_of(fi), off, whence);
  return r < 0 ? -errno : r;
}

void* op_init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 1;  // ROOT's inode numbers
  cfg->readdir_ino = 1;
  // No caching of names or attributes: what the campaign checks afterwards on ROOT is what the
  // job saw.
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || std::strcmp(argv[3], "--eio-read") != 0) {
    std::fprintf(stderr, "usage: eio_fs ROOT MOUNTPOINT --eio-read REGEX [-- FUSE OPTION...]\n");
    return 64;
  }
  g_root = ::open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (g_root < 0) {
    std::fprintf(stderr, "eio_fs: %s: %s\n", argv[1], std::strerror(errno));
    return 66;
  }
  try {
    g_eio_read = std::regex(argv[4], std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    std::fprintf(stderr, "eio_fs: --eio-read '%s': %s\n", argv[4], e.what());
    return 64;
  }
  fuse_operations ops{};
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.chmod = op_chmod;
  ops.chown = op_chown;
  ops.truncate = op_truncate;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.statfs = op_statfs;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.init = op_init;
  ops.access = op_access;
  ops.create = op_create;
  ops.utimens = op_utimens;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  std::vector<char*> args = {argv[0], argv[2], const_cast<char*>("-f"), const_cast<char*>("-o"),
                             const_cast<char*>("fsname=kmodkit-eio,default_permissions")};
  for (int i = 5; i < argc; ++i) {
    if (i == 5 && std::strcmp(argv[i], "--") == 0) continue;
    args.push_back(argv[i]);
  }
  return fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
}
