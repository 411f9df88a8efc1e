#pragma once
// `kmod-builder status`: what is installed on the modules volume, read from the records.

#include <filesystem>
#include <string>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

struct StatusOptions {
  fs::path volume = "/modules";
  std::string kernel_release;  // "" = every kernel on the volume
  bool json = false;
};
// Prints what is installed for which kernel, signed by whom, from which sources, and whether each
// module is still the one installed. Errors: 65 a file there that is not a record; read_file's error
// for one that cannot be read.
Result<void> print_status(const StatusOptions& options);

}  // namespace kmodkit::kmod_builder
