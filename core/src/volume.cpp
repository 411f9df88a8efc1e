#include "kmodkit/volume.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

#include <nlohmann/json.hpp>

#include "kmodkit/archive.hpp"
#include "kmodkit/json.hpp"
#include "kmodkit/log.hpp"

namespace kmodkit::volume {

std::string modules_dir(std::string_view kernel_release) {
  return "usr/lib/modules/" + std::string(kernel_release);
}

Result<void> Volume::prepare() const { return files::make_dirs(staging_dir()); }

Result<files::FileLock> Volume::lock(std::chrono::milliseconds timeout) const {
  return files::FileLock::acquire(state_dir() / "lock", timeout);
}

Result<void> Volume::clear_staging() const {
  // Each entry is renamed aside before it is removed, so that it disappears at once: a process
  // still writing it (one that ignored the lock) finds its directory gone and says so, rather
  // than failing on whichever file the removal took first. A kill mid-removal leaves the
  // ".removing." name, which the next run removes.
  constexpr std::string_view aside = ".removing.";
  std::vector<fs::path> entries;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(staging_dir(), ec)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    fs::path doomed = path;
    if (!path.filename().string().starts_with(aside)) {
      log::get("volume")->info("removing {} left by an interrupted run", path.string());
      doomed = path.parent_path() / (std::string(aside) + path.filename().string());
      if (::rename(path.c_str(), doomed.c_str()) != 0) {
        if (errno == ENOENT) continue;
        return fail(files::errno_error("rename " + path.string() + " to " + doomed.string(), errno));
      }
    }
    KK_TRY(files::remove_tree_settled(doomed));
  }
  return {};
}

std::string Manifest::to_json() const {
  nlohmann::json pkgs = nlohmann::json::array();
  for (const auto& p : packages) {
    pkgs.push_back({{"name", p.name}, {"version", p.version}, {"sha256", p.sha256},
                    {"size", p.size}, {"url", p.url}});
  }
  nlohmann::json j = {
      {"format", kFormat},   {"kernel_release", kernel_release},
      {"os", os},            {"source", source},
      {"location", location}, {"packages", pkgs},
      {"headers", headers},  {"modules", modules},
      {"files", files},      {"bytes", bytes},
      {"seconds", seconds},  {"created", created},
      {"tool", "kmodkit " KMODKIT_VERSION},
  };
  // Paths, URLs and the names an index gives are bytes; the manifest records them for people,
  // so what is not UTF-8 is replaced rather than failing after the tree is in place.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Result<Manifest> Manifest::from_json(std::string_view text, const std::string& origin) {
  try {
    auto j = nlohmann::json::parse(text);
    if (json_field::integer(j, "format", 0) != kFormat) {
      return fail(ExitCode::data_err, origin + ": unknown manifest format " + j.value("format", nlohmann::json()).dump());
    }
    auto count = [&](const nlohmann::json& object, const char* key) -> Result<uint64_t> {
      if (auto n = json_field::integer(object, key, uint64_t{0})) return *n;
      return fail(ExitCode::data_err, origin + ": " + key + " is not a count: " + object[key].dump());
    };
    Manifest m;
    m.kernel_release = j.at("kernel_release").get<std::string>();
    m.os = j.value("os", "");
    m.source = j.value("source", "");
    m.location = j.value("location", "");
    m.headers = j.at("headers").get<std::string>();
    m.modules = j.value("modules", "");
    m.files = KK_TRY(count(j, "files"));
    m.bytes = KK_TRY(count(j, "bytes"));
    m.seconds = j.value("seconds", 0.0);
    m.created = j.value("created", "");
    for (const auto& p : j.value("packages", nlohmann::json::array())) {
      m.packages.push_back({p.value("name", ""), p.value("version", ""), p.value("sha256", ""),
                            p.value("url", ""), KK_TRY(count(p, "size"))});
    }
    // The trees it names are read as <volume>/<path>: a path that leaves the volume is refused.
    for (const auto& [field, rel] : {std::pair{"headers", &m.headers}, std::pair{"modules", &m.modules}}) {
      if (rel->empty() && field == std::string_view("modules")) continue;
      const fs::path path(*rel);
      const bool escapes = std::any_of(path.begin(), path.end(), [](const fs::path& part) { return part == ".."; });
      if (rel->empty() || path.is_absolute() || escapes || rel->find('\0') != std::string::npos) {
        return fail(ExitCode::data_err, origin + ": the " + field + " path '" + *rel + "' is not a path inside the volume");
      }
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    return fail(ExitCode::data_err, origin + ": not a kmodkit manifest: " + e.what());
  }
}

fs::path ModulesVolume::manifest_path(std::string_view kver) const {
  return state_dir() / "kernels" / (std::string(kver) + ".json");
}

std::optional<Manifest> ModulesVolume::complete_tree(std::string_view kver, std::string* why_not) const {
  auto found = find_tree(kver, why_not);
  if (found) return std::move(*found);
  if (why_not != nullptr) *why_not = found.error().message;
  return std::nullopt;
}

Result<std::optional<Manifest>> ModulesVolume::find_tree(std::string_view kver, std::string* why_not) const {
  auto set = [&](std::string s) {
    if (why_not != nullptr) *why_not = std::move(s);
    return std::optional<Manifest>{};
  };
  const auto path = manifest_path(kver);
  auto text = files::read_file(path, 16 << 20);
  if (!text && text.error().code == ExitCode::io_err) return fail(std::move(text).error());
  if (!text) return set(text.error().code == ExitCode::no_input ? "no manifest for " + std::string(kver) : text.error().message);
  auto m = Manifest::from_json(*text, path.string());
  if (!m) return set(m.error().message);
  if (m->kernel_release != kver) {
    return set(path.string() + " is for " + m->kernel_release + ", not " + std::string(kver));
  }
  struct stat st{};
  for (const auto& rel : {m->headers, m->modules}) {
    if (rel.empty()) continue;
    if (::stat((root() / rel).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return set("manifest lists " + rel + ", which is missing from the volume");
    }
  }
  return std::optional<Manifest>(std::move(*m));
}

fs::path ModulesVolume::current_link(std::string_view kver) const { return state_dir() / "kernels" / std::string(kver); }

std::string ModulesVolume::generation(std::string_view kver) const {
  std::error_code ec;
  const fs::path target = fs::read_symlink(current_link(kver), ec);
  return ec ? std::string() : target.filename().string();
}

Result<void> ModulesVolume::prepare() const {
  std::error_code ec;
  // The caller names the volume; these say what is wrong with it.
  if (!fs::is_directory(root(), ec)) {
    const bool exists = fs::exists(fs::symlink_status(root(), ec));
    return fail(ExitCode::cant_create, exists ? std::string("not a directory")
                                              : std::string("does not exist (mount the volume there, or create the directory)"));
  }
  KK_TRY(files::make_dirs(state_dir() / "kernels"));
  KK_TRY(Volume::prepare());
  KK_TRY(files::make_dirs(trees_dir()));
  KK_TRY(files::make_dirs(root() / "usr/lib/modules"));
  if (!fs::exists(root() / "lib", ec) && !fs::is_symlink(root() / "lib", ec)) {
    KK_TRY(files::replace_symlink("usr/lib", root() / "lib"));
  }
  return {};
}

Result<void> ModulesVolume::clear_staging() const {
  KK_TRY(Volume::clear_staging());
  return remove_unused_generations("left by an interrupted run");
}

Result<void> ModulesVolume::remove_unused_generations(std::string_view why) const {
  // The generations the releases' links name; a kernels/ that cannot be read removes nothing.
  std::set<std::string> used;
  KK_TRY(files::walk_tree(state_dir() / "kernels", [&](const files::WalkEntry& e) -> Result<void> {
    std::error_code ec;
    const fs::path target = S_ISLNK(e.st.st_mode) ? fs::read_symlink(e.path, ec) : fs::path();
    if (!ec && target.parent_path() == "../trees") used.insert(target.filename().string());
    return {};
  }));
  std::error_code ec;
  const auto now = std::chrono::system_clock::now();
  for (const auto& entry : fs::directory_iterator(trees_dir(), ec)) {
    if (used.contains(entry.path().filename().string())) continue;
    // A generation a publish replaced stays for a while (ARCHITECTURE.md, "The commit point").
    struct stat st{};
    if (::stat((entry.path() / kRetiredMarker).c_str(), &st) == 0) {
      const auto retired = std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec);
      if (now - retired < retired_grace) {
        log::get("volume")->debug("keeping {}: replaced {} s ago", entry.path().string(),
                                  std::chrono::duration_cast<std::chrono::seconds>(now - retired).count());
        continue;
      }
      log::get("volume")->info("removing {}, replaced more than {} s ago", entry.path().string(), retired_grace.count());
    } else {
      log::get("volume")->info("removing {} {}", entry.path().string(), why);
    }
    KK_TRY(files::remove_tree(entry.path()));
  }
  return {};
}

namespace {

// Creates or replaces the symlink `link` with one rename(). The new link is made in staging and
// renamed over, so a kill leaves nothing behind but staging (a temporary beside `link` would stay
// in the volume's public directories, and in kernels/ look like a release's link).
Result<void> swap_link(const fs::path& target, const fs::path& link, const fs::path& staging) {
  auto tmp = KK_TRY(files::StagingDir::create(staging, "link"));
  const fs::path made = tmp.path() / "link";
  if (::symlink(target.c_str(), made.c_str()) != 0) return fail(files::errno_error("symlink " + made.string(), errno));
  return files::rename_path(made, link);
}

// Makes root/rel a symlink with `target` text. A symlink there is replaced atomically; a
// directory (a tree an older layout placed there whole) is first moved into `displaced`, to be
// removed once the commit is done.
Result<void> link_public(const fs::path& root, const std::string& rel, const std::string& target,
                         const fs::path& staging, std::vector<files::StagingDir>& displaced) {
  const fs::path path = root / rel;
  std::error_code ec;
  if (fs::read_symlink(path, ec) == target && !ec) return {};
  KK_TRY(files::make_dirs(path.parent_path()));
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    log::get("volume")->info("{}: a directory from an older layout; moving it aside", rel);
    auto aside = KK_TRY(files::StagingDir::create(staging, "displaced"));
    KK_TRY(files::rename_path(path, aside.path() / "tree"));
    displaced.push_back(std::move(aside));
  }
  KK_TRY(swap_link(target, path, staging));
  return files::fsync_path(path.parent_path());
}

}  // namespace

Result<void> ModulesVolume::publish(const fs::path& staged, const Manifest& manifest) const {
  auto logger = log::get("volume");
  const std::string& kver = manifest.kernel_release;
  KK_TRY(files::write_file_atomic(staged / "manifest.json", manifest.to_json()));
  // One syncfs makes the whole generation durable before anything leads to it.
  KK_TRY(files::sync_filesystem(staged));
  const std::string name = staged.filename().string();
  KK_TRY(files::rename_durable(staged, trees_dir() / name));

  std::error_code ec;
  const fs::path extra = root() / modules_dir(kver) / "extra";
  const bool had_extra = fs::is_directory(extra, ec) && !fs::is_empty(extra, ec);

  // The public paths: links that lead through the commit link, so they change with it. Made
  // before the commit (dangling on a first publish, where they resolve to nothing); the manifest's
  // first, so a tree an older layout left stops being trusted before its directories move.
  const std::string current = ".kmodkit/kernels/" + kver;
  std::vector<files::StagingDir> displaced;
  KK_TRY(link_public(root(), current + ".json", kver + "/manifest.json", staging_dir(), displaced));
  std::vector<std::string> publics = {modules_dir(kver)};
  const auto inside = [](const std::string& p, const std::string& dir) { return p == dir || p.starts_with(dir + "/"); };
  if (!manifest.headers.empty() && !inside(manifest.headers, publics.front())) publics.push_back(manifest.headers);
  for (const auto& rel : publics) {
    KK_TRY(link_public(root(), rel, archive::relative_link(rel, current + "/root/" + rel), staging_dir(), displaced));
  }

  // The generation this one replaces is marked before the commit, so that a kill right after it
  // does not leave it looking like an unpublished leftover, and again after it with the time it
  // stopped being current.
  const std::string replaced = generation(kver);
  const fs::path marker = replaced.empty() || replaced == name ? fs::path() : trees_dir() / replaced / kRetiredMarker;
  if (!marker.empty() && fs::is_directory(marker.parent_path(), ec)) {
    KK_TRY(files::write_file_atomic(marker, "replaced by " + name + "\n"));
  }

  // The commit point: one rename() of the release's link.
  KK_TRY(swap_link(fs::path("../trees") / name, current_link(kver), staging_dir()));
  KK_TRY(files::fsync_path(state_dir() / "kernels"));
  logger->debug("{} now leads to {}", current, name);

  if (had_extra) {
    logger->info("the tree it replaced held modules kmod-builder installed (extra/); its next run installs them again");
  }
  displaced.clear();
  // Not removed now: a lookup through the public links that read the commit link before the
  // rename may still be walking into the replaced generation. The first locked run (or gc) after
  // retired_grace removes it.
  if (!marker.empty()) {
    ::utimensat(AT_FDCWD, marker.c_str(), nullptr, 0);  // if it fails, the time set before the commit stands
    logger->info("the tree it replaced ({}) stays {} s for readers still on it; a locked run after that removes it", replaced,
                 retired_grace.count());
  }
  return {};
}

}  // namespace kmodkit::volume
