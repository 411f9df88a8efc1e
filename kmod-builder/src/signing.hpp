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
  // unreadable or malformed file a data error (65) naming it. `key_file` may instead be a
  // PKCS#11 URI (RFC 7512, "pkcs11:token=...;object=..."): the key stays in its token and signs
  // there, logged in with `pin`; no pkcs11 engine, no such key or a wrong PIN is 78, a URI that
  // carries a PIN 64.
  static Result<Signer> load(const fs::path& key_file, const fs::path& cert_file, const std::string& pin = "");
  // A fresh RSA-2048 key and a self-signed certificate for it, in memory only. Modules signed
  // with it load only on kernels that do not enforce signatures.
  static Result<Signer> ephemeral();
  Signer(Signer&&) noexcept;
  Signer& operator=(Signer&&) noexcept;
  ~Signer();

  // Returns `module` with any existing signature removed and a new one appended, signed with
  // `hash` ("sha256", "sha384" or "sha512").
  Result<std::string> sign(std::string_view module, std::string_view hash) const;

  bool is_ephemeral() const;
  // The certificate in DER (i2d_X509), for the cache key and for mokutil --import, which reads
  // DER only.
  std::string certificate_der() const;
  // The certificate in PEM.
  std::string certificate_pem() const;
  // What the kernel and libkmod report for a module signed by this key: the certificate
  // issuer's common name ("signer") and its serial number as colon-separated upper-case hex
  // ("sig_key"; sign-file identifies the signer by issuer and serial).
  std::string signer_name() const;
  std::string key_id() const;

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
