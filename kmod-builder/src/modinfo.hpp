#pragma once
// What libkmod reads from a module file: its vermagic, srcversion and appended signature.

#include <filesystem>
#include <string>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

struct ModuleInfo {
  std::string name;
  std::string vermagic;
  std::string srcversion;
  std::string signer;        // "" when unsigned
  std::string sig_key;       // key identifier, colon-separated hex as modinfo prints it
  std::string sig_hashalgo;  // "sha256", ...
};

// Reads a .ko (compressed or not) with kmod_module_new_from_path and kmod_module_get_info.
// Data error (65) naming the file when libkmod cannot read it as a module.
Result<ModuleInfo> read_module_info(const std::filesystem::path& ko);

}  // namespace kmodkit::kmod_builder
