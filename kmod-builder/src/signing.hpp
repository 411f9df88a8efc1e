#pragma once
// Module signing exactly as the kernel's scripts/sign-file does: a detached CMS (PKCS#7)
// signature without certificates or signed attributes, the module_signature trailer, and the
// "~Module signature appended~\n" magic (include/linux/module_signature.h).

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder::signing {

namespace fs = std::filesystem;

inline constexpr std::string_view kMagic = "~Module signature appended~\n";

// A private key and the certificate it belongs to, loaded from PEM or DER files.
class Signer {
 public:
  // Loads both; a key that does not match the certificate is a configuration error (78), an
  // unreadable or malformed file a data error (65) naming it.
  static Result<Signer> load(const fs::path& key_file, const fs::path& cert_file);
  Signer(Signer&&) noexcept;
  Signer& operator=(Signer&&) noexcept;
  ~Signer();

  // Returns `module` with any existing signature removed and a new one appended, signed with
  // `hash` ("sha256", "sha384" or "sha512").
  Result<std::string> sign(std::string_view module, std::string_view hash) const;

 private:
  struct Keys;
  explicit Signer(std::unique_ptr<Keys> keys);
  std::unique_ptr<Keys> keys_;
};

// Checks a module's appended signature against the certificate in `cert_file` (PEM or DER).
// Data error (65) when the module is unsigned, its trailer is malformed, or the signature does
// not match the content (a module changed after signing).
Result<void> verify(std::string_view module, const fs::path& cert_file);

// The module without its appended signature (unchanged when it has none). A trailer that
// claims more bytes than the file has is a data error.
Result<std::string_view> strip_signature(std::string_view module);

}  // namespace kmodkit::kmod_builder::signing
