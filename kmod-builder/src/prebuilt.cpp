#include "prebuilt.hpp"

#include <algorithm>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "signing.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxModule = 256 << 20;
constexpr std::string_view kCertificate = "certificate.der";

// Whether `j` has `key` holding a string.
bool has_string(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string();
}

// The entry.json of DIR/<name>, when it parses as an entry whose fields have the types this
// file reads them as (so that reading them cannot throw).
std::optional<json> read_entry(const fs::path& entry_dir) {
  auto text = files::read_file(entry_dir / "entry.json", 16 << 20);
  if (!text) return std::nullopt;
  json e = json::parse(*text, nullptr, false);
  if (e.is_discarded() || !e.is_object()) return std::nullopt;
  const auto format = e.find("format");
  if (format == e.end() || *format != kRecordFormat) return std::nullopt;
  for (const char* key : {"key", "recipe", "signer", "compiler", "kernel_release"}) {
    if (!has_string(e, key)) return std::nullopt;
  }
  if (e.contains("built") && !e["built"].is_string()) return std::nullopt;
  if (e.contains("inputs") && !e["inputs"].is_object()) return std::nullopt;
  if (!e.contains("modules") || !e["modules"].is_array()) return std::nullopt;
  for (const auto& m : e["modules"]) {
    if (!m.is_object() || !has_string(m, "file") || !has_string(m, "sha256")) return std::nullopt;
    // A file name, never a path out of the entry.
    const std::string file = m["file"].get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") return std::nullopt;
  }
  return e;
}

// Why the entry in `entry_dir` cannot be installed as it is: its files or signature. "" if it can.
// `cert_part` is the key's "cert" input: the SHA-256 of the certificate's DER, or "ephemeral" or
// "unsigned".
std::string damage(const fs::path& entry_dir, const json& e, const std::string& cert_part) {
  std::string cert;
  if (!e.value("signer", "").empty()) {
    auto c = files::read_file(entry_dir / kCertificate, 1 << 20);
    if (!c) return "its certificate is missing";
    cert = *c;
    if (cert_part != "ephemeral" && digest::sha256_hex(cert) != cert_part) return "its certificate is not the one of its key";
  }
  for (const auto& m : e["modules"]) {
    const fs::path file = entry_dir / m.value("file", "");
    auto bytes = files::read_file(file, kMaxModule);
    if (!bytes || digest::sha256_hex(*bytes) != m.value("sha256", "")) return file.string() + " is missing or not the file it lists";
    if (!cert.empty()) {
      if (auto ok = signing::verify(*bytes, cert, (entry_dir / kCertificate).string()); !ok) {
        return file.string() + ": " + ok.error().message;
      }
    }
  }
  return "";
}

}  // namespace

Result<void> export_image_dir(const ExportImageOptions& opt) {
  auto logger = log::get("kmod-builder");
  if (opt.image_dir.empty()) return fail(ExitCode::usage, "--image-dir: give the directory to write");
  const auto records = KK_TRY(read_records(opt.volume, opt.kernel_release, opt.recipes));
  if (!opt.dry_run) KK_TRY(files::make_dirs(opt.image_dir));
  int written = 0, present = 0;
  for (const auto& record : records) {
    const auto& [path, r] = record;
    try {
      const std::string key = r.value("key", "");
      if (key.size() != 64 || !r.contains("inputs")) {
        return fail(ExitCode::data_err, path.string() + " was written by an older kmod-builder (no cache inputs): rebuild it "
                                        "with kmod-builder build, then export");
      }
      const fs::path dest = opt.image_dir / key;
      if (read_entry(dest)) {
        logger->info("{} for {}: already in {}", r.value("recipe", ""), r.value("kernel_release", ""), dest.string());
        ++present;
        continue;
      }
      if (opt.dry_run) {
        logger->info("dry run: would write {} ({} for {})", dest.string(), r.value("recipe", ""), r.value("kernel_release", ""));
        continue;
      }
      auto staging = KK_TRY(files::StagingDir::create(opt.image_dir, ".export." + key.substr(0, 16)));
      json entry = r;
      entry.erase("installed");
      for (auto& m : entry["modules"]) {
        const auto bytes = KK_TRY(read_installed_module(opt.volume, record, m));
        KK_TRY(files::write_file_atomic(staging.path() / m.value("file", ""), bytes));
        m.erase("path");
      }
      if (const std::string cert = r.value("certificate", ""); !cert.empty()) {
        KK_TRY(files::write_file_atomic(staging.path() / kCertificate, KK_TRY(files::read_file(opt.volume / cert, 1 << 20))));
      }
      entry["certificate"] = "";  // a path on the volume it came from; certificate.der is beside the entry
      KK_TRY(files::write_file_atomic(staging.path() / "entry.json", json_text(entry)));
      KK_TRY(files::remove_tree(dest));  // an incomplete entry (no entry.json) left by a kill
      KK_TRY(files::rename_durable(staging.path(), dest));
      staging.keep();
      logger->info("{} for {}: exported to {}", r.value("recipe", ""), r.value("kernel_release", ""), dest.string());
      ++written;
    } catch (const json::exception& e) {
      return fail(ExitCode::data_err, path.string() + " is not a kmod-builder record: " + e.what());
    }
  }
  logger->info("{}: {} entr{} written, {} already there{}", opt.image_dir.string(), written, written == 1 ? "y" : "ies", present,
               opt.dry_run ? " (dry run: nothing was written)" : "");
  return {};
}

PrebuiltMatch find_prebuilt(const fs::path& dir, const std::string& recipe, const KeyInputs& inputs,
                            const std::vector<std::string>& open_parts) {
  PrebuiltMatch out;
  std::vector<std::pair<fs::path, json>> same_recipe;
  auto consider = [&](const fs::path& entry_dir) -> bool {
    auto e = read_entry(entry_dir);
    if (!e || e->value("recipe", "") != recipe) return false;
    const KeyInputs mine = inputs.with_parts_of(e->contains("inputs") ? (*e)["inputs"] : json(), open_parts);
    const std::string key = e->value("key", "");
    if (key != entry_dir.filename().string() || key != mine.key()) {
      same_recipe.emplace_back(entry_dir, *e);
      return false;
    }
    if (auto why = damage(entry_dir, *e, mine.value("cert")); !why.empty()) {
      out.why_not = entry_dir.string() + " fits but cannot be used: " + why;
      return false;
    }
    out.entry = std::move(*e);
    out.dir = entry_dir;
    return true;
  };
  std::error_code ec;
  if (open_parts.empty() && consider(dir / inputs.key())) return out;
  if (!out.why_not.empty()) return out;
  std::vector<fs::path> dirs;
  for (const auto& d : fs::directory_iterator(dir, ec)) {
    if (d.is_directory(ec) && !d.path().filename().string().starts_with(".")) dirs.push_back(d.path());
  }
  if (ec && dirs.empty()) {
    out.why_not = dir.string() + " cannot be read: " + ec.message();
    return out;
  }
  std::sort(dirs.begin(), dirs.end());
  same_recipe.clear();
  for (const auto& d : dirs) {
    if (consider(d)) return out;
  }
  if (!out.why_not.empty()) return out;
  if (same_recipe.empty()) {
    out.why_not = dir.string() + " has no prebuilt " + recipe;
    return out;
  }
  // The closest: one for the same kernel if there is one.
  const std::string kver = inputs.value("kernel");
  auto it = std::find_if(same_recipe.begin(), same_recipe.end(),
                         [&](const auto& p) { return p.second.value("kernel_release", "") == kver; });
  if (it == same_recipe.end()) it = same_recipe.begin();
  const auto entry_inputs = it->second.contains("inputs") ? it->second["inputs"] : json();
  const KeyInputs mine = inputs.with_parts_of(entry_inputs, open_parts);
  const std::string diff = mine.first_difference(entry_inputs);
  out.why_not = it->first.string() + " differs in " + (diff.empty() ? "its key" : diff) +
                (same_recipe.size() > 1 ? " (and " + std::to_string(same_recipe.size() - 1) + " other entr" +
                                              (same_recipe.size() == 2 ? "y" : "ies") + " of " + recipe + " do not fit either)"
                                        : "");
  return out;
}

Result<json> adopt_prebuilt(const fs::path& volume, const PrebuiltMatch& match) {
  json entry = *match.entry;
  const std::string key = entry.value("key", "");
  if (!entry.value("signer", "").empty()) {
    const auto der = KK_TRY(files::read_file(match.dir / kCertificate, 1 << 20));
    const auto cert = KK_TRY(signing::parse_certificate(der, (match.dir / kCertificate).string()));
    entry["certificate"] = KK_TRY(write_certificate(volume, cert.der, cert.pem));
  }
  entry["prebuilt_from"] = match.dir.string();
  auto staging = KK_TRY(files::StagingDir::create(volume::Volume(volume).staging_dir(), "cache." + key.substr(0, 16)));
  for (const auto& m : entry["modules"]) {
    const std::string file = m.value("file", "");
    KK_TRY(files::write_file_atomic(staging.path() / file, KK_TRY(files::read_file(match.dir / file, kMaxModule))));
  }
  KK_TRY(files::write_file_atomic(staging.path() / "entry.json", json_text(entry)));
  const fs::path dest = cache_dir(volume, key);
  KK_TRY(files::make_dirs(dest.parent_path()));
  KK_TRY(files::remove_tree(dest));
  KK_TRY(files::rename_durable(staging.path(), dest));
  staging.keep();
  return entry;
}

}  // namespace kmodkit::kmod_builder
