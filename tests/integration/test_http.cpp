// Downloads against a real HTTP server on 127.0.0.1 that can be told to drop connections.
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "helpers.hpp"
#include "kmodkit/fetch.hpp"
#include "kmodkit/http.hpp"

using namespace kmodkit;
using kmodkit::test::HttpServer;
using kmodkit::test::TempDir;

namespace {

std::string payload() {
  std::string s;
  for (int i = 0; i < 3 << 20; ++i) s += static_cast<char>((i * 2654435761u) >> 24);
  return s;
}

// tests/support/fault_server.py serving `root` with one fault (PATTERN=KIND[:N]), stopped by its
// PID on destruction; its request log tells how many requests a download made.
class FaultServer {
 public:
  FaultServer(const std::filesystem::path& dir, const std::filesystem::path& root, const std::string& fault)
      : log_(dir / "fault-server.jsonl") {
    const auto port_file = dir / "fault-server.port";
    pid_ = test::spawn({"/usr/bin/python3", (test::support_dir() / "fault_server.py").string(), root.string(), "--port-file",
                        port_file.string(), "--log", log_.string(), "--fault", fault},
                       dir / "fault-server.out");
    for (int i = 0; i < 2400 && !std::filesystem::exists(port_file); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    if (!std::filesystem::exists(port_file)) throw std::runtime_error("fault_server.py did not start");
    port_ = std::stoi(test::read_file(port_file));
  }
  ~FaultServer() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  FaultServer(const FaultServer&) = delete;
  FaultServer& operator=(const FaultServer&) = delete;
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The requests for `path` the server answered, as the status of each, in order.
  std::vector<int> statuses(const std::string& path) const {
    std::vector<int> out;
    std::istringstream lines(test::read_file(log_));
    for (std::string line; std::getline(lines, line);) {
      if (line.find("\"path\": \"" + path + "\"") == std::string::npos) continue;
      const auto at = line.find("\"status\": ");
      if (at != std::string::npos) out.push_back(std::stoi(line.substr(at + 10)));
    }
    return out;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

http::Options fast() {
  http::Options o;
  o.retries = 3;
  o.backoff = std::chrono::milliseconds(10);
  o.connect_timeout = std::chrono::milliseconds(5000);
  return o;
}

}  // namespace

TEST_CASE("a download delivers the whole body", "[integration][http]") {
  TempDir tmp;
  const auto data = payload();
  test::write_file(tmp / "www/f", data);
  HttpServer server(tmp / "www");
  auto body = http::get_string(server.url() + "/f", fast());
  REQUIRE(body);
  CHECK(*body == data);
}

TEST_CASE("a connection dropped mid-file is resumed with Range and every byte arrives once", "[integration][http]") {
  TempDir tmp;
  const auto data = payload();
  test::write_file(tmp / "www/f", data);
  HttpServer server(tmp / "www", {"--drop", "/f:1000000:2"});
  auto body = http::get_string(server.url() + "/f", fast());
  REQUIRE(body);
  CHECK(body->size() == data.size());
  CHECK(*body == data);
}

TEST_CASE("a server that ignores Range still gives a correct body after a drop", "[integration][http]") {
  TempDir tmp;
  const auto data = payload();
  test::write_file(tmp / "www/f", data);
  HttpServer server(tmp / "www", {"--drop", "/f:700000:1", "--no-range"});
  auto body = http::get_string(server.url() + "/f", fast());
  REQUIRE(body);
  CHECK(*body == data);
}

TEST_CASE("a connection that always drops gives up with exit 69 after the retries", "[integration][http]") {
  TempDir tmp;
  test::write_file(tmp / "www/f", payload());
  HttpServer server(tmp / "www", {"--drop", "/f:1000:-1", "--no-range"});
  auto body = http::get_string(server.url() + "/f", fast());
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ExitCode::unavailable);
  CHECK_THAT(body.error().message, Catch::Contains("gave up after 4 attempts"));
}

TEST_CASE("an answer shorter than its Content-Length from a server that has nothing more is given up at once, saying so",
          "[integration][http]") {
  // The server announces 100 bytes more than the file has: the body ends early, and the request
  // for the rest is answered 416. Retrying cannot mend that; "HTTP 416" alone did not say why.
  TempDir tmp;
  const auto data = payload();
  test::write_file(tmp / "www/f", data);
  FaultServer server(tmp.path, tmp / "www", "^/f$=short:100");
  auto body = http::get_string(server.url() + "/f", fast());
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ExitCode::unavailable);
  const std::string said = "transfer closed with 100 bytes remaining to read; asked for the rest, the server has nothing after the first ";
  CHECK(body.error().message == server.url() + "/f: " + said + std::to_string(data.size()) + " bytes (HTTP 416)");
  CHECK(server.statuses("/f") == std::vector<int>{200, 416});
}

TEST_CASE("a missing file is input missing, not a retry", "[integration][http]") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "www");
  HttpServer server(tmp / "www");
  auto body = http::get_string(server.url() + "/nothing", fast());
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ExitCode::no_input);
  CHECK_THAT(body.error().message, Catch::EndsWith("/nothing: HTTP 404"));
}

TEST_CASE("a server that is down is service unavailable", "[integration][http]") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "www");
  HttpServer server(tmp / "www");
  const std::string url = server.url() + "/f";
  server.stop();
  auto body = http::get_string(url, fast());
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ExitCode::unavailable);
}

TEST_CASE("a streamed download reports the download's failure, not the reader's truncation", "[integration][http]") {
  TempDir tmp;
  test::write_file(tmp / "www/f", payload());
  HttpServer server(tmp / "www", {"--drop", "/f:1000:-1", "--no-range"});
  auto r = fetch::stream(server.url() + "/f", fast(), [](int fd) -> Result<void> {
    char buf[4096];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    return fail(ExitCode::data_err, "truncated");
  });
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::unavailable);
}


TEST_CASE("a server that never answers the connection is given up after the connect timeout, fractions of a second too", "[integration][http]") {
  // A listening socket whose accept queue (backlog 0) is full: the kernel drops further SYNs,
  // so a connection attempt hangs until the client gives up.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  const int queued = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE((listener >= 0 && queued >= 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 0) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  REQUIRE(::connect(queued, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  http::Options o = fast();
  o.retries = 1;
  o.connect_timeout = std::chrono::milliseconds(300);  // was truncated to whole seconds: 0, libcurl's 300 s
  const auto started = std::chrono::steady_clock::now();
  auto body = http::get_string("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/f", o);
  const auto took = std::chrono::steady_clock::now() - started;
  ::close(queued);
  ::close(listener);
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ExitCode::unavailable);
  // libcurl words its connect timeout either way, depending on where the attempt stood.
  CHECK_THAT(body.error().message, (Catch::Contains("Timeout was reached") || Catch::Contains("Connection timeout after")) &&
                                       Catch::Contains("gave up after 2 attempts"));
  CHECK(took < std::chrono::seconds(30));  // two attempts of 0.3 s; libcurl's default would be 300 s each
}
