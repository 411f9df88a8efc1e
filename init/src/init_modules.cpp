#include "init_modules.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "gc.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/digest.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/progress.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/volume.hpp"
#include "oci.hpp"

namespace kmodkit::init {
namespace {

using clock = std::chrono::steady_clock;

std::string with_commas(uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void log_summary(const volume::Manifest& m, const fs::path& volume, std::string_view how) {
  std::string pkgs;
  for (const auto& p : m.packages) pkgs += (pkgs.empty() ? "" : ", ") + p.name + (p.version.empty() ? "" : " " + p.version);
  log::get("init-modules")->info("kernel {} {} {}: source {} ({}){}; {} files, {} in {:.1f} s", m.kernel_release, how,
                                 volume.string(), m.source, m.location, pkgs.empty() ? "" : ", packages " + pkgs,
                                 with_commas(m.files), progress::format_bytes(m.bytes), m.seconds);
}

Result<void> check_release(std::string_view kver) {
  if (kver.empty() || kver == "." || kver == ".." || kver.find('/') != std::string_view::npos ||
      kver.find_first_of(" \t\n") != std::string_view::npos) {
    return fail(ExitCode::usage, "kernel release '" + std::string(kver) + "' is not a valid release name");
  }
  return {};
}

}  // namespace

Result<void> run(const Config& cfg) {
  const auto start = clock::now();
  auto logger = log::get("init-modules");
  const std::string& kver = cfg.kernel_release;
  KK_TRY(check_release(kver));
  const host::OsInfo os = cfg.os == "auto" ? host::read_os_release(cfg.host_root) : host::os_from_id(cfg.os);
  logger->info("kernel {}, node OS {}{}, volume {}", kver, os.describe(),
               os.origin.empty() ? "" : " (from " + os.origin + ")", cfg.volume.string());

  volume::ModulesVolume volume(cfg.volume);
  std::vector<std::string> answers;
  const bool check_volume = std::find(cfg.sources.begin(), cfg.sources.end(), "volume") != cfg.sources.end();
  if (check_volume) {
    std::string why;
    if (auto m = KK_TRY_CTX(volume.find_tree(kver, &why), "volume " + cfg.volume.string())) {
      logger->info("source volume: complete tree for {} (written {})", kver, m->created);
      log_summary(*m, cfg.volume, "already on");
      return {};
    }
    logger->info("source volume: {}", why);
    answers.push_back("volume: " + why);
  }

  if (cfg.dry_run) {
    for (const auto& name : cfg.sources) {
      const auto* spec = find_source(name);
      if (spec->fetch == nullptr) continue;
      Context ctx{cfg, kver, os, {}};
      auto answer = KK_TRY_CTX(spec->fetch(ctx), "kernel " + kver + ": source " + name);
      logger->info("source {}: {}", name, answer.reason);
      if (answer.found) {
        logger->info("dry run: would lay out kernel {} from source {} ({}) in {}; nothing was written", kver, name,
                     answer.location, cfg.volume.string());
        return {};
      }
      answers.push_back(name + ": " + answer.reason);
    }
  } else {
    KK_TRY_CTX(volume.prepare(), "volume " + cfg.volume.string());
    auto lock = KK_TRY(volume.lock(std::chrono::milliseconds(static_cast<long long>(cfg.lock_timeout_s * 1000))));
    if (check_volume) {
      if (auto m = KK_TRY_CTX(volume.find_tree(kver, nullptr), "volume " + cfg.volume.string())) {
        logger->info("another process laid out {} while this one waited {:.1f} s", kver,
                     static_cast<double>(lock.waited().count()) / 1000.0);
        log_summary(*m, cfg.volume, "already on");
        return {};
      }
    }
    KK_TRY(volume.clear_staging());
    if (!check_volume) {
      if (auto m = volume.complete_tree(kver, nullptr)) {
        logger->info("the volume holds a tree for {} (source {}, written {}); --sources has no 'volume', so a new one "
                     "is built and replaces it whole",
                     kver, m->source, m->created);
      }
    }

    for (const auto& name : cfg.sources) {
      const auto* spec = find_source(name);
      if (spec->fetch == nullptr) continue;
      // A new generation: every tree is built whole in staging, never over the one in place.
      auto staging = KK_TRY(files::StagingDir::create(volume.staging_dir(), kver + "." + name));
      const fs::path root = staging.path() / "root";
      KK_TRY(files::make_dirs(root));
      Context ctx{cfg, kver, os, root};
      auto answer = [&] {
        files::BackgroundSync writeback(root, std::chrono::milliseconds(200));
        return spec->fetch(ctx);
      }();
      // Every failure from here on is reported as what it is when another process removed this
      // run's staging meanwhile (it ignored the lock): not as what the missing files caused.
      auto explain = [&](Error e) { return staging.explain(std::move(e)); };
      if (!answer) return fail(explain(std::move(answer).error()).context("kernel " + kver + ": source " + name));
      if (!answer->found && !staging.intact()) {
        return fail(explain(Error{ExitCode::no_input, answer->reason}).context("kernel " + kver + ": source " + name));
      }
      if (!answer->found) {
        logger->info("source {}: {}", name, answer->reason);
        answers.push_back(name + ": " + answer->reason);
        continue;
      }
      logger->info("source {}: complete tree from {} ({} files, {})", name, answer->location,
                   with_commas(answer->stats.files), progress::format_bytes(answer->stats.bytes));

      KK_TRY_MAP(layout::finish(root, kver, answer->headers), [&](Error e) { return explain(std::move(e)).context("kernel " + kver); });
      const auto held = KK_TRY_MAP(layout::measure(root), explain);

      volume::Manifest m;
      m.kernel_release = kver;
      m.os = os.describe();
      m.source = name;
      m.location = answer->location;
      m.packages = answer->packages;
      m.headers = answer->headers.dir;
      m.modules = layout::has_modules_tree(root, kver) ? volume::modules_dir(kver) : "";
      m.files = held.files;
      m.bytes = held.bytes;
      m.created = text::utc_now_rfc3339();
      m.seconds = std::chrono::duration<double>(clock::now() - start).count();
      // Laid by path after another process took the directory away, the rest went to a new one
      // at that path: never published.
      if (!staging.intact()) return fail(explain(Error{ExitCode::cant_create, "the tree was laid in another directory"}));
      if (auto published = volume.publish(staging.path(), m); !published) {
        Error e = std::move(published).error();
        // Gone from staging and not among the generations: removed, not published.
        std::error_code ec;
        if (!fs::exists(volume.trees_dir() / staging.path().filename(), ec)) e = explain(std::move(e));
        return fail(std::move(e).context("volume " + cfg.volume.string()));
      }
      staging.keep();
      log_summary(m, cfg.volume, "ready in");
      return {};
    }
  }

  std::string list;
  for (const auto& a : answers) list += (list.empty() ? "" : "; ") + a;
  return fail(ExitCode::no_input, "no source has headers for kernel " + kver + ": " + list);
}

namespace {

// A normal run: holds the release's use record (so no gc removes the tree while this run checks
// or lays it), serves the release, then collects with --keep-unused-days when given.
Result<void> serve(const Config& cfg, int keep_unused_days) {
  KK_TRY(check_release(cfg.kernel_release));
  volume::ModulesVolume volume(cfg.volume);
  volume::TreeUse use;
  auto hold = [&] {
    if (cfg.dry_run || use.held()) return;
    // A volume this run cannot write (a found tree needs no writing) only loses the record.
    if (auto held = volume.use(cfg.kernel_release)) {
      use = std::move(*held);
    } else {
      log::get("init-modules")->warn("kernel {}: {}; gc may count the tree as unused", cfg.kernel_release, held.error().message);
    }
  };
  hold();
  KK_TRY(run(cfg));
  hold();  // the first tree on a new volume: there was no .kmodkit to record it in before
  if (keep_unused_days < 0) return {};
  return collect_unused(cfg.volume, cfg.kernel_release, keep_unused_days,
                        cfg.dry_run ? volume::GcMode::dry_run : volume::GcMode::remove, cfg.lock_timeout_s);
}

}  // namespace

int main(int argc, char** argv) {
  // Subcommands (kmod-builder's table, one row so far): `init-modules gc`.
  if (argc > 1 && std::string_view(argv[1]) == "gc") return gc_main(argc - 1, argv + 1);
  Config cfg;
  int keep_unused_days = -1;
  struct utsname uts{};
  ::uname(&uts);
  const std::string machine = uts.machine;
  const std::string default_arch = machine == "x86_64" ? "amd64" : machine == "aarch64" ? "arm64" : machine;
  std::vector<std::string> archive_locations, archive_digests;
  std::string default_sources;
  for (const auto& s : source_table()) default_sources += (default_sources.empty() ? "" : ",") + std::string(s.name);
  std::string sources_help = "where to look, in order:";
  for (const auto& s : source_table()) sources_help += " " + std::string(s.name) + " (" + std::string(s.help) + ");";
  const long ncpu = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));


  cli::Program program{
      "init-modules",
      "Lays the node kernel's headers and modules tree onto the shared modules volume.",
      "Examples:\n"
      "  init-modules                                   # in the pod: uname -r, /host, /modules\n"
      "  init-modules --kernel-release 6.1.0-18-amd64 --volume ./vol --sources apt\n"
      "  init-modules --sources rpm --rpm-repo /etc/yum.repos.d/redhat.repo   # RHCOS, entitled repos\n"
      "  init-modules --sources archive --archive https://example/kernel-devel.rpm --sha256 <hex>\n"
      "  init-modules --sources oci --image registry.example/openshift/driver-toolkit:4.16\n"
      "  init-modules --keep-unused-days 14             # and remove trees no pod used for 14 days\n"
      "  init-modules gc --keep-unused-days 14          # only that (init-modules gc --help)\n"
      "Exit codes: 0 done, 64 usage, 65 bad data (checksum, signature, malicious archive), 66 no source\n"
      "has the kernel, 69 network, 73 volume not writable, 75 lock wait ran out, 77 a registry refused\n"
      "the pull, 78 configuration (a bad .repo file, an unreadable gpgkey).",
      {
          {"kernel-release", cli::Kind::value, "", "RELEASE", "kernel release to lay out (default: uname -r)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             cfg.kernel_release = v.empty() ? std::string(uts.release) : v.front();
             return {};
           }},
          {"volume", cli::Kind::value, "/modules", "DIR", "the modules volume", cli::store(cfg.volume)},
          {"host-root", cli::Kind::value, "/host", "DIR", "the node's root file system, mounted read-only",
           cli::store(cfg.host_root)},
          {"sysfs", cli::Kind::value, "/sys", "DIR", "sysfs of the node", cli::store(cfg.sysfs)},
          {"os", cli::Kind::value, "auto", "ID",
           "the node's OS ID (debian, ubuntu, rhcos, ...); auto reads the host's os-release", cli::store(cfg.os)},
          {"sources", cli::Kind::list, default_sources, "LIST", sources_help,
           [&](const std::vector<std::string>& v) -> Result<void> {
             for (const auto& name : v) {
               if (find_source(name) == nullptr) {
                 return fail(ExitCode::usage, "--sources: unknown source '" + name + "' (known: " + default_sources + ")");
               }
             }
             if (v.empty()) return fail(ExitCode::usage, "--sources: give at least one source");
             cfg.sources = v;
             return {};
           }},
          {"repo", cli::Kind::list, "", "LINE",
           "an apt repository as a sources.list line, e.g. 'deb http://deb.debian.org/debian bookworm main' "
           "(repeatable; the environment variable separates lines with ';'); default: the image's apt configuration",
           [&](const std::vector<std::string>& v) -> Result<void> {
             for (size_t i = 0; i < v.size(); ++i) {
               auto repos = KK_TRY(apt::parse_one_line(v[i], "--repo #" + std::to_string(i + 1)));
               cfg.repos.insert(cfg.repos.end(), repos.begin(), repos.end());
             }
             return {};
           },
           ';'},
          {"apt-root", cli::Kind::value, "/", "DIR", "where etc/apt/sources.list(.d) is read from", cli::store(cfg.apt_root)},
          {"arch", cli::Kind::value, default_arch, "ARCH", "Debian architecture of the node", cli::store(cfg.arch)},
          {"rpm-repo", cli::Kind::list, "", "FILE",
           "a dnf .repo file (repeatable; the environment variable separates files with ';'); default: the "
           ".repo files of --rpm-root's etc/yum.repos.d",
           [&](const std::vector<std::string>& v) -> Result<void> {
             cfg.rpm_repo_files.assign(v.begin(), v.end());
             return {};
           },
           ';'},
          {"rpm-root", cli::Kind::value, "/", "DIR",
           "where etc/yum.repos.d and etc/dnf/dnf.conf (its [main] gpgcheck) are read from", cli::store(cfg.rpm_root)},
          {"releasever", cli::Kind::value, "", "VERSION",
           "dnf's $releasever (default: the host's os-release RHEL_VERSION, else VERSION_ID)", cli::store(cfg.releasever)},
          {"basearch", cli::Kind::value, machine, "ARCH", "dnf's $basearch, and the packages' architecture",
           cli::store(cfg.basearch)},
          {"archive", cli::Kind::list, "", "PATH|URL",
           "an archive with the tree, paths relative to / (.tar.gz/.xz/.zst, .deb, .rpm); repeatable",
           [&](const std::vector<std::string>& v) -> Result<void> {
             archive_locations = v;
             return {};
           }},
          {"sha256", cli::Kind::list, "", "HEX", "the SHA-256 of each --archive, in the same order",
           [&](const std::vector<std::string>& v) -> Result<void> {
             archive_digests = v;
             if (archive_digests.size() != archive_locations.size()) {
               return fail(ExitCode::usage, "--archive needs one --sha256 each: got " +
                                                std::to_string(archive_locations.size()) + " archives and " +
                                                std::to_string(archive_digests.size()) + " digests");
             }
             for (size_t i = 0; i < v.size(); ++i) {
               if (!digest::is_sha256_hex(v[i])) {
                 return fail(ExitCode::usage, "--sha256: '" + v[i] + "' is not 64 hex digits");
               }
               cfg.archives.push_back({archive_locations[i], v[i]});
             }
             return {};
           }},
          {"image", cli::Kind::list, "", "REF",
           "a container image for the oci source, registry/repository:tag or @sha256:<hex> (repeatable)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             for (const auto& ref : v) KK_TRY(oci::parse_reference(ref));
             cfg.images = v;
             return {};
           }},
          {"image-gpgkey", cli::Kind::list, "", "FILE",
           "an armoured public key that signed the packages of an image's RPM repository "
           "(usr/share/rpm-ostree/extensions, as RHCOS's extensions image has); repeatable, the environment "
           "variable separates files with ';'; default: <host-root>/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release",
           [&](const std::vector<std::string>& v) -> Result<void> {
             cfg.image_gpgkeys.assign(v.begin(), v.end());
             return {};
           },
           ';'},
          {"registry-auth", cli::Kind::value, "", "FILE",
           "a docker config.json with the registries' credentials (auths.<registry>.auth); default: the "
           "kubelet's, <host-root>/var/lib/kubelet/config.json, when readable",
           cli::store(cfg.registry_auth)},
          {"insecure-registry", cli::Kind::list, "", "HOST:PORT",
           "a registry reached over plain HTTP instead of verified HTTPS (repeatable)",
           [&](const std::vector<std::string>& v) -> Result<void> {
             cfg.insecure_registries = v;
             return {};
           }},
          {"dry-run", cli::Kind::flag, "", "", "say what would be done; write nothing", cli::store_flag(cfg.dry_run)},
          keep_unused_days_option(keep_unused_days),
          {"jobs", cli::Kind::value, std::to_string(ncpu), "N", "packages fetched and extracted at once",
           cli::store_integer("jobs", cfg.jobs, 1, 64)},
          {"lock-timeout", cli::Kind::value, "1800", "SECONDS", "how long to wait for another process working on the volume",
           cli::store_seconds("lock-timeout", cfg.lock_timeout_s)},
          {"retries", cli::Kind::value, "4", "N", "download retries after the first attempt",
           cli::store_integer("retries", cfg.http.retries, 0, 100)},
          {"retry-delay", cli::Kind::value, "0.5", "SECONDS", "first pause between download attempts; doubles each time",
           [&](const std::vector<std::string>& v) -> Result<void> {
             cfg.http.backoff = std::chrono::milliseconds(
                 static_cast<long long>(KK_TRY(cli::parse_seconds("retry-delay", v.front())) * 1000));
             return {};
           }},
          {"connect-timeout", cli::Kind::value, "15", "SECONDS", "connection timeout of each download attempt",
           [&](const std::vector<std::string>& v) -> Result<void> {
             const double s = KK_TRY(cli::parse_seconds("connect-timeout", v.front()));
             if (s < 0.001) return fail(ExitCode::usage, "--connect-timeout: '" + v.front() + "' is not more than 0 seconds");
             cfg.http.connect_timeout = std::chrono::milliseconds(static_cast<long long>(s * 1000));
             return {};
           }},
          {"ca-file", cli::Kind::value, "", "FILE", "CA bundle for HTTPS (default: the system's)",
           cli::store(cfg.http.ca_file)},
      }};
  return cli::run_main(program, argc, argv, [&] { return serve(cfg, keep_unused_days); });
}

}  // namespace kmodkit::init
