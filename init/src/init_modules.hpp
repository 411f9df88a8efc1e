#pragma once
// init-modules: the node kernel's headers and modules tree on the shared modules volume.

#include "kmodkit/result.hpp"
#include "sources.hpp"

namespace kmodkit::init {

// Makes the volume hold a complete tree for config.kernel_release, from the first source (in
// config.sources order) that has one; see ARCHITECTURE.md for the layout and the guarantees.
// Errors: input missing (66) when no source has the kernel, listing what each answered; the
// first fatal error of a source otherwise (65 bad data, 69 network, 73 volume, 75 lock).
Result<void> run(const Config& config);

// The process entry point: options, logging, run(), exit code.
int main(int argc, char** argv);

}  // namespace kmodkit::init
