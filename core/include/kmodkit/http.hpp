#pragma once
// HTTP(S) downloads on libcurl: TLS verification on, connect and low-speed timeouts, retries
// with exponential backoff on transient errors, resumption with Range, progress reports.

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::http {

// The status and headers of the last response of a transfer, for APIs that answer in headers
// (a registry's WWW-Authenticate challenge and Docker-Content-Digest).
struct Response {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  // The value of the first header named `name` (lower case), or "" when there is none.
  std::string header(std::string_view name) const;
};

// Whether the server's certificate and name are checked. Off only where a repository's own
// configuration says so (dnf's sslverify=0); the caller warns.
enum class TlsVerify { on, off };

struct Options {
  std::chrono::milliseconds connect_timeout{15000};  // more than 0 (0 would be libcurl's 300 s)
  long low_speed_limit = 1024;                 // bytes per second ...
  std::chrono::seconds low_speed_time{30};     // ... for this long counts as stalled
  int retries = 4;                             // attempts after the first one
  std::chrono::milliseconds backoff{500};      // first pause; doubles, capped at 8 s
  std::string ca_file;                         // empty: the system's CA bundle
  std::string client_cert, client_key;         // PEM files for TLS client authentication; empty: none
  TlsVerify tls_verify = TlsVerify::on;
  std::string what;                            // name in progress lines; default: the URL
  bool progress = false;                       // report progress for this transfer
  std::vector<std::string> headers;            // extra request headers, "Name: value"
  Response* response = nullptr;                // when set, receives the last response's status and headers
};

// Receives the body in order. Returning an error aborts the transfer without retrying.
using Sink = std::function<Result<void>(std::span<const char> bytes)>;

// GETs `url` (http, https or file) and hands every byte of the body to `sink` exactly once,
// in order, across retries: a retry asks for the rest with Range, or skips what was already
// delivered when the server ignores Range. Returns the number of bytes delivered.
// Errors: input missing (66) for 404/410; service unavailable (69) when retries run out, the
// server refuses, or it answers a request for the rest with 416 (it has nothing past what it
// sent, so its announced length was wrong: not retried); the sink's own error as it returned it.
Result<uint64_t> get(const std::string& url, const Sink& sink, const Options& options = {});

// GETs a small document into memory; data error (65) when it exceeds `max_bytes`.
Result<std::string> get_string(const std::string& url, const Options& options = {},
                               size_t max_bytes = 256 << 20);

// Percent-encodes `text` for a URL's query (libcurl's curl_easy_escape).
std::string escape(std::string_view text);

// Removes user:password@ from a URL for logs and messages.
std::string redact(const std::string& url);

}  // namespace kmodkit::http
