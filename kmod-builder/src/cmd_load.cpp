// `kmod-builder load` and `kmod-builder unload`: their options, then load.cpp's load_modules or
// unload_modules. One main, as the two share the options that find the modules.
#include <string>
#include <vector>

#include "commands.hpp"
#include "load.hpp"

namespace kmodkit::kmod_builder {

int load_main(int argc, char** argv) {
  const std::string sub = argv[0];
  LoadConfig lc;
  const bool load = sub == "load";
  std::vector<cli::Option> options = {
      {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(lc.volume)},
      release_option(lc.kernel_release, "kernel (default: uname -r)"),
      {"recipe", cli::Kind::list, "", "NAME", "recipes whose modules to " + sub + " (default: every one installed)",
       [&](const std::vector<std::string>& v) -> Result<void> {
         lc.recipes = v;
         return {};
       }},
      {"sysfs", cli::Kind::value, "/sys", "DIR", "sysfs of the node", cli::store(lc.sysfs)},
      {"dry-run", cli::Kind::flag, "", "", "say what would be done; change nothing", cli::store_flag(lc.dry_run)},
  };
  if (load) {
    options.push_back({"param", cli::Kind::list, "", "MODULE.KEY=VALUE",
                       "a module parameter, over the recipe's (e.g. igb_uio.intr_mode=legacy); repeatable",
                       [&](const std::vector<std::string>& v) -> Result<void> {
                         lc.params = v;
                         return {};
                       }});
    options.push_back({"securityfs", cli::Kind::value, "/sys/kernel/security", "DIR", "securityfs of the node (lockdown)",
                       cli::store(lc.securityfs)});
    options.push_back({"replace", cli::Kind::flag, "", "", "unload a module loaded from another build first",
                       cli::store_flag(lc.replace)});
  } else {
    options.push_back({"force", cli::Kind::flag, "", "", "unload even while devices are bound", cli::store_flag(lc.force)});
  }
  cli::Program program{
      "kmod-builder " + sub,
      load ? "Loads the installed modules (and their in-tree dependencies) into the running kernel with libkmod."
           : "Unloads the installed modules from the running kernel (a preStop hook).",
      "Exit codes: 0 done, 64 usage, 65 module does not fit the kernel, 66 nothing installed, 75 devices still bound,\n"
      "77 refused by the kernel's signature policy or missing CAP_SYS_MODULE, 78 loaded from another build.",
      options};
  return cli::run_main(program, argc, argv, [&] { return load ? load_modules(lc) : unload_modules(lc); });
}

}  // namespace kmodkit::kmod_builder
