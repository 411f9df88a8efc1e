// The rules file's watch: what counts as a change (a finished write, a rename into place, the
// kubelet's ConfigMap update) and what does not (other files, a file only created).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "file_watch.hpp"
#include "helpers.hpp"

using namespace kmodkit;
using namespace kmodkit::firewall;
namespace fs = std::filesystem;

namespace {

// A ConfigMap volume as the kubelet's atomic writer lays it out: NAME -> ..data/NAME,
// ..data -> ..VERSION/, the files in ..VERSION/.
void configmap_version(const fs::path& dir, const std::string& version, const std::string& rules) {
  fs::create_directory(dir / version);
  kmodkit::test::write_file(dir / version / "fw.rules", rules);
  fs::create_directory_symlink(version, dir / "..data_tmp");
  fs::rename(dir / "..data_tmp", dir / "..data");  // the swap: one rename over the old link
  if (!fs::exists(fs::symlink_status(dir / "fw.rules"))) fs::create_symlink("..data/fw.rules", dir / "fw.rules");
}

}  // namespace

TEST_CASE("the watch sees a rules file written in place, or renamed into place, and nothing else", "[unit][filewatch]") {
  kmodkit::test::TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\n");
  auto w = FileWatch::open((tmp / "fw.rules").string());
  REQUIRE(w);
  CHECK_FALSE(w->changed());
  kmodkit::test::write_file(tmp / "other.rules", "policy allow\n");
  CHECK_FALSE(w->changed());
  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");  // open, write, close
  CHECK(w->changed());
  CHECK_FALSE(w->changed());  // read once
  kmodkit::test::write_file(tmp / "fw.rules.tmp", "policy deny\n");
  fs::rename(tmp / "fw.rules.tmp", tmp / "fw.rules");  // an editor's save
  CHECK(w->changed());
  // Created but not yet written: not a change (it would be read empty); the close is.
  fs::remove(tmp / "fw.rules");
  const int fd = ::open((tmp / "fw.rules").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  REQUIRE(fd >= 0);
  CHECK_FALSE(w->changed());
  CHECK(::write(fd, "policy deny\n", 12) == 12);
  CHECK_FALSE(w->changed());
  ::close(fd);
  CHECK(w->changed());
}

TEST_CASE("the watch sees the kubelet's update of a ConfigMap volume (the ..data swap)", "[unit][filewatch]") {
  kmodkit::test::TempDir tmp;
  configmap_version(tmp.path, "..2026_12_05_08_00_00.1", "policy deny\n");
  auto w = FileWatch::open((tmp / "fw.rules").string());
  REQUIRE(w);
  CHECK_FALSE(w->changed());
  configmap_version(tmp.path, "..2026_12_05_08_01_00.2", "policy allow\n");
  CHECK(w->changed());
  CHECK(kmodkit::test::read_file(tmp / "fw.rules") == "policy allow\n");
  fs::remove_all(tmp / "..2026_12_05_08_00_00.1");  // the kubelet removes the old version
  CHECK_FALSE(w->changed());
}

TEST_CASE("a rules file in a directory that does not exist cannot be watched, and says so", "[unit][filewatch]") {
  kmodkit::test::TempDir tmp;
  auto w = FileWatch::open((tmp / "nowhere" / "fw.rules").string());
  REQUIRE_FALSE(w);
  CHECK(w.error().code == ExitCode::no_input);
  CHECK_THAT(w.error().message, Catch::Contains("cannot watch " + (tmp / "nowhere").string() + " for changes to fw.rules"));
}
