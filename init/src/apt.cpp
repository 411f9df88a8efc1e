#include "apt.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>

#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::init::apt {
namespace {

using text::trim;

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool truthy(std::string_view v) {
  auto l = lower(trim(v));
  return l == "yes" || l == "true" || l == "1";
}

bool is_no(std::string_view v) {
  auto l = lower(trim(v));
  return l == "no" || l == "false" || l == "0";
}

// An RFC 1123 date as Release files write them ("Sat, 30 Nov 2026 08:22:49 UTC"), in UTC.
std::optional<std::time_t> parse_release_date(std::string_view text) {
  const std::string copy(trim(text));
  std::tm tm{};
  const char* rest = ::strptime(copy.c_str(), "%a, %d %b %Y %H:%M:%S", &tm);
  if (rest == nullptr) return std::nullopt;
  const std::string_view zone = trim(rest);
  if (!zone.empty() && zone != "UTC" && zone != "GMT" && zone != "Z" && zone != "+0000") return std::nullopt;
  return ::timegm(&tm);
}

std::string strip_slash(std::string uri) {
  while (!uri.empty() && uri.back() == '/') uri.pop_back();
  return uri;
}

// dpkg's order of a character in the non-digit parts: ~ before everything, letters before
// non-letters.
int order(char c) {
  if (std::isdigit(static_cast<unsigned char>(c))) return 0;
  if (std::isalpha(static_cast<unsigned char>(c))) return c;
  if (c == '~') return -1;
  if (c != '\0') return c + 256;
  return 0;
}

int compare_part(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    int first_diff = 0;
    while ((i < a.size() && !std::isdigit(static_cast<unsigned char>(a[i]))) ||
           (j < b.size() && !std::isdigit(static_cast<unsigned char>(b[j])))) {
      int ac = i < a.size() ? order(a[i]) : 0;
      int bc = j < b.size() ? order(b[j]) : 0;
      if (ac != bc) return ac - bc;
      ++i;
      ++j;
    }
    while (i < a.size() && a[i] == '0') ++i;
    while (j < b.size() && b[j] == '0') ++j;
    while (i < a.size() && j < b.size() && std::isdigit(static_cast<unsigned char>(a[i])) &&
           std::isdigit(static_cast<unsigned char>(b[j]))) {
      if (first_diff == 0) first_diff = a[i] - b[j];
      ++i;
      ++j;
    }
    if (i < a.size() && std::isdigit(static_cast<unsigned char>(a[i]))) return 1;
    if (j < b.size() && std::isdigit(static_cast<unsigned char>(b[j]))) return -1;
    if (first_diff != 0) return first_diff;
  }
  return 0;
}

struct SplitVersion {
  long epoch = 0;
  std::string_view upstream, revision;
};

SplitVersion split_version(std::string_view v) {
  SplitVersion out;
  auto colon = v.find(':');
  if (colon != std::string_view::npos) {
    out.epoch = std::strtol(std::string(v.substr(0, colon)).c_str(), nullptr, 10);
    v.remove_prefix(colon + 1);
  }
  auto dash = v.rfind('-');
  if (dash != std::string_view::npos) {
    out.upstream = v.substr(0, dash);
    out.revision = v.substr(dash + 1);
  } else {
    out.upstream = v;
  }
  return out;
}

}  // namespace

std::string Repo::describe() const { return uri + " " + suite; }

std::string Repo::index_base() const {
  if (!flat()) return uri + "/dists/" + suite;
  std::string_view dir = suite;
  while (dir.starts_with("./")) dir.remove_prefix(2);
  while (dir.ends_with('/')) dir.remove_suffix(1);
  return dir.empty() || dir == "." ? uri : uri + "/" + std::string(dir);
}

std::string Package::url() const {
  std::string_view file = filename;
  while (file.starts_with("./")) file.remove_prefix(2);
  return repo + "/" + std::string(file);
}

std::map<std::string, std::string> parse_stanza(std::string_view text) {
  std::map<std::string, std::string> fields;
  std::string current;
  for (std::string_view line : text::split(text, "\n")) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == ' ' || line.front() == '\t') {
      if (!current.empty()) {
        auto& v = fields[current];
        v += '\n';
        v += trim(line);
      }
      continue;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    current = std::string(trim(line.substr(0, colon)));
    fields[current] = std::string(trim(line.substr(colon + 1)));
  }
  return fields;
}

Result<std::vector<Repo>> parse_one_line(std::string_view text, std::string_view origin) {
  std::vector<Repo> out;
  int lineno = 0;
  for (std::string_view raw : text::split(text, "\n")) {
    std::string line(raw);
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    auto t = trim(line);
    if (t.empty()) continue;
    const std::string where = std::string(origin) + ":" + std::to_string(lineno);
    Repo repo;
    repo.origin = where;
    std::string_view rest = t;
    auto type_end = rest.find_first_of(" \t");
    std::string_view type = rest.substr(0, type_end);
    if (type == "deb-src") continue;
    if (type != "deb") {
      return fail(ExitCode::config, where + ": '" + std::string(type) + "' is not 'deb' or 'deb-src'");
    }
    rest = trim(type_end == std::string_view::npos ? std::string_view() : rest.substr(type_end));
    if (!rest.empty() && rest.front() == '[') {
      auto close = rest.find(']');
      if (close == std::string_view::npos) return fail(ExitCode::config, where + ": unclosed '[' in options");
      for (const auto& opt : words(rest.substr(1, close - 1))) {
        auto eq = opt.find('=');
        if (eq == std::string::npos) continue;
        std::string key = opt.substr(0, eq), value = opt.substr(eq + 1);
        if (key == "arch") repo.architectures = text::split_items(value, ',');
        else if (key == "signed-by") repo.signed_by = value;
        else if (key == "trusted") repo.trusted = truthy(value);
        else if (key == "check-valid-until") repo.check_valid_until = !is_no(value);
      }
      rest = trim(rest.substr(close + 1));
    }
    auto w = words(rest);
    if (w.size() < 2) return fail(ExitCode::config, where + ": expected 'deb URI SUITE [COMPONENT...]'");
    repo.uri = strip_slash(w[0]);
    repo.suite = w[1];
    repo.components.assign(w.begin() + 2, w.end());
    if (repo.components.empty() && !repo.flat()) {
      return fail(ExitCode::config, where + ": suite '" + repo.suite + "' needs at least one component");
    }
    if (!repo.components.empty() && repo.flat()) {
      return fail(ExitCode::config, where + ": '" + repo.suite + "' ends with '/', a flat repository's directory, which takes no components");
    }
    out.push_back(std::move(repo));
  }
  return out;
}

Result<std::vector<Repo>> parse_deb822(std::string_view text, std::string_view origin) {
  std::vector<Repo> out;
  int stanza_no = 0;
  for (auto block : text::split(text, "\n\n")) {
    auto fields = parse_stanza(block);
    if (fields.empty()) continue;
    ++stanza_no;
    const std::string where = std::string(origin) + " stanza " + std::to_string(stanza_no);
    if (fields.contains("Enabled") && !truthy(fields["Enabled"])) continue;
    auto types = words(fields["Types"]);
    if (std::find(types.begin(), types.end(), "deb") == types.end()) continue;
    auto uris = words(fields["URIs"]);
    auto suites = words(fields["Suites"]);
    if (uris.empty() || suites.empty()) return fail(ExitCode::config, where + ": needs URIs and Suites");
    for (const auto& uri : uris) {
      for (const auto& suite : suites) {
        Repo repo;
        repo.origin = where;
        repo.uri = strip_slash(uri);
        repo.suite = suite;
        repo.components = words(fields["Components"]);
        repo.architectures = words(fields["Architectures"]);
        repo.signed_by = std::string(trim(fields["Signed-By"]));
        repo.trusted = fields.contains("Trusted") && truthy(fields["Trusted"]);
        repo.check_valid_until = !fields.contains("Check-Valid-Until") || !is_no(fields["Check-Valid-Until"]);
        if (repo.components.empty() && !repo.flat()) {
          return fail(ExitCode::config, where + ": suite '" + suite + "' needs Components");
        }
        if (!repo.components.empty() && repo.flat()) {
          return fail(ExitCode::config, where + ": '" + suite + "' ends with '/', a flat repository's directory, which takes no Components");
        }
        out.push_back(std::move(repo));
      }
    }
  }
  return out;
}

Result<std::vector<Repo>> read_system_sources(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  std::vector<Repo> out;
  auto add = [&](const fs::path& p, bool deb822) -> Result<void> {
    auto text = files::read_file(p, 1 << 20);
    if (!text) {
      if (text.error().code == ExitCode::no_input) return {};
      return fail(text.error());
    }
    auto repos = deb822 ? KK_TRY(parse_deb822(*text, p.string())) : KK_TRY(parse_one_line(*text, p.string()));
    out.insert(out.end(), repos.begin(), repos.end());
    return {};
  };
  KK_TRY(add(root / "etc/apt/sources.list", false));
  std::error_code ec;
  std::vector<fs::path> names;
  for (const auto& entry : fs::directory_iterator(root / "etc/apt/sources.list.d", ec)) {
    names.push_back(entry.path());
  }
  std::sort(names.begin(), names.end());
  for (const auto& p : names) {
    if (p.extension() == ".list") KK_TRY(add(p, false));
    else if (p.extension() == ".sources") KK_TRY(add(p, true));
  }
  return out;
}

std::string strip_clearsign(std::string_view text) {
  constexpr std::string_view begin = "-----BEGIN PGP SIGNED MESSAGE-----";
  if (!text.starts_with(begin)) return std::string(text);
  // Armour headers ("Hash: SHA512") end at the first empty line.
  auto body_start = text.find("\n\n");
  if (body_start == std::string_view::npos) return {};
  auto body = text.substr(body_start + 2);
  auto sig = body.find("\n-----BEGIN PGP SIGNATURE-----");
  if (sig != std::string_view::npos) body = body.substr(0, sig + 1);
  if (body.ends_with('\n')) body.remove_suffix(1);
  std::string out;
  for (auto line : text::split(body, "\n")) {
    if (line.starts_with("- ")) line.remove_prefix(2);  // dash-escaping (RFC 4880 7.1)
    out.append(line);
    out += '\n';
  }
  return out;
}

Result<Release> parse_release(std::string_view text) {
  auto fields = parse_stanza(text);
  Release rel;
  rel.suite = fields["Suite"];
  rel.codename = fields["Codename"];
  auto it = fields.find("SHA256");
  if (it == fields.end()) return fail(ExitCode::data_err, "Release file has no SHA256 list");
  for (auto line : text::split(it->second, "\n")) {
    auto w = words(line);
    if (w.size() != 3) continue;
    IndexFile f;
    f.sha256 = lower(w[0]);
    f.size = std::strtoull(w[1].c_str(), nullptr, 10);
    rel.sha256[w[2]] = f;
  }
  if (rel.sha256.empty()) return fail(ExitCode::data_err, "Release file's SHA256 list is empty");
  if (auto v = fields.find("Valid-Until"); v != fields.end()) {
    rel.valid_until_text = std::string(trim(v->second));
    rel.valid_until = parse_release_date(v->second);
    if (!rel.valid_until) {
      return fail(ExitCode::data_err, "Release file's Valid-Until '" + rel.valid_until_text + "' is not a date");
    }
  }
  return rel;
}

Result<void> PackagesParser::stanza(std::string_view text) {
  // Cheap test on the name before parsing the whole stanza.
  auto p = text.find("Package:");
  if (p == std::string_view::npos) return {};
  auto eol = text.find('\n', p);
  auto name = trim(text.substr(p + 8, eol == std::string_view::npos ? std::string_view::npos : eol - p - 8));
  if (!keep_(name)) return {};
  auto f = parse_stanza(text);
  Package pkg;
  pkg.name = f["Package"];
  pkg.version = f["Version"];
  pkg.architecture = f["Architecture"];
  pkg.filename = f["Filename"];
  pkg.sha256 = lower(f["SHA256"]);
  pkg.depends = f["Depends"];
  pkg.provides = f["Provides"];
  pkg.size = std::strtoull(f["Size"].c_str(), nullptr, 10);
  pkg.repo = repo_;
  if (pkg.filename.empty() || pkg.sha256.size() != 64 || pkg.version.empty()) {
    return fail(ExitCode::data_err, "package " + pkg.name + " has no Filename, Version or SHA256 in the index");
  }
  out_.push_back(std::move(pkg));
  return {};
}

Result<void> PackagesParser::feed(std::string_view chunk) {
  pending_.append(chunk);
  size_t start = 0;
  for (;;) {
    size_t end = pending_.find("\n\n", start);
    if (end == std::string::npos) break;
    KK_TRY(stanza(std::string_view(pending_).substr(start, end - start)));
    start = end + 2;
  }
  pending_.erase(0, start);
  return {};
}

Result<std::vector<Package>> PackagesParser::finish() {
  if (!trim(pending_).empty()) KK_TRY(stanza(pending_));
  pending_.clear();
  return std::move(out_);
}

int compare_versions(std::string_view a, std::string_view b) {
  auto va = split_version(a), vb = split_version(b);
  if (va.epoch != vb.epoch) return va.epoch < vb.epoch ? -1 : 1;
  int r = compare_part(va.upstream, vb.upstream);
  if (r != 0) return r < 0 ? -1 : 1;
  r = compare_part(va.revision, vb.revision);
  return r < 0 ? -1 : (r > 0 ? 1 : 0);
}

bool Dependency::satisfied_by(std::string_view candidate) const {
  if (relation.empty()) return true;
  int c = compare_versions(candidate, version);
  if (relation == "=") return c == 0;
  if (relation == ">=") return c >= 0;
  if (relation == "<=") return c <= 0;
  if (relation == ">>" || relation == ">") return c > 0;
  if (relation == "<<" || relation == "<") return c < 0;
  return false;
}

std::vector<std::vector<Dependency>> parse_depends(std::string_view field) {
  std::vector<std::vector<Dependency>> groups;
  for (const auto& group : text::split_items(field, ',')) {
    std::vector<Dependency> alts;
    for (const auto& alt : text::split_items(group, '|')) {
      Dependency d;
      std::string_view s = alt;
      auto paren = s.find('(');
      std::string_view name = trim(s.substr(0, paren));
      if (auto bracket = name.find('['); bracket != std::string_view::npos) name = trim(name.substr(0, bracket));
      if (auto colon = name.find(':'); colon != std::string_view::npos) name = name.substr(0, colon);
      d.name = std::string(name);
      if (paren != std::string_view::npos) {
        auto close = s.find(')', paren);
        auto inside = trim(s.substr(paren + 1, close == std::string_view::npos ? std::string_view::npos : close - paren - 1));
        size_t k = 0;
        while (k < inside.size() && std::string_view("<>=").find(inside[k]) != std::string_view::npos) ++k;
        d.relation = std::string(inside.substr(0, k));
        d.version = std::string(trim(inside.substr(k)));
      }
      if (!d.name.empty()) alts.push_back(std::move(d));
    }
    if (!alts.empty()) groups.push_back(std::move(alts));
  }
  return groups;
}

}  // namespace kmodkit::init::apt
