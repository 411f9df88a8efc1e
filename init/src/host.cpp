#include "host.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "apt.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::init::host {
namespace {

std::string unquote(std::string v) {
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    return v.substr(1, v.size() - 2);
  }
  return v;
}

bool has_word(std::string_view list, std::string_view word) {
  for (auto w : text::split(list, " ")) {
    if (w == word) return true;
  }
  return false;
}

}  // namespace

bool OsInfo::debian_family() const {
  return id == "debian" || id == "ubuntu" || has_word(id_like, "debian") || has_word(id_like, "ubuntu");
}

bool OsInfo::rhel_family() const {
  return id == "rhel" || id == "rhcos" || id == "fedora" || id == "centos" || id == "rocky" ||
         id == "almalinux" || has_word(id_like, "rhel") || has_word(id_like, "fedora");
}

std::string OsInfo::describe() const {
  if (id.empty()) return "unknown";
  return version_id.empty() ? id : id + " " + version_id;
}

OsInfo read_os_release(const fs::path& root) {
  OsInfo info;
  for (const char* rel : {"etc/os-release", "usr/lib/os-release"}) {
    // /etc/os-release is usually a link to the other; an absolute one must not lead out of the
    // host root into this container's own os-release.
    const auto resolved = resolve_in_root(root, rel);
    if (!resolved) continue;
    auto text = files::read_file(root / *resolved, 1 << 16);
    if (!text) continue;
    std::string lines;
    for (char c : *text) lines += c == '=' ? ':' : c;  // KEY=value -> KEY: value for the stanza reader
    auto fields = apt::parse_stanza(lines);
    info.id = unquote(fields["ID"]);
    info.id_like = unquote(fields["ID_LIKE"]);
    info.version_id = unquote(fields["VERSION_ID"]);
    info.rhel_version = unquote(fields["RHEL_VERSION"]);
    info.origin = (root / rel).string();
    return info;
  }
  return info;
}

OsInfo os_from_id(std::string_view id) {
  OsInfo info;
  info.id = std::string(id);
  info.origin = "--os";
  return info;
}

std::optional<std::string> resolve_in_root(const fs::path& root, std::string_view rel) {
  std::vector<std::string> done;  // resolved components so far
  std::vector<std::string> todo;  // components still to walk, in reverse order
  auto push_path = [&](std::string_view p) {
    auto parts = text::split(p, "/");
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!it->empty()) todo.emplace_back(*it);
    }
  };
  push_path(rel);
  int hops = 0;
  while (!todo.empty()) {
    std::string part = std::move(todo.back());
    todo.pop_back();
    if (part == ".") continue;
    if (part == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    fs::path current = root;
    for (const auto& d : done) current /= d;
    current /= part;
    struct stat st{};
    if (::lstat(current.c_str(), &st) != 0) return std::nullopt;
    if (S_ISLNK(st.st_mode)) {
      if (++hops > 40) return std::nullopt;
      std::error_code ec;
      auto target = fs::read_symlink(current, ec).string();
      if (ec) return std::nullopt;
      if (!target.empty() && target.front() == '/') done.clear();
      push_path(target);
      continue;
    }
    done.push_back(part);
  }
  std::string out;
  for (const auto& d : done) out += (out.empty() ? "" : "/") + d;
  return out;
}

}  // namespace kmodkit::init::host
