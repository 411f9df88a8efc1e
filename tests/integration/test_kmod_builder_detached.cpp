// kmod-builder end to end, signing away from the volume: reproducible builds, detached
// signatures (export-unsigned, sign-detached, build --signatures) and prebuilt modules
// (export --image-dir, build --prebuilt), with the real binary, Debian's real 6.1 headers
// and the project's test module.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "kmod_builder_setup.hpp"
#include "signing.hpp"

using namespace kmodkit;
using kmodkit::test::KmodBuilderSetup;
using kmodkit::test::modinfo_field;
using json = nlohmann::json;
namespace fs = std::filesystem;
namespace signing = kmodkit::kmod_builder::signing;

namespace {

const std::string kHello = "kmodkit_hello";

// A second volume of the fixture kernel at another, deeper path, and a build directory of its own.
struct OtherVolume {
  fs::path vol, work;
  explicit OtherVolume(const KmodBuilderSetup& s, const std::string& name)
      : vol(s.tmp / ("elsewhere/" + name + "/deeper/vol")), work(s.tmp / ("elsewhere/" + name + "/work")) {
    fs::create_directories(vol.parent_path());
    fs::create_directories(work);
    test::copy_kernel_volume(vol);
  }
  std::vector<std::string> args(const KmodBuilderSetup& s, std::vector<std::string> extra) const {
    std::vector<std::string> a = {"--volume", vol.string(), "--kernel-release", s.kver, "--work-dir", work.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  fs::path installed(const KmodBuilderSetup& s) const { return vol / "usr/lib/modules" / s.kver / "extra" / kHello / (kHello + ".ko"); }
};

std::string unsigned_bytes(const fs::path& ko) {
  const auto bytes = test::read_file(ko);
  auto stripped = signing::strip_signature(bytes);
  REQUIRE(stripped);
  return std::string(*stripped);
}

json read_json(const fs::path& p) { return json::parse(test::read_file(p)); }

}  // namespace

TEST_CASE("builds are reproducible: other volumes and build directories give the same bytes, signed the same",
          "[e2e][kmod-builder][reproducible]") {
  KmodBuilderSetup s;
  OtherVolume other(s, "b");
  auto a = test::run_kmod_builder(s.plain_args({"--recipe", s.hello.string(), "--no-sign"}));
  INFO(a.output);
  REQUIRE(a.code == 0);
  CHECK_THAT(a.output, Catch::Contains("not signed (--no-sign)"));
  auto b = test::run_kmod_builder(other.args(s, {"--recipe", s.hello.string(), "--no-sign"}));
  INFO(b.output);
  REQUIRE(b.code == 0);
  const auto ko_a = test::read_file(s.installed(kHello, kHello));
  CHECK_FALSE(ko_a.ends_with(signing::kMagic));  // --no-sign leaves it unsigned
  CHECK_THAT(test::run_kmod_builder({"status", "--volume", s.vol.string()}).output, Catch::Contains("not signed (built with --no-sign)"));
  CHECK(ko_a == test::read_file(other.installed(s)));
  // Neither build's directory nor the volume's path is in the module; the headers are named as the node has them.
  CHECK(ko_a.find(s.tmp.path.string()) == std::string::npos);
  // Signed with one key, the two volumes hold identical modules too (RSA PKCS#1 v1.5 is deterministic).
  OtherVolume c(s, "c");
  REQUIRE(s.build({"--recipe", s.hello.string()}).code == 0);
  REQUIRE(test::run_kmod_builder(c.args(s, {"--recipe", s.hello.string(), "--signing-key", s.key.key.string(), "--signing-cert",
                                            s.key.cert_pem.string()}))
              .code == 0);
  CHECK(test::read_file(s.installed(kHello, kHello)) == test::read_file(c.installed(s)));
  CHECK(unsigned_bytes(s.installed(kHello, kHello)) == ko_a);
}

TEST_CASE("detached signing: modules built unsigned are signed elsewhere, and the pod's build appends exactly those signatures",
          "[e2e][kmod-builder][detached]") {
  KmodBuilderSetup s;
  // Where the cluster is: build unsigned and export.
  REQUIRE(test::run_kmod_builder(s.plain_args({"--recipe", s.hello.string(), "--no-sign"})).code == 0);
  const fs::path out = s.tmp / "unsigned";
  auto exported = test::run_kmod_builder({"export-unsigned", "--volume", s.vol.string(), "--out", out.string()});
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  const json manifest = read_json(out / "unsigned.json");
  REQUIRE(manifest["modules"].size() == 1);
  const json m = manifest["modules"][0];
  CHECK(m["sha256"] == test::sha256_of(out / m["path"].get<std::string>()));
  CHECK(m["kernel_release"] == s.kver);
  // Where the key is: sign, once from PEM and once from a token holding the same key.
  const fs::path sigs = s.tmp / "signatures.json";
  auto signed_run = test::run_kmod_builder({"sign-detached", "--unsigned", out.string(), "--signing-key", s.key.key.string(),
                                            "--signing-cert", s.key.cert_pem.string(), "--out", sigs.string()});
  INFO(signed_run.output);
  REQUIRE(signed_run.code == 0);
  const json file = read_json(sigs);
  CHECK(file["format"] == "kmodkit-signatures/1");
  CHECK(file["signer"] == "kmodkit test signing key");
  CHECK(fs::file_size(sigs) < 8192);  // a ConfigMap carries it easily
  const auto token = test::make_soft_token(s.tmp / "token", s.key.key);
  test::write_file(s.tmp / "pin", "1234\n");
  const fs::path token_sigs = s.tmp / "token-signatures.json";
  auto token_run = test::run_kmod_builder({"sign-detached", "--unsigned", out.string(), "--signing-key", token.uri, "--signing-cert",
                                           s.key.cert_pem.string(), "--signing-pin-file", (s.tmp / "pin").string(), "--out",
                                           token_sigs.string()},
                                          {{"SOFTHSM2_CONF", token.conf.string()}});
  INFO(token_run.output);
  REQUIRE(token_run.code == 0);
  CHECK(read_json(token_sigs)["modules"] == file["modules"]);  // the token signs byte for byte as the PEM key

  // In the pod, on a fresh volume: build with the signatures, no key anywhere near.
  OtherVolume pod(s, "pod");
  auto run = test::run_kmod_builder(pod.args(s, {"--recipe", s.hello.string(), "--signatures", sigs.string()}));
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("signatures from " + sigs.string()));
  CHECK_THAT(test::run_kmod_builder({"status", "--volume", pod.vol.string()}).output,
             Catch::Contains("(detached signatures from " + sigs.string() + ")"));
  const auto installed = test::read_file(pod.installed(s));
  auto signer = signing::Signer::load(s.key.key, s.key.cert_pem);
  REQUIRE(signer);
  CHECK(installed == *signer->sign(test::read_file(out / m["path"].get<std::string>()), "sha256"));  // as a PEM-key build
  CHECK(modinfo_field(pod.installed(s), "signer") == "kmodkit test signing key");
  CHECK(modinfo_field(pod.installed(s), "sig_key") == s.key.serial);
  CHECK(signing::verify(installed, s.key.cert_der));

  SECTION("a module built from other sources is refused with both digests, nothing installed") {
    OtherVolume changed(s, "changed");
    std::string source = test::read_file(s.hello / "kmodkit_hello.c");
    const auto at = source.find("MODULE_VERSION(\"1.0\")");
    REQUIRE(at != std::string::npos);
    source.replace(at, 21, "MODULE_VERSION(\"1.1\")");
    test::write_file(s.hello / "kmodkit_hello.c", source);
    auto refused = test::run_kmod_builder(changed.args(s, {"--recipe", s.hello.string(), "--signatures", sigs.string()}));
    CHECK(refused.code == 65);
    CHECK_THAT(refused.last_line, Catch::Contains(kHello + ".ko built here has SHA-256 "));
    CHECK_THAT(refused.last_line, Catch::Contains("had " + m["sha256"].get<std::string>()));
    CHECK_FALSE(fs::exists(changed.installed(s)));
  }
  SECTION("a signature made for other bytes, under the right digest, is refused") {
    auto other = signer->signature("other bytes", "sha256");
    REQUIRE(other);
    json forged = file;
    const std::string b64 = test::base64(*other);
    forged["modules"][0]["signature"] = b64;
    test::write_file(s.tmp / "forged.json", forged.dump());
    OtherVolume victim(s, "victim");
    auto refused = test::run_kmod_builder(victim.args(s, {"--recipe", s.hello.string(), "--signatures", (s.tmp / "forged.json").string()}));
    CHECK(refused.code == 65);
    CHECK_THAT(refused.last_line, Catch::Contains("was not made for these bytes"));
    CHECK_FALSE(fs::exists(victim.installed(s)));
  }
  SECTION("no signature for the module, or no signatures file, are named") {
    json empty = file;
    empty["modules"] = json::array();
    test::write_file(s.tmp / "empty.json", empty.dump());
    OtherVolume v(s, "v");
    auto missing = test::run_kmod_builder(v.args(s, {"--recipe", s.hello.string(), "--signatures", (s.tmp / "empty.json").string()}));
    CHECK(missing.code == 66);
    CHECK_THAT(missing.last_line, Catch::Contains("has no signature for " + kHello + ".ko"));
    test::write_file(s.tmp / "junk.json", "{\"format\": \"something else\"}");
    auto junk = test::run_kmod_builder(v.args(s, {"--recipe", s.hello.string(), "--signatures", (s.tmp / "junk.json").string()}));
    CHECK(junk.code == 65);
    CHECK_THAT(junk.last_line, Catch::Contains("is not a signatures file"));
    auto both = test::run_kmod_builder(v.args(s, {"--recipe", s.hello.string(), "--signatures", sigs.string(), "--signing-key",
                                                  s.key.key.string(), "--signing-cert", s.key.cert_pem.string()}));
    CHECK(both.code == 64);
    // --signing-cert alone pins the signer: signatures by another certificate are refused.
    const auto other = test::make_signing_key(s.tmp / "other-key", "another key");
    auto pinned = test::run_kmod_builder(v.args(s, {"--recipe", s.hello.string(), "--signatures", sigs.string(), "--signing-cert",
                                                    other.cert_pem.string()}));
    CHECK(pinned.code == 78);
    CHECK_THAT(pinned.last_line, Catch::Contains("is signed by 'kmodkit test signing key'") && Catch::Contains("'another key'"));
    CHECK_FALSE(fs::exists(v.installed(s)));
    auto pinned_ok = test::run_kmod_builder(v.args(s, {"--recipe", s.hello.string(), "--signatures", sigs.string(), "--signing-cert",
                                                       s.key.cert_pem.string()}));
    CHECK(pinned_ok.code == 0);
  }
  SECTION("a module changed after export is refused by sign-detached") {
    const fs::path ko = out / m["path"].get<std::string>();
    test::write_file(ko, test::read_file(ko) + "x");
    auto refused = test::run_kmod_builder({"sign-detached", "--unsigned", out.string(), "--signing-key", s.key.key.string(),
                                           "--signing-cert", s.key.cert_pem.string(), "--out", (s.tmp / "x.json").string()});
    CHECK(refused.code == 65);
    CHECK_THAT(refused.last_line, Catch::Contains("changed after export-unsigned wrote it"));
    CHECK_FALSE(fs::exists(s.tmp / "x.json"));
  }
}

TEST_CASE("prebuilt modules: an exported entry installs without compiling, also with no compiler; one that does not fit says why",
          "[e2e][kmod-builder][prebuilt]") {
  KmodBuilderSetup s;
  REQUIRE(s.build({"--recipe", s.hello.string()}).code == 0);
  const fs::path image = s.tmp / "image/prebuilt";
  auto exported = test::run_kmod_builder({"export", "--volume", s.vol.string(), "--image-dir", image.string()});
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  const json record = read_json(s.record(kHello));
  const fs::path entry = image / record["key"].get<std::string>();
  CHECK(fs::exists(entry / "entry.json"));
  CHECK(fs::exists(entry / "certificate.der"));
  CHECK(test::read_file(entry / (kHello + ".ko")) == test::read_file(s.installed(kHello, kHello)));
  // A second export leaves the entry alone.
  auto again = test::run_kmod_builder({"export", "--volume", s.vol.string(), "--image-dir", image.string()});
  CHECK(again.code == 0);
  CHECK_THAT(again.output, Catch::Contains("already in"));

  OtherVolume pod(s, "pod");
  auto run = test::run_kmod_builder(pod.args(s, {"--recipe", s.hello.string(), "--prebuilt", image.string(), "--signing-key",
                                                 s.key.key.string(), "--signing-cert", s.key.cert_pem.string()}));
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("prebuilt in " + entry.string()));
  CHECK_THAT(run.output, Catch::Contains("0 built, 0 from the cache, 1 prebuilt"));
  CHECK(run.output.find("building against") == std::string::npos);
  CHECK(test::read_file(pod.installed(s)) == test::read_file(s.installed(kHello, kHello)));
  CHECK_THAT(test::run_kmod_builder({"status", "--volume", pod.vol.string()}).output, Catch::Contains("prebuilt, from " + entry.string()));

  SECTION("with no compiler on PATH and no key, the prebuilt entry fits by every other input (a modules image)") {
    OtherVolume bare(s, "bare");
    // depmod, and nothing else: no gcc, no make.
    fs::create_directories(s.tmp / "bin");
    fs::create_symlink(fs::path("/sbin/depmod").lexically_normal(), s.tmp / "bin/depmod");
    const test::Env env = {{"PATH", (s.tmp / "bin").string()}};
    // No signing option either: the entry keeps the signature it was made with.
    auto args = bare.args(s, {"--recipe", s.hello.string(), "--prebuilt", image.string()});
    auto r = test::run_kmod_builder(args, env);
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("compiler gcc was not found"));
    CHECK_THAT(r.output, Catch::Contains("1 prebuilt"));
    CHECK(modinfo_field(bare.installed(s), "signer") == "kmodkit test signing key");
    auto warm = test::run_kmod_builder(args, env);  // and the next start is up to date, still without a compiler
    CHECK(warm.code == 0);
    CHECK_THAT(warm.output, Catch::Contains("up to date"));
    // Without the prebuilt directory there is nothing to install: 66, saying so.
    OtherVolume none(s, "none");
    auto no = test::run_kmod_builder(none.args(s, {"--recipe", s.hello.string(), "--signing-key", s.key.key.string(),
                                                   "--signing-cert", s.key.cert_pem.string()}),
                                     env);
    CHECK(no.code == 66);
    CHECK_THAT(no.last_line, Catch::Contains("no --prebuilt directory was given"));
  }
  SECTION("an entry for other sources does not fit: the run says which input differs, and builds") {
    OtherVolume changed(s, "changed");
    test::write_file(s.hello / "kmodkit_hello.c", test::read_file(s.hello / "kmodkit_hello.c") + "\n/* changed */\n");
    auto r = test::run_kmod_builder(changed.args(s, {"--recipe", s.hello.string(), "--prebuilt", image.string(), "--signing-key",
                                                     s.key.key.string(), "--signing-cert", s.key.cert_pem.string()}));
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("no prebuilt module fits: " + entry.string() + " differs in sources:"));
    CHECK_THAT(r.output, Catch::Contains("1 built"));
  }
  SECTION("an entry signed by another key does not fit; a damaged one is not used") {
    OtherVolume other_key(s, "other-key");
    const auto key2 = test::make_signing_key(s.tmp / "keys2", "another key");
    auto r = test::run_kmod_builder(other_key.args(s, {"--recipe", s.hello.string(), "--prebuilt", image.string(), "--signing-key",
                                                       key2.key.string(), "--signing-cert", key2.cert_pem.string()}));
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("differs in cert:"));
    OtherVolume damaged(s, "damaged");
    const fs::path ko = entry / (kHello + ".ko");
    std::string bytes = test::read_file(ko);
    bytes[bytes.size() / 2] ^= 1;
    test::write_file(ko, bytes);
    auto d = test::run_kmod_builder(damaged.args(s, {"--recipe", s.hello.string(), "--prebuilt", image.string(), "--signing-key",
                                                     s.key.key.string(), "--signing-cert", s.key.cert_pem.string()}));
    REQUIRE(d.code == 0);
    CHECK_THAT(d.output, Catch::Contains("fits but cannot be used"));
    CHECK_THAT(d.output, Catch::Contains("1 built"));
  }
}

TEST_CASE("without a signing option a run keeps modules signed by an earlier key, and what it must build again it signs itself",
          "[e2e][kmod-builder][signing]") {
  KmodBuilderSetup s;
  REQUIRE(s.build({"--recipe", s.hello.string()}).code == 0);
  const std::string keyed = read_json(s.record(kHello))["key"];
  // No key now: the installed modules, signed by the test key, are up to date.
  auto kept = test::run_kmod_builder(s.plain_args({"--recipe", s.hello.string()}));
  INFO(kept.output);
  REQUIRE(kept.code == 0);
  CHECK_THAT(kept.output, Catch::Contains("up to date"));
  // Installed files and cache gone: built again, signed by an ephemeral key, cached under that
  // key, never under the test key's.
  fs::remove_all(s.vol / ".kmodkit/cache");
  fs::remove(s.installed(kHello, kHello));
  auto rebuilt = test::run_kmod_builder(s.plain_args({"--recipe", s.hello.string()}));
  INFO(rebuilt.output);
  REQUIRE(rebuilt.code == 0);
  CHECK_THAT(rebuilt.output, Catch::Contains("1 built"));
  CHECK(modinfo_field(s.installed(kHello, kHello), "signer") == "kmodkit ephemeral module signing key");
  const json record = read_json(s.record(kHello));
  CHECK(record["key"] != keyed);
  CHECK(record["ephemeral_key"] == true);
  CHECK_FALSE(fs::exists(s.vol / ".kmodkit/cache" / keyed));
  // And the test key's run does not take the ephemeral modules for its own.
  auto again = s.build({"--recipe", s.hello.string()});
  REQUIRE(again.code == 0);
  CHECK(modinfo_field(s.installed(kHello, kHello), "signer") == "kmodkit test signing key");
}
