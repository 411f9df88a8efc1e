#include "signing.hpp"

// The pkcs11 engine (libengine-pkcs11-openssl) signs with keys in tokens: OpenSSL 3 marks the
// ENGINE API deprecated, and Debian 12 packages no PKCS#11 provider to use instead. (Before
// the first OpenSSL header.)
#define OPENSSL_SUPPRESS_DEPRECATED

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/rsa.h>
#include <openssl/bn.h>
#include <openssl/engine.h>

#include <cstdlib>
#include <cstring>

#include "kmodkit/files.hpp"

namespace kmodkit::kmod_builder::signing {
namespace {

// include/linux/module_signature.h
struct ModuleSignature {
  uint8_t algo;        // public-key crypto algorithm [0]
  uint8_t hash;        // digest algorithm [0]
  uint8_t id_type;     // key identifier type [PKEY_ID_PKCS7]
  uint8_t signer_len;  // length of signer's name [0]
  uint8_t key_id_len;  // length of key identifier [0]
  uint8_t pad[3];
  uint32_t sig_len;    // length of signature data, big endian
};
static_assert(sizeof(ModuleSignature) == 12);
constexpr uint8_t kPkeyIdPkcs7 = 2;

// OpenSSL's error queue, drained into one sentence.
std::string openssl_error() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free_all(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

}  // namespace

namespace {

using X509Ptr = std::unique_ptr<X509, void (*)(X509*)>;

// A certificate in PEM or DER; `what` names it in the error (65).
Result<X509Ptr> parse_x509(std::string_view text, const std::string& what) {
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    cert = d2i_X509(nullptr, &p, static_cast<long>(text.size()));
  }
  if (cert == nullptr) return fail(ExitCode::data_err, what + ": not a PEM or DER X.509 certificate: " + openssl_error());
  return X509Ptr(cert, X509_free);
}

Result<X509*> read_certificate(const fs::path& cert_file) {
  auto text = KK_TRY(files::read_file(cert_file, 1 << 20));
  return KK_TRY(parse_x509(text, cert_file.string())).release();
}

std::string der_of(const X509* cert) {
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert, &der);
  std::string out = len > 0 ? std::string(reinterpret_cast<char*>(der), static_cast<size_t>(len)) : "";
  OPENSSL_free(der);
  return out;
}

std::string pem_of(X509* cert) {
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_X509(out.get(), cert) != 1) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(out.get(), &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : "";
}

std::string signer_of(const X509* cert) {
  const X509_NAME* issuer = X509_get_issuer_name(cert);
  const int i = X509_NAME_get_index_by_NID(issuer, NID_commonName, -1);
  if (i < 0) return "";
  const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(issuer, i));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)), static_cast<size_t>(ASN1_STRING_length(cn)));
}

std::string key_id_of(const X509* cert) {
  std::unique_ptr<BIGNUM, void (*)(BIGNUM*)> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr), BN_free);
  std::string bytes(static_cast<size_t>(BN_num_bytes(bn.get())), '\0');
  BN_bn2bin(bn.get(), reinterpret_cast<unsigned char*>(bytes.data()));
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : bytes) {
    if (!out.empty()) out += ':';
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

Certificate describe(X509* cert) { return {der_of(cert), pem_of(cert), signer_of(cert), key_id_of(cert)}; }

}  // namespace

struct Signer::Keys {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  ENGINE* engine = nullptr;  // a token's key signs through it while it is initialised
  bool ephemeral = false;
  ~Keys() {
    EVP_PKEY_free(key);
    X509_free(cert);
    if (engine != nullptr) {
      ENGINE_finish(engine);
      ENGINE_free(engine);
    }
  }
};

namespace {

// A private key in a PKCS#11 token, named by an RFC 7512 URI, through OpenSSL's pkcs11 engine:
// the token's module is the URI's module-path, else p11-kit's proxy, which loads the modules
// p11-kit is configured with (softhsm2, opensc, a cloud KMS's). The PIN is `pin`; a URI that
// carries one is refused, as it would show in arguments and logs.
// The key and the engine it needs go to `key` and `engine` (the caller frees them, the key first).
Result<void> load_token_key(EVP_PKEY*& key, ENGINE*& engine, const std::string& uri, const std::string& pin) {
  if (uri.find("pin-value=") != std::string::npos || uri.find("pin-source=") != std::string::npos) {
    return fail(ExitCode::usage, "--signing-key: the PKCS#11 URI carries a PIN, which would show in arguments and logs: "
                                 "give it in --signing-pin-file or KMODKIT_SIGNING_PIN");
  }
  ERR_clear_error();
  ENGINE* e = ENGINE_by_id("pkcs11");
  if (e == nullptr) {
    return fail(ExitCode::config, "--signing-key " + uri + ": OpenSSL has no pkcs11 engine (Debian: libengine-pkcs11-openssl): " +
                                      openssl_error());
  }
  if (!pin.empty() && ENGINE_ctrl_cmd_string(e, "PIN", pin.c_str(), 0) != 1) {
    ENGINE_free(e);
    return fail(ExitCode::config, "--signing-key " + uri + ": the pkcs11 engine takes no PIN: " + openssl_error());
  }
  if (ENGINE_init(e) != 1) {
    ENGINE_free(e);
    return fail(ExitCode::config, "--signing-key " + uri + ": the pkcs11 engine does not start: " + openssl_error());
  }
  engine = e;
  key = ENGINE_load_private_key(e, uri.c_str(), nullptr, nullptr);
  if (key == nullptr) {
    return fail(ExitCode::config, "--signing-key " + uri + ": no such private key in a token" +
                                      (pin.empty() ? " (no PIN given: --signing-pin-file or KMODKIT_SIGNING_PIN)" : "") + ": " +
                                      openssl_error());
  }
  return {};
}

}  // namespace

Result<std::string> read_pin(const fs::path& pin_file) {
  if (!pin_file.empty()) {
    auto text = KK_TRY_CTX(files::read_file(pin_file, 4096), "--signing-pin-file");
    return text.substr(0, text.find_first_of("\r\n"));
  }
  const char* env = std::getenv("KMODKIT_SIGNING_PIN");
  return std::string(env == nullptr ? "" : env);
}

Signer::Signer(std::unique_ptr<Keys> keys) : keys_(std::move(keys)) {}
Signer::Signer(Signer&&) noexcept = default;
Signer& Signer::operator=(Signer&&) noexcept = default;
Signer::~Signer() = default;

Result<Signer> Signer::load(const fs::path& key_file, const fs::path& cert_file, const std::string& pin) {
  auto keys = std::make_unique<Keys>();
  if (key_file.string().starts_with("pkcs11:")) {
    KK_TRY(load_token_key(keys->key, keys->engine, key_file.string(), pin));
  } else {
    auto key_text = KK_TRY(files::read_file(key_file, 1 << 20));
    ERR_clear_error();
    BioPtr bio(BIO_new_mem_buf(key_text.data(), static_cast<int>(key_text.size())));
    keys->key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    if (keys->key == nullptr) {
      const auto* p = reinterpret_cast<const unsigned char*>(key_text.data());
      keys->key = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(key_text.size()));
    }
    if (keys->key == nullptr) {
      return fail(ExitCode::data_err, key_file.string() + ": not a PEM or DER private key: " + openssl_error());
    }
  }
  keys->cert = KK_TRY(read_certificate(cert_file));
  ERR_clear_error();
  if (X509_check_private_key(keys->cert, keys->key) != 1) {
    ERR_clear_error();
    return fail(ExitCode::config, key_file.string() + " is not the private key of the certificate " + cert_file.string());
  }
  return Signer(std::move(keys));
}

Result<Signer> Signer::ephemeral() {
  auto keys = std::make_unique<Keys>();
  keys->ephemeral = true;
  ERR_clear_error();
  keys->key = EVP_RSA_gen(2048);
  if (keys->key == nullptr) return fail(ExitCode::software, "generating an ephemeral RSA key: " + openssl_error());
  keys->cert = X509_new();
  X509* cert = keys->cert;
  X509_set_version(cert, 2);
  std::unique_ptr<BIGNUM, void (*)(BIGNUM*)> serial(BN_new(), BN_free);
  BN_rand(serial.get(), 64, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert));
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 60L * 60 * 24 * 365 * 10);
  X509_set_pubkey(cert, keys->key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("kmodkit"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("kmodkit ephemeral module signing key"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  // The extensions the kernel's certs/x509.genkey asks for.
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                                   std::pair{NID_key_usage, "digitalSignature"},
                                   std::pair{NID_subject_key_identifier, "hash"},
                                   std::pair{NID_authority_key_identifier, "keyid"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (ext == nullptr || X509_add_ext(cert, ext, -1) != 1) {
      X509_EXTENSION_free(ext);
      return fail(ExitCode::software, "ephemeral certificate extension: " + openssl_error());
    }
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert, keys->key, EVP_sha256()) == 0) {
    return fail(ExitCode::software, "signing the ephemeral certificate: " + openssl_error());
  }
  return Signer(std::move(keys));
}

bool Signer::is_ephemeral() const { return keys_->ephemeral; }

Certificate Signer::certificate() const { return describe(keys_->cert); }

Result<std::string_view> strip_signature(std::string_view module) {
  if (!module.ends_with(kMagic)) return module;
  if (module.size() < kMagic.size() + sizeof(ModuleSignature)) {
    return fail(ExitCode::data_err, "module signature trailer is truncated");
  }
  ModuleSignature info;
  std::memcpy(&info, module.data() + module.size() - kMagic.size() - sizeof info, sizeof info);
  const size_t sig_len = ntohl(info.sig_len);
  const size_t trailer = kMagic.size() + sizeof info + sig_len;
  if (trailer > module.size()) {
    return fail(ExitCode::data_err, "module signature claims " + std::to_string(sig_len) +
                                        " bytes, more than the module has");
  }
  return module.substr(0, module.size() - trailer);
}

Result<Certificate> parse_certificate(std::string_view data, const std::string& what) {
  auto cert = KK_TRY(parse_x509(data, what));
  return describe(cert.get());
}

Result<void> verify(std::string_view module, std::string_view certificate, const std::string& what) {
  if (!module.ends_with(kMagic)) return fail(ExitCode::data_err, "module is not signed");
  const auto content = KK_TRY(strip_signature(module));
  const size_t sig_len = module.size() - content.size() - kMagic.size() - sizeof(ModuleSignature);
  auto cert = KK_TRY(parse_x509(certificate, what));
  ERR_clear_error();
  BioPtr sig(BIO_new_mem_buf(module.data() + content.size(), static_cast<int>(sig_len)));
  std::unique_ptr<CMS_ContentInfo, void (*)(CMS_ContentInfo*)> cms(d2i_CMS_bio(sig.get(), nullptr), CMS_ContentInfo_free);
  if (!cms) return fail(ExitCode::data_err, "module signature is not a CMS structure: " + openssl_error());
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> certs(sk_X509_new_null(), [](STACK_OF(X509)* s) { sk_X509_free(s); });
  sk_X509_push(certs.get(), cert.get());
  BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
  if (CMS_verify(cms.get(), certs.get(), nullptr, data.get(), nullptr, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) != 1) {
    return fail(ExitCode::data_err, "module signature does not match its content or the certificate " + what + ": " +
                                        openssl_error());
  }
  return {};
}

Result<void> verify(std::string_view module, const fs::path& cert_file) {
  return verify(module, KK_TRY(files::read_file(cert_file, 1 << 20)), cert_file.string());
}

Result<std::string> Signer::signature(std::string_view module_in, std::string_view hash) const {
  const auto module = KK_TRY(strip_signature(module_in));
  const EVP_MD* md = hash == "sha256" ? EVP_sha256() : hash == "sha384" ? EVP_sha384() : hash == "sha512" ? EVP_sha512() : nullptr;
  if (md == nullptr) {
    return fail(ExitCode::usage, "hash '" + std::string(hash) + "' is not one of sha256, sha384, sha512");
  }
  ERR_clear_error();
  BioPtr data(BIO_new_mem_buf(module.data(), static_cast<int>(module.size())));
  // As scripts/sign-file.c: no certificates, binary content, detached, no S/MIME
  // capabilities and no signed attributes, so the signature is a function of key and module.
  constexpr unsigned flags = CMS_NOCERTS | CMS_PARTIAL | CMS_BINARY | CMS_DETACHED | CMS_STREAM;
  std::unique_ptr<CMS_ContentInfo, void (*)(CMS_ContentInfo*)> cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, flags),
                                                                  CMS_ContentInfo_free);
  if (!cms) return fail(ExitCode::software, "CMS_sign: " + openssl_error());
  if (CMS_add1_signer(cms.get(), keys_->cert, keys_->key, md, CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR) ==
      nullptr) {
    return fail(ExitCode::software, "CMS_add1_signer: " + openssl_error());
  }
  if (CMS_final(cms.get(), data.get(), nullptr, CMS_NOCERTS | CMS_BINARY) != 1) {
    return fail(ExitCode::software, "CMS_final: " + openssl_error());
  }
  BioPtr out(BIO_new(BIO_s_mem()));
  if (i2d_CMS_bio_stream(out.get(), cms.get(), nullptr, 0) != 1) {
    return fail(ExitCode::software, "i2d_CMS_bio_stream: " + openssl_error());
  }
  char* sig = nullptr;
  const long sig_len = BIO_get_mem_data(out.get(), &sig);
  return std::string(sig, static_cast<size_t>(sig_len));
}

Result<std::string> attach(std::string_view module_in, std::string_view signature) {
  const auto module = KK_TRY(strip_signature(module_in));
  ModuleSignature info{};
  info.id_type = kPkeyIdPkcs7;
  info.sig_len = htonl(static_cast<uint32_t>(signature.size()));
  std::string signed_module;
  signed_module.reserve(module.size() + signature.size() + sizeof info + kMagic.size());
  signed_module.append(module);
  signed_module.append(signature);
  signed_module.append(reinterpret_cast<const char*>(&info), sizeof info);
  signed_module.append(kMagic);
  return signed_module;
}

Result<std::string> Signer::sign(std::string_view module, std::string_view hash) const {
  return attach(module, KK_TRY(signature(module, hash)));
}

Result<std::string> signature_hash(std::string_view signature) {
  ERR_clear_error();
  BioPtr sig(BIO_new_mem_buf(signature.data(), static_cast<int>(signature.size())));
  std::unique_ptr<CMS_ContentInfo, void (*)(CMS_ContentInfo*)> cms(d2i_CMS_bio(sig.get(), nullptr), CMS_ContentInfo_free);
  if (!cms) return fail(ExitCode::data_err, "not a CMS signature: " + openssl_error());
  STACK_OF(CMS_SignerInfo)* infos = CMS_get0_SignerInfos(cms.get());
  if (infos == nullptr || sk_CMS_SignerInfo_num(infos) != 1) return fail(ExitCode::data_err, "a module signature has exactly one signer");
  X509_ALGOR* digest = nullptr;
  CMS_SignerInfo_get0_algs(sk_CMS_SignerInfo_value(infos, 0), nullptr, nullptr, &digest, nullptr);
  const ASN1_OBJECT* obj = nullptr;
  X509_ALGOR_get0(&obj, nullptr, nullptr, digest);
  const int nid = OBJ_obj2nid(obj);
  if (nid == NID_sha256) return std::string("sha256");
  if (nid == NID_sha384) return std::string("sha384");
  if (nid == NID_sha512) return std::string("sha512");
  return fail(ExitCode::data_err, std::string("the signature's digest is ") + OBJ_nid2sn(nid) + ", not sha256, sha384 or sha512");
}

}  // namespace kmodkit::kmod_builder::signing
