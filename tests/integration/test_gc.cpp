// Kernel upgrades: use records and `init-modules gc` / --keep-unused-days, end to end on real
// volumes (the kernel_volume fixture, a module kmod-builder really built and cached for it, and
// trees the archive source laid), with last uses set back by utimensat instead of waiting.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <thread>

#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/subprocess.hpp"

using namespace kmodkit;
using kmodkit::test::Run;
using kmodkit::test::TarEntry;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The release the node runs now (never removed), and one another node used two days ago.
const std::string kCurrent = "6.99.0-20-test";
const std::string kRecent = "6.99.0-21-test";

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A headers tree for `kver` as a .tar.gz, and the options that lay it with the archive source.
std::vector<std::string> archive_for(const fs::path& dir, const std::string& kver) {
  const std::string h = "usr/src/linux-headers-" + kver + "/";
  std::vector<TarEntry> entries;
  for (const char* f : {"Makefile", ".config", "Module.symvers", "include/generated/autoconf.h", "scripts/basic/fixdep",
                        "scripts/mod/modpost"}) {
    entries.push_back({TarEntry::file, h + f, std::string(f) + "\n"});
  }
  const fs::path path = dir / (kver + ".tar.gz");
  test::write_tar_gz(path, entries);
  return {"--sources", "archive", "--archive", path.string(), "--sha256", test::sha256_of(path)};
}

Run lay(const fs::path& vol, const std::string& kver, const std::vector<std::string>& extra = {}) {
  return test::run_init_modules(std::vector<std::string>{"--kernel-release", kver, "--volume", vol.string(), "--host-root",
                                                         (vol.parent_path() / "no-host").string()} +
                                archive_for(vol.parent_path(), kver) + extra);
}

Run gc(const fs::path& vol, const std::vector<std::string>& extra) {
  return test::run_init_modules(std::vector<std::string>{"gc", "--volume", vol.string(), "--kernel-release", kCurrent} + extra);
}

// A volume holding the fixture's real kernel (the old one: kmod-builder built, signed, cached and
// installed kmodkit_hello for it) and the trees of kCurrent and kRecent. Made once; each test
// takes a hard-linked copy (copy_of).
const fs::path& template_volume(std::string* old_release) {
  static TempDir dir;
  static std::string kver;
  const fs::path vol = dir / "vol";
  static const fs::path made = vol;
  if (kver.empty()) {
    const std::string release = test::copy_kernel_volume(vol);
    test::copy_tree(test::support_dir() / "kmod-hello", dir / "kmod-hello");
    auto built = test::run_kmod_builder({"--volume", vol.string(), "--kernel-release", release, "--work-dir", dir.path.string(),
                                         "--recipe", (dir / "kmod-hello").string()});
    INFO(built.output);
    REQUIRE(built.code == 0);
    for (const auto& k : {kCurrent, kRecent}) {
      auto laid = lay(vol, k);
      INFO(laid.output);
      REQUIRE(laid.code == 0);
    }
    kver = release;
  }
  *old_release = kver;
  return made;
}

// A copy of the template at <tmp>/vol whose use records and lock are its own files (the copy's
// hard links would share their inodes, and so their times and locks, with the template).
fs::path copy_of_template(const TempDir& tmp, std::string* old_release) {
  const fs::path& from = template_volume(old_release);
  const fs::path vol = tmp / "vol";
  auto r = subprocess::run({"cp", "-al", from.string(), vol.string()});
  REQUIRE(r);
  REQUIRE(r->ok());
  fs::remove_all(vol / ".kmodkit/used");
  fs::remove(vol / ".kmodkit/lock");
  return vol;
}

// Sets a file's mtime (and atime) `days` back.
void set_days_old(const fs::path& p, double days) {
  const auto t = std::chrono::system_clock::now() - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                          std::chrono::duration<double>(days * 86400));
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  const struct timespec ts[2] = {{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)},
                                 {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)}};
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), ts, 0) == 0);
}

// Records a use of `kver` `days` ago, as a run then would have (its use record's mtime).
void set_last_use(const fs::path& vol, const std::string& kver, double days) {
  const fs::path p = vol / ".kmodkit/used" / kver;
  test::write_file(p, "");
  set_days_old(p, days);
}

double days_since_last_use(const fs::path& vol, const std::string& kver) {
  struct stat st{};
  if (::stat((vol / ".kmodkit/used" / kver).c_str(), &st) != 0) return -1;
  return static_cast<double>(std::time(nullptr) - st.st_mtim.tv_sec) / 86400.0;
}

// The cache entries kmod-builder made for `kver`.
int cache_entries_for(const fs::path& vol, const std::string& kver) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(vol / ".kmodkit/cache", ec)) {
    if (!fs::exists(e.path() / "entry.json")) continue;
    if (nlohmann::json::parse(test::read_file(e.path() / "entry.json")).value("kernel_release", "") == kver) ++n;
  }
  return n;
}

// A tree readers trust: the manifest (through the public path) and the headers it lists.
bool complete(const fs::path& vol, const std::string& kver) {
  std::error_code ec;
  return fs::exists(vol / ".kmodkit/kernels" / (kver + ".json"), ec) && fs::exists(vol / "usr/lib/modules" / kver / "build/Makefile", ec);
}

// Nothing of the release is left: no manifest, no public path, no generation, no use record,
// none of kmod-builder's state.
void check_gone(const fs::path& vol, const std::string& kver) {
  INFO("kernel " << kver);
  CHECK_FALSE(fs::exists(fs::symlink_status(vol / ".kmodkit/kernels" / (kver + ".json"))));
  CHECK_FALSE(fs::exists(fs::symlink_status(vol / ".kmodkit/kernels" / kver)));
  CHECK_FALSE(fs::exists(fs::symlink_status(vol / "usr/lib/modules" / kver)));
  CHECK_FALSE(fs::exists(fs::symlink_status(vol / "usr/src" / ("linux-headers-" + kver))));
  CHECK_FALSE(fs::exists(vol / ".kmodkit/used" / kver));
  CHECK_FALSE(fs::exists(vol / ".kmodkit/modules" / kver));
  CHECK(cache_entries_for(vol, kver) == 0);
}

size_t generations(const fs::path& vol) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(vol / ".kmodkit/trees"), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("init-modules and kmod-builder record the use of the tree they serve on the volume", "[e2e][gc]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  set_last_use(vol, old, 30);
  auto found = test::run_init_modules(
      {"--kernel-release", old, "--volume", vol.string(), "--host-root", (tmp / "no-host").string(), "--sources", "volume"});
  INFO(found.output);
  REQUIRE(found.code == 0);
  CHECK(days_since_last_use(vol, old) >= 0);
  CHECK(days_since_last_use(vol, old) < 0.01);

  set_last_use(vol, old, 30);
  test::copy_tree(test::support_dir() / "kmod-hello", tmp / "kmod-hello");
  auto warm = test::run_kmod_builder({"--volume", vol.string(), "--kernel-release", old, "--work-dir", tmp.path.string(), "--recipe",
                                      (tmp / "kmod-hello").string()});
  INFO(warm.output);
  REQUIRE(warm.code == 0);
  CHECK(days_since_last_use(vol, old) >= 0);
  CHECK(days_since_last_use(vol, old) < 0.01);
}

TEST_CASE("gc removes a tree no pod used for more than N days with its cache entries, and keeps a recent one and the node's own", "[e2e][gc]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  REQUIRE(cache_entries_for(vol, old) == 1);
  set_last_use(vol, old, 30);
  set_last_use(vol, kRecent, 2);
  set_last_use(vol, kCurrent, 60);  // old, but the node runs it
  // A tree laid before use records existed counts as used when its manifest was written.
  const std::string unrecorded = "6.99.0-22-test";
  REQUIRE(lay(vol, unrecorded).code == 0);
  fs::remove(vol / ".kmodkit/used" / unrecorded);
  const fs::path manifest = fs::canonical(vol / ".kmodkit/kernels" / (unrecorded + ".json"));
  auto m = nlohmann::json::parse(test::read_file(manifest));
  m["created"] = "2026-01-02T03:04:05Z";
  test::write_file(manifest, m.dump(2));
  // Cache entries of a release whose tree is gone (removed by hand) go too once unused.
  const std::string treeless = "6.99.0-23-test";
  fs::path entry;
  for (const auto& e : fs::directory_iterator(vol / ".kmodkit/cache")) entry = e.path();
  test::copy_tree(entry, vol / ".kmodkit/cache/0000-copy");
  auto e = nlohmann::json::parse(test::read_file(entry / "entry.json"));
  e["kernel_release"] = treeless;
  test::write_file(vol / ".kmodkit/cache/0000-copy/entry.json", e.dump(2));
  set_last_use(vol, treeless, 40);

  auto run = gc(vol, {"--keep-unused-days", "7"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  check_gone(vol, old);
  check_gone(vol, unrecorded);
  check_gone(vol, treeless);
  CHECK_FALSE(fs::exists(vol / ".kmodkit/cache/0000-copy"));
  CHECK(complete(vol, kRecent));
  CHECK(complete(vol, kCurrent));
  CHECK(generations(vol) == 2);
  CHECK(fs::is_empty(vol / ".kmodkit/staging"));
  CHECK_THAT(run.output, Catch::Contains("removed kernel " + old + " (tree, 1 cache entry): last used") &&
                             Catch::Contains("30.0 days ago (use record)") && Catch::Contains("MB freed"));
  CHECK_THAT(run.output, Catch::Contains("removed kernel " + unrecorded + " (tree): last used 2026-01-02T03:04:05Z"));
  CHECK_THAT(run.output, Catch::Contains("removed kernel " + treeless + " (no tree left, 1 cache entry)"));
  CHECK_THAT(run.output, Catch::Contains("keeping kernel " + kCurrent + ": this run serves it"));
  CHECK_THAT(run.output, Catch::Contains("keeping kernel " + kRecent + ": last used"));
  CHECK_THAT(run.last_line, Catch::Contains("3 kernel(s) removed, 2 kept"));

  // A second run finds nothing more to remove.
  auto again = gc(vol, {"--keep-unused-days", "7"});
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("0 kernel(s) removed, 2 kept"));
}

TEST_CASE("a dry run of gc says what would be removed and removes nothing", "[e2e][gc]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  set_last_use(vol, old, 30);
  const size_t before = test::count_entries(vol);
  auto run = gc(vol, {"--keep-unused-days", "7", "--dry-run"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("dry run: would remove kernel " + old + " (tree, 1 cache entry)"));
  CHECK_THAT(run.last_line, Catch::Contains("dry run: 1 kernel(s) would be removed, 2 kept") && Catch::Contains("MB would be freed"));
  CHECK(complete(vol, old));
  CHECK(cache_entries_for(vol, old) == 1);
  CHECK(test::count_entries(vol) == before);
  CHECK(days_since_last_use(vol, old) > 29);
}

TEST_CASE("with 0 days every tree goes but the node's own and one a process holds now, which goes once it is let go", "[e2e][gc][concurrency]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  set_last_use(vol, old, 30);
  set_last_use(vol, kRecent, 0.001);
  // What kmod-builder does while it builds: a shared flock on the release's use record.
  // (--close: the lock stays with flock itself, which the kill below ends, with its sleep.)
  const pid_t holder = test::spawn({"/usr/bin/flock", "--shared", "--close", (vol / ".kmodkit/used" / old).string(), "sleep", "600"},
                                   "/dev/null", test::Session::own);
  bool held = false;
  for (int i = 0; i < 500 && !held; ++i) {
    const int fd = ::open((vol / ".kmodkit/used" / old).c_str(), O_RDONLY | O_CLOEXEC);
    held = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
    ::close(fd);
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(held);
  auto run = gc(vol, {"--keep-unused-days", "0"});
  ::kill(-holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("keeping kernel " + old + ": a process is using it now"));
  CHECK(complete(vol, old));
  CHECK(cache_entries_for(vol, old) == 1);
  check_gone(vol, kRecent);
  CHECK(complete(vol, kCurrent));

  auto after = gc(vol, {"--keep-unused-days", "0"});
  INFO(after.output);
  CHECK(after.code == 0);
  check_gone(vol, old);
  CHECK(complete(vol, kCurrent));
}

TEST_CASE("gc killed with SIGKILL at each rename of a removal leaves a volume the next run finishes consistently", "[e2e][gc][faults]") {
  std::string old;
  template_volume(&old);
  INFO("strace (ci/install-deps.sh installs it) injects the kills");
  REQUIRE(fs::exists("/usr/bin/strace"));
  // The moves into staging. The deletion of staging after them is clear_staging()'s work, which
  // the publish tests kill at every step.
  const std::string calls = "rename,renameat,renameat2";
  bool finished = false;
  for (int n = 1; n < 60 && !finished; ++n) {
    TempDir each;
    const fs::path vol = copy_of_template(each, &old);
    set_last_use(vol, old, 30);
    set_last_use(vol, kRecent, 30);
    const pid_t pid = test::spawn({"/usr/bin/strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + calls, "-e",
                                   "inject=" + calls + ":signal=KILL:when=" + std::to_string(n), KMODKIT_INIT_MODULES_BIN, "gc",
                                   "--volume", vol.string(), "--kernel-release", kCurrent, "--keep-unused-days", "7"});
    int status = 0;
    ::waitpid(pid, &status, 0);
    finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    INFO("killed at call " << n);
    // A tree is whole or not trusted: a manifest never leads to a tree that is partly gone.
    for (const auto& k : {old, kRecent}) {
      if (fs::exists(vol / ".kmodkit/kernels" / (k + ".json"))) {
        CHECK(complete(vol, k));
        CHECK(fs::exists(vol / "usr/src" / ("linux-headers-" + k) / "Makefile"));
      }
    }
    CHECK(complete(vol, kCurrent));
    auto rerun = gc(vol, {"--keep-unused-days", "7"});
    INFO(rerun.output);
    REQUIRE(rerun.code == 0);
    check_gone(vol, old);
    check_gone(vol, kRecent);
    CHECK(complete(vol, kCurrent));
    CHECK(generations(vol) == 1);
    CHECK(fs::is_empty(vol / ".kmodkit/staging"));
    // Nothing of a removed release is left in kernels/ (no dangling link).
    for (const auto& e : fs::directory_iterator(vol / ".kmodkit/kernels")) CHECK(e.path().filename().string().starts_with(kCurrent));
  }
  CHECK(finished);
}

TEST_CASE("a normal run with --keep-unused-days serves its kernel, then removes the trees no pod used for that long", "[e2e][gc]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  set_last_use(vol, old, 30);
  set_last_use(vol, kRecent, 2);
  const std::string next = "6.99.0-24-test";
  auto run = lay(vol, next, {"--keep-unused-days", "7"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK(complete(vol, next));
  CHECK(days_since_last_use(vol, next) >= 0);
  CHECK(days_since_last_use(vol, next) < 0.01);
  check_gone(vol, old);
  CHECK(complete(vol, kRecent));
  CHECK(complete(vol, kCurrent));  // no use record: its manifest is from today
  CHECK_THAT(run.last_line, Catch::Contains("1 kernel(s) removed, 3 kept"));

  // Off by default; a bad value is a usage error naming it.
  set_last_use(vol, kRecent, 30);
  auto off = lay(vol, next);
  CHECK(off.code == 0);
  CHECK(complete(vol, kRecent));
  auto bad = lay(vol, next, {"--keep-unused-days", "many"});
  CHECK(bad.code == 64);
  CHECK_THAT(bad.last_line, Catch::Contains("--keep-unused-days"));
  auto missing = gc(vol, {});
  CHECK(missing.code == 64);
  CHECK_THAT(missing.last_line, Catch::Contains("--keep-unused-days: give the number of days"));
}

TEST_CASE("gc removes the image blobs no pull used for N days and what a killed pull left, and keeps the recent ones", "[e2e][gc][oci]") {
  TempDir tmp;
  std::string old;
  const fs::path vol = copy_of_template(tmp, &old);
  // The oci source's blob cache: blobs named by their digest; a pull that reuses one touches it.
  const fs::path blobs = vol / ".kmodkit/blobs/sha256";
  fs::create_directories(blobs);
  auto blob = [&](const std::string& content, double days) {
    const fs::path p = blobs / digest::sha256_hex(content);
    test::write_file(p, content);
    set_days_old(p, days);
    return p;
  };
  const fs::path stale = blob(std::string(300000, 's'), 30);
  const fs::path recent = blob("recent layer", 2);
  const fs::path partial = blobs / (digest::sha256_hex("cut") + ".partial");
  test::write_file(partial, "cut short by a kill");

  auto dry = gc(vol, {"--keep-unused-days", "7", "--dry-run"});
  INFO(dry.output);
  REQUIRE(dry.code == 0);
  CHECK_THAT(dry.output, Catch::Contains("dry run: would remove 1 image blob"));
  CHECK(fs::exists(stale));
  CHECK(fs::exists(partial));

  auto run = gc(vol, {"--keep-unused-days", "7"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("removed 1 image blob") && Catch::Contains("not used for 7 days"));
  CHECK_FALSE(fs::exists(stale));
  CHECK_FALSE(fs::exists(partial));
  CHECK(fs::exists(recent));
  CHECK(test::sha256_of(recent) == recent.filename().string());
}
