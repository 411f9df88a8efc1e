#include "kmodkit/log.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include <chrono>
#include <mutex>

namespace kmodkit::log {
namespace {

// One JSON object per line: time, level, logger, msg. nlohmann does the escaping.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const auto ms = duration_cast<milliseconds>(msg.time.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char stamp[64];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    nlohmann::json line = {
        {"time", stamp},
        {"level", spdlog::level::to_string_view(msg.level).data()},
        {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
        {"msg", std::string(msg.payload.data(), msg.payload.size())},
    };
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::mutex g_mutex;
spdlog::sink_ptr g_sink;
std::string g_root = "kmodkit";
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_json = false;

spdlog::sink_ptr sink_locked() {
  if (!g_sink) {
    g_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>(spdlog::color_mode::automatic);
    g_sink->set_pattern("%H:%M:%S.%e %^%-5l%$ [%n] %v");
  }
  return g_sink;
}

}  // namespace

Result<Format> parse_format(std::string_view text) {
  if (text == "auto") return Format::automatic;
  if (text == "human") return Format::human;
  if (text == "json") return Format::json;
  return fail(ExitCode::usage,
              "log format '" + std::string(text) + "' is not one of auto, human, json");
}

Result<spdlog::level::level_enum> parse_level(std::string_view text) {
  if (text == "debug") return spdlog::level::debug;
  if (text == "info") return spdlog::level::info;
  if (text == "warn") return spdlog::level::warn;
  if (text == "error") return spdlog::level::err;
  return fail(ExitCode::usage,
              "log level '" + std::string(text) + "' is not one of debug, info, warn, error");
}

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

bool json_lines() {
  std::lock_guard lock(g_mutex);
  return g_json;
}

void init(std::string_view binary, Format format, spdlog::level::level_enum level) {
  std::lock_guard lock(g_mutex);
  auto sink = sink_locked();
  const bool json = format == Format::json || (format == Format::automatic && !stderr_is_tty());
  if (json) {
    sink->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    sink->set_pattern("%H:%M:%S.%e %^%-5l%$ [%n] %v");
  }
  g_root = std::string(binary);
  g_level = level;
  g_json = json;
  spdlog::drop_all();
  auto root = std::make_shared<spdlog::logger>(g_root, sink);
  root->set_level(level);
  root->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(root);
}

std::shared_ptr<spdlog::logger> get(const std::string& area) {
  std::lock_guard lock(g_mutex);
  if (auto existing = spdlog::get(area)) return existing;
  auto logger = std::make_shared<spdlog::logger>(area, sink_locked());
  logger->set_level(g_level);
  logger->flush_on(spdlog::level::trace);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace kmodkit::log
