// init-modules' oci source end to end: the real binary against Debian's docker-registry over TLS with
// token authentication, serving images skopeo pushed (tests/support/make-oci-registry.py).
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <future>
#include <sstream>

#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"

using namespace kmodkit;
using kmodkit::test::Registry;
using kmodkit::test::Run;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Case {
  TempDir tmp;
  Registry registry;
  std::string kver = test::fixture_kernel_release();
  fs::path volume = tmp / "vol";
  Case() { fs::create_directories(volume); }

  std::string image(const std::string& name) const { return registry.host() + "/" + name; }

  Run pull(const std::string& ref, std::vector<std::string> extra = {}, const test::Env& env = {}) const {
    std::vector<std::string> args = {"--kernel-release", kver, "--volume", volume.string(), "--host-root",
                                     (tmp / "no-host").string(), "--sysfs", (tmp / "no-sys").string(),
                                     "--sources", "oci", "--image", ref, "--ca-file", registry.ca_file().string(),
                                     "--retry-delay", "0.05"};
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_init_modules(args, env);
  }

  nlohmann::json manifest() const {
    return nlohmann::json::parse(test::read_file(volume / ".kmodkit/kernels" / (kver + ".json")));
  }

  // Nothing of the kernel is visible: no manifest, no trees, staging empty.
  void check_nothing_published() const {
    CHECK_FALSE(fs::exists(volume / ".kmodkit/kernels" / (kver + ".json")));
    CHECK_FALSE(fs::exists(volume / "usr/src/kernels" / kver));
    CHECK_FALSE(fs::exists(volume / "usr/lib/modules" / kver));
    if (fs::exists(volume / ".kmodkit/staging")) CHECK(fs::is_empty(volume / ".kmodkit/staging"));
  }

  // The driver-toolkit tree is laid whole, with the whiteouts of the upper layer applied and
  // nothing outside the kernel's trees (the image's release file is read, not published).
  void check_complete_tree() const {
    const fs::path headers = volume / "usr/src/kernels" / kver;
    CHECK(fs::exists(headers / "Makefile"));
    CHECK(fs::exists(headers / "scripts/mod/modpost"));
    CHECK(fs::exists(headers / "Module.symvers"));
    CHECK(fs::equivalent(volume / "usr/lib/modules" / kver / "build", headers));
    CHECK(fs::exists(volume / "usr/lib/modules" / kver / "modules.dep"));
    CHECK_FALSE(fs::exists(headers / "stale-file.txt"));
    CHECK_FALSE(fs::exists(volume / "usr/lib/modules" / kver / "extra/old.ko"));
    CHECK(test::read_file(volume / "usr/lib/modules" / kver / "extra/new.ko") == "above the opaque directory\n");
    CHECK_FALSE(fs::exists(volume / "usr/bin/toolkit-tool"));
    CHECK_FALSE(fs::exists(volume / "usr/share/doc/toolkit"));
    for (const auto& e : fs::recursive_directory_iterator(volume / "usr")) {
      INFO(e.path());
      CHECK_FALSE(e.path().filename().string().starts_with(".wh."));
    }
    auto m = manifest();
    CHECK(m["source"] == "oci");
    CHECK(m["headers"] == "usr/src/kernels/" + kver);
  }
};

}  // namespace

TEST_CASE("a driver-toolkit image pulled anonymously over TLS is laid whole, whiteouts applied", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:gzip"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
  CHECK(c.manifest()["location"].get<std::string>().find(Registry::digest_of("kmodkit/dtk:gzip")) != std::string::npos);
}

TEST_CASE("an image with zstd layers is laid whole", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:zstd"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
}

TEST_CASE("a Docker schema 2 image is laid whole", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:docker"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
}

TEST_CASE("an image without the kernel-version label is checked by its driver-toolkit-release.json", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:nolabel"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
}

TEST_CASE("an index with two platforms resolves to the node's, linux/amd64", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:multi"), {"--arch", "amd64"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
  CHECK(c.manifest()["location"].get<std::string>().find(Registry::digest_of("kmodkit/dtk:gzip")) != std::string::npos);
}

TEST_CASE("an image named by digest is pulled", "[oci]") {
  Case c;
  auto run = c.pull(c.registry.host() + "/kmodkit/dtk@" + Registry::digest_of("kmodkit/dtk:gzip"));
  INFO(run.output);
  REQUIRE(run.code == 0);
  c.check_complete_tree();
}

TEST_CASE("a repository that needs a password is pulled with the credentials of a docker config.json", "[oci]") {
  Case c;
  SECTION("without them the token is refused") {
    auto run = c.pull(c.image("kmodkit/private:latest"));
    INFO(run.output);
    CHECK(run.code == 77);
    CHECK(run.last_line.find("kmodkit/private") != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("with them it is laid whole") {
    // base64("puller:s3cret")
    test::write_file(c.tmp / "config.json",
                     R"({"auths": {")" + c.registry.host() + R"(": {"auth": "cHVsbGVyOnMzY3JldA=="}}})");
    auto run = c.pull(c.image("kmodkit/private:latest"), {"--registry-auth", (c.tmp / "config.json").string()});
    INFO(run.output);
    REQUIRE(run.code == 0);
    c.check_complete_tree();
  }
  SECTION("the kubelet's pull secret on the node serves when none is given") {
    test::write_file(c.tmp / "no-host/var/lib/kubelet/config.json",
                     R"({"auths": {"https://)" + c.registry.host() + R"(/v1/": {"username": "puller", "password": "s3cret"}}})");
    auto run = c.pull(c.image("kmodkit/private:latest"));
    INFO(run.output);
    REQUIRE(run.code == 0);
    c.check_complete_tree();
  }
}

TEST_CASE("verified blobs are kept on the volume and reused by the next pull", "[oci]") {
  Case c;
  REQUIRE(c.pull(c.image("kmodkit/dtk:gzip")).code == 0);
  const fs::path blobs = c.volume / ".kmodkit/blobs/sha256";
  REQUIRE(fs::is_directory(blobs));
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(blobs)) {
    CHECK(test::sha256_of(e.path()) == e.path().filename().string());
    ++n;
  }
  CHECK(n == 3);
  // A reused blob is marked used (its mtime), so gc keeps what pulls still use.
  fs::path first = fs::directory_iterator(blobs)->path();
  const struct timespec long_ago[2] = {{1000000000, 0}, {1000000000, 0}};
  for (const auto& e : fs::directory_iterator(blobs)) REQUIRE(::utimensat(AT_FDCWD, e.path().c_str(), long_ago, 0) == 0);
  REQUIRE(c.pull(c.image("kmodkit/dtk:gzip")).code == 0);
  for (const auto& e : fs::directory_iterator(blobs)) {
    struct stat st{};
    REQUIRE(::stat(e.path().c_str(), &st) == 0);
    CHECK(st.st_mtim.tv_sec > std::time(nullptr) - 600);
  }
  // A damaged cached blob is not trusted: it is fetched again.
  test::write_file(first, "damaged");
  auto gzip = c.pull(c.image("kmodkit/dtk:gzip"));
  INFO(gzip.output);
  REQUIRE(gzip.code == 0);
  CHECK(gzip.output.find("from the blob cache") != std::string::npos);
  CHECK(test::sha256_of(first) == first.filename().string());
}

TEST_CASE("three pulls at once on one volume fetch each blob once: the others take them from the blob cache",
          "[oci][concurrency]") {
  Case c;
  std::vector<std::future<Run>> pulls;
  for (int i = 0; i < 3; ++i) pulls.push_back(std::async(std::launch::async, [&c] { return c.pull(c.image("kmodkit/dtk:gzip")); }));
  int fetched = 0, from_cache = 0;
  for (auto& p : pulls) {
    const Run run = p.get();
    INFO(run.output);
    CHECK(run.code == 0);
    if (run.output.find("3 of them from the blob cache") != std::string::npos) ++from_cache;
    else if (run.output.find("3 layers (") != std::string::npos) ++fetched;
  }
  CHECK(fetched == 1);
  CHECK(from_cache == 2);
  size_t blobs = 0;
  for (const auto& e : fs::directory_iterator(c.volume / ".kmodkit/blobs/sha256")) {
    CHECK(test::sha256_of(e.path()) == e.path().filename().string());
    ++blobs;
  }
  CHECK(blobs == 3);
  CHECK(c.manifest()["source"] == "oci");
}

TEST_CASE("the registry's certificate is verified: without the test CA the pull fails", "[oci]") {
  Case c;
  auto run = test::run_init_modules({"--kernel-release", c.kver, "--volume", c.volume.string(), "--host-root",
                                     (c.tmp / "no-host").string(), "--sources", "oci", "--image",
                                     c.image("kmodkit/dtk:gzip"), "--retries", "0"});
  INFO(run.output);
  CHECK(run.code == 69);
  CHECK(run.last_line.find(c.registry.host()) != std::string::npos);
  c.check_nothing_published();
}

TEST_CASE("a malformed --image is a usage error naming it", "[oci]") {
  for (const char* ref : {"Upper/Case:tag", "registry.example/repo@sha256:short", "registry.example/:tag"}) {
    auto run = test::run_init_modules({"--sources", "oci", "--image", ref, "--dry-run"});
    INFO(run.output);
    CHECK(run.code == 64);
    CHECK(run.last_line.find(std::string("'") + ref + "'") != std::string::npos);
  }
}

TEST_CASE("a registry named in --insecure-registry is reached over plain HTTP, and only then", "[oci]") {
  TempDir tmp;
  Registry registry(test::Transport::plain);
  const std::string kver = test::fixture_kernel_release();
  auto pull = [&](const std::string& volume, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--kernel-release", kver, "--volume", (tmp / volume).string(), "--host-root",
                                     (tmp / "no-host").string(), "--sources", "oci", "--image",
                                     registry.host() + "/kmodkit/dtk:gzip", "--ca-file", registry.ca_file().string(),
                                     "--retries", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    fs::create_directories(tmp / volume);
    return test::run_init_modules(args);
  };
  auto refused = pull("vol1", {});
  INFO(refused.output);
  CHECK(refused.code == 69);
  CHECK(refused.last_line.find("https://" + registry.host()) != std::string::npos);
  auto run = pull("vol2", {"--insecure-registry", registry.host()});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK(fs::exists(tmp / "vol2/usr/src/kernels" / kver / "Makefile"));
}

TEST_CASE("a dry run says which image it would pull and writes nothing", "[oci]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/dtk:gzip"), {"--dry-run"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK(run.output.find("would pull") != std::string::npos);
  CHECK_FALSE(fs::exists(c.volume / ".kmodkit/blobs"));
  c.check_nothing_published();
}

TEST_CASE("bad images are refused with a sentence naming them, and nothing is published", "[oci]") {
  Case c;
  SECTION("a manifest whose content does not have the digest it is asked by") {
    const std::string digest = Registry::digest_of("kmodkit/dtk:gzip");
    test::write_file(c.registry.blob_path(digest),
                     test::read_file(c.registry.blob_path(Registry::digest_of("kmodkit/dtk:zstd"))));
    auto run = c.pull(c.registry.host() + "/kmodkit/dtk@" + digest);
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find(digest) != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("a layer whose content does not have its digest") {
    auto manifest = nlohmann::json::parse(test::read_file(c.registry.blob_path(Registry::digest_of("kmodkit/dtk:gzip"))));
    const std::string layer = manifest["layers"][2]["digest"];
    std::string bytes = test::read_file(c.registry.blob_path(layer));
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x55);
    test::write_file(c.registry.blob_path(layer), bytes);
    auto run = c.pull(c.image("kmodkit/dtk:gzip"));
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find(layer) != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("a repository whose token is refused") {
    auto run = c.pull(c.image("kmodkit/refused:latest"));
    INFO(run.output);
    CHECK(run.code == 77);
    CHECK(run.last_line.find("kmodkit/refused") != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("a driver toolkit of another kernel, refused by its label before any layer is pulled") {
    auto run = c.pull(c.image("kmodkit/dtk:stale"));
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find("carries kernel 6.1.0-1-amd64; the node runs " + c.kver) != std::string::npos);
    CHECK_FALSE(fs::exists(c.volume / ".kmodkit/blobs"));
    c.check_nothing_published();
  }
  SECTION("a driver toolkit of another kernel without a label, refused by its tree") {
    auto run = c.pull(c.image("kmodkit/dtk:stale-nolabel"));
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find("carries kernel 6.1.0-1-amd64; the node runs " + c.kver) != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("a layer with an entry that climbs out with '..'") {
    auto run = c.pull(c.image("kmodkit/evil:dotdot"));
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find("../escape.txt") != std::string::npos);
    CHECK_FALSE(fs::exists(c.tmp / "escape.txt"));
    c.check_nothing_published();
  }
  SECTION("a layer that writes through an absolute symlink of a lower one") {
    auto run = c.pull(c.image("kmodkit/evil:symlink"));
    INFO(run.output);
    CHECK(run.code == 65);
    CHECK(run.last_line.find("evil") != std::string::npos);
    c.check_nothing_published();
  }
  SECTION("an index without the node's platform") {
    auto run = c.pull(c.image("kmodkit/dtk:multi"), {"--arch", "s390x"});
    INFO(run.output);
    CHECK(run.code == 66);
    CHECK(run.last_line.find("linux/s390x") != std::string::npos);
    CHECK(run.last_line.find("kmodkit/dtk:multi") != std::string::npos);
    c.check_nothing_published();
  }
}

namespace {

// The rpm fixture's signing key, which signed the packages of the extensions image's repository.
fs::path rpm_fixture_key() { return test::fixtures_dir() / "rpm-repo/RPM-GPG-KEY-kmodkit-test"; }

}  // namespace

TEST_CASE("an image that carries an RPM repository under rpm-ostree's extensions lays R's packages, checked with the given key",
          "[oci][rpm]") {
  Case c;
  auto run = c.pull(c.image("kmodkit/extensions:latest"), {"--image-gpgkey", rpm_fixture_key().string()});
  INFO(run.output);
  REQUIRE(run.code == 0);
  const fs::path headers = c.volume / "usr/src/kernels" / c.kver;
  CHECK(fs::exists(headers / "Makefile"));
  CHECK(fs::exists(headers / "scripts/mod/modpost"));
  CHECK(fs::exists(headers / "Module.symvers"));
  // Only what the packages hold: nothing else of the image, not its repository.
  CHECK_FALSE(fs::exists(c.volume / "usr/share/rpm-ostree"));
  CHECK_FALSE(fs::exists(c.volume / "usr/bin/rpm-ostree-extensions-tool"));
  auto m = c.manifest();
  CHECK(m["source"] == "oci");
  CHECK(m["headers"] == "usr/src/kernels/" + c.kver);
  std::vector<std::string> names;
  for (const auto& p : m["packages"]) {
    names.push_back(p["name"]);
    // Named where they are in the image, not in the scratch directory they were read from.
    const std::string url = p["url"];
    CHECK_THAT(url, Catch::Contains("kmodkit/extensions@sha256:") && Catch::Contains(":/usr/share/rpm-ostree/extensions/"));
  }
  CHECK(std::find(names.begin(), names.end(), "kernel-devel") != names.end());
  CHECK(std::find(names.begin(), names.end(), "kernel-core") != names.end());
  CHECK(std::find(names.begin(), names.end(), "kernel-modules-core") != names.end());
  CHECK(fs::exists(c.volume / "usr/lib/modules" / c.kver / "modules.networking"));
  const std::string location = m["location"];
  CHECK_THAT(location, Catch::Contains("kmodkit/extensions@sha256:") && Catch::Contains("kernel-devel"));
  // The repository was read beside the staging root, and is gone.
  if (fs::exists(c.volume / ".kmodkit/staging")) CHECK(fs::is_empty(c.volume / ".kmodkit/staging"));
}

TEST_CASE("an extensions image without a key to check its packages is a configuration error that asks for --image-gpgkey",
          "[oci][rpm]") {
  Case c;
  // The node's Red Hat release key is looked for under --host-root, which has none here.
  auto run = c.pull(c.image("kmodkit/extensions:latest"));
  INFO(run.output);
  CHECK(run.code == 78);
  CHECK_THAT(run.last_line, Catch::Contains("kmodkit/extensions") && Catch::Contains("RPM-GPG-KEY-redhat-release") &&
                                Catch::Contains("--image-gpgkey"));
  c.check_nothing_published();
}

TEST_CASE("an extensions image whose packages another key signed is refused with exit 65 naming the key id, and laid when the right key is among the given ones", "[oci][rpm]") {
  Case c;
  test::make_gpg_key(c.tmp / "gnupg", "another key <other@kmodkit.invalid>", c.tmp / "other.asc");

  auto run = c.pull(c.image("kmodkit/extensions:latest"), {"--image-gpgkey", (c.tmp / "other.asc").string()});
  INFO(run.output);
  CHECK(run.code == 65);
  // The package is named where it is in the image, not where it was read from.
  CHECK_THAT(run.last_line, Catch::Contains("key " + test::key_id_of(rpm_fixture_key())) &&
                                Catch::Contains("/usr/share/rpm-ostree/extensions/kernel-") && Catch::Contains(".rpm"));
  CHECK_THAT(run.last_line, !Catch::Contains("staging"));
  c.check_nothing_published();

  // Either key of several will do; the environment separates key files with ';', as it does .repo files.
  auto both = c.pull(c.image("kmodkit/extensions:latest"), {},
                     {{"KMODKIT_IMAGE_GPGKEY", (c.tmp / "other.asc").string() + ";" + rpm_fixture_key().string()}});
  INFO(both.output);
  CHECK(both.code == 0);
}
