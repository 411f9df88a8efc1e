#pragma once
// Integer fields of JSON documents kmodkit reads back from a volume or a ConfigMap, which another
// process or a person may have written: a number of the wrong kind or range is refused, never
// converted (nlohmann's get<int64_t>() of 1e300 is undefined behaviour).

#include <cstdint>
#include <optional>
#include <utility>

#include <nlohmann/json.hpp>

namespace kmodkit::json_field {

// The field `key` of the object `j` as a T: `fallback` when it is absent, nullopt when it is not
// an integer or does not fit T.
template <typename T>
std::optional<T> integer(const nlohmann::json& j, const char* key, T fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  const nlohmann::json& v = j[key];
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (!std::in_range<T>(u)) return std::nullopt;
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (!std::in_range<T>(i)) return std::nullopt;
    return static_cast<T>(i);
  }
  return std::nullopt;
}

}  // namespace kmodkit::json_field
