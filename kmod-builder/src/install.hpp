#pragma once
// `kmod-builder build`: build, sign, cache and install out-of-tree modules for the kernel whose
// tree init-modules laid on the modules volume.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

struct Config {
  fs::path volume = "/modules";
  std::string kernel_release;
  std::vector<std::string> recipes;         // built-in names, recipe files or directories
  std::map<std::string, std::string> sources;  // recipe name -> source tree override
  fs::path signing_key, signing_cert;       // both or neither; the key may be a PKCS#11 URI
  fs::path signing_pin_file;                // a token's PIN; else KMODKIT_SIGNING_PIN
  fs::path signatures;                      // detached signatures (sign-detached) instead of a key
  bool no_sign = false;                     // install the modules unsigned (for export-unsigned)
  fs::path prebuilt;                        // a directory of prebuilt entries (export --image-dir)
  std::string hash;                         // "" = the kernel's CONFIG_MODULE_SIG_HASH
  std::string cc;                           // "" = kbuild's default, gcc
  bool allow_compiler_mismatch = false;
  int jobs = 1;
  fs::path work_dir = "/tmp";               // private build directories are made here
  double lock_timeout_s = 1800;
  double build_timeout_s = 1800;
  bool dry_run = false;
};

// Makes <vol>/usr/lib/modules/<kver>/extra/<recipe>/ hold the recipe's signed modules: already
// installed from the same inputs -> nothing to do; in the cache -> installed from there;
// otherwise built, checked, signed, cached and installed; then depmod.
// Errors: 66 no headers / no sources, 65 the build failed on a compiler error or a module does
// not fit the kernel, 70 make failed otherwise, 73 the volume cannot be written, 75 the lock
// wait ran out, 78 recipe, key or compiler configuration.
Result<void> build_and_install(const Config& config);

}  // namespace kmodkit::kmod_builder
