// Module signatures: byte for byte what the kernel's sign-file (from Debian's linux-kbuild) makes.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"
#include "signing.hpp"

using namespace kmodkit;
using namespace kmodkit::kmod_builder;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Keys {
  TempDir dir;
  test::SigningKey made = test::make_signing_key(dir / "keys", "kmodkit-test");
  fs::path key = made.key, cert_pem = made.cert_pem, cert_der = made.cert_der, sign_file;
  Keys() {
    // sign-file as Debian ships it, from the linux-kbuild package of the fixture repository.
    for (const auto& e : fs::directory_iterator(test::fixtures_dir() / "apt-repo/pool/main")) {
      if (e.path().filename().string().starts_with("linux-kbuild-")) {
        auto x = subprocess::run({"dpkg-deb", "-x", e.path().string(), (dir / "kbuild").string()});
        REQUIRE((x && x->ok()));
      }
    }
    for (const auto& e : fs::recursive_directory_iterator(dir / "kbuild")) {
      if (e.path().filename() == "sign-file") sign_file = e.path();
    }
    REQUIRE_FALSE(sign_file.empty());
  }
};

std::string module_bytes() {
  std::string m = "\x7f" "ELF";
  for (int i = 0; i < 100000; ++i) m += static_cast<char>((i * 7919) & 0xff);
  return m;
}

}  // namespace

TEST_CASE("signatures are byte-identical to the kernel's sign-file for sha256, sha384 and sha512", "[integration][signing]") {
  Keys keys;
  test::write_file(keys.dir / "m.ko", module_bytes());
  auto signer = signing::Signer::load(keys.key, keys.cert_pem);
  REQUIRE(signer);
  for (const char* hash : {"sha256", "sha384", "sha512"}) {
    INFO(hash);
    auto ref = subprocess::run({keys.sign_file.string(), hash, keys.key.string(), keys.cert_der.string(),
                                (keys.dir / "m.ko").string(), (keys.dir / "ref.ko").string()});
    REQUIRE(ref);
    INFO(ref->output);
    REQUIRE(ref->ok());
    auto ours = signer->sign(module_bytes(), hash);
    REQUIRE(ours);
    CHECK(*ours == test::read_file(keys.dir / "ref.ko"));
    CHECK(signing::verify(*ours, keys.cert_der));
    // Signing a signed module replaces the signature rather than stacking a second one.
    auto again = signer->sign(*ours, hash);
    REQUIRE(again);
    CHECK(*again == *ours);
  }
}

TEST_CASE("a key that is not the certificate's is refused", "[integration][signing]") {
  Keys keys;
  auto other = subprocess::run({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                                (keys.dir / "other.pem").string()});
  REQUIRE((other && other->ok()));
  auto signer = signing::Signer::load(keys.dir / "other.pem", keys.cert_pem);
  REQUIRE_FALSE(signer);
  CHECK(signer.error().code == ExitCode::config);
  CHECK_THAT(signer.error().message, Catch::Contains("is not the private key of the certificate"));
}

TEST_CASE("a module changed after signing is detected", "[integration][signing]") {
  Keys keys;
  auto signer = signing::Signer::load(keys.key, keys.cert_der);
  REQUIRE(signer);
  auto signed_module = signer->sign(module_bytes(), "sha256");
  REQUIRE(signed_module);
  std::string tampered = *signed_module;
  tampered[1000] ^= 1;
  auto r = signing::verify(tampered, keys.cert_der);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::data_err);
  CHECK_FALSE(signing::verify(module_bytes(), keys.cert_der));
}

TEST_CASE("a key in a PKCS#11 token (SoftHSM2) signs byte for byte as sign-file does with the same key as PEM", "[integration][signing][pkcs11]") {
  REQUIRE(fs::exists("/usr/lib/softhsm/libsofthsm2.so"));  // softhsm2 (ci/install-deps.sh)
  Keys keys;
  // A token of its own, holding the test key under the label modsign.
  const auto token = test::make_soft_token(keys.dir / "token", keys.key);
  ::setenv("SOFTHSM2_CONF", token.conf.c_str(), 1);
  const std::string uri = token.uri;
  test::write_file(keys.dir / "m.ko", module_bytes());
  auto ref = subprocess::run({keys.sign_file.string(), "sha256", keys.key.string(), keys.cert_der.string(),
                              (keys.dir / "m.ko").string(), (keys.dir / "ref.ko").string()});
  REQUIRE((ref && ref->ok()));
  // A wrong PIN (first: once logged in, the token stays so for the process), a key the token does
  // not hold, a PIN in the URI.
  auto wrong_pin = signing::Signer::load(uri, keys.cert_pem, "0000");
  REQUIRE_FALSE(wrong_pin);
  CHECK(wrong_pin.error().code == ExitCode::config);
  auto missing = signing::Signer::load(uri.substr(0, uri.find(";object=")) + ";object=nothing;type=private", keys.cert_pem, "1234");
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Catch::Contains("no such private key in a token"));
  auto in_uri = signing::Signer::load(uri + ";pin-value=1234", keys.cert_pem, "");
  REQUIRE_FALSE(in_uri);
  CHECK(in_uri.error().code == ExitCode::usage);
  CHECK_THAT(in_uri.error().message, Catch::Contains("carries a PIN") && !Catch::Contains("1234"));
  auto signer = signing::Signer::load(uri, keys.cert_pem, "1234");
  REQUIRE(signer);
  auto ours = signer->sign(module_bytes(), "sha256");
  REQUIRE(ours);
  CHECK(*ours == test::read_file(keys.dir / "ref.ko"));
  CHECK(signing::verify(*ours, keys.cert_der));
  CHECK(signer->certificate().signer == signing::Signer::load(keys.key, keys.cert_pem)->certificate().signer);
}

TEST_CASE("an ECDSA P-256 key in a PKCS#11 token signs modules that verify with its certificate, as sign-file's do",
          "[integration][signing][pkcs11]") {
  Keys keys;
  const fs::path ec = keys.dir / "ec";
  fs::create_directories(ec);
  auto made = subprocess::run({"sh", "-c", "cd '" + ec.string() +
                                               "' && openssl req -new -nodes -batch -x509 -days 2 -newkey ec -pkeyopt "
                                               "ec_paramgen_curve:prime256v1 -subj '/CN=kmodkit ecdsa' -keyout key.pem -out cert.pem "
                                               "2>/dev/null && openssl x509 -in cert.pem -outform DER -out cert.der"});
  REQUIRE((made && made->ok()));
  // Signed by kmod-builder sign-detached in a process of its own: this process's pkcs11 engine
  // keeps the token configuration of the first case that used one.
  const auto token = test::make_soft_token(ec / "token", ec / "key.pem");
  test::write_file(keys.dir / "unsigned/m.ko", module_bytes());
  test::write_file(keys.dir / "unsigned/unsigned.json",
                   nlohmann::json{{"format", "kmodkit-unsigned/1"},
                                  {"modules", {{{"kernel_release", "6.1.0-57-amd64"}, {"recipe", "m"}, {"file", "m.ko"},
                                                {"path", "m.ko"}, {"sha256", test::sha256_of(keys.dir / "unsigned/m.ko")},
                                                {"hash", "sha256"}}}}}
                       .dump());
  test::write_file(keys.dir / "pin", "1234\n");
  auto run = test::run_kmod_builder({"sign-detached", "--unsigned", (keys.dir / "unsigned").string(), "--signing-key", token.uri,
                                     "--signing-cert", (ec / "cert.pem").string(), "--signing-pin-file", (keys.dir / "pin").string(),
                                     "--out", (keys.dir / "sigs.json").string()},
                                    {{"SOFTHSM2_CONF", token.conf.string()}});
  INFO(run.output);
  REQUIRE(run.code == 0);
  const auto sigs = nlohmann::json::parse(test::read_file(keys.dir / "sigs.json"));
  auto decoded = subprocess::run({"sh", "-c", "printf %s '" + sigs["modules"][0]["signature"].get<std::string>() + "' | base64 -d > '" +
                                                  (keys.dir / "sig.der").string() + "'"});
  REQUIRE((decoded && decoded->ok()));
  const std::string sig = test::read_file(keys.dir / "sig.der");
  auto ours = signing::attach(module_bytes(), sig);
  REQUIRE(ours);
  CHECK(signing::verify(*ours, ec / "cert.der"));
  CHECK_FALSE(signing::verify(*ours, keys.cert_der));  // not with another certificate
  CHECK(signing::signature_hash(sig).value_or("") == "sha256");
  // ECDSA signatures are not deterministic: sign-file's with the same key as PEM verifies too,
  // and has the same form.
  test::write_file(keys.dir / "m.ko", module_bytes());
  auto ref = subprocess::run({keys.sign_file.string(), "sha256", (ec / "key.pem").string(), (ec / "cert.der").string(),
                              (keys.dir / "m.ko").string(), (keys.dir / "ref.ko").string()});
  REQUIRE((ref && ref->ok()));
  CHECK(signing::verify(test::read_file(keys.dir / "ref.ko"), ec / "cert.der"));
  CHECK(test::read_file(keys.dir / "ref.ko") != *ours);
}
