#include "load.hpp"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <libkmod.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/volume.hpp"
#include "signing.hpp"
#include "state.hpp"

namespace kmodkit::kmod_builder {
namespace {

using json = nlohmann::json;

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string read_trimmed(const fs::path& p) {
  auto t = files::read_file(p, 1 << 16);
  return t ? std::string(text::trim(*t)) : "";
}

// A module of an installed recipe, as its record lists it.
struct Installed {
  std::string recipe, name, path, sha256, signer, sig_key;
  std::string certificate;  // the signing certificate in DER on the volume (mokutil --import takes DER); "" if unknown
  bool ephemeral = false;
  std::vector<std::string> depends;
  std::vector<std::pair<std::string, std::string>> params;
};

Result<std::vector<Installed>> installed_modules(const LoadConfig& cfg) {
  const fs::path dir = records_dir(cfg.volume) / cfg.kernel_release;
  std::vector<fs::path> records;
  std::error_code ec;
  if (cfg.recipes.empty()) {
    if (fs::is_directory(dir, ec)) {
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() == ".json") records.push_back(e.path());
      }
    }
    std::sort(records.begin(), records.end());
    if (records.empty()) {
      return fail(ExitCode::no_input, "nothing is installed for kernel " + cfg.kernel_release + " on " + cfg.volume.string() +
                                          ": run kmod-builder build first");
    }
  } else {
    for (const auto& r : cfg.recipes) {
      const fs::path p = record_path(cfg.volume, cfg.kernel_release, r);
      if (!fs::exists(p, ec)) {
        return fail(ExitCode::no_input, "recipe " + r + " is not installed for kernel " + cfg.kernel_release + " on " +
                                            cfg.volume.string() + ": run kmod-builder build --recipe " + r + " first");
      }
      records.push_back(p);
    }
  }
  std::vector<Installed> out;
  for (const auto& p : records) {
    json r = json::parse(KK_TRY(files::read_file(p)), nullptr, false);
    if (r.is_discarded() || !r.is_object() || !r.contains("modules")) {
      return fail(ExitCode::data_err, p.string() + " is not a kmod-builder record");
    }
    try {  // a field of the wrong type (a hand edit) throws
      for (const auto& m : r["modules"]) {
        Installed i;
        i.recipe = r.value("recipe", "");
        i.name = m.value("name", "");
        i.path = m.value("path", "");
        i.sha256 = m.value("sha256", "");
        i.signer = r.value("signer", "");
        i.sig_key = r.value("sig_key", "");
        i.ephemeral = r.value("ephemeral_key", false);
        if (const std::string cert = r.value("certificate", ""); !cert.empty()) i.certificate = (cfg.volume / cert).string();
        if (r.contains("load") && r["load"].is_object()) {
          const json& load = r["load"];
          if (load.contains("depends") && load["depends"].is_array()) {
            for (const auto& d : load["depends"]) i.depends.push_back(d.get<std::string>());
          }
          if (load.contains("params") && load["params"].is_object()) {
            for (auto kv = load["params"].begin(); kv != load["params"].end(); ++kv) i.params.emplace_back(kv.key(), kv.value().get<std::string>());
          }
        }
        out.push_back(std::move(i));
      }
    } catch (const json::exception& e) {
      return fail(ExitCode::data_err, p.string() + " is not a kmod-builder record: " + e.what());
    }
  }
  return out;
}

bool is_live(const fs::path& sysfs, const std::string& name) {
  const auto state = read_trimmed(sysfs / "module" / name / "initstate");
  return state == "live" || state == "coming";
}

// Devices bound to a driver: the PCI addresses under /sys/bus/pci/drivers/<name>/.
std::vector<std::string> bound_devices(const fs::path& sysfs, const std::string& driver) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sysfs / "bus/pci/drivers" / driver, ec)) {
    const auto n = e.path().filename().string();
    if (n.size() == 12 && n[4] == ':' && n[7] == ':' && n[10] == '.') out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string options_text(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string s;
  for (const auto& [k, v] : params) s += (s.empty() ? "" : " ") + k + "=" + v;
  return s;
}

// How to enroll a module's signing certificate as a Machine Owner Key: mokutil reads DER.
std::string enroll_command(const Installed& m) {
  return "mokutil --import " + (m.certificate.empty() ? std::string("<the signing certificate in DER>") : m.certificate);
}

Error insert_error(int err, const Installed& m, const KernelPolicy& policy, const std::string& kver) {
  const std::string who = "kernel " + kver + " refused " + m.name + " (" + m.path + "): " + std::strerror(err);
  switch (err) {
    case ENOKEY:
    case EKEYREJECTED:
    case EBADMSG: {
      std::string s = who + "; the kernel enforces module signatures (" + policy.describe() + ") and ";
      if (m.signer.empty()) {
        s += "the module is not signed: build it with --signing-key and --signing-cert";
      } else {
        s += "does not trust its signer '" + m.signer + "' (key " + m.sig_key + ")" +
             (m.ephemeral ? ", an ephemeral key made by kmod-builder: sign with a key of your own" : "") +
             "; enroll the certificate, e.g. as a MOK: " + enroll_command(m) +
             ", confirm at the next boot's MOK manager, or build the modules with a key the kernel already trusts";
      }
      return Error{ExitCode::no_perm, s};
    }
    case EPERM:
      if (policy.lockdown != "none" && policy.lockdown_known) {
        return Error{ExitCode::no_perm, who + "; the kernel is locked down (lockdown=" + policy.lockdown +
                                            "), which loads only modules signed by a trusted key"};
      }
      return Error{ExitCode::no_perm, who + "; the process lacks CAP_SYS_MODULE: run the container privileged or add "
                                          "the SYS_MODULE capability"};
    case ENOSYS:
      return Error{ExitCode::unavailable, who + "; this kernel cannot load modules"};
    case ENOEXEC:
      return Error{ExitCode::data_err, who + "; its vermagic or format does not fit the running kernel: rebuild it "
                                             "for " + kver + " (kmod-builder build)"};
    default:
      return Error{ExitCode::software, who + "; the kernel log (dmesg) says why"};
  }
}

struct KmodCtx {
  std::unique_ptr<kmod_ctx, decltype(&kmod_unref)> ctx{nullptr, kmod_unref};
};

Result<KmodCtx> open_ctx(const LoadConfig& cfg) {
  const fs::path dir = cfg.volume / volume::modules_dir(cfg.kernel_release);
  KmodCtx c;
  c.ctx.reset(kmod_new(dir.c_str(), nullptr));
  if (!c.ctx) return fail(ExitCode::software, "libkmod: cannot open a context on " + dir.string());
  kmod_load_resources(c.ctx.get());
  return c;
}

using ModulePtr = std::unique_ptr<kmod_module, decltype(&kmod_module_unref)>;
using ListPtr = std::unique_ptr<kmod_list, decltype(&kmod_module_unref_list)>;

// `mod` and what it depends on (modules.dep), in the order modprobe loads them: each module after
// its own dependencies.
void load_order(kmod_module* mod, std::vector<std::string>& out) {
  const std::string name = kmod_module_get_name(mod);
  if (std::find(out.begin(), out.end(), name) != out.end()) return;
  ListPtr deps(kmod_module_get_dependencies(mod), kmod_module_unref_list);
  kmod_list* l = nullptr;
  kmod_list_foreach(l, deps.get()) {
    ModulePtr dep(kmod_module_get_module(l), kmod_module_unref);
    load_order(dep.get(), out);
  }
  if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
}

// Unloads, last first, the modules this run loaded, so that a run that fails part-way leaves the
// kernel as it found it. Returns what to add to the failure's sentence.
std::string roll_back(kmod_ctx* ctx, const std::vector<std::string>& loaded) {
  std::string unloaded, kept;
  for (auto it = loaded.rbegin(); it != loaded.rend(); ++it) {
    kmod_module* raw = nullptr;
    int err = kmod_module_new_from_name(ctx, it->c_str(), &raw);
    if (err == 0) {
      ModulePtr mod(raw, kmod_module_unref);
      err = kmod_module_remove_module(mod.get(), 0);
    }
    if (err < 0) {
      kept += (kept.empty() ? "" : ", ") + *it + " (" + std::strerror(-err) + ")";
    } else {
      unloaded += (unloaded.empty() ? "" : ", ") + *it;
    }
  }
  std::string s;
  if (!unloaded.empty()) s += "; unloaded " + unloaded + ", which this run had loaded";
  if (!kept.empty()) s += "; could not unload " + kept + ", which this run had loaded";
  return s;
}

// Loads the in-tree module `name` as modprobe would (what it depends on first, soft dependencies
// included), from the tree of ctx; what this call loaded is appended to loaded_here, for a
// roll-back. 66 with `missing` when the tree has no such module; the kernel's refusals as
// insert_error maps them for `who` (its path, when empty, the module's file). In a dry run, only
// the lookup.
Result<void> probe_in_tree(const LoadConfig& cfg, kmod_ctx* ctx, Installed who, const KernelPolicy& policy,
                           std::vector<std::string>& loaded_here, const std::string& missing) {
  const std::string& name = who.name;
  kmod_list* list = nullptr;
  if (kmod_module_new_from_lookup(ctx, name.c_str(), &list) < 0 || list == nullptr) return fail(ExitCode::no_input, missing);
  ListPtr guard(list, kmod_module_unref_list);
  ModulePtr mod(kmod_module_get_module(list), kmod_module_unref);
  if (cfg.dry_run) return {};
  // The module and its own dependencies that are not loaded yet are this call's to undo.
  std::vector<std::string> order;
  load_order(mod.get(), order);
  std::erase_if(order, [&](const std::string& n) { return is_live(cfg.sysfs, n); });
  const int err = kmod_module_probe_insert_module(mod.get(), 0, nullptr, nullptr, nullptr, nullptr);
  for (const auto& n : order) {
    if (is_live(cfg.sysfs, n)) loaded_here.push_back(n);
  }
  if (err < 0 && err != -EEXIST) {
    const char* path = kmod_module_get_path(mod.get());
    if (who.path.empty()) who.path = path != nullptr ? path : name;
    return fail(insert_error(-err, who, policy, cfg.kernel_release));
  }
  return {};
}

Result<void> load_each(const LoadConfig& cfg, const std::vector<Installed>& modules, const KernelPolicy& policy,
                       kmod_ctx* ctx, std::vector<std::string>& loaded_here) {
  auto logger = log::get("kmod-builder");
  int loaded = 0, already = 0;
  for (const auto& m : modules) {
    for (const auto& dep : m.depends) {
      if (is_live(cfg.sysfs, dep)) continue;
      KK_TRY(probe_in_tree(cfg, ctx, Installed{m.recipe, dep, dep, "", "", "", "", false, {}, {}}, policy, loaded_here,
                           m.name + " needs " + dep + ", which the modules tree of " + cfg.kernel_release +
                               " on the volume does not have"));
      logger->info("{}: loaded {} (in-tree dependency)", m.name, dep);
    }
    const fs::path path = cfg.volume / m.path;
    // Only what kmod-builder built, signed and recorded is loaded.
    const auto bytes = files::read_file(path, 256 << 20);
    if (!bytes || digest::sha256_hex(*bytes) != m.sha256) {
      return fail(ExitCode::data_err, m.name + ": " + path.string() + " is missing or not the file kmod-builder installed " +
                                          "(its SHA-256 differs from the record): rebuild with kmod-builder build");
    }
    // A signature made for other bytes is refused here, before the kernel sees the module: on a
    // kernel that does not enforce signatures it would load, tainted.
    if (!m.signer.empty() && !m.certificate.empty()) {
      std::error_code ec;
      if (!fs::exists(m.certificate, ec)) {
        return fail(ExitCode::no_input, m.name + ": the certificate its record names, " + m.certificate +
                                            ", is missing, so its signature cannot be checked: rebuild with kmod-builder build");
      }
      if (auto ok = signing::verify(*bytes, fs::path(m.certificate)); !ok) {
        return fail(ExitCode::data_err, m.name + ": " + path.string() + ": " + ok.error().message + "; not loaded");
      }
    }
    const std::string want = build_id_of_file(path);
    if (is_live(cfg.sysfs, m.name)) {
      const std::string have = build_id_of_loaded(cfg.sysfs, m.name);
      if (!want.empty() && have == want) {
        logger->info("{}: already loaded from this build (build id {})", m.name, want.substr(0, 16));
        ++already;
        continue;
      }
      if (!cfg.replace) {
        return fail(ExitCode::config, m.name + " is loaded from another build (build id " + (have.empty() ? "unknown" : have.substr(0, 16)) +
                                          ", installed " + want.substr(0, 16) + "): unload it first, or use --replace");
      }
      KK_TRY(unload_modules(LoadConfig{cfg.volume, cfg.kernel_release, {m.recipe}, {}, cfg.sysfs, cfg.securityfs,
                                       cfg.proc_keys, false, false, false}));
    }
    kmod_module* raw = nullptr;
    if (int err = kmod_module_new_from_path(ctx, path.c_str(), &raw); err < 0) {
      return fail(ExitCode::no_input, m.name + ": cannot open " + path.string() + ": " + std::strerror(-err));
    }
    ModulePtr mod(raw, kmod_module_unref);
    const std::string options = options_text(m.params);
    const int err = kmod_module_insert_module(mod.get(), 0, options.empty() ? nullptr : options.c_str());
    if (err == -EEXIST && build_id_of_loaded(cfg.sysfs, m.name) == want && !want.empty()) {
      logger->info("{}: loaded by another process at the same time, from this build", m.name);
      ++already;
      continue;
    }
    if (err == -EEXIST) {
      return fail(ExitCode::config, m.name + " was loaded by another process from another build: unload it first, or use --replace");
    }
    if (err < 0) return fail(insert_error(-err, m, policy, cfg.kernel_release));
    loaded_here.push_back(m.name);
    logger->info("{}: loaded from {}{}", m.name, m.path, options.empty() ? "" : " with " + options);
    ++loaded;
  }
  logger->info("kernel {}: {} module(s) loaded, {} already loaded", cfg.kernel_release, loaded, already);
  return {};
}

}  // namespace

std::string KernelPolicy::describe() const {
  return std::string("module.sig_enforce=") + (sig_enforce ? "1" : "0") + ", lockdown=" + (lockdown_known ? lockdown : "unknown");
}

KernelPolicy read_policy(const fs::path& sysfs, const fs::path& securityfs) {
  KernelPolicy p;
  const auto enforce = read_trimmed(sysfs / "module/module/parameters/sig_enforce");
  p.sig_enforce = enforce == "Y" || enforce == "1";
  const auto lockdown = read_trimmed(securityfs / "lockdown");
  const auto open = lockdown.find('['), close = lockdown.find(']');
  if (open != std::string::npos && close != std::string::npos && close > open) {
    p.lockdown = lockdown.substr(open + 1, close - open - 1);
    p.lockdown_known = true;
  }
  return p;
}

std::optional<bool> kernel_knows_signer(const fs::path& proc_keys, const std::string& signer) {
  auto text = files::read_file(proc_keys, 4 << 20);
  if (!text) return std::nullopt;
  for (auto line : text::split(*text, "\n")) {
    if (line.find(" asymmetric ") != std::string_view::npos && !signer.empty() &&
        line.find(signer) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

std::string build_id_of_file(const fs::path& ko) {
  elf_version(EV_CURRENT);
  files::Fd fd(::open(ko.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return "";
  std::unique_ptr<Elf, decltype(&elf_end)> elf(elf_begin(fd.get(), ELF_C_READ, nullptr), elf_end);
  if (!elf) return "";
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(elf.get(), &shstrndx) != 0) return "";
  for (Elf_Scn* scn = elf_nextscn(elf.get(), nullptr); scn != nullptr; scn = elf_nextscn(elf.get(), scn)) {
    GElf_Shdr shdr;
    if (gelf_getshdr(scn, &shdr) == nullptr || shdr.sh_type != SHT_NOTE) continue;
    const char* name = elf_strptr(elf.get(), shstrndx, shdr.sh_name);
    if (name == nullptr || std::strcmp(name, ".note.gnu.build-id") != 0) continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (data == nullptr) return "";
    GElf_Nhdr nhdr;
    size_t name_off = 0, desc_off = 0;
    if (gelf_getnote(data, 0, &nhdr, &name_off, &desc_off) == 0 || nhdr.n_type != NT_GNU_BUILD_ID) return "";
    return hex(static_cast<const unsigned char*>(data->d_buf) + desc_off, nhdr.n_descsz);
  }
  return "";
}

std::string build_id_of_loaded(const fs::path& sysfs, const std::string& name) {
  auto raw = files::read_file(sysfs / "module" / name / "notes/.note.gnu.build-id", 4096);
  if (!raw || raw->size() < 12) return "";
  uint32_t namesz = 0, descsz = 0;
  std::memcpy(&namesz, raw->data(), 4);
  std::memcpy(&descsz, raw->data() + 4, 4);
  const size_t desc = 12 + ((namesz + 3) & ~3u);
  if (desc + descsz > raw->size()) return "";
  return hex(reinterpret_cast<const unsigned char*>(raw->data()) + desc, descsz);
}

Result<void> load_in_tree(const LoadConfig& cfg, const std::string& name) {
  auto logger = log::get("kmod-builder");
  std::string key = name;
  std::replace(key.begin(), key.end(), '-', '_');
  if (is_live(cfg.sysfs, key)) return {};
  volume::TreeUse use;
  if (!cfg.dry_run) use = KK_TRY(hold_tree(cfg.volume, cfg.kernel_release));
  auto ctx = KK_TRY(open_ctx(cfg));
  std::vector<std::string> loaded;
  const Installed who{"", name, "", "", "", "", "", false, {}, {}};
  KK_TRY(probe_in_tree(cfg, ctx.ctx.get(), who, read_policy(cfg.sysfs, cfg.securityfs), loaded,
                       name + " is not loaded, and the modules tree of " + cfg.kernel_release + " on " + cfg.volume.string() +
                           " does not have it"));
  if (cfg.dry_run) logger->info("dry run: would load {} (in-tree) from the modules tree of {}", name, cfg.kernel_release);
  else logger->info("{}: loaded (in-tree) from the modules tree of {}", name, cfg.kernel_release);
  return {};
}

Result<void> load_modules(const LoadConfig& cfg) {
  auto logger = log::get("kmod-builder");
  // Held while the modules are read from the tree, so init-modules gc leaves it alone meanwhile
  // (docs/ARCHITECTURE.md, "Kernel upgrades"); the pod mounts the volume read-only here.
  volume::TreeUse use;
  if (!cfg.dry_run) use = KK_TRY(hold_tree(cfg.volume, cfg.kernel_release));
  auto modules = KK_TRY(installed_modules(cfg));
  // Command-line parameters: "module.key=value", or "key=value" when there is one module.
  for (const auto& p : cfg.params) {
    const auto eq = p.find('=');
    const auto dot = p.find('.');
    std::string module, key = p.substr(0, eq);
    if (dot != std::string::npos && dot < eq) {
      module = p.substr(0, dot);
      key = p.substr(dot + 1, eq - dot - 1);
    } else if (modules.size() == 1) {
      module = modules.front().name;
    }
    if (eq == std::string::npos || key.empty() || module.empty()) {
      return fail(ExitCode::usage, "--param: '" + p + "' is not MODULE.KEY=VALUE");
    }
    auto it = std::find_if(modules.begin(), modules.end(), [&](const Installed& m) { return m.name == module; });
    if (it == modules.end()) return fail(ExitCode::usage, "--param: module " + module + " is not among those to load");
    std::erase_if(it->params, [&](const auto& kv) { return kv.first == key; });
    it->params.emplace_back(key, p.substr(eq + 1));
  }
  const auto policy = read_policy(cfg.sysfs, cfg.securityfs);
  logger->info("kernel {}: {}", cfg.kernel_release, policy.describe());
  const bool enforced = policy.sig_enforce || (policy.lockdown_known && policy.lockdown != "none");
  for (const auto& m : modules) {
    if (!enforced) continue;
    const auto known = kernel_knows_signer(cfg.proc_keys, m.signer);
    if (m.signer.empty()) {
      logger->warn("{}: not signed, and the kernel enforces signatures: the kernel will refuse it", m.name);
    } else if (known.has_value() && !*known) {
      logger->warn("{}: signed by '{}' (key {}), which is not among the kernel's keys in {}: the kernel will refuse it "
                   "unless the certificate is enrolled ({})",
                   m.name, m.signer, m.sig_key, cfg.proc_keys.string(), enroll_command(m));
    }
  }
  if (cfg.dry_run) {
    for (const auto& m : modules) {
      std::string deps;
      for (const auto& d : m.depends) deps += (deps.empty() ? "" : ", ") + d;
      logger->info("dry run: would load {} ({}) after {} with '{}'", m.name, m.path, deps.empty() ? "nothing" : deps,
                   options_text(m.params));
    }
    return {};
  }

  auto ctx = KK_TRY(open_ctx(cfg));
  // What this run loads, in order: taken out again, last first, when a later step fails.
  std::vector<std::string> loaded_here;
  auto result = load_each(cfg, modules, policy, ctx.ctx.get(), loaded_here);
  if (!result && !loaded_here.empty()) {
    Error e = result.error();
    e.message += roll_back(ctx.ctx.get(), loaded_here);
    return fail(std::move(e));
  }
  return result;
}

Result<void> unload_modules(const LoadConfig& cfg) {
  auto logger = log::get("kmod-builder");
  auto modules = KK_TRY(installed_modules(cfg));
  auto ctx = KK_TRY(open_ctx(cfg));
  for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
    const auto& m = *it;
    if (!is_live(cfg.sysfs, m.name)) {
      logger->info("{}: not loaded", m.name);
      continue;
    }
    const auto devices = bound_devices(cfg.sysfs, m.name);
    if (!devices.empty() && !cfg.force) {
      std::string list;
      for (const auto& d : devices) list += (list.empty() ? "" : ", ") + d;
      return fail(ExitCode::temp_fail, m.name + " still drives " + list + ": unbind first (kmod-builder unbind), or --force");
    }
    if (cfg.dry_run) {
      logger->info("dry run: would unload {}", m.name);
      continue;
    }
    kmod_module* raw = nullptr;
    if (kmod_module_new_from_name(ctx.ctx.get(), m.name.c_str(), &raw) < 0) {
      return fail(ExitCode::software, "libkmod: cannot name module " + m.name);
    }
    std::unique_ptr<kmod_module, decltype(&kmod_module_unref)> mod(raw, kmod_module_unref);
    if (int err = kmod_module_remove_module(mod.get(), 0); err < 0) {
      return fail(-err == EPERM ? ExitCode::no_perm : ExitCode::temp_fail,
                  "kernel refused to unload " + m.name + ": " + std::strerror(-err));
    }
    logger->info("{}: unloaded", m.name);
  }
  return {};
}

}  // namespace kmodkit::kmod_builder
