// Extraction: what is kept, what is refused, and what is rewritten.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <functional>
#include <thread>

#include "helpers.hpp"
#include "kmodkit/archive.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/subprocess.hpp"

using namespace kmodkit;
using kmodkit::test::TarEntry;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string merged_usr(std::string_view p) {
  if (p == "lib" || p.starts_with("lib/")) return "usr/" + std::string(p);
  return std::string(p);
}

Result<archive::Stats> extract(const fs::path& archive_path, const fs::path& root, digest::Sha256* hash = nullptr) {
  auto fd = files::open_file(archive_path, O_RDONLY);
  if (!fd) return fail(fd.error());
  return archive::extract_fd(fd->get(), archive_path.filename().string(), archive::Policy{root, merged_usr, nullptr}, hash);
}

ino_t lstat_ino(const fs::path& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

void check_refused(const std::vector<TarEntry>& entries, const std::string& expected) {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  test::write_tar_gz(tmp / "bad.tar.gz", entries);
  auto r = extract(tmp / "bad.tar.gz", tmp / "root");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::data_err);
  CHECK_THAT(r.error().message, Catch::Contains(expected));
  // Nothing beside the destination.
  for (const auto& e : fs::directory_iterator(tmp.path)) {
    CHECK((e.path().filename() == "root" || e.path().filename() == "bad.tar.gz"));
  }
}

}  // namespace

TEST_CASE("files, directories, symlinks and hard links are extracted with their modes and times", "[unit][archive]") {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  test::write_tar_gz(tmp / "a.tar.gz", {
      {TarEntry::dir, "./usr/", "", 0755},
      {TarEntry::file, "./usr/bin/tool", "#!/bin/sh\n", 0755},
      {TarEntry::file, "./usr/share/data", "hello", 0640},
      {TarEntry::symlink, "./usr/bin/alias", "tool"},
      {TarEntry::hardlink, "./usr/share/data2", "./usr/share/data"},
  });
  auto stats = extract(tmp / "a.tar.gz", tmp / "root");
  REQUIRE(stats);
  CHECK(stats->files == 3);
  CHECK(stats->symlinks == 1);
  CHECK(stats->bytes == 15);
  struct stat st{};
  REQUIRE(::stat((tmp / "root/usr/bin/tool").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(st.st_mtime == 1700000000);
  REQUIRE(::stat((tmp / "root/usr/share/data").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_nlink == 2);
  CHECK(fs::read_symlink(tmp / "root/usr/bin/alias") == "tool");
}

TEST_CASE("an entry with an absolute path is refused", "[unit][archive]") {
  check_refused({{TarEntry::file, "/etc/evil", "x"}}, "entry '/etc/evil' has an absolute path");
}

TEST_CASE("an entry with .. is refused", "[unit][archive]") {
  check_refused({{TarEntry::file, "usr/../../evil", "x"}}, "entry 'usr/../../evil' contains '..'");
}

TEST_CASE("a symlink that leads outside the tree is refused", "[unit][archive]") {
  check_refused({{TarEntry::symlink, "usr/escape", "../../../etc"}}, "which leads outside the tree");
}

TEST_CASE("a hard link to a path outside the tree is refused", "[unit][archive]") {
  check_refused({{TarEntry::hardlink, "usr/passwd", "../etc/passwd"}}, "contains '..'");
}

TEST_CASE("nothing is written through a symlink the archive itself made", "[unit][archive]") {
  // The classic two-step: a link to a directory, then a file "inside" it.
  check_refused({{TarEntry::symlink, "usr/d", "sub"}, {TarEntry::dir, "usr/sub", ""}, {TarEntry::file, "usr/d/x", "x"}},
                "'usr/d' is both a symlink and a directory");
  check_refused({{TarEntry::symlink, "a", "."}, {TarEntry::symlink, "a/b", ".."}}, "lies below the symlink 'a'");
}

TEST_CASE("absolute symlinks become relative links that resolve inside the tree", "[unit][archive]") {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  test::write_tar_gz(tmp / "k.tar.gz", {
      {TarEntry::dir, "./usr/src/linux-headers-1/", ""},
      {TarEntry::symlink, "./lib/modules/1/build", "/usr/src/linux-headers-1"},
      {TarEntry::symlink, "./lib/modules/1/source", "../../../usr/src/linux-headers-1"},
  });
  REQUIRE(extract(tmp / "k.tar.gz", tmp / "root"));
  // lib/ moved to usr/lib/ (merged /usr); both links re-aimed from their new place.
  CHECK(fs::read_symlink(tmp / "root/usr/lib/modules/1/build") == "../../../src/linux-headers-1");
  CHECK(fs::read_symlink(tmp / "root/usr/lib/modules/1/source") == "../../../src/linux-headers-1");
  CHECK(fs::is_directory(tmp / "root/usr/lib/modules/1/build"));
}

TEST_CASE("the digest covers every byte of the input", "[unit][archive]") {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  test::write_tar_gz(tmp / "a.tar.gz", {{TarEntry::file, "f", std::string(100000, 'x')}});
  digest::Sha256 hash;
  REQUIRE(extract(tmp / "a.tar.gz", tmp / "root", &hash));
  CHECK(hash.hex() == test::sha256_of(tmp / "a.tar.gz"));
}

TEST_CASE("a truncated archive is bad data", "[unit][archive]") {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  std::string big;
  for (int i = 0; i < 200000; ++i) big += static_cast<char>(i * 7919 % 251);
  test::write_tar_gz(tmp / "a.tar.gz", {{TarEntry::file, "f", big}});
  fs::resize_file(tmp / "a.tar.gz", fs::file_size(tmp / "a.tar.gz") / 2);
  auto r = extract(tmp / "a.tar.gz", tmp / "root");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::data_err);
}

TEST_CASE("something that is not an archive is bad data", "[unit][archive]") {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  test::write_file(tmp / "junk", std::string(4096, 'j'));
  auto r = extract(tmp / "junk", tmp / "root");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::data_err);
}

TEST_CASE("a .deb built by dpkg-deb is read through its data.tar", "[unit][archive]") {
  TempDir tmp;
  test::write_file(tmp / "pkg/DEBIAN/control",
                   "Package: kmodkit-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n");
  test::write_file(tmp / "pkg/usr/src/hello/Makefile", "all:\n");
  fs::create_directories(tmp / "pkg/lib/modules/9.9");
  fs::create_symlink("/usr/src/hello", tmp / "pkg/lib/modules/9.9/build");
  for (const char* comp : {"xz", "gzip", "zstd", "none"}) {
    auto built = subprocess::run({"dpkg-deb", "-Z", comp, "--root-owner-group", "--build", (tmp / "pkg").string(),
                                  (tmp / "t.deb").string()});
    REQUIRE(built);
    REQUIRE(built->ok());
    fs::remove_all(tmp / "root");
    fs::create_directories(tmp / "root");
    INFO(comp);
    auto stats = extract(tmp / "t.deb", tmp / "root");
    REQUIRE(stats);
    CHECK(fs::exists(tmp / "root/usr/src/hello/Makefile"));
    CHECK(fs::read_symlink(tmp / "root/usr/lib/modules/9.9/build") == "../../../src/hello");
    CHECK_FALSE(fs::exists(tmp / "root/DEBIAN"));
  }
}

TEST_CASE("an .rpm built by rpmbuild is read through its cpio payload", "[unit][archive]") {
  TempDir tmp;
  test::write_file(tmp / "SPECS/t.spec",
                   "Name: kmodkit-test\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n"
                   "%description\nt\n%install\nmkdir -p %{buildroot}/usr/src/kernels/9.9\n"
                   "echo all: > %{buildroot}/usr/src/kernels/9.9/Makefile\n"
                   "mkdir -p %{buildroot}/lib/modules/9.9\nln -s /usr/src/kernels/9.9 %{buildroot}/lib/modules/9.9/build\n"
                   "%files\n/usr/src/kernels/9.9\n/lib/modules/9.9\n");
  auto built = subprocess::run({"rpmbuild", "--define", "_topdir " + tmp.path.string(), "--define", "_build_id_links none",
                                "-bb", (tmp / "SPECS/t.spec").string()});
  REQUIRE(built);
  INFO(built->output);
  REQUIRE(built->ok());
  fs::path rpm;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "RPMS")) {
    if (e.path().extension() == ".rpm") rpm = e.path();
  }
  REQUIRE_FALSE(rpm.empty());
  fs::create_directories(tmp / "root");
  REQUIRE(extract(rpm, tmp / "root"));
  CHECK(test::read_file(tmp / "root/usr/src/kernels/9.9/Makefile") == "all:\n");
  CHECK(fs::read_symlink(tmp / "root/usr/lib/modules/9.9/build") == "../../../src/kernels/9.9");
}

TEST_CASE("a tree is copied with its links, and absolute links inside it are re-aimed", "[unit][archive]") {
  TempDir tmp;
  test::write_file(tmp / "host/usr/src/kernels/1/Makefile", "all:\n");
  test::write_file(tmp / "host/usr/lib/modules/1/modules.dep", "");
  fs::create_symlink("/usr/src/kernels/1", tmp / "host/usr/lib/modules/1/build");
  fs::create_hard_link(tmp / "host/usr/lib/modules/1/modules.dep", tmp / "host/usr/lib/modules/1/modules.dep.copy");
  fs::create_directories(tmp / "root");
  archive::Policy policy{tmp / "root", nullptr, nullptr};
  REQUIRE(archive::copy_tree(tmp / "host/usr/lib/modules/1", "usr/lib/modules/1", policy));
  REQUIRE(archive::copy_tree(tmp / "host/usr/src/kernels/1", "usr/src/kernels/1", policy));
  CHECK(fs::read_symlink(tmp / "root/usr/lib/modules/1/build") == "../../../src/kernels/1");
  CHECK(fs::exists(tmp / "root/usr/lib/modules/1/build/Makefile"));
  CHECK(fs::hard_link_count(tmp / "root/usr/lib/modules/1/modules.dep") == 2);
}

TEST_CASE("relative links are computed between two paths of the same root", "[unit][archive]") {
  CHECK(archive::relative_link("usr/lib/modules/k/build", "usr/src/h") == "../../../src/h");
  CHECK(archive::relative_link("a", "b") == "b");
  CHECK(archive::relative_link("a/b", "a") == ".");
  CHECK(archive::relative_link("a/b", "c/d") == "../c/d");
  CHECK(archive::relative_link("x/y", "") == "..");
  CHECK(archive::normalize_relative("./a/./b/") == "a/b");
  CHECK_FALSE(archive::normalize_relative("../a"));
  CHECK_FALSE(archive::normalize_relative("/a"));
}

namespace {

// Extracts three archives of 2,000 files each at once, through one extraction, under umask
// 022. Returns what went wrong: a file or directory without the archive's mode, or a process
// umask that changed.
std::string extract_concurrently(const fs::path& tmp) {
  fs::create_directories(tmp / "root");
  constexpr int kArchives = 3;
  for (int a = 0; a < kArchives; ++a) {
    std::vector<TarEntry> entries;
    for (int d = 0; d < 40; ++d) {
      const std::string dir = "./t" + std::to_string(a) + "/d" + std::to_string(d);
      entries.push_back({TarEntry::dir, dir + "/", "", 0775});
      for (int f = 0; f < 50; ++f) entries.push_back({TarEntry::file, dir + "/f" + std::to_string(f), "x", 0664});
    }
    test::write_tar_gz(tmp / ("a" + std::to_string(a) + ".tar.gz"), entries);
  }
  const mode_t before = ::umask(022);
  auto extraction = archive::Extraction::create(archive::Policy{tmp / "root", nullptr, nullptr});
  if (!extraction) return extraction.error().message;
  std::vector<std::thread> threads;
  std::vector<Result<archive::Stats>> results(kArchives, Result<archive::Stats>(archive::Stats{}));
  for (int a = 0; a < kArchives; ++a) {
    threads.emplace_back([&, a] {
      auto fd = files::open_file(tmp / ("a" + std::to_string(a) + ".tar.gz"), O_RDONLY);
      results[a] = fd ? (*extraction)->extract_fd(fd->get(), "a" + std::to_string(a)) : fail(fd.error());
    });
  }
  for (auto& t : threads) t.join();
  const mode_t after = ::umask(before);
  std::string problems;
  for (const auto& r : results) {
    if (!r) problems += r.error().message + "\n";
  }
  if (auto f = (*extraction)->finish(); !f) problems += f.error().message + "\n";
  auto octal = [](mode_t m) {
    char text[16];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(m));
    return std::string(text);
  };
  if (after != 022) problems += "the process umask is now " + octal(after) + "\n";
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "root")) {
    struct stat st{};
    if (::lstat(e.path().c_str(), &st) != 0) return e.path().string() + ": cannot stat";
    // The archives' directories are 0775; their parents t0..t2, which no entry names, follow
    // the umask.
    const bool implicit = e.path().parent_path() == tmp / "root";
    const mode_t want = implicit ? 0755 : S_ISDIR(st.st_mode) ? 0775 : 0664;
    if (S_ISREG(st.st_mode)) ++files;
    if ((st.st_mode & 07777) != want) problems += e.path().string() + " has mode " + octal(st.st_mode & 07777) + "\n";
  }
  if (files != kArchives * 40 * 50) problems += std::to_string(files) + " files\n";
  return problems;
}

// Makes unshare(2) fail with EPERM in this process, as a container's default seccomp profile does.
bool refuse_unshare() {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0 &&
         ::unshare(CLONE_FS) == -1 && errno == EPERM;
}

// Runs `body` in a forked child and returns what it said (an exception's message if it threw),
// and whether the child exited normally.
struct ChildSaid {
  std::string said;
  bool exited = false;
};
ChildSaid in_child(const std::function<std::string()>& body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string said;
    try {
      said = body();
    } catch (const std::exception& e) {
      said = e.what();
    }
    (void)!::write(fds[1], said.data(), said.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildSaid out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.said.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.exited = WIFEXITED(status);
  return out;
}

}  // namespace

// libarchive's disk writer reads the umask for every entry by setting it to 0 and back, and
// the umask is shared by a process's threads: a writer that read 0 while another had it set
// would trust the kernel to create a file with a mode that the real umask then strips (and the
// process could be left with umask 0). Each writing thread has a umask of its own, or where
// the kernel refuses that, the writers take turns.
TEST_CASE("modes survive many writer threads, and the process keeps its umask", "[unit][archive]") {
  TempDir tmp;
  SECTION("each writer with its own umask") {
    CHECK(extract_concurrently(tmp.path) == "");
  }
  SECTION("where unshare is refused, as under a container's default seccomp profile") {
    const auto child = in_child([&] { return refuse_unshare() ? extract_concurrently(tmp.path) : "cannot refuse unshare"; });
    CHECK(child.exited);
    CHECK(child.said == "");
  }
}

// tar's rule: a path that appears twice is the later entry's (an appended archive, tar -r).
// The two can land with different writer threads, and links are made last: the later entry
// must still decide.
TEST_CASE("a path the archive holds twice ends as the later entry made it", "[unit][archive]") {
  TempDir tmp;
  std::vector<TarEntry> entries{{TarEntry::dir, "./a/", "", 0755},
                                {TarEntry::symlink, "./a/link-then-file", "f0"},
                                {TarEntry::hardlink, "./a/hardlink-then-file", "./a/f0"},
                                {TarEntry::file, "./a/file-then-link", "file"}};
  for (int f = 0; f < 300; ++f) entries.push_back({TarEntry::file, "./a/f" + std::to_string(f), std::string(2000, 'a')});
  entries.push_back({TarEntry::file, "./a/x", "old", 0600});
  entries.push_back({TarEntry::file, "./b/y", "y"});
  entries.push_back({TarEntry::file, "./c/z", "z"});
  entries.push_back({TarEntry::file, "./a/x", "new", 0644});
  entries.push_back({TarEntry::file, "./a/link-then-file", "file"});
  entries.push_back({TarEntry::file, "./a/hardlink-then-file", "file"});
  entries.push_back({TarEntry::symlink, "./a/file-then-link", "f1"});
  test::write_tar_gz(tmp / "twice.tar.gz", entries);
  for (int round = 0; round < 10; ++round) {
    const fs::path root = tmp / ("root" + std::to_string(round));
    fs::create_directories(root);
    REQUIRE(extract(tmp / "twice.tar.gz", root));
    CHECK(test::read_file(root / "a/x") == "new");
    CHECK((fs::status(root / "a/x").permissions() & fs::perms::mask) == static_cast<fs::perms>(0644));
    CHECK(fs::is_regular_file(fs::symlink_status(root / "a/link-then-file")));
    CHECK(test::read_file(root / "a/hardlink-then-file") == "file");
    CHECK(fs::hard_link_count(root / "a/f0") == 1);
    CHECK(fs::read_symlink(root / "a/file-then-link") == "f1");
  }
}

// Directories get their modes and times after everything in them is made, symlinks included:
// a symlink cannot be made in a directory that is already read-only (for anyone but root), and
// making one would change the directory's time.
TEST_CASE("a read-only directory with a symlink in it is extracted whole, with its time", "[unit][archive]") {
  TempDir tmp;
  test::write_tar_gz(tmp / "ro.tar.gz", {
      {TarEntry::dir, "./etc/", "", 0755},
      {TarEntry::dir, "./etc/ro/", "", 0555},
      {TarEntry::file, "./etc/ro/file", "x", 0444},
      {TarEntry::symlink, "./etc/ro/link", "file"},
  });
  // "ok", or what is wrong.
  auto check = [&](const fs::path& root) -> std::string {
    auto r = extract(tmp / "ro.tar.gz", root);
    if (!r) return r.error().message;
    struct stat st{};
    if (::stat((root / "etc/ro").c_str(), &st) != 0) return "no etc/ro";
    std::string problems;
    if ((st.st_mode & 07777) != 0555) problems += "etc/ro is not 0555; ";
    if (st.st_mtime != 1700000000) problems += "etc/ro's time changed; ";
    if (fs::read_symlink(root / "etc/ro/link") != "file") problems += "no link; ";
    return problems.empty() ? "ok" : problems;
  };
  fs::create_directories(tmp / "root");
  CHECK(check(tmp / "root") == "ok");
  if (::geteuid() != 0) return;  // the check above ran as a user already
  // As a user (nobody), in a forked child, into a directory of that user's.
  fs::create_directories(tmp / "user");
  REQUIRE(::chown((tmp / "user").c_str(), 65534, 65534) == 0);
  fs::permissions(tmp.path, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fs::permissions(tmp / "ro.tar.gz", fs::perms::others_read, fs::perm_options::add);
  const auto child = in_child([&]() -> std::string {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return "cannot become nobody";
    return check(tmp / "user");
  });
  CHECK(child.said == "ok");
}

// GNU tar records a second name of a symlink as a hard link to it (and a tree walk does the
// same): the link is made after the symlinks.
TEST_CASE("a hard link to a symlink is made, from an archive and from a tree", "[unit][archive]") {
  TempDir tmp;
  test::write_tar_gz(tmp / "a.tar.gz", {
      {TarEntry::file, "./d/x", "x"},
      {TarEntry::symlink, "./d/l", "x"},
      {TarEntry::hardlink, "./d/l2", "./d/l"},
  });
  fs::create_directories(tmp / "from-archive");
  REQUIRE(extract(tmp / "a.tar.gz", tmp / "from-archive"));
  fs::create_directories(tmp / "tree/d");
  test::write_file(tmp / "tree/d/x", "x");
  fs::create_symlink("x", tmp / "tree/d/l");
  REQUIRE(::link((tmp / "tree/d/l").c_str(), (tmp / "tree/d/l2").c_str()) == 0);
  fs::create_directories(tmp / "from-tree");
  REQUIRE(archive::copy_tree(tmp / "tree/d", "d", archive::Policy{tmp / "from-tree", nullptr, nullptr}));
  for (const auto& root : {tmp / "from-archive", tmp / "from-tree"}) {
    INFO(root);
    CHECK(fs::read_symlink(root / "d/l2") == "x");
    CHECK(lstat_ino(root / "d/l") == lstat_ino(root / "d/l2"));
  }
}
