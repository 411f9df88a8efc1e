// RPM repository metadata: dnf .repo files, repomd.xml, primary.xml as a stream, rpm versions.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "rpm_repo.hpp"

using namespace kmodkit;
using namespace kmodkit::init;

namespace {

const rpm::RepoVars rhel9{"9", "x86_64"};

// As a RHEL 9 host has them: Red Hat's redhat.repo (written by subscription-manager, entitled
// with a client certificate) and a rhel.repo of the kind sites mirror the CDN to, with dnf's
// variables, a disabled stanza, a key list continued on an indented line, and keys kmodkit does
// not use.
constexpr std::string_view rhel9_repo =
    "#\n"
    "# Certificate-Based Repositories\n"
    "# Managed by (rhsm) subscription-manager\n"
    "#\n"
    "[rhel-9-for-x86_64-baseos-rpms]\n"
    "name = Red Hat Enterprise Linux 9 for x86_64 - BaseOS (RPMs)\n"
    "baseurl = https://cdn.redhat.com/content/dist/rhel9/$releasever/x86_64/baseos/os\n"
    "enabled = 1\n"
    "gpgcheck = 1\n"
    "gpgkey = file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release\n"
    "sslverify = 1\n"
    "sslcacert = /etc/rhsm/ca/redhat-uep.pem\n"
    "sslclientkey = /etc/pki/entitlement/6034307045470373413-key.pem\n"
    "sslclientcert = /etc/pki/entitlement/6034307045470373413.pem\n"
    "sslverifystatus = 1\n"
    "metadata_expire = 86400\n"
    "enabled_metadata = 1\n"
    "\n"
    "; a site mirror of AppStream\n"
    "[appstream]\n"
    "name=RHEL ${releasever} - AppStream\n"
    "baseurl=http://mirror.example.com/rhel/${releasever}/AppStream/$basearch/os/\n"
    "        file:///srv/mirror/rhel/$releasever/AppStream/${basearch}/os\n"
    "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release,\n"
    "       file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-beta\n"
    "repo_gpgcheck=1\n"
    "skip_if_unavailable=False\n"
    "\n"
    "[codeready-builder]\n"
    "name=RHEL $releasever - CodeReady Linux Builder\n"
    "baseurl=http://mirror.example.com/rhel/$releasever/CRB/$basearch/os/\n"
    "enabled=0\n"
    "gpgcheck=no\n"
    "sslverify=false\n";

}  // namespace

TEST_CASE("a RHEL 9 .repo file gives its stanzas with dnf's variables substituted", "[unit][rpm]") {
  auto r = rpm::parse_repo_file(rhel9_repo, "/etc/yum.repos.d/redhat.repo", rhel9, rpm::GpgCheckDefault::off);
  REQUIRE(r);
  REQUIRE(r->size() == 3);

  const auto& baseos = (*r)[0];
  CHECK(baseos.id == "rhel-9-for-x86_64-baseos-rpms");
  CHECK(baseos.name == "Red Hat Enterprise Linux 9 for x86_64 - BaseOS (RPMs)");
  CHECK(baseos.baseurls == std::vector<std::string>{"https://cdn.redhat.com/content/dist/rhel9/9/x86_64/baseos/os"});
  CHECK(baseos.enabled);
  CHECK(baseos.gpgcheck);
  CHECK_FALSE(baseos.repo_gpgcheck);
  CHECK(baseos.gpgkeys == std::vector<std::string>{"file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"});
  CHECK(baseos.sslverify);
  CHECK(baseos.sslcacert == "/etc/rhsm/ca/redhat-uep.pem");
  CHECK(baseos.sslclientkey == "/etc/pki/entitlement/6034307045470373413-key.pem");
  CHECK(baseos.sslclientcert == "/etc/pki/entitlement/6034307045470373413.pem");
  CHECK(baseos.origin == "/etc/yum.repos.d/redhat.repo:5");

  const auto& appstream = (*r)[1];
  CHECK(appstream.name == "RHEL 9 - AppStream");
  CHECK(appstream.baseurls == std::vector<std::string>{"http://mirror.example.com/rhel/9/AppStream/x86_64/os",
                                                       "file:///srv/mirror/rhel/9/AppStream/x86_64/os"});
  CHECK(appstream.gpgkeys == std::vector<std::string>{"file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release",
                                                      "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-beta"});
  CHECK(appstream.enabled);
  CHECK_FALSE(appstream.gpgcheck);  // not set: the default given
  CHECK(appstream.repo_gpgcheck);
  CHECK(appstream.sslclientcert.empty());

  const auto& crb = (*r)[2];
  CHECK(crb.id == "codeready-builder");
  CHECK_FALSE(crb.enabled);
  CHECK_FALSE(crb.gpgcheck);
  CHECK_FALSE(crb.sslverify);
}

TEST_CASE("gpgcheck not set in a repository takes the default the caller gives, as dnf.conf's [main] does",
          "[unit][rpm]") {
  constexpr std::string_view text = "[a]\nbaseurl=file:///srv/a\n[b]\nbaseurl=file:///srv/b\ngpgcheck=0\n";
  auto off = rpm::parse_repo_file(text, "x.repo", rhel9, rpm::GpgCheckDefault::off);
  auto on = rpm::parse_repo_file(text, "x.repo", rhel9, rpm::GpgCheckDefault::on);
  REQUIRE(off);
  REQUIRE(on);
  CHECK_FALSE((*off)[0].gpgcheck);
  CHECK((*on)[0].gpgcheck);
  CHECK_FALSE((*on)[1].gpgcheck);
  CHECK((*on)[0].name == "a");
}

TEST_CASE("dnf.conf's [main] gpgcheck is the default; other sections do not count; a bad value names file:line",
          "[unit][rpm]") {
  const auto fallback = rpm::GpgCheckDefault::off;
  auto rhel = rpm::parse_main_gpgcheck("# RHEL 9\n[main]\ngpgcheck=1\ninstallonly_limit=3\n", "dnf.conf", fallback);
  REQUIRE(rhel);
  CHECK(*rhel == rpm::GpgCheckDefault::on);
  auto other = rpm::parse_main_gpgcheck("[main]\nbest=True\n[extra]\ngpgcheck=1\n", "dnf.conf", fallback);
  REQUIRE(other);
  CHECK(*other == rpm::GpgCheckDefault::off);
  auto no = rpm::parse_main_gpgcheck("[main]\n gpgcheck = False\n", "dnf.conf", rpm::GpgCheckDefault::on);
  REQUIRE(no);
  CHECK(*no == rpm::GpgCheckDefault::off);
  auto bad = rpm::parse_main_gpgcheck("[main]\ngpgcheck=maybe\n", "/etc/dnf/dnf.conf", fallback);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ExitCode::config);
  CHECK(bad.error().message == "/etc/dnf/dnf.conf:2: gpgcheck must be 0 or 1, not 'maybe'");
}

TEST_CASE("an enabled repository with only a metalink or mirrorlist is refused naming file and repository",
          "[unit][rpm]") {
  auto metalink = rpm::parse_repo_file(
      "[fedora]\nname=Fedora $releasever - $basearch\n"
      "metalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch\n"
      "enabled=1\n",
      "/etc/yum.repos.d/fedora.repo", rhel9, rpm::GpgCheckDefault::on);
  REQUIRE_FALSE(metalink);
  CHECK(metalink.error().code == ExitCode::config);
  CHECK_THAT(metalink.error().message, Catch::StartsWith("/etc/yum.repos.d/fedora.repo:1: repository 'fedora'"));
  CHECK_THAT(metalink.error().message, Catch::Contains("metalink/mirrorlist are not supported; give baseurl"));

  auto mirrorlist = rpm::parse_repo_file("[baseos]\nmirrorlist=https://mirrors.rockylinux.org/mirrorlist?arch=$basearch\n",
                                         "rocky.repo", rhel9, rpm::GpgCheckDefault::on);
  REQUIRE_FALSE(mirrorlist);
  CHECK_THAT(mirrorlist.error().message, Catch::Contains("'baseos'"));
  CHECK_THAT(mirrorlist.error().message, Catch::Contains("metalink/mirrorlist are not supported; give baseurl"));

  // Disabled ones are never read, so Fedora's debuginfo and testing stanzas do not stop the rest.
  auto disabled = rpm::parse_repo_file(
      "[fedora-debuginfo]\nmetalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-debug-$releasever\n"
      "enabled=0\n",
      "fedora.repo", rhel9, rpm::GpgCheckDefault::on);
  REQUIRE(disabled);
  CHECK_FALSE((*disabled)[0].enabled);
}

TEST_CASE("bad .repo lines are configuration errors naming file and line", "[unit][rpm]") {
  struct Case {
    std::string_view text, where, why;
  };
  const std::vector<Case> cases = {
      {"[a]\nbaseurl=file:///srv/a\nthis is not a key\n", "r.repo:3:", "key=value"},
      {"baseurl=file:///srv/a\n", "r.repo:1:", "section"},
      {"[a]\nbaseurl=file:///srv/a\nenabled=maybe\n", "r.repo:3:", "'maybe'"},
      {"[a]\nbaseurl=ftp://mirror/a\n", "r.repo:2:", "ftp://mirror/a"},
      {"[a]\nbaseurl=file:///a\n[a]\nbaseurl=file:///b\n", "r.repo:3:", "'a'"},
      {"[a\nbaseurl=file:///a\n", "r.repo:1:", "["},
      {"[a]\nname=x\n", "r.repo:1:", "baseurl"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto r = rpm::parse_repo_file(c.text, "r.repo", rhel9, rpm::GpgCheckDefault::off);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::config);
    CHECK_THAT(r.error().message, Catch::StartsWith(std::string(c.where)));
    CHECK_THAT(r.error().message, Catch::Contains(std::string(c.why)));
  }
  auto unknown = rpm::parse_repo_file("[a]\nbaseurl=http://m/$releasever/os\n", "r.repo", rpm::RepoVars{"", "x86_64"},
                                      rpm::GpgCheckDefault::off);
  REQUIRE_FALSE(unknown);
  CHECK_THAT(unknown.error().message, Catch::StartsWith("r.repo:2:"));
  CHECK_THAT(unknown.error().message, Catch::Contains("$releasever"));
}

namespace {

// repomd.xml as createrepo_c 0.20 writes it (Debian 12's createrepo-c), with the sqlite
// databases; the primary is not the first entry in every repository, so it is not here either.
constexpr std::string_view repomd_xml = R"(<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1796419595</revision>
  <data type="filelists">
    <checksum type="sha256">788cb33d23ecae50534103d0631c9394dadeb65023aa087187bdd9b865ca525c</checksum>
    <open-checksum type="sha256">87b6d95c8e425cb26e3ae212aeb3f20927c18ea2368a5029997a7be77621c871</open-checksum>
    <location href="repodata/788cb33d23ecae50534103d0631c9394dadeb65023aa087187bdd9b865ca525c-filelists.xml.gz"/>
    <timestamp>1796419595</timestamp>
    <size>240</size>
    <open-size>303</open-size>
  </data>
  <data type="primary">
    <checksum type="sha256">8252cdb3188ec82b07e6be426da98bd06b632504520d3f0c0f90d8848b5d63e2</checksum>
    <open-checksum type="sha256">b28e325f3d20e1ff333e24d793ee5b12be898a58b11765d5c68869fcdc61a0e3</open-checksum>
    <location href="repodata/8252cdb3188ec82b07e6be426da98bd06b632504520d3f0c0f90d8848b5d63e2-primary.xml.gz"/>
    <timestamp>1796419595</timestamp>
    <size>613</size>
    <open-size>1356</open-size>
  </data>
  <data type="primary_db">
    <checksum type="sha256">d7dcb26f939bc84b1cbaf6b8479b03fc78cf6c872fa32c873f3ed7ce5476390d</checksum>
    <open-checksum type="sha256">3bc217ced6c09d857aabf5c3b606e241bf50a728e9dac5f7d590e86731d2e7cc</open-checksum>
    <location href="repodata/d7dcb26f939bc84b1cbaf6b8479b03fc78cf6c872fa32c873f3ed7ce5476390d-primary.sqlite.bz2"/>
    <timestamp>1796419595</timestamp>
    <size>1805</size>
    <open-size>106496</open-size>
    <database_version>10</database_version>
  </data>
</repomd>
)";

}  // namespace

TEST_CASE("repomd.xml gives its primary entry: location, checksums and sizes", "[unit][rpm]") {
  auto r = rpm::parse_repomd_primary(repomd_xml, "http://m/repodata/repomd.xml");
  REQUIRE(r);
  CHECK(r->href == "repodata/8252cdb3188ec82b07e6be426da98bd06b632504520d3f0c0f90d8848b5d63e2-primary.xml.gz");
  CHECK(r->checksum_type == "sha256");
  CHECK(r->checksum == "8252cdb3188ec82b07e6be426da98bd06b632504520d3f0c0f90d8848b5d63e2");
  CHECK(r->open_checksum_type == "sha256");
  CHECK(r->open_checksum == "b28e325f3d20e1ff333e24d793ee5b12be898a58b11765d5c68869fcdc61a0e3");
  CHECK(r->size == 613);
  CHECK(r->open_size == 1356);
}

TEST_CASE("a repomd.xml without primary, or not XML, is a data error with a sentence", "[unit][rpm]") {
  std::string no_primary(repomd_xml);
  no_primary.replace(no_primary.find("type=\"primary\""), 14, "type=\"updateinfo\"");
  auto none = rpm::parse_repomd_primary(no_primary, "http://m/repodata/repomd.xml");
  REQUIRE_FALSE(none);
  CHECK(none.error().code == ExitCode::data_err);
  CHECK(none.error().message == "http://m/repodata/repomd.xml: has no primary metadata");

  auto html = rpm::parse_repomd_primary("<html>\n<body>Not <b>found</body></html>", "http://m/repodata/repomd.xml");
  REQUIRE_FALSE(html);
  CHECK(html.error().code == ExitCode::data_err);
  CHECK_THAT(html.error().message, Catch::StartsWith("http://m/repodata/repomd.xml:2:"));
  CHECK_THAT(html.error().message, Catch::Contains("mismatched tag"));

  std::string no_location(repomd_xml);
  auto at = no_location.find("<location href=\"repodata/8252");
  no_location.erase(at, no_location.find('\n', at) - at);
  auto nl = rpm::parse_repomd_primary(no_location, "repomd.xml");
  REQUIRE_FALSE(nl);
  CHECK(nl.error().code == ExitCode::data_err);
  CHECK_THAT(nl.error().message, Catch::Contains("location"));
}

namespace {

std::string kernel_devel(std::string_view epoch, std::string_view ver, std::string_view rel, std::string_view arch) {
  const std::string nevra = "kernel-devel-" + std::string(ver) + "-" + std::string(rel) + "." + std::string(arch);
  return "<package type=\"rpm\">\n"
         "  <name>kernel-devel</name>\n"
         "  <arch>" + std::string(arch) + "</arch>\n"
         "  <version epoch=\"" + std::string(epoch) + "\" ver=\"" + std::string(ver) + "\" rel=\"" + std::string(rel) + "\"/>\n"
         "  <checksum type=\"sha256\" pkgid=\"YES\">" + std::string(64, ver[0]) + "</checksum>\n"
         "  <summary>Development package for building kernel modules to match the kernel</summary>\n"
         "  <description>This package provides kernel headers &amp; makefiles sufficient to build modules\n"
         "against the kernel package.</description>\n"
         "  <packager>Red Hat, Inc. &lt;http://bugzilla.redhat.com/bugzilla&gt;</packager>\n"
         "  <url>https://www.kernel.org/</url>\n"
         "  <time file=\"1700000000\" build=\"1699990000\"/>\n"
         "  <size package=\"21049821\" installed=\"66389471\" archive=\"67462148\"/>\n"
         "  <location href=\"Packages/k/" + nevra + ".rpm\"/>\n"
         "  <format>\n"
         "    <rpm:license>GPLv2 and Redistributable, no modification permitted</rpm:license>\n"
         "    <rpm:vendor>Red Hat, Inc.</rpm:vendor>\n"
         "    <rpm:header-range start=\"4504\" end=\"1032117\"/>\n"
         "    <rpm:provides>\n"
         "      <rpm:entry name=\"kernel-devel\" flags=\"EQ\" epoch=\"" + std::string(epoch) + "\" ver=\"" + std::string(ver) + "\" rel=\"" + std::string(rel) + "\"/>\n"
         "      <rpm:entry name=\"kernel-devel(x86-64)\" flags=\"EQ\" epoch=\"" + std::string(epoch) + "\" ver=\"" + std::string(ver) + "\" rel=\"" + std::string(rel) + "\"/>\n"
         "      <rpm:entry name=\"kernel-devel-uname-r\" flags=\"EQ\" epoch=\"0\" ver=\"" + std::string(ver) + "\" rel=\"" + std::string(rel) + "." + std::string(arch) + "\"/>\n"
         "    </rpm:provides>\n"
         "    <rpm:requires>\n"
         "      <rpm:entry name=\"kernel-devel-uname-r\" flags=\"EQ\" epoch=\"0\" ver=\"9.9.9\" rel=\"1.el9.x86_64\"/>\n"
         "      <rpm:entry name=\"findutils\"/>\n"
         "      <rpm:entry name=\"/usr/bin/find\" pre=\"1\"/>\n"
         "    </rpm:requires>\n"
         "  </format>\n"
         "</package>\n";
}

std::string other(int i) {
  return "<package type=\"rpm\">\n  <name>bash-completion-" + std::to_string(i) +
         "</name>\n  <arch>noarch</arch>\n  <version epoch=\"1\" ver=\"2.11\" rel=\"5.el9\"/>\n"
         "  <checksum type=\"sha256\" pkgid=\"YES\">" + std::string(64, 'c') + "</checksum>\n"
         "  <summary>Programmable completion for Bash</summary>\n"
         "  <description>bash-completion is a collection of shell functions that take advantage of the programmable "
         "completion feature of bash.</description>\n"
         "  <size package=\"462417\" installed=\"1436286\" archive=\"1502696\"/>\n"
         "  <location href=\"Packages/b/bash-completion-2.11-5.el9.noarch.rpm\"/>\n"
         "  <format>\n    <rpm:provides>\n"
         // A provider of the capability with another relation is not one that matches.
         "      <rpm:entry name=\"kernel-devel-uname-r\" flags=\"GE\" epoch=\"0\" ver=\"5.14.0\" rel=\"362.8.1.el9_3.x86_64\"/>\n"
         "      <rpm:entry name=\"bash-completion\" flags=\"EQ\" epoch=\"1\" ver=\"2.11\" rel=\"5.el9\"/>\n"
         "    </rpm:provides>\n  </format>\n</package>\n";
}

// A primary.xml in createrepo_c's shape: three kernels' kernel-devel (two builds of the node's
// kernel, one with an epoch) among enough other packages to span several 4 KiB chunks.
std::string primary_xml() {
  std::string s =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" "
      "packages=\"43\">\n";
  for (int i = 0; i < 20; ++i) s += other(i);
  s += kernel_devel("0", "5.14.0", "284.11.1.el9_2", "x86_64");
  s += kernel_devel("0", "5.14.0", "362.8.1.el9_3", "x86_64");
  for (int i = 20; i < 40; ++i) s += other(i);
  s += kernel_devel("0", "5.14.0", "362.8.1.el9_3", "aarch64");
  s += "</metadata>\n";
  return s;
}

std::vector<rpm::Provider> read_primary(std::string_view xml, size_t chunk, std::string_view value,
                                        Result<void>* status = nullptr) {
  std::vector<rpm::Provider> found;
  rpm::PrimaryReader reader("primary.xml", "kernel-devel-uname-r", std::string(value),
                            [&](rpm::Provider&& p) { found.push_back(std::move(p)); });
  Result<void> r;
  for (size_t i = 0; i < xml.size() && r; i += chunk) r = reader.feed(xml.substr(i, chunk));
  if (r) r = reader.finish();
  if (status != nullptr) *status = r;
  else REQUIRE(r);
  return found;
}

}  // namespace

TEST_CASE("primary.xml read in 1-byte and 4 KiB chunks finds the packages providing the kernel release",
          "[unit][rpm]") {
  const std::string xml = primary_xml();
  REQUIRE(xml.size() > 3 * 4096);
  for (size_t chunk : {size_t{1}, size_t{4096}, xml.size()}) {
    INFO("chunk " << chunk);
    auto found = read_primary(xml, chunk, "5.14.0-362.8.1.el9_3.x86_64");
    REQUIRE(found.size() == 1);
    const auto& p = found[0];
    CHECK(p.name == "kernel-devel");
    CHECK(p.arch == "x86_64");
    CHECK(p.evr.epoch == 0);
    CHECK(p.evr.version == "5.14.0");
    CHECK(p.evr.release == "362.8.1.el9_3");
    CHECK(p.href == "Packages/k/kernel-devel-5.14.0-362.8.1.el9_3.x86_64.rpm");
    CHECK(p.checksum_type == "sha256");
    CHECK(p.checksum == std::string(64, '5'));
    CHECK(p.checksum_is_pkgid);
    CHECK(p.size == 21049821);

    auto aarch64 = read_primary(xml, chunk, "5.14.0-362.8.1.el9_3.aarch64");
    REQUIRE(aarch64.size() == 1);
    CHECK(aarch64[0].arch == "aarch64");
    CHECK(read_primary(xml, chunk, "5.14.0-284.11.1.el9_2.x86_64").size() == 1);
    // The requires section's entry and a part of the release are not provides of it.
    CHECK(read_primary(xml, chunk, "9.9.9-1.el9.x86_64").empty());
    CHECK(read_primary(xml, chunk, "5.14.0-362.8.1").empty());
    CHECK(read_primary(xml, chunk, "5.14.0").empty());
  }
}

TEST_CASE("a provide is matched on version and release joined by a dash, as createrepo_c splits rpm's EVR",
          "[unit][rpm]") {
  // rpmbuild refuses a second dash in a Provides version, and createrepo_c writes the first
  // part as ver and the rest as rel; a provide without rel is compared whole.
  const std::string xml =
      "<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">"
      "<package type=\"rpm\"><name>a</name><arch>x86_64</arch><version epoch=\"0\" ver=\"1\" rel=\"1\"/>"
      "<checksum type=\"sha256\" pkgid=\"YES\">aa</checksum><size package=\"1\"/><location href=\"a.rpm\"/>"
      "<format><rpm:provides><rpm:entry name=\"kernel-devel-uname-r\" flags=\"EQ\" ver=\"6.1.0_57_amd64\"/>"
      "</rpm:provides></format></package>"
      "<package type=\"rpm\"><name>b</name><arch>x86_64</arch><version epoch=\"0\" ver=\"1\" rel=\"1\"/>"
      "<checksum type=\"sha256\" pkgid=\"YES\">bb</checksum><size package=\"1\"/><location href=\"b.rpm\"/>"
      "<format><rpm:provides><rpm:entry name=\"kernel-devel-uname-r\" flags=\"EQ\" epoch=\"1\" ver=\"6.1.0\" "
      "rel=\"57\"/></rpm:provides></format></package></metadata>";
  auto found = read_primary(xml, 7, "6.1.0_57_amd64");
  REQUIRE(found.size() == 1);
  CHECK(found[0].name == "a");
  // A uname -r never has an epoch, so a provide with one is not it.
  CHECK(read_primary(xml, 7, "6.1.0-57").empty());
}

TEST_CASE("malformed or truncated primary.xml is a data error naming the file, line and column", "[unit][rpm]") {
  const std::string xml = primary_xml();
  Result<void> status;
  read_primary(xml.substr(0, xml.size() / 2), 4096, "5.14.0-362.8.1.el9_3.x86_64", &status);
  REQUIRE_FALSE(status);
  CHECK(status.error().code == ExitCode::data_err);
  CHECK_THAT(status.error().message, Catch::StartsWith("primary.xml:"));

  std::string broken = xml;
  broken.replace(broken.find("</summary>"), 10, "</summry>");
  read_primary(broken, 1, "5.14.0-362.8.1.el9_3.x86_64", &status);
  REQUIRE_FALSE(status);
  CHECK(status.error().code == ExitCode::data_err);
  CHECK_THAT(status.error().message, Catch::StartsWith("primary.xml:8:"));
  CHECK_THAT(status.error().message, Catch::Contains("mismatched tag"));

  // A match the download could not be checked against is refused, not passed on.
  std::string no_checksum = kernel_devel("0", "5.14.0", "362.8.1.el9_3", "x86_64");
  auto at = no_checksum.find("  <checksum");
  no_checksum.erase(at, no_checksum.find('\n', at) + 1 - at);
  read_primary("<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">" +
                   no_checksum + "</metadata>",
               4096, "5.14.0-362.8.1.el9_3.x86_64", &status);
  REQUIRE_FALSE(status);
  CHECK(status.error().code == ExitCode::data_err);
  CHECK_THAT(status.error().message, Catch::Contains("kernel-devel-5.14.0-362.8.1.el9_3.x86_64"));
  CHECK_THAT(status.error().message, Catch::Contains("checksum"));
}

TEST_CASE("rpm versions order as rpmvercmp does, tilde before and caret after the base", "[unit][rpm]") {
  // Each pair's expected sign as rpm 4.18 gives it: rpm --eval '%{lua: print(rpm.vercmp(a, b))}'.
  struct Case {
    std::string_view a, b;
    int sign;
  };
  const std::vector<Case> cases = {
      {"1.0", "1.0", 0},           {"1.0", "2.0", -1},          {"2.0.1", "2.0.1a", -1},
      {"5.5p1", "5.5p10", -1},     {"10xyz", "10.1xyz", -1},    {"xyz10", "xyz10.1", -1},
      {"1.0", "1.0.0", -1},        {"a", "b", -1},              {"1b.fc17", "1.fc17", -1},
      {"1.0a", "1.0", 1},          {"1.0~rc1", "1.0", -1},      {"1.0~rc1", "1.0~rc2", -1},
      {"1.0~rc1~git123", "1.0~rc1", -1}, {"1.0^", "1.0", 1},   {"1.0^git1", "1.0", 1},
      {"1.0^git1", "1.0.1", -1},   {"1.0^git1", "1.0^git2", -1}, {"1.0~rc1^git1", "1.0~rc1", 1},
      {"1.0^git1~pre", "1.0^git1", -1}, {"2_0", "2.0", 0},     {"1.0", "1_0", 0},
      {"1.010", "1.9", 1},         {"1.05", "1.5", 0},          {"362.8.1.el9_3", "284.11.1.el9_2", 1},
      {"503.11.1.el9_4", "503.9.1.el9_4", 1},
  };
  auto sign = [](int v) { return (v > 0) - (v < 0); };
  for (const auto& c : cases) {
    INFO(c.a << " vs " << c.b);
    CHECK(sign(rpm::compare_version_strings(c.a, c.b)) == c.sign);
    CHECK(sign(rpm::compare_version_strings(c.b, c.a)) == -c.sign);
  }
}

TEST_CASE("the newest EVR wins: epoch first, then version, then release", "[unit][rpm]") {
  CHECK(rpm::compare_evr({1, "1.0", "1"}, {0, "9.0", "9"}) > 0);
  CHECK(rpm::compare_evr({0, "5.14.0", "362.8.1.el9_3"}, {0, "5.14.0", "284.11.1.el9_2"}) > 0);
  CHECK(rpm::compare_evr({0, "5.14.0", "70.13.1.el9_0"}, {0, "5.14.0", "70.13.1.el9_0"}) == 0);
  CHECK(rpm::compare_evr({0, "6.1.0", "1"}, {0, "5.14.0", "999"}) > 0);
  CHECK(rpm::Evr{1, "2.0", "3"}.str() == "1:2.0-3");
  CHECK(rpm::Evr{0, "5.14.0", "362.8.1.el9_3"}.str() == "5.14.0-362.8.1.el9_3");
}
