#pragma once
// The places init-modules looks for a kernel's headers and modules tree. Each source fills a
// fresh staging root, or answers why it cannot.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "apt.hpp"
#include "host.hpp"
#include "kmodkit/archive.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/http.hpp"
#include "kmodkit/result.hpp"
#include "kmodkit/volume.hpp"
#include "layout.hpp"
#include "rpm_repo.hpp"

namespace kmodkit::init {

namespace fs = std::filesystem;

// An archive given by the user, with the digest it must have.
struct ArchiveInput {
  std::string location;  // path or URL
  std::string sha256;
};

struct Config {
  std::string kernel_release;
  fs::path volume = "/modules";
  fs::path host_root = "/host";
  fs::path sysfs = "/sys";
  std::string os = "auto";
  std::vector<std::string> sources;
  std::vector<apt::Repo> repos;          // from --repo; empty: the image's apt configuration
  fs::path apt_root = "/";
  std::string arch;
  std::vector<fs::path> rpm_repo_files;  // from --rpm-repo; empty: <rpm_root>/etc/yum.repos.d
  fs::path rpm_root = "/";
  std::string releasever;  // empty: the host's os-release (RHEL_VERSION, else VERSION_ID)
  std::string basearch;
  std::vector<ArchiveInput> archives;
  std::vector<std::string> images;               // --image references, tried in order
  std::vector<fs::path> image_gpgkeys;           // keys of an extensions image's packages; empty: Red Hat's on the host
  fs::path registry_auth;                        // docker config.json; empty: the kubelet's under host_root
  std::vector<std::string> insecure_registries;  // HOST:PORT served over plain HTTP
  bool dry_run = false;
  int jobs = 2;
  double lock_timeout_s = 1800;
  http::Options http;
};

struct Context {
  const Config& config;
  std::string kernel_release;
  host::OsInfo os;
  fs::path staged_root;  // empty directory the source fills; unused in a dry run
};

struct Answer {
  bool found = false;    // a complete tree is staged (or, in a dry run, would be)
  std::string reason;    // when not found: why, in a few words
  std::string location;  // where it was found
  std::vector<volume::PackageRecord> packages;
  archive::Stats stats;
  layout::Headers headers;
};

using SourceFn = Result<Answer> (*)(Context&);

struct SourceSpec {
  std::string_view name;
  SourceFn fetch;  // nullptr for "volume", which the runner checks itself
  std::string_view help;
};

// The sources in their default order.
const std::vector<SourceSpec>& source_table();
const SourceSpec* find_source(std::string_view name);

// Individual sources, exposed for tests.
Result<Answer> fetch_host(Context& ctx);
Result<Answer> fetch_kheaders(Context& ctx);
Result<Answer> fetch_apt(Context& ctx);
Result<Answer> fetch_rpm(Context& ctx);  // rpm_source.cpp
// The rpm source on repositories given by its caller (the oci source's extensions image) instead
// of .repo files: the newest packages that provide R's kernel-devel (and kernel-core and
// kernel-modules when the node has no modules tree), downloaded and checked against primary.xml,
// each checked as rpm checks it (its header signature by the repository's gpgkey URLs with
// gpgcheck) before it is extracted into ctx.staged_root. Absent when no repository has R's
// kernel-devel; the errors of the rpm source otherwise (65 for a package that fails a check,
// 78 for a gpgkey that cannot be read).
Result<Answer> fetch_from_rpm_repositories(Context& ctx, const std::vector<rpm::Repo>& repos);
Result<Answer> fetch_archive(Context& ctx);
// Container images (oci.cpp): a driver-toolkit-like image's kernel tree, laid as it is.
Result<Answer> fetch_oci(Context& ctx);

// Shared by the sources (sources.cpp).

// An answer that says why a source has nothing for the kernel.
Answer absent(std::string reason);
// Runs tasks on up to `jobs` threads; returns the first error (by task order).
Result<void> run_parallel(std::vector<std::function<Result<void>()>>& tasks, int jobs);
// A task that adds files to an extraction (a package, an archive, a copied tree) and says what.
using ExtractTask = std::function<Result<archive::Stats>()>;
// Runs them as run_parallel does; returns the sum of what they wrote.
Result<archive::Stats> extract_parallel(const std::vector<ExtractTask>& tasks, int jobs);
// Streams `location` into `consume` while hashing it, then checks the hash against `expected`
// (whose origin `says` names, e.g. "the Release file says"). A mismatch is reported before
// whatever the consumer tripped over: damaged input makes a decompressor fail ("Lzma error"),
// and the digest says what is really wrong. Data error (65) naming the location.
Result<void> stream_verified(const std::string& location, const http::Options& options, const std::string& expected,
                             std::string_view says,
                             const std::function<Result<void>(int fd, digest::Sha256& hash)>& consume);
// The host's modules tree for the release, relative to the host root, if it has one.
std::optional<std::string> host_modules_tree(const Config& cfg, std::string_view kver);
// Copies the host's modules tree `rel` into the extraction as the volume's modules tree.
Result<archive::Stats> copy_host_modules(const Config& cfg, const std::string& rel, std::string_view kver,
                                         archive::Extraction& extraction);

}  // namespace kmodkit::init
