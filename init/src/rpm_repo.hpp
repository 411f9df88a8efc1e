#pragma once
// RPM repository metadata: dnf .repo files, repomd.xml, primary.xml read as a stream, and
// rpm's version ordering. Pure parsing; no I/O here (the apt source's counterpart is apt.hpp).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::init::rpm {

// The values dnf substitutes for $releasever and $basearch (and their ${...} forms). An empty
// one is "unknown": a repository that uses it is a configuration error.
struct RepoVars {
  std::string releasever;  // "9", "9.4"
  std::string basearch;    // "x86_64", "aarch64"
};

// gpgcheck's value when a repository does not set it. dnf's own default is off, but RHEL's
// and Fedora's /etc/dnf/dnf.conf turn it on in [main], so the caller says which applies.
enum class GpgCheckDefault { off, on };

// One [id] section of a .repo file, variables substituted.
struct Repo {
  std::string id;                     // "rhel-9-for-x86_64-baseos-rpms"
  std::string name;                   // its name=, or the id when it has none
  std::vector<std::string> baseurls;  // file://, http:// or https://, without trailing slash
  bool enabled = true;
  bool gpgcheck = false;       // check each package's header signature against gpgkey
  bool repo_gpgcheck = false;  // check repomd.xml's detached signature (repomd.xml.asc)
  std::vector<std::string> gpgkeys;   // URLs (file:// usually) of the armoured public keys
  std::string sslcacert, sslclientcert, sslclientkey;  // paths, when given
  bool sslverify = true;
  std::string origin;  // "file:line" of its [id] line, for messages
};

// Parses a dnf .repo file (INI: [id] sections, key=value, # and ; comments, values continued
// on indented lines; lists split on white space and commas; unknown keys ignored). `origin`
// names the file in errors. Returns the repositories in file order, disabled ones included.
// Configuration error (78) naming file:line for a line that is not a section, key or
// continuation, a bad boolean, a duplicate id, a baseurl that is not file/http/https, a variable
// whose value is unknown, and an enabled repository without baseurl (metalink and mirrorlist
// are not supported).
Result<std::vector<Repo>> parse_repo_file(std::string_view text, std::string_view origin, const RepoVars& vars,
                                          GpgCheckDefault gpgcheck_default);

// gpgcheck of dnf.conf's [main] section (its text), which repositories inherit; `fallback` when
// it does not say. Configuration error (78) naming file:line for a value that is not a boolean.
Result<GpgCheckDefault> parse_main_gpgcheck(std::string_view text, std::string_view origin, GpgCheckDefault fallback);

// A metadata file listed in repomd.xml.
struct RepomdEntry {
  std::string href;  // relative to the baseurl: "repodata/<sha>-primary.xml.gz"
  std::string checksum_type, checksum;            // of the file as stored (compressed)
  std::string open_checksum_type, open_checksum;  // of its uncompressed content; empty if absent
  uint64_t size = 0, open_size = 0;               // 0 when absent
};

// The `primary` entry of a repomd.xml. Data error (65): malformed XML (naming `origin` and
// expat's line and column), no primary entry, or one without location or checksum.
Result<RepomdEntry> parse_repomd_primary(std::string_view xml, std::string_view origin);

// An epoch:version-release. Epoch 0 when absent.
struct Evr {
  uint64_t epoch = 0;
  std::string version, release;
  std::string str() const;  // "1:2.0-3", "6.1.0-57.el9" (no "0:")
};

// rpm's rpmvercmp (rpm's rpmio/rpmvercmp.c): <0, 0, >0 as a is older, equal, newer than b.
int compare_version_strings(std::string_view a, std::string_view b);
// rpm's EVR order: epoch, then version, then release, each by rpmvercmp.
int compare_evr(const Evr& a, const Evr& b);

// A package of primary.xml that provides the wanted capability.
struct Provider {
  std::string name, arch;  // "kernel-devel", "x86_64"
  Evr evr;
  std::string href;        // location, relative to the baseurl
  std::string checksum_type, checksum;
  bool checksum_is_pkgid = false;  // pkgid="YES"
  uint64_t size = 0;               // <size package=...>
};

// Reads primary.xml fed in chunks of any size (its uncompressed bytes, as they come out of the
// decompressor) and calls `found` for each <package> whose provides hold `capability` with
// flags EQ and the version `value` (e.g. "kernel-devel-uname-r" = "5.14.0-362.8.1.el9_3.x86_64").
// Only the package being read is held, never the document: a large repository's primary is
// hundreds of MB. Data error (65), naming `origin` and expat's line and column, for malformed or
// truncated XML, and for a matching package without location or checksum.
class PrimaryReader {
 public:
  using Found = std::function<void(Provider&&)>;
  PrimaryReader(std::string origin, std::string capability, std::string value, Found found);
  ~PrimaryReader();
  PrimaryReader(const PrimaryReader&) = delete;
  PrimaryReader& operator=(const PrimaryReader&) = delete;

  // Parses the next chunk; after an error every later call returns it again.
  Result<void> feed(std::string_view chunk);
  // Ends the document: an unclosed element (a truncated file) is a data error.
  Result<void> finish();

  struct State;  // expat's parser and the package being read (rpm_repo.cpp)

 private:
  std::unique_ptr<State> state_;
};

}  // namespace kmodkit::init::rpm
