#include "kernel.hpp"

#include <charconv>
#include <regex>

#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/volume.hpp"
#include "modinfo.hpp"

namespace kmodkit::kmod_builder {
namespace {

// How a relative link is followed: `lexically` keeps the volume's own path (build leads to the
// public headers path, itself a link into the tree's generation); `on_disk` resolves through
// the links, for targets only the generation has (Debian's -common tree beside the headers).
enum class Follow { lexically, on_disk };

// Resolves a symlink of the volume inside the volume: relative targets from the link's
// directory, absolute ones from the volume's root.
fs::path resolve_in_volume(const fs::path& volume, const fs::path& link, Follow follow) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(link, ec);
  if (ec) return link;
  if (target.is_absolute()) return volume / target.relative_path();
  if (follow == Follow::on_disk) {
    auto resolved = fs::weakly_canonical(link, ec);
    if (!ec) return resolved;
  }
  return (link.parent_path() / target).lexically_normal();
}

std::vector<std::string> vermagic_words(std::string_view v) {
  std::vector<std::string> out;
  for (auto w : text::split(v, " ")) {
    if (!w.empty()) out.emplace_back(w);
  }
  return out;
}

}  // namespace

Result<Compiler> parse_compiler(std::string_view version_text) {
  Compiler c;
  c.text = std::string(text::trim(version_text));
  c.family = c.text.find("clang") != std::string::npos ? "clang" : "gcc";
  // The last x.y[.z] of the line is the version ("gcc-12 (Debian 12.2.0-14) 12.2.0").
  static const std::regex version(R"((\d+)\.(\d+)(\.\d+)?)");
  std::smatch last;
  for (std::sregex_iterator it(c.text.begin(), c.text.end(), version), end; it != end; ++it) last = *it;
  if (last.empty()) return fail(ExitCode::data_err, "no compiler version in '" + c.text + "'");
  const std::string major = last[1].str();
  if (std::from_chars(major.data(), major.data() + major.size(), c.major).ec != std::errc()) {
    return fail(ExitCode::data_err, "no compiler version in '" + c.text + "'");
  }
  return c;
}

Result<KernelTree> KernelTree::open(const fs::path& volume, const std::string& release) {
  KernelTree k;
  k.release = release;
  k.volume = volume;
  volume::ModulesVolume vol(volume);
  std::string why;
  k.generation = vol.generation(release);
  if (!KK_TRY_CTX(vol.find_tree(release, &why), "volume " + volume.string())) {
    return fail(ExitCode::no_input, "volume " + volume.string() + " has no complete tree for kernel " + release + " (" +
                                        why + "): run init-modules first");
  }
  k.modules_dir = volume / volume::modules_dir(release);
  k.build = resolve_in_volume(volume, k.modules_dir / "build", Follow::lexically);
  std::error_code ec;
  if (!fs::exists(k.build / ".config", ec) || !fs::exists(k.build / "Makefile", ec)) {
    return fail(ExitCode::no_input, "kernel " + release + ": " + k.build.string() +
                                        " has no .config and Makefile, so modules cannot be built against it");
  }
  k.source = k.build;
  if (fs::is_symlink(k.modules_dir / "source", ec)) {
    k.source = resolve_in_volume(volume, k.modules_dir / "source", Follow::on_disk);
  } else {
    // Debian's split headers: build/Makefile is one line, "include <dir>/../linux-headers-X-common/Makefile".
    auto makefile = files::read_file(k.build / "Makefile", 64 << 10);
    if (makefile) {
      static const std::regex include(R"(^include\s+(.+)/Makefile\s*$)");
      for (auto line : text::split(*makefile, "\n")) {
        std::smatch m;
        const std::string l(line);
        if (std::regex_match(l, m, include)) {
          std::string dir = m[1].str();
          const std::string prefix = "$(dir $(lastword $(MAKEFILE_LIST)))";
          // Resolved on disk, not lexically: the volume's headers path is a link into the tree's
          // generation, and the -common tree is beside its target there (docs/ARCHITECTURE.md).
          if (dir.starts_with(prefix)) dir = fs::weakly_canonical(k.build / dir.substr(prefix.size()), ec).string();
          if (fs::is_directory(dir, ec)) k.source = dir;
          break;
        }
      }
    }
  }
  auto config = KK_TRY_CTX(files::read_file(k.build / ".config", 16 << 20), "kernel " + release);
  for (auto line : text::split(config, "\n")) {
    if (line.empty() || line.front() == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string value(line.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    k.config.emplace(std::string(line.substr(0, eq)), std::move(value));
  }
  return k;
}

std::optional<fs::path> KernelTree::find_header(std::string_view relative) const {
  std::error_code ec;
  for (const auto& root : {build, source}) {
    const fs::path p = root / relative;
    if (fs::is_regular_file(p, ec)) return p;
  }
  return std::nullopt;
}

std::string KernelTree::config_value(std::string_view key) const {
  auto it = config.find(key);
  return it == config.end() ? "" : it->second;
}

bool KernelTree::config_enabled(std::string_view key) const {
  const auto v = config_value(key);
  return v == "y" || v == "m";
}

Result<Compiler> KernelTree::kernel_compiler() const {
  const std::string text = config_value("CONFIG_CC_VERSION_TEXT");
  if (text.empty()) {
    return fail(ExitCode::data_err, "kernel " + release + ": .config has no CONFIG_CC_VERSION_TEXT to tell its compiler");
  }
  return with_context(parse_compiler(text), "kernel " + release + ": CONFIG_CC_VERSION_TEXT");
}

KernelTree::Vermagic KernelTree::expected_vermagic() const {
  // An in-tree module: the kernel's own modules carry exactly what it accepts.
  std::error_code ec;
  const fs::path kernel_dir = modules_dir / "kernel";
  if (fs::is_directory(kernel_dir, ec)) {
    for (fs::recursive_directory_iterator it(kernel_dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!it->is_regular_file(ec) || name.find(".ko") == std::string::npos) continue;
      if (auto info = read_module_info(it->path())) {
        return {info->vermagic, it->path().lexically_relative(volume).string(), true};
      }
    }
  }
  // include/linux/vermagic.h: UTS_RELEASE, then SMP, preempt, mod_unload, modversions.
  std::string v = release + " ";
  if (config_enabled("CONFIG_SMP")) v += "SMP ";
  if (config_enabled("CONFIG_PREEMPT_BUILD") || config_enabled("CONFIG_PREEMPT")) v += "preempt ";
  else if (config_enabled("CONFIG_PREEMPT_RT")) v += "preempt_rt ";
  if (config_enabled("CONFIG_MODULE_UNLOAD")) v += "mod_unload ";
  if (config_enabled("CONFIG_MODVERSIONS")) v += "modversions ";
  return {v, "the headers' release and .config", false};
}

std::string vermagic_mismatch(std::string_view module_vermagic, const KernelTree::Vermagic& expected) {
  const auto got = vermagic_words(module_vermagic);
  const auto want = vermagic_words(expected.value);
  bool ok = !got.empty() && !want.empty() && got.front() == want.front();
  if (ok && expected.exact) ok = got == want;
  if (ok && !expected.exact) {
    for (const auto& w : want) ok = ok && std::find(got.begin(), got.end(), w) != got.end();
  }
  if (ok) return "";
  return "vermagic '" + std::string(text::trim(module_vermagic)) + "' does not match the kernel's '" +
         std::string(text::trim(expected.value)) + "' (from " + expected.origin + ")";
}

}  // namespace kmodkit::kmod_builder
