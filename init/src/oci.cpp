#include "oci.hpp"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "kmodkit/archive.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/http.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "kmodkit/volume.hpp"
#include "layout.hpp"
#include "sources.hpp"

namespace kmodkit::init {
namespace oci {

using json = nlohmann::json;

namespace {

// The manifest media types a registry may answer with (image-spec's media-types.md; Docker's
// Image Manifest V2, Schema 2). Schema 1 is not asked for: it has no digests of its layers.
constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

// Where RHCOS's extensions image (rhel-coreos-extensions) holds its createrepo'd repository, with
// kernel-devel pinned to the node's kernel (rpm-ostree reads it as a repository of its own).
constexpr std::string_view kExtensions = "usr/share/rpm-ostree/extensions";

bool in_extensions(const std::string& path) {
  return path.starts_with(kExtensions) && path.size() > kExtensions.size() && path[kExtensions.size()] == '/';
}

// What a kernel tree needs of an image; nothing else is written (image-spec's paths, merged /usr).
bool needed(std::string_view path) {
  for (std::string_view dir : {"usr/src/kernels", "usr/lib/modules"}) {
    if (path.starts_with(dir) && path.size() > dir.size() && path[dir.size()] == '/') return true;
  }
  return path == "etc/driver-toolkit-release.json";
}

std::string basename_of(std::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string parent_of(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

// The Basic credentials (base64 of user:password) for `registry` in a docker config.json, "" when it
// has none. Configuration error (78) naming the file when it is not such a file.
Result<std::string> credentials_for(const fs::path& file, const std::string& registry) {
  auto text = KK_TRY(files::read_file(file, 4 << 20));
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return fail(ExitCode::config, file.string() + " is not a docker config.json: not a JSON object");
  }
  if (!doc.contains("auths") || !doc["auths"].is_object()) return std::string();
  for (const auto& [key, entry] : doc["auths"].items()) {
    // Keys are hosts, sometimes written as URLs ("https://index.docker.io/v1/").
    std::string host = key;
    if (auto scheme = host.find("://"); scheme != std::string::npos) host = host.substr(scheme + 3);
    host = host.substr(0, host.find('/'));
    const bool hub = registry == "registry-1.docker.io" && (host == "index.docker.io" || host == "docker.io");
    if ((host != registry && !hub) || !entry.is_object()) continue;
    if (entry.contains("auth") && entry["auth"].is_string()) return entry["auth"].get<std::string>();
    if (entry.contains("username") && entry.contains("password") && entry["username"].is_string() &&
        entry["password"].is_string()) {
      return digest::base64(entry["username"].get<std::string>() + ":" + entry["password"].get<std::string>());
    }
    return fail(ExitCode::config, file.string() + ": auths." + key + " has neither auth nor username and password");
  }
  return std::string();
}

// A client for one repository of one registry: requests carry the repository's pull token,
// fetched from the realm the registry names when it first answers 401.
class Client {
 public:
  Client(const Reference& ref, const Config& cfg, std::string credentials, std::string credentials_origin)
      : ref_(ref), credentials_(std::move(credentials)), origin_(std::move(credentials_origin)) {
    options_ = cfg.http;
    const bool insecure = std::find(cfg.insecure_registries.begin(), cfg.insecure_registries.end(), ref.registry) !=
                          cfg.insecure_registries.end();
    base_ = std::string(insecure ? "http://" : "https://") + ref.registry + "/v2/" + ref.repository + "/";
  }

  std::string url(std::string_view path) const { return base_ + std::string(path); }
  std::string describe() const { return ref_.registry + "/" + ref_.repository; }

  // GETs `path` of the repository into `sink`, authenticating when the registry asks to.
  // Permission denied (77) when the registry or its token service refuses; the errors of
  // http::get otherwise.
  Result<uint64_t> get(std::string_view path, const std::vector<std::string>& headers, const http::Sink& sink,
                       http::Response* response, bool progress = false, std::string what = {}) {
    for (int attempt = 0;; ++attempt) {
      http::Options opts = options_;
      opts.headers = headers;
      const std::string used = authorization();
      if (!used.empty()) opts.headers.push_back("Authorization: " + used);
      opts.response = response;
      opts.progress = progress;
      opts.what = what;
      auto got = http::get(url(path), sink, opts);
      if (got || response->status != 401) return got;
      if (attempt > 0) {
        return fail(ExitCode::no_perm, describe() + ": the registry refused the credentials it was given (HTTP 401)");
      }
      // Layers are fetched on several threads: one of them asks for a new token, the others
      // take the one it got.
      std::lock_guard lock(mutex_);
      if (authorization_ == used) KK_TRY(authenticate(response->header("www-authenticate")));
    }
  }

  Result<std::string> get_small(std::string_view path, const std::vector<std::string>& headers,
                                http::Response* response, size_t max_bytes) {
    std::string body;
    KK_TRY(get(
        path, headers,
        [&](std::span<const char> bytes) -> Result<void> {
          if (body.size() + bytes.size() > max_bytes) {
            return fail(ExitCode::data_err, url(path) + ": larger than " + std::to_string(max_bytes) + " bytes");
          }
          body.append(bytes.data(), bytes.size());
          return {};
        },
        response));
    return body;
  }

 private:
  // The registry's challenge (distribution-spec; the Docker token authentication protocol):
  // Basic takes the credentials directly; Bearer names the realm that issues a pull token.
  Result<void> authenticate(const std::string& challenge) {
    const std::string none = origin_.empty() ? "no credentials given" : "no credentials for " + ref_.registry + " in " + origin_;
    auto parsed = parse_challenges(challenge);
    if (!parsed) return fail(ExitCode::no_perm, describe() + ": " + parsed.error().message);
    const Challenge* bearer = nullptr;
    const Challenge* basic = nullptr;
    for (const auto& c : *parsed) {
      if (!bearer && strcasecmp(c.scheme.c_str(), "Bearer") == 0) bearer = &c;
      if (!basic && strcasecmp(c.scheme.c_str(), "Basic") == 0) basic = &c;
    }
    if (!bearer && basic) {
      if (credentials_.empty()) return fail(ExitCode::no_perm, describe() + ": the registry asks for a user and password (" + none + ")");
      authorization_ = "Basic " + credentials_;
      return {};
    }
    if (!bearer) {
      return fail(ExitCode::no_perm, describe() + ": the registry answers 401 with an unknown challenge '" + challenge + "'");
    }
    auto param = [&](const char* name) {
      auto it = bearer->params.find(name);
      return it == bearer->params.end() ? std::string() : it->second;
    };
    const std::string realm = param("realm");
    if (realm.empty()) return fail(ExitCode::no_perm, describe() + ": the registry's Bearer challenge names no realm");
    if (!realm.starts_with("https://") && !(realm.starts_with("http://") && base_.starts_with("http://"))) {
      return fail(ExitCode::no_perm, describe() + ": the token realm " + realm + " is not https");
    }
    std::string token_url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
    const std::string service = param("service");
    if (!service.empty()) token_url += "service=" + http::escape(service) + "&";
    token_url += "scope=" + http::escape("repository:" + ref_.repository + ":pull");
    http::Options opts = options_;
    http::Response response;
    opts.response = &response;
    if (!credentials_.empty()) opts.headers.push_back("Authorization: Basic " + credentials_);
    auto body = http::get_string(token_url, opts, 1 << 20);
    if (!body) {
      if (response.status == 401 || response.status == 403) {
        return fail(ExitCode::no_perm, describe() + ": the token service " + realm + " refused a pull token (HTTP " +
                                           std::to_string(response.status) + "; " +
                                           (credentials_.empty() ? none : "with the credentials from " + origin_) + ")");
      }
      return fail(body.error().context(describe() + ": token"));
    }
    json doc = json::parse(*body, nullptr, false);
    std::string token;
    for (const char* key : {"token", "access_token"}) {
      if (token.empty() && doc.is_object() && doc.contains(key) && doc[key].is_string()) token = doc[key];
    }
    if (token.empty()) return fail(ExitCode::unavailable, describe() + ": the token service " + realm + " answered no token");
    authorization_ = "Bearer " + token;
    return {};
  }

  std::string authorization() {
    std::lock_guard lock(mutex_);
    return authorization_;
  }

  Reference ref_;
  std::mutex mutex_;  // guards authorization_
  std::string credentials_;
  std::string origin_;
  std::string base_;
  std::string authorization_;
  http::Options options_;
};

// A manifest fetched by tag or digest and checked: against the digest asked for, else against
// the Docker-Content-Digest the registry gives. Returns the document and its digest.
struct Fetched {
  Manifest manifest;
  std::string digest;
};

Result<Fetched> fetch_manifest(Client& client, const std::string& image, const std::string& reference,
                               const std::string& expected_digest) {
  http::Response response;
  const std::string accept = "Accept: " + std::string(kOciIndex) + ", " + std::string(kOciManifest) + ", " +
                             std::string(kDockerList) + ", " + std::string(kDockerManifest);
  auto body = KK_TRY_CTX(client.get_small("manifests/" + reference, {accept}, &response, 4 << 20), image);
  Fetched f;
  f.digest = "sha256:" + digest::sha256_hex(body);
  std::string want = expected_digest;
  if (want.empty()) {
    const std::string given = response.header("docker-content-digest");
    if (given.starts_with("sha256:")) want = given;
  }
  if (!want.empty() && want != f.digest) {
    return fail(ExitCode::data_err, image + ": the manifest " + want + " the registry sent has the digest " + f.digest);
  }
  f.manifest = KK_TRY(parse_manifest(body, response.header("content-type"), image + ": the manifest " + f.digest));
  return f;
}

// Downloads a blob into the cache (a temporary file renamed after the digest check), unless a
// verified copy is there already. Returns the cached file. Data error (65) naming the blob when
// its content does not have its digest.
Result<fs::path> cached_blob(Client& client, const std::string& image, const Descriptor& d, const fs::path& cache,
                             bool* from_cache) {
  const std::string hex = d.digest.substr(7);
  const fs::path path = cache / hex;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    auto have = digest::sha256_file(path);
    if (have && *have == hex) {
      // Its mtime is its last use: gc removes the blobs no pull used for N days.
      if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0) {
        return fail(files::errno_error("touch " + path.string(), errno));
      }
      *from_cache = true;
      return path;
    }
    log::get("init.oci")->warn("{}: the cached blob {} is damaged; fetching it again", image, d.digest);
    fs::remove(path, ec);
  }
  *from_cache = false;
  const fs::path partial = cache / (hex + ".partial");
  digest::Sha256 hash;
  {
    auto fd = KK_TRY(files::open_file(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    http::Response response;
    auto got = client.get(
        "blobs/" + d.digest, {},
        [&](std::span<const char> bytes) -> Result<void> {
          hash.update(bytes.data(), bytes.size());
          if (int err = files::write_all(fd.get(), bytes.data(), bytes.size()); err != 0) {
            return fail(files::errno_error(partial.string(), err));
          }
          return {};
        },
        &response, true, d.digest.substr(0, 19));
    if (!got) {
      fs::remove(partial, ec);
      return fail(std::move(got).error().context(image));
    }
  }
  const std::string got_hex = hash.hex();
  if (got_hex != hex) {
    fs::remove(partial, ec);
    return fail(ExitCode::data_err, image + ": the blob " + d.digest + " the registry sent has the digest sha256:" + got_hex);
  }
  KK_TRY(files::rename_path(partial, path));
  return path;
}

// What one layer holds, read in a first pass, so that the second writes only what the layers
// above leave visible (image-spec's layer.md: a later entry replaces an earlier one; ".wh.x"
// removes x and all below it from the layers beneath; ".wh..wh..opq" empties its directory of
// them). Paths are normalised and relocated (merged /usr) as the extraction relocates them.
struct LayerPaths {
  std::unordered_map<std::string, bool> entries;  // path -> is a directory (its last entry)
  std::unordered_set<std::string> whiteouts;      // hidden with everything below them
  std::unordered_set<std::string> opaque;         // directories whose lower content is hidden
};

Result<LayerPaths> list_layer(const fs::path& blob, const std::string& name) {
  LayerPaths out;
  auto fd = KK_TRY(files::open_file(blob, O_RDONLY | O_CLOEXEC));
  KK_TRY(archive::list_fd(fd.get(), name, [&](std::string_view raw, archive::EntryType type) -> Result<void> {
    auto norm = archive::normalize_relative(raw);
    if (!norm) {
      return fail(ExitCode::data_err, name + ": entry '" + std::string(raw) + "' leads outside the image's root");
    }
    if (norm->empty()) return {};
    const std::string path = layout::relocate_merged_usr(*norm);
    const std::string base = basename_of(path);
    if (base == ".wh..wh..opq") {
      out.opaque.insert(parent_of(path));
    } else if (base.starts_with(".wh.")) {
      const std::string parent = parent_of(path);
      out.whiteouts.insert((parent.empty() ? "" : parent + "/") + base.substr(4));
    } else {
      out.entries[path] = type == archive::EntryType::dir;
    }
    return {};
  }));
  return out;
}

// Whether the entry `path` of layer `index` is still visible with the layers above applied.
bool visible(const std::vector<LayerPaths>& layers, size_t index, const std::string& path, bool is_dir) {
  for (size_t j = index + 1; j < layers.size(); ++j) {
    const auto& upper = layers[j];
    if (auto it = upper.entries.find(path); it != upper.entries.end() && !(is_dir && it->second)) return false;
    if (upper.whiteouts.contains(path)) return false;
    for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      const std::string ancestor = path.substr(0, slash);
      if (upper.whiteouts.contains(ancestor) || upper.opaque.contains(ancestor)) return false;
      if (auto it = upper.entries.find(ancestor); it != upper.entries.end() && !it->second) return false;
    }
    if (upper.opaque.contains("")) return false;
  }
  return true;
}

std::string short_type(std::string_view media_type) {
  if (media_type.ends_with("zstd")) return "tar+zstd";
  if (media_type.ends_with("gzip")) return "tar+gzip";
  return "tar";
}

// Applies the layers in order into `root` (paths relocated as the volume's are), writing only the
// entries `wanted` takes that the layers above leave visible, and never a whiteout. Returns what
// was written. Errors: as Extraction's (65 for a malicious entry, naming the layer).
Result<archive::Stats> apply_layers(const std::vector<fs::path>& blobs, const std::vector<Descriptor>& layers,
                                    const std::vector<LayerPaths>& paths, const fs::path& root,
                                    const std::function<bool(const std::string&)>& wanted, const std::string& image) {
  std::atomic<size_t> current{0};
  archive::Policy policy{root, layout::relocate_merged_usr, [&](std::string_view p) {
                           const std::string path(p);
                           if (!wanted(path) || basename_of(path).starts_with(".wh.")) return false;
                           const auto& layer = paths[current];
                           auto it = layer.entries.find(path);
                           return visible(paths, current, path, it != layer.entries.end() && it->second);
                         }};
  auto extraction = KK_TRY(archive::Extraction::create(policy));
  archive::Stats stats;
  for (size_t i = 0; i < layers.size(); ++i) {
    current = i;
    auto fd = KK_TRY(files::open_file(blobs[i], O_RDONLY | O_CLOEXEC));
    stats += KK_TRY(extraction->extract_fd(fd.get(), image + ": layer " + layers[i].digest));
  }
  KK_TRY_CTX(extraction->finish(), image);
  return stats;
}

}  // namespace

namespace {

// RFC 7230's tchar, and token68's characters besides its trailing '='s (RFC 7235).
bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}
bool is_token68(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || (c != '\0' && std::strchr("-._~+/", c) != nullptr);
}

Result<Descriptor> descriptor(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string()) {
    return fail(ExitCode::data_err, where + " has a descriptor without a digest");
  }
  Descriptor d;
  d.digest = j["digest"];
  if (!d.digest.starts_with("sha256:") || !digest::is_sha256_hex(std::string_view(d.digest).substr(7))) {
    return fail(ExitCode::data_err, where + " names the digest '" + d.digest + "', which is not sha256:<64 hex digits>");
  }
  d.digest = "sha256:" + digest::normalize_hex(std::string_view(d.digest).substr(7));
  if (j.contains("mediaType") && j["mediaType"].is_string()) d.media_type = j["mediaType"];
  if (j.contains("size") && j["size"].is_number_unsigned()) d.size = j["size"];
  d.platform = "unknown";
  if (j.contains("platform") && j["platform"].is_object()) {
    const auto& p = j["platform"];
    auto text = [&](const char* key) {
      return p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : std::string("?");
    };
    d.platform = text("os") + "/" + text("architecture");
    if (p.contains("variant") && p["variant"].is_string()) d.platform += "/" + p["variant"].get<std::string>();
  }
  return d;
}

}  // namespace

Result<std::vector<Challenge>> parse_challenges(std::string_view h) {
  std::vector<Challenge> out;
  size_t i = 0;
  auto bad = [&](const std::string& why) -> Error {
    return Error{ExitCode::data_err, "the WWW-Authenticate header '" + std::string(h) + "' " + why + " (at character " +
                                         std::to_string(i + 1) + ")"};
  };
  auto skip_ows = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto token = [&] {
    const size_t begin = i;
    while (i < h.size() && is_tchar(h[i])) ++i;
    return std::string(h.substr(begin, i - begin));
  };
  // Whether a token68 credential ends the challenge here: its characters, '='s, then the end or a comma.
  auto token68_here = [&] {
    size_t j = i;
    while (j < h.size() && is_token68(h[j])) ++j;
    if (j == i) return false;
    while (j < h.size() && h[j] == '=') ++j;
    while (j < h.size() && (h[j] == ' ' || h[j] == '\t')) ++j;
    return j == h.size() || h[j] == ',';
  };
  for (;;) {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == ',')) ++i;  // empty list elements
    if (i == h.size()) break;
    Challenge c;
    c.scheme = token();
    if (c.scheme.empty()) return std::unexpected(bad("has a character no auth scheme has"));
    if (i < h.size() && h[i] != ' ' && h[i] != '\t' && h[i] != ',') {
      return std::unexpected(bad("has no space after the scheme " + c.scheme));
    }
    skip_ows();
    if (i == h.size() || h[i] == ',') {  // a scheme alone
      out.push_back(std::move(c));
      continue;
    }
    if (token68_here()) {
      const size_t begin = i;
      while (i < h.size() && h[i] != ',' && h[i] != ' ' && h[i] != '\t') ++i;
      c.params[""] = std::string(h.substr(begin, i - begin));
      out.push_back(std::move(c));
      continue;
    }
    // auth-params, comma-separated; a token not followed by '=' starts the next challenge.
    while (i < h.size()) {
      const size_t start = i;
      std::string name = token();
      if (name.empty()) return std::unexpected(bad("has a character no parameter name has"));
      skip_ows();
      if (i == h.size() || h[i] != '=') {
        if (c.params.empty() && start == i) return std::unexpected(bad("has a parameter without a value"));
        if (c.params.empty()) return std::unexpected(bad("has the parameter " + name + " without a value"));
        i = start;  // the next challenge's scheme
        break;
      }
      ++i;
      skip_ows();
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        bool closed = false;
        while (i < h.size()) {
          const char ch = h[i++];
          if (ch == '"') {
            closed = true;
            break;
          }
          if (ch == '\\') {
            if (i == h.size()) break;
            value += h[i++];
          } else {
            value += ch;
          }
        }
        if (!closed) return std::unexpected(bad("has an unterminated quoted string in " + name));
      } else {
        value = token();
        if (value.empty()) return std::unexpected(bad("has the parameter " + name + " without a value"));
      }
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (!c.params.emplace(name, std::move(value)).second) {
        return std::unexpected(bad("names the parameter " + name + " twice in one challenge"));
      }
      skip_ows();
      if (i == h.size()) break;
      if (h[i] != ',') return std::unexpected(bad("has text after the parameter " + name + " that is not a comma"));
      while (i < h.size() && (h[i] == ',' || h[i] == ' ' || h[i] == '\t')) ++i;
    }
    out.push_back(std::move(c));
  }
  if (out.empty()) return std::unexpected(bad("is empty"));
  return out;
}

Result<Manifest> parse_manifest(std::string_view body, std::string_view content_type, const std::string& where) {
  const json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail(ExitCode::data_err, where + " is not a JSON object");
  Manifest m;
  if (doc.contains("mediaType") && doc["mediaType"].is_string()) {
    m.media_type = doc["mediaType"];
  } else {
    const std::string_view type = content_type.substr(0, content_type.find(';'));
    m.media_type = std::string(type.substr(0, type.find_last_not_of(" \t") + 1));
  }
  if (m.media_type == kOciIndex || m.media_type == kDockerList) {
    m.index = true;
    if (!doc.contains("manifests") || !doc["manifests"].is_array()) {
      return fail(ExitCode::data_err, where + " is an index without a list of manifests");
    }
    for (const auto& d : doc["manifests"]) m.manifests.push_back(KK_TRY(descriptor(d, where)));
    return m;
  }
  if (m.media_type != kOciManifest && m.media_type != kDockerManifest) {
    return fail(ExitCode::data_err, where + " has the media type '" + m.media_type +
                                        "', not an OCI or Docker schema 2 image manifest or index");
  }
  if (!doc.contains("config") || !doc.contains("layers") || !doc["layers"].is_array()) {
    return fail(ExitCode::data_err, where + " has no config or no layers");
  }
  m.config = KK_TRY(descriptor(doc["config"], where));
  for (const auto& l : doc["layers"]) {
    auto d = KK_TRY(descriptor(l, where));
    if (d.media_type.find("tar") == std::string::npos) {
      return fail(ExitCode::data_err, where + " has a layer " + d.digest + " of the media type '" + d.media_type +
                                          "', not a tar, tar+gzip or tar+zstd layer");
    }
    m.layers.push_back(std::move(d));
  }
  return m;
}

std::string kernel_label(std::string_view config) {
  const json doc = json::parse(config, nullptr, false);
  if (!doc.is_object() || !doc.contains("config") || !doc["config"].is_object()) return {};
  const auto& c = doc["config"];
  if (!c.contains("Labels") || !c["Labels"].is_object()) return {};
  const auto& labels = c["Labels"];
  if (!labels.contains("kernel-version") || !labels["kernel-version"].is_string()) return {};
  return labels["kernel-version"];
}

Result<Reference> parse_reference(std::string_view text) {
  Reference r;
  r.text = std::string(text);
  auto bad = [&](std::string_view why) {
    return fail(ExitCode::usage, "--image: '" + std::string(text) + "' is not an image reference: " + std::string(why));
  };
  std::string_view rest = text;
  if (rest.empty()) return bad("it is empty");
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    r.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!r.digest.starts_with("sha256:") || !digest::is_sha256_hex(std::string_view(r.digest).substr(7))) {
      return bad("the digest must be sha256: and 64 hex digits");
    }
    r.digest = "sha256:" + digest::normalize_hex(std::string_view(r.digest).substr(7));
  }
  const size_t slash = rest.find('/');
  std::string_view first = slash == std::string_view::npos ? std::string_view() : rest.substr(0, slash);
  if (!first.empty() && (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
                         first == "localhost")) {
    r.registry = std::string(first);
    rest = rest.substr(slash + 1);
  } else {
    r.registry = "registry-1.docker.io";
  }
  if (r.registry == "docker.io" || r.registry == "index.docker.io") r.registry = "registry-1.docker.io";
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos) {
    r.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (r.tag.empty() || r.tag.find('/') != std::string::npos) return bad("the tag is empty or has a '/'");
  }
  if (rest.empty()) return bad("it names no repository");
  for (char c : rest) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '/' ||
          c == '.' || c == '_' || c == '-')) {
      return bad("a repository name has only lower-case letters, digits and . _ - /");
    }
  }
  r.repository = std::string(rest);
  if (r.registry == "registry-1.docker.io" && r.repository.find('/') == std::string::npos) {
    r.repository = "library/" + r.repository;
  }
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  return r;
}

std::string go_arch(std::string_view debian_arch) {
  if (debian_arch == "armhf" || debian_arch == "armel") return "arm";
  if (debian_arch == "i386") return "386";
  if (debian_arch == "ppc64el") return "ppc64le";
  return std::string(debian_arch);
}

}  // namespace oci

namespace {

using json = nlohmann::json;

// The credentials for `registry`: from --registry-auth, else from the kubelet's pull secret on
// the node when it is readable. `origin` names the file they came from.
Result<std::string> registry_credentials(const Config& cfg, const std::string& registry, std::string* origin) {
  if (!cfg.registry_auth.empty()) {
    *origin = cfg.registry_auth.string();
    auto creds = oci::credentials_for(cfg.registry_auth, registry);
    if (!creds) return fail(ExitCode::config, "--registry-auth: " + creds.error().message);
    return creds;
  }
  const fs::path kubelet = cfg.host_root / "var/lib/kubelet/config.json";
  if (::access(kubelet.c_str(), R_OK) != 0) return std::string();
  *origin = kubelet.string();
  auto creds = oci::credentials_for(kubelet, registry);
  if (!creds) {
    log::get("init.oci")->warn("{}; pulling without credentials", creds.error().message);
    return std::string();
  }
  return creds;
}

// The kernel release a driver toolkit's /etc/driver-toolkit-release.json names, "" without one.
std::string release_file_kernel(const fs::path& root) {
  auto text = files::read_file(root / "etc/driver-toolkit-release.json", 1 << 20);
  if (!text) return {};
  json doc = json::parse(*text, nullptr, false);
  if (!doc.is_object() || !doc.contains("KERNEL_VERSION") || !doc["KERNEL_VERSION"].is_string()) return {};
  return doc["KERNEL_VERSION"];
}

// The keys an extensions image's packages are checked with: --image-gpgkey, else Red Hat's release
// key on the node, which signs RHCOS's extensions. Configuration error (78) when there is none.
Result<std::vector<fs::path>> extensions_gpgkeys(const Config& cfg, const std::string& image) {
  if (!cfg.image_gpgkeys.empty()) return cfg.image_gpgkeys;
  const fs::path redhat = cfg.host_root / "etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release";
  std::error_code ec;
  if (!fs::exists(redhat, ec)) {
    return fail(ExitCode::config, image + " carries an RPM repository under " + std::string(oci::kExtensions) +
                                      " whose packages are checked with Red Hat's release key, but " + redhat.string() +
                                      " does not exist; give --image-gpgkey FILE with the key that signed them");
  }
  return std::vector<fs::path>{redhat};
}

// An image without a tree but with an RPM repository under usr/share/rpm-ostree/extensions: the
// repository is extracted (by `extract`, into the directory it is given) beside the staging root,
// never in it, and read by the rpm source as a repository of its own, gpgcheck=1 with the keys
// of extensions_gpgkeys. Nothing vouches for its repodata but the manifest's digest, which the
// pull checked, so repo_gpgcheck is not asked for. The location names the image and the package.
Result<Answer> read_extensions(Context& ctx, const std::string& image, const std::string& location,
                               const std::function<Result<archive::Stats>(const fs::path&)>& extract) {
  const auto keys = KK_TRY(extensions_gpgkeys(ctx.config, image));
  rpm::Repo repo;
  repo.id = "extensions";
  repo.name = image + " " + std::string(oci::kExtensions);
  repo.origin = image;
  repo.gpgcheck = true;
  for (const auto& k : keys) repo.gpgkeys.push_back("file://" + fs::absolute(k).string());

  // Beside the staging root, never in it: the root is what gets published.
  const fs::path scratch = ctx.staged_root.parent_path() / "image-repository";
  KK_TRY(files::make_dirs(scratch));
  KK_TRY(extract(scratch));
  const fs::path base = scratch / oci::kExtensions;
  repo.baseurls = {"file://" + base.string()};
  // Packages and messages name the files where they are in the image, not in the scratch directory.
  const std::string prefix = "file://" + base.string() + "/";
  const std::string in_image = location + ":/" + std::string(oci::kExtensions) + "/";
  auto as_in_image = [&](std::string text) {
    for (size_t at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + in_image.size())) {
      text.replace(at, prefix.size(), in_image);
    }
    return text;
  };
  auto got = fetch_from_rpm_repositories(ctx, {repo});
  if (!got) return fail(Error{got.error().code, as_in_image(got.error().message)}.context(image));
  auto answer = std::move(*got);
  KK_TRY(files::remove_tree(scratch));
  if (!answer.found) {
    answer.reason = image + ": " + as_in_image(answer.reason);
    return answer;
  }
  for (auto& p : answer.packages) p.url = as_in_image(p.url);
  answer.location = location + " (" + answer.packages.front().name + " " + answer.packages.front().version + " from /" +
                    std::string(oci::kExtensions) + ")";
  return answer;
}

Result<Answer> pull_image(Context& ctx, const oci::Reference& ref) {
  const auto& cfg = ctx.config;
  const auto& kver = ctx.kernel_release;
  auto logger = log::get("init.oci");
  const std::string image = "image " + ref.text;
  std::string origin;
  const std::string credentials = KK_TRY(registry_credentials(cfg, ref.registry, &origin));
  oci::Client client(ref, cfg, credentials, origin);

  auto fetched = KK_TRY(oci::fetch_manifest(client, image, ref.digest.empty() ? ref.tag : ref.digest, ref.digest));
  if (fetched.manifest.index) {
    const std::string want = "linux/" + oci::go_arch(cfg.arch);
    std::optional<oci::Descriptor> chosen;
    std::string offered;
    for (const auto& d : fetched.manifest.manifests) {
      offered += (offered.empty() ? "" : ", ") + d.platform;
      if (!chosen && (d.platform == want || d.platform.starts_with(want + "/"))) chosen = d;
    }
    if (!chosen) {
      return absent(image + " has no manifest for " + want + " (its index has " + (offered.empty() ? "none" : offered) + ")");
    }
    logger->debug("{}: {} is {}", image, want, chosen->digest);
    fetched = KK_TRY(oci::fetch_manifest(client, image, chosen->digest, chosen->digest));
    if (fetched.manifest.index) {
      return fail(ExitCode::data_err, image + ": the index entry " + chosen->digest + " is an index again, not an image manifest");
    }
  }
  const auto& config = fetched.manifest.config;
  const auto& layers = fetched.manifest.layers;
  const std::string location = ref.registry + "/" + ref.repository + "@" + fetched.digest;

  // The config (small, never cached): its kernel-version label refuses a stale driver toolkit
  // before any layer is pulled.
  http::Response response;
  const auto config_text = KK_TRY(client.get_small("blobs/" + config.digest, {}, &response, 16 << 20));
  if (const std::string got = "sha256:" + digest::sha256_hex(config_text); got != config.digest) {
    return fail(ExitCode::data_err, image + ": the config " + config.digest + " the registry sent has the digest " + got);
  }
  const std::string label = oci::kernel_label(config_text);
  if (!label.empty() && label != kver) {
    return fail(ExitCode::data_err, image + " carries kernel " + label + "; the node runs " + kver +
                                        " (its kernel-version label): a tree of another kernel is never built against");
  }

  Answer answer;
  answer.location = location;
  uint64_t total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    total += l.size;
    answer.packages.push_back({"layer " + std::to_string(i + 1) + "/" + std::to_string(layers.size()) + " (" +
                                   oci::short_type(l.media_type) + ")",
                               "", l.digest.substr(7), client.url("blobs/" + l.digest), l.size});
  }
  if (cfg.dry_run) {
    answer.found = true;
    answer.reason = "would pull " + location + " (" + std::to_string(layers.size()) + " layers, " +
                    progress::format_bytes(total) + ")" + (label.empty() ? "" : " for kernel " + label);
    return answer;
  }

  // Blobs by digest on the volume, so the pods of one node pull once (they take the volume's
  // lock in turn).
  const fs::path cache = volume::ModulesVolume(cfg.volume).blobs_dir();
  KK_TRY(files::make_dirs(cache));
  std::vector<fs::path> blobs(layers.size());
  std::atomic<size_t> reused{0};
  std::vector<std::function<Result<void>()>> tasks;
  std::set<std::string> distinct;  // an image may hold one layer twice: fetched once
  for (size_t i = 0; i < layers.size(); ++i) {
    blobs[i] = cache / layers[i].digest.substr(7);
    if (!distinct.insert(layers[i].digest).second) continue;
    tasks.emplace_back([&, i]() -> Result<void> {
      bool from_cache = false;
      KK_TRY(oci::cached_blob(client, image, layers[i], cache, &from_cache));
      reused += from_cache ? 1 : 0;
      return {};
    });
  }
  KK_TRY(run_parallel(tasks, cfg.jobs));
  logger->info("{}: {} layers ({}){}", image, layers.size(), progress::format_bytes(total),
               reused > 0 ? "; " + std::to_string(reused.load()) + " of them from the blob cache" : "");

  std::vector<oci::LayerPaths> paths;
  for (size_t i = 0; i < layers.size(); ++i) {
    paths.push_back(KK_TRY(oci::list_layer(blobs[i], image + ": layer " + layers[i].digest)));
  }
  // What the layers leave visible decides what the image is.
  std::set<std::string> kernels;
  bool extensions = false;
  for (size_t i = 0; i < paths.size(); ++i) {
    for (const auto& [path, is_dir] : paths[i].entries) {
      if (!oci::visible(paths, i, path, is_dir)) continue;
      if (path.starts_with("usr/src/kernels/")) {
        const std::string rest = path.substr(16);
        kernels.insert(rest.substr(0, rest.find('/')));
      }
      extensions = extensions || oci::in_extensions(path);
    }
  }
  if (kernels.empty()) {
    if (extensions) {
      return read_extensions(ctx, image, location, [&](const fs::path& root) {
        return oci::apply_layers(blobs, layers, paths, root, oci::in_extensions, image);
      });
    }
    return absent(image + " has no kernel tree under usr/src/kernels");
  }
  if (!kernels.contains(kver)) {
    std::string have;
    for (const auto& k : kernels) have += (have.empty() ? "" : ", ") + k;
    return fail(ExitCode::data_err, image + " carries kernel " + have + "; the node runs " + kver);
  }

  answer.stats += KK_TRY(oci::apply_layers(blobs, layers, paths, ctx.staged_root, oci::needed, image));

  if (const std::string named = release_file_kernel(ctx.staged_root); !named.empty() && named != kver) {
    return fail(ExitCode::data_err, image + " carries kernel " + named + "; the node runs " + kver +
                                        " (its /etc/driver-toolkit-release.json)");
  }
  answer.headers = layout::find_headers(ctx.staged_root, kver);
  if (!answer.headers.complete()) {
    return absent(image + " lacks what a module build needs: " + answer.headers.describe_missing());
  }
  answer.found = true;
  return answer;
}

}  // namespace

Result<Answer> fetch_oci(Context& ctx) {
  const auto& cfg = ctx.config;
  if (cfg.images.empty()) return absent("no --image given");
  std::string reasons;
  for (const auto& text : cfg.images) {
    const auto ref = KK_TRY(oci::parse_reference(text));
    if (!ctx.staged_root.empty() && !cfg.dry_run && !fs::is_empty(ctx.staged_root)) {
      // An earlier image left part of a tree: each image starts from an empty root.
      KK_TRY(files::remove_tree(ctx.staged_root));
      KK_TRY(files::make_dirs(ctx.staged_root));
    }
    auto answer = KK_TRY(pull_image(ctx, ref));
    if (answer.found) return answer;
    reasons += (reasons.empty() ? "" : "; ") + answer.reason;
  }
  return absent(reasons);
}

}  // namespace kmodkit::init
