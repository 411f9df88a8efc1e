#pragma once
// kmod-builder's command line: the subcommand table, and the mains it dispatches to. Each
// subcommand's main (cmd_<name>.cpp) reads its options and calls one library function.

#include <string>

#include "kmodkit/cli.hpp"

namespace kmodkit::kmod_builder {

// The process entry point: `kmod-builder [build] ...`, `kmod-builder status ...`, and so on from
// the table; no subcommand is `build`. Returns the exit code of the subcommand's run.
int main(int argc, char** argv);

// The "Commands:" lines of `kmod-builder --help`, one per row of the table.
std::string commands_help();

// The subcommands' mains: argv[0] is the subcommand (the program for a bare `kmod-builder`), as
// the table passes it, so `load_main` and `bind_main` tell load from unload and bind from unbind.
// Each returns cli::run_main's exit code: 0, 64 for bad usage, or the code of the error its run
// returned.
int build_main(int argc, char** argv);   // cmd_build.cpp
int status_main(int argc, char** argv);  // cmd_status.cpp
int load_main(int argc, char** argv);    // cmd_load.cpp: load and unload
int bind_main(int argc, char** argv);    // cmd_bind.cpp: bind and unbind
int export_main(int argc, char** argv);           // cmd_export.cpp
int export_unsigned_main(int argc, char** argv);  // cmd_export.cpp
int sign_detached_main(int argc, char** argv);    // cmd_export.cpp

// The --kernel-release option of build, load and unload: stores the value given, or the running
// kernel's release (uname -r) when none is; `help` is its help text. Never fails.
cli::Option release_option(std::string& target, std::string help);

}  // namespace kmodkit::kmod_builder
