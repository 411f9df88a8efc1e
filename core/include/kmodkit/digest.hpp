#pragma once
// SHA-256, and base64, on OpenSSL's EVP interface.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::digest {

// `bytes` in base64 (RFC 4648), without line breaks.
std::string base64(std::string_view bytes);
// The bytes of strict base64 (no white space, padded to a multiple of 4); nullopt when `text`
// is not that.
std::optional<std::string> unbase64(std::string_view text);

// Incremental SHA-256. update() may be called any number of times, then hex() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // Lower-case hex of the digest; the object must not be updated afterwards.
  std::string hex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// SHA-256 of a string, as lower-case hex.
std::string sha256_hex(std::string_view data);
// SHA-256 of a file's content; the error names the file.
Result<std::string> sha256_file(const std::filesystem::path& path);
// True when `text` is 64 hex digits (either case).
bool is_sha256_hex(std::string_view text);
// Lower-cases a hex string.
std::string normalize_hex(std::string_view text);

}  // namespace kmodkit::digest
