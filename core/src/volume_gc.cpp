// The modules volume's use records and its collection of kernel trees no pod uses any more
// (docs/ARCHITECTURE.md, "Kernel upgrades").
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>

#include <nlohmann/json.hpp>

#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::volume {
namespace {

using system_clock = std::chrono::system_clock;

system_clock::time_point from_timespec(const struct timespec& ts) {
  return system_clock::time_point(std::chrono::duration_cast<system_clock::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

// A manifest's "created" (text::utc_now_rfc3339's format); nullopt when it is not that.
std::optional<system_clock::time_point> parse_rfc3339(const std::string& text) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return system_clock::from_time_t(::timegm(&tm));
}

std::string utc_text(system_clock::time_point t) {
  const std::time_t tt = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double days(system_clock::duration d) { return std::chrono::duration<double>(d).count() / 86400.0; }

// A name that can only be a release: the names gc joins to paths come from files on the volume.
bool release_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\0') == std::string::npos;
}

// The image blobs of the oci source whose last use (mtime) is before `cutoff`, and the
// .partial files of a pull that was killed (pulls write them under the lock gc holds).
Result<void> collect_blobs(const ModulesVolume& volume, const GcPolicy& policy, system_clock::time_point cutoff,
                           GcReport& report) {
  const bool dry = policy.mode == GcMode::dry_run;
  std::error_code ec;
  uint64_t bytes = 0;
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(volume.blobs_dir(), ec)) {
    struct stat st{};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    const bool partial = e.path().filename().string().ends_with(".partial");
    if (!partial && from_timespec(st.st_mtim) >= cutoff) continue;
    if (partial && dry) continue;  // a pull may be writing it: only under the lock is it a leftover
    if (!dry && ::unlink(e.path().c_str()) != 0 && errno != ENOENT) {
      return fail(files::errno_error("remove " + e.path().string(), errno, ExitCode::cant_create));
    }
    if (!partial) ++n;
    bytes += static_cast<uint64_t>(st.st_size);
  }
  if (n > 0 || bytes > 0) {
    log::get("gc")->info("{} {} image blob{} not used for {} days: {} {}", dry ? "dry run: would remove" : "removed", n,
                         n == 1 ? "" : "s", std::chrono::duration_cast<std::chrono::hours>(policy.keep_unused).count() / 24,
                         progress::format_bytes(bytes), dry ? "would be freed" : "freed");
  }
  report.blobs += n;
  report.bytes += bytes;
  return {};
}

// Everything gc knows of one release.
struct Release {
  bool tree = false;                         // its commit link, manifest or public modules path is there
  std::optional<Manifest> manifest;          // readable, even when the tree is not complete
  std::optional<system_clock::time_point> last_use;
  std::string last_use_from;                 // "use record", "manifest", "cache entry"
  std::vector<fs::path> cache_entries;
};

uint64_t bytes_below(const fs::path& dir) {
  uint64_t bytes = 0;
  (void)files::walk_tree(dir, [&](const files::WalkEntry& e) -> Result<void> {
    if (S_ISREG(e.st.st_mode)) bytes += static_cast<uint64_t>(e.st.st_size);
    return {};
  });
  return bytes;
}

bool present(const fs::path& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}

}  // namespace

fs::path ModulesVolume::use_record(std::string_view kver) const { return state_dir() / "used" / std::string(kver); }

Result<TreeUse> ModulesVolume::use(std::string_view kver) const {
  if (!release_name(std::string(kver))) {
    return fail(ExitCode::usage, "kernel release '" + std::string(kver) + "' is not a valid release name");
  }
  const fs::path dir = state_dir() / "used";
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    // No .kmodkit (nothing was laid out here yet), or a read-only volume without records: nothing
    // gc could take away, or nothing to hold.
    if (errno == ENOENT || errno == EROFS) return TreeUse();
    return fail(files::errno_error("mkdir " + dir.string(), errno));
  }
  const fs::path path = use_record(kver);
  for (;;) {
    // A volume mounted read-only (kmod-builder load's) is held without recording a time: the
    // runs before it, which write the volume, recorded it.
    int raw = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    const bool read_only = raw < 0 && errno == EROFS;
    if (read_only) raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (raw < 0) {
      if (read_only && errno == ENOENT) return TreeUse();
      return fail(files::errno_error(path.string(), errno));
    }
    files::Fd fd(raw);
    if (::flock(fd.get(), LOCK_SH) != 0) {
      if (errno == EINTR) continue;
      return fail(files::errno_error("lock " + path.string(), errno, ExitCode::temp_fail));
    }
    // gc unlinks the record of a release it removed while it holds it exclusively; a hold on
    // that unlinked file would hold nothing, so the new record is taken instead.
    struct stat held{}, now{};
    if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      // Setting the time needs no lock: it is one inode update, never seen half done.
      if (!read_only && ::futimens(fd.get(), nullptr) != 0) return fail(files::errno_error("touch " + path.string(), errno));
      return TreeUse(std::move(fd));
    }
  }
}

Result<GcReport> ModulesVolume::collect_unused(const GcPolicy& policy) const {
  auto logger = log::get("gc");
  const bool dry = policy.mode == GcMode::dry_run;
  const auto now = system_clock::now();
  const auto cutoff = now - policy.keep_unused;
  std::map<std::string, Release> releases;
  std::error_code ec;

  // The releases the volume knows: kernels/<kver> and kernels/<kver>.json, use records, and the
  // release each cache entry was built for.
  for (const auto& e : fs::directory_iterator(state_dir() / "kernels", ec)) {
    std::string name = e.path().filename().string();
    if (name.ends_with(".json")) name.resize(name.size() - 5);
    if (release_name(name)) releases[name].tree = true;
  }
  for (const auto& e : fs::directory_iterator(state_dir() / "used", ec)) {
    const std::string name = e.path().filename().string();
    if (release_name(name)) releases[name];
  }
  for (const auto& e : fs::directory_iterator(state_dir() / "cache", ec)) {
    auto text = files::read_file(e.path() / "entry.json", 16 << 20);
    if (!text) continue;  // an entry a kill left without entry.json: kmod-builder replaces it
    const auto j = nlohmann::json::parse(*text, nullptr, false);
    if (!j.is_object() || !j.contains("kernel_release") || !j["kernel_release"].is_string()) continue;
    const std::string name = j["kernel_release"].get<std::string>();
    if (release_name(name)) releases[name].cache_entries.push_back(e.path());
  }

  GcReport report;
  for (auto& [kver, r] : releases) {
    r.tree = r.tree || present(root() / modules_dir(kver));
    if (auto text = files::read_file(manifest_path(kver), 16 << 20)) {
      if (auto m = Manifest::from_json(*text, manifest_path(kver).string())) r.manifest = std::move(*m);
    }
    struct stat st{};
    if (::stat(use_record(kver).c_str(), &st) == 0) {
      r.last_use = from_timespec(st.st_mtim);
      r.last_use_from = "use record";
    } else if (r.manifest && parse_rfc3339(r.manifest->created)) {
      r.last_use = parse_rfc3339(r.manifest->created);
      r.last_use_from = "manifest";
    } else {
      for (const auto& entry : r.cache_entries) {
        if (::stat((entry / "entry.json").c_str(), &st) != 0) continue;
        const auto t = from_timespec(st.st_mtim);
        if (!r.last_use || t > *r.last_use) r.last_use = t;
        r.last_use_from = "cache entry";
      }
    }
    const std::string used = r.last_use ? "last used " + utc_text(*r.last_use) + ", " +
                                              fmt::format("{:.1f}", days(now - *r.last_use)) + " days ago (" + r.last_use_from + ")"
                                        : "no record of any use";
    if (kver == policy.current_release) {
      logger->info("keeping kernel {}: this run serves it", kver);
      ++report.kept;
      continue;
    }
    if (r.last_use && *r.last_use >= cutoff) {
      logger->info("keeping kernel {}: {}", kver, used);
      ++report.kept;
      continue;
    }

    // A process that holds the release's use record is using the tree now, whatever its age.
    files::Fd hold;
    const bool had_record = r.last_use_from == "use record";
    if (!dry || had_record) {
      if (!dry) KK_TRY(files::make_dirs(state_dir() / "used"));
      auto fd = KK_TRY(files::open_file(use_record(kver), dry ? O_RDONLY : O_RDWR | O_CREAT, 0644));
      if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        logger->info("keeping kernel {}: a process is using it now ({})", kver, used);
        ++report.kept;
        continue;
      }
      // A process may have used the tree, and let go of it, since its time was read above.
      if (had_record && ::fstat(fd.get(), &st) == 0 && from_timespec(st.st_mtim) >= cutoff) {
        logger->info("keeping kernel {}: used while this run looked at it", kver);
        ++report.kept;
        continue;
      }
      hold = std::move(fd);
    }

    uint64_t bytes = 0;
    std::optional<files::StagingDir> aside;
    size_t n = 0;
    // Moves a path of the release into staging, or (dry run) measures it where it is.
    auto take = [&](const fs::path& p) -> Result<void> {
      if (!present(p)) return {};
      if (dry) {
        struct stat pst{};
        if (::lstat(p.c_str(), &pst) == 0 && S_ISDIR(pst.st_mode)) bytes += bytes_below(p);
        return {};
      }
      if (!aside) aside.emplace(KK_TRY(files::StagingDir::create(staging_dir(), "gc." + kver)));
      return files::rename_path(p, aside->path() / std::to_string(n++));
    };
    const fs::path generation_dir = [&] {
      const std::string g = generation(kver);
      return g.empty() ? fs::path() : trees_dir() / g;
    }();
    // The commit link first: after this one rename the manifest path leads nowhere, so no
    // reader trusts what is left, and the generation is no release's, so a kill from here on
    // leaves what the next clear_staging() removes and links the next gc removes.
    KK_TRY(take(current_link(kver)));
    if (!dry) KK_TRY(files::fsync_path(state_dir() / "kernels"));
    if (!generation_dir.empty()) KK_TRY(take(generation_dir));
    KK_TRY(take(manifest_path(kver)));
    KK_TRY(take(root() / modules_dir(kver)));
    // The headers' public path: the manifest's, or (when a kill took the manifest away) the
    // links in the usual places that lead through the release's commit link.
    std::vector<fs::path> headers;
    if (r.manifest && !r.manifest->headers.empty()) headers.push_back(root() / r.manifest->headers);
    const std::string through = ".kmodkit/kernels/" + kver + "/";
    for (const auto& dir : {root() / "usr/src", root() / "usr/src/kernels"}) {
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        const auto target = fs::read_symlink(e.path(), ec).string();
        if (!ec && target.find(through) != std::string::npos) headers.push_back(e.path());
      }
    }
    for (const auto& h : headers) {
      if (h.string().starts_with((root() / modules_dir(kver)).string() + "/")) continue;
      KK_TRY(take(h));
    }
    // kmod-builder's: what it built for the release, its install records and build logs.
    for (const auto& entry : r.cache_entries) KK_TRY(take(entry));
    KK_TRY(take(state_dir() / "modules" / kver));
    KK_TRY(take(state_dir() / "logs" / kver));
    if (!dry) {
      if (aside) bytes = bytes_below(aside->path());
      // Unlinked while held: a process waiting to use the release takes a new record, and finds
      // no tree.
      if (::unlink(use_record(kver).c_str()) != 0 && errno != ENOENT) {
        return fail(files::errno_error("remove " + use_record(kver).string(), errno));
      }
      hold = files::Fd();
      if (aside) {
        KK_TRY(files::remove_tree(aside->path()));
        aside->keep();
      }
    }
    std::string parts = r.tree ? "tree" : "no tree left";
    if (!r.cache_entries.empty()) {
      parts += fmt::format(", {} cache entr{}", r.cache_entries.size(), r.cache_entries.size() == 1 ? "y" : "ies");
    }
    logger->info("{} kernel {} ({}): {}; {} {}", dry ? "dry run: would remove" : "removed", kver, parts, used,
                 progress::format_bytes(bytes), dry ? "would be freed" : "freed");
    ++report.removed;
    report.bytes += bytes;
  }
  KK_TRY(collect_blobs(*this, policy, cutoff, report));
  return report;
}

}  // namespace kmodkit::volume
