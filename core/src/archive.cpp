#include "kmodkit/archive.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <deque>
#include <thread>
#include <initializer_list>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <algorithm>
#include <fcntl.h>
#include <sched.h>
#include <vector>

#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::archive {
namespace {

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
using ReadPtr = std::unique_ptr<struct archive, ReadDeleter>;
using WritePtr = std::unique_ptr<struct archive, WriteDeleter>;
struct EntryFree {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<struct archive_entry, EntryFree>;

std::string archive_message(struct archive* a) {
  const char* s = archive_error_string(a);
  return s != nullptr ? s : "unknown libarchive error";
}

// libarchive's disk writer reads the umask by setting it to 0 and back (umask(umask(0))), in
// archive_write_disk_new() and again for every entry it writes (libarchive issue #1876). The
// umask belongs to the process, not to a thread: a writer that reads it while another has it
// at 0 creates a file with bits the real umask then strips, trusting it has the archive's mode,
// and the two can leave the whole process with umask 0. So a thread that writes gets a umask of
// its own: unshare(CLONE_FS) gives it its own copy of the umask, working directory and root
// (nothing here changes directory; every path is absolute). Where the kernel refuses that (a
// container's default seccomp profile allows unshare only with CAP_SYS_ADMIN), such threads
// write their entries' headers one at a time.
std::mutex g_umask_mutex;

bool own_umask() {
  thread_local const bool own = ::unshare(CLONE_FS) == 0;
  return own;
}

// Held around each libarchive call that sets the umask; not taken by a thread with its own.
std::unique_lock<std::mutex> umask_lock() {
  if (own_umask()) return {};
  return std::unique_lock(g_umask_mutex);
}

// The non-empty components of a path; the views point into `path`.
std::vector<std::string_view> split_path(std::string_view path) {
  auto parts = text::split(path, "/");
  std::erase_if(parts, [](std::string_view p) { return p.empty(); });
  return parts;
}

std::string join(const std::vector<std::string_view>& parts, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) {
    if (!out.empty()) out += '/';
    out += parts[i];
  }
  return out;
}

std::string parent_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

// Entry paths: relative, no "..", normalised. The error says what is wrong with it.
Result<std::string> checked_entry_path(std::string_view raw) {
  if (!raw.empty() && raw.front() == '/') {
    return fail(ExitCode::data_err, "entry '" + std::string(raw) + "' has an absolute path");
  }
  for (auto part : split_path(raw)) {
    if (part == "..") {
      return fail(ExitCode::data_err, "entry '" + std::string(raw) + "' contains '..'");
    }
  }
  auto norm = normalize_relative(raw);
  if (!norm) return fail(ExitCode::data_err, "entry '" + std::string(raw) + "' has an invalid path");
  return *norm;
}

// Where a symlink at `link_path` with text `target` points, relative to the root; an error when
// it leads above the root.
Result<std::string> resolve_link(std::string_view link_path, std::string_view target) {
  std::vector<std::string> stack;
  if (target.empty() || target.front() != '/') {
    const std::string parent = parent_of(link_path);
    for (auto p : split_path(parent)) stack.emplace_back(p);
  }
  for (auto part : split_path(target)) {
    if (part == ".") continue;
    if (part == "..") {
      if (stack.empty()) {
        return fail(ExitCode::data_err, "entry '" + std::string(link_path) + "' is a symlink to '" +
                                            std::string(target) + "', which leads outside the tree");
      }
      stack.pop_back();
      continue;
    }
    stack.emplace_back(part);
  }
  std::string out;
  for (const auto& s : stack) {
    if (!out.empty()) out += '/';
    out += s;
  }
  return out;
}

Error libarchive_write_error(struct archive* out, std::string_view where) {
  int err = archive_errno(out);
  std::string msg = std::string(where) + ": " + archive_message(out);
  if (err > 0 && msg.find(std::strerror(err)) == std::string::npos) msg += std::string(": ") + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT || err == EROFS || err == EIO || err == EMFILE || err == ENFILE) {
    return Error{ExitCode::cant_create, msg};
  }
  if (err == EACCES || err == EPERM) return Error{ExitCode::no_perm, msg};
  // Everything else libarchive refuses while writing is about the entry itself (a symlink in
  // the way, a bad hard-link target): the input is at fault.
  return Error{ExitCode::data_err, msg};
}

}  // namespace

struct DeferredLink {
  std::string path;    // relative to the root
  std::string target;  // link text
  struct timespec mtime;
};

struct Extraction::State {
  Policy policy;
  fs::path root;  // canonical
  std::mutex mutex;
  std::vector<DeferredLink> links;
  // Hard links (entries naming their target, and where they come from), made by finish() after
  // the symlinks: a hard link may name a symlink.
  std::vector<std::pair<EntryPtr, std::string>> hardlinks;
  // The disk writers of finished extractions and copies, with the name of their input. Closing
  // one gives its directories their modes and times, which finish() does after it has made
  // the symlinks: a link cannot be made in a directory already made read-only, and making it
  // would change the directory's time.
  std::vector<std::pair<WritePtr, std::string>> to_close;
};

namespace {

// Whether a copied file may have holes: its blocks cover less than its size.
enum class Holes { none, maybe };

// Writes entries under the root, applying the policy; symlinks are handed to the state.
class DiskWriter {
 public:
  static Result<DiskWriter> create(Extraction::State& state) {
    WritePtr out;
    {
      auto lock = umask_lock();
      out.reset(archive_write_disk_new());
    }
    if (!out) return fail(ExitCode::software, "libarchive: cannot create a disk writer");
    // No ARCHIVE_EXTRACT_SECURE_SYMLINKS: the tree has no symlinks until finish() (and that
    // check costs an open() per path component of every entry).
    int options = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT;
    if (state.policy.preserve_metadata) {
      options |= ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_FFLAGS;
    }
    archive_write_disk_set_options(out.get(), options);
    return DiskWriter(state, std::move(out));
  }

  enum class Next { skip, write, symlink };

  // Checks an entry read from an archive and renames it into the root. Returns whether the
  // entry has to be written, or is a symlink (then `link` says what to create in finish()).
  Result<Next> prepare(struct archive_entry* entry, std::string_view raw_path, std::string_view source,
                       DeferredLink* link) {
    const auto type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    auto where = [&](std::string_view p) { return std::string(source) + ": " + std::string(p); };

    auto orig = KK_TRY_CTX(checked_entry_path(raw_path), source);
    if (orig.empty()) return Next::skip;  // the archive's "./" itself
    if (hardlink == nullptr && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
      ++stats_.skipped;
      if (state_.policy.special_files == SpecialFiles::warn) {
        log::get("archive")->warn("{}: skipping '{}': device nodes, FIFOs and sockets are not extracted", source, orig);
      }
      return Next::skip;
    }
    const std::string final_path = relocate(orig);
    const auto& policy = state_.policy;
    if (policy.include && !policy.include(final_path)) {
      ++stats_.skipped;
      return Next::skip;
    }
    archive_entry_copy_pathname(entry, (state_.root / final_path).c_str());

    if (hardlink != nullptr) {
      auto link_orig = KK_TRY_CTX(checked_entry_path(hardlink), where(orig));
      const std::string link_final = relocate(link_orig);
      if (policy.include && !policy.include(link_final)) {
        ++stats_.skipped;
        return Next::skip;
      }
      archive_entry_copy_hardlink(entry, (state_.root / link_final).c_str());
    } else if (type == AE_IFLNK) {
      const char* text = archive_entry_symlink(entry);
      *link = DeferredLink{final_path, text != nullptr ? text : "", {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)}};
      if (!policy.preserve_metadata) {  // untrusted: resolved inside the tree and made relative
        auto resolved = KK_TRY_CTX(resolve_link(orig, link->target), source);
        link->target = relative_link(final_path, relocate(resolved));
      }
      ++stats_.symlinks;
      return Next::symlink;
    }
    if (type == AE_IFREG && !policy.preserve_metadata) {
      archive_entry_set_perm(entry, archive_entry_perm(entry) & ~static_cast<mode_t>(S_ISUID | S_ISGID));
    }
    return Next::write;
  }

  // Writes a prepared entry. Its content comes from `data` when given, else from the archive
  // `in`, else from the file descriptor `fd`.
  Result<void> emit(struct archive* in, struct archive_entry* entry, const std::string* data,
                    const std::string& where, int fd = -1, Holes holes = Holes::none) {
    const auto type = archive_entry_filetype(entry);
    auto lock = umask_lock();
    if (archive_write_header(out_.get(), entry) < ARCHIVE_WARN) {
      return fail(libarchive_write_error(out_.get(), where));
    }
    if (lock) lock.unlock();
    const bool digest_it = state_.policy.on_file_digest && type == AE_IFREG && archive_entry_hardlink(entry) == nullptr;
    std::optional<digest::Sha256> hash;
    if (digest_it) hash.emplace();
    if (data != nullptr) {
      if (hash) hash->update(*data);
      // libarchive's disk writer reports a failed write(2) (ENOSPC, EIO) as a short count or
      // ARCHIVE_WARN, not as an error: anything but the whole block is a failure here.
      if (!data->empty() &&
          archive_write_data(out_.get(), data->data(), data->size()) != static_cast<la_ssize_t>(data->size())) {
        return fail(libarchive_write_error(out_.get(), where));
      }
      stats_.bytes += data->size();
    } else if (type == AE_IFREG && fd >= 0) {
      KK_TRY(copy_from_fd(fd, entry, holes, hash ? &*hash : nullptr, where));
    } else if (type == AE_IFREG && archive_entry_size(entry) > 0) {
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      for (;;) {
        int r = archive_read_data_block(in, &buf, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, where + ": " + archive_message(in));
        if (archive_write_data_block(out_.get(), buf, size, offset) != ARCHIVE_OK) {
          return fail(libarchive_write_error(out_.get(), where));
        }
        if (hash) hash->update(buf, size);
        stats_.bytes += size;
      }
    }
    if (archive_write_finish_entry(out_.get()) < ARCHIVE_WARN) {
      return fail(libarchive_write_error(out_.get(), where));
    }
    if (hash) {
      std::string_view full = archive_entry_pathname(entry);
      const std::string root = state_.root.string() + "/";
      if (full.starts_with(root)) full.remove_prefix(root.size());
      state_.policy.on_file_digest(full, hash->hex());
    }
    if (type == AE_IFDIR) {
      ++stats_.dirs;
    } else {
      ++stats_.files;
    }
    return {};
  }


  // Writes the content of the file `fd` (from its start, the entry's size) into the file the
  // header just created, and feeds it to `hash`. A file that may have holes is copied segment by
  // segment (SEEK_DATA/SEEK_HOLE, as cp does): holes stay holes, and are hashed as the zeros they
  // read as.
  Result<void> copy_from_fd(int fd, struct archive_entry* entry, Holes holes, digest::Sha256* hash,
                            const std::string& where) {
    const int64_t size = archive_entry_size(entry);
    int64_t at = 0;
    while (at < size) {
      int64_t data = at, end = size;
      if (holes == Holes::maybe) {
        data = ::lseek(fd, at, SEEK_DATA);
        if (data < 0 && errno != ENXIO) return fail(files::errno_error(where, errno, ExitCode::no_input));
        if (data < 0 || data > size) data = size;  // ENXIO: nothing but a hole up to the end
        end = data < size ? ::lseek(fd, data, SEEK_HOLE) : size;
        if (end < 0) return fail(files::errno_error(where, errno, ExitCode::no_input));
        end = std::min(end, size);
        if (hash) hash_zeros(*hash, static_cast<uint64_t>(data - at));
      }
      if (data < end) {
        const int64_t got = KK_TRY(copy_segment(fd, data, end, hash, where));
        if (got < end - data) break;  // the file shrank since it was listed; the size is restored
      }
      at = end;
    }
    // A hole at the end is made by libarchive, which gives the file its size when the last
    // write ended short of it.
    return {};
  }

  // Copies bytes [from, to) of `fd` to the same place in the file being written. Returns how
  // many there were (fewer at the file's end).
  Result<int64_t> copy_segment(int fd, int64_t from, int64_t to, digest::Sha256* hash, const std::string& where) {
    auto& buf = read_buffer_;
    buf.resize(256 << 10);
    int64_t at = from;
    while (at < to) {
      const ssize_t n = ::pread(fd, buf.data(), static_cast<size_t>(std::min<int64_t>(to - at, static_cast<int64_t>(buf.size()))), at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(files::errno_error(where, errno, ExitCode::no_input));
      if (n == 0) break;
      if (archive_write_data_block(out_.get(), buf.data(), static_cast<size_t>(n), at) != ARCHIVE_OK) {
        return fail(libarchive_write_error(out_.get(), where));
      }
      if (hash) hash->update(buf.data(), static_cast<size_t>(n));
      stats_.bytes += static_cast<size_t>(n);
      at += n;
    }
    return at - from;
  }

  static void hash_zeros(digest::Sha256& hash, uint64_t n) {
    static const std::vector<char> zeros(64 << 10, '\0');
    for (; n > 0; n -= std::min<uint64_t>(n, zeros.size())) hash.update(zeros.data(), std::min<uint64_t>(n, zeros.size()));
  }

  // Applies deferred directory modes and times.
  Result<void> close(std::string_view source) {
    if (archive_write_close(out_.get()) != ARCHIVE_OK) {
      return fail(libarchive_write_error(out_.get(), source));
    }
    return {};
  }

  // Leaves the deferred directory modes and times to Extraction::finish().
  void close_later(std::string source) {
    std::lock_guard lock(state_.mutex);
    state_.to_close.emplace_back(std::move(out_), std::move(source));
  }

  const Stats& stats() const { return stats_; }

  DiskWriter(DiskWriter&&) noexcept = default;

 private:
  DiskWriter(Extraction::State& state, WritePtr out) : state_(state), out_(std::move(out)) {}
  std::string relocate(const std::string& p) const {
    return state_.policy.relocate ? state_.policy.relocate(p) : p;
  }

  Extraction::State& state_;
  WritePtr out_;
  Stats stats_;
  std::vector<char> read_buffer_;  // for content read from a file descriptor
};

// Small files handed from the thread that reads an archive to threads that create them: file
// creation is mostly kernel time, and two threads creating files overlap it. Creating a file
// holds its directory's lock, so each writer has a lane of its own, and consecutive directories
// go to alternate lanes: the writers work in different directories. A writer whose lane is empty
// takes from another's.
class WriterPool {
 public:
  struct Item {
    EntryPtr entry;
    std::string data;
    std::string where;
    files::Fd fd;  // a copied file's content, read by the writer (then `data` is unused)
    Holes holes = Holes::none;
  };

  static Result<std::unique_ptr<WriterPool>> create(Extraction::State& state, int threads) {
    auto pool = std::unique_ptr<WriterPool>(new WriterPool());
    for (int i = 0; i < threads; ++i) pool->writers_.push_back(KK_TRY(DiskWriter::create(state)));
    pool->lanes_.resize(pool->writers_.size());
    for (size_t i = 0; i < pool->writers_.size(); ++i) {
      pool->threads_.emplace_back([p = pool.get(), i] { p->work(i); });
    }
    return pool;
  }

  ~WriterPool() { stop(); }

  // Queues a file; waits while the queue holds more than its budget, until it is down to half.
  // Returns the first error a writer met, after which nothing more is written. An idle writer is
  // woken once a batch has gathered, not for every file: a wake-up costs about what creating a
  // small file does.
  Result<void> push(Item item) {
    std::unique_lock lock(mutex_);
    if (bytes_ >= kBudget) {
      pusher_waiting_ = true;
      room_.wait(lock, [&] { return bytes_ <= kBudget / 2 || error_; });
      pusher_waiting_ = false;
    }
    if (error_) return fail(*error_);
    std::string_view path = archive_entry_pathname(item.entry.get());
    path = path.substr(0, path.rfind('/') + 1);
    if (path != dir_) {
      dir_ = path;
      lane_ = (lane_ + 1) % lanes_.size();
    }
    bytes_ += cost(item);
    lanes_[lane_].push_back(std::move(item));
    if (idle_ > 0 && (++queued_ >= kWakeFiles || bytes_ >= kWakeBytes)) ready_.notify_all();
    reaped_.swap(written_);  // the writers go on with reaped_'s emptied vector, no allocation
    lock.unlock();
    // Freed here, on the thread that allocated them: memory freed on another thread takes the
    // allocator's lock of the allocating thread's arena, which this thread keeps taking as it
    // allocates. Content buffers are kept for the next files.
    for (auto& w : reaped_) {
      if (w.data.capacity() > 0 && w.data.capacity() <= kSpareBuffer && spare_bytes_ + w.data.capacity() <= kSpareBudget) {
        spare_bytes_ += w.data.capacity();
        spare_.push_back(std::move(w.data));
      }
    }
    reaped_.clear();
    return {};
  }

  // A buffer for the next file's content, one a writer is done with when there is one. Only
  // for the thread that pushes.
  std::string buffer() {
    if (spare_.empty()) return {};
    std::string b = std::move(spare_.back());
    spare_.pop_back();
    spare_bytes_ -= b.capacity();
    return b;
  }

  // Waits until every file queued so far is written (the writers go on waiting for more).
  // Returns the first error a writer met.
  Result<void> drain() {
    std::unique_lock lock(mutex_);
    ready_.notify_all();  // a batch not yet big enough to wake a writer
    draining_ = true;
    drained_.wait(lock, [&] { return (busy_ == 0 && all_empty()) || error_; });
    draining_ = false;
    if (error_) return fail(*error_);
    return {};
  }

  // Waits for the queue to empty and the writers to finish; their statistics are added to `stats`.
  Result<void> finish(Stats& stats) {
    stop();
    for (const auto& w : writers_) stats += w.stats();
    if (error_) return fail(*error_);
    return {};
  }

 private:
  static constexpr size_t kBudget = 4 << 20;
  // What a queued file counts against the budget: its content, held in memory or (a copied
  // file) read ahead by the kernel, and something for the entry and, for a copied file, the
  // open descriptor (at most a few hundred are open).
  static size_t cost(const Item& item) {
    return item.fd ? static_cast<size_t>(archive_entry_size(item.entry.get())) + 16384 : item.data.size() + 512;
  }
  static constexpr size_t kWakeFiles = 8;
  static constexpr size_t kWakeBytes = 256 << 10;
  static constexpr size_t kSpareBuffer = 256 << 10;  // larger buffers are freed
  static constexpr size_t kSpareBudget = 1 << 20;
  WriterPool() = default;

  void stop() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  bool all_empty() const {
    return std::all_of(lanes_.begin(), lanes_.end(), [](const auto& l) { return l.empty(); });
  }

  // The lane to take from: the writer's own, else the fullest; null when all are empty.
  std::deque<Item>* lane_for(size_t own) {
    if (!lanes_[own].empty()) return &lanes_[own];
    auto fullest = std::max_element(lanes_.begin(), lanes_.end(), [](auto& a, auto& b) { return a.size() < b.size(); });
    return fullest->empty() ? nullptr : &*fullest;
  }

  void work(size_t index) {
    DiskWriter& writer = writers_[index];
    Item item;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        if (item.entry) {
          written_.push_back(std::move(item));  // for the pusher to free
          if (--busy_ == 0 && draining_ && all_empty()) drained_.notify_one();
        }
        std::deque<Item>* lane = nullptr;
        while ((lane = lane_for(index)) == nullptr && !closed_) {
          ++idle_;
          queued_ = 0;
          ready_.wait(lock);
          --idle_;
        }
        if (lane == nullptr) break;
        item = std::move(lane->front());
        lane->pop_front();
        ++busy_;
        bytes_ -= cost(item);
        if (pusher_waiting_ && bytes_ <= kBudget / 2) room_.notify_one();
        if (error_) continue;
      }
      auto r = item.fd ? writer.emit(nullptr, item.entry.get(), nullptr, item.where, item.fd.get(), item.holes)
                       : writer.emit(nullptr, item.entry.get(), &item.data, item.where);
      item.fd = files::Fd();
      if (!r) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = r.error();
        room_.notify_all();
        drained_.notify_all();
      }
    }
    // Deferred directory fixups of this writer (none: directories are the reader's).
    auto closed = writer.close("writer");
    if (!closed) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = closed.error();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_, room_, drained_;
  std::vector<std::deque<Item>> lanes_;
  std::vector<Item> written_;       // files written, for the pusher to free
  std::vector<Item> reaped_;        // the pusher's: what it took from written_ to free
  std::vector<std::string> spare_;  // their content buffers, kept by the pusher for the next files
  size_t spare_bytes_ = 0;
  std::string dir_;   // the directory of the last file queued, and its lane
  size_t lane_ = 0;
  size_t queued_ = 0;  // files queued since a writer last went idle
  size_t bytes_ = 0;
  int idle_ = 0;              // writers waiting for work
  int busy_ = 0;              // writers writing a file
  bool pusher_waiting_ = false;  // in push(), for room
  bool draining_ = false;        // in drain()
  bool closed_ = false;
  std::optional<Error> error_;
  std::vector<DiskWriter> writers_;
  std::vector<std::thread> threads_;
};

// Writes the entries one reader produces: small regular files through a pool of writer threads,
// directories and large files on the reader's own writer; symlinks and hard links are handed to
// Extraction::finish().
class Fanout {
 public:
  // Whether the entries may name a path more than once: an archive may, a walked tree cannot.
  enum class Paths { may_repeat, unique };
  static Result<Fanout> create(Extraction::State& state, DiskWriter& writer, Paths paths) {
    return Fanout(state, writer, KK_TRY(WriterPool::create(state, 2)), paths == Paths::may_repeat);
  }

  // Writes an entry prepared by the writer, its content read from the archive `in`.
  Result<void> write(struct archive* in, struct archive_entry* entry, std::string where) {
    constexpr la_int64_t kSmall = 1 << 20;
    KK_TRY(claim(entry));
    if (defer_link(entry, where)) return {};
    if (archive_entry_filetype(entry) != AE_IFREG || archive_entry_size(entry) > kSmall) {
      return writer_.emit(in, entry, nullptr, where);
    }
    std::string data = pool_->buffer();
    data.resize(static_cast<size_t>(archive_entry_size(entry)));
    size_t got = 0;
    while (got < data.size()) {
      la_ssize_t n = archive_read_data(in, data.data() + got, data.size() - got);
      if (n < 0) return fail(ExitCode::data_err, where + ": " + archive_message(in));
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    data.resize(got);
    return pool_->push({EntryPtr(archive_entry_clone(entry)), std::move(data), std::move(where), {}, Holes::none});
  }

  // Writes an entry prepared by the writer; a regular file's content is read from `fd` by the
  // writer that creates it. The kernel is asked to read it in now, so that files queued behind
  // one another are read from disk at once, not one after the other (an image's files are
  // seldom in the page cache when a pod first starts).
  Result<void> write(struct archive_entry* entry, std::string where, files::Fd fd, Holes holes) {
    KK_TRY(claim(entry));
    if (defer_link(entry, where)) return {};
    if (!fd) return writer_.emit(nullptr, entry, nullptr, where);
    if (archive_entry_size(entry) > 0) ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_WILLNEED);
    return pool_->push({EntryPtr(archive_entry_clone(entry)), {}, std::move(where), std::move(fd), holes});
  }

  // A symlink prepared by the writer: made by Extraction::finish(), after every file.
  Result<void> symlink(struct archive_entry* entry, DeferredLink link) {
    KK_TRY(claim(entry));
    std::lock_guard lock(state_.mutex);
    state_.links.push_back(std::move(link));
    return {};
  }

  // A hard link is made by Extraction::finish(), when the file or symlink it names exists.
  bool defer_link(struct archive_entry* entry, std::string& where) {
    if (archive_entry_hardlink(entry) == nullptr) return false;
    EntryPtr link(archive_entry_clone(entry));
    archive_entry_set_size(link.get(), 0);
    hardlinks_.push_back({std::move(link), {}, std::move(where), {}, Holes::none});
    return true;
  }

  // Waits for the pool (its statistics are added to `stats`), then hands the hard links to
  // Extraction::finish().
  Result<void> finish(Stats& stats) {
    KK_TRY(pool_->finish(stats));
    stats.files += hardlinks_.size();  // counted as files, as written ones are
    std::lock_guard lock(state_.mutex);
    for (auto& h : hardlinks_) state_.hardlinks.emplace_back(std::move(h.entry), std::move(h.where));
    hardlinks_.clear();
    return {};
  }

 private:
  Fanout(Extraction::State& state, DiskWriter& writer, std::unique_ptr<WriterPool> pool, bool repeats)
      : state_(state), writer_(writer), pool_(std::move(pool)), repeats_(repeats) {}

  // tar's rule: a path the archive holds twice ends as its later entry makes it (an archive
  // appended to with tar -r). Entries are written out of order here (files by two writers, hard
  // links and symlinks at the end), so before a path is written again, every file queued is
  // written, and a link still deferred for the path is dropped. Paths are remembered by hash:
  // a collision costs only a needless wait.
  Result<void> claim(struct archive_entry* entry) {
    if (!repeats_) return {};
    const std::string_view path = archive_entry_pathname(entry);
    if (seen_.insert(std::hash<std::string_view>{}(path)).second) return {};
    KK_TRY(pool_->drain());
    std::erase_if(hardlinks_, [&](const WriterPool::Item& h) { return path == archive_entry_pathname(h.entry.get()); });
    const std::string root = state_.root.string() + "/";
    if (!path.starts_with(root)) return {};
    const std::string_view rel = path.substr(root.size());
    std::lock_guard lock(state_.mutex);
    std::erase_if(state_.links, [&](const DeferredLink& l) { return l.path == rel; });
    return {};
  }

  Extraction::State& state_;
  DiskWriter& writer_;
  std::unique_ptr<WriterPool> pool_;
  std::vector<WriterPool::Item> hardlinks_;
  bool repeats_;
  std::unordered_set<size_t> seen_;  // hashes of the paths written or deferred so far
};

// Reads from an fd and hashes every byte it hands to libarchive.
struct FdSource {
  int fd;
  digest::Sha256* hash;
  std::vector<char> buf = std::vector<char>(1 << 20);
};

la_ssize_t fd_read(struct archive* a, void* user, const void** out) {
  auto* src = static_cast<FdSource*>(user);
  for (;;) {
    ssize_t n = ::read(src->fd, src->buf.data(), src->buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      archive_set_error(a, errno, "read error: %s", std::strerror(errno));
      return -1;
    }
    if (src->hash != nullptr) src->hash->update(src->buf.data(), static_cast<size_t>(n));
    *out = src->buf.data();
    return n;
  }
}

// Reads an ar member (a .deb's data.tar.*) as the input of an inner archive.
struct MemberSource {
  struct archive* outer;
  std::vector<char> buf = std::vector<char>(256 << 10);
};

la_ssize_t member_read(struct archive* a, void* user, const void** out) {
  auto* src = static_cast<MemberSource*>(user);
  la_ssize_t n = archive_read_data(src->outer, src->buf.data(), src->buf.size());
  if (n < 0) {
    archive_set_error(a, archive_errno(src->outer), "%s", archive_message(src->outer).c_str());
    return -1;
  }
  *out = src->buf.data();
  return n;
}


using Support = int (*)(struct archive*);

// A reader with the given filters and formats, opened on a read callback.
Result<ReadPtr> open_reader(std::initializer_list<Support> supports, void* source, archive_read_callback* read,
                            std::string_view name) {
  ReadPtr in(archive_read_new());
  for (auto support : supports) support(in.get());
  if (archive_read_open(in.get(), source, nullptr, read, nullptr) != ARCHIVE_OK) {
    return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
  }
  return in;
}

// Writes all of `in`'s current entry data (a raw stream) to `out`, straight from the
// decompressor's buffer (archive_read_data_block: no copy into a buffer of ours first).
Result<void> pump(struct archive* in, int out, std::string_view name, bool* reader_gone) {
  la_int64_t expected = 0;
  for (;;) {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    const int r = archive_read_data_block(in, &block, &size, &offset);
    if (r == ARCHIVE_EOF) return {};
    if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in));
    if (offset != expected) return fail(ExitCode::data_err, std::string(name) + ": a hole in a compressed stream");
    expected += static_cast<la_int64_t>(size);
    if (int err = files::write_all(out, static_cast<const char*>(block), size); err != 0) {
      *reader_gone = err == EPIPE;
      return fail(files::errno_error(std::string(name) + ": pipe", err, ExitCode::software));
    }
  }
}

// Stage one of an extraction: reads the input (hashing it), unwraps a .deb's ar container and
// decompresses, writing the plain tar or cpio stream to `out`.
Result<void> decode(int fd, std::string_view name, digest::Sha256* hash, int out, bool* reader_gone) {
  FdSource src{fd, hash};
  auto in = KK_TRY(open_reader({archive_read_support_filter_all, archive_read_support_format_ar,
                                archive_read_support_format_raw, archive_read_support_format_empty},
                               &src, fd_read, name));
  struct archive_entry* member = nullptr;
  int r = archive_read_next_header(in.get(), &member);
  if (r == ARCHIVE_EOF) return {};
  if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
  if ((archive_format(in.get()) & ARCHIVE_FORMAT_BASE_MASK) != ARCHIVE_FORMAT_AR) {
    return pump(in.get(), out, name, reader_gone);
  }
  // A .deb: debian-binary, control.tar.*, data.tar.*.
  for (;;) {
    std::string_view member_name = archive_entry_pathname(member) ? archive_entry_pathname(member) : "";
    if (member_name.starts_with("data.tar")) {
      const std::string inner_name = std::string(name) + "/" + std::string(member_name);
      MemberSource msrc{in.get()};
      auto inner = KK_TRY(open_reader({archive_read_support_filter_all, archive_read_support_format_raw,
                                       archive_read_support_format_empty},
                                      &msrc, member_read, inner_name));
      struct archive_entry* entry = nullptr;
      r = archive_read_next_header(inner.get(), &entry);
      if (r == ARCHIVE_EOF) return {};
      if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, inner_name + ": " + archive_message(inner.get()));
      return pump(inner.get(), out, inner_name, reader_gone);
    }
    r = archive_read_next_header(in.get(), &member);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
  }
  return fail(ExitCode::data_err, std::string(name) + ": not a Debian package: no data.tar member");
}

// Stage two: reads a plain tar or cpio stream and writes its entries through a Fanout.
Result<void> unpack(int fd, std::string_view name, Extraction::State& state, DiskWriter& writer,
                    Stats& stats) {
  FdSource src{fd, nullptr};
  auto in = KK_TRY(open_reader({archive_read_support_filter_none, archive_read_support_format_tar,
                                archive_read_support_format_gnutar, archive_read_support_format_cpio,
                                archive_read_support_format_empty},
                               &src, fd_read, name));
  auto fanout = KK_TRY(Fanout::create(state, writer, Fanout::Paths::may_repeat));
  for (;;) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
    const std::string raw = archive_entry_pathname(entry) != nullptr ? archive_entry_pathname(entry) : "";
    DeferredLink link;
    const auto next = KK_TRY(writer.prepare(entry, raw, name, &link));
    if (next == DiskWriter::Next::skip) continue;
    if (next == DiskWriter::Next::symlink) {
      KK_TRY(fanout.symlink(entry, std::move(link)));
      continue;
    }
    KK_TRY(fanout.write(in.get(), entry, std::string(name) + ": " + raw));
  }
  return fanout.finish(stats);
}

}  // namespace

Stats& Stats::operator+=(const Stats& o) {
  files += o.files;
  dirs += o.dirs;
  symlinks += o.symlinks;
  skipped += o.skipped;
  bytes += o.bytes;
  return *this;
}

std::optional<std::string> normalize_relative(std::string_view path) {
  if (!path.empty() && path.front() == '/') return std::nullopt;
  std::vector<std::string_view> stack;
  for (auto part : split_path(path)) {
    if (part == ".") continue;
    if (part == "..") {
      if (stack.empty()) return std::nullopt;
      stack.pop_back();
      continue;
    }
    stack.push_back(part);
  }
  return join(stack);
}

std::string relative_link(std::string_view link_path, std::string_view target) {
  const std::string parent = parent_of(link_path);
  auto from = split_path(parent);
  auto to = split_path(target);
  size_t common = 0;
  while (common < from.size() && common < to.size() && from[common] == to[common]) ++common;
  std::string out;
  for (size_t i = common; i < from.size(); ++i) out += out.empty() ? ".." : "/..";
  for (size_t i = common; i < to.size(); ++i) {
    if (!out.empty()) out += '/';
    out += to[i];
  }
  return out.empty() ? "." : out;
}

Result<std::unique_ptr<Extraction>> Extraction::create(Policy policy) {
  auto state = std::make_unique<State>();
  std::error_code ec;
  state->root = fs::canonical(policy.root, ec);
  if (ec) return fail(files::errno_error("destination " + policy.root.string(), ec.value()));
  state->policy = std::move(policy);
  return std::unique_ptr<Extraction>(new Extraction(std::move(state)));
}

Extraction::Extraction(std::unique_ptr<State> state) : state_(std::move(state)) {}
Extraction::~Extraction() = default;

Result<void> Extraction::finish() {
  std::lock_guard lock(state_->mutex);
  auto& links = state_->links;
  std::sort(links.begin(), links.end(), [](auto& a, auto& b) { return a.path < b.path; });
  std::set<std::string_view> paths;
  for (const auto& l : links) paths.insert(l.path);
  for (const auto& l : links) {
    // A link below another link would be created through it.
    for (size_t slash = l.path.find('/'); slash != std::string::npos; slash = l.path.find('/', slash + 1)) {
      if (paths.contains(std::string_view(l.path).substr(0, slash))) {
        return fail(ExitCode::data_err, "symlink '" + l.path + "' lies below the symlink '" +
                                            l.path.substr(0, slash) + "'");
      }
    }
    const fs::path full = state_->root / l.path;
    // The archive may name a link without its parent directories. No ancestor is a symlink
    // (checked above, and the tree has no others), so this cannot leave the root.
    KK_TRY(files::make_dirs(full.parent_path()));
    struct stat st{};
    if (::lstat(full.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        return fail(ExitCode::data_err, "'" + l.path + "' is both a symlink and a directory with entries below it");
      }
      if (::unlink(full.c_str()) != 0) return fail(files::errno_error("replace " + full.string(), errno));
    }
    if (::symlink(l.target.c_str(), full.c_str()) != 0) {
      return fail(files::errno_error("symlink " + full.string(), errno));
    }
    struct timespec times[2] = {l.mtime, l.mtime};
    ::utimensat(AT_FDCWD, full.c_str(), times, AT_SYMLINK_NOFOLLOW);
  }
  links.clear();
  // Then the hard links, which may name symlinks.
  if (!state_->hardlinks.empty()) {
    auto writer = KK_TRY(DiskWriter::create(*state_));
    for (auto& [entry, where] : state_->hardlinks) KK_TRY(writer.emit(nullptr, entry.get(), nullptr, where));
    state_->hardlinks.clear();
    KK_TRY(writer.close("hard links"));
  }
  // Then the directories' modes and times (libarchive applies them deepest first).
  for (auto& [out, source] : state_->to_close) {
    if (archive_write_close(out.get()) != ARCHIVE_OK) return fail(libarchive_write_error(out.get(), source));
  }
  state_->to_close.clear();
  return {};
}

Result<Stats> extract_fd(int fd, std::string_view name, const Policy& policy, digest::Sha256* hash) {
  auto extraction = KK_TRY(Extraction::create(policy));
  auto stats = KK_TRY(extraction->extract_fd(fd, name, hash));
  KK_TRY(extraction->finish());
  return stats;
}

Result<Stats> copy_tree(const fs::path& source, const std::string& dest, const Policy& policy) {
  auto extraction = KK_TRY(Extraction::create(policy));
  auto stats = KK_TRY(extraction->copy_tree(source, dest));
  KK_TRY(extraction->finish());
  return stats;
}

Result<Stats> Extraction::extract_fd(int fd, std::string_view name, digest::Sha256* hash) {
  auto writer = KK_TRY(DiskWriter::create(*state_));
  // Two stages on two threads joined by a pipe, as dpkg-deb runs tar and the decompressor:
  // decompression overlaps with file creation.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(files::errno_error("pipe", errno, ExitCode::software));
  files::Fd read_end(fds[0]);
  files::Fd write_end(fds[1]);
  ::fcntl(write_end.get(), F_SETPIPE_SZ, 1 << 20);
  bool reader_gone = false;
  Result<void> decoded;
  std::thread decoder([&] {
    decoded = decode(fd, name, hash, write_end.get(), &reader_gone);
    write_end = files::Fd();
  });
  Stats pooled;
  auto unpacked = unpack(read_end.get(), name, *state_, writer, pooled);
  if (unpacked) {
    // What follows the archive's end marker (tar padding) must still flow.
    char buf[1 << 16];
    while (::read(read_end.get(), buf, sizeof buf) > 0) {
    }
  }
  read_end = files::Fd();  // a decoder still writing gets EPIPE
  decoder.join();
  if (!decoded && !reader_gone) return fail(decoded.error());
  KK_TRY(unpacked);
  writer.close_later(std::string(name));
  Stats stats = writer.stats();
  stats += pooled;
  // The digest covers the whole input, including what follows the last member.
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(files::errno_error("read " + std::string(name), errno, ExitCode::data_err));
    if (n == 0) break;
    if (hash != nullptr) hash->update(buf.data(), static_cast<size_t>(n));
  }
  return stats;
}

Result<Stats> Extraction::copy_tree(const fs::path& source, const std::string& dest) {
  return copy_trees({{source, dest}});
}

Result<Stats> Extraction::copy_trees(const std::vector<Copy>& copies) {
  auto writer = KK_TRY(DiskWriter::create(*state_));
  // The tree is walked through directory descriptors; libarchive's disk reader builds each
  // entry's metadata (mode, owner, times, xattrs, ACLs) from the descriptor the walk opened,
  // which then gives the content too: one open per file. No file flags (chattr) and no
  // sparse-file probing by the reader: an ioctl and two lseeks per file that configuration and
  // header trees never need; the writer looks for holes itself, only in a file whose blocks
  // cover less than its size. xattrs and ACLs are read (restored only when the policy preserves metadata).
  ReadPtr disk(archive_read_disk_new());
  archive_read_disk_set_symlink_physical(disk.get());
  archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_FFLAGS | ARCHIVE_READDISK_NO_SPARSE);
  struct archive_entry_linkresolver* resolver = archive_entry_linkresolver_new();
  archive_entry_linkresolver_set_strategy(resolver, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  struct ResolverFree {
    struct archive_entry_linkresolver* r;
    ~ResolverFree() { archive_entry_linkresolver_free(r); }
  } resolver_guard{resolver};
  // Where each file with more than one name went, by source path: the resolver names a later
  // name's first one by its source path, possibly in another of the copies.
  std::unordered_map<std::string, std::string> dest_of;

  Stats pooled;
  auto fanout = KK_TRY(Fanout::create(*state_, writer, Fanout::Paths::unique));
  const std::string* src = nullptr;   // the copy being walked
  const std::string* dest = nullptr;
  auto copy = [&](const files::WalkEntry& e) -> Result<void> {
    EntryPtr holder(archive_entry_new());
    struct archive_entry* entry = holder.get();
    archive_entry_copy_pathname(entry, e.path.c_str());
    archive_entry_copy_sourcepath(entry, e.path.c_str());
    files::Fd fd;
    if (S_ISREG(e.st.st_mode)) {
      fd = files::Fd(::openat(e.dir_fd, e.name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
      if (!fd) return fail(files::errno_error(e.path, errno, ExitCode::no_input));
    }
    if (archive_read_disk_entry_from_file(disk.get(), entry, fd.get(), &e.st) < ARCHIVE_WARN) {
      return fail(ExitCode::no_input, e.path + ": " + archive_message(disk.get()));
    }
    const std::string dest_path = e.rel.empty() ? *dest : *dest + "/" + e.rel;
    // The tar strategy marks the second and later names of a file as hard links to the first.
    struct archive_entry* spare = nullptr;
    archive_entry_linkify(resolver, &entry, &spare);
    if (spare != nullptr) archive_entry_free(spare);
    if (const char* hl = archive_entry_hardlink(entry)) {
      auto first = dest_of.find(hl);
      if (first == dest_of.end()) return fail(ExitCode::software, e.path + ": a hard link to " + hl + ", which was not copied");
      archive_entry_copy_hardlink(entry, first->second.c_str());
    } else if (e.st.st_nlink > 1 && !S_ISDIR(e.st.st_mode)) {
      dest_of.emplace(e.path, dest_path);
    }
    DeferredLink link;
    const auto next = KK_TRY(writer.prepare(entry, dest_path, *src, &link));
    if (next == DiskWriter::Next::skip) return {};
    if (next == DiskWriter::Next::symlink) return fanout.symlink(entry, std::move(link));
    // Blocks that cover less than the size: holes (or a file system that compresses).
    const Holes holes = static_cast<int64_t>(e.st.st_blocks) * 512 < static_cast<int64_t>(e.st.st_size) ? Holes::maybe : Holes::none;
    return fanout.write(entry, *src + ": " + dest_path, std::move(fd), holes);
  };
  for (const auto& c : copies) {
    const std::string source = c.source.string();
    src = &source;
    dest = &c.dest;
    // The source may be a directory, a file or a symlink (copied as a link).
    struct stat root{};
    if (::lstat(source.c_str(), &root) != 0) return fail(files::errno_error(source, errno, ExitCode::no_input));
    const std::string top;  // the source itself: below the root by nothing
    KK_TRY(copy(files::WalkEntry{AT_FDCWD, source.c_str(), source, top, root}));
    if (S_ISDIR(root.st_mode)) KK_TRY(files::walk_tree(c.source, copy));
  }
  KK_TRY(fanout.finish(pooled));
  writer.close_later(copies.size() == 1 ? copies.front().source.string() : "the copies");
  Stats stats = writer.stats();
  stats += pooled;
  return stats;
}

}  // namespace kmodkit::archive

namespace kmodkit::archive {

Result<void> list_fd(int fd, std::string_view name,
                     const std::function<Result<void>(std::string_view path, EntryType type)>& fn) {
  FdSource src{fd, nullptr};
  auto in = KK_TRY(open_reader({archive_read_support_filter_all, archive_read_support_format_tar,
                                archive_read_support_format_gnutar, archive_read_support_format_cpio,
                                archive_read_support_format_empty},
                               &src, fd_read, name));
  for (;;) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
    const char* path = archive_entry_pathname(entry);
    EntryType type = EntryType::other;
    if (archive_entry_hardlink(entry) != nullptr) {
      type = EntryType::hardlink;
    } else {
      switch (archive_entry_filetype(entry)) {
        case AE_IFREG: type = EntryType::file; break;
        case AE_IFDIR: type = EntryType::dir; break;
        case AE_IFLNK: type = EntryType::symlink; break;
        default: break;
      }
    }
    KK_TRY(fn(path != nullptr ? path : "", type));
    // Skipping a compressed entry decompresses it: a truncated or corrupt stream shows here.
    if (archive_read_data_skip(in.get()) < ARCHIVE_WARN) {
      return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
    }
  }
  return {};
}

Result<uint64_t> decompress_fd(int fd, std::string_view name, digest::Sha256* hash,
                               const std::function<Result<void>(std::string_view)>& sink) {
  FdSource src{fd, hash};
  auto in = KK_TRY(open_reader({archive_read_support_filter_all, archive_read_support_format_raw,
                                archive_read_support_format_empty},
                               &src, fd_read, name));
  uint64_t total = 0;
  struct archive_entry* entry = nullptr;
  int r = archive_read_next_header(in.get(), &entry);
  if (r == ARCHIVE_OK || r == ARCHIVE_WARN) {
    std::vector<char> buf(256 << 10);
    for (;;) {
      la_ssize_t n = archive_read_data(in.get(), buf.data(), buf.size());
      if (n < 0) return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
      if (n == 0) break;
      total += static_cast<uint64_t>(n);
      KK_TRY(sink(std::string_view(buf.data(), static_cast<size_t>(n))));
    }
  } else if (r != ARCHIVE_EOF) {
    return fail(ExitCode::data_err, std::string(name) + ": " + archive_message(in.get()));
  }
  for (;;) {
    ssize_t n = ::read(fd, src.buf.data(), src.buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(files::errno_error("read " + std::string(name), errno, ExitCode::data_err));
    if (n == 0) break;
    if (hash != nullptr) hash->update(src.buf.data(), static_cast<size_t>(n));
  }
  return total;
}

}  // namespace kmodkit::archive
