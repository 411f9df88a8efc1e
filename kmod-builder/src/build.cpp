#include "build.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::kmod_builder {

Result<std::vector<SourceEntry>> list_sources(const Recipe& recipe) {
  std::vector<SourceEntry> out;
  std::vector<CopyItem> items = recipe.copy;
  if (items.empty()) items.push_back({".", "."});
  for (const auto& item : items) {
    const fs::path from = item.from.front() == '/' ? fs::path(item.from) : recipe.source / item.from;
    std::error_code ec;
    const auto st = fs::symlink_status(from, ec);
    if (ec || !fs::exists(st)) {
      return fail(ExitCode::no_input, "recipe " + recipe.name + ": " + from.string() + " is missing from its sources");
    }
    auto add = [&](const fs::path& path, const std::string& rel, const fs::file_status& s) -> Result<void> {
      SourceEntry e;
      e.rel = fs::path(rel).lexically_normal().string();
      e.from = path;
      if (fs::is_symlink(s)) {
        e.type = SourceEntry::symlink;
        e.link = fs::read_symlink(path, ec).string();
      } else if (fs::is_regular_file(s)) {
        e.executable = (s.permissions() & fs::perms::owner_exec) != fs::perms::none;
      } else {
        log::get("kmod-builder")->warn("recipe {}: {} is not a file, directory or symlink; skipped", recipe.name, path.string());
        return {};
      }
      out.push_back(std::move(e));
      return {};
    };
    if (fs::is_directory(st)) {
      fs::recursive_directory_iterator it(from, fs::directory_options::none, ec), end;
      if (ec) return fail(files::errno_error("recipe " + recipe.name + ": cannot read " + from.string(), ec.value(), ExitCode::no_input));
      for (; it != end; it.increment(ec)) {
        if (ec) return fail(files::errno_error("recipe " + recipe.name + ": cannot read " + from.string(), ec.value(), ExitCode::no_input));
        const auto s = it->symlink_status(ec);
        if (fs::is_directory(s)) continue;
        KK_TRY(add(it->path(), (fs::path(item.to) / it->path().lexically_relative(from)).string(), s));
      }
    } else {
      KK_TRY(add(from, item.to, st));
    }
  }
  std::sort(out.begin(), out.end(), [](const SourceEntry& a, const SourceEntry& b) { return a.rel < b.rel; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].rel == out[i - 1].rel) {
      return fail(ExitCode::config, "recipe " + recipe.name + ": two copy items both write " + out[i].rel);
    }
  }
  return out;
}

Result<std::vector<std::string>> run_probes(const Recipe& recipe, const KernelTree& kernel) {
  std::vector<std::string> defines;
  for (const auto& p : recipe.probes) {
    auto header = kernel.find_header(p.header);
    if (!header) {
      return fail(ExitCode::no_input, "recipe " + recipe.name + ": probe " + p.define + " reads " + p.header +
                                          ", which the headers of kernel " + kernel.release + " do not have");
    }
    auto text = KK_TRY(files::read_file(*header));
    bool hit = false;
    for (auto line : text::split(text, "\n")) {
      if (line.find(p.line) != std::string_view::npos && (p.contains.empty() || line.find(p.contains) != std::string_view::npos)) {
        hit = true;
        break;
      }
    }
    log::get("kmod-builder")->debug("probe {} on {}: {}", p.define, header->string(), hit ? "yes" : "no");
    if (hit) defines.push_back(p.define);
  }
  return defines;
}

std::vector<std::string> first_errors(std::string_view log, size_t max_lines) {
  std::vector<std::string> out;
  const auto lines = text::split(log, "\n");
  for (size_t i = 0; i < lines.size() && out.size() < max_lines; ++i) {
    const auto l = lines[i];
    if (l.find("error:") != std::string_view::npos || l.find("Error:") != std::string_view::npos) {
      out.emplace_back(text::trim(l));
    }
  }
  return out;
}

namespace {

// Runs `work`, logging a line every 10 s while it runs (long work says it is alive).
template <typename F>
auto with_heartbeat(const std::string& what, F work) {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  const auto start = std::chrono::steady_clock::now();
  std::thread beat([&] {
    std::unique_lock lock(m);
    while (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; })) {
      log::get("kmod-builder")->info("{}: still building ({:.0f} s)", what,
                                      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  });
  auto result = work();
  {
    std::lock_guard lock(m);
    done = true;
  }
  cv.notify_one();
  beat.join();
  return result;
}

Result<void> copy_sources(const std::vector<SourceEntry>& sources, const fs::path& dir) {
  for (const auto& e : sources) {
    const fs::path to = dir / e.rel;
    KK_TRY(files::make_dirs(to.parent_path()));
    std::error_code ec;
    if (e.type == SourceEntry::symlink) {
      fs::create_symlink(e.link, to, ec);
    } else {
      fs::copy_file(e.from, to, fs::copy_options::overwrite_existing, ec);
      // Sources may be read-only; the build writes beside them, and kbuild may touch them.
      if (!ec) fs::permissions(to, e.executable ? fs::perms(0755) : fs::perms(0644), ec);
    }
    if (ec) return fail(files::errno_error("copying " + e.from.string() + " to " + to.string(), ec.value()));
  }
  return {};
}

}  // namespace

Result<BuildResult> build(const Recipe& recipe, const KernelTree& kernel, const BuildRequest& request,
                          const std::vector<SourceEntry>& sources, const fs::path& dir, std::string* log_out) {
  KK_TRY(copy_sources(sources, dir));
  const fs::path m_dir = (dir / recipe.directory).lexically_normal();
  KK_TRY(files::make_dirs(m_dir));
  // kbuild's external-module build wants a Makefile or Kbuild in M=; DPDK's meson makes an
  // empty Makefile for rte_kni the same way.
  std::error_code ec;
  if (!fs::exists(m_dir / "Makefile", ec) && !fs::exists(m_dir / "Kbuild", ec)) {
    return fail(ExitCode::config, "recipe " + recipe.name + ": " + recipe.directory + " has neither Kbuild nor Makefile");
  }
  if (!fs::exists(m_dir / "Makefile", ec)) KK_TRY(files::write_file_atomic(m_dir / "Makefile", ""));

  std::string flags;
  auto add_flag = [&](const std::string& f) { flags += (flags.empty() ? "" : " ") + f; };
  for (const auto& d : request.defines) add_flag("-D" + d);
  for (const auto& f : recipe.force_includes) add_flag("-include " + (dir / f).lexically_normal().string());
  for (const auto& i : recipe.include_dirs) add_flag("-I" + (dir / i).lexically_normal().string());
  // Reproducible builds: the paths the compiler writes into the module (debug info, __FILE__)
  // name the private build directory as "." and the headers as the node has them, so the same
  // sources, headers and compiler give the same bytes in any directory and on any volume, and a
  // module can be signed where its key is (`kmod-builder sign-detached`). KCFLAGS reaches every
  // compile of the build, the .mod.c files' too.
  std::string prefix_maps = "-ffile-prefix-map=" + dir.lexically_normal().string() + "=.";
  for (const auto& [from, to] : request.prefix_maps) prefix_maps += " -ffile-prefix-map=" + from.string() + "=" + to;

  BuildResult result;
  auto& argv = result.make_argv;
  argv = {"make", "-C", kernel.build.string(), "M=" + m_dir.string(), "-j" + std::to_string(request.jobs)};
  if (!request.cc.empty()) argv.push_back("CC=" + request.cc);
  std::map<std::string, std::string> vars(recipe.make_vars.begin(), recipe.make_vars.end());
  if (!flags.empty()) vars[recipe.cflags_var] += (vars[recipe.cflags_var].empty() ? "" : " ") + flags;
  vars["KCFLAGS"] += (vars["KCFLAGS"].empty() ? "" : " ") + prefix_maps;
  for (const auto& [k, v] : vars) argv.push_back(k + "=" + v);
  argv.push_back("modules");

  subprocess::Options opts;
  opts.timeout = request.timeout;
  opts.env = {{"LC_ALL", "C"}};
  auto outcome = KK_TRY(with_heartbeat(recipe.name, [&] { return subprocess::run(argv, opts); }));
  result.log = outcome.output;
  if (log_out) *log_out = outcome.output;
  if (!outcome.ok()) {
    const auto errors = first_errors(outcome.output);
    std::string what = "recipe " + recipe.name + ": make " + outcome.describe();
    // A header or source the storage could not read (LC_ALL=C: strerror's English) is the
    // volume's failing disk, not the code's error.
    const bool io = outcome.output.find(": Input/output error") != std::string::npos;
    if (!errors.empty()) {
      std::string joined;
      for (const auto& e : errors) joined += (joined.empty() ? "" : " | ") + e;
      return fail(io ? ExitCode::io_err : ExitCode::data_err, what + ": " + joined);
    }
    auto lines = text::split(text::trim(outcome.output), "\n");
    return fail(io ? ExitCode::io_err : ExitCode::software,
                what + (lines.empty() ? "" : ": " + std::string(text::trim(lines.back()))));
  }
  for (const auto& m : recipe.modules) {
    const fs::path ko = m_dir / (m + ".ko");
    if (!fs::is_regular_file(ko, ec)) {
      return fail(ExitCode::config, "recipe " + recipe.name + ": make succeeded but did not produce " + m + ".ko in " +
                                        recipe.directory + " (check the recipe's modules)");
    }
    result.modules.push_back(ko);
  }
  return result;
}

}  // namespace kmodkit::kmod_builder
