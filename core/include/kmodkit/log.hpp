#pragma once
// Logging on spdlog: one logger per binary, child loggers per area ("init.fetch").
// Human-readable lines on a terminal, one JSON object per line otherwise.

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::log {

enum class Format { automatic, human, json };

// Parses "auto", "human" or "json"; a usage error names the bad value.
Result<Format> parse_format(std::string_view text);
// Parses "debug", "info", "warn" or "error"; a usage error names the bad value.
Result<spdlog::level::level_enum> parse_level(std::string_view text);

// Sets up the binary's root logger (named after the binary) writing to stderr.
void init(std::string_view binary, Format format, spdlog::level::level_enum level);

// Whether init() chose JSON lines (json, or auto without a terminal): reports a binary prints
// on stdout follow the same choice.
bool json_lines();

// The child logger for an area, e.g. get("init.fetch"); created on first use with the root's sinks.
std::shared_ptr<spdlog::logger> get(const std::string& area);

// True when stderr is a terminal (progress bars and colour only then).
bool stderr_is_tty();

}  // namespace kmodkit::log
