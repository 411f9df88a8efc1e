// Repository metadata: sources lists, Release files, Packages indexes, versions, Depends.
#include <catch2/catch.hpp>

#include "apt.hpp"
#include "helpers.hpp"
#include "host.hpp"

using namespace kmodkit;
using namespace kmodkit::init;

TEST_CASE("one-line sources give one repository per deb line, options included", "[unit][apt]") {
  auto r = apt::parse_one_line(
      "# comment\n"
      "deb http://deb.debian.org/debian/ bookworm main contrib\n"
      "deb-src http://deb.debian.org/debian bookworm main\n"
      "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/k.gpg trusted=yes] http://archive.ubuntu.com/ubuntu jammy-updates main restricted # trailing\n",
      "sources.list");
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  CHECK((*r)[0].uri == "http://deb.debian.org/debian");
  CHECK((*r)[0].components == std::vector<std::string>{"main", "contrib"});
  CHECK((*r)[1].suite == "jammy-updates");
  CHECK((*r)[1].architectures == std::vector<std::string>{"amd64", "arm64"});
  CHECK((*r)[1].signed_by == "/usr/share/keyrings/k.gpg");
  CHECK((*r)[1].trusted);
}

TEST_CASE("a malformed sources line is a configuration error naming file and line", "[unit][apt]") {
  auto r = apt::parse_one_line("\ndeb http://x\n", "/etc/apt/sources.list");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::config);
  CHECK_THAT(r.error().message, Catch::StartsWith("/etc/apt/sources.list:2:"));
  CHECK_FALSE(apt::parse_one_line("rpm http://x a b\n", "f"));
}

TEST_CASE("deb822 stanzas expand to every URI and suite, and disabled ones are skipped", "[unit][apt]") {
  auto r = apt::parse_deb822(
      "Types: deb deb-src\n"
      "URIs: http://deb.debian.org/debian\n"
      "Suites: bookworm bookworm-updates\n"
      "Components: main\n"
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
      "\n"
      "Types: deb\nURIs: http://mirror/x\nSuites: y\nComponents: main\nEnabled: no\n",
      "debian.sources");
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  CHECK((*r)[1].suite == "bookworm-updates");
  CHECK((*r)[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg");
}

TEST_CASE("the image's apt configuration is read from sources.list and sources.list.d", "[unit][apt]") {
  test::TempDir tmp;
  test::write_file(tmp / "etc/apt/sources.list", "deb http://a/debian bookworm main\n");
  test::write_file(tmp / "etc/apt/sources.list.d/b.sources", "Types: deb\nURIs: http://b/debian\nSuites: s\nComponents: main\n");
  test::write_file(tmp / "etc/apt/sources.list.d/c.list.disabled", "deb http://c/ x main\n");
  auto r = apt::read_system_sources(tmp.path);
  REQUIRE(r);
  REQUIRE(r->size() == 2);
  CHECK((*r)[1].uri == "http://b/debian");
  auto none = apt::read_system_sources(tmp / "nothing");
  REQUIRE(none);
  CHECK(none->empty());
}

TEST_CASE("an InRelease file's signature armour is removed and its SHA256 list read", "[unit][apt]") {
  const std::string inrelease =
      "-----BEGIN PGP SIGNED MESSAGE-----\n"
      "Hash: SHA512\n"
      "\n"
      "Suite: stable\n"
      "Codename: bookworm\n"
      "- Dashed: line\n"
      "SHA256:\n"
      " 63420c954a5963c2bc896ff3e25d0c5c791a2ac630903d6470790f7d5e071cd4             2599 main/binary-amd64/Packages\n"
      " B43EA20282C4611BDA05452ACA11597621D095DAF7ADEEDB614FCF5A4227C02A             1096 main/binary-amd64/Packages.xz\n"
      "-----BEGIN PGP SIGNATURE-----\n"
      "\n"
      "iQIzBAEBCgAdFiEE\n"
      "-----END PGP SIGNATURE-----\n";
  auto text = apt::strip_clearsign(inrelease);
  CHECK(text.find("PGP") == std::string::npos);
  CHECK(text.find("Dashed: line") != std::string::npos);
  auto rel = apt::parse_release(text);
  REQUIRE(rel);
  CHECK(rel->codename == "bookworm");
  REQUIRE(rel->sha256.contains("main/binary-amd64/Packages.xz"));
  CHECK(rel->sha256["main/binary-amd64/Packages.xz"].sha256 == "b43ea20282c4611bda05452aca11597621d095daf7adeedb614fcf5a4227c02a");
  CHECK(rel->sha256["main/binary-amd64/Packages"].size == 2599);
  CHECK_FALSE(apt::parse_release("Suite: x\n"));
}

TEST_CASE("a Packages index parses the same in any chunking and keeps only what is asked", "[unit][apt]") {
  const std::string index =
      "Package: bash\nVersion: 5.2\nArchitecture: amd64\nFilename: pool/b/bash.deb\nSize: 1\nSHA256: " + std::string(64, 'a') + "\n\n"
      "Package: linux-headers-6.1.0-1-amd64\nVersion: 6.1.1-1\nArchitecture: amd64\n"
      "Depends: linux-headers-6.1.0-1-common (= 6.1.1-1), linux-kbuild-6.1 (>= 6.1.1-1),\n linux-compiler-gcc-12-x86\n"
      "Filename: pool/l/h.deb\nSize: 1841552\nSHA256: " + std::string(64, 'b') + "\n\n"
      "Package: linux-kbuild-6.1\nVersion: 6.1.1-1\nArchitecture: amd64\nFilename: pool/l/k.deb\nSize: 3\nSHA256: " + std::string(64, 'c') + "\n";
  auto keep = [](std::string_view n) { return n.starts_with("linux-"); };
  apt::PackagesParser whole("http://r", keep);
  REQUIRE(whole.feed(index));
  auto a = whole.finish();
  apt::PackagesParser bytewise("http://r", keep);
  for (char c : index) REQUIRE(bytewise.feed(std::string_view(&c, 1)));
  auto b = bytewise.finish();
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(a->size() == 2);
  REQUIRE(b->size() == 2);
  CHECK((*a)[0].name == "linux-headers-6.1.0-1-amd64");
  CHECK((*b)[0].depends == (*a)[0].depends);
  CHECK((*a)[0].size == 1841552);
  CHECK((*a)[1].repo == "http://r");
}

TEST_CASE("a kept package without a SHA256 is bad data", "[unit][apt]") {
  apt::PackagesParser p("http://r", [](std::string_view) { return true; });
  auto fed = p.feed("Package: linux-x\nVersion: 1\nFilename: pool/x.deb\n\n");
  REQUIRE_FALSE(fed);
  CHECK(fed.error().code == ExitCode::data_err);
  CHECK(fed.error().message == "package linux-x has no Filename, Version or SHA256 in the index");
}

TEST_CASE("versions order as dpkg orders them", "[unit][apt]") {
  CHECK(apt::compare_versions("6.1.192-2", "6.1.192-2") == 0);
  CHECK(apt::compare_versions("6.1.192-2", "6.1.76-1") > 0);
  CHECK(apt::compare_versions("1.0~rc1", "1.0") < 0);
  CHECK(apt::compare_versions("1:0.1", "2.0") > 0);
  CHECK(apt::compare_versions("1.0-1", "1.0-1+deb12u1") < 0);
  CHECK(apt::compare_versions("1.0a", "1.0+") < 0);
  CHECK(apt::compare_versions("5.15.0-91.101", "5.15.0-101.111") < 0);
}

TEST_CASE("Depends splits into groups of alternatives with their relations", "[unit][apt]") {
  auto d = apt::parse_depends("linux-headers-6.1.0-1-common (= 6.1.1-1), linux-kbuild-6.1 (>= 6.1.1-1) | linux-kbuild, libc6:any");
  REQUIRE(d.size() == 3);
  CHECK(d[0][0].relation == "=");
  CHECK(d[1].size() == 2);
  CHECK(d[1][0].satisfied_by("6.1.2-1"));
  CHECK_FALSE(d[0][0].satisfied_by("6.1.2-1"));
  CHECK(d[2][0].name == "libc6");
}

TEST_CASE("os-release tells the node's family", "[unit][host]") {
  test::TempDir tmp;
  test::write_file(tmp / "usr/lib/os-release", "NAME=\"Red Hat Enterprise Linux CoreOS\"\nID=\"rhcos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"4.14\"\n");
  auto os = host::read_os_release(tmp.path);
  CHECK(os.id == "rhcos");
  CHECK(os.rhel_family());
  CHECK_FALSE(os.debian_family());
  CHECK(os.describe() == "rhcos 4.14");
  CHECK(host::read_os_release(tmp / "none").describe() == "unknown");

  // An absolute /etc/os-release link is followed inside the host root, not in this container
  // (whose own /usr/lib/os-release says debian).
  std::filesystem::create_directories(tmp / "etc");
  std::filesystem::create_symlink("/usr/lib/os-release", tmp / "etc/os-release");
  CHECK(host::read_os_release(tmp.path).describe() == "rhcos 4.14");
}

TEST_CASE("paths resolve inside a host root as if it were /", "[unit][host]") {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp / "usr/src/kernels/1");
  std::filesystem::create_directories(tmp / "usr/lib/modules/1");
  std::filesystem::create_symlink("usr/lib", tmp / "lib");
  std::filesystem::create_symlink("/usr/src/kernels/1", tmp / "usr/lib/modules/1/build");
  std::filesystem::create_symlink("../../../../../../../etc", tmp / "usr/lib/modules/1/up");
  CHECK(host::resolve_in_root(tmp.path, "lib/modules/1/build") == "usr/src/kernels/1");
  CHECK(host::resolve_in_root(tmp.path, "lib/modules/1/up") == std::nullopt);  // clamps at the root: no /etc there
  CHECK(host::resolve_in_root(tmp.path, "lib/modules/2") == std::nullopt);
}

TEST_CASE("a flat repository's directory is where its Release and index are, and it takes no components", "[unit][apt]") {
  auto r = apt::parse_one_line("deb http://h/repo/ flat/\ndeb [trusted=yes] http://h/local ./\ndeb http://h/debian bookworm main\n", "l");
  REQUIRE(r);
  REQUIRE(r->size() == 3);
  CHECK((*r)[0].flat());
  CHECK((*r)[0].index_base() == "http://h/repo/flat");
  CHECK((*r)[1].index_base() == "http://h/local");
  CHECK_FALSE((*r)[2].flat());
  CHECK((*r)[2].index_base() == "http://h/debian/dists/bookworm");
  apt::Package p;
  p.repo = "http://h/local";
  p.filename = "./linux-kbuild-6.1_6.1.1-1_amd64.deb";
  CHECK(p.url() == "http://h/local/linux-kbuild-6.1_6.1.1-1_amd64.deb");
  p.filename = "pool/main/l/x.deb";
  CHECK(p.url() == "http://h/local/pool/main/l/x.deb");

  auto bad = apt::parse_one_line("deb http://h/repo flat/ main\n", "/etc/apt/sources.list");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ExitCode::config);
  CHECK_THAT(bad.error().message, Catch::StartsWith("/etc/apt/sources.list:1:") && Catch::Contains("takes no components"));
  auto deb822 = apt::parse_deb822("Types: deb\nURIs: http://h/local\nSuites: ./\n", "local.sources");
  REQUIRE(deb822);
  CHECK(deb822->front().index_base() == "http://h/local");
  CHECK_FALSE(apt::parse_deb822("Types: deb\nURIs: http://h/local\nSuites: ./\nComponents: main\n", "local.sources"));
}

TEST_CASE("a Release file's Valid-Until is read as a UTC date, and a line can turn the check off", "[unit][apt]") {
  const std::string sha = "SHA256:\n " + std::string(64, 'a') + " 10 main/binary-amd64/Packages\n";
  auto r = apt::parse_release("Suite: stable\nDate: Sat, 23 Nov 2026 08:00:00 UTC\nValid-Until: Mon, 30 Nov 2026 08:22:49 UTC\n" + sha);
  REQUIRE(r);
  REQUIRE(r->valid_until.has_value());
  CHECK(*r->valid_until == 1796026969);  // date -u -d '2026-11-30 08:22:49' +%s
  CHECK(r->valid_until_text == "Mon, 30 Nov 2026 08:22:49 UTC");
  auto none = apt::parse_release("Suite: stable\n" + sha);
  REQUIRE(none);
  CHECK_FALSE(none->valid_until.has_value());
  auto bad = apt::parse_release("Valid-Until: next Tuesday\n" + sha);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ExitCode::data_err);
  CHECK_THAT(bad.error().message, Catch::Contains("Valid-Until 'next Tuesday' is not a date"));

  auto lines = apt::parse_one_line("deb [check-valid-until=no] http://h/d s main\ndeb http://h/d s main\n", "l");
  REQUIRE(lines);
  CHECK_FALSE((*lines)[0].check_valid_until);
  CHECK((*lines)[1].check_valid_until);
  auto stanza = apt::parse_deb822("Types: deb\nURIs: http://h/d\nSuites: s\nComponents: main\nCheck-Valid-Until: no\n", "x.sources");
  REQUIRE(stanza);
  CHECK_FALSE(stanza->front().check_valid_until);
}
