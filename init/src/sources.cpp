#include "sources.hpp"

#include <libkmod.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

#include "kmodkit/digest.hpp"
#include "kmodkit/fetch.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "signature.hpp"

namespace kmodkit::init {

Answer absent(std::string reason) {
  Answer a;
  a.reason = std::move(reason);
  return a;
}

Result<void> run_parallel(std::vector<std::function<Result<void>()>>& tasks, int jobs) {
  std::vector<Result<void>> results(tasks.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < tasks.size(); i = next++) {
      try {
        results[i] = tasks[i]();
      } catch (const std::exception& e) {
        results[i] = fail(ExitCode::software, std::string("internal error: ") + e.what());
      }
    }
  };
  const size_t n = std::min<size_t>(tasks.size(), static_cast<size_t>(std::max(1, jobs)));
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    if (!r) return r;
  }
  return {};
}

Result<archive::Stats> extract_parallel(const std::vector<ExtractTask>& tasks, int jobs) {
  archive::Stats total;
  std::mutex mutex;
  std::vector<std::function<Result<void>()>> wrapped;
  for (const auto& task : tasks) {
    wrapped.emplace_back([&]() -> Result<void> {
      auto stats = KK_TRY(task());
      std::lock_guard lock(mutex);
      total += stats;
      return {};
    });
  }
  KK_TRY(run_parallel(wrapped, jobs));
  return total;
}

Result<void> stream_verified(const std::string& location, const http::Options& options, const std::string& expected,
                             std::string_view says,
                             const std::function<Result<void>(int fd, digest::Sha256& hash)>& consume) {
  digest::Sha256 hash;
  Result<void> consumed;
  KK_TRY(fetch::stream(location, options, [&](int fd) -> Result<void> {
    consumed = consume(fd, hash);
    if (!consumed) {
      // Read the rest so the digest is of the whole input.
      char buf[1 << 16];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) hash.update(buf, static_cast<size_t>(n));
    }
    return {};
  }));
  const std::string got = hash.hex();
  const std::string want = digest::normalize_hex(expected);
  if (got != want) {
    return fail(ExitCode::data_err, http::redact(location) + ": SHA256 mismatch: " + std::string(says) + " " + want +
                                        ", got " + got);
  }
  return consumed;
}

namespace {

// Streams one archive (local or remote) into the staging root, checking its SHA-256.
Result<archive::Stats> fetch_and_extract(const std::string& location, const std::string& name,
                                         const std::string& expected_sha256, archive::Extraction& extraction,
                                         const http::Options& http_options) {
  const auto started = std::chrono::steady_clock::now();
  archive::Stats stats;
  http::Options opts = http_options;
  opts.what = name;
  opts.progress = true;
  KK_TRY(stream_verified(location, opts, expected_sha256, "expected", [&](int fd, digest::Sha256& hash) -> Result<void> {
    stats = KK_TRY(extraction.extract_fd(fd, name, &hash));
    return {};
  }));
  log::get("init.fetch")->debug("{}: {} files, {} directories, {} symlinks, {} in {:.3f} s", name, stats.files,
                                stats.dirs, stats.symlinks, progress::format_bytes(stats.bytes),
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return stats;
}

}  // namespace

std::optional<std::string> host_modules_tree(const Config& cfg, std::string_view kver) {
  for (const std::string& rel : {"usr/lib/modules/" + std::string(kver), "lib/modules/" + std::string(kver)}) {
    auto resolved = host::resolve_in_root(cfg.host_root, rel);
    if (!resolved) continue;
    std::error_code ec;
    const fs::path p = cfg.host_root / *resolved;
    if (fs::exists(p / "modules.dep", ec) || fs::exists(p / "modules.order", ec) ||
        fs::is_directory(p / "kernel", ec)) {
      return resolved;
    }
  }
  return std::nullopt;
}

Result<archive::Stats> copy_host_modules(const Config& cfg, const std::string& rel,
                                         std::string_view kver, archive::Extraction& extraction) {
  log::get("init.host")->info("copying the modules tree {}", (cfg.host_root / rel).string());
  return extraction.copy_tree(cfg.host_root / rel, volume::modules_dir(kver));
}

const std::vector<SourceSpec>& source_table() {
  static const std::vector<SourceSpec> table = {
      {"volume", nullptr, "a complete tree already on the volume (its manifest exists and matches)"},
      {"host", fetch_host, "the node's own headers and modules tree under the host mount"},
      {"kheaders", fetch_kheaders, "the kernel's built-in headers, /sys/kernel/kheaders.tar.xz"},
      {"apt", fetch_apt, "Debian and Ubuntu package repositories"},
      {"rpm", fetch_rpm, "RHEL, CentOS Stream and Fedora package repositories (dnf .repo files)"},
      {"oci", fetch_oci, "container images given with --image (a driver toolkit of the node's kernel)"},
      {"archive", fetch_archive, "archives given with --archive and --sha256"},
  };
  return table;
}

const SourceSpec* find_source(std::string_view name) {
  for (const auto& s : source_table()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

// ---- host ------------------------------------------------------------------------------

Result<Answer> fetch_host(Context& ctx) {
  const auto& cfg = ctx.config;
  const auto& kver = ctx.kernel_release;
  std::error_code ec;
  if (!fs::is_directory(cfg.host_root, ec)) return absent("no host mount at " + cfg.host_root.string());

  const std::vector<std::string> candidates = {
      "usr/lib/modules/" + kver + "/build", "lib/modules/" + kver + "/build",
      "usr/src/kernels/" + kver, "usr/src/linux-headers-" + kver};
  std::optional<std::string> headers;
  for (const auto& c : candidates) {
    auto r = host::resolve_in_root(cfg.host_root, c);
    if (r && fs::is_directory(cfg.host_root / *r, ec)) {
      headers = r;
      break;
    }
  }
  if (!headers) {
    return absent("no headers under " + cfg.host_root.string() + " (looked for usr/lib/modules/" + kver +
                  "/build, usr/src/kernels/" + kver + ", usr/src/linux-headers-" + kver + ")");
  }
  auto modules = host_modules_tree(cfg, kver);
  Answer answer;
  answer.location = (cfg.host_root / *headers).string();
  if (ctx.config.dry_run) {
    answer.found = true;
    answer.reason = "would copy " + answer.location + (modules ? " and " + (cfg.host_root / *modules).string() : "");
    return answer;
  }

  // Copy the headers and what they lean on outside themselves: Debian's tree links scripts/
  // into linux-kbuild and includes the -common tree's Makefile by absolute path.
  auto extraction = KK_TRY(archive::Extraction::create(layout::policy(ctx.staged_root)));
  std::vector<std::string> queue = {*headers};
  std::set<std::string> copied;
  auto covered = [&](const std::string& rel) {
    for (const auto& c : copied) {
      if (rel == c || rel.starts_with(c + "/")) return true;
    }
    return false;
  };
  while (!queue.empty() && copied.size() < 8) {
    std::string rel = queue.front();
    queue.erase(queue.begin());
    if (covered(rel)) continue;
    answer.stats += KK_TRY(extraction->copy_tree(cfg.host_root / rel, rel));
    copied.insert(rel);
    for (const auto& entry : fs::directory_iterator(cfg.host_root / rel, ec)) {
      if (!entry.is_symlink(ec)) continue;
      auto target = host::resolve_in_root(cfg.host_root, rel + "/" + entry.path().filename().string());
      if (target && fs::is_directory(cfg.host_root / *target, ec) && !covered(*target)) queue.push_back(*target);
    }
    if (auto text = files::read_file(cfg.host_root / rel / "Makefile", 1 << 20)) {
      size_t pos = 0;
      while ((pos = text->find("include /", pos)) != std::string::npos) {
        size_t end = text->find('\n', pos);
        std::string inc = text->substr(pos + 9, end == std::string::npos ? std::string::npos : end - pos - 9);
        pos = end == std::string::npos ? text->size() : end;
        auto target = host::resolve_in_root(cfg.host_root, inc);
        if (!target) continue;
        auto dir = fs::path(*target).parent_path().string();
        if (!dir.empty() && !covered(dir)) queue.push_back(dir);
      }
    }
  }
  if (modules) answer.stats += KK_TRY(copy_host_modules(cfg, *modules, kver, *extraction));
  KK_TRY(extraction->finish());

  answer.headers = layout::find_headers(ctx.staged_root, kver);
  if (!answer.headers.complete()) {
    return absent(answer.location + " lacks what a module build needs: " + answer.headers.describe_missing());
  }
  answer.found = true;
  return answer;
}

// ---- kheaders ----------------------------------------------------------------------------

namespace {

// Loads the kheaders module from the host's modules tree; returns what happened, in words.
std::string load_kheaders(const Config& cfg, std::string_view kver) {
  auto modules = host_modules_tree(cfg, kver);
  if (!modules) return "the host has no modules tree to load kheaders from";
  const std::string dir = (cfg.host_root / *modules).string();
  struct kmod_ctx* ctx = kmod_new(dir.c_str(), nullptr);
  if (ctx == nullptr) return "libkmod cannot read " + dir;
  std::string outcome;
  struct kmod_list* list = nullptr;
  if (kmod_module_new_from_lookup(ctx, "kheaders", &list) < 0 || list == nullptr) {
    outcome = "kheaders is not in " + dir;
  } else {
    struct kmod_module* mod = kmod_module_get_module(list);
    int state = kmod_module_get_initstate(mod);
    if (state == KMOD_MODULE_LIVE || state == KMOD_MODULE_BUILTIN) {
      outcome = "kheaders is loaded";
    } else {
      int err = kmod_module_probe_insert_module(mod, 0, nullptr, nullptr, nullptr, nullptr);
      outcome = err < 0 ? "loading kheaders failed: " + std::string(std::strerror(-err)) : "loaded kheaders";
    }
    kmod_module_unref(mod);
    kmod_module_unref_list(list);
  }
  kmod_unref(ctx);
  return outcome;
}

}  // namespace

Result<Answer> fetch_kheaders(Context& ctx) {
  const auto& cfg = ctx.config;
  const fs::path tarball = cfg.sysfs / "kernel/kheaders.tar.xz";
  std::error_code ec;
  std::string load_note;
  if (!fs::exists(tarball, ec) && cfg.sysfs == "/sys" && !cfg.dry_run) {
    load_note = load_kheaders(cfg, ctx.kernel_release);
  }
  if (!fs::exists(tarball, ec)) {
    return absent(tarball.string() + " does not exist" + (load_note.empty() ? "" : " (" + load_note + ")"));
  }
  Answer answer;
  answer.location = tarball.string();
  if (cfg.dry_run) {
    answer.found = true;
    answer.reason = "would extract " + tarball.string() + " (it usually lacks scripts and Module.symvers)";
    return answer;
  }
  const std::string dest = ctx.os.rhel_family() ? "usr/src/kernels/" + ctx.kernel_release
                                                : "usr/src/linux-headers-" + ctx.kernel_release;
  archive::Policy policy{ctx.staged_root,
                         [&dest](std::string_view p) { return dest + "/" + std::string(p); }, nullptr};
  auto fd = KK_TRY(files::open_file(tarball, O_RDONLY));
  answer.stats = KK_TRY(archive::extract_fd(fd.get(), tarball.string(), policy));
  answer.headers = layout::find_headers(ctx.staged_root, ctx.kernel_release);
  if (!answer.headers.complete()) {
    return absent(tarball.string() + " has the headers but lacks what a module build needs: " +
                  answer.headers.describe_missing());
  }
  answer.found = true;
  return answer;
}

// ---- apt ---------------------------------------------------------------------------------

namespace {

bool keep_linux(std::string_view name) { return name.starts_with("linux-"); }

// Downloads and verifies one suite's Release and the Packages indexes of its components.
Result<std::vector<apt::Package>> load_suite(const apt::Repo& repo, const std::string& arch,
                                             const fs::path& apt_root, const http::Options& http_options,
                                             std::string* note) {
  auto logger = log::get("init.apt");
  const std::string base = repo.index_base();
  const std::string shown = http::redact(base);  // for messages
  std::string text, text_name;
  auto in_release = http::get_string(base + "/InRelease", http_options, 64 << 20);
  if (in_release) {
    // Only the signed part counts: gpgv would accept text around it that the parser would read.
    if (!in_release->starts_with("-----BEGIN PGP SIGNED MESSAGE-----")) {
      return fail(ExitCode::data_err, shown + "/InRelease is not a clear-signed file");
    }
    KK_TRY(signature::verify(repo, apt_root, shown + "/InRelease", *in_release, std::nullopt));
    text = apt::strip_clearsign(*in_release);
    text_name = shown + "/InRelease";
  } else if (in_release.error().code == ExitCode::no_input) {
    auto release = http::get_string(base + "/Release", http_options, 64 << 20);
    if (!release) {
      if (release.error().code == ExitCode::no_input) {
        *note = repo.describe() + ": no InRelease or Release file in " + shown + "/";
        return std::vector<apt::Package>{};
      }
      return fail(release.error());
    }
    if (!repo.trusted) {
      auto sig = http::get_string(base + "/Release.gpg", http_options, 1 << 20);
      if (!sig && sig.error().code == ExitCode::no_input) {
        return fail(ExitCode::data_err, shown + "/Release is not signed (no InRelease, no Release.gpg); "
                                            "mark the repository trusted=yes if that is intended");
      }
      if (!sig) return fail(sig.error());
      KK_TRY(signature::verify(repo, apt_root, shown + "/Release", *release, *sig));
    }
    text = std::move(*release);
    text_name = shown + "/Release";
  } else {
    return fail(in_release.error());
  }
  auto release = KK_TRY_CTX(apt::parse_release(text), text_name);
  // As apt: an expired Release (an out-of-date mirror, or an old signed one served again to
  // keep a node on old packages) is refused unless the line says check-valid-until=no.
  if (repo.check_valid_until && release.valid_until && *release.valid_until < std::time(nullptr)) {
    return fail(ExitCode::data_err, text_name + " expired on " + release.valid_until_text +
                                        " (its Valid-Until): use an up-to-date mirror, or mark the repository "
                                        "check-valid-until=no");
  }

  std::vector<std::string> stems;  // the indexes, relative to base, without .xz/.gz
  if (repo.flat()) stems.push_back("Packages");
  for (const auto& component : repo.components) stems.push_back(component + "/binary-" + arch + "/Packages");
  std::vector<apt::Package> out;
  for (const auto& stem : stems) {
    const apt::IndexFile* index = nullptr;
    std::string chosen;
    for (const char* ext : {".xz", ".gz", ""}) {
      auto it = release.sha256.find(stem + ext);
      if (it != release.sha256.end()) {
        index = &it->second;
        chosen = stem + ext;
        break;
      }
    }
    if (index == nullptr) {
      logger->debug("{}: Release lists no {} index", repo.describe(), stem);
      continue;
    }
    const std::string url = base + "/" + chosen;
    apt::PackagesParser parser(repo.uri, keep_linux);
    KK_TRY(stream_verified(url, http_options, index->sha256, "the Release file says",
                           [&](int fd, digest::Sha256& hash) -> Result<void> {
                             KK_TRY(archive::decompress_fd(fd, http::redact(url), &hash,
                                                           [&](std::string_view chunk) { return parser.feed(chunk); }));
                             return {};
                           }));
    auto pkgs = KK_TRY_CTX(parser.finish(), http::redact(url));
    logger->debug("{}: {} linux-* packages", http::redact(url), pkgs.size());
    out.insert(out.end(), std::make_move_iterator(pkgs.begin()), std::make_move_iterator(pkgs.end()));
  }
  return out;
}

const apt::Package* best(const std::vector<apt::Package>& all, const apt::Dependency& dep,
                         const std::string& arch) {
  const apt::Package* found = nullptr;
  for (const auto& p : all) {
    if (p.name != dep.name || (p.architecture != arch && p.architecture != "all")) continue;
    if (!dep.satisfied_by(p.version)) continue;
    if (found == nullptr || apt::compare_versions(p.version, found->version) > 0) found = &p;
  }
  return found;
}

bool header_dependency(std::string_view name) {
  return name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-");
}

}  // namespace

Result<Answer> fetch_apt(Context& ctx) {
  const auto& cfg = ctx.config;
  const auto& kver = ctx.kernel_release;
  auto logger = log::get("init.apt");
  if (!ctx.os.id.empty() && !ctx.os.debian_family()) {
    return absent("the node runs " + ctx.os.describe() + ", not Debian or Ubuntu");
  }
  auto repos = cfg.repos;
  if (repos.empty()) repos = KK_TRY(apt::read_system_sources(cfg.apt_root));
  std::erase_if(repos, [&](const apt::Repo& r) {
    return !r.architectures.empty() &&
           std::find(r.architectures.begin(), r.architectures.end(), cfg.arch) == r.architectures.end();
  });
  if (repos.empty()) return absent("no apt repositories configured for " + cfg.arch);

  std::vector<apt::Package> all;
  std::vector<std::string> notes;
  for (const auto& repo : repos) {
    std::string note;
    auto pkgs = KK_TRY(load_suite(repo, cfg.arch, cfg.apt_root, cfg.http, &note));
    if (!note.empty()) notes.push_back(note);
    all.insert(all.end(), std::make_move_iterator(pkgs.begin()), std::make_move_iterator(pkgs.end()));
  }
  std::string searched = std::to_string(repos.size()) + " repositor" + (repos.size() == 1 ? "y" : "ies");
  for (const auto& n : notes) searched += "; " + n;

  const std::string headers_name = "linux-headers-" + kver;
  const apt::Package* top = best(all, apt::Dependency{headers_name, "", ""}, cfg.arch);
  if (top == nullptr) return absent(headers_name + " is in none of the indexes of " + searched);

  // The headers package and the header packages it depends on (Debian: -common and
  // linux-kbuild-X.Y; Ubuntu: the flavour-less headers), transitively.
  std::vector<const apt::Package*> chosen = {top};
  for (size_t i = 0; i < chosen.size(); ++i) {
    for (const auto& group : apt::parse_depends(chosen[i]->depends)) {
      const apt::Dependency* wanted_dep = nullptr;
      const apt::Package* pick = nullptr;
      for (const auto& alt : group) {
        if (!header_dependency(alt.name)) continue;
        wanted_dep = wanted_dep != nullptr ? wanted_dep : &alt;
        if ((pick = best(all, alt, cfg.arch)) != nullptr) break;
      }
      if (wanted_dep == nullptr) continue;
      if (pick == nullptr) {
        return absent(chosen[i]->name + " needs " + wanted_dep->name +
                      (wanted_dep->relation.empty() ? "" : " (" + wanted_dep->relation + " " + wanted_dep->version + ")") +
                      ", which no index has");
      }
      if (std::find(chosen.begin(), chosen.end(), pick) == chosen.end()) chosen.push_back(pick);
    }
  }

  auto host_modules = host_modules_tree(cfg, kver);
  if (!host_modules) {
    const apt::Package* modules_pkg = nullptr;
    for (const auto& name : {"linux-modules-" + kver, "linux-image-" + kver, "linux-image-" + kver + "-unsigned"}) {
      if ((modules_pkg = best(all, apt::Dependency{name, "", ""}, cfg.arch)) != nullptr) break;
    }
    if (modules_pkg != nullptr) {
      chosen.push_back(modules_pkg);
    } else {
      logger->warn("the host has no modules tree for {} and no index has its modules package: the volume gets headers only", kver);
    }
  }

  Answer answer;
  answer.location = top->repo;
  for (const auto* p : chosen) {
    answer.packages.push_back({p->name, p->version, p->sha256, p->url(), p->size});
  }
  if (cfg.dry_run) {
    answer.found = true;
    answer.reason = "would install";
    for (const auto& p : answer.packages) answer.reason += " " + p.name + " " + p.version + " (" + progress::format_bytes(p.size) + ")";
    if (host_modules) answer.reason += " and copy " + (cfg.host_root / *host_modules).string();
    return answer;
  }

  // Largest first, so the two cores finish together.
  auto order = answer.packages;
  std::sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.size > b.size; });
  auto extraction = KK_TRY(archive::Extraction::create(layout::policy(ctx.staged_root)));
  std::vector<ExtractTask> tasks;
  for (const auto& p : order) {
    tasks.emplace_back([&, p] {
      return fetch_and_extract(p.url, fs::path(p.url).filename().string(), p.sha256, *extraction, cfg.http);
    });
  }
  if (host_modules) tasks.emplace_back([&] { return copy_host_modules(cfg, *host_modules, kver, *extraction); });
  answer.stats += KK_TRY(extract_parallel(tasks, cfg.jobs));
  KK_TRY(extraction->finish());

  answer.headers = layout::find_headers(ctx.staged_root, kver);
  if (!answer.headers.complete()) {
    return absent("the packages of " + headers_name + " lack what a module build needs: " +
                  answer.headers.describe_missing());
  }
  answer.found = true;
  return answer;
}

// ---- archive -----------------------------------------------------------------------------

Result<Answer> fetch_archive(Context& ctx) {
  const auto& cfg = ctx.config;
  if (cfg.archives.empty()) return absent("no --archive given");
  Answer answer;
  for (const auto& a : cfg.archives) {
    answer.location += (answer.location.empty() ? "" : ", ") + http::redact(a.location);
    answer.packages.push_back({fs::path(a.location).filename().string(), "", digest::normalize_hex(a.sha256),
                               http::redact(a.location), 0});
  }
  if (cfg.dry_run) {
    answer.found = true;
    answer.reason = "would extract " + answer.location;
    return answer;
  }
  auto extraction = KK_TRY(archive::Extraction::create(layout::policy(ctx.staged_root)));
  std::vector<ExtractTask> tasks;
  for (const auto& a : cfg.archives) {
    tasks.emplace_back([&, a] {
      return fetch_and_extract(a.location, fs::path(a.location).filename().string(), a.sha256, *extraction, cfg.http);
    });
  }
  answer.stats += KK_TRY(extract_parallel(tasks, cfg.jobs));
  KK_TRY(extraction->finish());
  answer.headers = layout::find_headers(ctx.staged_root, ctx.kernel_release);
  if (!answer.headers.complete()) {
    return absent(answer.location + " lacks what a module build needs: " +
                  (answer.headers.dir.empty() ? "no headers for " + ctx.kernel_release
                                              : answer.headers.describe_missing()));
  }
  answer.found = true;
  return answer;
}

}  // namespace kmodkit::init
