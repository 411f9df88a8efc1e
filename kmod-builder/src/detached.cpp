#include "detached.hpp"

#include <nlohmann/json.hpp>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/text.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxModule = 256 << 20;

// An output directory for export-unsigned: missing (made), empty, or an earlier export.
Result<void> prepare_out(const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec) && !fs::exists(out / "unsigned.json", ec)) {
    return fail(ExitCode::cant_create, out.string() + " holds other files: give an empty or new directory");
  }
  return files::make_dirs(out);
}

}  // namespace

Result<void> export_unsigned(const ExportUnsignedOptions& opt) {
  auto logger = log::get("kmod-builder");
  if (opt.out.empty()) return fail(ExitCode::usage, "--out: give the directory to write");
  const auto records = KK_TRY(read_records(opt.volume, opt.kernel_release, opt.recipes));
  if (!opt.dry_run) KK_TRY(prepare_out(opt.out));
  json list = json::array();
  for (const auto& record : records) {
    const auto& [path, r] = record;
    try {
      const std::string kver = r.value("kernel_release", "");
      const std::string recipe = r.value("recipe", "");
      for (const auto& m : r["modules"]) {
        const auto content = KK_TRY(read_installed_module(opt.volume, record, m));
        const auto bytes = KK_TRY_CTX(signing::strip_signature(content), (opt.volume / m.value("path", "")).string());
        const std::string file = m.value("file", "");
        const fs::path rel = fs::path(kver) / recipe / file;
        json e = {{"kernel_release", kver}, {"recipe", recipe},   {"file", file},
                  {"name", m.value("name", "")}, {"path", rel.string()}, {"sha256", digest::sha256_hex(bytes)},
                  {"size", bytes.size()}, {"hash", r.value("hash", "sha256")}, {"key", r.value("unsigned_key", "")}};
        list.push_back(e);
        if (opt.dry_run) {
          logger->info("dry run: would write {} ({} bytes, sha256 {})", (opt.out / rel).string(), bytes.size(),
                       e["sha256"].get<std::string>().substr(0, 16));
          continue;
        }
        KK_TRY(files::make_dirs((opt.out / rel).parent_path()));
        KK_TRY(files::write_file_atomic(opt.out / rel, bytes));
      }
    } catch (const json::exception& e) {
      return fail(ExitCode::data_err, path.string() + " is not a kmod-builder record: " + e.what());
    }
  }
  if (opt.dry_run) {
    logger->info("dry run: nothing was written");
    return {};
  }
  json manifest = {{"format", kUnsignedFormat}, {"exported", text::utc_now_rfc3339()}, {"modules", list}};
  KK_TRY(files::write_file_atomic(opt.out / "unsigned.json", json_text(manifest)));
  logger->info("{} unsigned module(s) in {}: sign them with kmod-builder sign-detached --unsigned {}", list.size(),
               opt.out.string(), opt.out.string());
  return {};
}

Result<void> sign_detached(const SignDetachedOptions& opt) {
  auto logger = log::get("kmod-builder");
  if (opt.out.empty()) return fail(ExitCode::usage, "--out: give the signatures file to write");
  if (opt.signing_key.empty() || opt.signing_cert.empty()) {
    return fail(ExitCode::usage, "give --signing-key and --signing-cert: the key to sign with and its certificate");
  }
  if (!opt.hash.empty() && opt.hash != "sha256" && opt.hash != "sha384" && opt.hash != "sha512") {
    return fail(ExitCode::usage, "--hash: '" + opt.hash + "' is not one of sha256, sha384, sha512");
  }
  const fs::path manifest_path = opt.unsigned_dir / "unsigned.json";
  json manifest = json::parse(KK_TRY(files::read_file(manifest_path)), nullptr, false);
  const auto format = manifest.is_object() ? manifest.find("format") : manifest.end();
  if (manifest.is_discarded() || !manifest.is_object() || format == manifest.end() || *format != kUnsignedFormat ||
      !manifest.contains("modules") || !manifest["modules"].is_array()) {
    return fail(ExitCode::data_err, manifest_path.string() + " is not what kmod-builder export-unsigned writes (format " +
                                        std::string(kUnsignedFormat) + ")");
  }
  const auto signer = KK_TRY(signing::Signer::load(opt.signing_key, opt.signing_cert, KK_TRY(signing::read_pin(opt.signing_pin_file))));
  const auto cert = signer.certificate();
  json list = json::array();
  try {
    for (const auto& m : manifest["modules"]) {
      const std::string rel = m.at("path").get<std::string>();
      if (rel.empty() || fs::path(rel).is_absolute() || rel.find("..") != std::string::npos) {
        return fail(ExitCode::data_err, manifest_path.string() + ": module path '" + rel + "' is not inside " + opt.unsigned_dir.string());
      }
      const fs::path file = opt.unsigned_dir / rel;
      const auto bytes = KK_TRY(files::read_file(file, kMaxModule));
      const std::string sha = digest::sha256_hex(bytes);
      if (sha != m.at("sha256").get<std::string>()) {
        return fail(ExitCode::data_err, file.string() + " has SHA-256 " + sha + ", not the " + m.at("sha256").get<std::string>() +
                                            " unsigned.json lists: it changed after export-unsigned wrote it");
      }
      if (bytes.ends_with(signing::kMagic)) return fail(ExitCode::data_err, file.string() + " is already signed");
      const std::string hash = opt.hash.empty() ? m.value("hash", "sha256") : opt.hash;
      const auto sig = KK_TRY_CTX(signer.signature(bytes, hash), "signing " + file.string());
      list.push_back({{"kernel_release", m.at("kernel_release")}, {"recipe", m.at("recipe")}, {"file", m.at("file")},
                      {"sha256", sha}, {"key", m.value("key", "")}, {"hash", hash}, {"signature", digest::base64(sig)}});
      logger->info("{}: signed with {} ({} bytes of signature)", rel, hash, sig.size());
    }
  } catch (const json::exception& e) {
    return fail(ExitCode::data_err, manifest_path.string() + " is not what kmod-builder export-unsigned writes: " + e.what());
  }
  json out = {{"format", kSignaturesFormat}, {"signed", text::utc_now_rfc3339()}, {"signer", cert.signer},
              {"sig_key", cert.key_id},      {"certificate", cert.pem},          {"modules", list}};
  if (opt.dry_run) {
    logger->info("dry run: would write {} with {} signature(s) by \"{}\" (key id {})", opt.out.string(), list.size(), cert.signer,
                 cert.key_id);
    return {};
  }
  KK_TRY(files::write_file_atomic(opt.out, json_text(out)));
  logger->info("{}: {} signature(s) by \"{}\" (key id {}); give it to kmod-builder build --signatures", opt.out.string(),
               list.size(), cert.signer, cert.key_id);
  return {};
}

Result<Signatures> Signatures::read(const fs::path& file) {
  return parse(KK_TRY_CTX(files::read_file(file, 16 << 20), "--signatures"), file);
}

Result<Signatures> Signatures::parse(std::string_view text, const fs::path& file) {
  Signatures s;
  s.origin_ = file;
  const std::string what = "--signatures " + file.string();
  json j = json::parse(text, nullptr, false);
  const auto format = j.is_object() ? j.find("format") : j.end();
  if (j.is_discarded() || !j.is_object() || format == j.end() || *format != kSignaturesFormat) {
    return fail(ExitCode::data_err, what + " is not a signatures file (format " + std::string(kSignaturesFormat) +
                                        ", as kmod-builder sign-detached writes)");
  }
  try {
    s.certificate_ = KK_TRY(signing::parse_certificate(j.at("certificate").get<std::string>(), what + ": its certificate"));
    for (const auto& m : j.at("modules")) {
      DetachedSignature d;
      d.kernel_release = m.at("kernel_release").get<std::string>();
      d.recipe = m.at("recipe").get<std::string>();
      d.file = m.at("file").get<std::string>();
      d.sha256 = m.at("sha256").get<std::string>();
      d.hash = m.at("hash").get<std::string>();
      auto sig = digest::unbase64(m.at("signature").get<std::string>());
      if (!sig) return fail(ExitCode::data_err, what + ": the signature of " + d.file + " is not base64");
      d.signature = std::move(*sig);
      const auto algo = KK_TRY_CTX(signing::signature_hash(d.signature), what + ": the signature of " + d.file);
      if (algo != d.hash) {
        return fail(ExitCode::data_err, what + ": the signature of " + d.file + " is " + algo + ", the file says " + d.hash);
      }
      s.modules_.push_back(std::move(d));
    }
  } catch (const json::exception& e) {
    return fail(ExitCode::data_err, what + " is not a signatures file: " + e.what());
  }
  return s;
}

Result<std::string> Signatures::attach(std::string_view module, const std::string& kernel_release, const std::string& recipe,
                                       const std::string& file, const std::string& hash) const {
  const DetachedSignature* sig = nullptr;
  for (const auto& d : modules_) {
    if (d.kernel_release == kernel_release && d.recipe == recipe && d.file == file) sig = &d;
  }
  if (sig == nullptr) {
    return fail(ExitCode::no_input, recipe + ": " + origin_.string() + " has no signature for " + file + " of kernel " +
                                        kernel_release + ": export it unsigned and sign it (kmod-builder export-unsigned, sign-detached)");
  }
  const auto bytes = KK_TRY(signing::strip_signature(module));
  const std::string sha = digest::sha256_hex(bytes);
  if (sha != sig->sha256) {
    return fail(ExitCode::data_err, recipe + ": " + file + " built here has SHA-256 " + sha + ", but the one signed in " +
                                        origin_.string() + " had " + sig->sha256 +
                                        ": the signer's build used other sources, headers or compiler; nothing installed");
  }
  if (sig->hash != hash) {
    return fail(ExitCode::data_err, recipe + ": the signature of " + file + " in " + origin_.string() + " is " + sig->hash +
                                        ", this build signs with " + hash + " (--hash)");
  }
  auto signed_module = KK_TRY(signing::attach(bytes, sig->signature));
  KK_TRY_CTX(signing::verify(signed_module, certificate_.der, origin_.string() + "'s certificate"),
             recipe + ": " + file + ": the signature in " + origin_.string() + " was not made for these bytes");
  return signed_module;
}

}  // namespace kmodkit::kmod_builder
