#include "signature.hpp"

#include <openssl/evp.h>

#include <algorithm>

#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::init::signature {
namespace {

constexpr std::string_view kArmourBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

// gpgv reads binary keyrings only: turn an ASCII-armoured key block (RFC 4880 section 6) into
// its binary form with OpenSSL's base64 decoder.
Result<std::string> dearmor(std::string_view text, const std::string& origin) {
  auto begin = text.find(kArmourBegin);
  if (begin == std::string_view::npos) return fail(ExitCode::config, origin + ": not an armoured key block");
  auto body = text.find("\n\n", begin);
  auto end = text.find("-----END PGP PUBLIC KEY BLOCK-----", begin);
  if (body == std::string_view::npos || end == std::string_view::npos || body > end) {
    return fail(ExitCode::config, origin + ": malformed armoured key block");
  }
  std::string b64;
  for (auto line : text::split(text.substr(body + 2, end - body - 2), "\n")) {
    line = text::trim(line);
    if (line.empty() || line.front() == '=') continue;  // the CRC-24 line
    b64 += line;
  }
  std::string out(b64.size() / 4 * 3 + 3, '\0');
  EVP_ENCODE_CTX* ctx = EVP_ENCODE_CTX_new();
  int n1 = 0, n2 = 0;
  EVP_DecodeInit(ctx);
  int rc = EVP_DecodeUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &n1,
                            reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  int rc2 = EVP_DecodeFinal(ctx, reinterpret_cast<unsigned char*>(out.data()) + n1, &n2);
  EVP_ENCODE_CTX_free(ctx);
  if (rc < 0 || rc2 < 0) return fail(ExitCode::config, origin + ": key block is not valid base64");
  out.resize(static_cast<size_t>(n1 + n2));
  return out;
}

}  // namespace

std::vector<std::string> keyring_sources(const apt::Repo& repo, const fs::path& apt_root) {
  std::vector<std::string> out;
  if (!repo.signed_by.empty()) {
    if (repo.signed_by.find(kArmourBegin) != std::string::npos) return {repo.signed_by};
    std::string rest = repo.signed_by;
    std::replace(rest.begin(), rest.end(), ',', ' ');
    return text::split_items(rest, ' ');
  }
  std::error_code ec;
  if (fs::exists(apt_root / "etc/apt/trusted.gpg", ec)) out.push_back((apt_root / "etc/apt/trusted.gpg").string());
  std::vector<std::string> dir;
  for (const auto& e : fs::directory_iterator(apt_root / "etc/apt/trusted.gpg.d", ec)) {
    auto ext = e.path().extension();
    if (ext == ".gpg" || ext == ".asc") dir.push_back(e.path().string());
  }
  std::sort(dir.begin(), dir.end());
  out.insert(out.end(), dir.begin(), dir.end());
  return out;
}

Result<void> verify(const apt::Repo& repo, const fs::path& apt_root, const std::string& what,
                    const std::string& signed_text, const std::optional<std::string>& signature) {
  if (repo.trusted) {
    log::get("init.apt")->warn("{}: not checking the signature: the repository is marked trusted=yes", what);
    return {};
  }
  const auto sources = keyring_sources(repo, apt_root);
  if (sources.empty()) {
    return fail(ExitCode::config, what + ": no keyring to check its signature with (give signed-by=KEYRING, or "
                                         "trusted=yes for a repository that is not signed)");
  }
  return verify_with(sources, what, signed_text, signature);
}

Result<void> verify_with(const std::vector<std::string>& keys, const std::string& what,
                         const std::string& signed_data, const std::optional<std::string>& signature) {
  if (keys.empty()) return fail(ExitCode::config, what + ": no key to check its signature with");
  auto tmp = KK_TRY(files::StagingDir::create(fs::temp_directory_path(), "kmodkit-gpgv"));
  std::vector<std::string> argv = {"gpgv", "--homedir", tmp.path().string(), "--quiet"};
  int n = 0;
  for (const auto& source : keys) {
    std::string binary;
    if (source.find(kArmourBegin) != std::string::npos) {
      binary = KK_TRY(dearmor(source, what + ": inline key"));
    } else {
      auto text = files::read_file(source, 16 << 20);
      if (!text) return fail(ExitCode::config, what + ": keyring " + source + ": " + text.error().message);
      binary = text->find(kArmourBegin) != std::string::npos ? KK_TRY(dearmor(*text, source)) : std::move(*text);
    }
    const fs::path keyring = tmp.path() / ("keyring" + std::to_string(n++) + ".gpg");
    KK_TRY(files::write_file_atomic(keyring, binary));
    argv.insert(argv.end(), {"--keyring", keyring.string()});
  }
  const fs::path data_file = tmp.path() / "signed";
  KK_TRY(files::write_file_atomic(data_file, signed_data));
  if (signature) {
    const fs::path sig_file = tmp.path() / "signature";
    KK_TRY(files::write_file_atomic(sig_file, *signature));
    argv.push_back(sig_file.string());
  }
  argv.push_back(data_file.string());
  auto outcome = subprocess::run(argv, {.cwd = {}, .env = {}, .timeout = std::chrono::seconds(60)});
  if (!outcome) {
    return fail(ExitCode::config, what + ": gpgv is needed to check the signature: " + outcome.error().message);
  }
  if (!outcome->ok()) {
    std::string detail = outcome->output;
    while (!detail.empty() && detail.back() == '\n') detail.pop_back();
    if (auto nl = detail.rfind('\n'); nl != std::string::npos) detail = detail.substr(nl + 1);
    return fail(ExitCode::data_err, what + ": the signature does not verify with " + std::to_string(keys.size()) +
                                        " keyring(s): " + detail);
  }
  log::get("init.signature")->debug("{}: signature good", what);
  return {};
}

}  // namespace kmodkit::init::signature
