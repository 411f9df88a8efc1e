// RPM packages checked as rpm and dnf check them, then extracted: the fixture's real packages
// (rpmbuild, rpmsign, gpg), and copies of them damaged byte by byte.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <sstream>

#include "helpers.hpp"
#include "kmodkit/archive.hpp"
#include "kmodkit/subprocess.hpp"
#include "rpm_package.hpp"

using namespace kmodkit;
using namespace kmodkit::init;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

fs::path rpm_repo() { return test::fixtures_dir() / "rpm-repo"; }
std::string kernel_release() {
  const std::string text = test::read_file(rpm_repo() / "kernel-release");
  return text.substr(0, text.find('\n'));
}
fs::path repo_key() { return rpm_repo() / "RPM-GPG-KEY-kmodkit-test"; }

// The fixture's version and release of R = 6.1.0-57-amd64: 6.1.0 and 57.amd64.
std::string rpm_version_release() {
  std::string r = kernel_release();
  const auto dash = r.find('-');
  std::string release = r.substr(dash + 1);
  for (auto& c : release) {
    if (c == '-') c = '.';
  }
  return r.substr(0, dash) + "-" + release;
}

fs::path kernel_devel(const std::string& flavour) {
  return rpm_repo() / flavour / ("kernel-devel-" + rpm_version_release() + ".x86_64.rpm");
}

std::string query(const fs::path& rpm, const std::string& format) {
  auto out = subprocess::run({"rpm", "-qp", "--nosignature", "--nodigest", "--qf", format, rpm.string()});
  REQUIRE(out);
  INFO(out->output);
  REQUIRE(out->ok());
  return out->output;
}

uint32_t be32(const std::string& bytes, size_t at) {
  return (uint32_t{static_cast<unsigned char>(bytes.at(at))} << 24) |
         (uint32_t{static_cast<unsigned char>(bytes.at(at + 1))} << 16) |
         (uint32_t{static_cast<unsigned char>(bytes.at(at + 2))} << 8) | uint32_t{static_cast<unsigned char>(bytes.at(at + 3))};
}

// Where the main header starts and ends in a package's bytes (the lead is 96 bytes, the
// signature header is padded to 8).
struct Layout {
  size_t main = 0, main_index = 0, main_data = 0, payload = 0;
};
Layout layout_of(const std::string& bytes) {
  const size_t sig_end = 96 + 16 + 16 * size_t{be32(bytes, 96 + 8)} + be32(bytes, 96 + 12);
  Layout l;
  l.main = (sig_end + 7) / 8 * 8;
  l.main_index = l.main + 16;
  l.main_data = l.main_index + 16 * size_t{be32(bytes, l.main + 8)};
  l.payload = l.main_data + be32(bytes, l.main + 12);
  return l;
}

// A package's index entries: where each lies in its bytes, its tag, and where its data starts.
struct RawEntry {
  size_t at = 0;
  int32_t tag = 0;
  size_t data = 0;
};
std::vector<RawEntry> entries_of(const std::string& bytes, size_t header) {
  std::vector<RawEntry> out;
  const uint32_t count = be32(bytes, header + 8);
  const size_t data = header + 16 + 16 * size_t{count};
  for (uint32_t i = 0; i < count; ++i) {
    const size_t at = header + 16 + 16 * size_t{i};
    out.push_back({at, static_cast<int32_t>(be32(bytes, at)), data + be32(bytes, at + 8)});
  }
  return out;
}

// A program's path, looked up in PATH as a shell does (rpmsign runs gpg by its configured path).
std::string program_path(const std::string& name) {
  std::istringstream dirs(std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && ::access((fs::path(dir) / name).c_str(), X_OK) == 0) return (fs::path(dir) / name).string();
  }
  FAIL(name << " is not in PATH");
  return {};
}

// The digest of `data` as a coreutils tool (sha256sum, sha1sum, md5sum) prints it.
std::string digest_tool(const std::string& tool, const TempDir& tmp, const std::string& data) {
  test::write_file(tmp / "digest-input", data);
  auto out = subprocess::run({tool, (tmp / "digest-input").string()});
  REQUIRE(out);
  REQUIRE(out->ok());
  return out->output.substr(0, out->output.find(' '));
}

void flip_byte(const fs::path& file, size_t at) {
  std::string bytes = test::read_file(file);
  bytes.at(at) = static_cast<char>(bytes.at(at) ^ 0x01);
  test::write_file(file, bytes);
}

void check_refused(const Result<rpm::PackageInfo>& r, const std::string& expected) {
  REQUIRE_FALSE(r);
  INFO(r.error().message);
  CHECK(r.error().code == ExitCode::data_err);
  CHECK_THAT(r.error().message, Catch::Contains(expected));
}

// Builds a noarch package with rpmbuild whose %install runs `install` (in the buildroot) and
// whose %files lists `files`.
fs::path build_rpm(const TempDir& tmp, const std::string& name, const std::string& install, const std::string& files) {
  test::write_file(tmp / ("SPECS/" + name + ".spec"),
                   "Name: " + name + "\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n"
                   "%global debug_package %{nil}\n%global __os_install_post %{nil}\n"
                   "%description\nt\n%install\ncd %{buildroot}\n" + install + "\n%files\n" + files + "\n");
  auto built = subprocess::run({"rpmbuild", "--define", "_topdir " + tmp.path.string(), "--define", "_build_id_links none",
                                "-bb", (tmp / ("SPECS/" + name + ".spec")).string()});
  REQUIRE(built);
  INFO(built->output);
  REQUIRE(built->ok());
  const fs::path rpm = tmp / ("RPMS/noarch/" + name + "-1-1.noarch.rpm");
  REQUIRE(fs::exists(rpm));
  return rpm;
}

}  // namespace

TEST_CASE("a signed kernel-devel passes with its repository's key and extracts its tree", "[integration][rpm_package]") {
  const fs::path rpm = kernel_devel("signed");
  auto info = rpm::check_package(rpm, "signed/kernel-devel", {repo_key().string()}, rpm::SignaturePolicy::required);
  INFO((info ? "" : info.error().message));
  REQUIRE(info);
  CHECK(info->name == "kernel-devel");
  CHECK(info->arch == "x86_64");
  CHECK(info->evr == rpm_version_release());
  CHECK(info->signed_by == test::key_id_of(repo_key()));
  CHECK(info->payload_digest == query(rpm, "%{PAYLOADDIGEST}"));

  // The key given inline (as a .repo file's gpgkey read into memory) verifies as well.
  auto inline_key = rpm::check_package(rpm, "signed/kernel-devel", {test::read_file(repo_key())}, rpm::SignaturePolicy::required);
  CHECK(inline_key);

  TempDir tmp;
  fs::create_directories(tmp / "root");
  auto extraction = archive::Extraction::create(archive::Policy{tmp / "root", nullptr, nullptr});
  REQUIRE(extraction);
  auto stats = rpm::extract_package(rpm, "signed/kernel-devel", **extraction);
  INFO((stats ? "" : stats.error().message));
  REQUIRE(stats);
  REQUIRE((*extraction)->finish());
  CHECK(stats->files > 1000);
  CHECK(fs::is_regular_file(tmp / ("root/usr/src/kernels/" + kernel_release() + "/Makefile")));
}

TEST_CASE("an unsigned package is refused where signatures are required and accepted where they are not",
          "[integration][rpm_package]") {
  const fs::path rpm = kernel_devel("unsigned");
  auto refused = rpm::check_package(rpm, "unsigned/kernel-devel", {repo_key().string()}, rpm::SignaturePolicy::required);
  check_refused(refused, "unsigned/kernel-devel: is not signed; the repository requires signed packages (gpgcheck=1)");

  auto accepted = rpm::check_package(rpm, "unsigned/kernel-devel", {}, rpm::SignaturePolicy::not_required);
  INFO((accepted ? "" : accepted.error().message));
  REQUIRE(accepted);
  CHECK(accepted->name == "kernel-devel");
  CHECK(accepted->signed_by.empty());
  CHECK(accepted->payload_digest == query(rpm, "%{PAYLOADDIGEST}"));
}

TEST_CASE("a package signed by a key the repository does not hold is refused naming the key id", "[integration][rpm_package]") {
  TempDir tmp;
  test::make_gpg_key(tmp / "gnupg", "another key <other@kmodkit.invalid>", tmp / "other.asc");

  auto r = rpm::check_package(kernel_devel("signed"), "signed/kernel-devel", {(tmp / "other.asc").string()},
                              rpm::SignaturePolicy::required);
  check_refused(r, "signed/kernel-devel: ");
  CHECK_THAT(r.error().message, Catch::Contains("key " + test::key_id_of(repo_key())));
}

TEST_CASE("a byte flipped in the main header is refused by the header digest and by the signature",
          "[integration][rpm_package]") {
  TempDir tmp;
  fs::copy_file(kernel_devel("signed"), tmp / "k.rpm");
  const auto l = layout_of(test::read_file(tmp / "k.rpm"));
  flip_byte(tmp / "k.rpm", (l.main_data + l.payload) / 2);
  check_refused(rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, rpm::SignaturePolicy::required),
                "k.rpm: header digest mismatch");
  check_refused(rpm::check_package(tmp / "k.rpm", "k.rpm", {}, rpm::SignaturePolicy::not_required),
                "k.rpm: header digest mismatch");

  // Nothing signs the signature header, so its digest entry can be struck out (its tag 273
  // renamed); the signature over the main header still refuses the change.
  std::string bytes = test::read_file(tmp / "k.rpm");
  bool struck = false;
  for (size_t i = 0; i < be32(bytes, 96 + 8); ++i) {
    const size_t at = 96 + 16 + 16 * i;
    if (be32(bytes, at) == 273) {
      bytes[at + 2] = '\x13';  // tag 273 (0x111) becomes 0x1311, which no rpm defines
      struck = true;
    }
  }
  REQUIRE(struck);
  test::write_file(tmp / "k.rpm", bytes);
  auto r = rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, rpm::SignaturePolicy::required);
  check_refused(r, "k.rpm: header signature by key " + test::key_id_of(repo_key()));
  CHECK_THAT(r.error().message, Catch::Contains("BAD signature"));
}

TEST_CASE("a byte flipped in the payload is refused naming both payload digests", "[integration][rpm_package]") {
  TempDir tmp;
  fs::copy_file(kernel_devel("signed"), tmp / "k.rpm");
  const std::string stated = query(tmp / "k.rpm", "%{PAYLOADDIGEST}");
  const std::string bytes = test::read_file(tmp / "k.rpm");
  flip_byte(tmp / "k.rpm", bytes.size() - 1000);
  test::write_file(tmp / "payload", test::read_file(tmp / "k.rpm").substr(layout_of(bytes).payload));
  const std::string actual = test::sha256_of(tmp / "payload");
  for (auto policy : {rpm::SignaturePolicy::required, rpm::SignaturePolicy::not_required}) {
    auto r = rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, policy);
    check_refused(r, "k.rpm: payload digest mismatch");
    CHECK_THAT(r.error().message, Catch::Contains(stated) && Catch::Contains(actual));
  }
}

// gpg names the signing key twice: by fingerprint (subpacket 33, hashed) and by key id
// (subpacket 16, unhashed, so anyone may change it without breaking the signature). Other
// signers write the fingerprint only. The key id is then read from the fingerprint.
TEST_CASE("a header signature naming its key only by fingerprint verifies and names that key", "[integration][rpm_package]") {
  TempDir tmp;
  std::string bytes = test::read_file(kernel_devel("signed"));
  bool renamed = false;
  std::vector<size_t> fingerprint_at;
  for (const auto& e : entries_of(bytes, 96)) {
    if (e.tag != 268) continue;
    // An old-format signature packet with a 2-byte length (0x89), version 4 (RFC 4880 5.2.3).
    REQUIRE(static_cast<unsigned char>(bytes[e.data]) == 0x89);
    REQUIRE(bytes[e.data + 3] == 4);
    const size_t hashed = e.data + 3 + 4;
    const size_t unhashed = hashed + 2 + ((size_t{static_cast<unsigned char>(bytes[hashed])} << 8) |
                                          static_cast<unsigned char>(bytes[hashed + 1]));
    const size_t end = unhashed + 2 + ((size_t{static_cast<unsigned char>(bytes[unhashed])} << 8) |
                                       static_cast<unsigned char>(bytes[unhashed + 1]));
    for (size_t at = unhashed + 2; at < end; at += 1 + static_cast<unsigned char>(bytes[at])) {
      if (bytes[at + 1] == 16) {
        bytes[at + 1] = 101;  // a private subpacket type, not critical: gpgv passes over it
        renamed = true;
      }
    }
    fingerprint_at.clear();
    for (size_t at = hashed + 2; at < unhashed; at += 1 + static_cast<unsigned char>(bytes[at])) {
      if (bytes[at + 1] == 33) fingerprint_at.push_back(at + 1);
    }
  }
  REQUIRE(renamed);
  test::write_file(tmp / "k.rpm", bytes);
  auto info = rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, rpm::SignaturePolicy::required);
  INFO((info ? "" : info.error().message));
  REQUIRE(info);
  CHECK(info->signed_by == test::key_id_of(repo_key()));

  // Without the fingerprint either, the signature names no key to check it with.
  REQUIRE(fingerprint_at.size() == 1);
  bytes[fingerprint_at[0]] = 101;
  test::write_file(tmp / "k.rpm", bytes);
  check_refused(rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, rpm::SignaturePolicy::required),
                "k.rpm: its header signature names no key");
}

// A package built by an rpm older than 4.14 states no payload digest, so its header signature
// does not cover the payload. Made here from the fixture's unsigned old kernel-devel: the payload
// digest tags renamed to tags no rpm defines, the signature header's digests of the changed
// header made right again, then signed by rpmsign with the fixture's key (which then adds a
// signature over header and payload, as it does for such packages).
TEST_CASE("a signed package that states no payload digest is refused where signatures are required",
          "[integration][rpm_package]") {
  TempDir tmp;
  std::string bytes = test::read_file(rpm_repo() / "unsigned/kernel-devel-6.1.0-1.amd64.x86_64.rpm");
  const auto l = layout_of(bytes);
  for (const auto& e : entries_of(bytes, l.main)) {
    if (e.tag == 5092 || e.tag == 5093 || e.tag == 5097) bytes[e.at + 1] = '\x42';
  }
  const std::string header = bytes.substr(l.main, l.payload - l.main);
  for (const auto& e : entries_of(bytes, 96)) {
    if (e.tag == 273) bytes.replace(e.data, 64, digest_tool("sha256sum", tmp, header));
    if (e.tag == 269) bytes.replace(e.data, 40, digest_tool("sha1sum", tmp, header));
    if (e.tag == 1004) {  // MD5 of header and payload, binary
      const std::string h = digest_tool("md5sum", tmp, bytes.substr(l.main));
      for (size_t i = 0; i < 16; ++i) bytes[e.data + i] = static_cast<char>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
    }
  }
  test::write_file(tmp / "old.rpm", bytes);
  auto copied = subprocess::run({"cp", "-a", (rpm_repo() / "gnupg").string(), (tmp / "gnupg").string()});
  REQUIRE((copied && copied->ok()));
  const subprocess::Options gnupg{.cwd = {}, .env = {{"GNUPGHOME", (tmp / "gnupg").string()}}, .timeout = std::chrono::minutes(2)};
  auto signed_ = subprocess::run({"rpmsign", "--addsign", "--define", "_gpg_name kmodkit test repository <test@kmodkit.invalid>",
                                  "--define", "_gpg_path " + (tmp / "gnupg").string(), "--define", "__gpg " + program_path("gpg"),
                                  (tmp / "old.rpm").string()}, gnupg);
  subprocess::run({"gpgconf", "--kill", "gpg-agent"}, gnupg);  // the agent rpmsign's gpg started for that home
  REQUIRE(signed_);
  INFO(signed_->output);
  REQUIRE(signed_->ok());
  REQUIRE(query(tmp / "old.rpm", "%{PAYLOADDIGEST}") == "(none)");

  check_refused(rpm::check_package(tmp / "old.rpm", "old.rpm", {repo_key().string()}, rpm::SignaturePolicy::required),
                "old.rpm: states no payload digest, so its header signature does not cover the payload");
  auto accepted = rpm::check_package(tmp / "old.rpm", "old.rpm", {}, rpm::SignaturePolicy::not_required);
  INFO((accepted ? "" : accepted.error().message));
  REQUIRE(accepted);
  CHECK(accepted->payload_digest.empty());
  CHECK(accepted->evr == "6.1.0-1.amd64");
}

TEST_CASE("a truncated package, a text file and a bad index entry are refused as not an RPM or a bad structure",
          "[integration][rpm_package]") {
  TempDir tmp;
  const std::string bytes = test::read_file(kernel_devel("signed"));
  const auto l = layout_of(bytes);
  for (size_t size : {size_t{0}, size_t{50}, size_t{200}, l.main + 100, l.payload + (bytes.size() - l.payload) / 2}) {
    INFO(size);
    test::write_file(tmp / "k.rpm", bytes.substr(0, size));
    for (auto policy : {rpm::SignaturePolicy::required, rpm::SignaturePolicy::not_required}) {
      auto r = rpm::check_package(tmp / "k.rpm", "k.rpm", {repo_key().string()}, policy);
      check_refused(r, size < 4 ? "k.rpm: not an RPM package" : "k.rpm: truncated");
    }
  }

  test::write_file(tmp / "notes.txt", "kernel-devel is a package of headers\n");
  check_refused(rpm::check_package(tmp / "notes.txt", "notes.txt", {repo_key().string()}, rpm::SignaturePolicy::required),
                "notes.txt: not an RPM package");

  // The main header's first entry pointing far beyond the header's data.
  std::string bad = bytes;
  bad[l.main_index + 8] = '\x7f';
  test::write_file(tmp / "bad.rpm", bad);
  check_refused(rpm::check_package(tmp / "bad.rpm", "bad.rpm", {}, rpm::SignaturePolicy::not_required),
                "bad.rpm: bad main header: entry 1 (tag 63)");
}

// rpmbuild packages what its build root holds, so its payload cannot name a file below one of
// its own symlinks nor a path with "..": the worst it can carry is a symlink leading out of the
// tree, relative or absolute. The extraction's policy refuses the one and re-aims the other.
TEST_CASE("symlinks out of the tree in a package built by rpmbuild are refused or re-aimed inside the root",
          "[integration][rpm_package]") {
  TempDir tmp;
  const fs::path escape = build_rpm(tmp, "escape", "mkdir -p usr/share/evil && ln -s ../../../../../../../../tmp usr/share/evil/out",
                                    "/usr/share/evil");
  const fs::path absolute = build_rpm(tmp, "absolute",
                                      "mkdir -p usr/share/abs etc && echo x > etc/passwd-copy && "
                                      "ln -s /etc/passwd-copy usr/share/abs/passwd && ln -s / usr/share/abs/root",
                                      "/usr/share/abs\n/etc/passwd-copy");
  for (const auto& rpm : {escape, absolute}) {
    auto info = rpm::check_package(rpm, rpm.filename().string(), {}, rpm::SignaturePolicy::not_required);
    INFO((info ? "" : info.error().message));
    CHECK(info);
  }

  fs::create_directories(tmp / "out/root");
  {
    auto extraction = archive::Extraction::create(archive::Policy{tmp / "out/root", nullptr, nullptr});
    REQUIRE(extraction);
    auto r = rpm::extract_package(escape, "escape.rpm", **extraction);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
    CHECK_THAT(r.error().message, Catch::Contains("escape.rpm") && Catch::Contains("leads outside the tree"));
  }
  // Refused before the link was made; only directories stayed, inside the root.
  for (const auto& e : fs::recursive_directory_iterator(tmp / "out/root")) CHECK(e.is_directory());
  CHECK(std::vector<fs::path>(fs::directory_iterator(tmp / "out"), fs::directory_iterator()).size() == 1);

  fs::create_directories(tmp / "out2/root");
  auto extraction = archive::Extraction::create(archive::Policy{tmp / "out2/root", nullptr, nullptr});
  REQUIRE(extraction);
  auto r = rpm::extract_package(absolute, "absolute.rpm", **extraction);
  INFO((r ? "" : r.error().message));
  REQUIRE(r);
  REQUIRE((*extraction)->finish());
  CHECK(fs::read_symlink(tmp / "out2/root/usr/share/abs/passwd") == "../../../etc/passwd-copy");
  CHECK(fs::read_symlink(tmp / "out2/root/usr/share/abs/root") == "../../..");
  CHECK(fs::canonical(tmp / "out2/root/usr/share/abs/passwd") == fs::canonical(tmp / "out2/root/etc/passwd-copy"));
  CHECK(std::vector<fs::path>(fs::directory_iterator(tmp / "out2"), fs::directory_iterator()).size() == 1);
}
