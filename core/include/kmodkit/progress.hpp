#pragma once
// Progress of long work: a bar on a terminal, a log line every few seconds otherwise.

#include <chrono>
#include <cstdint>
#include <string>

namespace kmodkit::progress {

// "1.5 MB", "812 kB", "17 B" (SI units, as download tools print them).
std::string format_bytes(uint64_t bytes);

class Reporter {
 public:
  // `total` 0 means unknown; set_total() may give it later.
  Reporter(std::string what, uint64_t total);
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;
  void set_total(uint64_t total);
  void set(uint64_t done);
  void finish();

 private:
  void report();
  std::string what_;
  uint64_t total_ = 0;
  uint64_t done_ = 0;
  bool tty_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace kmodkit::progress
