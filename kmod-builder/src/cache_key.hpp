#pragma once
// The cache key of a recipe's modules: the SHA-256 of every input that changes the built and
// signed bytes (README, "What a run does"). Kept as named parts, so that an entry made elsewhere
// (a prebuilt image, another volume) can say which input differs from this run's.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kmodkit::kmod_builder {

class KeyInputs {
 public:
  // Adds a part; parts are hashed in the order added, as "<name> <value>\n".
  void add(std::string name, std::string value);
  // The key: SHA-256 (hex) of "kmodkit cache v1\n" and the parts.
  std::string key() const;
  // The same inputs with part `name` set to `value` (a run without a compiler takes the one an
  // entry was built with).
  KeyInputs with(std::string_view name, std::string value) const;
  // These inputs with each part named in `names` set to its value in `summary` (an entry's
  // "inputs"); a part the summary lacks, or summarises by digest, is left as it is.
  KeyInputs with_parts_of(const nlohmann::json& summary, const std::vector<std::string>& names) const;
  // A part's value; "" when there is no such part.
  std::string value(std::string_view name) const;
  // The parts as a JSON object for a cache entry ("inputs"), long values (the recipe) as their
  // SHA-256: what first_difference compares.
  nlohmann::json summary() const;
  // The first part (in hashing order) in which an entry's summary `theirs` differs from these
  // inputs, as words for a log line: "kernel: 6.1.0-18-amd64 here, 6.1.0-57-amd64 there". ""
  // when none differs; "it records no inputs" for an entry without a summary.
  std::string first_difference(const nlohmann::json& theirs) const;

 private:
  std::vector<std::pair<std::string, std::string>> parts_;
};

}  // namespace kmodkit::kmod_builder
