#pragma once
// Runs a program with its output captured and a timeout.

#include <chrono>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::subprocess {

struct Options {
  std::filesystem::path cwd;                              // empty: inherit
  std::vector<std::pair<std::string, std::string>> env;   // set on top of the inherited environment
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  size_t max_output = 16 << 20;  // bytes kept of stdout+stderr; the rest is dropped
};

struct Outcome {
  int exit_code = -1;   // the exit status when it exited
  int signal = 0;       // the signal that ended it, or 0
  bool timed_out = false;
  std::string output;   // stdout and stderr, interleaved as written
  bool ok() const { return exit_code == 0 && signal == 0 && !timed_out; }
  // "exited with 2", "killed by signal 9", "timed out after 10 s"
  std::string describe() const;
};

// Starts argv[0] (looked up in PATH) and waits for it. Failing to start it is an error
// (input missing, 66, when the program does not exist); a non-zero exit is not: see Outcome.
// On timeout the whole process group is killed.
Result<Outcome> run(const std::vector<std::string>& argv, const Options& options = {});

}  // namespace kmodkit::subprocess
