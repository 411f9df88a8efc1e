// init-modules' rpm source end to end: the real binary, a real HTTP(S) server, dnf repositories
// built by rpmbuild, rpmsign and createrepo_c (tests/support/make-rpm-repo.sh).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <regex>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/text.hpp"

using namespace kmodkit;
using kmodkit::test::HttpServer;
using kmodkit::test::Run;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A private copy of the fixture repositories (signed/, unsigned/, zstd/ and the key), so a test
// may damage them, and a volume beside it.
struct RpmRepo {
  TempDir tmp;
  fs::path root = tmp / "repo";
  fs::path vol = tmp / "vol";
  std::string kver;
  RpmRepo() {
    test::copy_tree(test::fixtures_dir() / "rpm-repo", root);
    kver = test::read_file(root / "kernel-release");
    while (!kver.empty() && kver.back() == '\n') kver.pop_back();
    fs::create_directories(vol);
  }
  fs::path key() const { return root / "RPM-GPG-KEY-kmodkit-test"; }
  // R's package file name stem: Version-Release as make-rpm-repo.sh splits R (6.1.0-57-amd64 is
  // Version 6.1.0, Release 57.amd64).
  std::string nvr(const std::string& name) const {
    std::string release = kver.substr(kver.find('-') + 1);
    std::replace(release.begin(), release.end(), '-', '.');
    return name + "-" + kver.substr(0, kver.find('-')) + "-" + release;
  }

  // Writes a .repo file with one repository and returns its path.
  fs::path repo_file(const std::string& baseurl, const std::string& extra = "gpgcheck=1\nrepo_gpgcheck=1\n",
                     const std::string& name = "test.repo") const {
    const fs::path file = tmp / name;
    test::write_file(file, "[kmodkit-test]\nname=kmodkit test repository\nbaseurl=" + baseurl + "\nenabled=1\n" + extra +
                               "gpgkey=file://" + key().string() + "\n");
    return file;
  }

  std::vector<std::string> args(const fs::path& repo_file, std::vector<std::string> extra = {}) const {
    return std::vector<std::string>{"--kernel-release", kver, "--volume", vol.string(), "--host-root",
                                    (tmp / "no-host").string(), "--sysfs", (tmp / "no-sys").string(), "--retry-delay",
                                    "0.05", "--sources", "volume,rpm", "--rpm-repo", repo_file.string(),
                                    "--basearch", "x86_64", "--releasever", "9"} +
           extra;
  }
  Run run(const fs::path& repo_file, std::vector<std::string> extra = {}) const {
    return test::run_init_modules(args(repo_file, std::move(extra)));
  }
  fs::path manifest() const { return vol / ".kmodkit/kernels" / (kver + ".json"); }

  // The primary.xml.* of a variant, as repomd.xml names it.
  fs::path primary(const std::string& variant) const {
    for (const auto& e : fs::directory_iterator(root / variant / "repodata")) {
      if (e.path().filename().string().find("-primary.xml") != std::string::npos) return e.path();
    }
    throw std::runtime_error("no primary in " + variant);
  }
  fs::path rpm(const std::string& variant, const std::string& prefix) const {
    for (const auto& e : fs::directory_iterator(root / variant)) {
      const auto name = e.path().filename().string();
      if (name.starts_with(prefix) && name.ends_with(".rpm")) return e.path();
    }
    throw std::runtime_error("no package " + prefix + " in " + variant);
  }
};

// Nothing of the kernel is visible in the volume: no manifest, no tree, staging empty.
void check_nothing_published(const RpmRepo& r) {
  CHECK_FALSE(fs::exists(r.manifest()));
  CHECK_FALSE(fs::exists(r.vol / ("usr/src/kernels/" + r.kver)));
  if (fs::exists(r.vol / ".kmodkit/staging")) CHECK(fs::is_empty(r.vol / ".kmodkit/staging"));
}

// Runs a shell command and requires it to succeed.
void sh(const std::string& command) {
  auto r = subprocess::run({"sh", "-c", command});
  REQUIRE(r);
  INFO(command << "\n" << r->output);
  REQUIRE(r->ok());
}

// A test CA, the server's certificate for 127.0.0.1, and an entitlement-like client certificate
// it signed, made with openssl in `dir`, which is returned.
fs::path make_pki(const fs::path& pki) {
  fs::create_directories(pki);
  sh("cd " + pki.string() +
     " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=kmodkit test CA' -keyout ca.key -out ca.pem 2>/dev/null"
     " && openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout server.key -out server.csr 2>/dev/null"
     " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
     " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null"
     " && openssl req -newkey rsa:2048 -nodes -subj '/CN=entitlement' -keyout client.key -out client.csr 2>/dev/null"
     " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem 2>/dev/null");
  return pki;
}

}  // namespace

TEST_CASE("the rpm source lays out RHEL's tree from a signed dnf repository over HTTP, and a second run reuses it",
          "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  const auto file = r.repo_file(server.url() + "/signed");
  auto run = r.run(file);
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.last_line, Catch::Contains("kernel " + r.kver + " ready in") && Catch::Contains("source rpm (kmodkit-test") &&
                                Catch::Contains("kernel-devel") && Catch::Contains("kernel-core") &&
                                Catch::Contains("kernel-modules-core"));
  const auto manifest = test::read_file(r.manifest());
  CHECK_THAT(manifest, Catch::Contains("\"source\": \"rpm\"") &&
                           Catch::Contains(test::sha256_of(r.rpm("signed", r.nvr("kernel-devel") + "."))) &&
                           Catch::Contains(test::sha256_of(r.rpm("signed", r.nvr("kernel-core") + "."))) &&
                           Catch::Contains(test::sha256_of(r.rpm("signed", r.nvr("kernel-modules-core") + "."))));
  // kernel-modules-core's part of the modules tree (RHEL 9.2 moved the modules there).
  CHECK(fs::exists(r.vol / ("usr/lib/modules/" + r.kver + "/modules.networking")));
  CHECK(fs::is_regular_file(r.vol / ("usr/src/kernels/" + r.kver + "/Makefile")));
  CHECK(fs::read_symlink(r.vol / ("usr/lib/modules/" + r.kver + "/build")) == "../../../src/kernels/" + r.kver);
  CHECK(fs::is_regular_file(r.vol / ("usr/lib/modules/" + r.kver + "/build/scripts/mod/modpost")));
  CHECK(fs::exists(r.vol / ("usr/lib/modules/" + r.kver + "/modules.dep")));
  CHECK_FALSE(fs::exists(r.vol / ("usr/src/kernels/6.1.0-1-amd64")));
  CHECK(fs::is_empty(r.vol / ".kmodkit/staging"));

  // The warm path: the server is gone and nothing is needed from it.
  server.stop();
  auto again = r.run(file);
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.last_line, Catch::Contains("already on"));
}

TEST_CASE("the rpm source reads zstd-compressed repository metadata", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  REQUIRE(r.primary("zstd").extension() == ".zst");
  auto run = r.run(r.repo_file(server.url() + "/zstd"));
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(test::read_file(r.manifest()), Catch::Contains("\"source\": \"rpm\""));
}

TEST_CASE("of several kernels in a repository, the package that provides the release is chosen", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  const auto file = r.repo_file(server.url() + "/signed");
  auto run = r.run(file, {"--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  const std::string version = r.kver.substr(0, r.kver.find('-'));
  CHECK_THAT(run.output, Catch::Contains("would install kernel-devel " + version + "-") &&
                             !Catch::Contains("kernel-devel 6.1.0-1.amd64") && Catch::Contains("kernel-core " + version));

  // The older kernel's package is found for its own release, alone (it has no kernel-core), and
  // is not laid out: it lacks what a module build needs.
  auto old = test::run_init_modules(r.args(file) + std::vector<std::string>{"--kernel-release", "6.1.0-1-amd64"});
  INFO(old.output);
  CHECK(old.code == 66);
  CHECK_THAT(old.output, Catch::Contains("source rpm: kernel-devel 6.1.0-1.amd64 lacks what a module build needs: .config"));
  CHECK_FALSE(fs::exists(r.vol / ".kmodkit/kernels/6.1.0-1-amd64.json"));
}

TEST_CASE("of the packages that provide the release in several repositories, the newest EVR is chosen", "[e2e][rpm]") {
  RpmRepo r;
  // A second repository with R's kernel-devel at epoch 1, built by rpmbuild and createrepo_c.
  const fs::path spec = r.tmp / "newer.spec";
  test::write_file(spec, "Name: kernel-devel\nEpoch: 1\nVersion: 6.1.0\nRelease: 57.amd64\nSummary: newer\n"
                         "License: GPL-2.0-only\nBuildArch: x86_64\nProvides: kernel-devel-uname-r = " + r.kver + "\n"
                         "AutoReqProv: no\n%global debug_package %{nil}\n%global __os_install_post %{nil}\n"
                         "%description\nnewer\n%install\nmkdir -p %{buildroot}/usr/src/kernels/" + r.kver +
                         "\necho newer > %{buildroot}/usr/src/kernels/" + r.kver + "/NEWER\n%files\n/usr/src/kernels/" +
                         r.kver + "\n");
  sh("rpmbuild --quiet -bb --define '_topdir " + (r.tmp / "rpmbuild").string() + "' --define '_rpmdir " +
     (r.tmp / "built").string() + "' --define '_build_id_links none' --define '_wrong_version_format_terminate_build 0' " +
     spec.string() + " 2>/dev/null && mkdir -p " + (r.root / "newer").string() + " && mv " + (r.tmp / "built").string() +
     "/*/*.rpm " + (r.root / "newer").string() + " && createrepo_c --quiet " + (r.root / "newer").string());
  HttpServer server(r.root);
  const fs::path file = r.tmp / "two.repo";
  test::write_file(file, "[kmodkit-test]\nbaseurl=" + server.url() + "/signed\ngpgcheck=1\ngpgkey=file://" + r.key().string() +
                             "\n\n[newer]\nbaseurl=" + server.url() + "/newer\ngpgcheck=0\n");
  auto run = r.run(file, {"--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("would install kernel-devel 1:6.1.0-57.amd64") && Catch::Contains("from newer ("));
}

TEST_CASE("an rpm dry run says which packages it would fetch and writes nothing", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  auto run = r.run(r.repo_file(server.url() + "/signed"), {"--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("source rpm: would install kernel-devel") && Catch::Contains("from kmodkit-test"));
  CHECK_THAT(run.last_line, Catch::Contains("nothing was written"));
  CHECK(fs::is_empty(r.vol));
}

TEST_CASE("with repo_gpgcheck=1, repomd.xml without its signature or signed by another key is refused with exit 65",
          "[e2e][rpm][faults][signature]") {
  RpmRepo r;
  HttpServer server(r.root);
  const auto file = r.repo_file(server.url() + "/signed");

  fs::remove(r.root / "signed/repodata/repomd.xml.asc");
  auto unsigned_run = r.run(file);
  INFO(unsigned_run.output);
  CHECK(unsigned_run.code == 65);
  CHECK_THAT(unsigned_run.last_line,
             Catch::Contains(server.url() + "/signed/repodata/repomd.xml is not signed (no repomd.xml.asc)") &&
                 Catch::Contains("repo_gpgcheck=1"));
  check_nothing_published(r);

  // Signed again, by a key the repository's gpgkey does not hold.
  const fs::path home = r.tmp / "other-gnupg";
  fs::create_directories(home);
  fs::permissions(home, fs::perms::owner_all);
  const std::string gpg = "gpg --batch --quiet --homedir " + home.string() + " ";
  sh(gpg + "--passphrase '' --quick-gen-key 'someone else <else@example.com>' rsa2048 sign never && " + gpg +
     "--armor --detach-sign -o " + (r.root / "signed/repodata/repomd.xml.asc").string() + " " +
     (r.root / "signed/repodata/repomd.xml").string() + "; status=$?; gpgconf --homedir " + home.string() +
     " --kill all; exit $status");
  auto other_key = r.run(file);
  INFO(other_key.output);
  CHECK(other_key.code == 65);
  CHECK_THAT(other_key.last_line, Catch::Contains("repository kmodkit-test (" + file.string() + ":1)") &&
                                      Catch::Contains("repomd.xml: the signature does not verify"));
  check_nothing_published(r);
}

TEST_CASE("a node with its own modules tree gets kernel-devel from the repository and its modules tree copied",
          "[e2e][rpm][host]") {
  RpmRepo r;
  HttpServer server(r.root);
  test::write_file(r.tmp / ("host/usr/lib/modules/" + r.kver + "/modules.dep"), "");
  auto run = test::run_init_modules(r.args(r.repo_file(server.url() + "/signed")) +
                                    std::vector<std::string>{"--host-root", (r.tmp / "host").string(), "--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("source rpm: would install kernel-devel") && !Catch::Contains("kernel-core") &&
                             Catch::Contains("and copy " + (r.tmp / ("host/usr/lib/modules/" + r.kver)).string()));
}

TEST_CASE("a repository file that uses $releasever when it is not known, or is missing, is a configuration error saying what to give",
          "[e2e][rpm]") {
  RpmRepo r;
  auto run = test::run_init_modules({"--kernel-release", r.kver, "--volume", r.vol.string(), "--host-root",
                                     (r.tmp / "no-host").string(), "--sources", "rpm", "--rpm-repo",
                                     r.repo_file("http://127.0.0.1:1/$releasever/os").string()});
  INFO(run.output);
  CHECK(run.code == 78);
  CHECK_THAT(run.last_line, Catch::Contains((r.tmp / "test.repo").string() + ":3: baseurl: uses $releasever but its value is not known; give --releasever"));

  auto missing = test::run_init_modules({"--kernel-release", r.kver, "--volume", r.vol.string(), "--host-root",
                                         (r.tmp / "no-host").string(), "--sources", "rpm", "--rpm-repo",
                                         (r.tmp / "missing.repo").string()});
  INFO(missing.output);
  CHECK(missing.code == 78);
  CHECK_THAT(missing.last_line, Catch::EndsWith("source rpm: repository file " + (r.tmp / "missing.repo").string() +
                                                ": No such file or directory"));
}

TEST_CASE("a primary.xml that does not match repomd.xml's checksum, or is truncated, is refused with exit 65",
          "[e2e][rpm][faults]") {
  RpmRepo r;
  HttpServer server(r.root);
  // Without repo_gpgcheck: the repository's checksums are what stands between it and a wrong index.
  const auto file = r.repo_file(server.url() + "/unsigned", "gpgcheck=0\n");
  const fs::path primary = r.primary("unsigned");
  const std::string url = server.url() + "/unsigned/repodata/" + primary.filename().string();
  const std::string good = test::read_file(primary);
  const std::string good_sha = test::sha256_of(primary);

  // Cut in half: what arrives is not what repomd.xml describes.
  test::write_file(primary, good.substr(0, good.size() / 2));
  auto truncated = r.run(file);
  INFO(truncated.output);
  CHECK(truncated.code == 65);
  CHECK_THAT(truncated.last_line, Catch::Contains(url + ": SHA256 mismatch: repomd.xml says " + good_sha + ", got " +
                                                  test::sha256_of(primary)));
  check_nothing_published(r);

  // Whole, but repomd.xml records another checksum for it.
  test::write_file(primary, good);
  const fs::path repomd = r.root / "unsigned/repodata/repomd.xml";
  std::string text = test::read_file(repomd);
  const std::string other_sha(64, 'a');
  REQUIRE(text.find(good_sha) != std::string::npos);
  text.replace(text.find(good_sha), good_sha.size(), other_sha);
  test::write_file(repomd, text);
  auto mismatch = r.run(file);
  INFO(mismatch.output);
  CHECK(mismatch.code == 65);
  CHECK_THAT(mismatch.last_line, Catch::Contains(url + ": SHA256 mismatch: repomd.xml says " + other_sha + ", got " + good_sha));
  check_nothing_published(r);

  // The file as repomd.xml describes it, but its uncompressed content not: the open-checksum.
  text.replace(text.find(other_sha), other_sha.size(), good_sha);
  const std::regex open_checksum("(<open-checksum type=\"sha256\">)[0-9a-f]{64}");
  std::smatch m;
  REQUIRE(std::regex_search(text, m, open_checksum));
  const std::string good_open = m.str().substr(m.str().size() - 64);
  text = std::regex_replace(text, open_checksum, "$1" + other_sha, std::regex_constants::format_first_only);
  test::write_file(repomd, text);
  auto open_mismatch = r.run(file);
  INFO(open_mismatch.output);
  CHECK(open_mismatch.code == 65);
  CHECK_THAT(open_mismatch.last_line, Catch::Contains(url + ": SHA256 mismatch of its uncompressed content: repomd.xml says " +
                                                      other_sha + ", got " + good_open));
  check_nothing_published(r);
}

TEST_CASE("a package that does not match primary.xml's checksum is refused with exit 65 and nothing is extracted",
          "[e2e][rpm][faults]") {
  RpmRepo r;
  HttpServer server(r.root);
  const auto file = r.repo_file(server.url() + "/unsigned", "gpgcheck=0\n");
  const fs::path core = r.rpm("unsigned", "kernel-core");
  std::string bytes = test::read_file(core);
  bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 0x5a);
  test::write_file(core, bytes);
  auto run = r.run(file);
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(server.url() + "/unsigned/" + core.filename().string() +
                                            ": SHA256 mismatch: primary.xml says"));
  check_nothing_published(r);
}

TEST_CASE("with gpgcheck=1, unsigned packages are refused with exit 65 and nothing is extracted", "[e2e][rpm][faults][signature]") {
  RpmRepo r;
  HttpServer server(r.root);
  auto run = r.run(r.repo_file(server.url() + "/unsigned", "gpgcheck=1\n"));
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(server.url() + "/unsigned/kernel-") && Catch::Contains(".rpm"));  // names the package
  check_nothing_published(r);

  // The same packages where the repository does not ask for signatures.
  auto unchecked = r.run(r.repo_file(server.url() + "/unsigned", "gpgcheck=0\n"));
  INFO(unchecked.output);
  CHECK(unchecked.code == 0);
}

TEST_CASE("packages signed by a key that the repository's gpgkey does not hold are refused with exit 65",
          "[e2e][rpm][faults][signature]") {
  RpmRepo r;
  HttpServer server(r.root);
  // The repository's key file now holds another key.
  test::make_gpg_key(r.tmp / "other-gnupg", "someone else <else@example.com>", r.tmp / "other.asc");
  test::write_file(r.key(), test::read_file(r.tmp / "other.asc"));
  auto run = r.run(r.repo_file(server.url() + "/signed", "gpgcheck=1\n"));
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(server.url() + "/signed/kernel-") && Catch::Contains(".rpm"));
  check_nothing_published(r);
}

TEST_CASE("an older signed package passed off as the release's in an unsigned primary.xml is refused with exit 65",
          "[e2e][rpm][faults][signature]") {
  RpmRepo r;
  // primary.xml rewritten (and repomd.xml's checksums with it): the entry that provides R points
  // at the older kernel-devel, a package the repository's key did sign.
  sh("python3 - " + (r.root / "signed").string() + R"PY( <<'EOF'
import gzip, hashlib, os, re, sys
repo = sys.argv[1]
md_path = os.path.join(repo, "repodata/repomd.xml")
md = open(md_path).read()
block = re.search(r'<data type="primary">.*?</data>', md, re.S).group(0)
href = re.search(r'<location href="([^"]+)"', block).group(1)
xml = gzip.open(os.path.join(repo, href)).read().decode()
devel = [p for p in re.findall(r"<package .*?</package>", xml, re.S) if "<name>kernel-devel</name>" in p]
new, old = sorted(devel, key=lambda p: 'rel="1.amd64"' in p)
loc = lambda p: re.search(r'<location href="[^"]+"/>', p).group(0)
ck = lambda p: re.search(r"<checksum [^>]*>[0-9a-f]+</checksum>", p).group(0)
xml = xml.replace(new, new.replace(loc(new), loc(old)).replace(ck(new), ck(old))).encode()
gz = gzip.compress(xml)
open(os.path.join(repo, href), "wb").write(gz)
fixed = re.sub(r'(<checksum type="sha256">)[0-9a-f]+', r"\g<1>" + hashlib.sha256(gz).hexdigest(), block)
fixed = re.sub(r'(<open-checksum type="sha256">)[0-9a-f]+', r"\g<1>" + hashlib.sha256(xml).hexdigest(), fixed)
fixed = re.sub(r"<size>\d+</size>", "<size>%d</size>" % len(gz), fixed)
fixed = re.sub(r"<open-size>\d+</open-size>", "<open-size>%d</open-size>" % len(xml), fixed)
open(md_path, "w").write(md.replace(block, fixed))
EOF)PY");
  HttpServer server(r.root);
  auto run = r.run(r.repo_file(server.url() + "/signed", "gpgcheck=1\nrepo_gpgcheck=0\n"));
  INFO(run.output);
  CHECK(run.code == 65);
  CHECK_THAT(run.last_line, Catch::Contains(server.url() + "/signed/kernel-devel-6.1.0-1.amd64.x86_64.rpm: the package is "
                                            "kernel-devel 6.1.0-1.amd64 x86_64, but primary.xml lists it as kernel-devel " +
                                            r.nvr("").substr(1) + " x86_64"));
  check_nothing_published(r);
}

TEST_CASE("no package for the release is exit 66 naming the repositories searched", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  auto run = test::run_init_modules(r.args(r.repo_file(server.url() + "/signed")) +
                                    std::vector<std::string>{"--kernel-release", "9.9.9-1.el9.x86_64"});
  INFO(run.output);
  CHECK(run.code == 66);
  CHECK_THAT(run.last_line, Catch::Contains("rpm: no package provides kernel-devel-uname-r = 9.9.9-1.el9.x86_64 in kmodkit-test"));
}

TEST_CASE("a repository's baseurls are tried in order: an unreachable first one gives way to the next", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  auto run = r.run(r.repo_file("http://127.0.0.1:1/signed\n  " + server.url() + "/signed"), {"--retries", "0"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("trying the next baseurl"));
}

TEST_CASE("a repository without repodata is noted and the others are searched; alone, it is exit 66 naming it", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  const fs::path file = r.tmp / "two.repo";
  test::write_file(file, "[empty]\nbaseurl=" + server.url() + "/nowhere\n\n[kmodkit-test]\nbaseurl=" + server.url() +
                             "/signed\ngpgcheck=1\ngpgkey=file://" + r.key().string() + "\n");
  auto both = r.run(file, {"--dry-run"});
  INFO(both.output);
  CHECK(both.code == 0);
  CHECK_THAT(both.output, Catch::Contains("would install kernel-devel"));

  auto alone = r.run(r.repo_file(server.url() + "/nowhere"));
  INFO(alone.output);
  CHECK(alone.code == 66);
  CHECK_THAT(alone.last_line, Catch::Contains("rpm: no package provides kernel-devel-uname-r = " + r.kver +
                                              " in kmodkit-test; kmodkit-test: " + server.url() +
                                              "/nowhere/repodata/repomd.xml: HTTP 404"));
  check_nothing_published(r);
}

TEST_CASE("the rpm source reads the image's yum.repos.d, and is not asked on a Debian node", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  const auto file = r.repo_file(server.url() + "/signed");
  fs::create_directories(r.tmp / "image/etc/yum.repos.d");
  fs::copy_file(file, r.tmp / "image/etc/yum.repos.d/kmodkit-test.repo");
  const std::vector<std::string> common = {"--kernel-release", r.kver, "--volume", r.vol.string(), "--host-root",
                                           (r.tmp / "no-host").string(), "--sysfs", (r.tmp / "no-sys").string(),
                                           "--sources", "rpm", "--rpm-root", (r.tmp / "image").string(),
                                           "--basearch", "x86_64", "--releasever", "9", "--dry-run"};
  auto image = test::run_init_modules(common);
  INFO(image.output);
  CHECK(image.code == 0);
  CHECK_THAT(image.output, Catch::Contains("source rpm: would install kernel-devel"));

  auto debian = test::run_init_modules(common + std::vector<std::string>{"--os", "debian"});
  INFO(debian.output);
  CHECK(debian.code == 66);
  CHECK_THAT(debian.last_line, Catch::Contains("rpm: the node runs debian, not RHEL, CentOS or Fedora"));
}

TEST_CASE("$releasever comes from the host's RHEL_VERSION on RHCOS, whose VERSION_ID is OpenShift's", "[e2e][rpm]") {
  RpmRepo r;
  HttpServer server(r.root);
  fs::create_directories(r.root / "rhel-9.4");
  fs::create_symlink(r.root / "signed", r.root / "rhel-9.4/signed");
  const auto file = r.repo_file(server.url() + "/rhel-$releasever/signed");
  test::write_file(r.tmp / "host/etc/os-release",
                   "ID=\"rhcos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"4.16\"\nRHEL_VERSION=\"9.4\"\n");
  auto run = test::run_init_modules({"--kernel-release", r.kver, "--volume", r.vol.string(), "--host-root",
                                     (r.tmp / "host").string(), "--sysfs", (r.tmp / "no-sys").string(), "--sources",
                                     "rpm", "--rpm-repo", file.string(), "--basearch", "x86_64", "--dry-run"});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("node OS rhcos 4.16") && Catch::Contains("/rhel-9.4/signed"));
}

TEST_CASE("a repository that requires a client certificate works with sslclientcert/sslclientkey and fails clearly without",
          "[e2e][rpm][tls]") {
  RpmRepo r;
  const fs::path pki = make_pki(r.tmp / "pki");
  HttpServer server(r.root, {"--tls-cert", (pki / "server.pem").string(), "--tls-key", (pki / "server.key").string(),
                             "--client-ca", (pki / "ca.pem").string()});
  const std::string base = "https://127.0.0.1:" + std::to_string(server.port()) + "/signed";
  const std::string ca = "sslcacert=" + (pki / "ca.pem").string() + "\n";

  auto entitled = r.run(r.repo_file(base, "gpgcheck=1\nrepo_gpgcheck=1\n" + ca + "sslclientcert=" + (pki / "client.pem").string() +
                                              "\nsslclientkey=" + (pki / "client.key").string() + "\n"));
  INFO(entitled.output);
  CHECK(entitled.code == 0);
  CHECK_THAT(test::read_file(r.manifest()), Catch::Contains("\"source\": \"rpm\""));

  fs::remove_all(r.vol);
  fs::create_directories(r.vol);
  auto without = r.run(r.repo_file(base, "gpgcheck=1\nrepo_gpgcheck=1\n" + ca), {"--retries", "0"});
  INFO(without.output);
  CHECK(without.code == 69);
  CHECK_THAT(without.last_line, Catch::Contains("repository kmodkit-test") && Catch::Contains(base + "/repodata/repomd.xml") &&
                                    Catch::Contains("certificate required"));
  check_nothing_published(r);
}

namespace {

// Lays the fixture's signed repository's tree for R with the rpm source, then runs kmod-builder
// against it with a fresh signing key and `recipe_args`; returns the build.
Run build_on_rhel_tree(RpmRepo& r, const std::vector<std::string>& recipe_args) {
  HttpServer server(r.root);
  auto laid = r.run(r.repo_file(server.url() + "/signed"));
  INFO(laid.output);
  REQUIRE(laid.code == 0);
  server.stop();
  const auto key = test::make_signing_key(r.tmp / "keys", "kmodkit test signing key");
  std::vector<std::string> args = {"--volume", r.vol.string(), "--kernel-release", r.kver, "--work-dir",
                                   r.tmp.path.string(), "--signing-key", key.key.string(), "--signing-cert",
                                   key.cert_pem.string()};
  args.insert(args.end(), recipe_args.begin(), recipe_args.end());
  return test::run_kmod_builder(args);
}

// modinfo's value of `field` for the module at `ko`.
std::string modinfo_field(const fs::path& ko, const std::string& field) {
  auto out = subprocess::run({"modinfo", "-F", field, ko.string()});
  REQUIRE((out && out->ok()));
  return out->output;
}

}  // namespace

TEST_CASE("kmod-builder builds igb_uio against the RHEL tree the rpm source laid out", "[e2e][rpm][kmod-builder]") {
  RpmRepo r;
  auto build = build_on_rhel_tree(r, {"--recipe", "igb_uio"});
  INFO(build.output);
  REQUIRE(build.code == 0);
  const fs::path ko = r.vol / ("usr/lib/modules/" + r.kver + "/extra/igb_uio/igb_uio.ko");
  REQUIRE(fs::is_regular_file(ko));
  CHECK_THAT(modinfo_field(ko, "vermagic"), Catch::StartsWith(r.kver + " SMP"));
  CHECK_THAT(test::read_file(r.vol / ("usr/lib/modules/" + r.kver + "/modules.dep")), Catch::Contains("extra/igb_uio/igb_uio.ko:"));
}

// rte_kni, the seed's second module, against the same RHEL tree: hidden, it needs a DPDK 22.11
// tree (ctest kmod_builder.rte_kni_on_rhel_tree gives it the one fixture.dpdk_src fetched).
TEST_CASE("kmod-builder builds rte_kni against the RHEL tree the rpm source laid out", "[.rte_kni]") {
  const char* env = std::getenv("KMODKIT_DPDK_SRC");
  const std::string src = env != nullptr && *env != '\0' ? std::string(env)
                                                          : std::string(text::trim(test::read_file(test::fixtures_dir() / "dpdk-src")));
  INFO("DPDK tree " << src);
  REQUIRE(fs::is_directory(fs::path(src) / "kernel/linux/kni"));
  RpmRepo r;
  auto build = build_on_rhel_tree(r, {"--recipe", "rte_kni", "--source", "rte_kni=" + src});
  INFO(build.output);
  REQUIRE(build.code == 0);
  CHECK_THAT(build.output, Catch::Contains("probes: HAVE_ARG_TX_QUEUE"));
  const fs::path ko = r.vol / ("usr/lib/modules/" + r.kver + "/extra/rte_kni/rte_kni.ko");
  REQUIRE(fs::is_regular_file(ko));
  CHECK_THAT(modinfo_field(ko, "vermagic"), Catch::StartsWith(r.kver + " SMP"));
  CHECK_THAT(modinfo_field(ko, "signer"), Catch::StartsWith("kmodkit test signing key"));
}

TEST_CASE("a repository's sslverify=0 is honoured with a warning; without it an unknown CA is refused", "[e2e][rpm][tls]") {
  RpmRepo r;
  const fs::path pki = make_pki(r.tmp / "pki");
  HttpServer server(r.root, {"--tls-cert", (pki / "server.pem").string(), "--tls-key", (pki / "server.key").string()});
  const std::string base = "https://127.0.0.1:" + std::to_string(server.port()) + "/signed";

  auto verified = r.run(r.repo_file(base), {"--retries", "0", "--dry-run"});
  INFO(verified.output);
  CHECK(verified.code == 69);
  CHECK_THAT(verified.last_line, Catch::Contains(base + "/repodata/repomd.xml") && Catch::Contains("certificate"));

  auto unverified = r.run(r.repo_file(base, "gpgcheck=1\nrepo_gpgcheck=1\nsslverify=0\n"), {"--dry-run"});
  INFO(unverified.output);
  CHECK(unverified.code == 0);
  CHECK_THAT(unverified.output, Catch::Contains("repository kmodkit-test (" + (r.tmp / "test.repo").string() +
                                                ":1) sets sslverify=0: its servers' certificates are NOT checked"));
}
