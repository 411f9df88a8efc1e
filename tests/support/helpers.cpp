#include "helpers.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "kmodkit/digest.hpp"
#include "kmodkit/subprocess.hpp"

namespace kmodkit::test {

TempDir::TempDir() {
  std::random_device rd;
  const char* base = std::getenv("TMPDIR");
  path = fs::path(base != nullptr ? base : "/tmp") /
         ("kmodkit-test." + std::to_string(::getpid()) + "." + std::to_string(rd()));
  fs::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

fs::path fixtures_dir() {
  const char* env = std::getenv("KMODKIT_TEST_FIXTURES");
  return env != nullptr ? fs::path(env) : fs::path(KMODKIT_TEST_FIXTURES_DEFAULT);
}

std::string fixture_kernel_release() {
  auto text = read_file(fixtures_dir() / "apt-repo/kernel-release");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

fs::path support_dir() { return fs::path(KMODKIT_TEST_SUPPORT_DIR); }

HttpServer::HttpServer(const fs::path& root, std::vector<std::string> extra_args) {
  TempDir tmp;
  const fs::path port_file = tmp.path / "port";
  std::vector<std::string> argv = {"python3", (support_dir() / "http_server.py").string(), root.string(),
                                   "--port-file", port_file.string()};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp("python3", args.data());
    ::_exit(127);
  }
  for (int i = 0; i < 2400 && !fs::exists(port_file); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  if (!fs::exists(port_file)) throw std::runtime_error("http_server.py did not start");
  port_ = std::stoi(read_file(port_file));
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

bool accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

void stop_pid(pid_t& pid) {
  if (pid > 0) {
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }
}

}  // namespace

Registry::Registry(Transport transport) {
  const fs::path fixture = fixtures_dir() / "oci-registry";
  const fs::path tls = fixture / "tls";
  if (!fs::exists(fixture / "digests")) throw std::runtime_error("no oci registry fixture at " + fixture.string());
  auto copied = subprocess::run({"cp", "-al", (fixture / "storage").string(), (dir_ / "storage").string()});
  if (!copied || !copied->ok()) throw std::runtime_error("cannot copy the registry storage");
  // Debian's python3 by path: the token server needs python3-jwt and python3-cryptography, which
  // another python3 first on PATH may lack.
  const fs::path port_file = dir_ / "token-port";
  token_ = spawn({"/usr/bin/python3", (support_dir() / "token_server.py").string(), "--tls-cert",
                  (tls / "server.pem").string(), "--tls-key", (tls / "server.key").string(), "--signing-cert",
                  (tls / "token.pem").string(), "--signing-key", (tls / "token.key").string(), "--service",
                  "kmodkit-test-registry", "--issuer", "kmodkit-test-issuer", "--port-file", port_file.string(),
                  "--private", "kmodkit/private=puller:s3cret", "--refused", "kmodkit/refused"},
                 dir_ / "token.log");
  for (int i = 0; i < 2400 && !fs::exists(port_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  if (!fs::exists(port_file)) throw std::runtime_error("token_server.py did not start: " + read_file(dir_ / "token.log"));
  const std::string token_port = read_file(port_file);
  port_ = free_port();
  write_file(dir_ / "registry.yml",
             "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: " +
                 (dir_ / "storage").string() + "\nhttp:\n  addr: " + host() + "\n  secret: kmodkit-test\n" +
                 (transport == Transport::tls ? "  tls:\n    certificate: " + (tls / "server.pem").string() +
                                                    "\n    key: " + (tls / "server.key").string() + "\n"
                                              : std::string()) +
                 "auth:\n  token:\n    realm: https://127.0.0.1:" + token_port + "/token\n"
                 "    service: kmodkit-test-registry\n    issuer: kmodkit-test-issuer\n    rootcertbundle: " +
                 (tls / "token.pem").string() + "\n");
  registry_ = spawn({"/usr/bin/docker-registry", "serve", (dir_ / "registry.yml").string()}, dir_ / "registry.log");
  for (int i = 0; i < 2400 && !accepts(port_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  if (!accepts(port_)) throw std::runtime_error("docker-registry did not start: " + read_file(dir_ / "registry.log"));
}

Registry::~Registry() {
  stop_pid(registry_);
  stop_pid(token_);
}

fs::path Registry::ca_file() const { return fixtures_dir() / "oci-registry/tls/ca.pem"; }

fs::path Registry::blob_path(const std::string& digest) const {
  const std::string hex = digest.substr(digest.find(':') + 1);
  return dir_ / "storage/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
}

std::string Registry::digest_of(const std::string& name) {
  std::istringstream lines(read_file(fixtures_dir() / "oci-registry/digests"));
  for (std::string n, d; lines >> n >> d;) {
    if (n == name) return d;
  }
  throw std::runtime_error("the oci registry fixture has no image " + name);
}

std::string HttpServer::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

Run run_binary(const std::string& binary, const std::vector<std::string>& args, const Env& env) {
  std::vector<std::string> argv = {binary};
  argv.insert(argv.end(), args.begin(), args.end());
  subprocess::Options opts;
  opts.env = env;
  opts.env.emplace_back("KMODKIT_LOG_FORMAT", "human");
  opts.timeout = std::chrono::minutes(5);
  auto outcome = subprocess::run(argv, opts);
  if (!outcome) throw std::runtime_error(outcome.error().message);
  Run run;
  run.code = outcome->signal != 0 ? 128 + outcome->signal : outcome->exit_code;
  run.output = outcome->output;
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) run.last_line = line;
  }
  return run;
}

Run run_init_modules(const std::vector<std::string>& args, const Env& env) {
  return run_binary(KMODKIT_INIT_MODULES_BIN, args, env);
}

Run run_kmod_builder(const std::vector<std::string>& args, const Env& env) {
  return run_binary(KMODKIT_KMOD_BUILDER_BIN, args, env);
}

pid_t spawn(const std::vector<std::string>& argv, const fs::path& output, Session session) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (session == Session::own) ::setsid();
    FILE* out = std::freopen(output.c_str(), "w", stdout);
    if (out == nullptr || ::dup2(STDOUT_FILENO, STDERR_FILENO) < 0) ::_exit(99);
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(98);
  }
  return pid;
}

bool bash_regex_matches(const std::string& text, const std::string& regex) {
  auto r = subprocess::run({"bash", "-c", "[[ $1 =~ $2 ]]", "bash", text, regex});
  if (!r) throw std::runtime_error("cannot run bash: " + r.error().message);
  if (r->exit_code == 2) throw std::runtime_error("bash cannot compile the regex '" + regex + "'");
  return r->exit_code == 0;
}

std::string copy_kernel_volume(const fs::path& dest) {
  const fs::path from = fixtures_dir() / "kernel-volume";
  if (!fs::exists(from / ".kmodkit/kernels")) throw std::runtime_error("no kernel volume fixture at " + from.string());
  // Hard links: a real copy of 16,000 files takes ~10 s on this VM's disk. Tests replace files
  // (write_file unlinks first) and kmod-builder renames its outputs into place, so the fixture's
  // inodes are never written through.
  auto r = subprocess::run({"cp", "-al", from.string(), dest.string()});
  if (!r || !r->ok()) throw std::runtime_error("cannot copy " + from.string() + " to " + dest.string());
  // But not the lock and the use records: flock() locks an inode, so links to the fixture's
  // would make every copy's lock one lock, and tests running at once would wait on each other.
  std::error_code ec;
  fs::remove(dest / ".kmodkit/lock", ec);
  for (const auto& e : fs::directory_iterator(dest / ".kmodkit/used", ec)) fs::remove(e.path(), ec);
  return fixture_kernel_release();
}

SoftToken make_soft_token(const fs::path& dir, const fs::path& key) {
  fs::create_directories(dir / "tokens");
  SoftToken t{dir / "softhsm2.conf", ""};
  write_file(t.conf, "directories.tokendir = " + (dir / "tokens").string() + "\nobjectstore.backend = file\nlog.level = ERROR\n");
  // Labels are unique across this process's tokens (p11-kit sees every token of the conf).
  static int made = 0;
  const std::string label = "kmodkit-" + std::to_string(::getpid()) + "-" + std::to_string(++made);
  const std::string env = "SOFTHSM2_CONF=" + t.conf.string();
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"env", env, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", "1234"},
           {"openssl", "pkcs8", "-topk8", "-nocrypt", "-in", key.string(), "-out", (dir / "key.p8").string()},
           {"env", env, "softhsm2-util", "--import", (dir / "key.p8").string(), "--token", label, "--label", "modsign", "--id",
            "01", "--pin", "1234"}}) {
    auto r = subprocess::run(argv);
    if (!r || !r->ok()) throw std::runtime_error(argv[2] + ": " + (r ? r->output : r.error().message));
  }
  t.uri = "pkcs11:token=" + label + ";object=modsign;type=private";
  return t;
}

SigningKey make_signing_key(const fs::path& dir, const std::string& common_name) {
  fs::create_directories(dir);
  SigningKey k{dir / "key.pem", dir / "cert.pem", dir / "cert.der", ""};
  auto r = subprocess::run({"sh", "-c", "cd '" + dir.string() +
                                            "' && openssl req -new -nodes -utf8 -sha256 -days 2 -batch -x509 -newkey rsa:2048"
                                            " -subj '/CN=" + common_name + "' -keyout key.pem -out cert.pem 2>/dev/null"
                                            " && openssl x509 -in cert.pem -outform DER -out cert.der"
                                            " && openssl x509 -in cert.pem -noout -serial"});
  if (!r || !r->ok()) throw std::runtime_error("openssl could not make a key in " + dir.string());
  // "serial=0A1B..." -> "0A:1B:..." without leading zero bytes, as libkmod prints it.
  std::string hex = r->output.substr(r->output.find('=') + 1);
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == ' ')) hex.pop_back();
  if (hex.size() % 2 != 0) hex = "0" + hex;
  while (hex.size() > 2 && hex.starts_with("00")) hex = hex.substr(2);
  for (size_t i = 0; i < hex.size(); i += 2) k.serial += (i == 0 ? "" : ":") + hex.substr(i, 2);
  return k;
}

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  fs::remove(path);  // a new inode: the old one may be a hard link into a fixture
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string key_id_of(const fs::path& key) {
  TempDir home;  // gpg lists the key without a keyring, but wants a home of its own
  fs::permissions(home.path, fs::perms::owner_all, fs::perm_options::replace);
  auto out = subprocess::run({"gpg", "--batch", "--homedir", home.path.string(), "--with-colons", "--show-keys", key.string()});
  if (!out || !out->ok()) throw std::runtime_error("gpg could not list " + key.string() + (out ? ": " + out->output : ""));
  std::istringstream lines(out->output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("pub:")) continue;
    std::vector<std::string> fields;
    std::istringstream f(line);
    for (std::string field; std::getline(f, field, ':');) fields.push_back(field);
    std::string id = fields.at(4);
    for (auto& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return id;
  }
  throw std::runtime_error("no public key in gpg's listing of " + key.string());
}

void make_gpg_key(const fs::path& home, const std::string& uid, const fs::path& public_key) {
  fs::create_directories(home);
  fs::permissions(home, fs::perms::owner_all, fs::perm_options::replace);
  const std::string gpg = "gpg --batch --quiet --homedir '" + home.string() + "' ";
  // The agent gpg starts for the home is ended whatever happened.
  auto r = subprocess::run({"sh", "-c", gpg + "--passphrase '' --quick-gen-key \"$1\" rsa2048 sign never && " + gpg +
                                            "--armor --output \"$2\" --export \"$1\"; status=$?; gpgconf --homedir '" +
                                            home.string() + "' --kill all; exit $status",
                            "sh", uid, public_key.string()});
  if (!r || !r->ok()) throw std::runtime_error("gpg could not make the key " + uid + (r ? ": " + r->output : ""));
}

std::string sha256_of(const fs::path& path) {
  auto r = digest::sha256_file(path);
  if (!r) throw std::runtime_error(r.error().message);
  return *r;
}

std::string base64(const std::string& bytes) {
  TempDir dir;
  write_file(dir / "in", bytes);
  auto r = subprocess::run({"base64", "-w0", (dir / "in").string()});
  if (!r || !r->ok()) throw std::runtime_error("base64 failed");
  return r->output;
}

size_t count_entries(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_symlink() || e.is_regular_file()) ++n;
  }
  return n;
}

void write_tar_gz(const fs::path& path, const std::vector<TarEntry>& entries) {
  struct archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) {
    throw std::runtime_error(archive_error_string(a));
  }
  for (const auto& e : entries) {
    struct archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.path.c_str());
    archive_entry_set_perm(entry, static_cast<mode_t>(e.mode));
    archive_entry_set_mtime(entry, 1700000000, 0);
    switch (e.type) {
      case TarEntry::file:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_size(entry, static_cast<la_int64_t>(e.data.size()));
        break;
      case TarEntry::dir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        break;
      case TarEntry::symlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_symlink(entry, e.data.c_str());
        break;
      case TarEntry::hardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_hardlink(entry, e.data.c_str());
        break;
    }
    archive_write_header(a, entry);
    if (e.type == TarEntry::file && !e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
}

void copy_tree(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks |
                         fs::copy_options::overwrite_existing);
}

}  // namespace kmodkit::test
