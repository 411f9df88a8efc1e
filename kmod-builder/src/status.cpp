#include "status.hpp"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {

using json = nlohmann::json;

Result<void> print_status(const StatusOptions& opt) {
  const fs::path root = records_dir(opt.volume);
  std::error_code ec;
  json all = json::array();
  std::vector<fs::path> records;
  if (fs::is_directory(root, ec)) {
    for (const auto& k : fs::directory_iterator(root, ec)) {
      if (!opt.kernel_release.empty() && k.path().filename() != opt.kernel_release) continue;
      for (const auto& r : fs::directory_iterator(k.path(), ec)) {
        if (r.path().extension() == ".json") records.push_back(r.path());
      }
    }
  }
  std::sort(records.begin(), records.end());
  std::string out;
  for (const auto& p : records) {
    auto text = KK_TRY(files::read_file(p));
    json r = json::parse(text, nullptr, false);
    if (r.is_discarded() || !r.is_object()) return fail(ExitCode::data_err, p.string() + " is not a kmod-builder record");
    try {  // a field of the wrong type (a hand edit) throws
      bool intact = true;
      for (auto& m : r["modules"]) {
        auto sha = digest::sha256_file(opt.volume / m.value("path", ""));
        m["intact"] = sha && *sha == m.value("sha256", "");
        intact = intact && m["intact"].get<bool>();
      }
      r["intact"] = intact;
      all.push_back(r);
      out += r.value("kernel_release", "?") + "  " + r.value("recipe", "?") + (r.value("version", "").empty() ? "" : " " + r.value("version", "")) + "\n";
      for (const auto& m : r["modules"]) {
        out += "  " + m.value("path", "?") + (m.value("intact", false) ? "" : "  (MISSING OR CHANGED)") + "\n";
        out += "    vermagic " + m.value("vermagic", "") + "(checked against " + r.value("vermagic_checked_against", "?") + ")\n";
        if (!m.value("srcversion", "").empty()) out += "    srcversion " + m.value("srcversion", "") + "\n";
      }
      if (r.value("signer", "").empty()) {
        out += "  not signed (built with --no-sign)\n";
      } else {
        out += "  signed " + r.value("hash", "") + " by '" + r.value("signer", "") + "' key " + r.value("sig_key", "") +
               (r.value("ephemeral_key", false) ? " (ephemeral key)" : "") +
               (r.value("signatures", "").empty() ? "" : " (detached signatures from " + r.value("signatures", "") + ")") + "\n";
      }
      if (!r.value("prebuilt_from", "").empty()) out += "  prebuilt, from " + r.value("prebuilt_from", "") + "\n";
      if (!r.value("certificate", "").empty()) {
        out += "  certificate " + (opt.volume / r.value("certificate", "")).string() + " (DER, for mokutil --import)\n";
      }
      out += "  sources " + r.value("source", "") + " (sha256 " + r.value("sources_sha256", "").substr(0, 16) + ")\n";
      out += "  compiler " + r.value("compiler", "") + "\n";
      out += "  built " + r.value("built", "") + ", installed " + r.value("installed", "") + ", cache key " +
             r.value("key", "").substr(0, 16) + "\n";
    } catch (const json::exception& e) {
      return fail(ExitCode::data_err, p.string() + " is not a kmod-builder record: " + e.what());
    }
  }
  if (opt.json) {
    out = json_text(all);
  } else if (records.empty()) {
    out = "nothing built on " + opt.volume.string() + (opt.kernel_release.empty() ? "" : " for kernel " + opt.kernel_release) + "\n";
  }
  std::fputs(out.c_str(), stdout);
  return {};
}

}  // namespace kmodkit::kmod_builder
