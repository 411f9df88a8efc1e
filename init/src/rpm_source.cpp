// The rpm source: dnf repositories (RHEL, CentOS Stream, Fedora, RHCOS's entitled ones), read
// as dnf reads them and checked as carefully as the apt source checks apt's.
#include <fcntl.h>

#include <algorithm>

#include "kmodkit/fetch.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "rpm_package.hpp"
#include "rpm_repo.hpp"
#include "signature.hpp"
#include "sources.hpp"

namespace kmodkit::init {
namespace {

// The capabilities RHEL's kernel packages provide with the release as their version.
constexpr std::string_view kDevel = "kernel-devel-uname-r";
constexpr std::string_view kCore = "kernel-core-uname-r";
constexpr std::string_view kModules = "kernel-modules-uname-r";
// RHEL 9.2 and Fedora 38 moved the modules out of kernel-core into kernel-modules-core.
constexpr std::string_view kModulesCore = "kernel-modules-core-uname-r";

// dnf's $releasever for the node: RHCOS's VERSION_ID is the OpenShift version ("4.14"), its
// RHEL_VERSION the one the repositories are named by ("9.2").
std::string node_releasever(const Config& cfg) {
  if (!cfg.releasever.empty()) return cfg.releasever;
  const auto os = host::read_os_release(cfg.host_root);
  return !os.rhel_version.empty() ? os.rhel_version : os.version_id;
}

// The enabled repositories of --rpm-repo files, else of <rpm-root>/etc/yum.repos.d/*.repo (in
// name order, as dnf reads them), with gpgcheck's default from <rpm-root>/etc/dnf/dnf.conf.
Result<std::vector<rpm::Repo>> read_repositories(const Config& cfg, const rpm::RepoVars& vars) {
  auto gpg_default = rpm::GpgCheckDefault::off;  // dnf's own default, when dnf.conf does not say
  const fs::path dnf_conf = cfg.rpm_root / "etc/dnf/dnf.conf";
  std::error_code ec;
  if (fs::exists(dnf_conf, ec)) {
    const auto text = KK_TRY_CTX(files::read_file(dnf_conf, 1 << 20), dnf_conf.string());
    gpg_default = KK_TRY(rpm::parse_main_gpgcheck(text, dnf_conf.string(), gpg_default));
  }
  std::vector<fs::path> files_to_read = cfg.rpm_repo_files;
  if (files_to_read.empty()) {
    const fs::path dir = cfg.rpm_root / "etc/yum.repos.d";
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".repo") files_to_read.push_back(e.path());
    }
    std::sort(files_to_read.begin(), files_to_read.end());
  }
  std::vector<rpm::Repo> out;
  for (const auto& f : files_to_read) {
    auto text = files::read_file(f, 4 << 20);
    if (!text) return fail(ExitCode::config, "repository file " + text.error().message);  // it names the file
    auto parsed = rpm::parse_repo_file(*text, f.string(), vars, gpg_default);
    if (!parsed && vars.releasever.empty() && parsed.error().message.ends_with("uses $releasever but its value is not known")) {
      return fail(parsed.error().code, parsed.error().message + "; give --releasever");
    }
    for (auto& r : KK_TRY(std::move(parsed))) {
      if (r.enabled) out.push_back(std::move(r));
    }
  }
  return out;
}

// A repository being read: how to reach it and the keys it is checked with.
struct RepoState {
  const rpm::Repo* repo;
  http::Options http;
  std::vector<std::string> keys;  // armoured key blocks from its gpgkey URLs
  std::string base;               // the baseurl that answered
  std::string describe() const { return "repository " + repo->id + " (" + repo->origin + ")"; }
};

// dnf's TLS settings of one repository on top of the command line's.
http::Options repo_http(const Config& cfg, const rpm::Repo& repo) {
  http::Options o = cfg.http;
  if (!repo.sslcacert.empty()) o.ca_file = repo.sslcacert;
  o.client_cert = repo.sslclientcert;
  o.client_key = repo.sslclientkey;
  if (!repo.sslverify) {
    o.tls_verify = http::TlsVerify::off;
    log::get("init.rpm")->warn("repository {} ({}) sets sslverify=0: its servers' certificates are NOT checked, so "
                               "anyone on the network path can answer for them",
                               repo.id, repo.origin);
  }
  return o;
}

// The contents of a repository's gpgkey URLs (file:// usually). Configuration error (78) when
// one cannot be read.
Result<std::vector<std::string>> fetch_keys(const RepoState& st) {
  std::vector<std::string> keys;
  for (const auto& url : st.repo->gpgkeys) {
    auto key = http::get_string(url, st.http, 4 << 20);
    if (!key) return fail(ExitCode::config, "gpgkey " + http::redact(url) + " cannot be read: " + key.error().message);
    keys.push_back(std::move(*key));
  }
  return keys;
}

// A package of some repository that provides one of the capabilities.
struct Candidate {
  rpm::Provider provider;
  std::string capability;
  const RepoState* repo;
  std::string url() const { return repo->base + "/" + provider.href; }
};

// Reads one baseurl of a repository: repomd.xml (its signature when repo_gpgcheck=1), then
// primary, streamed and checked against repomd's checksums, collecting the providers of
// `capabilities` = kver for `basearch` (or noarch).
Result<void> read_base(RepoState& st, const std::string& base, const std::vector<std::string_view>& capabilities,
                       std::string_view kver, std::string_view basearch, std::vector<Candidate>& found) {
  auto logger = log::get("init.rpm");
  const std::string repomd_url = base + "/repodata/repomd.xml";
  const std::string shown = http::redact(repomd_url);
  const std::string repomd = KK_TRY(http::get_string(repomd_url, st.http, 16 << 20));
  if (st.repo->repo_gpgcheck) {
    auto asc = http::get_string(repomd_url + ".asc", st.http, 1 << 20);
    if (!asc && asc.error().code == ExitCode::no_input) {
      return fail(ExitCode::data_err, shown + " is not signed (no repomd.xml.asc) and the repository sets repo_gpgcheck=1");
    }
    if (!asc) return fail(asc.error());
    KK_TRY(signature::verify_with(st.keys, shown, repomd, *asc));
  }
  const auto entry = KK_TRY(rpm::parse_repomd_primary(repomd, shown));
  const std::string url = base + "/" + entry.href;
  const std::string shown_primary = http::redact(url);
  if (entry.checksum_type != "sha256") {
    return fail(ExitCode::data_err, shown + ": primary's checksum is " + entry.checksum_type +
                                        ", which init-modules does not check (only sha256)");
  }

  std::vector<Candidate> here;
  std::vector<std::unique_ptr<rpm::PrimaryReader>> readers;
  for (auto cap : capabilities) {
    readers.push_back(std::make_unique<rpm::PrimaryReader>(
        shown_primary, std::string(cap), std::string(kver), [&, cap](rpm::Provider&& p) {
          if (p.arch != basearch && p.arch != "noarch") {
            logger->debug("{}: {} {} is for {}, not {}", shown_primary, p.name, p.evr.str(), p.arch, basearch);
            return;
          }
          here.push_back(Candidate{std::move(p), std::string(cap), &st});
        }));
  }
  // Only the package being read is held: a large repository's primary is hundreds of MB.
  digest::Sha256 open_hash;
  KK_TRY(stream_verified(url, st.http, entry.checksum, "repomd.xml says", [&](int fd, digest::Sha256& hash) -> Result<void> {
    KK_TRY(archive::decompress_fd(fd, shown_primary, &hash, [&](std::string_view chunk) -> Result<void> {
      open_hash.update(chunk);
      for (auto& r : readers) KK_TRY(r->feed(chunk));
      return {};
    }));
    for (auto& r : readers) KK_TRY(r->finish());
    return {};
  }));
  if (!entry.open_checksum.empty() && entry.open_checksum_type == "sha256") {
    const std::string got = open_hash.hex();
    const std::string want = digest::normalize_hex(entry.open_checksum);
    if (got != want) {
      return fail(ExitCode::data_err, shown_primary + ": SHA256 mismatch of its uncompressed content: repomd.xml says " +
                                          want + ", got " + got);
    }
  }
  st.base = base;
  for (auto& c : here) found.push_back(std::move(c));
  logger->debug("{}: {} providers of {} = {}", shown_primary, here.size(), capabilities.front(), kver);
  return {};
}

// Reads a repository from its first baseurl that answers; the others are tried in order when
// one is missing (66) or unreachable (69). Returns a note instead when no baseurl has repodata.
Result<void> read_repository(RepoState& st, const std::vector<std::string_view>& capabilities, std::string_view kver,
                             std::string_view basearch, std::vector<Candidate>& found, std::vector<std::string>& notes) {
  auto logger = log::get("init.rpm");
  if (st.repo->repo_gpgcheck || st.repo->gpgcheck) st.keys = KK_TRY_CTX(fetch_keys(st), st.describe());
  std::optional<Error> last;
  for (const auto& base : st.repo->baseurls) {
    auto r = read_base(st, base, capabilities, kver, basearch, found);
    if (r) return {};
    if (r.error().code != ExitCode::no_input && r.error().code != ExitCode::unavailable) {
      return fail(std::move(r).error().context(st.describe()));
    }
    if (&base != &st.repo->baseurls.back()) logger->warn("{}: {}; trying the next baseurl", st.describe(), r.error().message);
    last = std::move(r).error();
  }
  if (!last) return {};  // no baseurl: parse_repo_file refuses that for an enabled repository
  if (last->code == ExitCode::no_input) {
    notes.push_back(st.repo->id + ": " + last->message);
    return {};
  }
  return fail(last->context(st.describe()));
}

// The newest candidate for a capability (rpm's EVR order; the first repository's on a tie).
const Candidate* newest(const std::vector<Candidate>& all, std::string_view capability) {
  const Candidate* best = nullptr;
  for (const auto& c : all) {
    if (c.capability != capability) continue;
    if (best == nullptr || rpm::compare_evr(c.provider.evr, best->provider.evr) > 0) best = &c;
  }
  return best;
}

// Downloads a package into `file`, checking the checksum primary.xml gives for it. Data error
// (65) naming the URL and both digests.
Result<void> download(const Candidate& c, const fs::path& file) {
  const std::string url = c.url();
  const std::string shown = http::redact(url);
  if (c.provider.checksum_type != "sha256") {
    return fail(ExitCode::data_err, shown + ": primary.xml gives a " + c.provider.checksum_type +
                                        " checksum, which init-modules does not check (only sha256)");
  }
  auto fd = KK_TRY(files::open_file(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  digest::Sha256 hash;
  http::Options opts = c.repo->http;
  opts.what = fs::path(c.provider.href).filename().string();
  opts.progress = true;
  KK_TRY(http::get(url, [&](std::span<const char> bytes) -> Result<void> {
    hash.update(bytes.data(), bytes.size());
    if (int err = files::write_all(fd.get(), bytes.data(), bytes.size()); err != 0) {
      return fail(files::errno_error(file.string(), err));
    }
    return {};
  }, opts));
  const std::string got = hash.hex();
  const std::string want = digest::normalize_hex(c.provider.checksum);
  if (got != want) {
    return fail(ExitCode::data_err, shown + ": SHA256 mismatch: primary.xml says " + want + ", got " + got);
  }
  return {};
}

// Checks a downloaded package as rpm does before dnf installs it (with the repository's gpgcheck:
// its header signature against gpgkey; its header and payload digests always), then extracts it.
// Nothing of a package is extracted before it is checked.
Result<archive::Stats> install(const Candidate& c, const fs::path& file, archive::Extraction& extraction) {
  const std::string shown = http::redact(c.url());
  const auto policy = c.repo->repo->gpgcheck ? rpm::SignaturePolicy::required : rpm::SignaturePolicy::not_required;
  const auto info = KK_TRY(rpm::check_package(file, shown, c.repo->keys, policy));
  // Without repo_gpgcheck nothing vouches for primary.xml: the package's own (signed) header
  // must be the one primary named, or an older signed kernel could be passed off as R's.
  const auto& p = c.provider;
  if (info.name != p.name || info.evr != p.evr.str() || info.arch != p.arch) {
    return fail(ExitCode::data_err, shown + ": the package is " + info.name + " " + info.evr + " " + info.arch +
                                        ", but primary.xml lists it as " + p.name + " " + p.evr.str() + " " + p.arch);
  }
  return rpm::extract_package(file, shown, extraction);
}

}  // namespace

Result<Answer> fetch_rpm(Context& ctx) {
  const auto& cfg = ctx.config;
  if (ctx.os.debian_family()) return absent("the node runs " + ctx.os.describe() + ", not RHEL, CentOS or Fedora");

  const rpm::RepoVars vars{node_releasever(cfg), cfg.basearch};
  const auto repos = KK_TRY(read_repositories(cfg, vars));
  if (repos.empty()) {
    return absent(cfg.rpm_repo_files.empty()
                      ? "no enabled rpm repository in " + (cfg.rpm_root / "etc/yum.repos.d").string()
                      : "no enabled rpm repository in the --rpm-repo files");
  }
  return fetch_from_rpm_repositories(ctx, repos);
}

Result<Answer> fetch_from_rpm_repositories(Context& ctx, const std::vector<rpm::Repo>& repos) {
  const auto& cfg = ctx.config;
  const auto& kver = ctx.kernel_release;
  auto logger = log::get("init.rpm");

  // The modules come from packages only when the node has no modules tree to copy.
  const auto host_modules = host_modules_tree(cfg, kver);
  std::vector<std::string_view> capabilities = {kDevel};
  if (!host_modules) capabilities.insert(capabilities.end(), {kCore, kModulesCore, kModules});

  std::vector<RepoState> states;
  states.reserve(repos.size());
  for (const auto& r : repos) states.push_back(RepoState{&r, repo_http(cfg, r), {}, {}});
  std::vector<Candidate> found;
  std::vector<std::string> notes;
  for (auto& st : states) KK_TRY(read_repository(st, capabilities, kver, cfg.basearch, found, notes));

  std::string searched;
  for (const auto& r : repos) searched += (searched.empty() ? "" : ", ") + r.id;
  for (const auto& n : notes) searched += "; " + n;
  const Candidate* devel = newest(found, kDevel);
  if (devel == nullptr) return absent("no package provides " + std::string(kDevel) + " = " + kver + " in " + searched);

  std::vector<const Candidate*> chosen = {devel};
  if (!host_modules) {
    for (auto cap : {kCore, kModulesCore, kModules}) {
      if (const auto* c = newest(found, cap)) chosen.push_back(c);
    }
    if (chosen.size() == 1) {
      logger->warn("the host has no modules tree for {} and no repository has {}, {} or {}: the volume gets headers only",
                   kver, kCore, kModulesCore, kModules);
    }
  }

  Answer answer;
  answer.location = devel->repo->repo->id + " (" + http::redact(devel->repo->base) + ")";
  for (const auto* c : chosen) {
    answer.packages.push_back({c->provider.name, c->provider.evr.str(), digest::normalize_hex(c->provider.checksum),
                               http::redact(c->url()), c->provider.size});
  }
  if (cfg.dry_run) {
    answer.found = true;
    answer.reason = "would install";
    for (const auto& p : answer.packages) {
      answer.reason += " " + p.name + " " + p.version + " (" + progress::format_bytes(p.size) + ")";
    }
    answer.reason += " from " + answer.location;
    if (host_modules) answer.reason += " and copy " + (cfg.host_root / *host_modules).string();
    return answer;
  }

  // Downloads go beside the staged root, never into it: the root is what gets published.
  const fs::path downloads = ctx.staged_root.parent_path() / "rpms";
  KK_TRY(files::make_dirs(downloads));
  auto extraction = KK_TRY(archive::Extraction::create(layout::policy(ctx.staged_root)));
  std::vector<ExtractTask> tasks;
  // Largest first, so the cores finish together.
  std::sort(chosen.begin(), chosen.end(), [](auto* a, auto* b) { return a->provider.size > b->provider.size; });
  for (const auto* c : chosen) {
    tasks.emplace_back([&, c]() -> Result<archive::Stats> {
      const fs::path file = downloads / fs::path(c->provider.href).filename();
      KK_TRY(download(*c, file));
      auto stats = KK_TRY(install(*c, file, *extraction));
      std::error_code ec;
      fs::remove(file, ec);
      return stats;
    });
  }
  if (host_modules) tasks.emplace_back([&] { return copy_host_modules(cfg, *host_modules, kver, *extraction); });
  answer.stats += KK_TRY(extract_parallel(tasks, cfg.jobs));
  KK_TRY(extraction->finish());
  KK_TRY(files::remove_tree(downloads));

  answer.headers = layout::find_headers(ctx.staged_root, kver);
  if (!answer.headers.complete()) {
    return absent(devel->provider.name + " " + devel->provider.evr.str() + " lacks what a module build needs: " +
                  (answer.headers.dir.empty() ? "usr/src/kernels/" + kver : answer.headers.describe_missing()));
  }
  answer.found = true;
  return answer;
}

}  // namespace kmodkit::init
