#include "kmodkit/progress.hpp"

#include <cstdio>
#include <mutex>

#include "kmodkit/log.hpp"

namespace kmodkit::progress {
namespace {
std::mutex g_tty_mutex;
constexpr auto kLineEvery = std::chrono::seconds(5);
constexpr auto kBarEvery = std::chrono::milliseconds(100);
}  // namespace

std::string format_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes < 1000) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < 1000 * 1000) {
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(bytes) / 1e3);
  } else if (bytes < 1000ULL * 1000 * 1000) {
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / 1e9);
  }
  return buf;
}

Reporter::Reporter(std::string what, uint64_t total)
    : what_(std::move(what)), total_(total), tty_(log::stderr_is_tty()) {
  start_ = last_ = std::chrono::steady_clock::now();
}

Reporter::~Reporter() {
  if (!finished_ && tty_) {
    std::lock_guard lock(g_tty_mutex);
    std::fputs("\r\033[K", stderr);
  }
}

void Reporter::set_total(uint64_t total) { total_ = total; }

void Reporter::set(uint64_t done) {
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ >= (tty_ ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(kBarEvery)
                           : std::chrono::duration_cast<std::chrono::steady_clock::duration>(kLineEvery))) {
    last_ = now;
    report();
  }
}

void Reporter::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) {
    std::lock_guard lock(g_tty_mutex);
    std::fputs("\r\033[K", stderr);
  }
}

void Reporter::report() {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0;
  if (tty_) {
    std::lock_guard lock(g_tty_mutex);
    constexpr int width = 30;
    int filled = total_ > 0 ? static_cast<int>(static_cast<double>(done_) * width / static_cast<double>(total_)) : 0;
    if (filled > width) filled = width;
    std::fprintf(stderr, "\r\033[K%s [%.*s%*s] %s%s%s %s/s", what_.c_str(), filled,
                 "##############################", width - filled, "", format_bytes(done_).c_str(),
                 total_ > 0 ? " / " : "", total_ > 0 ? format_bytes(total_).c_str() : "",
                 format_bytes(static_cast<uint64_t>(rate)).c_str());
    std::fflush(stderr);
    return;
  }
  if (total_ > 0) {
    log::get("progress")->info("{}: {} of {} ({:.0f}%), {}/s", what_, format_bytes(done_),
                               format_bytes(total_), 100.0 * static_cast<double>(done_) / static_cast<double>(total_),
                               format_bytes(static_cast<uint64_t>(rate)));
  } else {
    log::get("progress")->info("{}: {}, {}/s", what_, format_bytes(done_),
                               format_bytes(static_cast<uint64_t>(rate)));
  }
}

}  // namespace kmodkit::progress
