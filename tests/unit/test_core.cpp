// The core library: results, options, files, locks, subprocesses, digests.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "helpers.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/http.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/volume.hpp"

using namespace kmodkit;
using kmodkit::test::TempDir;

namespace {

// Runs a program with one value option and one flag through the real runner.
struct OptionRun {
  int code;
  std::string value;
  bool flag;
};

OptionRun run_options(std::vector<std::string> args) {
  std::string value;
  bool flag = false;
  cli::Program program{"kmodkit-test", "test", "", {
      {"some-value", cli::Kind::value, "fallback", "V", "a value",
       [&](const std::vector<std::string>& v) -> Result<void> {
         value = v.empty() ? "" : v.front();
         if (value == "bad") return fail(ExitCode::usage, "--some-value: 'bad' is not allowed");
         return {};
       }},
      {"some-flag", cli::Kind::flag, "", "", "a flag",
       [&](const std::vector<std::string>& v) -> Result<void> {
         flag = v.front() == "true";
         return {};
       }},
  }};
  args.insert(args.begin(), "kmodkit-test");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  int code = cli::run_main(program, static_cast<int>(argv.size()), argv.data(), [] { return Result<void>{}; });
  return {code, value, flag};
}

}  // namespace

TEST_CASE("an option's flag wins over its environment variable, which wins over its default", "[unit][cli]") {
  ::unsetenv("KMODKIT_SOME_VALUE");
  ::unsetenv("KMODKIT_SOME_FLAG");
  CHECK(run_options({}).value == "fallback");
  ::setenv("KMODKIT_SOME_VALUE", "from-env", 1);
  CHECK(run_options({}).value == "from-env");
  CHECK(run_options({"--some-value", "from-flag"}).value == "from-flag");
  ::setenv("KMODKIT_SOME_FLAG", "yes", 1);
  CHECK(run_options({}).flag);
  ::setenv("KMODKIT_SOME_FLAG", "maybe", 1);
  CHECK(run_options({}).code == 64);
  ::unsetenv("KMODKIT_SOME_VALUE");
  ::unsetenv("KMODKIT_SOME_FLAG");
}

TEST_CASE("a bad option value exits 64 and the reason goes to the termination log", "[unit][cli]") {
  TempDir tmp;
  test::write_file(tmp / "termination-log", "");
  ::setenv("KMODKIT_TERMINATION_LOG", (tmp / "termination-log").c_str(), 1);
  CHECK(run_options({"--some-value", "bad"}).code == 64);
  CHECK(test::read_file(tmp / "termination-log") == "kmodkit-test: --some-value: 'bad' is not allowed\n");
  CHECK(run_options({"--no-such-option"}).code == 64);
  ::unsetenv("KMODKIT_TERMINATION_LOG");
}

TEST_CASE("the termination log is never created where it does not exist", "[unit][cli]") {
  TempDir tmp;
  ::setenv("KMODKIT_TERMINATION_LOG", (tmp / "absent").c_str(), 1);
  cli::write_termination_log("x");
  CHECK_FALSE(std::filesystem::exists(tmp / "absent"));
  ::unsetenv("KMODKIT_TERMINATION_LOG");
}

TEST_CASE("errors gather context from the outside in", "[unit][result]") {
  auto inner = []() -> Result<int> { return fail(ExitCode::unavailable, "HTTP 404"); };
  auto outer = [&]() -> Result<int> {
    int v = KK_TRY_CTX(inner(), "fetching headers for 6.1.0-18-amd64");
    return v + 1;
  };
  auto r = outer();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::unavailable);
  CHECK(r.error().message == "fetching headers for 6.1.0-18-amd64: HTTP 404");
}

TEST_CASE("integers and seconds are parsed strictly, naming the option", "[unit][cli]") {
  CHECK(*cli::parse_integer("jobs", "4", 1, 64) == 4);
  auto bad = cli::parse_integer("jobs", "4x", 1, 64);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "--jobs: '4x' is not a whole number");
  CHECK_FALSE(cli::parse_integer("jobs", "0", 1, 64));
  CHECK(*cli::parse_seconds("lock-timeout", "1.5") == 1.5);
  CHECK_FALSE(cli::parse_seconds("lock-timeout", "-1"));
}

TEST_CASE("an option table stores what it parses, and a bad value leaves the target as it was", "[unit][cli]") {
  uint32_t flows = 7;
  auto store_flows = cli::store_integer("flows", flows, 64, 1LL << 28);
  REQUIRE(store_flows({"1048576"}));
  CHECK(flows == 1048576u);
  auto too_small = store_flows({"8"});
  REQUIRE_FALSE(too_small);
  CHECK(too_small.error().code == ExitCode::usage);
  CHECK(too_small.error().message.starts_with("--flows: "));
  CHECK(flows == 1048576u);
  double timeout = 1;
  auto store_timeout = cli::store_seconds("lock-timeout", timeout);
  REQUIRE(store_timeout({"2.5"}));
  CHECK(timeout == 2.5);
  REQUIRE_FALSE(store_timeout({"soon"}));
  CHECK(timeout == 2.5);
}

TEST_CASE("an atomic write replaces the whole file and leaves no temporary behind", "[unit][files]") {
  TempDir tmp;
  REQUIRE(files::write_file_atomic(tmp / "f", "one"));
  REQUIRE(files::write_file_atomic(tmp / "f", "two"));
  CHECK(test::read_file(tmp / "f") == "two");
  CHECK(test::count_entries(tmp.path) == 1);
}

TEST_CASE("writing into a missing directory fails with the path in the message", "[unit][files]") {
  TempDir tmp;
  auto r = files::write_file_atomic(tmp / "no/such/dir/f", "x");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("no/such/dir/f") != std::string::npos);
}

TEST_CASE("a staging directory disappears unless kept", "[unit][files]") {
  TempDir tmp;
  std::filesystem::path p;
  {
    auto s = files::StagingDir::create(tmp / "staging", "k");
    REQUIRE(s);
    p = s->path();
    test::write_file(p / "a/b", "x");
  }
  CHECK_FALSE(std::filesystem::exists(p));
  {
    auto s = files::StagingDir::create(tmp / "staging", "k");
    REQUIRE(s);
    p = s->path();
    s->keep();
  }
  CHECK(std::filesystem::exists(p));
}

TEST_CASE("errno values map to exit codes: full and read-only 73, EIO 74 (never 'missing'), else the fallback", "[unit][files]") {
  CHECK(files::errno_error("w", ENOSPC).code == ExitCode::cant_create);
  CHECK(files::errno_error("w", EROFS, ExitCode::no_input).code == ExitCode::cant_create);
  CHECK(files::errno_error("r", EIO, ExitCode::no_input).code == ExitCode::io_err);
  CHECK(files::errno_error("r", EIO).message == "r: Input/output error");
  CHECK(files::errno_error("r", ENOENT, ExitCode::no_input).code == ExitCode::no_input);
  CHECK(files::errno_error("r", EACCES, ExitCode::no_input).code == ExitCode::no_perm);
  CHECK(exit_code_name(ExitCode::io_err) == "input/output error");
}

TEST_CASE("a staging directory another process removed is reported as that, with the cause after", "[unit][files]") {
  TempDir tmp;
  auto s = files::StagingDir::create(tmp / "staging", "k");
  REQUIRE(s);
  const Error cause{ExitCode::no_input, "the headers lack a Makefile"};
  std::filesystem::create_directories(tmp / "made");  // made now, so it cannot reuse the removed one's inode
  CHECK(s->intact());
  CHECK(s->explain(cause).code == ExitCode::no_input);
  CHECK(s->explain(cause).message == cause.message);
  std::filesystem::remove_all(s->path());
  CHECK_FALSE(s->intact());
  const Error e = s->explain(cause);
  CHECK(e.code == ExitCode::temp_fail);
  CHECK(e.message.starts_with(s->path().string() + " was removed while this run was writing it"));
  CHECK(e.message.find("without holding its lock") != std::string::npos);
  CHECK(e.message.ends_with("(the headers lack a Makefile)"));
  // Renamed aside (as a locked run's cleanup does), then made again at the same path by a writer
  // that creates parents as it goes: not this run's.
  std::filesystem::rename(tmp / "made", s->path());
  REQUIRE(std::filesystem::is_directory(s->path()));
  CHECK_FALSE(s->intact());
  CHECK(s->explain(cause).code == ExitCode::temp_fail);
}

TEST_CASE("stale staging: a dead process's directory is removed, a live one's and odd names are not", "[unit][files]") {
  TempDir tmp;
  const auto dir = tmp / "staging";
  // A pid that does not exist now (pid_max is at most 2^22), a live one, and names that only
  // look like "<prefix>.<pid>.<random>".
  for (const std::string& name : std::vector<std::string>{"k.4194305.a", "k." + std::to_string(::getppid()) + ".b", "k.99999999999999999999.c",
                                 "k.12abc.d", "k.-5.e", "other.4194305.f"}) {
    std::filesystem::create_directories(dir / name);
  }
  auto removed = files::remove_stale_staging(dir, "k");
  REQUIRE(removed);
  CHECK(*removed == 1);
  CHECK_FALSE(std::filesystem::exists(dir / "k.4194305.a"));
  for (const char* kept : {"k.99999999999999999999.c", "k.12abc.d", "k.-5.e", "other.4194305.f"}) {
    CHECK(std::filesystem::exists(dir / kept));
  }
}

TEST_CASE("the lock waits a bounded time for another holder, then says so with exit 75", "[unit][files]") {
  TempDir tmp;
  int other = ::open((tmp / "lock").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(::flock(other, LOCK_EX) == 0);
  auto r = files::FileLock::acquire(tmp / "lock", std::chrono::milliseconds(300), std::chrono::milliseconds(100));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::temp_fail);
  CHECK(r.error().message.find("gave up waiting for the lock") != std::string::npos);
  ::close(other);
  auto ok = files::FileLock::acquire(tmp / "lock", std::chrono::milliseconds(300));
  CHECK(ok);
}

TEST_CASE("a subprocess's output and exit status are captured", "[unit][subprocess]") {
  auto r = subprocess::run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  REQUIRE(r);
  CHECK(r->exit_code == 3);
  CHECK(r->output.find("out") != std::string::npos);
  CHECK(r->output.find("err") != std::string::npos);
  CHECK(r->describe() == "exited with 3");
}

TEST_CASE("a subprocess that runs too long is killed with its children", "[unit][subprocess]") {
  subprocess::Options opts;
  opts.timeout = std::chrono::milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  auto r = subprocess::run({"sh", "-c", "sleep 30 & sleep 30"}, opts);
  REQUIRE(r);
  CHECK(r->timed_out);
  CHECK_FALSE(r->ok());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("a subprocess dies with the process that started it, also when that one is killed with SIGKILL",
          "[unit][subprocess]") {
  // make and the compilers must not outlive a killed kmod-builder: its rerun removes their
  // build directory.
  TempDir tmp;
  const std::string pid_file = (tmp / "pid").string();
  const pid_t starter = ::fork();
  REQUIRE(starter >= 0);
  if (starter == 0) {
    (void)subprocess::run({"sh", "-c", "echo $$ > '" + pid_file + ".tmp' && mv '" + pid_file + ".tmp' '" + pid_file +
                                           "' && exec sleep 60"});
    ::_exit(0);
  }
  for (int i = 0; i < 1000 && !std::filesystem::exists(pid_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(std::filesystem::exists(pid_file));
  const pid_t child = std::stoi(test::read_file(pid_file));
  CHECK(::kill(child, 0) == 0);
  ::kill(starter, SIGKILL);
  int status = 0;
  ::waitpid(starter, &status, 0);
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = ::kill(child, 0) != 0 && errno == ESRCH;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(gone);
  if (!gone) ::kill(child, SIGKILL);
}

TEST_CASE("a program that cannot be executed is an error naming it", "[unit][subprocess]") {
  TempDir tmp;
  test::write_file(tmp / "not-executable", "#!/bin/sh\n");
  auto r = subprocess::run({(tmp / "not-executable").string()});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message, Catch::Contains("cannot run " + (tmp / "not-executable").string()) &&
                                    Catch::Contains("ermission denied"));
  subprocess::Options in_missing_dir;
  in_missing_dir.cwd = tmp / "absent";
  auto cwd = subprocess::run({"true"}, in_missing_dir);
  REQUIRE_FALSE(cwd);
  CHECK_THAT(cwd.error().message, Catch::Contains("cannot run true"));
}

TEST_CASE("a program that does not exist is input missing", "[unit][subprocess]") {
  auto r = subprocess::run({"kmodkit-no-such-program"});
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::no_input);
}

TEST_CASE("SHA-256 matches the FIPS 180-2 test vectors", "[unit][digest]") {
  CHECK(digest::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(digest::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  digest::Sha256 h;
  h.update("a");
  h.update("bc");
  CHECK(h.hex() == digest::sha256_hex("abc"));
  CHECK(digest::is_sha256_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
  CHECK_FALSE(digest::is_sha256_hex("ba78"));
}

TEST_CASE("credentials in a URL never reach a message", "[unit][http]") {
  CHECK(http::redact("https://user:secret@host/path") == "https://***@host/path");
  CHECK(http::redact("http://host/p@th") == "http://host/p@th");
}

TEST_CASE("base64 round-trips any bytes, and unbase64 refuses what is not strict base64", "[unit][digest]") {
  CHECK(kmodkit::digest::base64("user:password") == "dXNlcjpwYXNzd29yZA==");
  for (const std::string& bytes : {std::string(""), std::string("a"), std::string("ab"), std::string("abc"), std::string("\0\xff\x10", 3)}) {
    const auto text = kmodkit::digest::base64(bytes);
    if (bytes.empty()) continue;  // "" is not a signature's base64: unbase64 refuses it
    CHECK(kmodkit::digest::unbase64(text) == bytes);
  }
  for (const char* bad : {"", "abc", "ab c", "****"}) {
    INFO(bad);
    CHECK_FALSE(kmodkit::digest::unbase64(bad));
  }
}

TEST_CASE("a kernel tree's manifest reads back what it wrote, and one naming paths outside the volume is refused",
          "[unit][volume]") {
  volume::Manifest m;
  m.kernel_release = "6.1.0-57-amd64";
  m.os = "debian 12";
  m.source = "apt";
  m.headers = "trees/6.1.0-57-amd64/g1/usr/src/linux-headers-6.1.0-57-amd64";
  m.modules = "trees/6.1.0-57-amd64/g1/lib/modules/6.1.0-57-amd64";
  m.packages.push_back({"linux-headers-6.1.0-57-amd64", "6.1.223-1", std::string(64, 'a'), "http://x/y.deb", 10});
  m.files = 3;
  auto back = volume::Manifest::from_json(m.to_json(), "m.json");
  REQUIRE(back);
  CHECK(back->to_json() == m.to_json());

  for (const auto& [headers, modules] : std::vector<std::pair<std::string, std::string>>{
           {"/usr/src/linux-headers-6.1.0-57-amd64", ""}, {"trees/../../etc", ""}, {"", ""}, {"trees/x", "/lib/modules"},
           {"trees/x", "trees/x/../../.."}}) {
    volume::Manifest bad = m;
    bad.headers = headers;
    bad.modules = modules;
    auto r = volume::Manifest::from_json(bad.to_json(), "m.json");
    CAPTURE(headers, modules);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
    CHECK_THAT(r.error().message, Catch::Contains("is not a path inside the volume"));
  }
  auto no_modules = m;
  no_modules.modules.clear();
  CHECK(volume::Manifest::from_json(no_modules.to_json(), "m.json"));

  // Counts a double holds but an integer does not (converting them was undefined behaviour).
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"files\": 3", "\"files\": 1e30"}, {"\"bytes\": 0", "\"bytes\": -5"}, {"\"size\": 10", "\"size\": 0.5"},
           {"\"format\": 1", "\"format\": 1e300"}}) {
    std::string text = m.to_json();
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), from.size(), to);
    auto r = volume::Manifest::from_json(text, "m.json");
    CAPTURE(to);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
  }
}
