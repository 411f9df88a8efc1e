#include "state.hpp"

#include <algorithm>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::kmod_builder {

using json = nlohmann::json;

Result<volume::TreeUse> hold_tree(const fs::path& volume, const std::string& kernel_release) {
  auto held = volume::ModulesVolume(volume).use(kernel_release);
  if (held || held.error().code == ExitCode::usage) return held;
  log::get("kmod-builder")->warn("kernel {}: {}; gc may count the tree as unused", kernel_release, held.error().message);
  return volume::TreeUse();
}

fs::path state_dir(const fs::path& volume) { return volume::Volume(volume).state_dir(); }
fs::path cache_dir(const fs::path& volume, const std::string& key) { return state_dir(volume) / "cache" / key; }
fs::path records_dir(const fs::path& volume) { return state_dir(volume) / "modules"; }
fs::path record_path(const fs::path& volume, const std::string& kver, const std::string& recipe) {
  return records_dir(volume) / kver / (recipe + ".json");
}
fs::path log_path(const fs::path& volume, const std::string& kver, const std::string& recipe) {
  return state_dir(volume) / "logs" / kver / (recipe + ".log");
}

Result<std::vector<Record>> read_records(const fs::path& volume, const std::string& kernel_release,
                                        const std::vector<std::string>& recipes) {
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const auto& k : fs::directory_iterator(records_dir(volume), ec)) {
    if (!kernel_release.empty() && k.path().filename() != kernel_release) continue;
    for (const auto& r : fs::directory_iterator(k.path(), ec)) {
      const std::string recipe = r.path().stem().string();
      if (r.path().extension() != ".json") continue;
      if (!recipes.empty() && std::find(recipes.begin(), recipes.end(), recipe) == recipes.end()) continue;
      paths.push_back(r.path());
    }
  }
  std::sort(paths.begin(), paths.end());
  const std::string where = " on " + volume.string() + (kernel_release.empty() ? "" : " for kernel " + kernel_release);
  for (const auto& want : recipes) {
    if (std::none_of(paths.begin(), paths.end(), [&](const fs::path& p) { return p.stem() == want; })) {
      return fail(ExitCode::no_input, "recipe " + want + " is not installed" + where + ": run kmod-builder build first");
    }
  }
  if (paths.empty()) return fail(ExitCode::no_input, "nothing is installed" + where + ": run kmod-builder build first");
  std::vector<Record> out;
  for (const auto& p : paths) {
    json r = json::parse(KK_TRY(files::read_file(p)), nullptr, false);
    if (r.is_discarded() || !r.is_object() || !r.contains("modules") || !r["modules"].is_array()) {
      return fail(ExitCode::data_err, p.string() + " is not a kmod-builder record");
    }
    out.push_back({p, std::move(r)});
  }
  return out;
}

Result<std::string> read_installed_module(const fs::path& volume, const Record& record, const json& module) {
  const fs::path installed = volume / module.value("path", "");
  auto bytes = KK_TRY(files::read_file(installed, 256 << 20));
  if (digest::sha256_hex(bytes) != module.value("sha256", "")) {
    return fail(ExitCode::data_err, installed.string() + " is not the module kmod-builder installed (its SHA-256 differs from " +
                                        record.path.string() + "): rebuild it with kmod-builder build");
  }
  return bytes;
}

Result<std::string> write_certificate(const fs::path& volume, const std::string& der, const std::string& pem) {
  if (der.empty() || pem.empty()) return fail(ExitCode::software, "OpenSSL could not encode the signing certificate");
  const fs::path certs = state_dir(volume) / "certs";
  const std::string stem = (certs / digest::sha256_hex(der).substr(0, 16)).lexically_relative(volume).string();
  KK_TRY(files::make_dirs(certs));
  for (const auto& [file, content] : {std::pair{stem + ".pem", &pem}, std::pair{stem + ".der", &der}}) {
    if (auto have = files::read_file(volume / file, 1 << 20); have && *have == *content) continue;
    KK_TRY(files::write_file_atomic(volume / file, *content));
  }
  return stem + ".der";
}

// Records name paths, a compiler's banner and a certificate's subject: bytes, written for people
// and for --list; what is not UTF-8 is replaced rather than failing the build.
std::string json_text(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n"; }

}  // namespace kmodkit::kmod_builder
