#include "kmodkit/http.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>
#include <new>
#include <mutex>
#include <optional>
#include <thread>

#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"

namespace kmodkit::http {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

struct Transfer {
  const Sink* sink = nullptr;
  CURL* curl = nullptr;
  uint64_t delivered = 0;   // bytes handed to the sink over all attempts
  uint64_t skip = 0;        // bytes of this response to drop (server ignored Range)
  bool status_checked = false;
  bool http_error = false;  // the response status is an error: collect no body
  std::optional<Error> sink_error;
  progress::Reporter* reporter = nullptr;
  Response* response = nullptr;
};

// Collects the headers of each response; a status line starts a new response (redirects and
// 100 Continue come before the last one).
size_t on_header(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.starts_with("HTTP/")) {
    t->response->headers.clear();
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  t->response->headers.emplace_back(std::move(name), std::string(value));
  return n;
}

size_t on_write(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (!t->status_checked) {
    t->status_checked = true;
    long code = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 400) t->http_error = true;
    // 200 to a ranged request: the server sent the whole body again.
    if (code == 200 && t->delivered > 0) t->skip = t->delivered;
    curl_off_t length = -1;
    curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (t->reporter != nullptr && length > 0 && code < 400) {
      t->reporter->set_total((code == 206 ? t->delivered : 0) + static_cast<uint64_t>(length));
    }
  }
  if (t->http_error) return n;  // discard error pages
  size_t offset = 0;
  if (t->skip > 0) {
    offset = static_cast<size_t>(std::min<uint64_t>(t->skip, n));
    t->skip -= offset;
  }
  if (offset == n) return n;
  auto r = (*t->sink)(std::span<const char>(data + offset, n - offset));
  if (!r) {
    t->sink_error = std::move(r).error();
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->delivered += n - offset;
  if (t->reporter != nullptr) t->reporter->set(t->delivered);
  return n;
}

bool transient(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

bool transient_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

}  // namespace

std::string Response::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return {};
}

std::string escape(std::string_view text) {
  global_init();
  char* out = curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size()));
  if (out == nullptr) throw std::bad_alloc();
  std::string result(out);
  curl_free(out);
  return result;
}

std::string redact(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  auto at = url.find('@', scheme + 3);
  auto slash = url.find('/', scheme + 3);
  if (at == std::string::npos || (slash != std::string::npos && at > slash)) return url;
  return url.substr(0, scheme + 3) + "***@" + url.substr(at + 1);
}

Result<uint64_t> get(const std::string& url, const Sink& sink, const Options& options) {
  global_init();
  auto logger = log::get("http");
  const std::string shown = redact(url);
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return fail(ExitCode::software, "libcurl: cannot create a handle");

  Transfer t;
  t.sink = &sink;
  t.curl = curl.get();
  t.response = options.response;
  struct SlistFree {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
  };
  std::unique_ptr<curl_slist, SlistFree> request_headers;
  for (const auto& h : options.headers) {
    // Appending returns the list's head, the same one after the first header.
    curl_slist* head = curl_slist_append(request_headers.get(), h.c_str());
    if (head == nullptr) return fail(ExitCode::software, "libcurl: cannot add a request header");
    if (!request_headers) request_headers.reset(head);
  }
  std::optional<progress::Reporter> reporter;
  if (options.progress) {
    reporter.emplace(options.what.empty() ? shown : options.what, 0);
    t.reporter = &*reporter;
  }

  char errbuf[CURL_ERROR_SIZE];
  auto backoff = options.backoff;
  std::string last_reason;
  for (int attempt = 0; attempt <= options.retries; ++attempt) {
    if (attempt > 0) {
      logger->warn("{}: {}; retry {} of {} in {} ms{}", shown, last_reason, attempt, options.retries,
                   backoff.count(),
                   t.delivered > 0 ? " (resuming at byte " + std::to_string(t.delivered) + ")" : "");
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(8000));
    }
    curl_easy_reset(curl.get());
    CURL* c = curl.get();
    errbuf[0] = '\0';
    t.status_checked = false;
    t.http_error = false;
    t.skip = 0;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    const bool verify = options.tls_verify == TlsVerify::on;
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
    if (!options.client_cert.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, options.client_cert.c_str());
    if (!options.client_key.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, options.client_key.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, options.connect_timeout.count())));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, options.low_speed_limit);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.low_speed_time.count()));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "kmodkit/" KMODKIT_VERSION);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, nullptr);  // exact bytes: digests are of them
    // A plain Range header rather than CURLOPT_RESUME_FROM: a server that ignores it answers
    // 200 with the whole body, and on_write skips what was already delivered.
    const std::string range = std::to_string(t.delivered) + "-";
    if (t.delivered > 0) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
    // libcurl sends these to the first host only, never to one a redirect leads to (a
    // registry's Authorization does not follow it to the blob store).
    if (request_headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, request_headers.get());
    if (t.response != nullptr) {
      *t.response = Response{};
      curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
      curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    }

    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (t.response != nullptr) t.response->status = status;

    if (t.sink_error) return fail(*t.sink_error);
    if (status == 416 && t.delivered > 0) {
      // Asked for the rest, the server has nothing past the bytes received: the answer before
      // announced more than the server has (a wrong Content-Length, a file changed meanwhile),
      // which asking again cannot mend.
      return fail(ExitCode::unavailable, shown + ": " + last_reason + "; asked for the rest, the server has nothing after the first " +
                                             std::to_string(t.delivered) + " bytes (HTTP 416)");
    }
    if (rc == CURLE_OK && (status < 400 || url.rfind("file:", 0) == 0)) {
      if (reporter) reporter->finish();
      return t.delivered;
    }
    if (rc == CURLE_OK || rc == CURLE_HTTP_RETURNED_ERROR) {
      if (status == 404 || status == 410) {
        return fail(ExitCode::no_input, shown + ": HTTP " + std::to_string(status));
      }
      last_reason = "HTTP " + std::to_string(status);
      if (!transient_status(status)) {
        return fail(ExitCode::unavailable, shown + ": " + last_reason);
      }
      continue;
    }
    if (rc == CURLE_FILE_COULDNT_READ_FILE) {
      return fail(ExitCode::no_input, shown + ": " + (errbuf[0] ? errbuf : curl_easy_strerror(rc)));
    }
    last_reason = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (!transient(rc)) return fail(ExitCode::unavailable, shown + ": " + last_reason);
  }
  return fail(ExitCode::unavailable, shown + ": " + last_reason + " (gave up after " +
                                         std::to_string(options.retries + 1) + " attempts)");
}

Result<std::string> get_string(const std::string& url, const Options& options, size_t max_bytes) {
  std::string body;
  KK_TRY(get(
      url,
      [&](std::span<const char> bytes) -> Result<void> {
        if (body.size() + bytes.size() > max_bytes) {
          return fail(ExitCode::data_err, redact(url) + ": larger than " +
                                              std::to_string(max_bytes) + " bytes");
        }
        body.append(bytes.data(), bytes.size());
        return {};
      },
      options));
  return body;
}

}  // namespace kmodkit::http
