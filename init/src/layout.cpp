#include "layout.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "kmodkit/files.hpp"
#include "kmodkit/text.hpp"
#include "kmodkit/log.hpp"
#include "kmodkit/subprocess.hpp"
#include "kmodkit/volume.hpp"

namespace kmodkit::init::layout {
namespace {

// What `make -C <headers> M=<dir> modules` reads from a headers tree.
const std::vector<std::vector<std::string>> kRequired = {
    {"Makefile"},
    {".config"},
    {"Module.symvers"},
    {"include/generated/autoconf.h", "include/config/auto.conf"},
    {"scripts/basic/fixdep"},
    {"scripts/mod/modpost"},
};

bool inside(const fs::path& root, const fs::path& p) {
  auto r = root.lexically_normal().string();
  auto s = p.lexically_normal().string();
  return s == r || s.starts_with(r.back() == '/' ? r : r + "/");
}

}  // namespace

std::string relocate_merged_usr(std::string_view path) {
  if (path == "lib" || path.starts_with("lib/")) return "usr/" + std::string(path);
  return std::string(path);
}

bool wanted(std::string_view path) {
  for (std::string_view skip : {"usr/share/doc", "usr/share/man", "usr/share/lintian"}) {
    if (path == skip || (path.starts_with(skip) && path.size() > skip.size() && path[skip.size()] == '/')) {
      return false;
    }
  }
  return true;
}

archive::Policy policy(const fs::path& staged_root) {
  return archive::Policy{staged_root, relocate_merged_usr, wanted};
}

std::string Headers::describe_missing() const {
  std::string out;
  for (const auto& m : missing) out += (out.empty() ? "" : ", ") + m;
  return out;
}

Headers find_headers(const fs::path& root_in, std::string_view kver) {
  Headers h;
  std::error_code ec;
  const fs::path root = fs::canonical(root_in, ec);
  if (ec) return h;
  std::vector<fs::path> candidates;
  const fs::path build = root / volume::modules_dir(kver) / "build";
  if (fs::is_symlink(build, ec) || fs::is_directory(build, ec)) {
    auto target = fs::weakly_canonical(build, ec);
    if (!ec && inside(root, target)) candidates.push_back(target);
  }
  candidates.push_back(root / "usr/src/kernels" / kver);
  candidates.push_back(root / ("usr/src/linux-headers-" + std::string(kver)));
  for (const auto& c : candidates) {
    if (!fs::is_directory(c, ec)) continue;
    h.dir = c.lexically_relative(root).string();
    for (const auto& alternatives : kRequired) {
      bool found = false;
      for (const auto& a : alternatives) found = found || fs::exists(c / a, ec);
      if (!found) h.missing.push_back(alternatives.front());
    }
    return h;
  }
  return h;
}

bool has_modules_tree(const fs::path& root, std::string_view kver) {
  std::error_code ec;
  const fs::path dir = root / volume::modules_dir(kver);
  return fs::exists(dir / "modules.order", ec) || fs::exists(dir / "modules.dep", ec) ||
         fs::is_directory(dir / "kernel", ec);
}

Result<void> finish(const fs::path& root, std::string_view kver, const Headers& headers) {
  auto logger = log::get("init.layout");
  const fs::path mod_dir = root / volume::modules_dir(kver);
  KK_TRY(files::make_dirs(mod_dir));

  // usr/lib/modules/<kver>/build -> the headers, relative so it resolves inside the volume.
  const std::string link_text = archive::relative_link(volume::modules_dir(kver) + "/build", headers.dir);
  std::error_code ec;
  auto current = fs::read_symlink(mod_dir / "build", ec);
  if (ec || current.string() != link_text) {
    KK_TRY(files::replace_symlink(link_text, mod_dir / "build"));
  }

  // Debian's headers Makefile is one line, "include /usr/src/linux-headers-X-common/Makefile":
  // outside the volume that path is the node's, not ours. Make it relative to the Makefile.
  const fs::path makefile = root / headers.dir / "Makefile";
  auto text = files::read_file(makefile, 1 << 20);
  if (!text && text.error().code != ExitCode::no_input) return fail(std::move(text).error());
  if (text) {
    std::string out;
    bool changed = false;
    std::string_view body = *text;
    if (body.ends_with('\n')) body.remove_suffix(1);
    for (std::string_view view : text::split(body, "\n")) {
      std::string line(view);
      if (line.starts_with("include /")) {
        const std::string rel_target = line.substr(9);  // without "include /"
        if (fs::exists(root / rel_target, ec)) {
          line = "include $(dir $(lastword $(MAKEFILE_LIST)))" +
                 archive::relative_link(headers.dir + "/Makefile", rel_target);
          changed = true;
        }
      }
      out += line;
      out += '\n';
    }
    if (changed) {
      logger->debug("{}: made the absolute include relative", makefile.string());
      KK_TRY(files::write_file_atomic(makefile, out));
    }
  }

  // <root>/lib -> usr/lib, so /lib/modules paths (depmod -b, modprobe -d) resolve.
  if (!fs::exists(root / "lib", ec) && !fs::is_symlink(root / "lib", ec)) {
    KK_TRY(files::replace_symlink("usr/lib", root / "lib"));
  }

  if (has_modules_tree(root, kver) && !fs::exists(mod_dir / "modules.dep", ec)) {
    auto outcome = subprocess::run({"depmod", "-b", root.string(), std::string(kver)});
    if (!outcome) {
      logger->warn("modules tree has no modules.dep and depmod cannot run ({}); modprobe on the volume will not find dependencies",
                   outcome.error().message);
    } else if (!outcome->ok()) {
      return fail(ExitCode::software, "depmod -b " + root.string() + " " + std::string(kver) + " " +
                                          outcome->describe() + ": " + outcome->output);
    }
  }
  return {};
}

Result<archive::Stats> measure(const fs::path& root) {
  archive::Stats stats;
  KK_TRY(files::walk_tree(root, [&](const files::WalkEntry& e) -> Result<void> {
    if (S_ISREG(e.st.st_mode)) {
      ++stats.files;
      stats.bytes += static_cast<uint64_t>(e.st.st_size);
    } else if (S_ISDIR(e.st.st_mode)) {
      ++stats.dirs;
    } else if (S_ISLNK(e.st.st_mode)) {
      ++stats.symlinks;
    } else {
      ++stats.skipped;
    }
    return {};
  }));
  return stats;
}

}  // namespace kmodkit::init::layout
