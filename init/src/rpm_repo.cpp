#include "rpm_repo.hpp"

#include <expat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <optional>
#include <utility>

#include "kmodkit/text.hpp"

namespace kmodkit::init::rpm {
namespace {

using text::trim;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string where(std::string_view origin, size_t line) { return std::string(origin) + ":" + std::to_string(line); }

// Booleans as libdnf's OptionBool reads them.
std::optional<bool> parse_bool(std::string_view v) {
  const auto l = lower(trim(v));
  if (l == "1" || l == "yes" || l == "true" || l == "on") return true;
  if (l == "0" || l == "no" || l == "false" || l == "off") return false;
  return std::nullopt;
}

// A list value: items separated by white space or commas (libdnf's OptionStringList).
std::vector<std::string> list_items(std::string_view v) {
  std::vector<std::string> out;
  size_t i = 0;
  auto sep = [](char c) { return c == ',' || std::isspace(static_cast<unsigned char>(c)); };
  while (i < v.size()) {
    while (i < v.size() && sep(v[i])) ++i;
    size_t j = i;
    while (j < v.size() && !sep(v[j])) ++j;
    if (j > i) out.emplace_back(v.substr(i, j - i));
    i = j;
  }
  return out;
}

// Replaces $name and ${name} for dnf's two variables; other variables ($contentdir, $stream)
// are left as written, as dnf leaves variables it has no value for. Fails with the name of a
// known variable whose value is empty.
Result<std::string> substitute(std::string_view v, const RepoVars& vars) {
  const std::pair<std::string_view, const std::string*> known[] = {{"releasever", &vars.releasever},
                                                                   {"basearch", &vars.basearch}};
  std::string out;
  size_t i = 0;
  while (i < v.size()) {
    if (v[i] != '$') {
      out += v[i++];
      continue;
    }
    bool matched = false;
    for (const auto& [name, value] : known) {
      const std::string braced = "{" + std::string(name) + "}";
      size_t len = 0;
      if (v.substr(i + 1).starts_with(braced)) {
        len = 1 + braced.size();
      } else if (v.substr(i + 1).starts_with(name)) {
        // $releasever_major is another variable, not $releasever followed by "_major".
        const size_t end = i + 1 + name.size();
        if (end < v.size() && (std::isalnum(static_cast<unsigned char>(v[end])) || v[end] == '_')) continue;
        len = 1 + name.size();
      } else {
        continue;
      }
      if (value->empty()) return fail(ExitCode::config, "uses $" + std::string(name) + " but its value is not known");
      out += *value;
      i += len;
      matched = true;
      break;
    }
    if (!matched) out += v[i++];
  }
  return out;
}

// One section as read, before its values are interpreted.
struct RawSection {
  std::string id;
  size_t line = 0;
  std::vector<std::pair<std::string, std::pair<std::string, size_t>>> keys;  // key -> value, line
};

Result<Repo> interpret(const RawSection& s, std::string_view origin, const RepoVars& vars,
                       GpgCheckDefault gpgcheck_default) {
  Repo repo;
  repo.id = s.id;
  repo.origin = where(origin, s.line);
  repo.gpgcheck = gpgcheck_default == GpgCheckDefault::on;
  bool has_mirrors = false;
  size_t baseurl_line = s.line;
  for (const auto& [key, vl] : s.keys) {
    const auto& [raw, line] = vl;
    const std::string at = where(origin, line);
    auto value = with_context(substitute(raw, vars), at + ": " + key);
    if (!value) return fail(value.error());
    auto boolean = [&](bool& out) -> Result<void> {
      auto b = parse_bool(*value);
      if (!b) return fail(ExitCode::config, at + ": " + key + " must be 0 or 1, not '" + *value + "'");
      out = *b;
      return {};
    };
    // The last occurrence of a key wins, as in Python's configparser that yum used.
    if (key == "name") {
      repo.name = *value;
    } else if (key == "baseurl") {
      repo.baseurls = list_items(*value);
      baseurl_line = line;
    } else if (key == "metalink" || key == "mirrorlist") {
      has_mirrors = !trim(*value).empty();
    } else if (key == "enabled") {
      KK_TRY(boolean(repo.enabled));
    } else if (key == "gpgcheck") {
      KK_TRY(boolean(repo.gpgcheck));
    } else if (key == "repo_gpgcheck") {
      KK_TRY(boolean(repo.repo_gpgcheck));
    } else if (key == "sslverify") {
      KK_TRY(boolean(repo.sslverify));
    } else if (key == "gpgkey") {
      repo.gpgkeys = list_items(*value);
    } else if (key == "sslcacert") {
      repo.sslcacert = *value;
    } else if (key == "sslclientcert") {
      repo.sslclientcert = *value;
    } else if (key == "sslclientkey") {
      repo.sslclientkey = *value;
    }
    // Other keys (metadata_expire, skip_if_unavailable, priority, ...) do not change what is read.
  }
  if (repo.name.empty()) repo.name = repo.id;
  for (auto& url : repo.baseurls) {
    if (!url.starts_with("file://") && !url.starts_with("http://") && !url.starts_with("https://"))
      return fail(ExitCode::config, where(origin, baseurl_line) + ": repository '" + repo.id + "': baseurl " + url +
                                        " is not file://, http:// or https://");
    while (url.size() > 1 && url.back() == '/') url.pop_back();
  }
  // A disabled repository is never read, so what it lacks does not matter (Fedora's own files
  // carry disabled metalink-only stanzas).
  if (repo.enabled && repo.baseurls.empty()) {
    if (has_mirrors)
      return fail(ExitCode::config, repo.origin + ": repository '" + repo.id +
                                        "': metalink/mirrorlist are not supported; give baseurl");
    return fail(ExitCode::config, repo.origin + ": repository '" + repo.id + "' has no baseurl");
  }
  return repo;
}

// Expat's error for `p` as "origin:line:column: message".
std::string expat_error(XML_Parser p, std::string_view origin) {
  return std::string(origin) + ":" + std::to_string(XML_GetCurrentLineNumber(p)) + ":" +
         std::to_string(XML_GetCurrentColumnNumber(p)) + ": " + XML_ErrorString(XML_GetErrorCode(p));
}

struct ParserDeleter {
  void operator()(XML_Parser p) const { XML_ParserFree(p); }
};
using ParserPtr = std::unique_ptr<std::remove_pointer_t<XML_Parser>, ParserDeleter>;

// Parsers split names on this: "http://linux.duke.edu/metadata/rpm|entry". The namespaces, not
// the prefixes a generator chose, identify the elements.
constexpr char ns_sep = '|';
constexpr std::string_view ns_common = "http://linux.duke.edu/metadata/common";
constexpr std::string_view ns_rpm = "http://linux.duke.edu/metadata/rpm";
constexpr std::string_view ns_repo = "http://linux.duke.edu/metadata/repo";

const XML_Char* attr(const XML_Char** attrs, std::string_view name) {
  for (size_t i = 0; attrs[i] != nullptr; i += 2)
    if (name == attrs[i]) return attrs[i + 1];
  return nullptr;
}

uint64_t to_u64(const XML_Char* s) {
  uint64_t v = 0;
  if (s != nullptr) std::from_chars(s, s + std::strlen(s), v);
  return v;
}

// Local name of an expat NS name ("uri|local" -> "local"), and whether its namespace is `ns`.
std::string_view local_name(const XML_Char* name, std::string_view ns) {
  std::string_view n(name);
  if (n.size() <= ns.size() + 1 || !n.starts_with(ns) || n[ns.size()] != ns_sep) return {};
  return n.substr(ns.size() + 1);
}

// Text elements longer than this are not ones kmodkit reads (a checksum, a number, a name):
// they are cut, so a hostile document cannot grow memory through them.
constexpr size_t max_text = 4096;

void append_text(std::string& to, const XML_Char* s, int len) {
  to.append(s, std::min(static_cast<size_t>(len), max_text - std::min(max_text, to.size())));
}

// repomd.xml: <repomd><data type="primary"><checksum type=..>..</checksum><location href=../>...
struct RepomdState {
  int depth = 0;
  bool in_primary = false;
  bool found = false;
  std::string element;  // the <data> child being read, when in the primary entry
  std::string text;
  RepomdEntry entry;
};

}  // namespace

std::string Evr::str() const {
  std::string s = epoch != 0 ? std::to_string(epoch) + ":" + version : version;
  if (!release.empty()) s += "-" + release;
  return s;
}

Result<GpgCheckDefault> parse_main_gpgcheck(std::string_view text, std::string_view origin, GpgCheckDefault fallback) {
  GpgCheckDefault out = fallback;
  bool in_main = false;
  size_t line_no = 0;
  for (auto line : text::split(text, "\n")) {
    ++line_no;
    const auto t = trim(line);
    if (t.empty() || t.starts_with('#') || t.starts_with(';')) continue;
    if (t.starts_with('[')) {
      in_main = t == "[main]";
      continue;
    }
    const auto eq = t.find('=');
    if (!in_main || eq == std::string_view::npos || lower(trim(t.substr(0, eq))) != "gpgcheck") continue;
    const auto value = trim(t.substr(eq + 1));
    auto b = parse_bool(value);
    if (!b) {
      return fail(ExitCode::config, where(origin, line_no) + ": gpgcheck must be 0 or 1, not '" + std::string(value) + "'");
    }
    out = *b ? GpgCheckDefault::on : GpgCheckDefault::off;
  }
  return out;
}

Result<std::vector<Repo>> parse_repo_file(std::string_view text, std::string_view origin, const RepoVars& vars,
                                          GpgCheckDefault gpgcheck_default) {
  std::vector<RawSection> sections;
  std::string* last_value = nullptr;  // the value an indented line continues
  size_t line_no = 0;
  for (auto line : text::split(text, "\n")) {
    ++line_no;
    if (line.ends_with('\r')) line.remove_suffix(1);
    const auto t = trim(line);
    if (t.empty() || t.starts_with('#') || t.starts_with(';')) continue;
    // dnf (libdnf's ConfigParser, like Python's configparser) continues a value on a line that
    // starts with white space: multi-line baseurl and gpgkey lists.
    if (std::isspace(static_cast<unsigned char>(line[0])) && last_value != nullptr) {
      *last_value += "\n";
      *last_value += t;
      continue;
    }
    if (t.starts_with('[')) {
      if (!t.ends_with(']') || t.size() < 3)
        return fail(ExitCode::config, where(origin, line_no) + ": '" + std::string(t) + "' is not a [section] line");
      std::string id(trim(t.substr(1, t.size() - 2)));
      for (const auto& s : sections)
        if (s.id == id)
          return fail(ExitCode::config, where(origin, line_no) + ": repository '" + id + "' is defined twice (first at line " +
                                            std::to_string(s.line) + ")");
      sections.push_back(RawSection{std::move(id), line_no, {}});
      last_value = nullptr;
      continue;
    }
    const auto eq = t.find('=');
    if (eq == std::string_view::npos || trim(t.substr(0, eq)).empty())
      return fail(ExitCode::config, where(origin, line_no) + ": '" + std::string(t) + "' is not a key=value line");
    if (sections.empty())
      return fail(ExitCode::config, where(origin, line_no) + ": key outside a [repository] section");
    auto& keys = sections.back().keys;
    keys.push_back({lower(trim(t.substr(0, eq))), {std::string(trim(t.substr(eq + 1))), line_no}});
    last_value = &keys.back().second.first;
  }
  std::vector<Repo> out;
  for (const auto& s : sections) {
    // dnf.conf's [main] holds options, not a repository; a .repo file may carry one too.
    if (s.id == "main") continue;
    out.push_back(KK_TRY(interpret(s, origin, vars, gpgcheck_default)));
  }
  return out;
}

Result<RepomdEntry> parse_repomd_primary(std::string_view xml, std::string_view origin) {
  ParserPtr p(XML_ParserCreateNS(nullptr, ns_sep));
  if (!p) return fail(ExitCode::software, "out of memory creating an XML parser");
  RepomdState st;
  XML_SetUserData(p.get(), &st);
  XML_SetElementHandler(
      p.get(),
      [](void* ud, const XML_Char* name, const XML_Char** attrs) {
        auto& s = *static_cast<RepomdState*>(ud);
        ++s.depth;
        if (s.depth == 2 && local_name(name, ns_repo) == "data") {
          const auto* type = attr(attrs, "type");
          s.in_primary = type != nullptr && std::string_view(type) == "primary" && !s.found;
          if (s.in_primary) s.found = true;
          return;
        }
        if (!s.in_primary || s.depth != 3) return;
        s.element = local_name(name, ns_repo);
        s.text.clear();
        auto& e = s.entry;
        const auto* type = attr(attrs, "type");
        if (s.element == "location") {
          if (const auto* href = attr(attrs, "href")) e.href = href;
        } else if (s.element == "checksum" && type != nullptr) {
          e.checksum_type = type;
        } else if (s.element == "open-checksum" && type != nullptr) {
          e.open_checksum_type = type;
        }
      },
      [](void* ud, const XML_Char*) {
        auto& s = *static_cast<RepomdState*>(ud);
        if (s.in_primary && s.depth == 3) {
          auto& e = s.entry;
          const std::string v(trim(s.text));
          if (s.element == "checksum") e.checksum = v;
          else if (s.element == "open-checksum") e.open_checksum = v;
          else if (s.element == "size") e.size = to_u64(v.c_str());
          else if (s.element == "open-size") e.open_size = to_u64(v.c_str());
          s.element.clear();
        }
        if (s.depth == 2) s.in_primary = false;
        --s.depth;
      });
  XML_SetCharacterDataHandler(p.get(), [](void* ud, const XML_Char* t, int len) {
    auto& state = *static_cast<RepomdState*>(ud);
    if (!state.element.empty()) append_text(state.text, t, len);
  });
  if (XML_Parse(p.get(), xml.data(), static_cast<int>(xml.size()), XML_TRUE) != XML_STATUS_OK)
    return fail(ExitCode::data_err, expat_error(p.get(), origin));
  if (!st.found) return fail(ExitCode::data_err, std::string(origin) + ": has no primary metadata");
  if (st.entry.href.empty())
    return fail(ExitCode::data_err, std::string(origin) + ": its primary entry has no location");
  if (st.entry.checksum.empty() || st.entry.checksum_type.empty())
    return fail(ExitCode::data_err, std::string(origin) + ": its primary entry has no checksum");
  return st.entry;
}

// rpm's rpmvercmp (rpm 4.18, rpmio/rpmvercmp.c), segment by segment. Written here rather than
// linked from librpm: init-modules' image carries no rpm (issue 20), and librpm would bring
// librpmio, popt, lua, sqlite and libmagic for these few lines; the unit tests hold it to
// rpm's own answers.
int compare_version_strings(std::string_view a, std::string_view b) {
  if (a == b) return 0;
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  auto alpha = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; };
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    while (i < a.size() && !alnum(a[i]) && a[i] != '~' && a[i] != '^') ++i;
    while (j < b.size() && !alnum(b[j]) && b[j] != '~' && b[j] != '^') ++j;
    const char ca = i < a.size() ? a[i] : '\0', cb = j < b.size() ? b[j] : '\0';
    // A tilde sorts before everything, the end of the string included: 1.0~rc1 < 1.0.
    if (ca == '~' || cb == '~') {
      if (ca != '~') return 1;
      if (cb != '~') return -1;
      ++i, ++j;
      continue;
    }
    // A caret sorts after the end of the string but before anything else: 1.0 < 1.0^git1 < 1.0.1.
    if (ca == '^' || cb == '^') {
      if (ca == '\0') return -1;
      if (cb == '\0') return 1;
      if (ca != '^') return 1;
      if (cb != '^') return -1;
      ++i, ++j;
      continue;
    }
    if (ca == '\0' || cb == '\0') break;
    const bool numeric = digit(ca);
    auto seg_end = [&](std::string_view s, size_t k) {
      while (k < s.size() && (numeric ? digit(s[k]) : alpha(s[k]))) ++k;
      return k;
    };
    const size_t ie = seg_end(a, i), je = seg_end(b, j);
    // Segments of different kinds: a number is newer than letters.
    if (je == j) return numeric ? 1 : -1;
    std::string_view sa = a.substr(i, ie - i), sb = b.substr(j, je - j);
    if (numeric) {
      while (sa.size() > 1 && sa[0] == '0') sa.remove_prefix(1);
      while (sb.size() > 1 && sb[0] == '0') sb.remove_prefix(1);
      if (sa.size() != sb.size()) return sa.size() > sb.size() ? 1 : -1;
    }
    if (const int c = sa.compare(sb); c != 0) return c < 0 ? -1 : 1;
    i = ie, j = je;
  }
  // Equal segments, maybe with different separators: whichever has something left is newer.
  if (i >= a.size() && j >= b.size()) return 0;
  return i >= a.size() ? -1 : 1;
}

int compare_evr(const Evr& a, const Evr& b) {
  if (a.epoch != b.epoch) return a.epoch < b.epoch ? -1 : 1;
  if (const int c = compare_version_strings(a.version, b.version); c != 0) return c;
  return compare_version_strings(a.release, b.release);
}

// primary.xml: <metadata><package><name/><arch/><version/><checksum/><size/><location/>
// <format><rpm:provides><rpm:entry .../></rpm:provides></format></package>...
struct PrimaryReader::State {
  std::string origin, capability, value;
  Found found;
  ParserPtr parser;
  std::optional<Error> error;
  int depth = 0;
  bool in_provides = false;
  bool matches = false;
  std::string element;  // the <package> child whose text is wanted (name, arch, checksum)
  std::string text;
  Provider current;

  void start(const XML_Char* name, const XML_Char** attrs) {
    ++depth;
    if (depth == 2) {
      if (local_name(name, ns_common) == "package") {
        current = Provider{};
        matches = false;
      }
      return;
    }
    if (depth == 3) {
      const auto local = local_name(name, ns_common);
      if (local == "name" || local == "arch" || local == "checksum") {
        element = local;
        text.clear();
      }
      if (local == "version") {
        current.evr.epoch = to_u64(attr(attrs, "epoch"));
        if (const auto* v = attr(attrs, "ver")) current.evr.version = v;
        if (const auto* r = attr(attrs, "rel")) current.evr.release = r;
      } else if (local == "checksum") {
        if (const auto* t = attr(attrs, "type")) current.checksum_type = t;
        const auto* pkgid = attr(attrs, "pkgid");
        current.checksum_is_pkgid = pkgid != nullptr && std::string_view(pkgid) == "YES";
      } else if (local == "size") {
        current.size = to_u64(attr(attrs, "package"));
      } else if (local == "location") {
        if (const auto* href = attr(attrs, "href")) current.href = href;
      }
      return;
    }
    if (depth == 4 && local_name(name, ns_rpm) == "provides") in_provides = true;
    if (depth == 5 && in_provides && local_name(name, ns_rpm) == "entry") check_entry(attrs);
  }

  // createrepo_c writes a provide's version as rpm split it: epoch before ':', ver up to the
  // first '-', rel after it (rpmbuild refuses a second '-'). A uname -r has no epoch.
  void check_entry(const XML_Char** attrs) {
    const auto* n = attr(attrs, "name");
    const auto* flags = attr(attrs, "flags");
    if (n == nullptr || capability != n || flags == nullptr || std::string_view(flags) != "EQ") return;
    const auto* epoch = attr(attrs, "epoch");
    if (epoch != nullptr && to_u64(epoch) != 0) return;
    const auto* ver = attr(attrs, "ver");
    const auto* rel = attr(attrs, "rel");
    std::string full = ver != nullptr ? ver : "";
    if (rel != nullptr && *rel != '\0') full += std::string("-") + rel;
    if (full == value) matches = true;
  }

  void end() {
    if (depth == 3 && !element.empty()) {
      if (element == "name") current.name = trim(text);
      else if (element == "arch") current.arch = trim(text);
      else if (element == "checksum") current.checksum = trim(text);
      element.clear();
    }
    if (depth == 4) in_provides = false;
    if (depth == 2 && matches) {
      matches = false;
      const std::string nevra = current.name + "-" + current.evr.str() + "." + current.arch;
      if (current.href.empty()) return stop(origin + ": package " + nevra + " has no location");
      if (current.checksum.empty() || current.checksum_type.empty())
        return stop(origin + ": package " + nevra + " has no checksum");
      found(std::move(current));
    }
    --depth;
  }

  void stop(std::string message) {
    error = Error{ExitCode::data_err, std::move(message)};
    XML_StopParser(parser.get(), XML_FALSE);
    --depth;
  }

  Result<void> parse(std::string_view chunk, int is_final) {
    if (error) return fail(*error);
    if (XML_Parse(parser.get(), chunk.data(), static_cast<int>(chunk.size()), is_final) != XML_STATUS_OK) {
      // A stop from a handler carries its own sentence; anything else is expat's.
      if (!error) error = Error{ExitCode::data_err, expat_error(parser.get(), origin)};
      return fail(*error);
    }
    return {};
  }
};

PrimaryReader::PrimaryReader(std::string origin, std::string capability, std::string value, Found found)
    : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.origin = std::move(origin);
  s.capability = std::move(capability);
  s.value = std::move(value);
  s.found = std::move(found);
  s.parser.reset(XML_ParserCreateNS(nullptr, ns_sep));
  if (!s.parser) {
    s.error = Error{ExitCode::software, "out of memory creating an XML parser"};
    return;
  }
  XML_SetUserData(s.parser.get(), &s);
  XML_SetElementHandler(
      s.parser.get(),
      [](void* ud, const XML_Char* name, const XML_Char** attrs) { static_cast<State*>(ud)->start(name, attrs); },
      [](void* ud, const XML_Char*) { static_cast<State*>(ud)->end(); });
  XML_SetCharacterDataHandler(s.parser.get(), [](void* ud, const XML_Char* t, int len) {
    auto& st = *static_cast<State*>(ud);
    if (!st.element.empty()) append_text(st.text, t, len);
  });
}

PrimaryReader::~PrimaryReader() = default;

Result<void> PrimaryReader::feed(std::string_view chunk) { return state_->parse(chunk, XML_FALSE); }

Result<void> PrimaryReader::finish() { return state_->parse({}, XML_TRUE); }

}  // namespace kmodkit::init::rpm
