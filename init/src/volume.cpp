#include "volume.hpp"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "kmodkit/log.hpp"

namespace kmodkit::init {

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
    if (j.value("format", 0) != kFormat) {
      return fail(ExitCode::data_err, origin + ": unknown manifest format " + j.value("format", nlohmann::json()).dump());
    }
    Manifest m;
    m.kernel_release = j.at("kernel_release").get<std::string>();
    m.os = j.value("os", "");
    m.source = j.value("source", "");
    m.location = j.value("location", "");
    m.headers = j.at("headers").get<std::string>();
    m.modules = j.value("modules", "");
    m.files = j.value("files", uint64_t{0});
    m.bytes = j.value("bytes", uint64_t{0});
    m.seconds = j.value("seconds", 0.0);
    m.created = j.value("created", "");
    for (const auto& p : j.value("packages", nlohmann::json::array())) {
      m.packages.push_back({p.value("name", ""), p.value("version", ""), p.value("sha256", ""),
                            p.value("url", ""), p.value("size", uint64_t{0})});
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    return fail(ExitCode::data_err, origin + ": not a kmodkit manifest: " + e.what());
  }
}

fs::path Volume::manifest_path(std::string_view kver) const {
  return state_dir() / "kernels" / (std::string(kver) + ".json");
}

std::optional<Manifest> Volume::complete_tree(std::string_view kver, std::string* why_not) const {
  auto set = [&](std::string s) {
    if (why_not != nullptr) *why_not = std::move(s);
    return std::nullopt;
  };
  const auto path = manifest_path(kver);
  auto text = files::read_file(path, 16 << 20);
  if (!text) return set(text.error().code == ExitCode::no_input ? "no manifest for " + std::string(kver) : text.error().message);
  auto m = Manifest::from_json(*text, path.string());
  if (!m) return set(m.error().message);
  if (m->kernel_release != kver) {
    return set(path.string() + " is for " + m->kernel_release + ", not " + std::string(kver));
  }
  struct stat st{};
  for (const auto& rel : {m->headers, m->modules}) {
    if (rel.empty()) continue;
    if (::stat((root_ / rel).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return set("manifest lists " + rel + ", which is missing from the volume");
    }
  }
  return std::move(*m);
}

Result<void> Volume::prepare() const {
  std::error_code ec;
  // The caller names the volume; these say what is wrong with it.
  if (!fs::is_directory(root_, ec)) {
    const bool exists = fs::exists(fs::symlink_status(root_, ec));
    return fail(ExitCode::cant_create, exists ? std::string("not a directory")
                                              : std::string("does not exist (mount the volume there, or create the directory)"));
  }
  KK_TRY(files::make_dirs(state_dir() / "kernels"));
  KK_TRY(files::make_dirs(staging_dir()));
  KK_TRY(files::make_dirs(root_ / "usr/lib/modules"));
  if (!fs::exists(root_ / "lib", ec) && !fs::is_symlink(root_ / "lib", ec)) {
    KK_TRY(files::replace_symlink("usr/lib", root_ / "lib"));
  }
  return {};
}

Result<files::FileLock> Volume::lock(std::chrono::milliseconds timeout) const {
  return files::FileLock::acquire(state_dir() / "lock", timeout);
}

Result<void> Volume::clear_staging() const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(staging_dir(), ec)) {
    log::get("init.volume")->info("removing {} left by an interrupted run", entry.path().string());
    KK_TRY(files::remove_tree(entry.path()));
  }
  return {};
}

namespace {

Result<void> place_dir(const fs::path& from, const fs::path& to, const std::string& rel,
                       std::vector<std::string>& placed) {
  std::error_code ec;
  bool renamed_here = false;
  for (const auto& entry : fs::directory_iterator(from, ec)) {
    const auto name = entry.path().filename();
    const fs::path dst = to / name;
    const std::string dst_rel = rel.empty() ? name.string() : rel + "/" + name.string();
    struct stat st{};
    if (::lstat(dst.c_str(), &st) != 0) {
      if (::rename(entry.path().c_str(), dst.c_str()) != 0) {
        return fail(files::errno_error("rename " + entry.path().string() + " to " + dst.string(), errno));
      }
      placed.push_back(dst_rel);
      renamed_here = true;
      continue;
    }
    if (S_ISDIR(st.st_mode) && entry.is_directory(ec) && !entry.is_symlink(ec)) {
      KK_TRY(place_dir(entry.path(), dst, dst_rel, placed));
    } else {
      log::get("init.volume")->debug("keeping {}: already in the volume", dst_rel);
    }
  }
  if (ec) return fail(files::errno_error("read " + from.string(), ec.value()));
  if (renamed_here) KK_TRY(files::fsync_path(to));
  return {};
}

}  // namespace

Result<std::vector<std::string>> Volume::place(const fs::path& staged_root) const {
  std::vector<std::string> placed;
  KK_TRY(place_dir(staged_root, root_, "", placed));
  return placed;
}

Result<void> Volume::write_manifest(const Manifest& manifest) const {
  KK_TRY(files::make_dirs(state_dir() / "kernels"));
  return files::write_file_atomic(manifest_path(manifest.kernel_release), manifest.to_json());
}

}  // namespace kmodkit::init
