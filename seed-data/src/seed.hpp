#pragma once
// seed-data: the image's default configuration trees on the pod's persistent data volume —
// copied whole on first start, merged on a new image without touching the operator's edits
// (like dpkg's conffiles, never interactive).

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::seed {

namespace fs = std::filesystem;

// One default tree: where it is in the image, and where it goes, relative to the data volume.
struct Tree {
  fs::path from;
  std::string to;
};

enum class Mode { once, merge, force };

struct Config {
  fs::path data = "/data";
  std::vector<Tree> trees;
  std::string image_version;  // a label; the trees' own fingerprint decides what changed
  Mode mode = Mode::merge;
  bool dry_run = false;
  std::optional<uid_t> uid;   // --chown
  std::optional<gid_t> gid;
  double lock_timeout_s = 600;
};

// Parses "SRC" (to = SRC without its leading /) or "SRC=DST". Usage error naming the text.
Result<Tree> parse_tree(const std::string& text);
// Reads {"trees": [{"from": ..., "to": ...}], "image_version": ...} from a config file.
Result<void> read_config_file(const fs::path& file, Config& config);
// The same from the file's text, errors naming `origin`.
Result<void> parse_config(std::string_view text, const std::string& origin, Config& config);

// seed.json (in the volume's .kmodkit state directory): what seed-data remembers of each file it
// seeded, so that a later start tells the operator's edits from the image's changes.
struct Record {
  bool symlink = false;
  std::string sha256;  // file content, or the link target
  uint64_t size = 0;   // the image's file
  int64_t mtime_ns = 0;
  uint64_t vsize = 0;  // the volume's file as seed-data left it (0/0: unknown, hash to compare)
  int64_t vmtime_ns = 0;
};

struct Manifest {
  std::string image_version, fingerprint;
  std::vector<Tree> trees;
  std::map<std::string, Record> files;  // by path in the data volume
};

// Reads seed.json's text. Data error (65) naming `origin` when it is not JSON, has another
// format, lacks its files or trees, or has a field of the wrong type or a malformed digest.
Result<Manifest> parse_manifest(std::string_view text, const std::string& origin);
// seed.json's text for `m`, one line per file; parse_manifest reads it back unchanged.
std::string manifest_json(const Manifest& m);

// What happened to each file, and the totals the summary reports.
struct Outcome {
  size_t added = 0, updated = 0, kept = 0, conflicts = 0, dropped = 0, unchanged = 0, skipped = 0;
  uint64_t bytes = 0;
  bool nothing_to_do = false;
  std::vector<std::string> plan;  // "add var/x", "update ...", "keep ...", "conflict ...", "dropped ..."
};

// Seeds or merges; see kmod-builder-like guarantees in seed-data/README.md.
// Errors: 66 a tree is missing or unreadable (nothing written), 65 a corrupt seed.json (unless
// force), 73 the volume is read-only or full (nothing half-written visible), 75 lock wait.
Result<Outcome> run(const Config& config);

// The process entry point (seed_data.cpp): options, logging, one call, exit code.
int main(int argc, char** argv);

}  // namespace kmodkit::seed
