// kmod-builder end to end: the real binary building igb_uio (Debian's dpdk-kmods-dkms source)
// and the project's test module against Debian's real 6.1 headers, laid out by init-modules.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "helpers.hpp"
#include "kmod_builder_setup.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/text.hpp"
#include "modinfo.hpp"
#include "signing.hpp"
#include "recipe.hpp"
#include "signing.hpp"

using namespace kmodkit;
using kmodkit::test::Run;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

using kmodkit::test::KmodBuilderSetup;
using kmodkit::test::cache_entries;
using kmodkit::test::count;
using kmodkit::test::modinfo_field;

TEST_CASE("igb_uio and the test module build against the real headers, are signed, installed and depmod'ed",
          "[e2e][kmod-builder]") {
  KmodBuilderSetup s;
  auto run = s.build({"--recipe", "igb_uio," + s.hello.string()});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("2 built, 0 from the cache"));
  CHECK_THAT(run.output, Catch::Contains("probes: HAVE_ARG_TX_QUEUE"));

  for (const auto& [recipe, module] : {std::pair{"igb_uio", "igb_uio"}, std::pair{"kmodkit_hello", "kmodkit_hello"}}) {
    INFO(module);
    const fs::path ko = s.installed(recipe, module);
    REQUIRE(fs::is_regular_file(ko));
    // libkmod reads the vermagic and the signature back, and they match the kernel and the certificate.
    auto info = kmod_builder::read_module_info(ko);
    REQUIRE(info);
    CHECK_THAT(info->vermagic, Catch::StartsWith(s.kver + " SMP preempt mod_unload modversions"));
    CHECK(info->signer == "kmodkit test signing key");
    CHECK(info->sig_key == s.key.serial);
    CHECK(info->sig_hashalgo == "sha256");  // the kernel's CONFIG_MODULE_SIG_HASH
    CHECK(kmod_builder::signing::verify(test::read_file(ko), s.key.cert_der));
  }
  // make variables, include directories and the probe reached the compiler.
  CHECK(modinfo_field(s.installed("kmodkit_hello", "kmodkit_hello"), "kmodkit_greeting") == "hello");
  CHECK(modinfo_field(s.installed("kmodkit_hello", "kmodkit_hello"), "kmodkit_probe") == "ndo_tx_timeout has txqueue");
  // depmod ran on the volume.
  const auto dep = test::read_file(s.vol / "usr/lib/modules" / s.kver / "modules.dep");
  CHECK_THAT(dep, Catch::Contains("extra/igb_uio/igb_uio.ko:") && Catch::Contains("extra/kmodkit_hello/kmodkit_hello.ko:"));
  // kbuild ran in the headers on the volume, from a private copy of the sources.
  const auto record = nlohmann::json::parse(test::read_file(s.record("igb_uio")));
  CHECK(record["make"][2] == (s.vol / "usr/src/linux-headers-" += s.kver).string());
  CHECK_THAT(record["make"][3].get<std::string>(), Catch::StartsWith("M=" + s.tmp.path.string() + "/kmod-builder.igb_uio"));
  CHECK(record["source"] == "/usr/src/dpdk-kmods-0~20220829+git");
  // The private build directories are gone; the key is nowhere on the volume.
  for (const auto& e : fs::directory_iterator(s.tmp.path)) CHECK_THAT(e.path().filename().string(), !Catch::StartsWith("kmod-builder."));
  const auto key_text = test::read_file(s.key.key);
  const auto key_body = key_text.substr(key_text.find('\n') + 1, 64);
  auto grep = subprocess::run({"grep", "-rlF", key_body, s.vol.string()});
  REQUIRE(grep);
  CHECK(grep->output.empty());

  // status says what is built for which kernel, signed by whom, from which sources.
  auto status = test::run_kmod_builder({"status", "--volume", s.vol.string()});
  INFO(status.output);
  CHECK(status.code == 0);
  CHECK_THAT(status.output, Catch::Contains(s.kver + "  igb_uio 0~20220829+git") &&
                                Catch::Contains("extra/kmodkit_hello/kmodkit_hello.ko") &&
                                Catch::Contains("by 'kmodkit test signing key' key " + s.key.serial) &&
                                Catch::Contains("sources /usr/src/dpdk-kmods-0~20220829+git"));
  auto status_json = test::run_kmod_builder({"status", "--volume", s.vol.string(), "--json"});
  REQUIRE(status_json.code == 0);
  CHECK(nlohmann::json::parse(status_json.output).size() == 2);

  // The second run (every pod restart) finds everything installed and builds nothing.
  auto again = s.build({"--recipe", "igb_uio," + s.hello.string()});
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("2 recipe(s) up to date"));
  CHECK(count(again.output, ": building against") == 0);
}

TEST_CASE("the cache: a rebuild of nothing is a hit, a change in any input builds again", "[e2e][kmod-builder][cache]") {
  KmodBuilderSetup s;
  const std::vector<std::string> hello = {"--recipe", s.hello.string()};
  REQUIRE(s.build(hello).code == 0);
  REQUIRE(cache_entries(s.vol) == 1);

  // The installed module is lost (a new node's volume, an operator's rm): installed from the cache.
  fs::remove_all(s.vol / "usr/lib/modules" / s.kver / "extra");
  auto hit = s.build(hello);
  INFO(hit.output);
  CHECK(hit.code == 0);
  CHECK_THAT(hit.output, Catch::Contains("in the cache"));
  CHECK(count(hit.output, ": building against") == 0);
  CHECK(fs::exists(s.installed("kmodkit_hello", "kmodkit_hello")));

  struct Change {
    const char* what;
    std::function<void()> apply;
    std::vector<std::string> extra;
  };
  const fs::path build = s.vol / ("usr/src/linux-headers-" + s.kver);
  const test::SigningKey other = test::make_signing_key(s.tmp / "other-keys", "another key");
  const std::vector<Change> changes = {
      {"a source file", [&] { test::write_file(s.hello / "kmodkit_hello.c", test::read_file(s.hello / "kmodkit_hello.c") + "\n// changed\n"); }, {}},
      {"the recipe", [&] {
         auto r = test::read_file(s.hello / "kmodkit-recipe.json");
         test::write_file(s.hello / "kmodkit-recipe.json", std::regex_replace(r, std::regex("hello\\\\\""), "hi\\\""));
       }, {}},
      {"the headers' .config", [&] { test::write_file(build / ".config", test::read_file(build / ".config") + "# changed\n"); }, {}},
      {"Module.symvers", [&] { test::write_file(build / "Module.symvers", test::read_file(build / "Module.symvers") + "0x00000000\tkmodkit_x\tvmlinux\tEXPORT_SYMBOL\t\n"); }, {}},
      {"the hash", [] {}, {"--hash", "sha512"}},
      {"the compiler flags", [] {}, {"--cc", "gcc-12"}},
      {"the signing certificate", [] {}, {"--signing-key", other.key.string(), "--signing-cert", other.cert_der.string()}},
  };
  size_t entries = 1;
  std::vector<std::string> extra;
  for (const auto& c : changes) {
    INFO(c.what);
    c.apply();
    extra.insert(extra.end(), c.extra.begin(), c.extra.end());
    auto args = hello;
    args.insert(args.end(), extra.begin(), extra.end());
    auto run = s.build(args);
    INFO(run.output);
    CHECK(run.code == 0);
    CHECK(count(run.output, ": building against") == 1);
    CHECK(cache_entries(s.vol) == ++entries);
  }
  auto info = kmod_builder::read_module_info(s.installed("kmodkit_hello", "kmodkit_hello"));
  REQUIRE(info);
  CHECK(info->signer == "another key");
  CHECK(info->sig_hashalgo == "sha512");
  CHECK(modinfo_field(s.installed("kmodkit_hello", "kmodkit_hello"), "kmodkit_greeting") == "hi");
}

TEST_CASE("a source in a directory whose name is not UTF-8 builds, and its record shows a replacement character",
          "[e2e][kmod-builder]") {
  KmodBuilderSetup s;
  const fs::path latin1 = s.tmp / "caf\xe9";
  fs::copy(s.hello, latin1, fs::copy_options::recursive);
  auto run = s.build({"--recipe", latin1.string()});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK(fs::exists(s.installed("kmodkit_hello", "kmodkit_hello")));
  auto list = test::run_kmod_builder({"status", "--volume", s.vol.string(), "--json"});
  CHECK_THAT(list.output, Catch::Contains("caf\xef\xbf\xbd"));
}

TEST_CASE("a hand-edited record: a build reinstalls from the cache, status and load name the record with exit 65",
          "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  const std::vector<std::string> hello = {"--recipe", s.hello.string()};
  REQUIRE(s.build(hello).code == 0);
  const fs::path record = s.vol / ".kmodkit/modules" / s.kver / "kmodkit_hello.json";
  const std::string good = test::read_file(record);

  test::write_file(record, std::regex_replace(good, std::regex("\"key\": \"[0-9a-f]+\""), "\"key\": 5"));
  auto rebuilt = s.build(hello);
  INFO(rebuilt.output);
  CHECK(rebuilt.code == 0);
  CHECK_THAT(rebuilt.output, Catch::Contains("in the cache"));
  CHECK(test::read_file(record).find("\"key\": 5") == std::string::npos);

  test::write_file(record, std::regex_replace(test::read_file(record), std::regex("\"path\": \"[^\"]+\""), "\"path\": 5"));
  auto status = test::run_kmod_builder({"status", "--volume", s.vol.string()});
  CHECK(status.code == 65);
  CHECK_THAT(status.last_line, Catch::Contains(record.string() + " is not a kmod-builder record"));
  auto load = test::run_kmod_builder({"load", "--volume", s.vol.string(), "--kernel-release", s.kver, "--recipe", "kmodkit_hello", "--dry-run"});
  CHECK(load.code == 65);
  CHECK_THAT(load.last_line, Catch::Contains(record.string() + " is not a kmod-builder record"));
}

TEST_CASE("a broken source gives exit 65 with the compiler's error, the log on the volume, nothing installed",
          "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  test::write_file(s.hello / "kmodkit_hello.c", test::read_file(s.hello / "kmodkit_hello.c") + "\nstatic int broken(void) { return 1 }\n");
  auto run = s.build({"--recipe", s.hello.string()});
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("kmodkit_hello.c:") && Catch::Contains("error: expected") &&
                                Catch::Contains(".kmodkit/logs/" + s.kver + "/kmodkit_hello.log"));
  CHECK_THAT(test::read_file(s.vol / ".kmodkit/logs" / s.kver / "kmodkit_hello.log"), Catch::Contains("error:"));
  CHECK_FALSE(fs::exists(s.vol / "usr/lib/modules" / s.kver / "extra"));
  CHECK_FALSE(fs::exists(s.record("kmodkit_hello")));
  CHECK(cache_entries(s.vol) == 0);
  CHECK(fs::is_empty(s.vol / ".kmodkit/staging"));
}

TEST_CASE("headers built by another compiler major version are refused unless allowed", "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  const fs::path config = s.vol / ("usr/src/linux-headers-" + s.kver) / ".config";
  auto text = test::read_file(config);
  text = std::regex_replace(text, std::regex("CONFIG_CC_VERSION_TEXT=\"[^\"]*\""),
                            "CONFIG_CC_VERSION_TEXT=\"gcc-11 (Debian 11.3.0-12) 11.3.0\"");
  test::write_file(config, text);
  auto run = s.build({"--recipe", s.hello.string()});
  INFO(run.output);
  CHECK(run.code == 78);
  CHECK_THAT(run.last_line, Catch::Contains("gcc-11 (Debian 11.3.0-12) 11.3.0") && Catch::Contains("12.2.0") &&
                                Catch::Contains("--allow-compiler-mismatch"));
  CHECK_FALSE(fs::exists(s.installed("kmodkit_hello", "kmodkit_hello")));

  auto allowed = s.build({"--recipe", s.hello.string(), "--allow-compiler-mismatch"});
  INFO(allowed.output);
  CHECK(allowed.code == 0);
  CHECK_THAT(allowed.output, Catch::Contains("building anyway"));
}

TEST_CASE("a module built against headers of another release is refused before signing", "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  // A tree that claims release X but whose build link leads to the headers of another release.
  const std::string other = s.kver.substr(0, s.kver.find('-')) + "-999-amd64";
  auto manifest = test::read_file(s.vol / ".kmodkit/kernels" / (s.kver + ".json"));
  test::write_file(s.vol / ".kmodkit/kernels" / (other + ".json"),
                   std::regex_replace(manifest, std::regex("\"kernel_release\": \"" + s.kver), "\"kernel_release\": \"" + other));
  fs::create_directories(s.vol / "usr/lib/modules" / other);
  fs::create_directory_symlink("../../../src/linux-headers-" + s.kver, s.vol / "usr/lib/modules" / other / "build");
  auto run = test::run_kmod_builder({"--volume", s.vol.string(), "--kernel-release", other, "--work-dir", s.tmp.path.string(),
                                     "--recipe", s.hello.string()});
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains("vermagic '" + s.kver) && Catch::Contains(other) && Catch::Contains("nothing installed"));
  CHECK_FALSE(fs::exists(s.vol / "usr/lib/modules" / other / "extra"));
}

TEST_CASE("signing keys: a key that is not the certificate's is refused, without one an ephemeral key warns",
          "[e2e][kmod-builder][signing]") {
  KmodBuilderSetup s;
  const auto other = test::make_signing_key(s.tmp / "other", "other");
  auto mismatch = test::run_kmod_builder({"--volume", s.vol.string(), "--kernel-release", s.kver, "--recipe", s.hello.string(),
                                          "--signing-key", other.key.string(), "--signing-cert", s.key.cert_pem.string()});
  CHECK(mismatch.code == 78);
  CHECK_THAT(mismatch.last_line, Catch::Contains("is not the private key of the certificate"));
  auto half = test::run_kmod_builder({"--volume", s.vol.string(), "--kernel-release", s.kver, "--recipe", s.hello.string(),
                                      "--signing-key", other.key.string()});
  CHECK(half.code == 64);

  auto ephemeral = test::run_kmod_builder({"--volume", s.vol.string(), "--kernel-release", s.kver, "--work-dir",
                                           s.tmp.path.string(), "--recipe", s.hello.string()});
  INFO(ephemeral.output);
  CHECK(ephemeral.code == 0);
  CHECK_THAT(ephemeral.output, Catch::Contains("ephemeral key") && Catch::Contains("do not enforce module signatures"));
  auto info = kmod_builder::read_module_info(s.installed("kmodkit_hello", "kmodkit_hello"));
  REQUIRE(info);
  CHECK(info->signer == "kmodkit ephemeral module signing key");
}

TEST_CASE("a key in a PKCS#11 token signs the built modules; the PIN comes from a file, and without one the token refuses",
          "[e2e][kmod-builder][signing][pkcs11]") {
  KmodBuilderSetup s;
  const auto token = test::make_soft_token(s.tmp / "token", s.key.key);
  const test::Env env = {{"SOFTHSM2_CONF", token.conf.string()}};
  test::write_file(s.tmp / "pin", "1234\n");
  const std::vector<std::string> base = {"--volume", s.vol.string(), "--kernel-release", s.kver, "--work-dir", s.tmp.path.string(),
                                         "--recipe", s.hello.string(), "--signing-key", token.uri, "--signing-cert", s.key.cert_pem.string()};
  auto no_pin = test::run_kmod_builder(base, env);
  CHECK(no_pin.code == 78);
  CHECK_THAT(no_pin.last_line, Catch::Contains("no PIN given"));
  CHECK_FALSE(fs::exists(s.installed("kmodkit_hello", "kmodkit_hello")));
  auto with_pin = base;
  with_pin.insert(with_pin.end(), {"--signing-pin-file", (s.tmp / "pin").string()});
  auto run = test::run_kmod_builder(with_pin, env);
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK(run.output.find("1234") == std::string::npos);  // the PIN is never logged
  const fs::path ko = s.installed("kmodkit_hello", "kmodkit_hello");
  CHECK(modinfo_field(ko, "signer") == "kmodkit test signing key");
  CHECK(modinfo_field(ko, "sig_key") == s.key.serial);
  CHECK(kmod_builder::signing::verify(test::read_file(ko), s.key.cert_der));
}

TEST_CASE("a depmod that cannot write its index fails the run, and the next run installs and indexes again",
          "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  // The kernel's modules directory read-only, its extra/ writable: the modules install, and
  // depmod cannot write modules.dep (it says ERROR and still exits 0).
  const fs::path k = s.vol / "usr/lib/modules" / s.kver;
  fs::create_directories(k / "extra");
  std::string args;
  for (const auto& a : s.args({"--recipe", s.hello.string()})) args += " '" + a + "'";
  auto ro = subprocess::run({"unshare", "-m", "sh", "-c",
                             "mount --make-rprivate / && mount --bind " + k.string() + " " + k.string() + " && mount --bind " +
                                 (k / "extra").string() + " " + (k / "extra").string() + " && mount -o remount,bind,ro " +
                                 k.string() + " && exec " KMODKIT_KMOD_BUILDER_BIN + args});
  REQUIRE(ro);
  INFO(ro->output);
  CHECK(ro->exit_code == 73);
  CHECK_THAT(ro->output, Catch::Contains("did not write its index") && Catch::Contains("Read-only file system") &&
                             Catch::Contains("no entry for kmodkit_hello"));
  CHECK_FALSE(fs::exists(s.record("kmodkit_hello")));  // not "up to date" for the next run

  // The next run, with the volume given by a relative path (libkmod reads the index from the
  // absolute one).
  std::string relative;
  for (const auto& a : s.args({"--recipe", s.hello.string()})) relative += " '" + (a == s.vol.string() ? std::string("./vol/") : a) + "'";
  auto again = subprocess::run({"sh", "-c", "cd " + s.tmp.path.string() + " && exec " KMODKIT_KMOD_BUILDER_BIN + relative});
  REQUIRE(again);
  INFO(again->output);
  REQUIRE(again->exit_code == 0);
  CHECK_THAT(again->output, Catch::Contains("0 built, 1 from the cache"));
  CHECK_THAT(test::read_file(k / "modules.dep"), Catch::Contains("extra/kmodkit_hello/kmodkit_hello.ko:"));
  CHECK(fs::exists(s.record("kmodkit_hello")));
}

namespace {

// The SHA-256 fingerprint openssl reads from a certificate file in the given form (PEM or DER).
std::string openssl_fingerprint(const fs::path& cert, const std::string& form) {
  auto r = subprocess::run({"openssl", "x509", "-inform", form, "-in", cert.string(), "-noout", "-fingerprint", "-sha256"});
  REQUIRE(r);
  INFO(r->output);
  REQUIRE(r->ok());
  return r->output;
}

}  // namespace

TEST_CASE("a recipe's kernel regex is searched in the release as DKMS does: the README's ^6\\. builds on Debian 12's kernel",
          "[e2e][kmod-builder][recipe]") {
  KmodBuilderSetup s;
  const fs::path recipe = s.hello / "kmodkit-recipe.json";
  const std::string original = test::read_file(recipe);
  // The recipe's "kernel" field replaced by {"regex": REGEX} (REGEX as JSON text).
  auto with_regex = [&](const std::string& json_regex) {
    test::write_file(recipe, std::regex_replace(original, std::regex(R"("kernel": \{[^}]*\})"), "\"kernel\": {\"regex\": \"" + json_regex + "\"}"));
  };
  with_regex(R"(^6\\.)");
  auto six = s.build({"--recipe", s.hello.string(), "--dry-run"});
  INFO(six.output);
  CHECK(six.code == 0);
  CHECK_THAT(six.output, Catch::Contains("dry run: kmodkit_hello would be built"));

  with_regex(R"(^5\\.)");
  auto five = s.build({"--recipe", s.hello.string(), "--dry-run"});
  INFO(five.output);
  CHECK(five.code == 78);
  CHECK_THAT(five.last_line, Catch::Contains(R"('^5\.')") && Catch::Contains(s.kver));

  with_regex(R"(^6\\.(?:1))");  // ECMAScript's non-capturing group; bash cannot compile it
  auto invalid = s.build({"--recipe", s.hello.string(), "--dry-run"});
  INFO(invalid.output);
  CHECK(invalid.code == 78);
  CHECK_THAT(invalid.last_line, Catch::Contains(recipe.string()) && Catch::Contains(R"('^6\.(?:1)')"));
}

TEST_CASE("Debian's r8168-dkms dkms.conf reads as a recipe whose BUILD_EXCLUSIVE_KERNEL decides as DKMS does",
          "[e2e][kmod-builder][recipe]") {
  auto fetched = subprocess::run({(test::support_dir() / "fetch-dkms-packages.sh").string()});
  REQUIRE(fetched);
  INFO(fetched->output);
  REQUIRE(fetched->ok());
  const auto lines = text::split(text::trim(fetched->output), "\n");
  const fs::path conf = fs::path(std::string(lines.back())) / "r8168-dkms/usr/src/r8168-8.051.02/dkms.conf";
  auto r = kmod_builder::load(conf.string(), "");
  INFO(conf.string());
  REQUIRE(r);
  CHECK(r->kernel_regex == R"(^3\.1[4-9].*|^[4-9].*)");
  for (const auto& release : {test::fixture_kernel_release(), std::string("3.10.0-1160.el7.x86_64"), std::string("3.16.0-6-amd64"),
                                    std::string("2.6.32-5-amd64"), std::string("10.1.0-1-amd64")}) {
    INFO(release);
    CHECK(r->kernel_refusal(release, "x86_64").empty() == kmodkit::test::bash_regex_matches(release, r->kernel_regex));
  }
  CHECK(r->kernel_refusal(test::fixture_kernel_release(), "x86_64").empty());
}

TEST_CASE("the signing certificate is on the volume in DER, the form mokutil --import takes, and load's hint names it",
          "[e2e][kmod-builder][signing]") {
  KmodBuilderSetup s;
  auto run = s.build({"--recipe", s.hello.string()});
  INFO(run.output);
  REQUIRE(run.code == 0);
  const auto record = nlohmann::json::parse(test::read_file(s.record("kmodkit_hello")));
  REQUIRE(record.contains("certificate"));
  const fs::path der = s.vol / record["certificate"].get<std::string>();
  CHECK(der.extension() == ".der");
  REQUIRE(fs::is_regular_file(der));
  // openssl reads it as DER, and it is the certificate the modules were signed with; the PEM is beside it.
  const std::string fingerprint = openssl_fingerprint(s.key.cert_pem, "PEM");
  CHECK(openssl_fingerprint(der, "DER") == fingerprint);
  CHECK(openssl_fingerprint(fs::path(der).replace_extension(".pem"), "PEM") == fingerprint);
  CHECK(kmod_builder::signing::verify(test::read_file(s.installed("kmodkit_hello", "kmodkit_hello")), der));

  // A node that enforces signatures and does not hold the key: load says which file to enroll.
  const fs::path sys = s.tmp / "sys";
  fs::create_directories(sys / "module/module/parameters");
  test::write_file(sys / "module/module/parameters/sig_enforce", "Y\n");
  auto load = test::run_kmod_builder({"load", "--volume", s.vol.string(), "--kernel-release", s.kver, "--recipe",
                                      "kmodkit_hello", "--sysfs", sys.string(), "--dry-run"});
  INFO(load.output);
  CHECK(load.code == 0);
  CHECK_THAT(load.output, Catch::Contains("mokutil --import " + der.string()));
}

TEST_CASE("a dry run says what it would build and writes nothing", "[e2e][kmod-builder]") {
  KmodBuilderSetup s;
  auto run = s.build({"--recipe", "igb_uio," + s.hello.string(), "--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("dry run: igb_uio would be built from /usr/src/dpdk-kmods") &&
                             Catch::Contains("dry run: kmodkit_hello would be built"));
  CHECK_FALSE(fs::exists(s.vol / "usr/lib/modules" / s.kver / "extra"));
  CHECK_FALSE(fs::exists(s.vol / ".kmodkit/cache"));
}

TEST_CASE("missing headers, recipes and sources are named with exit 66", "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  auto no_kernel = test::run_kmod_builder({"--volume", s.vol.string(), "--kernel-release", "6.1.0-0-none"});
  CHECK(no_kernel.code == 66);
  CHECK_THAT(no_kernel.last_line, Catch::Contains("no complete tree for kernel 6.1.0-0-none") && Catch::Contains("run init-modules first"));
  auto no_recipe = s.build({"--recipe", (s.tmp / "nothing").string()});
  CHECK(no_recipe.code == 66);
  CHECK_THAT(no_recipe.last_line, Catch::Contains("nothing"));
  auto no_source = s.build({"--recipe", "igb_uio", "--source", "igb_uio=" + (s.tmp / "no-src").string()});
  CHECK(no_source.code == 66);
  CHECK_THAT(no_source.last_line, Catch::Contains("no-src") && Catch::Contains("not a directory"));
  auto kni = s.build({"--recipe", "rte_kni"}, {{"KMODKIT_DPDK_SRC", ""}});
  CHECK(kni.code == 66);
  CHECK_THAT(kni.last_line, Catch::Contains("KMODKIT_DPDK_SRC"));
}

TEST_CASE("three builders at once on one volume: one builds, the others wait and reuse it", "[e2e][kmod-builder][concurrency]") {
  KmodBuilderSetup s;
  std::vector<pid_t> pids;
  std::vector<fs::path> logs;
  for (int i = 0; i < 3; ++i) {
    logs.push_back(s.tmp / ("builder" + std::to_string(i) + ".log"));
    std::vector<std::string> argv = {KMODKIT_KMOD_BUILDER_BIN};
    for (const auto& a : s.args({"--recipe", "igb_uio," + s.hello.string(), "--log-format", "human"})) argv.push_back(a);
    pids.push_back(test::spawn(argv, logs.back()));
  }
  int builds = 0, reused = 0;
  for (size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    ::waitpid(pids[i], &status, 0);
    const auto log = test::read_file(logs[i]);
    INFO(log);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    builds += count(log, ": building against");
    reused += count(log, "installed by another process") + count(log, "up to date for");
  }
  CHECK(builds == 2);  // igb_uio and the test module, each once
  CHECK(reused == 4);
  CHECK(cache_entries(s.vol) == 2);
  CHECK(fs::is_empty(s.vol / ".kmodkit/staging"));
}

TEST_CASE("rte_kni builds from a DPDK 22.11 tree with DPDK's own probe", "[.rte_kni]") {
  // The tree fixture.dpdk_src fetched (its path in a file of the fixtures directory), or one
  // given in KMODKIT_DPDK_SRC.
  const char* env = std::getenv("KMODKIT_DPDK_SRC");
  const std::string src = env != nullptr && *env != '\0' ? std::string(env)
                                                          : std::string(text::trim(test::read_file(test::fixtures_dir() / "dpdk-src")));
  INFO("DPDK tree " << src);
  REQUIRE(fs::is_directory(fs::path(src) / "kernel/linux/kni"));
  KmodBuilderSetup s;
  // Read-only sources are copied into a private directory first.
  auto run = s.build({"--recipe", "rte_kni", "--source", std::string("rte_kni=") + src});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("probes: HAVE_ARG_TX_QUEUE"));
  const fs::path ko = s.installed("rte_kni", "rte_kni");
  auto info = kmod_builder::read_module_info(ko);
  REQUIRE(info);
  CHECK_THAT(info->vermagic, Catch::StartsWith(s.kver + " SMP"));
  CHECK(info->signer == "kmodkit test signing key");
  CHECK_THAT(modinfo_field(ko, "parm"), Catch::Contains("carrier") && Catch::Contains("kthread_mode"));
  auto again = s.build({"--recipe", "rte_kni", "--source", std::string("rte_kni=") + src});
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("up to date"));
}

TEST_CASE("a relative --volume and --work-dir, as typed by hand, build the same module as absolute ones", "[e2e][kmod-builder]") {
  KmodBuilderSetup s;
  auto absolute = s.build({"--recipe", s.hello.string()});
  INFO(absolute.output);
  REQUIRE(absolute.code == 0);
  const std::string want = test::read_file(s.installed("kmodkit_hello", "kmodkit_hello"));
  // The same, from the setup's directory, on a second volume named ./vol2/ and a work directory
  // named work (make -C runs in the kernel tree, where a relative M= named nothing).
  test::copy_kernel_volume(s.tmp / "vol2");
  fs::create_directories(s.tmp / "work");
  std::string command = "cd '" + s.tmp.path.string() + "' && exec '" + KMODKIT_KMOD_BUILDER_BIN + "'";
  for (const auto& a : std::vector<std::string>{"--volume", "./vol2/", "--kernel-release", s.kver, "--work-dir", "work",
                                                "--recipe", s.hello.string(), "--signing-key", s.key.key.string(),
                                                "--signing-cert", s.key.cert_pem.string()}) {
    command += " '" + a + "'";
  }
  auto relative = test::run_binary("sh", {"-c", command});
  INFO(relative.output);
  REQUIRE(relative.code == 0);
  CHECK(test::read_file(s.tmp / "vol2/usr/lib/modules" / s.kver / "extra/kmodkit_hello/kmodkit_hello.ko") == want);
  CHECK(fs::is_empty(s.tmp / "work"));
}

TEST_CASE("killed with SIGKILL mid-build, a rerun ends in the same state as an uninterrupted run", "[e2e][kmod-builder][faults]") {
  KmodBuilderSetup s;
  std::vector<std::string> argv = {KMODKIT_KMOD_BUILDER_BIN};
  for (const auto& a : s.args({"--recipe", "igb_uio," + s.hello.string(), "--log-format", "json"})) argv.push_back(a);
  // Its own session, so the kill takes make and the compilers with it, as a pod kill does.
  const pid_t pid = test::spawn(argv, "/dev/null", test::Session::own);
  // Wait until the compiler has produced something in the private build directory (a busy
  // machine may take minutes to get there; only a builder that never compiles fails this).
  bool compiling = false;
  for (int i = 0; i < 15000 && !compiling; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (const auto& e : fs::directory_iterator(s.tmp.path)) {
      if (e.path().filename().string().starts_with("kmod-builder.igb_uio.") && fs::exists(e.path() / ".igb_uio.o.cmd")) compiling = true;
    }
  }
  CHECK(compiling);
  auto kill = subprocess::run({"pkill", "-KILL", "-s", std::to_string(pid)});
  REQUIRE(kill);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  // Nothing half-made is visible.
  CHECK_FALSE(fs::exists(s.record("igb_uio")));
  CHECK_FALSE(fs::exists(s.installed("igb_uio", "igb_uio")));

  auto rerun = s.build({"--recipe", "igb_uio," + s.hello.string()});
  INFO(rerun.output);
  CHECK(rerun.code == 0);
  CHECK_THAT(rerun.output, Catch::Contains("removed 1 build directories left by killed builders"));
  CHECK_THAT(rerun.last_line, Catch::Contains("2 built"));
  CHECK(cache_entries(s.vol) == 2);
  CHECK(fs::is_empty(s.vol / ".kmodkit/staging"));
  for (const auto& e : fs::directory_iterator(s.tmp.path)) CHECK_THAT(e.path().filename().string(), !Catch::StartsWith("kmod-builder."));
  for (const auto& [recipe, module] : {std::pair{"igb_uio", "igb_uio"}, std::pair{"kmodkit_hello", "kmodkit_hello"}}) {
    CHECK(kmod_builder::signing::verify(test::read_file(s.installed(recipe, module)), s.key.cert_der));
  }
}
