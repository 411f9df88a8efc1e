#pragma once
// The target kernel's tree on the modules volume, as init-modules laid it out: where kbuild
// runs, its configuration, the compiler it was built with, and the vermagic modules need.

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

struct Compiler {
  std::string family;  // "gcc" or "clang"
  int major = 0;
  std::string text;    // the first line of --version, or CONFIG_CC_VERSION_TEXT
};

// Reads "gcc-12 (Debian 12.2.0-14) 12.2.0" or "Debian clang version 14.0.6". Data error when
// no version is in it.
Result<Compiler> parse_compiler(std::string_view version_text);

struct KernelTree {
  std::string release;
  fs::path volume;
  fs::path modules_dir;  // <vol>/usr/lib/modules/<release>
  fs::path build;        // the headers kbuild runs in (the target of modules_dir/build)
  fs::path source;       // the full source headers (Debian's -common), == build when not split
  std::string generation;  // the tree's generation on the volume when it was opened ("" before generations)
  std::map<std::string, std::string, std::less<>> config;  // .config, quotes removed

  // Opens the tree init-modules laid out for `release`: its manifest must exist (a tree without
  // one is not trusted), and build/ must hold .config and Makefile. Input missing (66) otherwise,
  // saying to run init-modules first.
  static Result<KernelTree> open(const fs::path& volume, const std::string& release);

  // A header of the kernel source tree ("include/linux/netdevice.h"), looked up in build/ then
  // in the source tree.
  std::optional<fs::path> find_header(std::string_view relative) const;
  std::string config_value(std::string_view key) const;  // "" when unset
  bool config_enabled(std::string_view key) const;       // =y or =m

  // The compiler the kernel was built with (CONFIG_CC_VERSION_TEXT).
  Result<Compiler> kernel_compiler() const;

  // The vermagic modules built for this kernel must carry, and where it was taken from: an
  // in-tree module of the volume's modules tree when there is one, otherwise composed from
  // the headers' release and .config as include/linux/vermagic.h does.
  struct Vermagic {
    std::string value;
    std::string origin;
    bool exact = false;  // taken from a module: compare whole; composed: compare its flags
  };
  Vermagic expected_vermagic() const;
};

// Empty when a module's vermagic fits the kernel; otherwise the sentence that says why not.
std::string vermagic_mismatch(std::string_view module_vermagic, const KernelTree::Vermagic& expected);

}  // namespace kmodkit::kmod_builder
