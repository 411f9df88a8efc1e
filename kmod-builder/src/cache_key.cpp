#include "cache_key.hpp"

#include "kmodkit/digest.hpp"

namespace kmodkit::kmod_builder {

using json = nlohmann::json;

namespace {
// Values longer than this are summarised by their SHA-256 (the recipe's canonical text).
constexpr size_t kSummaryMax = 200;
}  // namespace

void KeyInputs::add(std::string name, std::string value) { parts_.emplace_back(std::move(name), std::move(value)); }

std::string KeyInputs::key() const {
  digest::Sha256 k;
  k.update("kmodkit cache v1\n");
  for (const auto& [name, value] : parts_) k.update(name + " " + value + "\n");
  return k.hex();
}

KeyInputs KeyInputs::with(std::string_view name, std::string value) const {
  KeyInputs out = *this;
  for (auto& [n, v] : out.parts_) {
    if (n == name) v = value;
  }
  return out;
}

KeyInputs KeyInputs::with_parts_of(const json& summary, const std::vector<std::string>& names) const {
  KeyInputs out = *this;
  for (const auto& name : names) {
    const auto it = summary.is_object() ? summary.find(name) : summary.end();
    if (it == summary.end() || !it->is_string() || it->get<std::string>().starts_with("sha256:")) continue;
    out = out.with(name, it->get<std::string>());
  }
  return out;
}

std::string KeyInputs::value(std::string_view name) const {
  for (const auto& [n, v] : parts_) {
    if (n == name) return v;
  }
  return "";
}

json KeyInputs::summary() const {
  json out = json::object();
  for (const auto& [name, value] : parts_) {
    out[name] = value.size() > kSummaryMax ? "sha256:" + digest::sha256_hex(value) : value;
  }
  return out;
}

std::string KeyInputs::first_difference(const json& theirs) const {
  if (!theirs.is_object() || theirs.empty()) return "it records no inputs";
  const json ours = summary();
  for (const auto& [name, unused] : parts_) {
    const std::string here = ours.value(name, "");
    const auto t = theirs.find(name);
    const std::string there = t == theirs.end() || !t->is_string() ? "(none)" : t->get<std::string>();
    if (here != there) return name + ": " + (here.empty() ? "(none)" : here) + " here, " + (there.empty() ? "(none)" : there) + " there";
  }
  return "";
}

}  // namespace kmodkit::kmod_builder
