#include "rpm_package.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>

#include "kmodkit/digest.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "signature.hpp"

namespace kmodkit::init::rpm {
namespace {

// The lead (rpm's lib/rpmlead.c): magic, major and minor version, type, arch, a 66-byte name,
// os, signature type, 16 reserved bytes. Only its magic, version and signature type matter.
constexpr size_t kLeadSize = 96;
constexpr unsigned char kLeadMagic[4] = {0xed, 0xab, 0xee, 0xdb};
constexpr uint16_t kHeaderSignatureType = 5;  // RPMSIGTYPE_HEADERSIG: a signature header follows
constexpr unsigned char kHeaderMagic[4] = {0x8e, 0xad, 0xe8, 0x01};
constexpr size_t kHeaderIntro = 16;  // magic, 4 reserved bytes, index count, data size
constexpr size_t kEntrySize = 16;
// rpm's limits on a header (lib/header_internal.h: hdrchkTags, HEADER_DATA_MAX).
constexpr uint32_t kMaxEntries = 0xffff;
constexpr uint32_t kMaxData = 0x0fffffff;

// Data types (rpm's rpmTagType) with their alignment and size; strings are NUL-terminated.
enum Type : uint32_t { null_t, char_t, int8_t_, int16_t_, int32_t_, int64_t_, string_t, bin_t, string_array_t, i18n_t };
constexpr uint32_t kMaxType = i18n_t;
constexpr uint32_t kTypeSize[] = {0, 1, 1, 2, 4, 8, 0, 1, 0, 0};

// Signature header tags (lib/rpmtag.h: RPMSIGTAG_*) and main header tags (RPMTAG_*).
constexpr int32_t kSigSize = 1000;       // header + payload size, 32 bits
constexpr int32_t kSigLongSize = 270;    // the same, 64 bits
constexpr int32_t kSigDsa = 267;         // OpenPGP DSA signature over the main header
constexpr int32_t kSigRsa = 268;         // OpenPGP RSA (or other non-DSA) signature over the main header
constexpr int32_t kSigSha256 = 273;      // SHA-256 of the main header, hex
constexpr int32_t kSigPgp = 1002;        // legacy signatures over header and payload
constexpr int32_t kSigGpg = 1005;
constexpr int32_t kTagName = 1000;
constexpr int32_t kTagVersion = 1001;
constexpr int32_t kTagRelease = 1002;
constexpr int32_t kTagEpoch = 1003;
constexpr int32_t kTagArch = 1022;
constexpr int32_t kTagPayloadDigest = 5092;
constexpr int32_t kTagPayloadDigestAlgo = 5093;
// OpenPGP hash algorithm ids (RFC 4880 9.4) as rpm uses them for the payload digest.
constexpr uint32_t kPgpHashSha256 = 8;
constexpr uint32_t kPgpHashSha512 = 10;

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t be32(std::string_view s, size_t at) { return be32(reinterpret_cast<const unsigned char*>(s.data()) + at); }

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0xf];
  }
  return out;
}

// Reads exactly `size` bytes at `offset`; false when the file ends first.
Result<bool> read_at(int fd, uint64_t offset, size_t size, std::string& out, std::string_view origin) {
  out.resize(size);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(files::errno_error(std::string(origin) + ": read", errno, ExitCode::no_input));
    if (n == 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

struct Entry {
  int32_t tag = 0;
  uint32_t type = 0;
  uint32_t offset = 0;
  uint32_t count = 0;
  uint32_t size = 0;  // bytes of data, strings' NULs included
};

// One header as stored (lib/header.c): its bytes, from the magic to the end of its data, and
// its index, every entry checked to lie within the data.
struct Header {
  std::string bytes;
  std::vector<Entry> entries;
  size_t data_start = 0;

  std::string_view data(const Entry& e) const { return std::string_view(bytes).substr(data_start + e.offset, e.size); }
  const Entry* find(int32_t tag) const {
    for (const auto& e : entries) {
      if (e.tag == tag) return &e;
    }
    return nullptr;
  }
  // A STRING entry, or the first string of a STRING_ARRAY or I18NSTRING entry.
  std::optional<std::string> string(int32_t tag) const {
    const Entry* e = find(tag);
    if (e == nullptr || (e->type != string_t && e->type != string_array_t && e->type != i18n_t)) return std::nullopt;
    const auto d = data(*e);
    return std::string(d.substr(0, d.find('\0')));
  }
  // The first value of an INT32 or INT64 entry.
  std::optional<uint64_t> number(int32_t tag) const {
    const Entry* e = find(tag);
    if (e == nullptr) return std::nullopt;
    const auto d = data(*e);
    if (e->type == int32_t_) return be32(d, 0);
    if (e->type == int64_t_) return (uint64_t{be32(d, 0)} << 32) | be32(d, 4);
    return std::nullopt;
  }
  std::optional<std::string_view> binary(int32_t tag) const {
    const Entry* e = find(tag);
    if (e == nullptr || e->type != bin_t) return std::nullopt;
    return data(*e);
  }
};

// Reads and checks the header at `offset` (`what`: "signature header" or "main header").
Result<Header> read_header(int fd, uint64_t offset, uint64_t file_size, std::string_view what, std::string_view origin) {
  const std::string o(origin);
  std::string intro;
  if (!KK_TRY(read_at(fd, offset, kHeaderIntro, intro, origin))) {
    return fail(ExitCode::data_err, o + ": truncated: the file ends within its " + std::string(what) + " at offset " +
                                        std::to_string(offset) + " (" + std::to_string(file_size) + " bytes)");
  }
  if (intro.compare(0, 4, reinterpret_cast<const char*>(kHeaderMagic), 4) != 0) {
    return fail(ExitCode::data_err, o + ": bad " + std::string(what) + ": no header magic at offset " + std::to_string(offset));
  }
  const uint32_t il = be32(intro, 8), dl = be32(intro, 12);
  if (il == 0 || il > kMaxEntries || dl > kMaxData) {
    return fail(ExitCode::data_err, o + ": bad " + std::string(what) + ": " + std::to_string(il) + " index entries and " +
                                        std::to_string(dl) + " bytes of data are beyond rpm's limits");
  }
  const uint64_t size = kHeaderIntro + uint64_t{il} * kEntrySize + dl;
  if (offset + size > file_size) {
    return fail(ExitCode::data_err, o + ": truncated: its " + std::string(what) + " at offset " + std::to_string(offset) +
                                        " needs " + std::to_string(size) + " bytes, the file has " +
                                        std::to_string(file_size - offset) + " from there");
  }
  Header h;
  if (!KK_TRY(read_at(fd, offset, size, h.bytes, origin))) {
    return fail(ExitCode::data_err, o + ": truncated: the file ends within its " + std::string(what));
  }
  h.data_start = kHeaderIntro + size_t{il} * kEntrySize;
  const std::string_view data = std::string_view(h.bytes).substr(h.data_start);
  for (uint32_t i = 0; i < il; ++i) {
    const size_t at = kHeaderIntro + size_t{i} * kEntrySize;
    Entry e{static_cast<int32_t>(be32(h.bytes, at)), be32(h.bytes, at + 4), be32(h.bytes, at + 8), be32(h.bytes, at + 12), 0};
    auto bad = [&](const std::string& why) {
      return fail(ExitCode::data_err, o + ": bad " + std::string(what) + ": entry " + std::to_string(i + 1) + " (tag " +
                                          std::to_string(e.tag) + ") " + why);
    };
    if (e.type > kMaxType || e.type == null_t) return bad("has the unknown type " + std::to_string(e.type));
    if (e.count == 0 || e.offset >= dl) return bad("lies outside the header's data");
    if (kTypeSize[e.type] != 0) {
      const uint64_t bytes = uint64_t{e.count} * kTypeSize[e.type];
      if (e.offset % kTypeSize[e.type] != 0) return bad("is not aligned for its type");
      if (e.offset + bytes > dl) return bad("lies outside the header's data");
      e.size = static_cast<uint32_t>(bytes);
    } else {
      // Strings: `count` of them, each ending within the data (a STRING holds one).
      if (e.type == string_t && e.count != 1) return bad("is a string with a count of " + std::to_string(e.count));
      size_t end = e.offset;
      for (uint32_t s = 0; s < e.count; ++s) {
        const size_t nul = data.find('\0', end);
        if (nul == std::string_view::npos) return bad("lies outside the header's data");
        end = nul + 1;
      }
      e.size = static_cast<uint32_t>(end - e.offset);
    }
    h.entries.push_back(e);
  }
  return h;
}

// The key id an OpenPGP signature packet names (RFC 4880 4.2 and 5.2): a v3 signature's key id
// field, or a v4 signature's issuer (subpacket 16) or issuer fingerprint (subpacket 33, whose
// last 8 bytes are the key id), hashed or not. Empty when the signature names no key; nullopt
// when `sig` is no signature packet.
std::optional<std::string> issuer_key_id(std::string_view sig) {
  auto byte = [&](size_t i) -> uint32_t { return static_cast<unsigned char>(sig[i]); };
  if (sig.size() < 2 || (byte(0) & 0x80) == 0) return std::nullopt;
  size_t header = 0, length = 0;
  uint32_t tag = 0;
  if (byte(0) & 0x40) {  // new format
    tag = byte(0) & 0x3f;
    const uint32_t l0 = byte(1);
    if (l0 < 192) {
      header = 2, length = l0;
    } else if (l0 < 224 && sig.size() > 2) {
      header = 3, length = ((l0 - 192) << 8) + byte(2) + 192;
    } else if (l0 == 255 && sig.size() > 5) {
      header = 6, length = be32(sig, 2);
    } else {
      return std::nullopt;  // partial body lengths: not used for signatures
    }
  } else {  // old format
    tag = (byte(0) >> 2) & 0xf;
    switch (byte(0) & 3) {
      case 0: header = 2, length = byte(1); break;
      case 1: header = 3, length = sig.size() > 2 ? (byte(1) << 8 | byte(2)) : 0; break;
      case 2: header = 5, length = sig.size() > 4 ? be32(sig, 1) : 0; break;
      default: header = 1, length = sig.size() - 1; break;
    }
  }
  if (tag != 2 || header + length > sig.size()) return std::nullopt;
  const std::string_view body = sig.substr(header, length);
  auto b = [&](size_t i) -> uint32_t { return static_cast<unsigned char>(body[i]); };
  if (body.size() >= 15 && (b(0) == 3 || b(0) == 2) && b(1) == 5) return hex(body.substr(7, 8));
  if (body.size() < 6 || b(0) != 4) return std::nullopt;
  std::string from_fingerprint;
  size_t at = 4;
  for (int area = 0; area < 2; ++area) {  // hashed, then unhashed subpackets
    if (at + 2 > body.size()) return std::nullopt;
    const size_t end = at + 2 + ((b(at) << 8) | b(at + 1));
    at += 2;
    if (end > body.size()) return std::nullopt;
    while (at < end) {
      size_t len = b(at), skip = 1;
      if (len >= 192 && len < 255 && at + 1 < end) {
        len = ((len - 192) << 8) + b(at + 1) + 192, skip = 2;
      } else if (len == 255 && at + 5 <= end) {
        len = be32(body, at + 1), skip = 5;
      }
      at += skip;
      if (len == 0 || at + len > end) return std::nullopt;
      const uint32_t type = b(at) & 0x7f;
      const std::string_view value = body.substr(at + 1, len - 1);
      if (type == 16 && value.size() == 8) return hex(value);
      if (type == 33 && value.size() >= 9) from_fingerprint = hex(value.substr(value.size() - 8));
      at += len;
    }
    at = end;
  }
  return from_fingerprint;
}

struct DigestAlgo {
  const EVP_MD* md;
  std::string_view name;
};
std::optional<DigestAlgo> payload_algo(uint64_t id) {
  if (id == kPgpHashSha256) return DigestAlgo{EVP_sha256(), "SHA-256"};
  if (id == kPgpHashSha512) return DigestAlgo{EVP_sha512(), "SHA-512"};
  return std::nullopt;
}

// The digest of the file's bytes from `offset` to its end, read in chunks.
Result<std::string> digest_from(int fd, uint64_t offset, const EVP_MD* md, std::string_view origin) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    return fail(ExitCode::software, std::string(origin) + ": OpenSSL cannot start a digest");
  }
  std::string buffer(1 << 20, '\0');
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(files::errno_error(std::string(origin) + ": read", errno, ExitCode::no_input));
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), out, &len);
  return hex(std::string_view(reinterpret_cast<const char*>(out), len));
}

}  // namespace

Result<PackageInfo> check_package(const std::filesystem::path& file, std::string_view origin,
                                  const std::vector<std::string>& keys, SignaturePolicy policy) {
  const std::string o(origin);
  auto fd = files::open_file(file, O_RDONLY);
  if (!fd) return fail(std::move(fd).error().context(origin));
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return fail(files::errno_error(o + ": stat", errno, ExitCode::no_input));
  const auto file_size = static_cast<uint64_t>(st.st_size);

  // The lead.
  std::string lead;
  const bool whole_lead = KK_TRY(read_at(fd->get(), 0, kLeadSize, lead, origin));
  if (file_size < 4 || lead.compare(0, 4, reinterpret_cast<const char*>(kLeadMagic), 4) != 0) {
    return fail(ExitCode::data_err, o + ": not an RPM package (it does not start with an RPM lead)");
  }
  if (!whole_lead) return fail(ExitCode::data_err, o + ": truncated: the file ends within its 96-byte lead");
  const auto major = static_cast<unsigned char>(lead[4]);
  if (major != 3 && major != 4) {
    return fail(ExitCode::data_err, o + ": RPM format version " + std::to_string(major) + " is not supported (3 and 4 are)");
  }
  const uint16_t sig_type = static_cast<uint16_t>((static_cast<unsigned char>(lead[78]) << 8) | static_cast<unsigned char>(lead[79]));
  if (sig_type != kHeaderSignatureType) {
    return fail(ExitCode::data_err, o + ": bad lead: signature type " + std::to_string(sig_type) + " is not a signature header (5)");
  }

  // The signature header, padded to 8 bytes, then the main header; the payload runs to the end.
  const Header sig = KK_TRY(read_header(fd->get(), kLeadSize, file_size, "signature header", origin));
  const uint64_t main_offset = (kLeadSize + sig.bytes.size() + 7) / 8 * 8;
  const Header main_header = KK_TRY(read_header(fd->get(), main_offset, file_size, "main header", origin));
  const uint64_t payload_offset = main_offset + main_header.bytes.size();

  // The size the signature header states (header and payload) finds a truncated payload before
  // its digest is computed, and holds for packages without a payload digest.
  auto stated_size = sig.number(kSigLongSize);
  if (!stated_size) stated_size = sig.number(kSigSize);
  if (stated_size && *stated_size != file_size - main_offset) {
    const std::string sizes = "its signature header states " + std::to_string(*stated_size) +
                              " bytes of header and payload, the file holds " + std::to_string(file_size - main_offset);
    if (*stated_size > file_size - main_offset) return fail(ExitCode::data_err, o + ": truncated: " + sizes);
    return fail(ExitCode::data_err, o + ": bad size: " + sizes);
  }

  PackageInfo info;
  const auto name = main_header.string(kTagName), version = main_header.string(kTagVersion),
             release = main_header.string(kTagRelease), arch = main_header.string(kTagArch);
  if (!name || !version || !release || !arch) {
    return fail(ExitCode::data_err, o + ": bad main header: it lacks the name, version, release or arch");
  }
  info.name = *name;
  info.arch = *arch;
  const auto epoch = main_header.number(kTagEpoch);
  info.evr = (epoch && *epoch != 0 ? std::to_string(*epoch) + ":" : "") + *version + "-" + *release;

  // The header digest covers the main header as stored, its magic included (lib/package.c).
  if (const auto stated = sig.string(kSigSha256)) {
    const std::string actual = digest::sha256_hex(main_header.bytes);
    if (digest::normalize_hex(*stated) != actual) {
      return fail(ExitCode::data_err, o + ": header digest mismatch: the signature header states SHA-256 " + *stated +
                                          ", the main header has " + actual);
    }
  }

  // The header signature covers the main header too, and through its payload digest the payload.
  if (policy == SignaturePolicy::required) {
    auto blob = sig.binary(kSigRsa);
    if (!blob) blob = sig.binary(kSigDsa);
    if (!blob) {
      if (sig.find(kSigPgp) != nullptr || sig.find(kSigGpg) != nullptr) {
        // rpm before 4.1 signed header and payload together only; such a signature is not read.
        return fail(ExitCode::data_err,
                    o + ": has only a legacy signature over header and payload, which is not checked; the repository requires signed packages (gpgcheck=1)");
      }
      return fail(ExitCode::data_err, o + ": is not signed; the repository requires signed packages (gpgcheck=1)");
    }
    const auto key_id = issuer_key_id(*blob);
    if (!key_id) {
      return fail(ExitCode::data_err, o + ": bad signature header: its header signature is not an OpenPGP v3 or v4 signature packet");
    }
    if (key_id->empty()) return fail(ExitCode::data_err, o + ": its header signature names no key (no issuer in it)");
    KK_TRY(signature::verify_with(keys, o + ": header signature by key " + *key_id, main_header.bytes, std::string(*blob)));
    info.signed_by = *key_id;
  }

  // The payload digest, as the (signed) main header states it, over the compressed payload.
  const auto stated_payload = main_header.string(kTagPayloadDigest);
  if (!stated_payload) {
    if (policy == SignaturePolicy::required) {
      return fail(ExitCode::data_err,
                  o + ": states no payload digest, so its header signature does not cover the payload; the repository requires signed packages (gpgcheck=1)");
    }
  } else {
    const auto algo_id = main_header.number(kTagPayloadDigestAlgo);
    if (!algo_id) return fail(ExitCode::data_err, o + ": bad main header: a payload digest without its algorithm");
    const auto algo = payload_algo(*algo_id);
    if (!algo) {
      return fail(ExitCode::data_err, o + ": payload digest algorithm " + std::to_string(*algo_id) +
                                          " is not supported (SHA-256 (8) and SHA-512 (10) are)");
    }
    const std::string actual = KK_TRY(digest_from(fd->get(), payload_offset, algo->md, origin));
    info.payload_digest = digest::normalize_hex(*stated_payload);
    if (info.payload_digest != actual) {
      return fail(ExitCode::data_err, o + ": payload digest mismatch: the header states " + std::string(algo->name) + " " +
                                          *stated_payload + ", the payload has " + actual);
    }
  }
  log::get("init.rpm")->debug("{}: {} {} {} checked (signed by {}, payload digest {})", origin, info.name, info.evr,
                              info.arch, info.signed_by.empty() ? "nobody checked" : info.signed_by,
                              info.payload_digest.empty() ? "none" : info.payload_digest);
  return info;
}

Result<archive::Stats> extract_package(const std::filesystem::path& file, std::string_view origin,
                                       archive::Extraction& extraction) {
  auto fd = files::open_file(file, O_RDONLY);
  if (!fd) return fail(std::move(fd).error().context(origin));
  // libarchive's rpm filter skips the lead and both headers; its other filters and the cpio
  // reader take the payload from there.
  return extraction.extract_fd(fd->get(), origin);
}

}  // namespace kmodkit::init::rpm
