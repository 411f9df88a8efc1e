// seed-data's process entry point: the options, then one call.
#include "kmodkit/cli.hpp"
#include "seed.hpp"

namespace kmodkit::seed {
namespace {

// Completes the configuration with the trees of --tree and of the --config file, and seeds.
Result<void> seed_volume(Config cfg, const std::vector<std::string>& tree_specs, const fs::path& config_file) {
  for (const auto& spec : tree_specs) cfg.trees.push_back(KK_TRY(parse_tree(spec)));
  if (!config_file.empty()) KK_TRY(read_config_file(config_file, cfg));
  KK_TRY(run(cfg));
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  fs::path config_file;
  std::vector<std::string> tree_specs;
  cli::Program program{
      "seed-data",
      "Seeds the pod's persistent data volume with the image's default configuration trees once, and merges "
      "the defaults of a new image without touching the operator's edits.",
      "Examples:\n"
      "  seed-data --tree /var/128technology --tree /etc/128t-monitoring      # into /data/var/..., /data/etc/...\n"
      "  seed-data --config /etc/kmodkit/seed.json --image-version 6.2.1 --chown 1000680000:0\n"
      "  seed-data --tree /etc/fw=fw/etc --data ./data --dry-run              # prints add/update/keep/conflict\n"
      "Modes: once (seed the first time, never merge), merge (default: seed, then merge new defaults),\n"
      "force (trust no seed.json; replace differing files, keeping the volume's as <file>.kmodkit-old).\n"
      "Exit codes: 0 done, 64 usage, 65 corrupt seed.json, 66 a default tree is missing or unreadable,\n"
      "73 the volume is read-only or full, 75 another replica held the lock too long, 78 configuration.",
      {
          {"data", cli::Kind::value, "/data", "DIR", "the persistent data volume", cli::store(cfg.data)},
          {"tree", cli::Kind::list, "", "PATH[=DEST]",
           "a default tree of the image, seeded to <data>/PATH (or <data>/DEST); repeatable; the environment "
           "variable separates trees with ';'",
           [&](const std::vector<std::string>& v) -> Result<void> {
             tree_specs = v;
             return {};
           },
           ';'},
          {"config", cli::Kind::value, "", "FILE", "a JSON file: {\"trees\": [{\"from\": PATH, \"to\": DEST}], \"image_version\": V}",
           cli::store(config_file)},
          {"image-version", cli::Kind::value, "", "VERSION", "the image's version, recorded in seed.json", cli::store(cfg.image_version)},
          {"mode", cli::Kind::value, "merge", "MODE", "once, merge or force",
           [&](const std::vector<std::string>& v) -> Result<void> {
             const auto& m = v.front();
             if (m == "once") cfg.mode = Mode::once;
             else if (m == "merge") cfg.mode = Mode::merge;
             else if (m == "force") cfg.mode = Mode::force;
             else return fail(ExitCode::usage, "--mode: '" + m + "' is not once, merge or force");
             return {};
           }},
          {"chown", cli::Kind::value, "", "UID:GID", "owner of what is written (volumes owned by another user, OpenShift's UIDs)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             if (v.empty() || v.front().empty()) return {};
             const auto& t = v.front();
             const auto colon = t.find(':');
             const std::string u = t.substr(0, colon), g = colon == std::string::npos ? "" : t.substr(colon + 1);
             if (!u.empty()) cfg.uid = static_cast<uid_t>(KK_TRY(cli::parse_integer("chown", u, 0, 4294967294LL)));
             if (!g.empty()) cfg.gid = static_cast<gid_t>(KK_TRY(cli::parse_integer("chown", g, 0, 4294967294LL)));
             if (!cfg.uid && !cfg.gid) return fail(ExitCode::usage, "--chown: '" + t + "' is not UID:GID");
             return {};
           }},
          {"dry-run", cli::Kind::flag, "", "", "print the plan (add/update/keep/conflict per file); write nothing",
           cli::store_flag(cfg.dry_run)},
          {"lock-timeout", cli::Kind::value, "600", "SECONDS", "how long to wait for another replica on the same volume",
           cli::store_seconds("lock-timeout", cfg.lock_timeout_s)},
      }};
  return cli::run_main(program, argc, argv, [&] { return seed_volume(cfg, tree_specs, config_file); });
}

}  // namespace kmodkit::seed
