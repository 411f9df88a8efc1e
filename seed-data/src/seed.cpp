#include "seed.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "kmodkit/archive.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/json.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::seed {
namespace {

using json = nlohmann::json;
using clock = std::chrono::steady_clock;
constexpr int kFormat = 1;
constexpr std::string_view kNewSuffix = ".kmodkit-new";
constexpr std::string_view kOldSuffix = ".kmodkit-old";
// seed.json's next version, written in the staging directory: no tree's path starts with .kmodkit.
constexpr const char* kStagedManifest = ".kmodkit-seed.json";

// A file or symlink of an image tree, named by its path in the data volume.
struct Source {
  std::string rel;
  std::string path;  // in the image
  bool symlink = false;
  std::string target;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  mode_t mode = 0;
};

int64_t mtime_of(const struct stat& st) { return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec; }

fs::path manifest_path(const Config& c) { return volume::Volume(c.data).state_dir() / "seed.json"; }

std::string json_trees(const std::vector<Tree>& trees) {
  json t = json::array();
  for (const auto& tr : trees) t.push_back({{"from", tr.from.string()}, {"to", tr.to}});
  return t.dump();
}

Error corrupt_manifest(const std::string& origin, const std::string& why) {
  return Error{ExitCode::data_err, origin + " is corrupt or was edited by hand (" + why +
                                       "); seed-data will not guess what the operator changed: fix or remove it, or run "
                                       "with --mode force"};
}

// The fields of a parsed seed.json read from `origin`. Throws json::exception for a field of the
// wrong type.
Result<Manifest> manifest_fields(const json& j, const std::string& origin) {
  auto corrupt = [&](const std::string& why) { return fail(corrupt_manifest(origin, why)); };
  if (json_field::integer(j, "format", 0) != kFormat) return corrupt("unknown format");
  if (!j.contains("files") || !j["files"].is_object() || !j.contains("trees") || !j["trees"].is_array()) {
    return corrupt("no files or trees");
  }
  Manifest m;
  m.image_version = j.value("image_version", "");
  m.fingerprint = j.value("fingerprint", "");
  for (const auto& t : j["trees"]) m.trees.push_back({t.value("from", ""), t.value("to", "")});
  for (auto it = j["files"].begin(); it != j["files"].end(); ++it) {
    const auto& f = it.value();
    if (!f.is_object() || !f.contains("sha256")) return corrupt("entry " + it.key() + " has no sha256");
    Record r;
    r.symlink = f.value("type", "file") == "symlink";
    r.sha256 = f.value("sha256", "");
    if (!r.symlink && !digest::is_sha256_hex(r.sha256)) return corrupt("entry " + it.key() + " has a malformed sha256");
    const auto size = json_field::integer(f, "size", uint64_t{0});
    const auto mtime = json_field::integer(f, "mtime", int64_t{0});
    const auto vsize = json_field::integer(f, "vsize", uint64_t{0});
    const auto vmtime = json_field::integer(f, "vmtime", int64_t{0});
    if (!size || !mtime || !vsize || !vmtime) return corrupt("entry " + it.key() + " has a size or time that is not an integer");
    r.size = *size;
    r.mtime_ns = *mtime;
    r.vsize = *vsize;
    r.vmtime_ns = *vmtime;
    m.files.emplace(it.key(), r);
  }
  return m;
}

}  // namespace

Result<Manifest> parse_manifest(std::string_view text, const std::string& origin) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(corrupt_manifest(origin, "not JSON"));
  try {
    return manifest_fields(j, origin);
  } catch (const json::exception& e) {  // a field of the wrong type
    std::string why = e.what();
    if (auto at = why.find("] "); at != std::string::npos) why.erase(0, at + 2);
    return fail(corrupt_manifest(origin, why));
  }
}

std::string manifest_json(const Manifest& m) {
  json j;
  j["format"] = kFormat;
  j["image_version"] = m.image_version;
  j["fingerprint"] = m.fingerprint;
  j["trees"] = json::parse(json_trees(m.trees));
  // The files object is written a line per file, its strings escaped by the library: building
  // it as 10,000 nested json values took most of a first seed's manifest time.
  std::string out = j.dump(1);
  out.resize(out.size() - 2);  // the closing "\n}"
  out += ",\n \"files\": {";
  const char* sep = "\n  ";
  for (const auto& [rel, r] : m.files) {
    out += sep;
    sep = ",\n  ";
    out += json(rel).dump();
    out += ": {\"mtime\": " + std::to_string(r.mtime_ns) + ", \"sha256\": " + json(r.sha256).dump() +
           ", \"size\": " + std::to_string(r.size) + ", \"type\": \"" + (r.symlink ? "symlink" : "file") +
           "\", \"vmtime\": " + std::to_string(r.vmtime_ns) + ", \"vsize\": " + std::to_string(r.vsize) + "}";
  }
  out += m.files.empty() ? "}\n}\n" : "\n }\n}\n";
  return out;
}

namespace {

Result<std::optional<Manifest>> read_manifest(const Config& c) {
  auto text = files::read_file(manifest_path(c), 1 << 30);
  if (!text) {
    if (text.error().code == ExitCode::no_input) return std::optional<Manifest>{};
    return fail(text.error());
  }
  return std::optional<Manifest>(KK_TRY(parse_manifest(*text, manifest_path(c).string())));
}


// Whether a file name can be a key of seed.json (JSON text is UTF-8; a file name is bytes).
bool is_utf8(std::string_view name) {
  try {
    (void)json(name).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

// Lists a tree: files and symlinks (directories are made as needed); device nodes, sockets and
// FIFOs are skipped with a warning. The walk's order is the fingerprint's.
Result<std::vector<Source>> scan(const Tree& tree, size_t* skipped) {
  std::vector<Source> out;
  std::error_code ec;
  const auto st = fs::status(tree.from, ec);
  if (ec || !fs::is_directory(st)) {
    return fail(ExitCode::no_input, "default tree " + tree.from.string() + " is missing or not a directory");
  }
  auto walked = files::walk_tree(tree.from, [&](const files::WalkEntry& e) -> Result<void> {
    if (S_ISDIR(e.st.st_mode)) return {};
    if (!is_utf8(e.name)) {
      return fail(ExitCode::data_err, "the name of " + e.path + " is not UTF-8, which seed.json cannot record; rename it in the image");
    }
    Source s;
    s.size = static_cast<uint64_t>(e.st.st_size);
    s.mtime_ns = mtime_of(e.st);
    s.mode = e.st.st_mode;
    if (S_ISLNK(e.st.st_mode)) {
      s.symlink = true;
      std::string target(static_cast<size_t>(e.st.st_size) + 1, '\0');
      const ssize_t n = ::readlinkat(e.dir_fd, e.name, target.data(), target.size());
      if (n < 0) return fail(files::errno_error(e.path, errno, ExitCode::no_input));
      target.resize(static_cast<size_t>(n));
      if (!is_utf8(target)) {
        return fail(ExitCode::data_err, "the target of the symlink " + e.path +
                                            " is not UTF-8, which seed.json cannot record; change it in the image");
      }
      s.target = std::move(target);
    } else if (!S_ISREG(e.st.st_mode)) {
      log::get("seed-data")->warn("skipping {}: device nodes, sockets and FIFOs are not seeded", e.path);
      ++*skipped;
      return {};
    } else if (::faccessat(e.dir_fd, e.name, R_OK, 0) != 0) {
      return fail(ExitCode::no_input, "default file " + e.path + " cannot be read");
    }
    s.path = e.path;
    s.rel = tree.to + "/" + e.rel;  // parse_tree() normalised it
    out.push_back(std::move(s));
    return {};
  });
  if (!walked) return fail(std::move(walked).error().context("default tree"));
  return out;
}

std::string fingerprint(const std::vector<Tree>& trees, const std::vector<Source>& sources) {
  digest::Sha256 h;
  h.update(json_trees(trees) + "\n");
  for (const auto& s : sources) {
    h.update(s.rel + "|" + (s.symlink ? "l|" + s.target : "f") + "|" + std::to_string(s.size) + "|" +
             std::to_string(s.mtime_ns) + "|" + std::to_string(s.mode) + "\n");
  }
  return h.hex();
}

// The digest of a volume file ("" when it is missing, "?" when it is not a file or a symlink),
// or a symlink's target. A file that cannot be read fails the merge: what the operator did to it
// cannot be told.
Result<std::string> volume_digest(const fs::path& p, bool* is_link) {
  std::error_code ec;
  const auto st = fs::symlink_status(p, ec);
  *is_link = fs::is_symlink(st);
  if (ec || !fs::exists(st)) return "";
  if (*is_link) return fs::read_symlink(p, ec).string();
  if (!fs::is_regular_file(st)) return "?";
  return digest::sha256_file(p);
}

enum class Action { add, update, keep, unchanged, conflict, replace };

struct Step {
  const Source* src;
  Action action;
  std::string sha256;  // the image's
};

Result<void> apply_owner(const Config& c, const fs::path& p) {
  if (!c.uid && !c.gid) return {};
  if (::lchown(p.c_str(), c.uid ? *c.uid : static_cast<uid_t>(-1), c.gid ? *c.gid : static_cast<gid_t>(-1)) != 0) {
    return fail(files::errno_error("chown " + p.string(), errno));
  }
  return {};
}

Result<void> chown_tree(const Config& c, const fs::path& root) {
  if (!c.uid && !c.gid) return {};
  KK_TRY(apply_owner(c, root));
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) KK_TRY(apply_owner(c, it->path()));
  if (ec) return fail(files::errno_error("chown " + root.string(), ec.value()));
  return {};
}

// Makes the parents of a volume path, with the modes of the image's directories.
Result<void> make_parents(const Config& c, const Source& s) {
  const fs::path parent = (c.data / s.rel).parent_path();
  std::error_code ec;
  if (fs::is_directory(parent, ec)) return {};
  KK_TRY(files::make_dirs(parent));
  fs::permissions(parent, fs::status(fs::path(s.path).parent_path(), ec).permissions(), ec);
  return apply_owner(c, parent);
}

// The operator may replace a directory of the defaults with a symlink (to a Secret's mount, to
// another volume) or with a file. seed-data never writes through such a path: what lies below it
// is the operator's. For a relative path, says which of its parent directories on the volume is
// not a real directory ("etc/app/certs is a symlink"), or "" when each one is, or is not there
// yet. Each directory is looked at once.
class Diversions {
 public:
  explicit Diversions(fs::path data) : data_(std::move(data)) {}

  std::string of(std::string_view rel) {
    for (size_t slash = rel.find('/'); slash != std::string_view::npos; slash = rel.find('/', slash + 1)) {
      const std::string dir(rel.substr(0, slash));
      auto [it, fresh] = seen_.try_emplace(dir);
      if (fresh) it->second = look_at(dir);
      if (!it->second) return "";  // not there: nor is anything below it
      if (!it->second->empty()) return *it->second;
    }
    return "";
  }

 private:
  // nullopt when the directory is not there, "" when it is a real one, else what it is.
  std::optional<std::string> look_at(const std::string& dir) const {
    struct stat st{};
    if (::lstat((data_ / dir).c_str(), &st) != 0) return std::nullopt;
    if (S_ISLNK(st.st_mode)) return dir + " is a symlink on the volume";
    if (!S_ISDIR(st.st_mode)) return dir + " is not a directory on the volume";
    return std::string();
  }

  fs::path data_;
  std::map<std::string, std::optional<std::string>> seen_;
};

Result<std::vector<std::string>> hash_sources(const std::vector<const Source*>& todo) {
  std::vector<std::string> out(todo.size());
  const size_t workers = std::min<size_t>(2, std::max<size_t>(1, todo.size()));
  std::vector<std::future<Result<void>>> jobs;
  for (size_t w = 0; w < workers; ++w) {
    jobs.push_back(std::async(std::launch::async, [&, w]() -> Result<void> {
      for (size_t i = w; i < todo.size(); i += workers) {
        out[i] = todo[i]->symlink ? todo[i]->target : KK_TRY(digest::sha256_file(todo[i]->path));
      }
      return {};
    }));
  }
  for (auto& j : jobs) KK_TRY(j.get());
  return out;
}

}  // namespace

Result<Tree> parse_tree(const std::string& text) {
  const auto eq = text.find('=');
  Tree t;
  t.from = text.substr(0, eq);
  t.to = eq == std::string::npos ? t.from.relative_path().string() : text.substr(eq + 1);
  while (!t.to.empty() && t.to.front() == '/') t.to.erase(0, 1);
  const auto norm = archive::normalize_relative(t.to);
  if (t.from.empty() || !t.from.is_absolute() || !norm || norm->empty() || norm->starts_with(".kmodkit")) {
    return fail(ExitCode::usage, "--tree: '" + text + "' is not ABSOLUTE_IMAGE_PATH[=PATH_IN_VOLUME] (inside the volume, not .kmodkit)");
  }
  if (!is_utf8(text)) return fail(ExitCode::usage, "--tree: '" + text + "' is not UTF-8, which seed.json cannot record");
  t.to = *norm;
  return t;
}

Result<void> read_config_file(const fs::path& file, Config& c) {
  return parse_config(KK_TRY(files::read_file(file, 1 << 20)), file.string(), c);
}

Result<void> parse_config(std::string_view text, const std::string& origin, Config& c) {
  const std::string form = "{\"trees\": [{\"from\": PATH, \"to\": DEST} or \"PATH[=DEST]\", ...], \"image_version\": V}";
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number too large for a double (out_of_range)
    std::string why = e.what();
    if (auto at = why.find("] "); at != std::string::npos) why.erase(0, at + 2);  // "[json.exception...] "
    return fail(ExitCode::config, origin + ": not JSON: " + why);
  }
  if (!j.is_object() || !j.contains("trees") || !j["trees"].is_array()) {
    return fail(ExitCode::config, origin + ": not a seed-data config " + form);
  }
  for (size_t i = 0; i < j["trees"].size(); ++i) {
    const json& t = j["trees"][i];
    auto is_text = [&](const char* key) { return t.contains(key) && t[key].is_string(); };
    std::string spec;
    if (t.is_string()) {
      spec = t.get<std::string>();
    } else if (t.is_object() && is_text("from") && (!t.contains("to") || is_text("to"))) {
      spec = t["from"].get<std::string>() + (t.contains("to") ? "=" + t["to"].get<std::string>() : "");
    } else {
      return fail(ExitCode::config, origin + ": trees[" + std::to_string(i) + "] is not " +
                                        "{\"from\": PATH, \"to\": DEST} or \"PATH[=DEST]\": " + t.dump());
    }
    c.trees.push_back(KK_TRY_CTX(parse_tree(spec), origin));
  }
  if (j.contains("image_version") && c.image_version.empty()) {
    const json& v = j["image_version"];
    if (v.is_string()) {
      c.image_version = v.get<std::string>();
    } else if (v.is_number()) {
      c.image_version = v.dump();
    } else {
      return fail(ExitCode::config, origin + ": image_version is not a string or a number: " + v.dump());
    }
  }
  return {};
}

// A failure while the staging copy was written, told in the volume's terms. The staging copy
// has been removed by then (`leftover` is where it was), so nothing on the volume changed; when
// the volume lacks room for the seed, the message says how much it needs and how much is free.
Error staging_failed(const Config& c, const std::vector<Step>& steps, const fs::path& leftover, Error cause) {
  if (cause.code != ExitCode::cant_create) return cause;
  std::error_code ec;
  if (fs::exists(leftover, ec) || !fs::is_empty(leftover.parent_path(), ec)) {
    return cause.context("the staging copy " + leftover.string() + " could not be removed");
  }
  struct statvfs vfs{};
  if (::statvfs(c.data.c_str(), &vfs) != 0 || (vfs.f_flag & ST_RDONLY) != 0) {
    return Error{cause.code, cause.message + "; nothing on the volume changed"};
  }
  // What the staging copy takes: each file's content in whole blocks, an inode for each file
  // and directory, a block for each directory.
  const uint64_t block = vfs.f_frsize != 0 ? vfs.f_frsize : 4096;
  uint64_t bytes = 0, inodes = 0;
  std::set<std::string_view> dirs;
  for (const auto& st : steps) {
    if (st.action == Action::keep || st.action == Action::unchanged) continue;
    ++inodes;
    if (!st.src->symlink) bytes += (st.src->size + block - 1) / block * block;
    const std::string_view rel = st.src->rel;
    for (size_t slash = rel.find('/'); slash != std::string_view::npos; slash = rel.find('/', slash + 1)) {
      if (dirs.insert(rel.substr(0, slash)).second) {
        ++inodes;
        bytes += block;
      }
    }
  }
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  const uint64_t free_inodes = vfs.f_favail;
  std::string lacks;
  if (bytes > free_bytes) {
    lacks = "it needs " + std::to_string(bytes) + " bytes (" + progress::format_bytes(bytes) + "), " +
            std::to_string(free_bytes) + " are free (" + progress::format_bytes(free_bytes) + ")";
  } else if (vfs.f_files != 0 && inodes > free_inodes) {  // f_files 0: no fixed number of inodes
    lacks = "it needs " + std::to_string(inodes) + " inodes, " + std::to_string(free_inodes) + " are free";
  }
  if (lacks.empty()) return Error{cause.code, cause.message + "; nothing on the volume changed"};
  return Error{cause.code, "the volume " + c.data.string() + " has no room for this seed: " + lacks +
                               "; nothing on the volume changed (" + cause.message + ")"};
}

Result<Outcome> run(const Config& c) {
  const auto start = clock::now();
  auto logger = log::get("seed-data");
  if (c.trees.empty()) return fail(ExitCode::usage, "no trees to seed: give --tree IMAGE_PATH[=PATH] or --config FILE");
  for (size_t i = 0; i < c.trees.size(); ++i) {
    for (size_t j = 0; j < c.trees.size(); ++j) {
      if (i != j && (c.trees[i].to == c.trees[j].to || c.trees[i].to.starts_with(c.trees[j].to + "/"))) {
        return fail(ExitCode::usage, "trees overlap in the volume: " + c.trees[i].to + " and " + c.trees[j].to);
      }
    }
  }
  std::error_code ec;
  if (!fs::is_directory(c.data, ec)) return fail(ExitCode::cant_create, "data volume " + c.data.string() + " is not a directory");

  // The image's trees: a stat of every entry, no reading (the unchanged restart stops here).
  std::vector<Source> sources;
  Outcome out;
  for (const auto& t : c.trees) {
    auto s = KK_TRY(scan(t, &out.skipped));
    sources.insert(sources.end(), std::make_move_iterator(s.begin()), std::make_move_iterator(s.end()));
  }
  std::sort(sources.begin(), sources.end(), [](const Source& a, const Source& b) { return a.rel < b.rel; });
  const std::string print = fingerprint(c.trees, sources);

  // seed.json is read twice, before and after the lock; --mode force's warning about a corrupt
  // one is given once, for the read the run goes on with.
  std::optional<std::string> forced;
  auto check_manifest = [&]() -> Result<std::optional<Manifest>> {
    auto m = read_manifest(c);
    forced.reset();
    if (!m && c.mode == Mode::force) {
      forced = m.error().message;
      return std::optional<Manifest>{};
    }
    return m;
  };
  auto up_to_date = [&](const std::optional<Manifest>& m) {
    if (!m) return false;
    if (c.mode == Mode::once) return true;
    return c.mode != Mode::force && m->fingerprint == print && m->image_version == c.image_version &&
           json_trees(m->trees) == json_trees(c.trees);
  };
  auto old = KK_TRY(check_manifest());
  if (up_to_date(old)) {
    out.nothing_to_do = true;
    logger->info("{} already seeded from image {} ({} files){}; nothing to do", c.data.string(),
                 old->image_version.empty() ? "(no version)" : old->image_version, old->files.size(),
                 c.mode == Mode::once && old->fingerprint != print ? " and --mode once never merges" : "");
    return out;
  }

  const volume::Volume vol(c.data);
  std::optional<files::FileLock> lock;
  if (!c.dry_run) {
    KK_TRY(vol.prepare());
    lock.emplace(KK_TRY(vol.lock(std::chrono::milliseconds(static_cast<long long>(c.lock_timeout_s * 1000)))));
    old = KK_TRY(check_manifest());
    if (up_to_date(old)) {
      out.nothing_to_do = true;
      logger->info("another replica seeded {} while this one waited; nothing to do", c.data.string());
      return out;
    }
    KK_TRY(vol.clear_staging());
  }
  if (forced) logger->warn("{}; --mode force: treating the volume as never seeded", *forced);
  const Manifest empty;
  const Manifest& before = old ? *old : empty;
  logger->info("{} {} from {} tree(s){}", old ? "merging" : "seeding", c.image_version.empty() ? "the image's defaults" : "image " + c.image_version,
               c.trees.size(), c.dry_run ? " (dry run)" : "");

  // Whole trees whose destination does not exist yet (the first start) are copied at once,
  // unless one of its parents is the operator's symlink (then each file is kept, below).
  Diversions diversions(c.data);
  std::vector<const Tree*> whole;
  for (const auto& t : c.trees) {
    const bool recorded = std::any_of(before.files.begin(), before.files.end(),
                                      [&](const auto& kv) { return kv.first.starts_with(t.to + "/"); });
    struct stat tst{};
    const bool exists = ::lstat((c.data / t.to).c_str(), &tst) == 0;
    if (!exists && !recorded && diversions.of(t.to).empty()) whole.push_back(&t);
  }
  auto in_whole = [&](const std::string& rel) {
    return std::any_of(whole.begin(), whole.end(), [&](const Tree* t) { return rel.starts_with(t->to + "/"); });
  };

  // Digests of the image's files: the manifest's when the file's size and mtime are unchanged;
  // files of whole trees are hashed while they are copied.
  std::vector<const Source*> to_hash;
  std::vector<std::string> sha(sources.size());
  std::vector<size_t> hash_index;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (in_whole(sources[i].rel) && !sources[i].symlink) continue;
    auto it = before.files.find(sources[i].rel);
    if (it != before.files.end() && it->second.symlink == sources[i].symlink && it->second.size == sources[i].size &&
        it->second.mtime_ns == sources[i].mtime_ns && !sources[i].symlink) {
      sha[i] = it->second.sha256;
    } else {
      to_hash.push_back(&sources[i]);
      hash_index.push_back(i);
    }
  }
  auto phase = [&](const char* what) {
    logger->debug("{} at {:.3f} s", what, std::chrono::duration<double>(clock::now() - start).count());
  };
  phase("scanned");
  {
    auto hashed = KK_TRY(hash_sources(to_hash));
    for (size_t k = 0; k < hashed.size(); ++k) sha[hash_index[k]] = hashed[k];
  }

  phase("hashed");
  Manifest after;
  after.image_version = c.image_version;
  after.fingerprint = print;
  after.trees = c.trees;
  std::vector<Step> steps;
  for (size_t i = 0; i < sources.size(); ++i) {
    const Source& s = sources[i];
    Record rec{s.symlink, sha[i], s.size, s.mtime_ns, 0, 0};
    if (in_whole(s.rel)) {
      // Copied with its size and mtime, which is how the next start knows it is untouched.
      if (!s.symlink) {
        rec.vsize = s.size;
        rec.vmtime_ns = s.mtime_ns;
      }
      steps.push_back({&s, Action::add, sha[i]});
      after.files[s.rel] = rec;
      continue;
    }
    if (const std::string why = diversions.of(s.rel); !why.empty()) {
      logger->info("keep {}: {}; nothing is written through it", s.rel, why);
      continue;  // not recorded: the operator owns that path now
    }
    const fs::path vpath = c.data / s.rel;
    auto old_it = before.files.find(s.rel);
    const Record* prev = old_it == before.files.end() ? nullptr : &old_it->second;
    struct stat vst{};
    const bool exists = ::lstat(vpath.c_str(), &vst) == 0;
    Action action;
    if (!exists) {
      // A default the operator deleted stays deleted; a new one is added.
      action = prev != nullptr && c.mode != Mode::force ? Action::keep : Action::add;
      if (action == Action::keep) {
        logger->info("keep {}: the operator removed it", s.rel);
        continue;  // not recorded: the operator owns that path now
      }
    } else {
      // Untouched since seed-data wrote it: size and mtime say so without reading it.
      const bool untouched = prev != nullptr && prev->vsize != 0 && !S_ISLNK(vst.st_mode) &&
                             static_cast<uint64_t>(vst.st_size) == prev->vsize && mtime_of(vst) == prev->vmtime_ns &&
                             !s.symlink;
      bool is_link = false;
      const std::string vdigest = untouched ? prev->sha256 : KK_TRY(volume_digest(vpath, &is_link));
      const bool same_kind = untouched || is_link == s.symlink;
      if (same_kind && vdigest == sha[i]) {
        action = Action::unchanged;  // already what the image has (also after an interrupted merge)
      } else if (prev != nullptr && same_kind && vdigest == prev->sha256) {
        action = Action::update;  // the operator never changed it
      } else if (c.mode == Mode::force) {
        action = Action::replace;  // the operator's version is kept beside it as .kmodkit-old
      } else if (prev != nullptr && prev->sha256 == sha[i]) {
        action = Action::keep;  // the operator changed it and the default did not change
      } else {
        action = Action::conflict;  // changed by the operator and by the image: both kept
      }
      if (action == Action::unchanged || action == Action::keep) {
        if (untouched || action == Action::unchanged) {
          rec.vsize = static_cast<uint64_t>(vst.st_size);
          rec.vmtime_ns = mtime_of(vst);
        }
      }
    }
    after.files[s.rel] = rec;
    steps.push_back({&s, action, sha[i]});
  }
  for (const auto& [rel, r] : before.files) {
    if (!after.files.contains(rel) && std::none_of(sources.begin(), sources.end(), [&](const Source& s) { return s.rel == rel; })) {
      ++out.dropped;
      out.plan.push_back("dropped " + rel);
      logger->info("dropped {}: the image no longer has it; left in place", rel);
    }
  }
  for (const auto& st : steps) {
    static constexpr const char* names[] = {"add", "update", "keep", "unchanged", "conflict", "replace"};
    out.plan.push_back(std::string(names[static_cast<int>(st.action)]) + " " + st.src->rel);
    switch (st.action) {
      case Action::add: ++out.added; out.bytes += st.src->size; break;
      case Action::update: ++out.updated; out.bytes += st.src->size; break;
      case Action::replace: ++out.updated; out.bytes += st.src->size; break;
      case Action::keep: ++out.kept; break;
      case Action::unchanged: ++out.unchanged; break;
      case Action::conflict: ++out.conflicts; out.bytes += st.src->size; break;
    }
  }
  if (c.dry_run) {
    for (const auto& line : out.plan) {
      if (!line.starts_with("unchanged ")) std::printf("%s\n", line.c_str());
    }
    logger->info("dry run: {} to add, {} to update, {} kept, {} conflicts, {} dropped; nothing was written", out.added,
                 out.updated, out.kept, out.conflicts, out.dropped);
    return out;
  }

  // Everything new is written into staging first, then renamed into place file by file
  // (whole trees at once); seed.json last.
  // Until something is renamed into place, a failure leaves the volume as it was: the staging
  // copy is removed, and the message says so (with what a full volume lacks).
  auto staging = KK_TRY(files::StagingDir::create(vol.staging_dir(), "seed"));
  auto stage = [&]() -> Result<void> {
    std::mutex digests_mutex;
    std::map<std::string, std::string> copied_digests;  // staging path -> SHA-256, from the copy
    {
      // Writeback starts while the copy runs, so the syncfs below has little left to wait for;
      // every 50 ms halved that wait against 200 ms on the first-seed benchmark (bench/README.md).
      files::BackgroundSync writeback(staging.path(), std::chrono::milliseconds(50));
      archive::Policy policy;
      policy.root = staging.path();
      policy.preserve_metadata = true;
      policy.special_files = archive::SpecialFiles::count;  // scan() warned about each
      policy.on_file_digest = [&](std::string_view path, std::string_view sha256) {
        std::lock_guard guard(digests_mutex);
        copied_digests.emplace(std::string(path), std::string(sha256));
      };
      auto extraction = KK_TRY(archive::Extraction::create(policy));
      std::vector<archive::Extraction::Copy> copies;
      for (const Tree* t : whole) {
        // A tree is the directory its path names, also when that path is a symlink (an image's
        // /etc/app -> /opt/app/etc): its content is seeded, as scan() read it, not the link.
        // Symlinks inside the tree are never followed.
        std::error_code cec;
        const fs::path from = fs::canonical(t->from, cec);
        if (cec) return fail(files::errno_error("default tree " + t->from.string(), cec.value(), ExitCode::no_input));
        copies.push_back({from, t->to});
      }
      for (const auto& st : steps) {
        if (in_whole(st.src->rel)) continue;
        if (st.action == Action::keep || st.action == Action::unchanged) continue;
        const std::string dest = st.action == Action::conflict ? st.src->rel + std::string(kNewSuffix) : st.src->rel;
        copies.push_back({st.src->path, dest});
      }
      if (!copies.empty()) KK_TRY(extraction->copy_trees(copies));
      KK_TRY(extraction->finish());
    }
    phase("copied");
    // Whole-tree files got their digest while being copied; a hard link's is its first name's.
    for (auto& [rel, r] : after.files) {
      if (r.symlink || !r.sha256.empty()) continue;
      if (auto it = copied_digests.find(rel); it != copied_digests.end()) {
        r.sha256 = it->second;
      } else {
        r.sha256 = KK_TRY(digest::sha256_file(staging.path() / rel));
      }
    }
    // Record how seed-data leaves each file it writes, so the next start needs no hashing:
    // renaming it into place keeps its size and mtime. seed.json is written beside the copy, so
    // that the one syncfs makes it durable too.
    std::map<std::string_view, Action> written;
    for (const auto& st : steps) {
      if (!in_whole(st.src->rel) && (st.action == Action::add || st.action == Action::update || st.action == Action::replace)) {
        written.emplace(st.src->rel, st.action);
      }
    }
    for (auto& [rel, r] : after.files) {
      if (r.symlink || !written.contains(rel)) continue;
      struct stat vst{};
      if (::lstat((staging.path() / rel).c_str(), &vst) == 0) {
        r.vsize = static_cast<uint64_t>(vst.st_size);
        r.vmtime_ns = mtime_of(vst);
      }
    }
    {
      auto fd = KK_TRY(files::open_file(staging.path() / kStagedManifest, O_WRONLY | O_CREAT | O_EXCL, 0644));
      const std::string text = manifest_json(after);
      if (int err = files::write_all(fd.get(), text.data(), text.size()); err != 0) {
        return fail(files::errno_error("write " + (staging.path() / kStagedManifest).string(), err));
      }
    }
    KK_TRY(files::sync_filesystem(staging.path()));
    return {};
  };
  // Another process removes this run's staging only when it ignored the lock: then every failure
  // is reported as that, not as what the missing files caused.
  auto explain = [&](Error e) { return staging.explain(std::move(e)); };
  if (auto staged = stage(); !staged) {
    Error cause = explain(std::move(staged).error());
    const fs::path leftover = staging.path();
    { auto removed = std::move(staging); }  // removes the staging copy
    return fail(staging_failed(c, steps, leftover, std::move(cause)));
  }
  // A copy that wrote on by path after another process took its directory away made a new one
  // at that path, holding only the rest: never placed.
  if (!staging.intact()) return fail(explain(Error{ExitCode::cant_create, "the copy went on in another directory"}));
  phase("synced");
  for (const Tree* t : whole) {
    KK_TRY(files::make_dirs((c.data / t->to).parent_path()));
    KK_TRY_MAP(chown_tree(c, staging.path() / t->to), explain);
    if (auto placed = files::rename_durable(staging.path() / t->to, c.data / t->to); !placed) {
      // The plan (made under the lock) found no tree there: another process placed one since.
      std::error_code tec;
      if (fs::exists(fs::symlink_status(c.data / t->to, tec))) {
        return fail(ExitCode::temp_fail, (c.data / t->to).string() + " appeared while this run seeded it: another process "
                                         "changed the volume without holding its lock; run again (" + placed.error().message + ")");
      }
      return fail(explain(std::move(placed).error()));
    }
  }
  // Single files: renamed one by one, then each directory they went to is synced once (a
  // merge of thousands of files would otherwise wait for a journal commit per file). seed.json,
  // written after, is what tells the next start they are there.
  std::set<fs::path> placed_in;
  auto place = [&](const fs::path& from, const fs::path& to) -> Result<void> {
    KK_TRY_MAP(files::rename_path(from, to), explain);
    placed_in.insert(to.parent_path());
    return {};
  };
  for (const auto& st : steps) {
    if (in_whole(st.src->rel) || st.action == Action::keep || st.action == Action::unchanged) continue;
    const fs::path vpath = c.data / st.src->rel;
    KK_TRY(make_parents(c, *st.src));
    if (st.action == Action::conflict) {
      const std::string name = st.src->rel + std::string(kNewSuffix);
      KK_TRY_MAP(apply_owner(c, staging.path() / name), explain);
      KK_TRY(place(staging.path() / name, c.data / name));
      logger->warn("conflict {}: the operator changed it and the image has a new default; kept, the default is beside it as {}",
                   st.src->rel, fs::path(name).filename().string());
      continue;
    }
    if (st.action == Action::replace && fs::exists(fs::symlink_status(vpath, ec))) {
      KK_TRY(place(vpath, c.data / (st.src->rel + std::string(kOldSuffix))));
      logger->warn("replace {}: --mode force; the volume's version is kept as {}", st.src->rel,
                   vpath.filename().string() + std::string(kOldSuffix));
    }
    KK_TRY_MAP(apply_owner(c, staging.path() / st.src->rel), explain);
    KK_TRY(place(staging.path() / st.src->rel, vpath));
  }
  for (const auto& dir : placed_in) KK_TRY(files::fsync_path(dir));
  phase("placed");
  // seed.json's content was made durable with the staging copy; renamed into place after the
  // trees and files it describes.
  KK_TRY_MAP(files::rename_durable(staging.path() / kStagedManifest, manifest_path(c)), explain);
  phase("manifest written");
  const double secs = std::chrono::duration<double>(clock::now() - start).count();
  logger->info("seeded {}: added {}, updated {}, kept {}, conflicts {}, dropped {}, skipped {}; {} in {:.2f} s",
               c.data.string(), out.added, out.updated, out.kept, out.conflicts, out.dropped, out.skipped,
               progress::format_bytes(out.bytes), secs);
  return out;
}

}  // namespace kmodkit::seed
