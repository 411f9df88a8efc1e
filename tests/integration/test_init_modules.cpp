// init-modules end to end: the real binary, a real HTTP server, real Debian packages.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"

using namespace kmodkit;
using kmodkit::test::HttpServer;
using kmodkit::test::Run;
using kmodkit::test::TarEntry;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A private copy of the fixture repository, so a test may damage it.
struct Repo {
  TempDir dir;
  fs::path root = dir / "repo";
  std::string kver = test::fixture_kernel_release();
  Repo() { test::copy_tree(test::fixtures_dir() / "apt-repo", root); }
  std::string line(const HttpServer& server) const { return "deb [trusted=yes] " + server.url() + " stable main"; }
  fs::path deb(std::string_view prefix) const {
    for (const auto& e : fs::directory_iterator(root / "pool/main")) {
      if (e.path().filename().string().starts_with(prefix)) return e.path();
    }
    throw std::runtime_error("no package " + std::string(prefix));
  }
  std::string abi() const { return kver.substr(0, kver.rfind('-')); }
};

std::vector<std::string> base_args(const Repo& repo, const fs::path& volume) {
  return {"--kernel-release", repo.kver, "--volume", volume.string(), "--host-root", (volume.parent_path() / "no-host").string(),
          "--sysfs", (volume.parent_path() / "no-sys").string(), "--retry-delay", "0.05"};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// init-modules with the apt source only, on one repository line.
Run run_apt(const Repo& repo, const std::string& line, const fs::path& volume, std::vector<std::string> extra = {}) {
  return test::run_init_modules(base_args(repo, volume) + std::vector<std::string>{"--sources", "apt", "--repo", line} + extra);
}

// The apt source run against `repo` as it is now, served over HTTP, onto a new volume `<tmp>/vol`;
// `url` gets the server's address.
Run run_served(const Repo& repo, const fs::path& tmp, std::string* url = nullptr) {
  HttpServer server(repo.root);
  if (url != nullptr) *url = server.url();
  fs::create_directories(tmp / "vol");
  return run_apt(repo, repo.line(server), tmp / "vol");
}

// Nothing of the kernel is visible in the volume: no manifest, no headers, staging empty.
void check_nothing_visible(const fs::path& volume, const std::string& kver) {
  CHECK_FALSE(fs::exists(volume / ".kmodkit/kernels" / (kver + ".json")));
  CHECK_FALSE(fs::exists(volume / ("usr/src/linux-headers-" + kver)));
  if (fs::exists(volume / ".kmodkit/staging")) CHECK(fs::is_empty(volume / ".kmodkit/staging"));
}

// Builds a tiny module against the volume's headers with the node's /usr/src hidden, so only
// what init-modules laid out can be used. Returns the vermagic of the result.
std::string build_test_module(const fs::path& volume, const std::string& kver, const fs::path& work) {
  test::write_file(work / "hello/hello.c",
                   "#include <linux/module.h>\n#include <linux/init.h>\n"
                   "static int __init hello_init(void) { pr_info(\"kmodkit hello\\n\"); return 0; }\n"
                   "static void __exit hello_exit(void) {}\n"
                   "module_init(hello_init);\nmodule_exit(hello_exit);\nMODULE_LICENSE(\"GPL\");\n");
  test::write_file(work / "hello/Kbuild", "obj-m := hello.o\n");
  const std::string make = "make -C " + (volume / "usr/lib/modules" / kver / "build").string() + " M=" +
                           (work / "hello").string() + " modules";
  auto built = subprocess::run({"unshare", "-m", "sh", "-c", "mount -t tmpfs none /usr/src && " + make});
  REQUIRE(built);
  INFO(built->output);
  REQUIRE(built->ok());
  auto info = subprocess::run({"modinfo", "-F", "vermagic", (work / "hello/hello.ko").string()});
  REQUIRE(info);
  return info->output;
}

}  // namespace

TEST_CASE("init-modules lays out Debian's headers from an apt repository, and a module builds against them", "[e2e][apt]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules(base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,host,kheaders,apt", "--repo", repo.line(server)});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("kernel " + repo.kver + " ready in") && Catch::Contains("source apt") &&
                                Catch::Contains("linux-kbuild-") && Catch::Contains("files"));
  CHECK_THAT(run.output, Catch::Contains("source host: no host mount"));
  CHECK_THAT(run.output, Catch::Contains("source kheaders:"));
  const auto manifest = test::read_file(tmp / "vol/.kmodkit/kernels" / (repo.kver + ".json"));
  CHECK_THAT(manifest, Catch::Contains("\"source\": \"apt\"") && Catch::Contains(test::sha256_of(repo.deb("linux-kbuild"))));
  // The volume mirrors the root file system: merged /usr, relative links, no absolute include.
  CHECK(fs::read_symlink(tmp / "vol/lib") == "usr/lib");
  CHECK(fs::read_symlink(tmp / "vol/usr/lib/modules" / repo.kver / "build") == "../../../src/linux-headers-" + repo.kver);
  CHECK_THAT(test::read_file(tmp / ("vol/usr/src/linux-headers-" + repo.kver + "/Makefile")), !Catch::Contains("include /"));
  CHECK_FALSE(fs::exists(tmp / "vol/usr/share/doc"));
  CHECK(fs::is_empty(tmp / "vol/.kmodkit/staging"));

  CHECK_THAT(build_test_module(tmp / "vol", repo.kver, tmp.path), Catch::StartsWith(repo.kver + " SMP"));

  // The warm path: the server is gone and nothing is needed from it.
  server.stop();
  auto again = test::run_init_modules(base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,apt", "--repo", "deb http://127.0.0.1:1 stable main"});
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("already on"));
}

namespace {

// Signs a repository's Release as a Debian archive is signed: InRelease (clear-signed) and
// Release.gpg (detached), with a key made for the test. Returns the public keyring's path.
fs::path sign_repository(const fs::path& repo, const fs::path& work) {
  const fs::path home = work / "gnupg";
  fs::create_directories(home);
  fs::permissions(home, fs::perms::owner_all);
  const std::string gpg = "gpg --batch --quiet --homedir " + home.string() + " ";
  const fs::path release = repo / "dists/stable/Release";
  auto r = subprocess::run({"sh", "-c",
                            gpg + "--passphrase '' --quick-gen-key 'kmodkit test archive <archive@example.com>' rsa2048 sign never && " +
                                gpg + "--export > " + (work / "archive.gpg").string() + " && " + gpg + "--clearsign -o " +
                                (repo / "dists/stable/InRelease").string() + " " + release.string() + " && " + gpg +
                                "--detach-sign -o " + (repo / "dists/stable/Release.gpg").string() + " " + release.string() +
                                "; status=$?; gpgconf --homedir " + home.string() + " --kill all; exit $status"});
  REQUIRE(r);
  INFO(r->output);
  REQUIRE(r->ok());
  return work / "archive.gpg";
}

}  // namespace

TEST_CASE("the image's apt configuration is read, and a signed repository is checked with its Signed-By key", "[e2e][apt][signature]") {
  Repo repo;
  TempDir tmp;
  const auto key = sign_repository(repo.root, tmp.path);
  HttpServer server(repo.root);
  fs::create_directories(tmp / "vol");
  test::write_file(tmp / "image/etc/apt/sources.list.d/local.sources",
                   "Types: deb\nURIs: " + server.url() + "\nSuites: stable\nComponents: main\nSigned-By: " + key.string() + "\n");
  test::write_file(tmp / "no-host/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
  auto args = base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "apt", "--apt-root", (tmp / "image").string()};
  auto run = test::run_init_modules(args);
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("node OS debian 12"));

  // The same repository with InRelease changed after signing.
  fs::remove_all(tmp / "vol");
  fs::create_directories(tmp / "vol");
  auto inrelease = test::read_file(repo.root / "dists/stable/InRelease");
  inrelease.replace(inrelease.find("Suite: stable"), 13, "Suite: stabl3");
  test::write_file(repo.root / "dists/stable/InRelease", inrelease);
  auto tampered = test::run_init_modules(args);
  INFO(tampered.output);
  CHECK(tampered.code == 65);
  CHECK_THAT(tampered.last_line, Catch::Contains("InRelease: the signature does not verify"));
  check_nothing_visible(tmp / "vol", repo.kver);

  // Without InRelease apt falls back to Release and Release.gpg; so does init-modules.
  fs::remove(repo.root / "dists/stable/InRelease");
  auto detached = test::run_init_modules(args);
  INFO(detached.output);
  CHECK(detached.code == 0);
}

TEST_CASE("an unsigned repository is refused unless marked trusted=yes", "[e2e][apt][signature]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto run = run_apt(repo, "deb " + server.url() + " stable main", tmp / "vol");
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("Release is not signed (no InRelease, no Release.gpg)"));
  check_nothing_visible(tmp / "vol", repo.kver);
}

TEST_CASE("a dry run says which packages it would use and writes nothing", "[e2e][apt]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules(base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,apt", "--repo", repo.line(server), "--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("would install linux-headers-" + repo.kver));
  CHECK_THAT(run.last_line, Catch::Contains("nothing was written"));
  CHECK(fs::is_empty(tmp / "vol"));
}

TEST_CASE("with no source for the kernel, init-modules exits 66 and lists what each source answered", "[e2e]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  test::write_file(tmp / "termination-log", "");
  auto run = test::run_init_modules({"--kernel-release", "9.9.9-nothing", "--volume", (tmp / "vol").string(),
                                     "--host-root", (tmp / "no-host").string(), "--sysfs", (tmp / "no-sys").string(),
                                     "--repo", repo.line(server)},
                                    {{"KMODKIT_TERMINATION_LOG", (tmp / "termination-log").string()}});
  INFO(run.output);
  CHECK(run.code == 66);
  CHECK_THAT(run.last_line, Catch::Contains("no source has headers for kernel 9.9.9-nothing: volume: no manifest") &&
                                Catch::Contains("host: no host mount") && Catch::Contains("kheaders:") &&
                                Catch::Contains("apt: linux-headers-9.9.9-nothing is in none of the indexes") &&
                                Catch::Contains("; rpm: no enabled rpm repository in /etc/yum.repos.d; oci: no --image given; archive: no --archive given"));
  CHECK_THAT(test::read_file(tmp / "termination-log"), Catch::StartsWith("init-modules: no source has headers"));
}

TEST_CASE("an index that does not match the Release file is refused with exit 65", "[e2e][apt][faults]") {
  Repo repo;
  // Change the index after the Release file recorded its digest.
  auto packages = repo.root / "dists/stable/main/binary-amd64/Packages";
  test::write_file(packages, test::read_file(packages) + "\n");
  auto xz = subprocess::run({"xz", "-kf", packages.string()});
  REQUIRE((xz && xz->ok()));
  TempDir tmp;
  auto run = run_served(repo, tmp.path);
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("Packages.xz: SHA256 mismatch: the Release file says"));
  check_nothing_visible(tmp / "vol", repo.kver);
}

TEST_CASE("a corrupt Packages.xz is reported as a checksum mismatch naming its URL, not as a decompression error", "[e2e][apt][faults]") {
  Repo repo;
  // Damage the compressed index after the Release file recorded its digest: same size, other
  // bytes, so xz's own check fails first while decompressing.
  const auto xz = repo.root / "dists/stable/main/binary-amd64/Packages.xz";
  auto bytes = test::read_file(xz);
  for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  test::write_file(xz, bytes);
  TempDir tmp;
  std::string url;
  auto run = run_served(repo, tmp.path, &url);
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(url + "/dists/stable/main/binary-amd64/Packages.xz: SHA256 mismatch: the Release file says") &&
                                !Catch::Contains("Lzma"));
  check_nothing_visible(tmp / "vol", repo.kver);
}

TEST_CASE("a package that does not match its index is refused with exit 65 and nothing is laid out", "[e2e][apt][faults]") {
  Repo repo;
  // Same name and size, other bytes.
  auto deb = repo.deb("linux-kbuild");
  auto bytes = test::read_file(deb);
  bytes[bytes.size() - 10] ^= 0x55;
  test::write_file(deb, bytes);
  TempDir tmp;
  auto run = run_served(repo, tmp.path);
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(deb.filename().string()));
  check_nothing_visible(tmp / "vol", repo.kver);
}

TEST_CASE("a server that keeps dropping the connection gives exit 69, and a later run succeeds", "[e2e][apt][faults]") {
  Repo repo;
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto args = base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "apt", "--retries", "2"};
  {
    HttpServer flaky(repo.root, {"--drop", "linux-headers-" + repo.abi() + "-common:200000:-1"});
    auto run = test::run_init_modules(args + std::vector<std::string>{"--repo", repo.line(flaky)});
    INFO(run.output);
    CHECK(run.code == 69);
    CHECK_THAT(run.last_line, Catch::Contains("gave up after 3 attempts"));
    check_nothing_visible(tmp / "vol", repo.kver);
  }
  HttpServer good(repo.root, {"--drop", "linux-headers-" + repo.abi() + "-common:300000:1"});
  auto run = test::run_init_modules(args + std::vector<std::string>{"--repo", repo.line(good)});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("resuming at byte"));
}

TEST_CASE("an unreachable repository is service unavailable, exit 69", "[e2e][apt][faults]") {
  Repo repo;
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto run = run_apt(repo, "deb http://127.0.0.1:1 stable main", tmp / "vol", {"--retries", "1"});
  INFO(run.output);
  CHECK(run.code == 69);
}

TEST_CASE("malicious archives are refused with exit 65 and nothing lands outside staging", "[e2e][archive][faults]") {
  const std::vector<std::pair<std::string, std::vector<TarEntry>>> cases = {
      {"contains '..'", {{TarEntry::file, "usr/src/../../../../evil", "x"}}},
      {"has an absolute path", {{TarEntry::file, "/tmp/kmodkit-evil", "x"}}},
      {"leads outside the tree", {{TarEntry::symlink, "usr/src/escape", "../../../../../../etc"}}},
  };
  for (const auto& [expected, entries] : cases) {
    TempDir tmp;
    fs::create_directories(tmp / "vol");
    test::write_tar_gz(tmp / "evil.tar.gz", entries);
    auto run = test::run_init_modules({"--kernel-release", "1.0-evil", "--volume", (tmp / "vol").string(), "--sources",
                                       "archive", "--archive", (tmp / "evil.tar.gz").string(), "--sha256",
                                       test::sha256_of(tmp / "evil.tar.gz")});
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK_THAT(run.last_line, Catch::Contains(expected));
    CHECK(fs::is_empty(tmp / "vol/.kmodkit/staging"));
    CHECK_FALSE(fs::exists(tmp / "vol/usr/src"));
    CHECK_FALSE(fs::exists("/tmp/kmodkit-evil"));
    CHECK_FALSE(fs::exists(tmp / "evil"));
  }
}

TEST_CASE("archives given by path or URL are laid out when their digests match, refused when not", "[e2e][archive]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  // The headers as a plain .tar.xz, the rest as the Debian packages over HTTP.
  fs::create_directories(tmp / "x");
  auto unpack = subprocess::run({"dpkg-deb", "-x", repo.deb("linux-headers-" + repo.kver).string(), (tmp / "x").string()});
  REQUIRE((unpack && unpack->ok()));
  // In a directory whose name is not UTF-8: a path is bytes, and the manifest must still be written.
  const fs::path tarball = tmp / "caf\xe9" / "headers.tar.xz";
  fs::create_directories(tarball.parent_path());
  auto tar = subprocess::run({"tar", "-C", (tmp / "x").string(), "-cJf", tarball.string(), "."});
  REQUIRE((tar && tar->ok()));
  std::vector<std::string> args = {"--kernel-release", repo.kver, "--volume", (tmp / "vol").string(), "--sources", "volume,archive",
                                   "--archive", tarball.string(), "--sha256", test::sha256_of(tarball)};
  for (const char* p : {"linux-headers-", "linux-kbuild"}) {
    auto deb = std::string(p) == "linux-headers-" ? repo.deb("linux-headers-" + repo.abi() + "-common") : repo.deb(p);
    args.insert(args.end(), {"--archive", server.url() + "/pool/main/" + deb.filename().string(), "--sha256", test::sha256_of(deb)});
  }
  auto bad = args;
  bad[bad.size() - 1] = std::string(64, '0');
  auto refused = test::run_init_modules(bad);
  INFO(refused.output);
  CHECK(refused.code == 65);
  CHECK_THAT(refused.last_line, Catch::Contains("SHA256 mismatch: expected 0000"));
  check_nothing_visible(tmp / "vol", repo.kver);

  auto run = test::run_init_modules(args);
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("source archive"));
  CHECK_THAT(test::read_file(tmp / "vol/.kmodkit/kernels" / (repo.kver + ".json")), Catch::Contains("caf\xef\xbf\xbd"));
  CHECK(test::run_init_modules(args).code == 0);  // and a rerun finds it complete
}

TEST_CASE("an archive option without its digest, an unknown source or a zero timeout is a usage error", "[e2e][archive]") {
  TempDir tmp;
  auto run = test::run_init_modules({"--volume", tmp.path.string(), "--archive", "/x.tar.gz"});
  CHECK(run.code == 64);
  CHECK_THAT(run.last_line, Catch::Contains("--archive needs one --sha256 each"));
  auto bad_source = test::run_init_modules({"--volume", tmp.path.string(), "--sources", "volume,floppy"});
  CHECK(bad_source.code == 64);
  CHECK_THAT(bad_source.last_line, Catch::Contains("unknown source 'floppy'"));
  auto no_timeout = test::run_init_modules({"--volume", tmp.path.string(), "--connect-timeout", "0"});
  CHECK(no_timeout.code == 64);
  CHECK_THAT(no_timeout.last_line, Catch::Contains("--connect-timeout: '0' is not more than 0 seconds"));
}

TEST_CASE("the host's own headers and modules tree are copied from the host mount", "[e2e][host]") {
  Repo repo;
  TempDir tmp;
  // A Debian node: its packages unpacked under the host root, plus a modules tree.
  for (const auto& e : fs::directory_iterator(repo.root / "pool/main")) {
    auto r = subprocess::run({"dpkg-deb", "-x", e.path().string(), (tmp / "host").string()});
    REQUIRE((r && r->ok()));
  }
  test::write_file(tmp / "host/lib/modules" / repo.kver / "modules.dep", "kernel/drivers/uio/uio.ko:\n");
  test::write_file(tmp / "host/lib/modules" / repo.kver / "kernel/drivers/uio/uio.ko", "not really ELF");
  test::write_file(tmp / "host/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules({"--kernel-release", repo.kver, "--volume", (tmp / "vol").string(), "--host-root",
                                     (tmp / "host").string(), "--sources", "volume,host"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("source host"));
  CHECK(fs::exists(tmp / "vol/usr/lib/modules" / repo.kver / "kernel/drivers/uio/uio.ko"));
  CHECK(fs::exists(tmp / "vol/usr/lib/modules" / repo.kver / "build/scripts/mod/modpost"));
  // The -common tree the headers' Makefile includes, beside the headers in the tree's generation.
  CHECK(fs::exists(tmp / "vol/usr/lib/modules" / repo.kver / ("build/../linux-headers-" + repo.abi() + "-common/Makefile")));
  const auto manifest = test::read_file(tmp / "vol/.kmodkit/kernels" / (repo.kver + ".json"));
  CHECK_THAT(manifest, Catch::Contains("\"modules\": \"usr/lib/modules/" + repo.kver + "\""));
}

TEST_CASE("kheaders without what a build needs is reported and the next source is used", "[e2e][kheaders]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  test::write_file(tmp / "kh/include/linux/kernel.h", "/* kernel */\n");
  fs::create_directories(tmp / "sys/kernel");
  auto tar = subprocess::run({"tar", "-C", (tmp / "kh").string(), "-cJf", (tmp / "sys/kernel/kheaders.tar.xz").string(), "."});
  REQUIRE((tar && tar->ok()));
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules({"--kernel-release", repo.kver, "--volume", (tmp / "vol").string(), "--sysfs",
                                     (tmp / "sys").string(), "--host-root", (tmp / "no-host").string(), "--sources",
                                     "kheaders,apt", "--repo", repo.line(server)});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("kheaders.tar.xz has the headers but lacks what a module build needs: Makefile"));
  CHECK_THAT(run.last_line, Catch::Contains("source apt"));
}

TEST_CASE("a volume that cannot be written is exit 73", "[e2e][faults]") {
  Repo repo;
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  auto run = subprocess::run({"unshare", "-m", "sh", "-c",
                              "mount -t tmpfs -o ro none " + (tmp / "vol").string() + " && exec " KMODKIT_INIT_MODULES_BIN
                              " --kernel-release " + repo.kver + " --volume " + (tmp / "vol").string() +
                              " --sources volume,archive --archive /nonexistent.tar.gz --sha256 " + std::string(64, 'a')});
  REQUIRE(run);
  INFO(run->output);
  CHECK(run->exit_code == 73);
  CHECK_THAT(run->output, Catch::Contains("Read-only file system"));

  // A volume path that is missing or is a file: 73, the path named once with what is wrong.
  const std::vector<std::string> sources = {"--sources", "volume,archive", "--archive", "/nonexistent.tar.gz", "--sha256",
                                            std::string(64, 'a')};
  auto missing = test::run_init_modules(base_args(repo, tmp / "absent") + sources);
  CHECK(missing.code == 73);
  CHECK_THAT(missing.last_line, Catch::Contains("volume " + (tmp / "absent").string() + ": does not exist"));
  test::write_file(tmp / "file", "x");
  auto file = test::run_init_modules(base_args(repo, tmp / "file") + sources);
  CHECK(file.code == 73);
  CHECK_THAT(file.last_line, Catch::Contains("volume " + (tmp / "file").string() + ": not a directory"));
  CHECK_FALSE(fs::exists(tmp / "absent"));
}

TEST_CASE("killed with SIGKILL mid-extraction, a rerun completes and no partial tree was ever visible", "[e2e][faults]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  const fs::path headers = tmp / ("vol/usr/src/linux-headers-" + repo.abi() + "-common");
  auto args = base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,apt", "--repo", repo.line(server), "--jobs", "1"};

  std::vector<std::string> argv = {KMODKIT_INIT_MODULES_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 2);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  // Wait until extraction is well under way, then kill it.
  bool killed = false;
  for (int i = 0; i < 12000 && !killed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(tmp / "vol/.kmodkit/staging", ec)) {
      if (fs::exists(e.path() / ("root/usr/src/linux-headers-" + repo.abi() + "-common/include/linux"), ec)) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(killed);
  REQUIRE(WIFSIGNALED(status));
  CHECK_FALSE(fs::exists(tmp / "vol/.kmodkit/kernels" / (repo.kver + ".json")));
  CHECK_FALSE(fs::exists(headers));

  auto run = test::run_init_modules(args);
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("left by an interrupted run"));
  CHECK(fs::is_empty(tmp / "vol/.kmodkit/staging"));
  // The same tree as an uninterrupted run.
  TempDir ref;
  fs::create_directories(ref / "vol");
  auto reference = run_apt(repo, repo.line(server), ref / "vol");
  REQUIRE(reference.code == 0);
  CHECK(test::count_entries(tmp / "vol/.kmodkit/kernels" / repo.kver) == test::count_entries(ref / "vol/.kmodkit/kernels" / repo.kver));
}

TEST_CASE("three processes on one volume: one lays out the tree, all exit 0 with one tree", "[e2e][concurrency]") {
  Repo repo;
  TempDir tmp;
  fs::create_directories(tmp / "vol");
  const fs::path log = tmp / "server.log";
  HttpServer server(repo.root);
  auto args = base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,apt", "--repo", repo.line(server)};
  std::vector<std::thread> threads;
  std::vector<Run> runs(3);
  for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { runs[static_cast<size_t>(i)] = test::run_init_modules(args); });
  for (auto& t : threads) t.join();
  int laid_out = 0, found = 0;
  for (const auto& r : runs) {
    INFO(r.output);
    CHECK(r.code == 0);
    if (r.last_line.find("ready in") != std::string::npos) ++laid_out;
    if (r.last_line.find("already on") != std::string::npos) ++found;
  }
  CHECK(laid_out == 1);
  CHECK(found == 2);
  CHECK(fs::is_empty(tmp / "vol/.kmodkit/staging"));
  CHECK(fs::exists(tmp / "vol/usr/lib/modules" / repo.kver / "build/Makefile"));
}

namespace {

// A small headers tree as an archive: what find_headers requires, plus a file named `marker`,
// so a test can tell which archive the volume's tree came from.
fs::path headers_archive(const fs::path& dir, const std::string& kver, const std::string& marker) {
  const std::string h = "usr/src/linux-headers-" + kver + "/";
  std::vector<TarEntry> entries;
  for (const char* f : {"Makefile", ".config", "Module.symvers", "include/generated/autoconf.h", "scripts/basic/fixdep",
                        "scripts/mod/modpost"}) {
    entries.push_back({TarEntry::file, h + f, std::string(f) + "\n"});
  }
  entries.push_back({TarEntry::file, h + marker, marker + "\n"});
  const fs::path path = dir / (marker + ".tar.gz");
  test::write_tar_gz(path, entries);
  return path;
}

std::vector<std::string> archive_args(const fs::path& archive) {
  return {"--archive", archive.string(), "--sha256", test::sha256_of(archive)};
}

// Regular files below a directory (the directory itself may be a symlink).
uint64_t regular_files(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && !e.is_symlink()) ++n;
  }
  return n;
}

// What a reader that follows the documented rule sees of a release's tree: it reads the commit
// link, reads the manifest and the tree in that generation, then reads the link again and
// trusts what it read only if the link did not move. Returns "" when it saw no tree, "retry"
// when the link moved, otherwise "a" or "b" (the marker the manifest names), or a description
// of a half state.
std::string read_tree(const fs::path& vol, const std::string& kver) {
  std::error_code ec;
  const fs::path link = vol / ".kmodkit/kernels" / kver;
  const fs::path first = fs::read_symlink(link, ec);
  if (ec) return "";
  const fs::path gen = vol / ".kmodkit/trees" / first.filename();
  std::string seen;
  std::ifstream in(gen / "manifest.json");
  const std::string manifest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const fs::path headers = gen / "root/usr/src" / ("linux-headers-" + kver);
  const bool a = fs::exists(headers / "only-in-a", ec), b = fs::exists(headers / "only-in-b", ec);
  const bool says_a = manifest.find("only-in-a.tar.gz") != std::string::npos;
  const bool says_b = manifest.find("only-in-b.tar.gz") != std::string::npos;
  if (says_a && a && !b && fs::exists(headers / "Makefile", ec)) seen = "a";
  else if (says_b && b && !a && fs::exists(headers / "Makefile", ec)) seen = "b";
  else seen = "half state in " + first.filename().string() + ": manifest " + (manifest.empty() ? "missing" : says_a ? "of a" : says_b ? "of b" : "unreadable") +
              ", markers" + (a ? " a" : "") + (b ? " b" : "");
  if (fs::read_symlink(link, ec) != first || ec) return "retry";
  return seen;
}

// The volume's generations: the current one (named by the commit link) and those marked
// retired by the publish that replaced them; `other` counts any that are neither.
struct Generations {
  size_t current = 0, retired = 0, other = 0;
};
Generations generations(const fs::path& vol, const std::string& kver) {
  Generations g;
  std::error_code ec;
  const std::string current = fs::read_symlink(vol / ".kmodkit/kernels" / kver, ec).filename().string();
  for (const auto& e : fs::directory_iterator(vol / ".kmodkit/trees")) {
    if (e.path().filename() == current) ++g.current;
    else if (fs::exists(e.path() / "retired")) ++g.retired;
    else ++g.other;
  }
  return g;
}

// A volume and two archives of one release's headers, told apart by a marker file; `args` runs
// init-modules on them with the archive source only (archive_args() adds which one).
struct TwoArchives {
  TempDir tmp;
  std::string kver;
  fs::path a, b, vol;
  std::vector<std::string> args;
  explicit TwoArchives(std::string release) : kver(std::move(release)), vol(tmp / "vol") {
    a = headers_archive(tmp.path, kver, "only-in-a");
    b = headers_archive(tmp.path, kver, "only-in-b");
    fs::create_directories(vol);
    args = {"--kernel-release", kver, "--volume", vol.string(), "--host-root", (tmp / "no-host").string(),
            "--sysfs", (tmp / "no-sys").string(), "--sources", "archive"};
  }
};

}  // namespace

TEST_CASE("a tree on the volume is replaced whole when the sources do not include volume, and the manifest counts what is there", "[e2e][archive][volume]") {
  TempDir tmp;
  const std::string kver = "6.99.0-1-test";
  const auto a = headers_archive(tmp.path, kver, "only-in-a"), b = headers_archive(tmp.path, kver, "only-in-b");
  fs::create_directories(tmp / "vol");
  const std::vector<std::string> base = {"--kernel-release", kver, "--volume", (tmp / "vol").string(), "--host-root",
                                         (tmp / "no-host").string(), "--sysfs", (tmp / "no-sys").string()};
  auto first = test::run_init_modules(base + std::vector<std::string>{"--sources", "archive"} + archive_args(a));
  INFO(first.output);
  REQUIRE(first.code == 0);

  auto second = test::run_init_modules(base + std::vector<std::string>{"--sources", "archive"} + archive_args(b));
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("--sources has no 'volume', so a new one is built and replaces it whole"));
  const fs::path headers = tmp / "vol/usr/src" / ("linux-headers-" + kver);
  CHECK(fs::exists(headers / "only-in-b"));
  CHECK_FALSE(fs::exists(headers / "only-in-a"));  // was left behind, described by no manifest
  const auto manifest = nlohmann::json::parse(test::read_file(tmp / "vol/.kmodkit/kernels" / (kver + ".json")));
  CHECK(manifest["files"].get<uint64_t>() == regular_files(headers) + regular_files(tmp / "vol/usr/lib/modules" / kver));
  CHECK_THAT(manifest["location"].get<std::string>(), Catch::Contains("only-in-b.tar.gz"));

  // With volume first in the list, the complete tree in place is used as it is.
  auto reused = test::run_init_modules(base + std::vector<std::string>{"--sources", "volume,archive"} + archive_args(a));
  INFO(reused.output);
  CHECK(reused.code == 0);
  CHECK_THAT(reused.last_line, Catch::Contains("already on"));
  CHECK(fs::exists(headers / "only-in-b"));
  CHECK(fs::is_empty(tmp / "vol/.kmodkit/staging"));
}

TEST_CASE("the tree a publish replaced stays whole and marked for the readers still on it, and a run after the grace removes it", "[e2e][archive][volume]") {
  TwoArchives t("6.99.0-4-test");
  const auto& [kver, a, b, vol, base] = std::tie(t.kver, t.a, t.b, t.vol, t.args);
  REQUIRE(test::run_init_modules(base + archive_args(a)).code == 0);
  const std::string first = fs::read_symlink(vol / ".kmodkit/kernels" / kver).filename().string();
  auto second = test::run_init_modules(base + archive_args(b));
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("the tree it replaced (" + first + ") stays 60 s for readers still on it"));
  CHECK(read_tree(vol, kver) == "b");
  const fs::path old = vol / ".kmodkit/trees" / first;
  CHECK(fs::exists(old / "retired"));
  CHECK(fs::exists(old / "root/usr/src" / ("linux-headers-" + kver) / "only-in-a"));
  CHECK(fs::exists(old / "root/usr/src" / ("linux-headers-" + kver) / "Makefile"));
  CHECK(generations(vol, kver).retired == 1);

  // Within the grace a later run keeps it; replaced longer ago than that, the next run removes it.
  auto third = test::run_init_modules(base + archive_args(a));
  INFO(third.output);
  REQUIRE(third.code == 0);
  CHECK(fs::exists(old));
  CHECK(generations(vol, kver).retired == 2);
  fs::last_write_time(old / "retired", fs::last_write_time(old / "retired") - std::chrono::seconds(61));
  auto fourth = test::run_init_modules(base + archive_args(b));
  INFO(fourth.output);
  REQUIRE(fourth.code == 0);
  CHECK_THAT(fourth.output, Catch::Contains("removing " + old.string() + ", replaced more than 60 s ago"));
  CHECK_FALSE(fs::exists(old));
  const auto g = generations(vol, kver);
  CHECK(g.current == 1);
  CHECK(g.retired == 2);
  CHECK(g.other == 0);
  CHECK(read_tree(vol, kver) == "b");
}

TEST_CASE("a reader that reads while trees are published never sees a manifest beside another tree or half a tree", "[e2e][archive][volume][concurrency]") {
  TwoArchives t("6.99.0-2-test");
  const auto& [kver, a, b, vol, base] = std::tie(t.kver, t.a, t.b, t.vol, t.args);
  std::atomic<bool> done{false};
  std::vector<int> codes;
  std::thread publisher([&] {
    for (int i = 0; i < 16; ++i) codes.push_back(test::run_init_modules(base + archive_args(i % 2 == 0 ? a : b)).code);
    done = true;
  });
  std::map<std::string, int> seen;
  int public_misses = 0;
  bool published = false;
  const fs::path manifest = vol / ".kmodkit/kernels" / (kver + ".json");
  const fs::path makefile = vol / "usr/lib/modules" / kver / "build/Makefile";
  while (!done) {
    const std::string s = read_tree(vol, kver);
    if (!s.empty()) ++seen[s];
    // Each public path, looked up on its own, is always there once a tree has been published.
    published = published || s == "a" || s == "b";
    std::error_code ec;
    if (published && (!fs::exists(manifest, ec) || !fs::exists(makefile, ec))) ++public_misses;
  }
  publisher.join();
  for (int code : codes) CHECK(code == 0);
  for (const auto& [what, n] : seen) {
    INFO(what << ": " << n);
    CHECK((what == "a" || what == "b" || what == "retry"));
  }
  CHECK(seen["a"] + seen["b"] > 0);
  CHECK(public_misses == 0);
  // The replaced generations stay, marked, for lookups that were still walking into them.
  const auto g = generations(vol, kver);
  CHECK(g.current == 1);
  CHECK(g.retired == 15);
  CHECK(g.other == 0);
}

TEST_CASE("killed with SIGKILL at every rename, link and unlink of a publish, the volume holds the old tree or the new one, whole", "[e2e][archive][volume][faults]") {
  TwoArchives t("6.99.0-3-test");
  const auto& [kver, a, b, vol] = std::tie(t.kver, t.a, t.b, t.vol);
  const std::vector<std::string> base = std::vector<std::string>{KMODKIT_INIT_MODULES_BIN} + t.args + std::vector<std::string>{"--jobs", "1"};
  // strace's fault injection kills the process on entry to the Nth such call: a real kill -9 at
  // each step that changes what is on the volume.
  INFO("strace (ci/install-deps.sh installs it) injects the kills");
  REQUIRE(fs::exists("/usr/bin/strace"));
  const std::string calls = "rename,renameat,renameat2,symlink,symlinkat,unlink,unlinkat,rmdir";
  auto publish = [&](const fs::path& archive, int kill_at) {
    std::vector<std::string> argv;
    if (kill_at > 0) argv = {"/usr/bin/strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + calls,
                             "-e", "inject=" + calls + ":signal=KILL:when=" + std::to_string(kill_at)};
    argv = argv + base + archive_args(archive);
    const pid_t pid = test::spawn(argv);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  // Killed on a first publish (nothing before) and on a replacement (a before, b after).
  for (const auto& [before, next] : {std::pair<std::string, std::string>{"", "a"}, std::pair<std::string, std::string>{"a", "b"}}) {
    bool finished = false;
    for (int n = 1; n < 400 && !finished; ++n) {
      fs::remove_all(vol);
      fs::create_directories(vol);
      if (!before.empty()) REQUIRE(publish(a, 0) == 0);
      const int status = publish(next == "a" ? a : b, n);
      finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      INFO("killed at call " << n << " publishing " << next << " over '" << before << "'");
      const std::string s = read_tree(vol, kver);
      CHECK((s == before || s == next));
      // The next run removes what the killed one left and publishes whole.
      REQUIRE(publish(b, 0) == 0);
      CHECK(read_tree(vol, kver) == "b");
      CHECK(fs::is_empty(vol / ".kmodkit/staging"));
      // What the killed run left is gone; what a publish replaced is marked.
      const auto g = generations(vol, kver);
      CHECK(g.current == 1);
      CHECK(g.other == 0);
    }
    CHECK(finished);
  }
}

TEST_CASE("after init-modules replaces a tree, kmod-builder installs its modules again from its cache", "[e2e][volume][kmod-builder]") {
  Repo repo;
  TempDir tmp;
  const fs::path vol = tmp / "vol";
  const std::string kver = test::copy_kernel_volume(vol);
  const fs::path hello = tmp / "kmod-hello";
  test::copy_tree(test::support_dir() / "kmod-hello", hello);
  const std::vector<std::string> builder = {"--volume", vol.string(), "--kernel-release", kver, "--work-dir", tmp.path.string(),
                                            "--recipe", hello.string()};
  auto built = test::run_kmod_builder(builder);
  INFO(built.output);
  REQUIRE(built.code == 0);
  const fs::path ko = vol / "usr/lib/modules" / kver / "extra/kmodkit_hello/kmodkit_hello.ko";
  REQUIRE(fs::exists(ko));

  std::vector<std::string> args = {"--kernel-release", kver, "--volume", vol.string(), "--host-root", (tmp / "no-host").string(),
                                   "--sources", "archive"};
  for (const auto& e : fs::directory_iterator(repo.root / "pool/main")) args = args + archive_args(e.path());
  auto replaced = test::run_init_modules(args);
  INFO(replaced.output);
  REQUIRE(replaced.code == 0);
  CHECK_THAT(replaced.output, Catch::Contains("held modules kmod-builder installed"));
  CHECK_FALSE(fs::exists(ko));

  auto again = test::run_kmod_builder(builder);
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.output, Catch::Contains("is missing or changed") && Catch::Contains("in the cache"));
  CHECK_THAT(again.last_line, Catch::Contains("0 built, 1 from the cache"));
  CHECK(fs::exists(ko));
}

TEST_CASE("kmod-builder that read a tree which init-modules replaced before it got the lock exits 75, and a rerun installs", "[e2e][volume][kmod-builder][concurrency]") {
  Repo repo;
  TempDir tmp;
  const fs::path vol = tmp / "vol";
  const std::string kver = test::copy_kernel_volume(vol);
  const fs::path hello = tmp / "kmod-hello";
  test::copy_tree(test::support_dir() / "kmod-hello", hello);
  std::vector<std::string> argv = {KMODKIT_INIT_MODULES_BIN, "--kernel-release", kver, "--volume", vol.string(), "--host-root",
                                   (tmp / "no-host").string(), "--sources", "archive", "--jobs", "1"};
  for (const auto& e : fs::directory_iterator(repo.root / "pool/main")) argv = argv + archive_args(e.path());
  const pid_t publisher = test::spawn(argv, tmp / "init-modules.log");
  // kmod-builder reads the tree while init-modules, holding the lock, extracts the new one.
  bool extracting = false;
  for (int i = 0; i < 12000 && !extracting; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(vol / ".kmodkit/staging", ec)) extracting = extracting || fs::exists(e.path() / "root/usr/src", ec);
  }
  REQUIRE(extracting);
  const std::vector<std::string> builder = {"--volume", vol.string(), "--kernel-release", kver, "--work-dir", tmp.path.string(),
                                            "--recipe", hello.string()};
  auto raced = test::run_kmod_builder(builder);
  int status = 0;
  ::waitpid(publisher, &status, 0);
  INFO(test::read_file(tmp / "init-modules.log"));
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  INFO(raced.output);
  CHECK(raced.code == 75);
  CHECK_THAT(raced.last_line, Catch::Contains("was replaced by init-modules while this run read it; run again"));
  CHECK_FALSE(fs::exists(vol / ".kmodkit/modules" / kver / "kmodkit_hello.json"));

  auto again = test::run_kmod_builder(builder);
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK(fs::exists(vol / "usr/lib/modules" / kver / "extra/kmodkit_hello/kmodkit_hello.ko"));
}

namespace {

// Builds a Debian package with dpkg-deb from a file list (path -> content; "->target" makes a symlink).
void build_deb(const fs::path& dir, const std::string& name, const std::string& depends,
               const std::vector<std::pair<std::string, std::string>>& contents) {
  const fs::path root = dir / ("src-" + name);
  test::write_file(root / "DEBIAN/control", "Package: " + name + "\nVersion: 5.15.0-91.101\nArchitecture: amd64\n" +
                                                (depends.empty() ? "" : "Depends: " + depends + "\n") +
                                                "Maintainer: kmodkit tests <t@example.com>\nDescription: test package\n");
  for (const auto& [path, content] : contents) {
    if (content.starts_with("->")) {
      fs::create_directories((root / path).parent_path());
      fs::create_symlink(content.substr(2), root / path);
    } else {
      test::write_file(root / path, content);
    }
  }
  auto r = subprocess::run({"dpkg-deb", "--root-owner-group", "--build", root.string(),
                            (dir / "pool/main" / (name + "_5.15.0-91.101_amd64.deb")).string()});
  REQUIRE(r);
  INFO(r->output);
  REQUIRE(r->ok());
}

}  // namespace

TEST_CASE("an Ubuntu-style repository: flavour-less headers and the modules package are resolved", "[e2e][apt]") {
  TempDir tmp;
  const std::string kver = "5.15.0-91-generic";
  const fs::path repo = tmp / "ubuntu";
  fs::create_directories(repo / "pool/main");
  build_deb(repo, "linux-headers-" + kver, "linux-headers-5.15.0-91, libc6 (>= 2.34), libelf1 (>= 0.142)",
            {{"usr/src/linux-headers-" + kver + "/Makefile", "all:\n"},
             {"usr/src/linux-headers-" + kver + "/.config", "CONFIG_MODULES=y\n"},
             {"usr/src/linux-headers-" + kver + "/Module.symvers", ""},
             {"usr/src/linux-headers-" + kver + "/include/generated/autoconf.h", "#define CONFIG_MODULES 1\n"},
             {"usr/src/linux-headers-" + kver + "/scripts", "->../linux-headers-5.15.0-91/scripts"},
             {"lib/modules/" + kver + "/build", "->/usr/src/linux-headers-" + kver}});
  build_deb(repo, "linux-headers-5.15.0-91", "",
            {{"usr/src/linux-headers-5.15.0-91/scripts/basic/fixdep", "fixdep"},
             {"usr/src/linux-headers-5.15.0-91/scripts/mod/modpost", "modpost"}});
  build_deb(repo, "linux-modules-" + kver, "",
            {{"lib/modules/" + kver + "/kernel/drivers/uio/uio.ko", "not ELF"},
             {"lib/modules/" + kver + "/modules.order", "kernel/drivers/uio/uio.ko\n"},
             {"boot/System.map-" + kver, ""}});
  // An unrelated package the resolver must not take.
  build_deb(repo, "linux-headers-5.15.0-92", "", {{"usr/src/linux-headers-5.15.0-92/Makefile", ""}});
  auto index = subprocess::run({"sh", "-c", "cd " + repo.string() +
                                              " && mkdir -p dists/jammy/main/binary-amd64 && dpkg-scanpackages --arch amd64 pool/main /dev/null "
                                              "| gzip -9 > dists/jammy/main/binary-amd64/Packages.gz && apt-ftparchive release dists/jammy > R && mv R dists/jammy/Release"});
  REQUIRE((index && index->ok()));
  test::write_file(tmp / "host/etc/os-release", "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n");
  HttpServer server(repo);
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules({"--kernel-release", kver, "--volume", (tmp / "vol").string(), "--host-root",
                                     (tmp / "host").string(), "--sysfs", (tmp / "no-sys").string(), "--sources", "volume,host,apt",
                                     "--repo", "deb [trusted=yes] " + server.url() + " jammy main"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("node OS ubuntu 22.04"));
  CHECK_THAT(run.last_line, Catch::Contains("linux-headers-5.15.0-91 5.15.0-91.101") &&
                                Catch::Contains("linux-modules-" + kver) && !Catch::Contains("5.15.0-92"));
  CHECK(fs::exists(tmp / ("vol/usr/lib/modules/" + kver + "/build/scripts/mod/modpost")));
  CHECK_THAT(test::read_file(tmp / ("vol/usr/lib/modules/" + kver + "/modules.dep")), Catch::Contains("kernel/drivers/uio/uio.ko:"));
  CHECK_THAT(test::read_file(tmp / ("vol/.kmodkit/kernels/" + kver + ".json")),
             Catch::Contains("\"modules\": \"usr/lib/modules/" + kver + "\""));
}

TEST_CASE("a flat repository (deb URI DIR/) is read from DIR, its packages from URI", "[e2e][apt]") {
  Repo repo;
  TempDir tmp;
  // The two ways flat repositories are made: an index in a directory of its own naming the
  // packages from the archive root, and an index beside the packages ("deb URI ./").
  auto made = subprocess::run({"sh", "-c", "set -e; cd " + repo.root.string() +
                                             "; mkdir -p flat beside"
                                             "; dpkg-scanpackages pool/main /dev/null 2>/dev/null | xz > flat/Packages.xz"
                                             "; apt-ftparchive release flat > R && mv R flat/Release"
                                             "; cp pool/main/*.deb beside/ && cd beside"
                                             "; dpkg-scanpackages . /dev/null 2>/dev/null | gzip > Packages.gz"
                                             "; apt-ftparchive release . > R && mv R Release"});
  REQUIRE(made);
  INFO(made->output);
  REQUIRE(made->ok());
  HttpServer server(repo.root);
  for (const auto& [name, line] : {std::pair{"flat", "deb [trusted=yes] " + server.url() + " flat/"},
                                   std::pair{"beside", "deb [trusted=yes] " + server.url() + "/beside ./"}}) {
    SECTION(name) {
      fs::create_directories(tmp / "vol");
      auto run = run_apt(repo, line, tmp / "vol");
      INFO(run.output);
      REQUIRE(run.code == 0);
      CHECK_THAT(run.last_line, Catch::Contains("ready in") && Catch::Contains("linux-kbuild-"));
      CHECK(fs::exists(tmp / "vol/usr/lib/modules" / repo.kver / "build/scripts/mod/modpost"));
    }
  }
  SECTION("a flat index that does not match its Release file is refused") {
    test::write_file(repo.root / "flat/Release",
                     std::regex_replace(test::read_file(repo.root / "flat/Release"), std::regex(" [0-9a-f]{64} "), " " + std::string(64, '0') + " "));
    fs::create_directories(tmp / "vol");
    auto run = run_apt(repo, "deb [trusted=yes] " + server.url() + " flat/", tmp / "vol");
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK_THAT(run.last_line, Catch::Contains("flat/Packages.xz: SHA256 mismatch"));
  }
}

TEST_CASE("an expired Release file is refused with exit 65 unless the line says check-valid-until=no", "[e2e][apt][faults]") {
  Repo repo;
  TempDir tmp;
  const fs::path release = repo.root / "dists/stable/Release";
  test::write_file(release, "Valid-Until: Sat, 01 Jan 2022 00:00:00 UTC\n" + test::read_file(release));
  HttpServer server(repo.root);
  fs::create_directories(tmp / "vol");
  auto run = run_apt(repo, repo.line(server), tmp / "vol");
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("/dists/stable/Release expired on Sat, 01 Jan 2022 00:00:00 UTC"));
  check_nothing_visible(tmp / "vol", repo.kver);

  auto unchecked = run_apt(repo, "deb [trusted=yes check-valid-until=no] " + server.url() + " stable main", tmp / "vol", {"--dry-run"});
  INFO(unchecked.output);
  CHECK(unchecked.code == 0);
  CHECK_THAT(unchecked.output, Catch::Contains("would install linux-headers-" + repo.kver));
}

TEST_CASE("a node that is not Debian or Ubuntu is not looked up in apt repositories", "[e2e][apt]") {
  TempDir tmp;
  test::write_file(tmp / "host/usr/lib/os-release", "ID=\"rhcos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"4.14\"\n");
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules({"--kernel-release", "5.14.0-284.el9.x86_64", "--volume", (tmp / "vol").string(),
                                     "--host-root", (tmp / "host").string(), "--sysfs", (tmp / "no-sys").string(),
                                     "--sources", "apt", "--repo", "deb http://127.0.0.1:1 stable main"});
  INFO(run.output);
  CHECK(run.code == 66);
  CHECK_THAT(run.last_line, Catch::Contains("apt: the node runs rhcos 4.14, not Debian or Ubuntu"));
}

TEST_CASE("--help lists every option with its environment variable and default", "[e2e]") {
  auto run = test::run_init_modules({"--help"});
  CHECK(run.code == 0);
  for (const char* text : {"--kernel-release", "KMODKIT_KERNEL_RELEASE", "--sources", "default volume,host,kheaders,apt,rpm,oci,archive",
                           "--rpm-repo", "KMODKIT_RPM_REPO", "--releasever", "--basearch",
                           "--dry-run", "--log-format", "Exit codes:"}) {
    CHECK_THAT(run.output, Catch::Contains(text));
  }
}

TEST_CASE("a process that finds the volume locked waits, saying so, and gives up after --lock-timeout with exit 75", "[e2e][concurrency]") {
  Repo repo;
  HttpServer server(repo.root);
  TempDir tmp;
  fs::create_directories(tmp / "vol/.kmodkit");
  const std::string lock = (tmp / "vol/.kmodkit/lock").string();
  auto args = base_args(repo, tmp / "vol") + std::vector<std::string>{"--sources", "volume,apt", "--repo", repo.line(server)};

  // Another holder that never lets go within the timeout.
  pid_t holder = ::fork();
  if (holder == 0) {
    ::execlp("flock", "flock", "-o", lock.c_str(), "sleep", "20", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto gave_up = test::run_init_modules(args + std::vector<std::string>{"--lock-timeout", "1"});
  INFO(gave_up.output);
  CHECK(gave_up.code == 75);
  CHECK_THAT(gave_up.last_line, Catch::Contains("gave up waiting for the lock"));
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);

  // A holder that finishes after a while: the waiter logs, then does the work.
  holder = ::fork();
  if (holder == 0) {
    ::execlp("flock", "flock", "-o", lock.c_str(), "sleep", "6", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto waited = test::run_init_modules(args);
  ::waitpid(holder, nullptr, 0);
  INFO(waited.output);
  CHECK(waited.code == 0);
  CHECK_THAT(waited.output, Catch::Contains("held by another process"));
}

TEST_CASE("an RHCOS-style host: /usr/src/kernels and an absolute build link are laid out relative", "[e2e][host]") {
  TempDir tmp;
  const std::string kver = "5.14.0-284.30.1.el9_2.x86_64";
  const fs::path headers = tmp / ("host/usr/src/kernels/" + kver);
  for (const char* f : {"Makefile", ".config", "Module.symvers", "include/generated/autoconf.h", "scripts/basic/fixdep",
                        "scripts/mod/modpost"}) {
    test::write_file(headers / f, std::string(f) + "\n");
  }
  test::write_file(tmp / ("host/usr/lib/modules/" + kver + "/modules.dep"), "");
  fs::create_symlink("/usr/src/kernels/" + kver, tmp / ("host/usr/lib/modules/" + kver + "/build"));
  fs::create_symlink("usr/lib", tmp / "host/lib");
  test::write_file(tmp / "host/usr/lib/os-release", "ID=\"rhcos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"4.14\"\n");
  fs::create_directories(tmp / "vol");
  auto run = test::run_init_modules({"--kernel-release", kver, "--volume", (tmp / "vol").string(), "--host-root",
                                     (tmp / "host").string(), "--sysfs", (tmp / "no-sys").string()});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("node OS rhcos 4.14"));
  CHECK_THAT(run.last_line, Catch::Contains("source host (" + (tmp / ("host/usr/src/kernels/" + kver)).string()));
  CHECK(fs::read_symlink(tmp / ("vol/usr/lib/modules/" + kver + "/build")) == "../../../src/kernels/" + kver);
  CHECK(test::read_file(tmp / ("vol/usr/lib/modules/" + kver + "/build/scripts/mod/modpost")) == "scripts/mod/modpost\n");
}
