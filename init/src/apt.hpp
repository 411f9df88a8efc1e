#pragma once
// Debian/Ubuntu repository metadata: sources lists (one-line and deb822), Release files,
// Packages indexes, version comparison and Depends resolution. Pure parsing; no I/O here.

#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::init::apt {

// One "deb" line or deb822 stanza, expanded to one suite.
struct Repo {
  std::string uri;                      // without trailing slash
  std::string suite;                    // "bookworm", "jammy-updates"
  std::vector<std::string> components;  // "main", "restricted"
  std::vector<std::string> architectures;  // from [arch=...]; empty: any
  std::string signed_by;                // keyring path, when given
  bool trusted = false;                 // [trusted=yes]
  bool check_valid_until = true;        // [check-valid-until=no]: an expired Release is used
  std::string origin;                   // file:line it came from, for messages
  std::string describe() const;         // "http://deb.debian.org/debian bookworm"
  // A flat repository ("deb URI DIR/"): its Release and one Packages index are in URI/DIR,
  // with no dists/ tree and no components; package Filenames are still relative to URI.
  bool flat() const { return suite.ends_with('/'); }
  // Where the Release file and the indexes are: URI/dists/SUITE, or URI/DIR when flat.
  std::string index_base() const;
};

// Parses "deb [opts] uri suite comp..." lines; deb-src and comments are skipped. `origin` names
// the file in errors (configuration error, 78, naming file and line).
Result<std::vector<Repo>> parse_one_line(std::string_view text, std::string_view origin);
// Parses deb822 .sources stanzas (Types, URIs, Suites, Components, Architectures, Signed-By,
// Trusted, Enabled).
Result<std::vector<Repo>> parse_deb822(std::string_view text, std::string_view origin);
// Reads <root>/etc/apt/sources.list and <root>/etc/apt/sources.list.d/*.{list,sources}, as apt
// does (files in name order). Missing files are fine.
Result<std::vector<Repo>> read_system_sources(const std::filesystem::path& root);

// A file listed in a Release file's SHA256 section.
struct IndexFile {
  std::string sha256;
  uint64_t size = 0;
};

struct Release {
  std::string suite, codename;
  std::map<std::string, IndexFile> sha256;  // path relative to dists/<suite>/ -> digest
  std::optional<std::time_t> valid_until;   // its Valid-Until field, when it has one
  std::string valid_until_text;             // as written
};

// Strips the OpenPGP clear-signature armour of an InRelease file (returns text as is when it
// is not clearsigned).
std::string strip_clearsign(std::string_view text);
// Parses a Release (or stripped InRelease) file; data error (65) when it has no SHA256 list or
// a Valid-Until that is not an RFC 1123 date.
Result<Release> parse_release(std::string_view text);

// One binary package stanza, as much as kmodkit needs of it.
struct Package {
  std::string name, version, architecture, filename, sha256, depends, provides;
  uint64_t size = 0;
  std::string repo;  // base URI the Filename is relative to
  std::string url() const;  // repo + "/" + Filename
};

// Parses a Packages index fed in chunks of any size (so a 50 MB index never sits in memory),
// keeping only stanzas whose package name `keep` accepts. A kept stanza missing Filename or
// SHA256 is a data error naming the package.
class PackagesParser {
 public:
  PackagesParser(std::string repo, bool (*keep)(std::string_view name))
      : repo_(std::move(repo)), keep_(keep) {}
  Result<void> feed(std::string_view chunk);
  Result<std::vector<Package>> finish();

 private:
  Result<void> stanza(std::string_view text);
  std::string repo_;
  bool (*keep_)(std::string_view);
  std::string pending_;
  std::vector<Package> out_;
};

// dpkg's version ordering: <0, 0, >0 as a is older, equal, newer than b.
int compare_versions(std::string_view a, std::string_view b);

// One alternative of a Depends field: "name (>= 1.2)" -> {name, ">=", "1.2"}.
struct Dependency {
  std::string name, relation, version;
  bool satisfied_by(std::string_view candidate_version) const;
};
// Splits a Depends field into groups of alternatives ("a | b, c"); architecture qualifiers
// (":any") are dropped.
std::vector<std::vector<Dependency>> parse_depends(std::string_view field);

// Fields of a one-line or deb822 key: value block.
std::map<std::string, std::string> parse_stanza(std::string_view text);

}  // namespace kmodkit::init::apt
