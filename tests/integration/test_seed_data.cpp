// seed-data end to end: the real binary seeding and merging real trees.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <ranges>
#include <regex>
#include <nlohmann/json.hpp>
#include <thread>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"

using namespace kmodkit;
using kmodkit::test::Run;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

Run seed(const std::vector<std::string>& args) { return test::run_binary(KMODKIT_SEED_DATA_BIN, args); }

// An image tree with every kind of entry seed-data must keep.
struct Image {
  TempDir tmp;
  fs::path root = tmp / "image/etc/app";
  fs::path data = tmp / "data";
  Image() {
    fs::create_directories(data);
    test::write_file(root / "app.conf", "port = 80\n");
    test::write_file(root / "sub/secret.conf", "key = 1\n");
    fs::permissions(root / "sub/secret.conf", fs::perms(0600));
    test::write_file(root / "bin/run.sh", "#!/bin/sh\n");
    fs::permissions(root / "bin/run.sh", fs::perms(04755));
    fs::create_symlink("app.conf", root / "current.conf");
    fs::create_symlink("/etc/localtime", root / "localtime");  // outside the tree: kept verbatim
    fs::create_hard_link(root / "app.conf", root / "app.conf.hardlink");
    REQUIRE(::lsetxattr((root / "app.conf").c_str(), "user.kmodkit", "x", 1, 0) == 0);
    REQUIRE(::lchown((root / "sub/secret.conf").c_str(), 1234, 5678) == 0);
    struct timespec times[2] = {{1600000000, 123456789}, {1600000000, 123456789}};
    REQUIRE(::utimensat(AT_FDCWD, (root / "app.conf").c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
    REQUIRE(::mkfifo((root / "pipe").c_str(), 0644) == 0);
    // The tree's own time, set last (it holds symlinks: made after its files, they must not
    // change it on the volume).
    struct timespec dir_times[2] = {{1600000001, 0}, {1600000001, 0}};
    REQUIRE(::utimensat(AT_FDCWD, root.c_str(), dir_times, 0) == 0);
  }
  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> a = {"--data", data.string(), "--tree", root.string() + "=etc/app", "--image-version", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  fs::path vol(const std::string& rel) const { return data / "etc/app" / rel; }
};

struct stat lstat_of(const fs::path& p) {
  struct stat st{};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st;
}

// Every path under a directory with its type and content digest (or link target).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const auto rel = it->path().lexically_relative(dir).string();
    if (rel.starts_with(".kmodkit")) continue;
    if (it->is_symlink()) out[rel] = "-> " + fs::read_symlink(it->path()).string();
    else if (it->is_regular_file()) out[rel] = test::sha256_of(it->path());
    else out[rel] = "dir";
  }
  return out;
}

// How many lines of a run's output contain every one of `needles`.
size_t lines_with(const std::string& output, std::initializer_list<std::string_view> needles) {
  size_t n = 0;
  for (const auto line : std::views::split(output, '\n')) {
    const std::string_view text(line.begin(), line.end());
    if (std::all_of(needles.begin(), needles.end(), [&](std::string_view w) { return text.find(w) != std::string_view::npos; })) ++n;
  }
  return n;
}

// What the exit-73 message of a seed that does not fit says: the volume, the bytes the seed
// needs and the bytes free; nullopt when the output holds no such message.
struct NoRoom {
  std::string volume;
  unsigned long long needed = 0, free = 0;
};
std::optional<NoRoom> no_room(const std::string& output) {
  static const std::regex said("the volume (\\S+) has no room for this seed: it needs ([0-9]+) bytes \\([^)]*\\), "
                               "([0-9]+) are free \\([^)]*\\); nothing on the volume changed");
  std::smatch m;
  if (!std::regex_search(output, m, said)) return std::nullopt;
  return NoRoom{m[1], std::stoull(m[2]), std::stoull(m[3])};
}

}  // namespace

TEST_CASE("first start seeds the tree with links, modes, owners, times and xattrs, then a restart does nothing",
          "[e2e][seed]") {
  Image img;
  auto run = seed(img.args());
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("skipping") && Catch::Contains("pipe"));
  CHECK_THAT(run.last_line, Catch::Contains("added 6, updated 0, kept 0, conflicts 0"));
  CHECK(test::read_file(img.vol("app.conf")) == "port = 80\n");
  CHECK(fs::read_symlink(img.vol("current.conf")) == "app.conf");
  CHECK(fs::read_symlink(img.vol("localtime")) == "/etc/localtime");
  CHECK(lstat_of(img.vol("app.conf")).st_ino == lstat_of(img.vol("app.conf.hardlink")).st_ino);
  CHECK((lstat_of(img.vol("sub/secret.conf")).st_mode & 07777) == 0600);
  CHECK((lstat_of(img.vol("bin/run.sh")).st_mode & 07777) == 04755);
  CHECK(lstat_of(img.vol("sub/secret.conf")).st_uid == 1234);
  CHECK(lstat_of(img.vol("sub/secret.conf")).st_gid == 5678);
  CHECK(lstat_of(img.vol("app.conf")).st_mtim.tv_sec == 1600000000);
  CHECK(lstat_of(img.vol("app.conf")).st_mtim.tv_nsec == 123456789);
  CHECK(lstat_of(img.data / "etc/app").st_mtim.tv_sec == 1600000001);
  char value[8] = {};
  CHECK(::lgetxattr(img.vol("app.conf").c_str(), "user.kmodkit", value, sizeof value) == 1);
  CHECK(std::string(value) == "x");
  CHECK_FALSE(fs::exists(fs::symlink_status(img.vol("pipe"))));
  // seed.json: the image version and the digest of every file seeded.
  auto manifest = nlohmann::json::parse(test::read_file(img.data / ".kmodkit/seed.json"));
  CHECK(manifest["image_version"] == "1");
  CHECK(manifest["files"]["etc/app/sub/secret.conf"]["sha256"] == test::sha256_of(img.root / "sub/secret.conf"));
  CHECK(manifest["files"].size() == 6);
  CHECK(fs::is_empty(img.data / ".kmodkit/staging"));

  auto again = seed(img.args());
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("already seeded from image 1") && Catch::Contains("nothing to do"));
}

TEST_CASE("a new image merges like conffiles: added, updated, kept, conflict beside, dropped left", "[e2e][seed]") {
  Image img;
  REQUIRE(seed(img.args()).code == 0);
  // The operator edits one file, deletes another, and adds one of their own.
  test::write_file(img.vol("sub/secret.conf"), "key = operator\n");
  fs::remove(img.vol("bin/run.sh"));
  test::write_file(img.vol("mine.conf"), "operator's own\n");
  // The new image: a new default, changed defaults (one the operator edited), one dropped.
  test::write_file(img.root / "new.conf", "new\n");
  test::write_file(img.root / "app.conf", "port = 8080\n");
  test::write_file(img.root / "sub/secret.conf", "key = 2\n");
  test::write_file(img.root / "bin/run.sh", "#!/bin/sh\nexec app\n");
  fs::remove(img.root / "current.conf");
  const auto before = snapshot(img.data);

  auto plan = seed(img.args({"--image-version", "2", "--dry-run"}));
  INFO(plan.output);
  CHECK(plan.code == 0);
  CHECK_THAT(plan.output, Catch::Contains("add etc/app/new.conf") && Catch::Contains("update etc/app/app.conf") &&
                              Catch::Contains("conflict etc/app/sub/secret.conf") && Catch::Contains("dropped etc/app/current.conf"));
  CHECK(snapshot(img.data) == before);

  auto run = seed(img.args({"--image-version", "2"}));
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("added 1") && Catch::Contains("conflicts 1") && Catch::Contains("dropped 1"));
  CHECK(test::read_file(img.vol("new.conf")) == "new\n");
  CHECK(test::read_file(img.vol("app.conf")) == "port = 8080\n");           // never changed by the operator: updated
  CHECK(test::read_file(img.vol("sub/secret.conf")) == "key = operator\n");  // the operator's edit is kept
  CHECK(test::read_file(img.vol("sub/secret.conf.kmodkit-new")) == "key = 2\n");
  CHECK_FALSE(fs::exists(img.vol("bin/run.sh")));                           // deleted by the operator: stays deleted
  CHECK(test::read_file(img.vol("mine.conf")) == "operator's own\n");
  CHECK(fs::is_symlink(img.vol("current.conf")));                            // dropped by the image: left in place
  CHECK_THAT(run.output, Catch::Contains("conflict etc/app/sub/secret.conf"));
  CHECK(nlohmann::json::parse(test::read_file(img.data / ".kmodkit/seed.json"))["image_version"] == "2");

  auto again = seed(img.args({"--image-version", "2"}));
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("nothing to do"));
  // --mode once never merges.
  test::write_file(img.root / "newer.conf", "3\n");
  auto once = seed(img.args({"--image-version", "3", "--mode", "once"}));
  CHECK(once.code == 0);
  CHECK_THAT(once.last_line, Catch::Contains("--mode once never merges"));
  CHECK_FALSE(fs::exists(img.vol("newer.conf")));
}

TEST_CASE("a hard link between two defaults stays one file across a merge that updates both", "[e2e][seed]") {
  Image img;
  REQUIRE(seed(img.args()).code == 0);
  {
    std::ofstream rewrite(img.root / "app.conf", std::ios::trunc);  // in place: both names change
    rewrite << "port = 8080\n";
  }
  auto run = seed(img.args({"--image-version", "2"}));
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("updated 2"));
  CHECK(test::read_file(img.vol("app.conf.hardlink")) == "port = 8080\n");
  CHECK(lstat_of(img.vol("app.conf")).st_ino == lstat_of(img.vol("app.conf.hardlink")).st_ino);
}

// Images often link a configuration directory elsewhere (/etc/app -> /opt/app/etc). A tree
// given by such a path is the directory it names: its files are seeded, not the link.
TEST_CASE("a tree given by a symlinked path seeds the directory it names", "[e2e][seed]") {
  Image img;
  const fs::path link = img.tmp / "image/etc/app-link";
  fs::create_symlink(img.root, link);
  auto run = seed({"--data", img.data.string(), "--tree", link.string() + "=etc/app", "--image-version", "1"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("added 6"));
  CHECK(fs::is_directory(fs::symlink_status(img.data / "etc/app")));
  CHECK(test::read_file(img.vol("app.conf")) == "port = 80\n");
  CHECK(lstat_of(img.data / "etc/app").st_mtim.tv_sec == 1600000001);  // the directory's own time
  auto again = seed({"--data", img.data.string(), "--tree", link.string() + "=etc/app", "--image-version", "1"});
  CHECK_THAT(again.last_line, Catch::Contains("nothing to do"));
}

// An operator may point a directory of the defaults elsewhere (a Secret's mount, another
// volume) or make it a file: nothing is written through it, on a merge or on a first seed.
TEST_CASE("a directory the operator made a symlink is theirs: nothing is written through it", "[e2e][seed]") {
  Image img;
  const fs::path outside = img.tmp / "outside";
  fs::create_directories(outside);
  test::write_file(outside / "secret.conf", "key = mounted\n");
  SECTION("on a merge") {
    REQUIRE(seed(img.args()).code == 0);
    fs::remove_all(img.vol("sub"));
    fs::create_symlink(outside, img.vol("sub"));
    fs::remove_all(img.vol("bin"));
    test::write_file(img.vol("bin"), "the operator's file\n");
    test::write_file(img.root / "sub/secret.conf", "key = 2\n");
    test::write_file(img.root / "sub/new.conf", "new\n");
    test::write_file(img.root / "bin/run.sh", "#!/bin/sh\nexec app\n");
    test::write_file(img.root / "app.conf", "port = 8080\n");
    auto run = seed(img.args({"--image-version", "2"}));
    INFO(run.output);
    REQUIRE(run.code == 0);
    CHECK_THAT(run.output, Catch::Contains("keep etc/app/sub/new.conf: etc/app/sub is a symlink on the volume") &&
                               Catch::Contains("keep etc/app/bin/run.sh: etc/app/bin is not a directory on the volume"));
    CHECK(test::read_file(img.vol("app.conf")) == "port = 8080\n");  // the rest merges
  }
  SECTION("on a first seed") {
    fs::create_symlink(outside, img.data / "etc");
    auto run = seed(img.args());
    INFO(run.output);
    REQUIRE(run.code == 0);
    CHECK_THAT(run.output, Catch::Contains("keep etc/app/app.conf: etc is a symlink on the volume"));
  }
  // Nothing was written below the symlink's target.
  CHECK(snapshot(outside) == std::map<std::string, std::string>{{"secret.conf", test::sha256_of(outside / "secret.conf")}});
  CHECK(fs::is_empty(img.data / ".kmodkit/staging"));
}

TEST_CASE("each event is logged once: a skipped FIFO on a first seed, the --mode force warning", "[e2e][seed]") {
  Image img;
  auto first = seed(img.args());
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK(lines_with(first.output, {"skipping", (img.root / "pipe").string()}) == 1);
  CHECK(lines_with(first.output, {"pipe"}) == 1);

  test::write_file(img.data / ".kmodkit/seed.json", "{\"format\": 1");
  auto force = seed(img.args({"--image-version", "2", "--mode", "force"}));
  INFO(force.output);
  REQUIRE(force.code == 0);
  CHECK(lines_with(force.output, {"seed.json is corrupt", "--mode force: treating the volume as never seeded"}) == 1);
  CHECK(lines_with(force.output, {"skipping", "pipe"}) == 1);
}

TEST_CASE("a sparse default keeps its holes on the volume, with the same content and digest", "[e2e][seed]") {
  Image img;
  // 50 MiB, of which three small pieces are data: at the start, in the middle, at the end.
  const fs::path sparse = img.root / "var/sparse.img";
  fs::create_directories(sparse.parent_path());
  {
    const int fd = ::open(sparse.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 50 << 20) == 0);
    for (const off_t at : {off_t{0}, off_t{20 << 20} + 123, off_t{(50 << 20) - 5}}) {
      REQUIRE(::pwrite(fd, "data!", 5, at) == 5);
    }
    ::close(fd);
  }
  REQUIRE(lstat_of(sparse).st_blocks * 512 < (1 << 20));  // the image's file system keeps holes
  auto run = seed(img.args());
  INFO(run.output);
  REQUIRE(run.code == 0);
  const auto seeded = lstat_of(img.vol("var/sparse.img"));
  CHECK(seeded.st_size == 50 << 20);
  CHECK(seeded.st_blocks * 512 < (1 << 20));
  CHECK(test::sha256_of(img.vol("var/sparse.img")) == test::sha256_of(sparse));
  auto manifest = nlohmann::json::parse(test::read_file(img.data / ".kmodkit/seed.json"));
  CHECK(manifest["files"]["etc/app/var/sparse.img"]["sha256"] == test::sha256_of(sparse));

  // A merge copies a changed sparse default the same way.
  {
    const int fd = ::open(sparse.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "more!", 5, off_t{30} << 20) == 5);
    ::close(fd);
  }
  auto merge = seed(img.args({"--image-version", "2"}));
  INFO(merge.output);
  REQUIRE(merge.code == 0);
  CHECK_THAT(merge.last_line, Catch::Contains("updated 1"));
  CHECK(lstat_of(img.vol("var/sparse.img")).st_blocks * 512 < (1 << 20));
  CHECK(test::sha256_of(img.vol("var/sparse.img")) == test::sha256_of(sparse));
}

TEST_CASE("a config file gives the trees and the image version, and a malformed one is exit 78 naming what is wrong",
          "[e2e][seed][config]") {
  Image img;
  test::write_file(img.tmp / "second/x.conf", "x\n");
  const fs::path config = img.tmp / "seed.json";
  // Both forms of a tree, and a version that is a number.
  test::write_file(config, "{\"trees\": [{\"from\": \"" + img.root.string() + "\", \"to\": \"etc/app\"}, \"" +
                               (img.tmp / "second").string() + "=etc/second\"], \"image_version\": 7}\n");
  auto run = seed({"--data", img.data.string(), "--config", config.string()});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK(fs::exists(img.vol("app.conf")));
  CHECK(test::read_file(img.data / "etc/second/x.conf") == "x\n");
  CHECK_THAT(test::read_file(img.data / ".kmodkit/seed.json"), Catch::Contains("\"image_version\": \"7\""));

  TempDir other;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"trees\": [", "not JSON: parse error at line 1, column 12"},
      {"{\"tree\": []}", "not a seed-data config"},
      {"{\"trees\": [3]}", "trees[0] is not"},
      {"{\"trees\": [{\"from\": 5}]}", "trees[0] is not"},
      {"{\"trees\": [], \"image_version\": [1]}", "image_version is not a string or a number"},
      {"{\"trees\": [\"caf\xe9\"]}", "ill-formed UTF-8"},
      // A number too large for a double: the JSON library's out_of_range, not its parse_error
      // (found by fuzzing; it ended the process).
      {"{\"trees\": [], \"image_version\": 1e999}", "number overflow"},
  };
  for (const auto& [text, why] : bad) {
    INFO(text);
    test::write_file(config, text);
    auto refused = seed({"--data", other.path.string(), "--config", config.string()});
    CHECK(refused.code == 78);
    CHECK_THAT(refused.last_line, Catch::Contains(config.string()) && Catch::Contains(why));
    CHECK(fs::is_empty(other.path));
  }
}

TEST_CASE("the environment gives the trees and the version, a POSIX ACL is kept, devices and sockets are skipped",
          "[e2e][seed]") {
  Image img;
  // system.posix_acl_access as the kernel stores it: version 2, then {tag, perm, id} entries:
  // user::rw-, user:1234:r--, group::r--, mask::r--, other::r--.
  const auto entry = [](uint16_t tag, uint16_t perm, uint32_t id) {
    std::string e(8, '\0');
    std::memcpy(e.data(), &tag, 2);
    std::memcpy(e.data() + 2, &perm, 2);
    std::memcpy(e.data() + 4, &id, 4);
    return e;
  };
  const std::string acl = std::string("\x02\0\0\0", 4) + entry(0x01, 6, ~0u) + entry(0x02, 4, 1234) + entry(0x04, 4, ~0u) +
                          entry(0x10, 4, ~0u) + entry(0x20, 4, ~0u);
  REQUIRE(::setxattr((img.root / "app.conf").c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0) == 0);
  // Beside the image's FIFO, a device node and a socket: skipped, as the FIFO is.
  REQUIRE(::mknod((img.root / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = (img.root / "sock").string();
  REQUIRE(sock_path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
  REQUIRE(::bind(sock, reinterpret_cast<const struct sockaddr*>(&addr), sizeof addr) == 0);
  ::close(sock);
  auto run = test::run_binary(KMODKIT_SEED_DATA_BIN, {},
                              {{"KMODKIT_DATA", img.data.string()}, {"KMODKIT_TREE", img.root.string() + "=etc/app"},
                               {"KMODKIT_IMAGE_VERSION", "env-1"}});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(test::read_file(img.data / ".kmodkit/seed.json"), Catch::Contains("\"image_version\": \"env-1\""));
  CHECK_THAT(run.last_line, Catch::Contains("skipped 3"));
  for (const char* special : {"pipe", "null", "sock"}) CHECK_FALSE(fs::exists(fs::symlink_status(img.vol(special))));
  char got[128];
  const ssize_t n = ::getxattr(img.vol("app.conf").c_str(), "system.posix_acl_access", got, sizeof got);
  REQUIRE(n > 0);
  CHECK(std::string(got, static_cast<size_t>(n)) == acl);
}

TEST_CASE("a missing or unreadable default tree is exit 66 and the volume is untouched", "[e2e][seed][faults]") {
  Image img;
  auto run = seed({"--data", img.data.string(), "--tree", (img.tmp / "nowhere").string() + "=etc/app"});
  CHECK(run.code == 66);
  CHECK_THAT(run.last_line, Catch::Contains((img.tmp / "nowhere").string()));
  CHECK(fs::is_empty(img.data));

  // Unreadable: root reads everything, so seed-data runs as nobody, who owns the volume but
  // cannot read one file of the image.
  fs::permissions(img.tmp.path, fs::perms(0755));
  REQUIRE(::chown(img.data.c_str(), 65534, 65534) == 0);
  fs::permissions(img.root / "sub/secret.conf", fs::perms::none);
  auto unreadable = test::run_binary("/usr/bin/setpriv", {"--reuid=65534", "--regid=65534", "--clear-groups", KMODKIT_SEED_DATA_BIN,
                                                         "--data", img.data.string(), "--tree", img.root.string() + "=etc/app"});
  INFO(unreadable.output);
  CHECK(unreadable.code == 66);
  CHECK_THAT(unreadable.last_line, Catch::Contains((img.root / "sub/secret.conf").string()) && Catch::Contains("cannot be read"));
  CHECK_FALSE(fs::exists(img.data / "etc"));
}

TEST_CASE("a file name or link target that is not UTF-8 is exit 65 naming it, before anything is written", "[e2e][seed][faults]") {
  Image img;
  const std::string latin1 = "caf\xe9.conf";
  test::write_file(img.root / latin1, "x\n");
  auto run = seed(img.args());
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("is not UTF-8") && Catch::Contains((img.root / "caf").string()));
  CHECK(fs::is_empty(img.data));

  fs::remove(img.root / latin1);
  fs::create_symlink(latin1, img.root / "link");
  run = seed(img.args());
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("symlink " + (img.root / "link").string()));
  CHECK(fs::is_empty(img.data));

  fs::remove(img.root / "link");
  CHECK(seed(img.args()).code == 0);
}

TEST_CASE("a corrupt seed.json is exit 65 unless --mode force, which keeps the volume's versions", "[e2e][seed][faults]") {
  Image img;
  REQUIRE(seed(img.args()).code == 0);
  test::write_file(img.vol("app.conf"), "port = operator\n");
  test::write_file(img.root / "app.conf", "port = 2\n");
  const std::string good_sha = std::string(64, 'a');
  for (const std::string& manifest : std::vector<std::string>{
           "{\"format\": 1, \"files\": {\"etc/app/app.conf\": {\"sha256\": \"nope\"}}, \"trees\": []}",
           "{\"format\": 1, \"files\": {\"etc/app/app.conf\": {\"sha256\": \"" + good_sha + "\", \"size\": \"big\"}}, \"trees\": []}",
           "{\"format\": 1, \"files\": {}, \"trees\": [3]}",
           "{\"format\": \"1\", \"files\": {}, \"trees\": []}",
           // Numbers a double holds but an integer does not (found by fuzzing: converting them was
           // undefined behaviour).
           "{\"format\": 1e300, \"files\": {}, \"trees\": []}",
           "{\"format\": 1, \"files\": {\"etc/app/app.conf\": {\"sha256\": \"" + good_sha + "\", \"mtime\": 1.7e22}}, \"trees\": []}",
           "{\"format\": 1, \"files\": {\"etc/app/app.conf\": {\"sha256\": \"" + good_sha + "\", \"size\": -1}}, \"trees\": []}",
           "{\"format\": 1, \"files\": {\"etc/app/app.conf\": {\"sha256\": \"" + good_sha + "\"",
       }) {
    INFO(manifest);
    test::write_file(img.data / ".kmodkit/seed.json", manifest);
    auto run = seed(img.args({"--image-version", "2"}));
    CHECK(run.code == 65);
    CHECK_THAT(run.last_line, Catch::Contains("seed.json is corrupt or was edited by hand") && Catch::Contains("--mode force"));
    CHECK(test::read_file(img.vol("app.conf")) == "port = operator\n");
  }

  auto force = seed(img.args({"--image-version", "2", "--mode", "force"}));
  INFO(force.output);
  CHECK(force.code == 0);
  CHECK(test::read_file(img.vol("app.conf")) == "port = 2\n");
  CHECK(test::read_file(img.vol("app.conf.kmodkit-old")) == "port = operator\n");
}

TEST_CASE("read-only and full volumes are exit 73 with nothing half-written, and a rerun with space succeeds",
          "[e2e][seed][faults]") {
  Image img;
  test::write_file(img.root / "big.bin", std::string(3 << 20, 'x'));
  const std::string bin = KMODKIT_SEED_DATA_BIN;
  const std::string args = " --data " + img.data.string() + " --tree " + img.root.string() + "=etc/app --log-format human";
  auto ro = subprocess::run({"unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro none " + img.data.string() + " && exec " + bin + args});
  REQUIRE(ro);
  CHECK(ro->exit_code == 73);
  CHECK_THAT(ro->output, Catch::Contains("Read-only file system"));

  // A 2 MiB volume cannot take 3 MiB: 73, nothing visible, staging empty; then remounted larger.
  const std::string script = "mount -t tmpfs -o size=2m none " + img.data.string() + " && " + bin + args +
                             "; echo \"RC=$?\"; ls -A " + img.data.string() + "; ls -A " + img.data.string() +
                             "/.kmodkit/staging; echo LISTED; mount -o remount,size=16m " + img.data.string() + " && " + bin +
                             args + "; echo \"RC2=$?\"; ls " + img.data.string() + "/etc/app";
  auto full = subprocess::run({"unshare", "-m", "sh", "-c", script});
  REQUIRE(full);
  INFO(full->output);
  CHECK_THAT(full->output, Catch::Contains("RC=73") && Catch::Contains("No space left on device"));
  // The message names the volume, what the seed needs and what is free, and that nothing changed.
  const auto said = no_room(full->output);
  REQUIRE(said);
  CHECK(said->volume == img.data.string());
  CHECK(said->needed >= (3u << 20));
  CHECK(said->free <= (2u << 20));
  CHECK(said->free > 0);
  const auto listed = full->output.substr(full->output.find("RC=73"));
  CHECK_THAT(listed.substr(0, listed.find("LISTED")), !Catch::Contains("etc") && !Catch::Contains("seed."));
  CHECK_THAT(full->output, Catch::Contains("RC2=0") && Catch::Contains("big.bin"));
}

TEST_CASE("a merge that does not fit the volume is exit 73 saying what it needs, and the seeded volume is as it was",
          "[e2e][seed][faults]") {
  Image img;
  const std::string bin = KMODKIT_SEED_DATA_BIN;
  const std::string data = img.data.string();
  const std::string args = " --data " + data + " --tree " + img.root.string() + "=etc/app --log-format human";
  // Every file of the volume, seed.json included, by digest: equal before and after the merge.
  const std::string digests = "(cd " + data + " && find . -type f ! -name lock -print0 | sort -z | xargs -0 sha256sum)";
  const std::string script = "mount -t tmpfs -o size=2m none " + data + " && " + bin + args + " --image-version 1" +
                             " && echo SEEDED && " + digests + " > " + (img.tmp / "before").string() +
                             " && head -c 3145728 /dev/urandom > " + (img.root / "big.bin").string() +
                             " && echo 'port = 2' > " + (img.root / "app.conf").string() + "; " + bin + args +
                             " --image-version 2; echo \"RC=$?\"; " + digests + " > " + (img.tmp / "after").string() +
                             "; ls -A " + data + "/.kmodkit/staging; echo LISTED";
  auto full = subprocess::run({"unshare", "-m", "sh", "-c", script});
  REQUIRE(full);
  INFO(full->output);
  REQUIRE_THAT(full->output, Catch::Contains("SEEDED") && Catch::Contains("RC=73"));
  const auto said = no_room(full->output);
  REQUIRE(said);
  CHECK(said->volume == data);
  CHECK(said->needed >= (3u << 20));
  CHECK(said->free < (2u << 20));
  const auto listed = full->output.substr(full->output.find("RC=73"));
  CHECK(listed.substr(listed.find('\n') + 1, listed.find("LISTED") - listed.find('\n') - 1).empty());
  const std::string before = test::read_file(img.tmp / "before");
  CHECK_THAT(before, Catch::Contains("seed.json") && Catch::Contains("app.conf"));
  CHECK(test::read_file(img.tmp / "after") == before);
}

TEST_CASE("killed with SIGKILL during a first seed or a merge, a rerun ends as an uninterrupted run", "[e2e][seed][faults]") {
  Image img;
  for (int i = 0; i < 3000; ++i) test::write_file(img.root / ("many" + std::to_string(i % 30)) / ("f" + std::to_string(i)), std::string(2000, static_cast<char>('a' + i % 26)));
  // The reference: an uninterrupted seed of the same image into another volume.
  TempDir ref;
  auto ref_args = img.args();
  ref_args[1] = ref.path.string();
  REQUIRE(seed(ref_args).code == 0);
  const auto want = snapshot(ref.path);

  for (int delay_ms : {30, 120, 250}) {
    INFO("killed after " << delay_ms << " ms");
    fs::remove_all(img.data);
    fs::create_directories(img.data);
    std::vector<std::string> argv = {KMODKIT_SEED_DATA_BIN};
    for (const auto& a : img.args()) argv.push_back(a);
    const pid_t pid = test::spawn(argv);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // Whatever the moment: either no tree, or the complete tree.
    if (fs::exists(img.data / "etc/app")) CHECK(snapshot(img.data).size() == want.size());
    auto rerun = seed(img.args());
    INFO(rerun.output);
    CHECK(rerun.code == 0);
    CHECK(snapshot(img.data) == want);
    CHECK(fs::is_empty(img.data / ".kmodkit/staging"));
  }

  // A merge killed part-way, with an operator edit: rerun gives the uninterrupted result and the
  // operator's file is never lost.
  test::write_file(img.vol("app.conf"), "port = operator\n");
  for (int i = 0; i < 3000; i += 2) test::write_file(img.root / ("many" + std::to_string(i % 30)) / ("f" + std::to_string(i)), "v2\n");
  test::write_file(img.root / "app.conf", "port = 2\n");
  std::vector<std::string> argv = {KMODKIT_SEED_DATA_BIN};
  for (const auto& a : img.args({"--image-version", "2"})) argv.push_back(a);
  const pid_t pid = test::spawn(argv);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  CHECK(test::read_file(img.vol("app.conf")) == "port = operator\n");
  auto rerun = seed(img.args({"--image-version", "2"}));
  INFO(rerun.output);
  CHECK(rerun.code == 0);
  CHECK(test::read_file(img.vol("app.conf")) == "port = operator\n");
  CHECK(test::read_file(img.vol("app.conf.kmodkit-new")) == "port = 2\n");
  CHECK(test::read_file(img.vol("many0/f0")) == "v2\n");
  CHECK_THAT(rerun.last_line, Catch::Contains("conflicts 1"));
}

TEST_CASE("two replicas on one volume by mistake: the lock serialises them and both end correct", "[e2e][seed][concurrency]") {
  Image img;
  for (int i = 0; i < 500; ++i) test::write_file(img.root / "many" / ("f" + std::to_string(i)), std::to_string(i));
  std::vector<std::thread> threads;
  std::vector<Run> runs(2);
  for (int i = 0; i < 2; ++i) threads.emplace_back([&, i] { runs[i] = seed(img.args()); });
  for (auto& t : threads) t.join();
  for (const auto& r : runs) {
    INFO(r.output);
    CHECK(r.code == 0);
  }
  const bool one_seeded = (runs[0].output.find("added 506") != std::string::npos) != (runs[1].output.find("added 506") != std::string::npos);
  CHECK(one_seeded);
  CHECK(test::read_file(img.vol("many/f499")) == "499");
}

TEST_CASE("chown: everything written is given to the owner the option names", "[e2e][seed]") {
  Image img;
  auto run = seed(img.args({"--chown", "4321:8765"}));
  INFO(run.output);
  REQUIRE(run.code == 0);
  for (const char* rel : {"app.conf", "sub", "sub/secret.conf", "current.conf"}) {
    INFO(rel);
    CHECK(lstat_of(img.vol(rel)).st_uid == 4321);
    CHECK(lstat_of(img.vol(rel)).st_gid == 8765);
  }
  CHECK(seed(img.args({"--chown", "x:y"})).code == 64);
}
