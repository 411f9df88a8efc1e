#include "gc.hpp"

#include <sys/utsname.h>

#include <chrono>

#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"

namespace kmodkit::init {

namespace fs = std::filesystem;

Result<void> collect_unused(const fs::path& volume_dir, const std::string& current_release, int keep_unused_days,
                            volume::GcMode mode, double lock_timeout_s) {
  auto logger = log::get("gc");
  volume::ModulesVolume volume(volume_dir);
  const volume::GcPolicy policy{std::chrono::hours(24) * keep_unused_days, current_release, mode};
  logger->info("{}removing kernel trees of {} not used for {} day{} (keeping {}, which this run serves)",
               mode == volume::GcMode::dry_run ? "dry run: " : "", volume_dir.string(), keep_unused_days,
               keep_unused_days == 1 ? "" : "s", current_release);
  volume::GcReport report;
  if (mode == volume::GcMode::dry_run) {
    report = KK_TRY_CTX(volume.collect_unused(policy), "volume " + volume_dir.string());
    logger->info("dry run: {} kernel(s) would be removed, {} kept, {} would be freed; nothing was removed", report.removed,
                 report.kept, progress::format_bytes(report.bytes));
    return {};
  }
  KK_TRY_CTX(volume.prepare(), "volume " + volume_dir.string());
  auto lock = KK_TRY(volume.lock(std::chrono::milliseconds(static_cast<long long>(lock_timeout_s * 1000))));
  // A gc or publish that was killed left its pieces in staging; they go first.
  KK_TRY(volume.clear_staging());
  report = KK_TRY_CTX(volume.collect_unused(policy), "volume " + volume_dir.string());
  logger->info("{} kernel(s) removed, {} kept, {} freed", report.removed, report.kept, progress::format_bytes(report.bytes));
  return {};
}

cli::Option keep_unused_days_option(int& target) {
  return {"keep-unused-days", cli::Kind::value, "", "N",
          "after serving the kernel, remove the trees (and kmod-builder's cache entries) of kernels no pod used for N "
          "days (0: every one not in use now); off when not given",
          [&target](const std::vector<std::string>& v) -> Result<void> {
            target = v.empty() || v.front().empty() ? -1 : static_cast<int>(KK_TRY(cli::parse_integer("keep-unused-days", v.front(), 0, 36500)));
            return {};
          }};
}

int gc_main(int argc, char** argv) {
  struct utsname uts{};
  ::uname(&uts);
  std::string kver;
  fs::path volume;
  int days = -1;
  bool dry_run = false;
  double lock_timeout_s = 1800;
  cli::Program program{
      "init-modules gc",
      "Removes the kernel trees, and kmod-builder's cache entries for them, that no pod used for N days.",
      "Examples:\n"
      "  init-modules gc --keep-unused-days 14                 # in the pod: /modules, keeping uname -r\n"
      "  init-modules gc --keep-unused-days 0 --volume ./vol --dry-run\n"
      "A tree is never removed while a process holds it (init-modules or kmod-builder running for its\n"
      "kernel), nor the one of --kernel-release.\n"
      "Exit codes: 0 done, 64 usage, 73 volume not writable, 75 lock wait ran out.",
      {
          {"keep-unused-days", cli::Kind::value, "", "N",
           "remove the trees of kernels whose last use is more than N days ago (0: every one not in use now); required",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (v.empty() || v.front().empty()) return fail(ExitCode::usage, "--keep-unused-days: give the number of days");
             days = static_cast<int>(KK_TRY(cli::parse_integer("keep-unused-days", v.front(), 0, 36500)));
             return {};
           }},
          {"kernel-release", cli::Kind::value, "", "RELEASE", "the kernel this node runs, never removed (default: uname -r)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             kver = v.empty() ? std::string(uts.release) : v.front();
             return {};
           }},
          {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(volume)},
          {"dry-run", cli::Kind::flag, "", "", "say what would be removed; remove nothing", cli::store_flag(dry_run)},
          {"lock-timeout", cli::Kind::value, "1800", "SECONDS", "how long to wait for another process working on the volume",
           cli::store_seconds("lock-timeout", lock_timeout_s)},
      }};
  return cli::run_main(program, argc, argv, [&] {
    return collect_unused(volume, kver, days, dry_run ? volume::GcMode::dry_run : volume::GcMode::remove, lock_timeout_s);
  });
}

}  // namespace kmodkit::init
