#pragma once
// Small text helpers shared by the parsers (sources lists, Release files, options).

#include <string>
#include <string_view>
#include <vector>

namespace kmodkit::text {

// Without leading and trailing white space.
std::string_view trim(std::string_view s);
// The pieces between separators, empty ones included: split("a\n\nb", "\n") is {"a", "", "b"}.
// The views point into `s`.
std::vector<std::string_view> split(std::string_view s, std::string_view sep);
// The trimmed, non-empty items of a list: split_items(" a, b,,c ", ',') is {"a", "b", "c"}.
std::vector<std::string> split_items(std::string_view s, char sep);

// The current time as RFC 3339 in UTC, to the second: "2026-11-23T10:30:41Z" (manifests, records).
std::string utc_now_rfc3339();

}  // namespace kmodkit::text
