#pragma once
// Archive extraction and tree copies on libarchive, with a safety policy for untrusted input:
// no absolute paths, no "..", no symlink that leads outside the destination, nothing written
// through a symlink. Absolute symlinks are rewritten to relative ones inside the destination.
// Reads tar (any compression libarchive knows: gz, xz, zst, bz2), cpio, rpm, and .deb (the ar
// container, then its data.tar.*).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "kmodkit/digest.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::archive {

namespace fs = std::filesystem;

struct Policy {
  // Where entries go. Made canonical before use, so no component of it is a symlink.
  fs::path root;
  // Moves a normalised relative path ("lib/modules/x") elsewhere ("usr/lib/modules/x"); applied
  // to entry paths, hard-link targets and symlink targets alike. Identity when empty.
  std::function<std::string(std::string_view path)> relocate;
  // False skips an entry (after relocation). Everything is kept when empty.
  std::function<bool(std::string_view path)> include;
};

struct Stats {
  uint64_t files = 0;     // regular files (hard links included)
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t skipped = 0;   // device nodes, FIFOs, sockets, excluded paths
  uint64_t bytes = 0;     // content bytes of regular files
  Stats& operator+=(const Stats& o);
};

enum class Kind { tar, deb, rpm, cpio };

// Extracts the archive read from `fd` (a file or a pipe) into policy.root. Every byte read
// from `fd`, up to its end, is fed to `hash` when given, so the caller can check the whole
// input's digest afterwards. `name` names the input in messages.
// Errors: data error (65) for a corrupt, truncated or malicious archive (the message names the
// entry); cannot create (73) when the destination cannot be written.
Result<Stats> extract_fd(int fd, std::string_view name, const Policy& policy,
                         digest::Sha256* hash = nullptr);

// Copies the tree at `source` (not following symlinks) to policy.root / `dest` under the same
// policy, keeping modes, mtimes and symlinks.
Result<Stats> copy_tree(const fs::path& source, const std::string& dest, const Policy& policy);

// Lexically normalises a relative path: drops "." and empty components and a leading "./".
// Returns nullopt when it is absolute or goes above its start with "..".
std::optional<std::string> normalize_relative(std::string_view path);

// The relative symlink text that leads from a link at `link_path` to `target`, both relative to
// the same root ("usr/lib/modules/k/build", "usr/src/h" -> "../../../src/h").
std::string relative_link(std::string_view link_path, std::string_view target);

}  // namespace kmodkit::archive
