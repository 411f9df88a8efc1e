#pragma once
// Detached signing (README, "Detached signing"): a module is built where the cluster is, signed
// where the key is, and only its signature travels back. Three files carry it:
//   - `kmod-builder export-unsigned` writes a directory holding unsigned.json and each installed
//     module without its signature (<kver>/<recipe>/<file>);
//   - `kmod-builder sign-detached` reads that directory and writes a signatures file (JSON, a
//     few hundred bytes per module: a ConfigMap or a Secret carries it);
//   - `kmod-builder build --signatures FILE` builds, checks each module's digest against the one
//     that was signed, and appends the signature as sign-file would.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"
#include "signing.hpp"

namespace kmodkit::kmod_builder {

namespace fs = std::filesystem;

inline constexpr std::string_view kUnsignedFormat = "kmodkit-unsigned/1";
inline constexpr std::string_view kSignaturesFormat = "kmodkit-signatures/1";

struct ExportUnsignedOptions {
  fs::path volume = "/modules";
  std::string kernel_release;        // "" = every kernel with installed recipes
  std::vector<std::string> recipes;  // empty = every installed recipe
  fs::path out;                      // the directory to write
  bool dry_run = false;
};
// Writes `out`/<kver>/<recipe>/<file> (each installed module with its signature removed) and,
// last, `out`/unsigned.json listing them with their SHA-256, cache key and hash algorithm.
// `out` is made if missing; an existing one must be empty or an earlier export (it holds
// unsigned.json). Errors: 66 nothing installed, 65 an installed module changed since it was
// installed, 73 `out` not writable or holding other files.
Result<void> export_unsigned(const ExportUnsignedOptions& options);

struct SignDetachedOptions {
  fs::path unsigned_dir;              // what export-unsigned wrote
  fs::path signing_key;               // a PEM/DER file or a PKCS#11 URI
  fs::path signing_cert;
  fs::path signing_pin_file;          // a token's PIN; else KMODKIT_SIGNING_PIN
  std::string hash;                   // "" = each module's from unsigned.json
  fs::path out;                       // the signatures file
  bool dry_run = false;
};
// Signs each module unsigned.json lists and writes the signatures file atomically. Errors: 66
// no unsigned.json, 65 a module whose bytes are not the ones listed (changed in transit), 78 the
// key (as Signer::load), 73 `out` not writable.
Result<void> sign_detached(const SignDetachedOptions& options);

// A module's detached signature, as the signatures file lists it.
struct DetachedSignature {
  std::string kernel_release, recipe, file;
  std::string sha256;     // of the unsigned module that was signed
  std::string hash;       // the signature's digest algorithm
  std::string signature;  // the CMS signature, DER
};

// A signatures file, read and checked (format, certificate, every signature's digest algorithm).
class Signatures {
 public:
  // Data error (65) naming the file and what is wrong; 66 when it is missing.
  static Result<Signatures> read(const fs::path& file);
  // The same from the file's text; `origin` names it in errors.
  static Result<Signatures> parse(std::string_view text, const fs::path& origin);
  const signing::Certificate& certificate() const { return certificate_; }
  const fs::path& origin() const { return origin_; }
  // `module` (the bytes built here, unsigned) with its signature appended as sign-file appends
  // it, after checking that those bytes are the ones that were signed. Errors: 66 the file has
  // no signature for this module; 65 the module's SHA-256 differs from the signed one (naming
  // the module and both digests), the signature's algorithm is not `hash`, or the signature does
  // not verify with the file's certificate over these bytes.
  Result<std::string> attach(std::string_view module, const std::string& kernel_release, const std::string& recipe,
                             const std::string& file, const std::string& hash) const;

 private:
  fs::path origin_;
  signing::Certificate certificate_;
  std::vector<DetachedSignature> modules_;
};

}  // namespace kmodkit::kmod_builder
