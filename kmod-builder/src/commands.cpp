#include "commands.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

namespace kmodkit::kmod_builder {
namespace {

struct Command {
  std::string_view name;       // the word after `kmod-builder`
  std::string_view arguments;  // shown after the name in --help
  std::string_view help;       // one line in --help
  int (*run)(int argc, char** argv);
};

// The subcommands (ninja's tool table, kmod's kmod_cmd). The first is the default: a bare
// `kmod-builder` builds. Rows with the same help are one line in --help ("load|unload").
constexpr Command kCommands[] = {
    {"build", "[options]", "build what is missing and install it (the default)", build_main},
    {"status", "[options]", "what is installed, signed by whom, from which sources", status_main},
    {"load", "", "load the installed modules into the running kernel, or unload them", load_main},
    {"unload", "", "load the installed modules into the running kernel, or unload them", load_main},
    {"bind", "", "bind PCI devices to igb_uio/vfio-pci, or give them back", bind_main},
    {"unbind", "", "bind PCI devices to igb_uio/vfio-pci, or give them back", bind_main},
    {"export", "--image-dir DIR", "copy the installed signed modules into DIR for an image (build --prebuilt)", export_main},
    {"export-unsigned", "--out DIR", "write the installed modules unsigned, for sign-detached", export_unsigned_main},
    {"sign-detached", "--unsigned DIR", "sign them where the key is; write only the signatures (build --signatures)",
     sign_detached_main},
};

// Where the help text of a line of the command list starts (after the two-space indent).
constexpr size_t kHelpColumn = 43;

std::string running_release() {
  struct utsname uts{};
  ::uname(&uts);
  return uts.release;
}

}  // namespace

std::string commands_help() {
  // Names sharing a help line, joined with '|'; the default in brackets, as it may be left out.
  std::vector<std::pair<std::string, const Command*>> lines;
  for (const auto& c : kCommands) {
    const std::string name = &c == &kCommands[0] ? "[" + std::string(c.name) + "]" : std::string(c.name);
    if (!lines.empty() && lines.back().second->help == c.help) {
      lines.back().first += "|" + name;
    } else {
      lines.emplace_back(name, &c);
    }
  }
  std::string out = "Commands:\n";
  for (const auto& [names, c] : lines) {
    std::string synopsis = "kmod-builder " + names + (c->arguments.empty() ? "" : " " + std::string(c->arguments));
    synopsis.resize(std::max(synopsis.size() + 1, kHelpColumn), ' ');
    out += "  " + synopsis + std::string(c->help) + "\n";
  }
  return out;
}

cli::Option release_option(std::string& target, std::string help) {
  return {"kernel-release", cli::Kind::value, "", "RELEASE", std::move(help),
          [&target](const std::vector<std::string>& v) -> Result<void> {
            target = v.empty() ? running_release() : v.front();
            return {};
          }};
}

int main(int argc, char** argv) {
  if (argc > 1) {
    for (const auto& c : kCommands) {
      if (c.name == argv[1]) return c.run(argc - 1, argv + 1);
    }
  }
  return kCommands[0].run(argc, argv);
}

}  // namespace kmodkit::kmod_builder
