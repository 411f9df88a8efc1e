#pragma once
// Archive extraction and tree copies on libarchive, with a safety policy for untrusted input:
// no absolute paths, no "..", no symlink that leads outside the destination, nothing written
// through a symlink. Symlinks are rewritten to relative ones that stay inside the destination.
// Reads tar (any compression libarchive knows: gz, xz, zst, bz2), cpio, rpm, and .deb (the ar
// container, then its data.tar.*).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/digest.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::archive {

namespace fs = std::filesystem;

// How an extraction or copy reports the device nodes, FIFOs and sockets it skips (it never
// creates them): a warning each, or only a count in Stats::skipped, when the caller has already
// reported them (seed-data lists its trees before it copies them).
enum class SpecialFiles { warn, count };

struct Policy {
  // Where entries go. Made canonical before use, so no component of it is a symlink.
  fs::path root;
  // Moves a normalised relative path ("lib/modules/x") elsewhere ("usr/lib/modules/x"); applied
  // to entry paths, hard-link targets and symlink targets alike. Identity when empty.
  std::function<std::string(std::string_view path)> relocate;
  // False skips an entry (after relocation). Everything is kept when empty.
  std::function<bool(std::string_view path)> include;
  // Trusted input (an image's own trees): also restore owners, extended attributes, ACLs and
  // file flags, and keep setuid/setgid bits. Off for archives from the network.
  bool preserve_metadata = false;
  // Called (from writer threads, concurrently) with the path relative to the root and the
  // SHA-256 of each regular file's content as it is written; hard links are not reported.
  std::function<void(std::string_view path, std::string_view sha256)> on_file_digest = nullptr;
  SpecialFiles special_files = SpecialFiles::warn;
};

struct Stats {
  uint64_t files = 0;     // regular files (hard links included)
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t skipped = 0;   // device nodes, FIFOs, sockets, excluded paths
  uint64_t bytes = 0;     // content bytes of regular files
  Stats& operator+=(const Stats& o);
};

// One extraction into policy.root, from any number of archives and trees, possibly on several
// threads at once. Symlinks are created only by finish(), after every file is written (as GNU
// tar's delayed links): while archives are extracted the tree has no symlink that a later entry
// could be written through, without a check of every path component per entry. Each archive
// is read on one thread and decompressed on another; small files are created by two writer
// threads; hard links are made by finish() too, after the symlinks. A copied tree is walked on
// one thread; the writers read each file's content from the descriptor the walk opened. A path
// an archive names twice ends as its later entry made it (tar's rule).
// Every thread that writes, the caller's included, takes a umask, working directory and root of
// its own (unshare(CLONE_FS)): libarchive's disk writer sets the umask to 0 and back for each
// entry, which would race between threads sharing one. Where the kernel refuses (seccomp),
// writers take turns instead.
class Extraction {
 public:
  // The root must exist; it is made canonical, so no component of it is a symlink.
  static Result<std::unique_ptr<Extraction>> create(Policy policy);
  ~Extraction();

  // Extracts the archive read from `fd` (a file or a pipe). Every byte read from `fd`, up to its
  // end, is fed to `hash` when given, so the caller can check the whole input's digest.
  // `name` names the input in messages. Thread-safe.
  // Errors: data error (65) for a corrupt, truncated or malicious archive (the message names the
  // entry); cannot create (73) when the destination cannot be written.
  Result<Stats> extract_fd(int fd, std::string_view name, digest::Sha256* hash = nullptr);

  // Copies `source` (a tree, a file or a symlink; symlinks are never followed) to root/`dest`
  // under the same policy, keeping modes, mtimes, hard links and symlinks (and owners, xattrs and
  // ACLs when the policy preserves metadata). Thread-safe.
  // Errors: input missing (66) naming what cannot be read; cannot create (73).
  Result<Stats> copy_tree(const fs::path& source, const std::string& dest);

  // Several copies as one: one walk after the other, their files written by the same writers
  // (a merge copies thousands of single files). Hard links between them are kept. Errors as
  // copy_tree's.
  struct Copy {
    fs::path source;
    std::string dest;
  };
  Result<Stats> copy_trees(const std::vector<Copy>& copies);

  // Creates the symlinks, then gives the directories their modes and times (after everything in
  // them is made: a read-only directory can still take its links, and keeps its time). A symlink
  // whose path is also a directory of the tree, or that lies below another symlink, is a data
  // error.
  Result<void> finish();

  struct State;

 private:
  explicit Extraction(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Single-shot forms: create, extract or copy, finish.
Result<Stats> extract_fd(int fd, std::string_view name, const Policy& policy,
                         digest::Sha256* hash = nullptr);
Result<Stats> copy_tree(const fs::path& source, const std::string& dest, const Policy& policy);

// What an archive entry is, as list_fd reports it.
enum class EntryType { file, dir, symlink, hardlink, other };

// Reads the tar (or cpio) archive from `fd`, in any compression libarchive knows, and calls `fn`
// with each entry's path as the archive names it and its type; writes nothing. For a first pass
// over an input that decides what to extract (an image's layers, whose whiteouts hide entries of
// the layers below). Errors: data error (65) for a corrupt or truncated archive, naming `name`;
// fn's own error as it returned it.
Result<void> list_fd(int fd, std::string_view name,
                     const std::function<Result<void>(std::string_view path, EntryType type)>& fn);

// Lexically normalises a relative path: drops "." and empty components and a leading "./".
// Returns nullopt when it is absolute or goes above its start with "..".
std::optional<std::string> normalize_relative(std::string_view path);

// The relative symlink text that leads from a link at `link_path` to `target`, both relative to
// the same root ("usr/lib/modules/k/build", "usr/src/h" -> "../../../src/h").
std::string relative_link(std::string_view link_path, std::string_view target);

// Decompresses the stream read from `fd` (gz, xz, zst, bz2 or none) and hands the plain bytes
// to `sink` in chunks. Every input byte is fed to `hash` when given. Returns the plain size.
Result<uint64_t> decompress_fd(int fd, std::string_view name, digest::Sha256* hash,
                               const std::function<Result<void>(std::string_view)>& sink);

}  // namespace kmodkit::archive
