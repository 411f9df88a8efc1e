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

// A signing certificate and what the kernel reports for a module it signed.
struct Certificate {
  std::string der;     // i2d_X509: the cache key's part, and what mokutil --import reads
  std::string pem;
  std::string signer;  // the issuer's common name (modinfo's "signer")
  std::string key_id;  // the serial number as colon-separated upper-case hex (modinfo's "sig_key";
                       // sign-file identifies the signer by issuer and serial)
};

// A certificate from PEM or DER bytes; data error (65) naming `what` when it is neither.
Result<Certificate> parse_certificate(std::string_view data, const std::string& what);

// A PKCS#11 token's PIN: the first line of `pin_file` when one is given, else the variable
// KMODKIT_SIGNING_PIN, else "" (none). Never logged. Errors: reading the file (66 missing).
Result<std::string> read_pin(const fs::path& pin_file);

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
  // `hash` ("sha256", "sha384" or "sha512"): attach(module, signature(module, hash)).
  Result<std::string> sign(std::string_view module, std::string_view hash) const;
  // The detached CMS signature (DER) sign-file makes for `module` (any existing signature
  // removed): what `kmod-builder sign-detached` hands over instead of the signed module.
  Result<std::string> signature(std::string_view module, std::string_view hash) const;

  bool is_ephemeral() const;
  Certificate certificate() const;

 private:
  struct Keys;
  explicit Signer(std::unique_ptr<Keys> keys);
  std::unique_ptr<Keys> keys_;
};

// Checks a module's appended signature against the certificate in `cert_file` (PEM or DER).
// Data error (65) when the module is unsigned, its trailer is malformed, or the signature does
// not match the content (a module changed after signing).
Result<void> verify(std::string_view module, const fs::path& cert_file);
// The same with the certificate's bytes, `what` naming it in the error.
Result<void> verify(std::string_view module, std::string_view certificate, const std::string& what);

// `module` (any existing signature removed) with `signature` (a CMS signature in DER) appended
// as sign-file appends it: the signature, struct module_signature, the magic. Data error as
// strip_signature's.
Result<std::string> attach(std::string_view module, std::string_view signature);

// The digest algorithm of a CMS module signature ("sha256", "sha384", "sha512"). Data error
// (65) for bytes that are not a CMS signature with one signer, or another digest.
Result<std::string> signature_hash(std::string_view signature);

// The module without its appended signature (unchanged when it has none). A trailer that
// claims more bytes than the file has is a data error.
Result<std::string_view> strip_signature(std::string_view module);

}  // namespace kmodkit::kmod_builder::signing
