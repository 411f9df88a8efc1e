// Extraction: what is kept, what is refused, and what is rewritten.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
