#include "install.hpp"

#include <libkmod.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <memory>
#include <optional>

#include "build.hpp"
#include "cache_key.hpp"
#include "detached.hpp"
#include "prebuilt.hpp"
#include "kernel.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/json.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/volume.hpp"
#include "modinfo.hpp"
#include "recipe.hpp"
#include "signing.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {
namespace {

using json = nlohmann::json;

using clock = std::chrono::steady_clock;

// The cache key's "cert" part of modules built with --no-sign.
constexpr std::string_view kUnsigned = "unsigned";

double seconds_since(clock::time_point start) { return std::chrono::duration<double>(clock::now() - start).count(); }

fs::path install_dir(const KernelTree& kernel, const std::string& recipe) { return kernel.modules_dir / "extra" / recipe; }

// The architecture as `uname -m` names it: what DKMS matches BUILD_EXCLUSIVE_ARCH against.
std::string machine() {
  struct utsname uts{};
  ::uname(&uts);
  return uts.machine;
}

// How the modules of this run are signed: with a key (a file or a token), with detached
// signatures made elsewhere (--signatures), with an ephemeral key made when first needed, or not
// at all (--no-sign).
class Signing {
 public:
  static Result<Signing> create(const Config& cfg) {
    Signing s;
    // With --signatures, --signing-cert alone pins the signer: signatures by another key are refused.
    if (cfg.signing_key.empty() != cfg.signing_cert.empty() && (cfg.signatures.empty() || !cfg.signing_key.empty())) {
      return fail(ExitCode::usage, "give both --signing-key and --signing-cert, or neither (an ephemeral key is then used)");
    }
    const int ways = (cfg.signing_key.empty() ? 0 : 1) + (cfg.signatures.empty() ? 0 : 1) + (cfg.no_sign ? 1 : 0);
    if (ways > 1) return fail(ExitCode::usage, "give one of --signing-key, --signatures and --no-sign");
    if (!cfg.signing_key.empty()) {
      s.signer_ = KK_TRY(signing::Signer::load(cfg.signing_key, cfg.signing_cert, KK_TRY(signing::read_pin(cfg.signing_pin_file))));
      s.cert_ = s.signer_->certificate();
      s.mode_ = Mode::key;
    } else if (!cfg.signatures.empty()) {
      s.signatures_ = KK_TRY(Signatures::read(cfg.signatures));
      s.cert_ = s.signatures_->certificate();
      if (!cfg.signing_cert.empty()) {
        const auto pinned = KK_TRY(signing::parse_certificate(KK_TRY(files::read_file(cfg.signing_cert, 1 << 20)),
                                                              "--signing-cert " + cfg.signing_cert.string()));
        if (pinned.der != s.cert_->der) {
          return fail(ExitCode::config, "--signatures " + cfg.signatures.string() + " is signed by '" + s.cert_->signer + "' (key " +
                                            s.cert_->key_id + "), not by the certificate --signing-cert " +
                                            cfg.signing_cert.string() + " ('" + pinned.signer + "', key " + pinned.key_id + ")");
        }
      }
      s.mode_ = Mode::detached;
    } else if (cfg.no_sign) {
      s.mode_ = Mode::none;
    }
    return s;
  }
  // The cache key's "cert" part: the SHA-256 of the certificate, or "ephemeral" (modules signed
  // by an earlier ephemeral key are reused: they load only where signatures are not enforced
  // anyway), or "unsigned".
  std::string key_part() const {
    if (mode_ == Mode::none) return std::string(kUnsigned);
    return cert_ ? digest::sha256_hex(cert_->der) : "ephemeral";
  }
  // The certificate the modules are signed with (made now for an ephemeral key); nullptr when
  // they are not signed.
  Result<const signing::Certificate*> certificate() {
    if (mode_ == Mode::none) return nullptr;
    if (!cert_) {
      log::get("kmod-builder")
          ->warn("no --signing-key given: signing with an ephemeral key; these modules load only on kernels that do "
                 "not enforce module signatures (module.sig_enforce=0, no lockdown)");
      signer_ = KK_TRY(signing::Signer::ephemeral());
      cert_ = signer_->certificate();
    }
    return &*cert_;
  }
  bool ephemeral() const { return mode_ == Mode::ephemeral; }
  // `module` (recipe `recipe`'s `file`, built for `kernel_release`) as it is installed: signed,
  // or as built with --no-sign. Errors: signing's, or Signatures::attach's.
  Result<std::string> apply(std::string module, const std::string& kernel_release, const std::string& recipe,
                            const std::string& file, const std::string& hash) {
    switch (mode_) {
      case Mode::none:
        return module;
      case Mode::detached:
        return signatures_->attach(module, kernel_release, recipe, file, hash);
      case Mode::key:
      case Mode::ephemeral:
        KK_TRY(certificate());
        return signer_->sign(module, hash);
    }
    return module;
  }

 private:
  enum class Mode { key, detached, ephemeral, none };
  Mode mode_ = Mode::ephemeral;
  std::optional<signing::Signer> signer_;
  std::optional<Signatures> signatures_;
  std::optional<signing::Certificate> cert_;
};

// One recipe's work on one kernel.
struct Job {
  Recipe recipe;
  std::vector<SourceEntry> sources;
  std::vector<std::string> defines;
  KeyInputs inputs;          // the key's parts; "compiler" is "" while no compiler is known
  std::string key;           // inputs.key(); "" until known when there is no compiler
  std::string unsigned_key;  // the key of the same modules unsigned (what sign-detached signs)
};

Result<std::string> compiler_version_line(const std::string& cc) {
  auto out = subprocess::run({cc, "--version"}, {.cwd = {}, .env = {{"LC_ALL", "C"}}, .timeout = std::chrono::seconds(30)});
  if (!out) return fail(ExitCode::no_input, "compiler " + cc + " was not found: " + out.error().message);
  if (!out->ok()) return fail(ExitCode::config, "compiler " + cc + " --version " + out->describe());
  auto lines = text::split(out->output, "\n");
  return std::string(text::trim(lines.front()));
}

Result<std::string> file_digest_or(const fs::path& p, const std::string& absent) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return absent;
  return digest::sha256_file(p);
}

// The cache key's inputs: every input that changes the output. `compiler` is the compiler's
// --version line, "" when there is none here.
Result<KeyInputs> key_inputs(const Job& job, const KernelTree& kernel, const std::string& compiler, const Config& cfg,
                             const std::string& hash, const std::string& cert) {
  digest::Sha256 src;
  for (const auto& e : job.sources) {
    if (e.type == SourceEntry::symlink) {
      src.update("link " + e.rel + " -> " + e.link + "\n");
    } else {
      src.update("file " + e.rel + (e.executable ? " x " : " - ") + KK_TRY(digest::sha256_file(e.from)) + "\n");
    }
  }
  std::string defines;
  for (const auto& d : job.defines) defines += d + " ";
  KeyInputs k;
  k.add("kernel", kernel.release);
  k.add("config", KK_TRY(digest::sha256_file(kernel.build / ".config")));
  k.add("symvers", KK_TRY(file_digest_or(kernel.build / "Module.symvers", "none")));
  k.add("recipe", job.recipe.canonical());
  k.add("probes", defines);
  k.add("sources", src.hex());
  k.add("compiler", compiler);
  k.add("cc", cfg.cc);
  k.add("hash", hash);
  k.add("cert", cert);
  return k;
}

// Whether a parsed record is for `job` and its modules are intact. Throws json::exception for a
// field of the wrong type.
std::optional<json> check_record(const fs::path& volume, const Job& job, json r, std::string* why_not) {
  if (r.is_discarded() || !r.is_object() || json_field::integer(r, "format", 0) != kRecordFormat) {
    *why_not = "its record is unreadable";
    return std::nullopt;
  }
  if (r.value("key", "") != job.key) {
    *why_not = "installed from other inputs (key " + r.value("key", "").substr(0, 12) + ", now " + job.key.substr(0, 12) + ")";
    return std::nullopt;
  }
  for (const auto& m : r["modules"]) {
    const fs::path p = volume / m.value("path", "");
    auto sha = digest::sha256_file(p);
    if (!sha || *sha != m.value("sha256", "")) {
      *why_not = p.string() + " is missing or changed";
      return std::nullopt;
    }
  }
  return r;
}

// The record of an installed recipe, when it is for `key` and its modules are intact.
std::optional<json> installed_record(const fs::path& volume, const KernelTree& kernel, const Job& job, std::string* why_not) {
  auto text = files::read_file(record_path(volume, kernel.release, job.recipe.name));
  if (!text) {
    *why_not = "not installed";
    return std::nullopt;
  }
  json r = json::parse(*text, nullptr, false);
  try {
    return check_record(volume, job, std::move(r), why_not);
  } catch (const json::exception&) {  // a field of the wrong type
    *why_not = "its record is unreadable";
    return std::nullopt;
  }
}

// A complete cache entry (its entry.json exists and lists files that are there).
std::optional<json> cache_entry(const fs::path& volume, const std::string& key) {
  auto text = files::read_file(cache_dir(volume, key) / "entry.json");
  if (!text) return std::nullopt;
  json e = json::parse(*text, nullptr, false);
  try {
    if (e.is_discarded() || !e.is_object() || json_field::integer(e, "format", 0) != kRecordFormat || !e.contains("modules")) return std::nullopt;
    for (const auto& m : e["modules"]) {
      auto sha = digest::sha256_file(cache_dir(volume, key) / m.value("file", ""));
      if (!sha || *sha != m.value("sha256", "")) return std::nullopt;
    }
  } catch (const json::exception&) {  // a field of the wrong type: not a usable entry
    return std::nullopt;
  }
  return e;
}

Result<void> check_compiler(const KernelTree& kernel, const std::string& found_text, const Config& cfg) {
  const auto want = KK_TRY(kernel.kernel_compiler());
  const auto got = KK_TRY_CTX(parse_compiler(found_text), "compiler " + (cfg.cc.empty() ? std::string("gcc") : cfg.cc));
  if (want.family == got.family && want.major == got.major) return {};
  const std::string msg = "kernel " + kernel.release + " was built with '" + want.text + "' but the compiler here is '" +
                          got.text + "' (" + got.family + " " + std::to_string(got.major) + ", not " + want.family + " " +
                          std::to_string(want.major) + ")";
  if (cfg.allow_compiler_mismatch) {
    log::get("kmod-builder")->warn("{}; building anyway (--allow-compiler-mismatch)", msg);
    return {};
  }
  return fail(ExitCode::config, msg + "; use an image with that compiler, or --allow-compiler-mismatch");
}

// Builds, checks and signs one recipe, and puts the result in the cache. Under the lock.
Result<json> build_into_cache(const Job& job, const KernelTree& kernel, const Config& cfg, Signing& signing,
                              const std::string& compiler, const std::string& hash) {
  auto logger = log::get("kmod-builder");
  const auto start = clock::now();
  KK_TRY(check_compiler(kernel, compiler, cfg));
  auto work = KK_TRY(files::StagingDir::create(cfg.work_dir, "kmod-builder." + job.recipe.name));
  BuildRequest req;
  req.cc = cfg.cc;
  req.jobs = cfg.jobs;
  req.defines = job.defines;
  req.timeout = std::chrono::seconds(static_cast<long long>(cfg.build_timeout_s));
  // The headers as the node has them (/usr/src/...), wherever the volume is mounted.
  req.prefix_maps.emplace_back(fs::absolute(cfg.volume).lexically_normal() / "", "/");
  std::string probes;
  for (const auto& d : job.defines) probes += (probes.empty() ? ", probes: " : " ") + d;
  logger->info("{}: building against {} (make -j{}{})", job.recipe.name, kernel.build.string(), cfg.jobs, probes);
  std::string log_text;
  auto built = build(job.recipe, kernel, req, job.sources, work.path(), &log_text);
  const fs::path logfile = log_path(cfg.volume, kernel.release, job.recipe.name);
  if (!built) {
    if (!log_text.empty()) {
      KK_TRY(files::make_dirs(logfile.parent_path()));
      KK_TRY(files::write_file_atomic(logfile, log_text));
    }
    Error e = work.explain(built.error());  // removed by a process that ignored the lock?
    e.message += log_text.empty() ? "" : " (whole log: " + logfile.string() + ")";
    return fail(std::move(e));
  }
  logger->info("{}: built in {:.1f} s", job.recipe.name, seconds_since(start));

  const auto vermagic = kernel.expected_vermagic();
  const auto* cert = KK_TRY(signing.certificate());
  auto staging = KK_TRY(files::StagingDir::create(volume::Volume(cfg.volume).staging_dir(), "cache." + job.key.substr(0, 16)));
  const auto explain = [&](Error e) { return staging.explain(std::move(e)); };
  json entry;
  entry["format"] = kRecordFormat;
  entry["key"] = job.key;
  entry["unsigned_key"] = job.unsigned_key;
  entry["inputs"] = job.inputs.summary();
  entry["recipe"] = job.recipe.name;
  entry["version"] = job.recipe.version;
  entry["recipe_origin"] = job.recipe.origin;
  entry["source"] = job.recipe.source.string();
  entry["sources_sha256"] = job.inputs.value("sources");
  entry["kernel_release"] = kernel.release;
  entry["compiler"] = compiler;
  entry["make"] = built->make_argv;
  entry["probes"] = job.defines;
  entry["vermagic_checked_against"] = vermagic.origin;
  entry["hash"] = hash;
  entry["signer"] = cert == nullptr ? "" : cert->signer;
  entry["sig_key"] = cert == nullptr ? "" : cert->key_id;
  entry["ephemeral_key"] = signing.ephemeral();
  entry["certificate"] = cert == nullptr ? "" : KK_TRY(write_certificate(cfg.volume, cert->der, cert->pem));
  if (!cfg.signatures.empty()) entry["signatures"] = cfg.signatures.string();
  entry["built"] = text::utc_now_rfc3339();
  entry["build_seconds"] = seconds_since(start);
  entry["load"] = {{"depends", job.recipe.load_depends}, {"params", json::object()}};
  for (const auto& [k, v] : job.recipe.load_params) entry["load"]["params"][k] = v;
  json modules = json::array();
  for (const auto& ko : built->modules) {
    auto info = KK_TRY(read_module_info(ko));
    if (auto why = vermagic_mismatch(info.vermagic, vermagic); !why.empty()) {
      return fail(ExitCode::data_err, job.recipe.name + ": " + ko.filename().string() + " " + why + "; nothing installed");
    }
    const std::string file = ko.filename().string();
    auto content = KK_TRY(files::read_file(ko, 256 << 20));
    auto module = KK_TRY_CTX(signing.apply(std::move(content), kernel.release, job.recipe.name, file, hash),
                             job.recipe.name + ": signing " + file);
    KK_TRY_MAP(files::write_file_atomic(staging.path() / file, module), explain);
    modules.push_back({{"file", file},
                       {"name", info.name},
                       {"sha256", digest::sha256_hex(module)},
                       {"vermagic", info.vermagic},
                       {"srcversion", info.srcversion}});
  }
  entry["modules"] = modules;
  KK_TRY_MAP(files::write_file_atomic(staging.path() / "build.log", log_text), explain);
  KK_TRY_MAP(files::write_file_atomic(staging.path() / "entry.json", json_text(entry)), explain);
  const fs::path dest = cache_dir(cfg.volume, job.key);
  if (auto theirs = cache_entry(cfg.volume, job.key)) {
    // Complete already: under the lock nobody builds beside this run, so a process that ignored
    // it did. Its entry stays (it may be installing from it); this build is dropped.
    logger->warn("{}: another process put this build in the cache meanwhile, without holding the volume's lock; its "
                 "entry is kept and used",
                 job.recipe.name);
    return std::move(*theirs);
  }
  KK_TRY(files::make_dirs(dest.parent_path()));
  KK_TRY(files::remove_tree(dest));  // an incomplete entry (no entry.json) left by a kill
  KK_TRY_MAP(files::rename_durable(staging.path(), dest), explain);
  staging.keep();
  if (cert == nullptr) {
    logger->info("{}: not signed (--no-sign), cached as {}", job.recipe.name, job.key.substr(0, 16));
  } else {
    logger->info("{}: signed with {} by \"{}\" (key id {}{}), cached as {}", job.recipe.name, hash, cert->signer, cert->key_id,
                 cfg.signatures.empty() ? "" : ", signatures from " + cfg.signatures.string(), job.key.substr(0, 16));
  }
  return entry;
}

// Copies a cache entry's modules into extra/<recipe>/ (each file replaced atomically) and removes
// files a previous version left there. Returns the record to write once depmod has indexed them.
Result<json> install(const json& entry, const Job& job, const KernelTree& kernel, const Config& cfg) {
  const fs::path dir = install_dir(kernel, job.recipe.name);
  KK_TRY(files::make_dirs(dir));
  json record = entry;
  json modules = json::array();
  std::vector<std::string> names;
  for (const auto& m : entry["modules"]) {
    const std::string file = m.value("file", "");
    const fs::path dest = dir / file;
    auto existing = digest::sha256_file(dest);
    if (!existing || *existing != m.value("sha256", "")) {
      auto content = KK_TRY(files::read_file(cache_dir(cfg.volume, job.key) / file, 256 << 20));
      KK_TRY(files::write_file_atomic(dest, content));
    }
    json mm = m;
    mm["path"] = dest.lexically_relative(cfg.volume).string();
    modules.push_back(mm);
    names.push_back(file);
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (std::find(names.begin(), names.end(), e.path().filename().string()) == names.end()) {
      log::get("kmod-builder")->info("{}: removing {} (not built by this recipe any more)", job.recipe.name, e.path().string());
      fs::remove_all(e.path(), ec);
    }
  }
  record["modules"] = modules;
  record["installed"] = text::utc_now_rfc3339();
  KK_TRY(files::fsync_path(dir));
  return record;
}

// The record is the proof of an installation: written last, after depmod has indexed the
// modules, so a run killed before (or a depmod that failed) leaves nothing "up to date".
Result<void> write_record(const json& record, const KernelTree& kernel, const Config& cfg) {
  const fs::path rec = record_path(cfg.volume, kernel.release, record.value("recipe", ""));
  KK_TRY(files::make_dirs(rec.parent_path()));
  return files::write_file_atomic(rec, json_text(record));
}

// Runs depmod on the volume's tree, then checks with libkmod that its index (modules.dep.bin,
// what modprobe and `kmod-builder load` read) has each installed module at its path: depmod
// exits 0 even when it cannot write its files (kmod 30 on a read-only or full volume).
Result<void> run_depmod(const KernelTree& kernel, const Config& cfg, const std::vector<json>& records) {
  const std::string cmd = "depmod -b " + cfg.volume.string() + " " + kernel.release;
  auto out = KK_TRY(subprocess::run({"depmod", "-b", cfg.volume.string(), kernel.release}));
  if (!out.ok()) {
    return fail(ExitCode::software, cmd + " " + out.describe() + ": " + std::string(text::trim(out.output)));
  }
  std::string first_error;
  for (auto line : text::split(out.output, "\n")) {
    if (line.find("ERROR") != std::string_view::npos) {
      first_error = std::string(text::trim(line));
      break;
    }
  }
  std::unique_ptr<kmod_ctx, decltype(&kmod_unref)> ctx(kmod_new(kernel.modules_dir.c_str(), nullptr), kmod_unref);
  if (!ctx) return fail(ExitCode::software, "libkmod cannot open " + kernel.modules_dir.string());
  for (const auto& record : records) {
    for (const auto& m : record["modules"]) {
      const std::string name = m.value("name", "");
      // libkmod makes the tree's directory absolute (a relative --volume is taken from the cwd).
      const fs::path want = fs::absolute(cfg.volume / m.value("path", "")).lexically_normal();
      kmod_module* raw = nullptr;
      std::string found;
      if (kmod_module_new_from_name(ctx.get(), name.c_str(), &raw) == 0) {
        const char* path = kmod_module_get_path(raw);
        found = path != nullptr ? path : "";
        kmod_module_unref(raw);
      }
      if (found.empty() || fs::path(found).lexically_normal() != want) {
        const std::string what = found.empty() ? "has no entry for " + name : "has " + name + " at " + found;
        if (!first_error.empty()) {
          return fail(ExitCode::cant_create, cmd + " did not write its index: " + first_error + " (modules.dep " + what + ")");
        }
        return fail(ExitCode::software, cmd + " exited 0 but modules.dep " + what + ", not " + want.string());
      }
    }
  }
  return {};
}

// Key parts this run cannot know, taken from a build made elsewhere that matches in every other
// input: "compiler" with no compiler here, "cert" when no key, certificate or signatures were
// given (the modules then keep the signature they were made with; the kernel decides whether it
// trusts it). The installed record is tried first, then the entries under --prebuilt; sets
// job.inputs' open parts. Input missing (66) when the compiler is unknown and neither fits,
// saying why; with only the certificate open, the run signs with an ephemeral key as before.
Result<void> resolve_open_parts(Job& job, const KernelTree& kernel, const Config& cfg, const std::vector<std::string>& open_parts,
                                const std::optional<Error>& no_compiler) {
  if (open_parts.empty()) return {};
  if (auto text = files::read_file(record_path(cfg.volume, kernel.release, job.recipe.name))) {
    json r = json::parse(*text, nullptr, false);
    if (r.is_object() && r.contains("inputs") && r.contains("key") && r["key"].is_string()) {
      auto inputs = job.inputs.with_parts_of(r["inputs"], open_parts);
      if (inputs.key() == r["key"].get<std::string>()) {
        job.inputs = std::move(inputs);
        return {};
      }
    }
  }
  std::string why = "no --prebuilt directory was given";
  if (!cfg.prebuilt.empty()) {
    auto m = find_prebuilt(cfg.prebuilt, job.recipe.name, job.inputs, open_parts);
    if (m.entry) {
      job.inputs = job.inputs.with_parts_of((*m.entry)["inputs"], open_parts);
      return {};
    }
    why = m.why_not;
  }
  if (no_compiler) {
    return fail(ExitCode::no_input, job.recipe.name + ": " + no_compiler->message + ", and no build made elsewhere fits (" + why + ")");
  }
  return {};
}

std::string choose_hash(const Config& cfg, const KernelTree& kernel) {
  if (!cfg.hash.empty()) return cfg.hash;
  const auto h = kernel.config_value("CONFIG_MODULE_SIG_HASH");
  return h == "sha256" || h == "sha384" || h == "sha512" ? h : "sha256";
}

}  // namespace

Result<void> build_and_install(const Config& cfg) {
  const auto start = clock::now();
  auto logger = log::get("kmod-builder");
  // Held for the whole run, taken before the tree is read: init-modules' gc leaves a tree alone
  // while a process holds its use record (docs/ARCHITECTURE.md, "Kernel upgrades").
  volume::TreeUse use;
  if (!cfg.dry_run) use = KK_TRY(hold_tree(cfg.volume, cfg.kernel_release));
  const auto kernel = KK_TRY(KernelTree::open(cfg.volume, cfg.kernel_release));
  auto signing = KK_TRY(Signing::create(cfg));
  const std::string hash = choose_hash(cfg, kernel);
  if (hash != "sha256" && hash != "sha384" && hash != "sha512") {
    return fail(ExitCode::usage, "--hash: '" + hash + "' is not one of sha256, sha384, sha512");
  }
  // Without a compiler only what was built elsewhere can be installed (resolve_open_parts).
  std::string compiler;
  std::optional<Error> no_compiler;
  if (auto found = compiler_version_line(cfg.cc.empty() ? "gcc" : cfg.cc)) {
    compiler = *found;
  } else if (found.error().code == ExitCode::no_input) {
    no_compiler = found.error();
    logger->info("{}: only an installed or prebuilt build can be used", found.error().message);
  } else {
    return fail(found.error());
  }

  std::vector<std::string> open_parts;
  if (no_compiler) open_parts.push_back("compiler");
  if (signing.ephemeral()) open_parts.push_back("cert");
  std::vector<Job> jobs;
  for (const auto& spec : cfg.recipes) {
    Job job;
    std::string override;
    for (const auto& [name, dir] : cfg.sources) {
      if (name == spec) override = dir;
    }
    job.recipe = KK_TRY(load(spec, override));
    if (override.empty()) {
      if (auto it = cfg.sources.find(job.recipe.name); it != cfg.sources.end()) job.recipe = KK_TRY(load(spec, it->second));
    }
    if (auto why = job.recipe.kernel_refusal(kernel.release, machine()); !why.empty()) return fail(ExitCode::config, why);
    for (const auto& other : jobs) {
      if (other.recipe.name == job.recipe.name) return fail(ExitCode::usage, "recipe " + job.recipe.name + " is given twice");
    }
    job.sources = KK_TRY(list_sources(job.recipe));
    job.defines = KK_TRY(run_probes(job.recipe, kernel));
    job.inputs = KK_TRY(key_inputs(job, kernel, compiler, cfg, hash, signing.key_part()));
    KK_TRY(resolve_open_parts(job, kernel, cfg, open_parts, no_compiler));
    job.key = job.inputs.key();
    job.unsigned_key = job.inputs.with("cert", std::string(kUnsigned)).key();
    jobs.push_back(std::move(job));
  }

  // The warm path: everything installed from these very inputs.
  std::vector<Job*> todo;
  for (auto& job : jobs) {
    std::string why;
    if (installed_record(cfg.volume, kernel, job, &why)) {
      logger->info("{}: up to date for {} (key {})", job.recipe.name, kernel.release, job.key.substr(0, 16));
    } else {
      logger->info("{}: {}", job.recipe.name, why);
      todo.push_back(&job);
    }
  }
  if (todo.empty()) {
    logger->info("kernel {}: {} recipe(s) up to date in {} in {:.0f} ms", kernel.release, jobs.size(),
                 (kernel.modules_dir / "extra").string(), seconds_since(start) * 1000);
    return {};
  }
  if (cfg.dry_run) {
    for (const auto* job : todo) {
      if (cache_entry(cfg.volume, job->key)) {
        logger->info("dry run: {} would be installed from the cache ({})", job->recipe.name, job->key.substr(0, 16));
      } else if (auto m = cfg.prebuilt.empty() ? PrebuiltMatch{} : find_prebuilt(cfg.prebuilt, job->recipe.name, job->inputs);
                 m.entry) {
        logger->info("dry run: {} would be installed from the prebuilt {}", job->recipe.name, m.dir.string());
      } else {
        if (!m.why_not.empty()) logger->info("dry run: {}: no prebuilt fits: {}", job->recipe.name, m.why_not);
        logger->info("dry run: {} would be built from {} ({} files{}), signed ({}), cached and installed in {}",
                     job->recipe.name, job->recipe.source.string(), job->sources.size(),
                     job->defines.empty() ? "" : ", defines " + job->defines.front(), hash,
                     install_dir(kernel, job->recipe.name).string());
      }
    }
    logger->info("dry run: nothing was written");
    return {};
  }

  volume::ModulesVolume volume(cfg.volume);
  KK_TRY_CTX(volume.prepare(), "volume " + cfg.volume.string());
  auto lock = KK_TRY(volume.lock(std::chrono::milliseconds(static_cast<long long>(cfg.lock_timeout_s * 1000))));
  // The keys above were computed from the tree without the lock; init-modules may have replaced
  // it since (docs/ARCHITECTURE.md, the reader rule). Under the lock it cannot change any more.
  if (volume.generation(kernel.release) != kernel.generation) {
    return fail(ExitCode::temp_fail, "the tree of kernel " + kernel.release + " on " + cfg.volume.string() +
                                         " was replaced by init-modules while this run read it; run again");
  }
  KK_TRY(volume.clear_staging());
  for (const auto* job : todo) {
    // Private build directories of builders killed before they could remove them.
    if (auto n = KK_TRY(files::remove_stale_staging(cfg.work_dir, "kmod-builder." + job->recipe.name)); n > 0) {
      logger->info("{}: removed {} build directories left by killed builders", job->recipe.name, n);
    }
  }
  int built = 0, from_cache = 0, prebuilt = 0, waited_for = 0;
  std::vector<json> records;
  for (auto* job : todo) {
    std::string why;
    if (installed_record(cfg.volume, kernel, *job, &why)) {
      logger->info("{}: installed by another process while this one waited {:.1f} s", job->recipe.name,
                   static_cast<double>(lock.waited().count()) / 1000.0);
      ++waited_for;
      continue;
    }
    auto entry = cache_entry(cfg.volume, job->key);
    // Without a signing option, a prebuilt entry by any signer fits (as in resolve_open_parts).
    const std::vector<std::string> any_signer = signing.ephemeral() ? std::vector<std::string>{"cert"} : std::vector<std::string>{};
    PrebuiltMatch m;
    if (!entry && !cfg.prebuilt.empty()) m = find_prebuilt(cfg.prebuilt, job->recipe.name, job->inputs, any_signer);
    if (entry) {
      logger->info("{}: in the cache ({}), installing without a build", job->recipe.name, job->key.substr(0, 16));
      ++from_cache;
    } else if (m.entry) {
      job->inputs = job->inputs.with_parts_of((*m.entry)["inputs"], any_signer);
      job->key = m.entry->value("key", "");
      entry = KK_TRY(adopt_prebuilt(cfg.volume, m));
      logger->info("{}: prebuilt in {} (built {} with {}), installing without a build", job->recipe.name, m.dir.string(),
                   entry->value("built", "?"), entry->value("compiler", "?"));
      ++prebuilt;
    } else {
      if (!m.why_not.empty()) logger->info("{}: no prebuilt module fits: {}; building", job->recipe.name, m.why_not);
      // A certificate part taken from an earlier build (resolve_open_parts) is not this run's:
      // what is built here is signed here, and cached under the key of its own signature.
      if (job->inputs.value("cert") != signing.key_part()) {
        job->inputs = job->inputs.with("cert", signing.key_part());
        job->key = job->inputs.key();
        entry = cache_entry(cfg.volume, job->key);
      }
      if (entry) {
        logger->info("{}: in the cache ({}), installing without a build", job->recipe.name, job->key.substr(0, 16));
        ++from_cache;
      } else {
        entry = KK_TRY(build_into_cache(*job, kernel, cfg, signing, compiler, hash));
        ++built;
      }
    }
    records.push_back(KK_TRY(install(*entry, *job, kernel, cfg)));
  }
  if (!records.empty()) {
    KK_TRY(run_depmod(kernel, cfg, records));
    for (const auto& record : records) KK_TRY(write_record(record, kernel, cfg));
  }
  logger->info("kernel {}: {} built, {} from the cache, {} prebuilt, {} up to date; modules in {} ({:.1f} s)", kernel.release,
               built, from_cache, prebuilt, jobs.size() - static_cast<size_t>(built + from_cache + prebuilt),
               (kernel.modules_dir / "extra").string(), seconds_since(start));
  (void)waited_for;
  return {};
}

}  // namespace kmodkit::kmod_builder
