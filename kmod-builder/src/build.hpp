#pragma once
// One module build: the recipe's sources copied into a private directory, its probes run
// against the target headers, and kbuild run there with the log captured.

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "kernel.hpp"
#include "kmodkit/result.hpp"
#include "recipe.hpp"

namespace kmodkit::kmod_builder {

// A file of the sources as it will be in the build directory.
struct SourceEntry {
  std::string rel;   // path in the build directory
  fs::path from;     // where it is read from
  enum Type { file, symlink } type = file;
  bool executable = false;
  std::string link;  // symlink target
};

// Every file the recipe copies, sorted by `rel`. Input missing (66) naming a `from` that does
// not exist; device nodes and sockets in a source tree are skipped.
Result<std::vector<SourceEntry>> list_sources(const Recipe& recipe);

// The defines the recipe's probes yield on this kernel ("HAVE_ARG_TX_QUEUE"). Input missing
// (66) when a probed header is not in the headers.
Result<std::vector<std::string>> run_probes(const Recipe& recipe, const KernelTree& kernel);

struct BuildRequest {
  std::string cc;        // "" = kbuild's default (gcc)
  int jobs = 1;
  fs::path work_parent;  // the private build directory is made under it
  std::vector<std::string> defines;  // from run_probes
  std::chrono::seconds timeout{1800};
  // Path prefixes the compiler writes as another (-ffile-prefix-map), e.g. the volume's root
  // as "/"; the build directory is always written as ".".
  std::vector<std::pair<fs::path, std::string>> prefix_maps;
};

struct BuildResult {
  std::vector<fs::path> modules;  // the built .ko files, in the recipe's order
  std::string log;                // make's whole output
  std::vector<std::string> make_argv;
};

// Copies the sources into `dir` (made writable), then runs make -C <build> M=<dir>/<directory>
// modules. A failed build is a data error (65) when the compiler reported errors — the message
// carries the first of them — and an internal error (70) otherwise; `log` holds make's whole
// output either way (also on failure, through `log_out`).
Result<BuildResult> build(const Recipe& recipe, const KernelTree& kernel, const BuildRequest& request,
                          const std::vector<SourceEntry>& sources, const fs::path& dir, std::string* log_out);

// The first compiler error lines of a build log (lines with "error:" and the lines that name
// the file before them), at most `max_lines`.
std::vector<std::string> first_errors(std::string_view log, size_t max_lines = 3);

}  // namespace kmodkit::kmod_builder
