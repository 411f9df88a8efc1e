#pragma once
// Module recipes: what to build and how. A recipe is read from the project's JSON format
// (kmod-builder/README.md documents it), from a DKMS dkms.conf, or from both: a JSON recipe
// with "dkms": true starts from the dkms.conf of its source tree and adds what dkms.conf
// cannot say (probes, include directories, load parameters).

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

// A feature probe against the target kernel's headers, as DPDK's meson build runs them: when a
// line of `header` contains `line` (and `contains`, when given), `define` is passed to the
// compiler as -D<define>.
struct Probe {
  std::string define;
  std::string header;  // relative to the kernel source tree: include/linux/netdevice.h
  std::string line;
  std::string contains;
};

// A file or directory copied into the private build directory.
struct CopyItem {
  std::string from;  // relative to the recipe's source tree, or absolute (a glob is allowed)
  std::string to;    // relative to the build directory
};

struct Recipe {
  std::string name;     // also the directory under extra/ the modules are installed in
  std::string version;  // of the sources, for status; "" when unknown
  fs::path source;      // the source tree
  std::vector<CopyItem> copy;  // what goes into the build directory; default: the whole tree
  std::string directory = ".";  // where kbuild runs (M=), relative to the build directory
  std::vector<std::string> modules;  // built modules, relative to `directory`, without ".ko"
  std::vector<std::pair<std::string, std::string>> make_vars;  // NAME=VALUE given to make
  std::string cflags_var = "KCFLAGS";  // make variable that receives the flags below
  std::vector<std::string> include_dirs;    // relative to the build directory: -I
  std::vector<std::string> force_includes;  // relative to the build directory: -include
  std::vector<Probe> probes;
  std::string kernel_min, kernel_max;  // inclusive bounds on the release's x.y[.z]; "" = none
  // Regexes DKMS reads as bash's [[ =~ ]] does: POSIX extended, searched (not a whole match).
  std::string kernel_regex;  // the release must match: BUILD_EXCLUSIVE_KERNEL, or "kernel": {"regex"}
  std::string arch_regex;    // the architecture (uname -m) must match: BUILD_EXCLUSIVE_ARCH
  std::vector<std::string> load_depends;  // in-tree modules loaded first (issue 4's load step)
  std::vector<std::pair<std::string, std::string>> load_params;
  std::string origin;  // where the recipe was read from, for messages

  // Every field that changes the build's output, as canonical JSON (part of the cache key).
  std::string canonical() const;
  // Empty when the release is inside the recipe's kernel range and its regexes match the release
  // and `arch` (as `uname -m` names it); otherwise why not.
  std::string kernel_refusal(std::string_view release, std::string_view arch) const;
};

// Parses a JSON recipe. Relative paths in it ("source") are taken from `base`.
// Configuration error (78) naming `origin` and what is wrong.
Result<Recipe> parse_json(std::string_view text, const std::string& origin, const fs::path& base);

// Parses a dkms.conf (the assignments DKMS sources: PACKAGE_NAME, PACKAGE_VERSION,
// BUILT_MODULE_NAME[i], BUILT_MODULE_LOCATION[i], MAKE[0], BUILD_EXCLUSIVE_KERNEL,
// BUILD_EXCLUSIVE_ARCH, ...).
// Make variables given on its MAKE line are kept; its -C and M= are kbuild's and replaced.
// Anything that is not a plain assignment (shell code, PRE_BUILD scripts) is refused, naming
// the line: kmod-builder never runs code from a recipe.
Result<Recipe> parse_dkms_conf(std::string_view text, const std::string& origin, const fs::path& source);

// Resolves what a user gave: a built-in recipe's name (igb_uio, rte_kni), a .json recipe, a
// dkms.conf, or a directory holding one of them. `source` (from --source NAME=DIR) overrides the
// recipe's source tree. Input missing (66) when the recipe or its source tree is not there.
Result<Recipe> load(const std::string& spec, const std::string& source_override);

// Names of the built-in recipes.
std::vector<std::string> builtin_names();

// Splits a shell-like word list ("make -C x 'A=b c'") honouring single and double quotes and
// backslashes. Usage error on an unterminated quote.
Result<std::vector<std::string>> split_words(std::string_view line);

}  // namespace kmodkit::kmod_builder
