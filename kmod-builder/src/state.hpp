#pragma once
// Where kmod-builder keeps its state on the modules volume (.kmodkit/, docs/ARCHITECTURE.md):
// the records of installed recipes, the cache, the build logs; and how its JSON is written.

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kmodkit/result.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

// The "format" of records and cache entries; one of another format is not used.
constexpr int kRecordFormat = 1;

// <volume>/.kmodkit (core's volume contract), where kmod-builder's own state lives.
fs::path state_dir(const fs::path& volume);
// <volume>/.kmodkit/cache/<key>: one cache entry.
fs::path cache_dir(const fs::path& volume, const std::string& key);
// <volume>/.kmodkit/modules: a directory per kernel release holding the records of its recipes.
fs::path records_dir(const fs::path& volume);
// <volume>/.kmodkit/modules/<kver>/<recipe>.json: the record of an installed recipe.
fs::path record_path(const fs::path& volume, const std::string& kver, const std::string& recipe);
// <volume>/.kmodkit/logs/<kver>/<recipe>.log: the log of a failed build.
fs::path log_path(const fs::path& volume, const std::string& kver, const std::string& recipe);

// Holds the release's use record (core's ModulesVolume::use) for as long as the result lives, so
// init-modules' gc leaves the tree alone while this run reads it (docs/ARCHITECTURE.md, "Kernel
// upgrades"). Take it before the tree is read. Usage error (64) for a name that is not a release;
// any other failure is logged as a warning and an empty hold returned: not being able to record
// a use must not stop a build or a load.
Result<volume::TreeUse> hold_tree(const fs::path& volume, const std::string& kernel_release);

// An installed recipe's record, read.
struct Record {
  fs::path path;
  nlohmann::json json;
};
// The records of `kernel_release` ("" = every kernel on the volume), only `recipes` when not
// empty, sorted by kernel and recipe. Errors: 66 nothing installed (or a recipe given is not),
// 65 a file there that is not a record.
Result<std::vector<Record>> read_records(const fs::path& volume, const std::string& kernel_release,
                                        const std::vector<std::string>& recipes);

// The bytes of a module an installed record lists (`module` is one of record.json's "modules"),
// checked against the record. Data error (65) naming the file and the record when its SHA-256
// differs; read_file's errors.
Result<std::string> read_installed_module(const fs::path& volume, const Record& record, const nlohmann::json& module);

// Puts a signing certificate on the volume for whoever enrolls it in the node's firmware
// (mokutil --import reads DER only): .kmodkit/certs/<first 16 hex digits of the DER's SHA-256>.der
// and the same certificate in PEM beside it, each written atomically. Named by content, so a
// file there is never replaced by another certificate. Returns the DER's path relative to the
// volume; errors are the writes'.
Result<std::string> write_certificate(const fs::path& volume, const std::string& der, const std::string& pem);

// A record, cache entry or status as text: indented, ending in a newline. Never fails: what is
// not UTF-8 is replaced.
std::string json_text(const nlohmann::json& j);

}  // namespace kmodkit::kmod_builder
