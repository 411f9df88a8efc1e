#include "state.hpp"

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

// Records name paths, a compiler's banner and a certificate's subject: bytes, written for people
// and for --list; what is not UTF-8 is replaced rather than failing the build.
std::string json_text(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n"; }

}  // namespace kmodkit::kmod_builder
