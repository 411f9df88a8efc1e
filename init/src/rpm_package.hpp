#pragma once
// A downloaded RPM package checked as rpm and dnf check it before installing it, then extracted.
// The file format (rpm's docs/manual/format.md, lib/header.c, lib/package.c): a 96-byte lead,
// the signature header padded to 8 bytes, the main header, the compressed cpio payload. A header
// is its magic 8E AD E8 01, 4 reserved bytes, the index count and data size (big-endian 32 bits),
// 16-byte index entries (tag, type, offset, count) and the data they point into.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/archive.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::init::rpm {

// Whether a package must carry a header signature by one of the repository's keys: dnf's
// gpgcheck=1 / gpgcheck=0.
enum class SignaturePolicy { required, not_required };

struct PackageInfo {
  std::string name, arch;       // from the header (RPMTAG_NAME, RPMTAG_ARCH)
  std::string evr;              // "6.1.0-57-amd64" / "1:2.0-3" (no "0:")
  std::string signed_by;        // key id (16 lower-case hex digits) of the header signature that verified; empty if none checked
  std::string payload_digest;   // hex, as the header states it (checked)
};

// Checks `file` (a downloaded .rpm; `origin` names it in messages, e.g. its URL): the lead and
// both headers' structure (magic, index counts and sizes within the file, every entry within
// its header's data); with `policy` required, the header signature (signature tag RSA 268 or
// DSA 267: an OpenPGP signature over the main header's bytes as stored) verified with gpgv
// against `keys` (keyring paths or inline armoured blocks, as signature::verify_with takes
// them); the SHA-256 header digest (signature tag 273) when present; the size the signature
// header states (tag 1000 or 270) when present; and the payload digest (RPMTAG_PAYLOADDIGEST
// 5092, algorithm RPMTAG_PAYLOADDIGESTALGO 5093: SHA-256 or SHA-512) over the payload as stored,
// which is streamed through the digest: only the headers are held in memory.
// With `policy` not_required, signatures are not checked but the digests still are.
// Errors, each one sentence naming `origin`: data error (65) for a file that is not an RPM, is
// truncated or has a bad structure; a header signature that does not verify or is made by a key
// none of `keys` holds (the message names the key id the signature names); a header or payload
// digest mismatch (both digests named); with `policy` required, an unsigned package or one
// without a payload digest. Configuration error (78) when `keys` is empty or cannot be read and
// a signature is to be checked (as signature::verify_with); input missing (66) when `file`
// cannot be read.
Result<PackageInfo> check_package(const std::filesystem::path& file, std::string_view origin,
                                  const std::vector<std::string>& keys, SignaturePolicy policy);

// Extracts the payload of a package that check_package accepted into `extraction`: libarchive
// reads the rpm container and its compressed cpio payload, and the extraction's policy refuses
// malicious paths (absolute symlinks are re-aimed inside its root). Thread-safe as Extraction is.
// Errors: as Extraction::extract_fd's; input missing (66) when `file` cannot be opened.
Result<archive::Stats> extract_package(const std::filesystem::path& file, std::string_view origin,
                                       archive::Extraction& extraction);

}  // namespace kmodkit::init::rpm
