// `kmod-builder status`: its options, then status.cpp's print_status.
#include "commands.hpp"
#include "status.hpp"

namespace kmodkit::kmod_builder {

int status_main(int argc, char** argv) {
  StatusOptions opt;
  cli::Program program{
      "kmod-builder status",
      "Prints what kmod-builder installed on the modules volume, for which kernel, signed by whom, from which sources.",
      "Examples:\n  kmod-builder status --volume /modules\n  kmod-builder status --json",
      {
          {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(opt.volume)},
          {"kernel-release", cli::Kind::value, "", "RELEASE", "only this kernel (default: every kernel)",
           cli::store(opt.kernel_release)},
          {"json", cli::Kind::flag, "", "", "print JSON instead of text", cli::store_flag(opt.json)},
      }};
  return cli::run_main(program, argc, argv, [&] { return print_status(opt); });
}

}  // namespace kmodkit::kmod_builder
