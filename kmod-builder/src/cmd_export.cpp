// `kmod-builder export`, `export-unsigned` and `sign-detached`: their options, then prebuilt.cpp's
// export_image_dir and detached.cpp's export_unsigned and sign_detached.
#include <string>
#include <vector>

#include "commands.hpp"
#include "detached.hpp"
#include "prebuilt.hpp"

namespace kmodkit::kmod_builder {
namespace {

// --volume, --kernel-release and --recipe: which installed recipes an export takes.
std::vector<cli::Option> selection(fs::path& volume, std::string& kernel_release, std::vector<std::string>& recipes) {
  return {
      {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(volume)},
      {"kernel-release", cli::Kind::value, "", "RELEASE", "only this kernel (default: every kernel installed)",
       cli::store(kernel_release)},
      {"recipe", cli::Kind::list, "", "NAME", "only these recipes (default: every one installed); repeatable",
       [&recipes](const std::vector<std::string>& v) -> Result<void> {
         recipes = v;
         return {};
       }},
  };
}

}  // namespace

int export_main(int argc, char** argv) {
  ExportImageOptions opt;
  auto options = selection(opt.volume, opt.kernel_release, opt.recipes);
  options.push_back({"image-dir", cli::Kind::value, "", "DIR",
                     "where to write the prebuilt entries (DIR/<cache key>/), for a Containerfile to COPY", cli::store(opt.image_dir)});
  options.push_back({"dry-run", cli::Kind::flag, "", "", "say what would be written; write nothing", cli::store_flag(opt.dry_run)});
  cli::Program program{
      "kmod-builder export",
      "Copies the installed, signed modules with their cache keys into a directory an image can carry; "
      "kmod-builder build --prebuilt DIR installs them without compiling.",
      "Examples:\n"
      "  kmod-builder export --volume ./vol --image-dir ./prebuilt\n"
      "Exit codes: 0 done, 64 usage, 65 an installed module changed since it was installed, 66 nothing installed,\n"
      "73 DIR not writable.",
      options};
  return cli::run_main(program, argc, argv, [&] { return export_image_dir(opt); });
}

int export_unsigned_main(int argc, char** argv) {
  ExportUnsignedOptions opt;
  auto options = selection(opt.volume, opt.kernel_release, opt.recipes);
  options.push_back({"out", cli::Kind::value, "", "DIR", "the directory to write (new, empty, or an earlier export)",
                     cli::store(opt.out)});
  options.push_back({"dry-run", cli::Kind::flag, "", "", "say what would be written; write nothing", cli::store_flag(opt.dry_run)});
  cli::Program program{
      "kmod-builder export-unsigned",
      "Writes the installed modules without their signatures, and unsigned.json listing them, for kmod-builder "
      "sign-detached to sign where the key is.",
      "Examples:\n"
      "  kmod-builder build --no-sign --volume ./vol && kmod-builder export-unsigned --volume ./vol --out ./unsigned\n"
      "Exit codes: 0 done, 64 usage, 65 an installed module changed since it was installed, 66 nothing installed,\n"
      "73 DIR not writable or holding other files.",
      options};
  return cli::run_main(program, argc, argv, [&] { return export_unsigned(opt); });
}

int sign_detached_main(int argc, char** argv) {
  SignDetachedOptions opt;
  cli::Program program{
      "kmod-builder sign-detached",
      "Signs the modules kmod-builder export-unsigned wrote, as the kernel's sign-file does, and writes only the "
      "signatures: a small JSON file for a ConfigMap or Secret, read by kmod-builder build --signatures.",
      "Examples:\n"
      "  kmod-builder sign-detached --unsigned ./unsigned --signing-key key.pem --signing-cert cert.pem --out sigs.json\n"
      "  KMODKIT_SIGNING_PIN_FILE=/run/pin kmod-builder sign-detached --unsigned ./unsigned \\\n"
      "      --signing-key 'pkcs11:token=release;object=modules' --signing-cert cert.pem --out sigs.json\n"
      "Exit codes: 0 done, 64 usage, 65 a module is not the one unsigned.json lists, 66 no unsigned.json,\n"
      "73 FILE not writable, 78 key or token configuration.",
      {
          {"unsigned", cli::Kind::value, "", "DIR", "what kmod-builder export-unsigned wrote", cli::store(opt.unsigned_dir)},
          {"signing-key", cli::Kind::value, "", "FILE|URI", "private key, PEM or DER, or a PKCS#11 URI (pkcs11:token=...;object=...)",
           cli::store(opt.signing_key)},
          {"signing-cert", cli::Kind::value, "", "FILE", "the key's X.509 certificate, PEM or DER", cli::store(opt.signing_cert)},
          {"signing-pin-file", cli::Kind::value, "", "FILE",
           "the PKCS#11 token's PIN (default: the variable KMODKIT_SIGNING_PIN; never an argument)",
           cli::store(opt.signing_pin_file)},
          {"hash", cli::Kind::value, "", "ALGO", "sha256, sha384 or sha512 (default: each module's, from unsigned.json)",
           cli::store(opt.hash)},
          {"out", cli::Kind::value, "", "FILE", "the signatures file to write", cli::store(opt.out)},
          {"dry-run", cli::Kind::flag, "", "", "sign, but write nothing", cli::store_flag(opt.dry_run)},
      }};
  return cli::run_main(program, argc, argv, [&] { return sign_detached(opt); });
}

}  // namespace kmodkit::kmod_builder
