#pragma once
// `init-modules gc`, and the collection a normal run does with --keep-unused-days: kernel trees
// (and kmod-builder's cache entries for them) that no pod has used for some days are removed.

#include <filesystem>
#include <string>

#include "kmodkit/cli.hpp"
#include "kmodkit/result.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::init {

// Takes the volume's lock (waiting at most lock_timeout_s), clears what interrupted runs left,
// and removes the trees not used for `keep_unused_days` days, never `current_release`; a dry run
// takes no lock and says what would go. Logs a line per release and a summary. Errors: cannot
// create (73) naming what could not be removed, temporary failure (75) when the lock wait ran out.
Result<void> collect_unused(const std::filesystem::path& volume, const std::string& current_release, int keep_unused_days,
                            volume::GcMode mode, double lock_timeout_s);

// The option of a normal run that collects after serving: "" (off) or a number of days.
cli::Option keep_unused_days_option(int& target);

// `init-modules gc [options]`: its options, then collect_unused(). Returns the exit code.
int gc_main(int argc, char** argv);

}  // namespace kmodkit::init
