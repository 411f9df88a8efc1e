#include "recipe.hpp"

#include <glob.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <charconv>
#include <regex>

#include "builtin_recipes.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"
#include "posix_regex.hpp"

namespace kmodkit::kmod_builder {
namespace {

using json = nlohmann::json;

Error config_error(const std::string& origin, const std::string& what) {
  return Error{ExitCode::config, "recipe " + origin + ": " + what};
}

// "6.1.0-56-amd64" -> {6, 1, 0}; "4.14" -> {4, 14, 0}.
std::vector<long> version_numbers(std::string_view v) {
  std::vector<long> out;
  size_t i = 0;
  while (i < v.size() && out.size() < 3) {
    size_t j = i;
    while (j < v.size() && v[j] >= '0' && v[j] <= '9') ++j;
    if (j == i) break;
    out.push_back(std::strtol(std::string(v.substr(i, j - i)).c_str(), nullptr, 10));
    if (j >= v.size() || v[j] != '.') break;
    i = j + 1;
  }
  while (out.size() < 3) out.push_back(0);
  return out;
}

bool valid_version(std::string_view v) { return !v.empty() && v[0] >= '0' && v[0] <= '9'; }

// Expands ${VAR} from the environment; an unset variable expands to "" and is reported.
std::string expand_env(std::string_view s, std::vector<std::string>* unset) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 2, "${") == 0) {
      const size_t end = s.find('}', i + 2);
      if (end != std::string_view::npos) {
        const std::string var(s.substr(i + 2, end - i - 2));
        const char* value = std::getenv(var.c_str());
        if (value == nullptr || *value == '\0') {
          if (unset) unset->push_back(var);
        } else {
          out += value;
        }
        i = end + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// The first path a glob matches, or the pattern itself when nothing does.
std::string first_match(const std::string& pattern) {
  if (pattern.find_first_of("*?[") == std::string::npos) return pattern;
  glob_t g{};
  std::string found = pattern;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0) found = g.gl_pathv[g.gl_pathc - 1];
  ::globfree(&g);
  return found;
}

bool safe_relative(std::string_view p) {
  if (p.empty() || p.front() == '/') return false;
  for (auto part : text::split(p, "/")) {
    if (part == "..") return false;
  }
  return true;
}

// A regex a recipe gives in `field`, checked as bash compiles it when DKMS tests it.
Result<std::string> checked_regex(std::string regex, const std::string& origin, const std::string& field) {
  if (regex.empty()) return regex;
  if (auto re = PosixRegex::compile(regex); !re) return fail(config_error(origin, field + ": " + re.error().message));
  return regex;
}

Result<std::string> get_string(const json& j, const char* key, const std::string& origin, std::string def = "") {
  if (!j.contains(key)) return def;
  if (!j[key].is_string()) return fail(config_error(origin, std::string("\"") + key + "\" must be a string"));
  return j[key].get<std::string>();
}

Result<std::vector<std::string>> get_strings(const json& j, const char* key, const std::string& origin) {
  std::vector<std::string> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_array()) return fail(config_error(origin, std::string("\"") + key + "\" must be a list of strings"));
  for (const auto& item : j[key]) {
    if (!item.is_string()) return fail(config_error(origin, std::string("\"") + key + "\" must be a list of strings"));
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> get_map(const json& j, const char* key, const std::string& origin) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_object()) return fail(config_error(origin, std::string("\"") + key + "\" must be an object of strings"));
  for (const auto& [k, v] : j[key].items()) {
    if (!v.is_string()) return fail(config_error(origin, std::string("\"") + key + "." + k + "\" must be a string"));
    out.emplace_back(k, v.get<std::string>());
  }
  return out;
}

// Applies the fields of a JSON recipe on top of `r` (empty, or what a dkms.conf said).
Result<void> apply_json(const json& j, const std::string& origin, Recipe& r) {
  static const std::vector<std::string> known = {"name", "version", "dkms", "source", "copy", "directory", "modules",
                                                 "make_vars", "cflags_var", "include_dirs", "force_includes",
                                                 "probes", "kernel", "load"};
  for (const auto& [k, v] : j.items()) {
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      return fail(config_error(origin, "unknown field \"" + k + "\""));
    }
  }
  r.name = KK_TRY(get_string(j, "name", origin, r.name));
  r.version = KK_TRY(get_string(j, "version", origin, r.version));
  r.directory = KK_TRY(get_string(j, "directory", origin, r.directory));
  r.cflags_var = KK_TRY(get_string(j, "cflags_var", origin, r.cflags_var));
  if (j.contains("modules")) r.modules = KK_TRY(get_strings(j, "modules", origin));
  auto vars = KK_TRY(get_map(j, "make_vars", origin));
  r.make_vars.insert(r.make_vars.end(), vars.begin(), vars.end());
  auto incs = KK_TRY(get_strings(j, "include_dirs", origin));
  r.include_dirs.insert(r.include_dirs.end(), incs.begin(), incs.end());
  auto forced = KK_TRY(get_strings(j, "force_includes", origin));
  r.force_includes.insert(r.force_includes.end(), forced.begin(), forced.end());
  if (j.contains("copy")) {
    if (!j["copy"].is_array()) return fail(config_error(origin, "\"copy\" must be a list of {\"from\", \"to\"}"));
    r.copy.clear();
    for (const auto& item : j["copy"]) {
      if (!item.is_object()) return fail(config_error(origin, "\"copy\" must be a list of {\"from\", \"to\"}"));
      CopyItem c;
      c.from = KK_TRY(get_string(item, "from", origin));
      if (c.from.empty()) return fail(config_error(origin, "a \"copy\" item needs \"from\""));
      if (c.from.front() == '/') c.from = first_match(c.from);
      const std::string default_to = c.from.front() == '/' ? fs::path(c.from).filename().string() : c.from;
      c.to = KK_TRY(get_string(item, "to", origin, default_to));
      if (!safe_relative(c.to)) return fail(config_error(origin, "copy destination '" + c.to + "' must be relative, without .."));
      if (c.from.front() != '/' && !safe_relative(c.from)) {
        return fail(config_error(origin, "copy source '" + c.from + "' must be absolute or relative without .."));
      }
      r.copy.push_back(std::move(c));
    }
  }
  if (j.contains("probes")) {
    if (!j["probes"].is_array()) return fail(config_error(origin, "\"probes\" must be a list"));
    for (const auto& item : j["probes"]) {
      if (!item.is_object()) return fail(config_error(origin, "\"probes\" must be a list of objects"));
      Probe p;
      p.define = KK_TRY(get_string(item, "define", origin));
      p.header = KK_TRY(get_string(item, "header", origin));
      p.line = KK_TRY(get_string(item, "line", origin));
      p.contains = KK_TRY(get_string(item, "contains", origin));
      if (p.define.empty() || p.header.empty() || p.line.empty()) {
        return fail(config_error(origin, "a probe needs \"define\", \"header\" and \"line\""));
      }
      if (!safe_relative(p.header)) return fail(config_error(origin, "probe header '" + p.header + "' must be relative"));
      r.probes.push_back(std::move(p));
    }
  }
  if (j.contains("kernel")) {
    const auto& k = j["kernel"];
    if (!k.is_object()) return fail(config_error(origin, "\"kernel\" must be an object with \"min\", \"max\" or \"regex\""));
    r.kernel_min = KK_TRY(get_string(k, "min", origin, r.kernel_min));
    r.kernel_max = KK_TRY(get_string(k, "max", origin, r.kernel_max));
    r.kernel_regex = KK_TRY(checked_regex(KK_TRY(get_string(k, "regex", origin, r.kernel_regex)), origin, "\"kernel\": {\"regex\"}"));
    for (const auto* v : {&r.kernel_min, &r.kernel_max}) {
      if (!v->empty() && !valid_version(*v)) return fail(config_error(origin, "kernel bound '" + *v + "' is not a version"));
    }
  }
  if (j.contains("load")) {
    const auto& l = j["load"];
    if (!l.is_object()) return fail(config_error(origin, "\"load\" must be an object with \"depends\" and \"params\""));
    r.load_depends = KK_TRY(get_strings(l, "depends", origin));
    r.load_params = KK_TRY(get_map(l, "params", origin));
  }
  return {};
}

Result<void> check(const Recipe& r) {
  auto name_ok = [](const std::string& n) {
    return !n.empty() && n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+~") ==
                             std::string::npos && n != "." && n != "..";
  };
  if (!name_ok(r.name)) return fail(config_error(r.origin, "name '" + r.name + "' is empty or has characters other than letters, digits and _-.+~"));
  if (r.modules.empty()) return fail(config_error(r.origin, "no modules: give \"modules\" (or BUILT_MODULE_NAME in dkms.conf)"));
  for (const auto& m : r.modules) {
    if (!safe_relative(m) || m.ends_with(".ko")) return fail(config_error(r.origin, "module '" + m + "' must be a relative path without .ko"));
  }
  if (r.directory != "." && !safe_relative(r.directory)) {
    return fail(config_error(r.origin, "directory '" + r.directory + "' must be relative, without .."));
  }
  for (const auto& d : r.include_dirs) {
    if (d != "." && !safe_relative(d)) return fail(config_error(r.origin, "include directory '" + d + "' must be relative"));
  }
  for (const auto& d : r.force_includes) {
    if (!safe_relative(d)) return fail(config_error(r.origin, "forced include '" + d + "' must be relative"));
  }
  for (const auto& [k, v] : r.make_vars) {
    if (k.empty() || k.find_first_of(" =\t") != std::string::npos) return fail(config_error(r.origin, "make variable '" + k + "' is not a name"));
    if (k == "M" || k == "KBUILD_EXTMOD" || k == "-C") return fail(config_error(r.origin, "make variable " + k + " is kmod-builder's to set"));
  }
  return {};
}

Result<Recipe> parse_json_object(const json& j, const std::string& origin, const fs::path& base, bool allow_dkms) {
  if (!j.is_object()) return fail(config_error(origin, "not a JSON object"));
  Recipe r;
  r.origin = origin;
  std::vector<std::string> unset;
  std::string source_text = expand_env(KK_TRY(get_string(j, "source", origin)), &unset);
  if (!unset.empty() && source_text.empty()) {
    return fail(ExitCode::no_input, "recipe " + origin + ": its source tree comes from $" + unset.front() +
                                        ", which is not set: set it or give --source NAME=DIR");
  }
  if (!source_text.empty()) {
    fs::path src = first_match(source_text.front() == '/' ? source_text : (base / source_text).string());
    r.source = src;
  }
  const bool dkms = j.contains("dkms") && j["dkms"].is_boolean() && j["dkms"].get<bool>();
  if (dkms && allow_dkms && !r.source.empty()) {
    std::error_code ec;
    if (!fs::is_directory(r.source, ec)) {
      return fail(ExitCode::no_input, "recipe " + origin + ": source tree " + r.source.string() + " is not a directory");
    }
    const fs::path conf = r.source / "dkms.conf";
    auto text = files::read_file(conf, 1 << 20);
    if (!text) {
      return fail(ExitCode::no_input, "recipe " + origin + " reads " + conf.string() + ": " + text.error().message);
    }
    r = KK_TRY(parse_dkms_conf(*text, conf.string(), r.source));
    r.origin = origin + " + " + conf.string();
  }
  KK_TRY(apply_json(j, origin, r));
  return r;
}

}  // namespace

namespace {
// Whether `text` is valid UTF-8: nlohmann's serializer drops what is not under `ignore` and
// replaces it under `replace`, so the two differ exactly when some byte is invalid.
bool is_utf8(std::string_view text) {
  const json j = std::string(text);
  return j.dump(-1, ' ', false, json::error_handler_t::ignore) == j.dump(-1, ' ', false, json::error_handler_t::replace);
}
}  // namespace

std::string Recipe::canonical() const {
  json j;
  j["name"] = name;
  j["version"] = version;
  json copies = json::array();
  for (const auto& c : copy) copies.push_back({{"from", c.from}, {"to", c.to}});
  j["copy"] = copies;
  j["directory"] = directory;
  j["modules"] = modules;
  json vars = json::array();
  for (const auto& [k, v] : make_vars) vars.push_back({k, v});
  j["make_vars"] = vars;
  j["cflags_var"] = cflags_var;
  j["include_dirs"] = include_dirs;
  j["force_includes"] = force_includes;
  json probes_j = json::array();
  for (const auto& p : probes) probes_j.push_back({p.define, p.header, p.line, p.contains});
  j["probes"] = probes_j;
  // Every field is UTF-8 (the JSON reader and parse_dkms_conf check); replace, never throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Recipe::kernel_refusal(std::string_view release, std::string_view arch) const {
  const auto v = version_numbers(release);
  if (!kernel_min.empty() && v < version_numbers(kernel_min)) {
    return "recipe " + name + " builds on kernels " + kernel_min + " and later, not " + std::string(release);
  }
  if (!kernel_max.empty() && v > version_numbers(kernel_max)) {
    return "recipe " + name + " builds on kernels up to " + kernel_max + ", not " + std::string(release);
  }
  // Both were compiled when the recipe was read; a failure here would be that error again.
  if (!kernel_regex.empty()) {
    auto re = PosixRegex::compile(kernel_regex);
    if (!re) return "recipe " + name + ": kernel regex " + re.error().message;
    if (!re->search(release)) {
      return "recipe " + name + " builds only on kernels matching '" + kernel_regex + "' (searched as DKMS does), not " +
             std::string(release);
    }
  }
  if (!arch_regex.empty()) {
    auto re = PosixRegex::compile(arch_regex);
    if (!re) return "recipe " + name + ": arch regex " + re.error().message;
    if (!re->search(arch)) {
      return "recipe " + name + " builds only on architectures matching '" + arch_regex + "' (BUILD_EXCLUSIVE_ARCH), not " +
             std::string(arch);
    }
  }
  return "";
}

Result<std::vector<std::string>> split_words(std::string_view line) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote == '\'') {
      if (c == '\'') quote = 0;
      else cur += c;
    } else if (quote == '"') {
      if (c == '"') quote = 0;
      else if (c == '\\' && i + 1 < line.size() && std::string_view("\"\\$`").find(line[i + 1]) != std::string_view::npos) cur += line[++i];
      else cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      cur += line[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (quote != 0) return fail(ExitCode::config, std::string("unterminated ") + quote + " quote in: " + std::string(line));
  if (in_word) words.push_back(std::move(cur));
  return words;
}

Result<Recipe> parse_dkms_conf(std::string_view text, const std::string& origin, const fs::path& source) {
  static const std::regex assignment(R"(^([A-Za-z_][A-Za-z0-9_]*)(\[([0-9]+)\])?=(.*)$)");
  std::map<std::string, std::map<int, std::string>> values;  // NAME -> index -> value (-1: no index)
  int lineno = 0;
  for (auto raw : text::split(text, "\n")) {
    ++lineno;
    const auto line = text::trim(raw);
    if (line.empty() || line.front() == '#') continue;
    // Values go into the cache key's canonical JSON and onto make's command line as text.
    if (!is_utf8(line)) return fail(config_error(origin + ":" + std::to_string(lineno), "the line is not UTF-8 text"));
    std::match_results<std::string_view::const_iterator> m;
    if (!std::regex_match(line.begin(), line.end(), m, assignment)) {
      return fail(config_error(origin + ":" + std::to_string(lineno),
                               "only NAME=value assignments are read (kmod-builder runs no shell code): " + std::string(line)));
    }
    auto words = KK_TRY_CTX(split_words(m[4].str()), "recipe " + origin + ":" + std::to_string(lineno));
    std::string value;
    for (const auto& w : words) value += (value.empty() ? "" : " ") + w;
    int index = -1;
    if (m[3].matched) {
      const std::string digits = m[3].str();
      if (std::from_chars(digits.data(), digits.data() + digits.size(), index).ec != std::errc()) {
        return fail(config_error(origin + ":" + std::to_string(lineno), "index out of range: " + std::string(line)));
      }
    }
    values[m[1].str()][index] = value;
  }
  auto one = [&](const std::string& key) -> std::string {
    auto it = values.find(key);
    if (it == values.end()) return "";
    auto jt = it->second.find(-1);
    if (jt != it->second.end()) return jt->second;
    auto kt = it->second.find(0);
    return kt != it->second.end() ? kt->second : "";
  };
  for (const char* unsupported : {"PRE_BUILD", "POST_BUILD", "PRE_INSTALL", "POST_INSTALL", "PATCH"}) {
    if (values.contains(unsupported)) {
      return fail(config_error(origin, std::string(unsupported) +
                                           " runs a script, which kmod-builder does not do; write a JSON recipe instead"));
    }
  }
  // DKMS picks the MAKE[i] whose MAKE_MATCH[i] matches the kernel; building with MAKE[0]
  // instead would build something else than DKMS does.
  if (values.contains("MAKE_MATCH")) {
    return fail(config_error(origin, "MAKE_MATCH chooses a MAKE line per kernel, which kmod-builder does not read; write a "
                                     "JSON recipe instead"));
  }

  Recipe r;
  r.origin = origin;
  r.source = source;
  r.name = one("PACKAGE_NAME");
  r.version = one("PACKAGE_VERSION");
  if (r.name.empty()) return fail(config_error(origin, "no PACKAGE_NAME"));
  if (auto it = values.find("BUILT_MODULE_NAME"); it != values.end()) {
    for (const auto& [index, name] : it->second) {
      std::string location;
      if (auto lt = values.find("BUILT_MODULE_LOCATION"); lt != values.end()) {
        if (auto l = lt->second.find(index); l != lt->second.end()) location = l->second;
      }
      while (!location.empty() && location.back() == '/') location.pop_back();
      r.modules.push_back(location.empty() || location == "." ? name : location + "/" + name);
    }
  }
  // The MAKE line: keep NAME=value assignments that are not kbuild's own (-C, M=); the DKMS
  // variables ($kernel_source_dir, $dkms_tree, ...) belong to those.
  if (const std::string make = one("MAKE"); !make.empty()) {
    auto words = KK_TRY_CTX(split_words(make), "recipe " + origin + ": MAKE");
    for (size_t i = 1; i < words.size(); ++i) {
      const auto& w = words[i];
      if (w == "-C") { ++i; continue; }
      const auto eq = w.find('=');
      if (eq == std::string::npos || w.front() == '-') continue;
      const std::string key = w.substr(0, eq);
      if (key == "M" || key == "KBUILD_EXTMOD" || key == "SUBDIRS" || key == "KERNELRELEASE" || key == "KVER" ||
          key == "KSRC" || key == "KERNEL_DIR" || key == "KDIR") {
        continue;
      }
      if (w.find('$') != std::string::npos) {
        return fail(config_error(origin, "MAKE passes '" + w + "', which uses a DKMS variable kmod-builder cannot give"));
      }
      r.make_vars.emplace_back(key, w.substr(eq + 1));
    }
  }
  // DKMS tests these with bash's [[ =~ ]]: POSIX extended regexes, searched in the release and
  // in the architecture.
  r.kernel_regex = KK_TRY(checked_regex(one("BUILD_EXCLUSIVE_KERNEL"), origin, "BUILD_EXCLUSIVE_KERNEL"));
  r.arch_regex = KK_TRY(checked_regex(one("BUILD_EXCLUSIVE_ARCH"), origin, "BUILD_EXCLUSIVE_ARCH"));
  return r;
}

Result<Recipe> parse_json(std::string_view text, const std::string& origin, const fs::path& base) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large
    return fail(config_error(origin, std::string("not valid JSON: ") + e.what()));
  }
  auto r = KK_TRY(parse_json_object(j, origin, base, true));
  KK_TRY(check(r));
  return r;
}

std::vector<std::string> builtin_names() { return {"igb_uio", "rte_kni"}; }

Result<Recipe> load(const std::string& spec, const std::string& source_override) {
  Recipe r;
  auto finish = [&](Recipe recipe) -> Result<Recipe> {
    if (!source_override.empty()) recipe.source = source_override;
    if (recipe.source.empty()) return fail(config_error(recipe.origin, "no source tree: give \"source\" or --source " + recipe.name + "=DIR"));
    std::error_code ec;
    if (!fs::is_directory(recipe.source, ec)) {
      return fail(ExitCode::no_input, "recipe " + recipe.name + ": source tree " + recipe.source.string() + " is not a directory");
    }
    KK_TRY(check(recipe));
    return recipe;
  };
  auto from_json_text = [&](std::string_view text, const std::string& origin, const fs::path& base) -> Result<Recipe> {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large
      return fail(config_error(origin, std::string("not valid JSON: ") + e.what()));
    }
    if (!source_override.empty() && j.is_object()) j["source"] = source_override;
    return parse_json_object(j, origin, base, true);
  };
  if (spec == "igb_uio") return finish(KK_TRY(from_json_text(builtin::igb_uio, "built-in igb_uio", "/")));
  if (spec == "rte_kni") return finish(KK_TRY(from_json_text(builtin::rte_kni, "built-in rte_kni", "/")));

  fs::path path = spec;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "kmodkit-recipe.json", ec)) path /= "kmodkit-recipe.json";
    else if (fs::exists(path / "dkms.conf", ec)) path /= "dkms.conf";
    else return fail(ExitCode::no_input, "recipe " + spec + ": the directory has neither kmodkit-recipe.json nor dkms.conf");
  }
  auto text = files::read_file(path, 1 << 20);
  if (!text) {
    return fail(ExitCode::no_input, "recipe '" + spec + "' is neither a built-in recipe (igb_uio, rte_kni) nor a readable file: " + text.error().message);
  }
  if (path.extension() == ".json") return finish(KK_TRY(from_json_text(*text, path.string(), path.parent_path())));
  return finish(KK_TRY(parse_dkms_conf(*text, path.string(), path.parent_path())));
}

}  // namespace kmodkit::kmod_builder
