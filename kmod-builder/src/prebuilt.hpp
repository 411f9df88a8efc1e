#pragma once
// Prebuilt modules (README, "Prebuilt modules in an image"): `kmod-builder export --image-dir
// DIR` copies installed cache entries, signed, into DIR/<cache key>/ for a Containerfile to
// COPY into an image; `kmod-builder build --prebuilt DIR` installs an entry there whose key
// matches instead of compiling.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache_key.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

struct ExportImageOptions {
  fs::path volume = "/modules";
  std::string kernel_release;        // "" = every kernel with installed recipes
  std::vector<std::string> recipes;  // empty = every installed recipe
  fs::path image_dir;
  bool dry_run = false;
};
// Writes DIR/<key>/entry.json, its signed modules and certificate.der for each installed
// recipe, each entry made in a staging directory beside it and renamed into place (an entry
// already there is left alone). Errors: 66 nothing installed, 65 an installed module changed
// since it was installed, or a record of an older kmod-builder (no inputs: rebuild it), 73 DIR
// not writable.
Result<void> export_image_dir(const ExportImageOptions& options);

// A prebuilt entry that fits, or why none does.
struct PrebuiltMatch {
  std::optional<nlohmann::json> entry;  // its entry.json, the modules checked
  fs::path dir;                         // DIR/<key>
  std::string why_not;                  // when there is none, in words for a log line
};
// The entry in `dir` for `recipe` whose key is the key of `inputs`, where the parts named in
// `open_parts` take the entry's own values ("compiler" when there is no compiler here, "cert"
// when no signing key, certificate or signatures were given): the entry fits when every other
// input matches. It fits only when its files are the ones it lists, its certificate is the one
// its key names and its signatures verify with it. Never fails: a damaged entry is a why_not.
PrebuiltMatch find_prebuilt(const fs::path& dir, const std::string& recipe, const KeyInputs& inputs,
                            const std::vector<std::string>& open_parts = {});

// Copies a matching entry into the volume's cache (staging, then rename) and its certificate
// into .kmodkit/certs; returns the entry as the cache now holds it. Errors: the writes' (73).
Result<nlohmann::json> adopt_prebuilt(const fs::path& volume, const PrebuiltMatch& match);

}  // namespace kmodkit::kmod_builder
