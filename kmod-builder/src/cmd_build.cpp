// `kmod-builder [build]`: its options, then install.cpp's build_and_install.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "commands.hpp"
#include "install.hpp"

namespace kmodkit::kmod_builder {

int build_main(int argc, char** argv) {
  Config cfg;
  const long ncpu = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  const char* tmp = std::getenv("TMPDIR");
  cli::Program program{
      "kmod-builder",
      "Builds, signs, caches and installs out-of-tree kernel modules (igb_uio, rte_kni, or any recipe) for the "
      "kernel init-modules laid on the modules volume.",
      commands_help() +
          "Examples:\n"
          "  kmod-builder                                         # in the pod: igb_uio for uname -r on /modules\n"
          "  kmod-builder --recipe igb_uio,rte_kni --source rte_kni=/src/dpdk-22.11 \\\n"
          "               --signing-key /secrets/signing_key.pem --signing-cert /secrets/signing_key.x509\n"
          "  kmod-builder --recipe ./mydriver/dkms.conf --kernel-release 6.1.0-18-amd64 --volume ./vol\n"
          "Exit codes: 0 done, 64 usage, 65 build failed on a compiler error or a module does not fit the\n"
          "kernel, 66 headers or sources missing, 70 make failed otherwise, 73 volume not writable,\n"
          "75 lock wait ran out, 78 recipe, key or compiler configuration; 65 also a module whose digest is not the one\n"
          "its --signatures entry signed, 66 also no compiler here and nothing prebuilt fits.",
      {
          release_option(cfg.kernel_release, "kernel to build for (default: uname -r)"),
          {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(cfg.volume)},
          {"recipe", cli::Kind::list, "igb_uio", "RECIPE",
           "what to build: a built-in recipe (igb_uio, rte_kni), a recipe .json, a dkms.conf, or a directory "
           "holding one; repeatable",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (v.empty()) return fail(ExitCode::usage, "--recipe: give at least one recipe");
             cfg.recipes = v;
             return {};
           }},
          {"source", cli::Kind::list, "", "NAME=DIR", "the source tree of a recipe, e.g. rte_kni=/src/dpdk-22.11; repeatable",
           [&](const std::vector<std::string>& v) -> Result<void> {
             for (const auto& item : v) {
               const auto eq = item.find('=');
               if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
                 return fail(ExitCode::usage, "--source: '" + item + "' is not NAME=DIR");
               }
               cfg.sources[item.substr(0, eq)] = item.substr(eq + 1);
             }
             return {};
           }},
          {"signing-key", cli::Kind::value, "", "FILE|URI",
           "private key to sign with, PEM or DER (a mounted Secret), or a PKCS#11 URI (pkcs11:token=...;object=...): "
           "the key stays in its token (an HSM, a cloud KMS's PKCS#11 module, SoftHSM)",
           cli::store(cfg.signing_key)},
          {"signing-cert", cli::Kind::value, "", "FILE", "the key's X.509 certificate, PEM or DER", cli::store(cfg.signing_cert)},
          {"signing-pin-file", cli::Kind::value, "", "FILE",
           "the PKCS#11 token's PIN (a mounted Secret; default: the variable KMODKIT_SIGNING_PIN; never an argument)",
           cli::store(cfg.signing_pin_file)},
          {"signatures", cli::Kind::value, "", "FILE",
           "detached signatures made by kmod-builder sign-detached (a ConfigMap or Secret) instead of a key: each module "
           "built here must have the digest that was signed; with --signing-cert alone, only signatures by that certificate",
           cli::store(cfg.signatures)},
          {"no-sign", cli::Kind::flag, "", "", "install the modules unsigned, for kmod-builder export-unsigned",
           cli::store_flag(cfg.no_sign)},
          {"prebuilt", cli::Kind::value, "", "DIR",
           "prebuilt entries (kmod-builder export --image-dir) to install when one's cache key matches, instead of compiling",
           cli::store(cfg.prebuilt)},
          {"hash", cli::Kind::value, "", "ALGO", "sha256, sha384 or sha512 (default: the kernel's CONFIG_MODULE_SIG_HASH)",
           cli::store(cfg.hash)},
          {"cc", cli::Kind::value, "", "COMPILER", "compiler kbuild uses (default: kbuild's, gcc)", cli::store(cfg.cc)},
          {"allow-compiler-mismatch", cli::Kind::flag, "", "",
           "build even when the compiler's major version differs from the kernel's", cli::store_flag(cfg.allow_compiler_mismatch)},
          {"jobs", cli::Kind::value, std::to_string(ncpu), "N", "make -j",
           cli::store_integer("jobs", cfg.jobs, 1, 1024)},
          {"work-dir", cli::Kind::value, tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "DIR",
           "where private build directories are made (local disk; not the volume)", cli::store(cfg.work_dir)},
          {"lock-timeout", cli::Kind::value, "1800", "SECONDS", "how long to wait for another process working on the volume",
           cli::store_seconds("lock-timeout", cfg.lock_timeout_s)},
          {"build-timeout", cli::Kind::value, "1800", "SECONDS", "how long one make may run",
           cli::store_seconds("build-timeout", cfg.build_timeout_s)},
          {"dry-run", cli::Kind::flag, "", "", "say what would be built and installed; write nothing", cli::store_flag(cfg.dry_run)},
      }};
  return cli::run_main(program, argc, argv, [&]() -> Result<void> {
    // make runs in the kernel tree (-C) and names the build directory with M=, and the compile
    // flags map both paths: a relative --volume or --work-dir (./vol by hand) must not reach them.
    std::error_code ec;
    for (fs::path* dir : {&cfg.volume, &cfg.work_dir}) {
      const fs::path absolute = fs::absolute(*dir, ec);
      fs::path normal = absolute.lexically_normal();
      if (!normal.has_filename() && normal != normal.root_path()) normal = normal.parent_path();  // "vol/"
      if (!ec) *dir = normal;
    }
    return build_and_install(cfg);
  });
}

}  // namespace kmodkit::kmod_builder
