#pragma once
// What the tests share: temporary directories, a real HTTP server, running the binaries, and
// archives built with libarchive's writer.

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace kmodkit::test {

namespace fs = std::filesystem;

// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path path;
  fs::path operator/(const std::string& rel) const { return path / rel; }
};

// Directory of the fixtures ctest prepared (the apt repository of real Debian packages).
fs::path fixtures_dir();
// The kernel release the fixture repository holds headers for.
std::string fixture_kernel_release();
// Directory of tests/support.
fs::path support_dir();

// tests/support/http_server.py serving `root` on 127.0.0.1, stopped on destruction.
class HttpServer {
 public:
  explicit HttpServer(const fs::path& root, std::vector<std::string> extra_args = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  std::string url() const;
  int port() const { return port_; }
  void stop();

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// Debian's docker-registry serving a private copy (hard links) of the oci_registry fixture's
// storage over TLS on 127.0.0.1, with token authentication from tests/support/token_server.py:
// anonymous pull tokens, except kmodkit/private (user puller, password s3cret) and kmodkit/refused
// (always refused). Both servers are stopped by their PIDs on destruction.
enum class Transport { tls, plain };
class Registry {
 public:
  // plain: the registry speaks HTTP (its token service stays HTTPS).
  explicit Registry(Transport transport = Transport::tls);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  fs::path ca_file() const;
  // Where the registry keeps a blob's bytes (manifests are blobs too); a test may replace them
  // with write_file, which leaves the fixture's inode alone.
  fs::path blob_path(const std::string& digest) const;
  // The manifest digest the fixture pushed as `name` ("kmodkit/dtk:gzip").
  static std::string digest_of(const std::string& name);

 private:
  TempDir dir_;
  pid_t registry_ = -1;
  pid_t token_ = -1;
  int port_ = 0;
};

// A finished run of one of the project's binaries.
struct Run {
  int code = -1;
  std::string output;     // stdout and stderr
  std::string last_line;  // the last non-empty line
};

using Env = std::vector<std::pair<std::string, std::string>>;
// Runs one of the project's binaries with arguments and extra environment; logs are
// human-readable.
Run run_binary(const std::string& binary, const std::vector<std::string>& args, const Env& env = {});
Run run_init_modules(const std::vector<std::string>& args, const Env& env = {});
Run run_kmod_builder(const std::vector<std::string>& args, const Env& env = {});

// A TCP port of 127.0.0.1 that nothing listens on now; throws when none can be found.
int free_port();

enum class Session { same, own };
// Starts a program in the background with stdout and stderr going to `output` (a file, or
// /dev/null), in a session of its own when asked (so a kill of the session takes its children
// too, as a pod kill does). Returns the child's pid; the caller waits for it.
pid_t spawn(const std::vector<std::string>& argv, const fs::path& output = "/dev/null", Session session = Session::same);

// A copy (hard links), at `dest`, of the modules volume the kernel_volume fixture laid out with init-modules
// (Debian's current 6.1 headers from the fixture repository). Returns the kernel release.
std::string copy_kernel_volume(const fs::path& dest);

// A signing key and its self-signed certificate (PEM and DER), made with the openssl tool.
struct SigningKey {
  fs::path key, cert_pem, cert_der;
  std::string serial;  // colon-separated upper-case hex, as modinfo prints sig_key
};
SigningKey make_signing_key(const fs::path& dir, const std::string& common_name);

// A SoftHSM2 token of its own under `dir` holding `key` (a PEM private key) as the private key
// "modsign", user PIN 1234: `conf` is its SOFTHSM2_CONF (set it for the processes that use the
// token), `uri` the key's PKCS#11 URI. Throws when softhsm2-util or openssl fails.
struct SoftToken {
  fs::path conf;
  std::string uri;
};
SoftToken make_soft_token(const fs::path& dir, const fs::path& key);
// The long key id (16 hex digits, lower case) of an armoured OpenPGP public key, as gpg lists it;
// throws when gpg lists none.
std::string key_id_of(const fs::path& key);
// Makes a throwaway OpenPGP signing key (rsa2048, no passphrase) in the gpg home `home` (created)
// and writes its public key, armoured, to `public_key`; gpg's agent for that home is ended.
// Throws when gpg fails.
void make_gpg_key(const fs::path& home, const std::string& uid, const fs::path& public_key);

// Replaces a file (unlinks it first, so a hard-linked copy of a fixture stays unchanged).
void write_file(const fs::path& path, const std::string& content);
std::string read_file(const fs::path& path);
std::string sha256_of(const fs::path& path);
// `bytes` in base64 without line breaks (the base64 tool's -w0).
std::string base64(const std::string& bytes);
// Counts regular files and symlinks below a directory.
size_t count_entries(const fs::path& dir);

struct TarEntry {
  enum Type { file, dir, symlink, hardlink } type = file;
  std::string path;
  std::string data;  // file content, or link target
  int mode = 0644;
};
// Writes a gzip-compressed tar with exactly these entries (no sanitising: tests build
// malicious archives with it).
void write_tar_gz(const fs::path& path, const std::vector<TarEntry>& entries);

// What DKMS decides of a regex in dkms.conf: whether bash's [[ text =~ regex ]] holds. Throws
// when bash cannot run or cannot compile the regex.
bool bash_regex_matches(const std::string& text, const std::string& regex);

// Copies the fixture apt repository to `dir` and returns the repo line for a server on it.
void copy_tree(const fs::path& from, const fs::path& to);

}  // namespace kmodkit::test
