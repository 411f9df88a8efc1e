#include "kmodkit/text.hpp"

#include <cctype>
#include <ctime>

namespace kmodkit::text {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, end - start));
    start = end + sep.size();
  }
}

std::vector<std::string> split_items(std::string_view s, char sep) {
  std::vector<std::string> out;
  for (auto item : split(s, std::string_view(&sep, 1))) {
    item = trim(item);
    if (!item.empty()) out.emplace_back(item);
  }
  return out;
}

std::string utc_now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kmodkit::text
