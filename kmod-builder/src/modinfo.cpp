#include "modinfo.hpp"

#include <libkmod.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace kmodkit::kmod_builder {

Result<ModuleInfo> read_module_info(const std::filesystem::path& ko) {
  // The context's directory is not used for a module opened by path; "/" keeps libkmod from
  // looking at the running kernel's tree.
  std::unique_ptr<kmod_ctx, decltype(&kmod_unref)> ctx(kmod_new("/", nullptr), kmod_unref);
  if (!ctx) return fail(ExitCode::software, "libkmod: cannot create a context");
  kmod_module* raw = nullptr;
  if (int err = kmod_module_new_from_path(ctx.get(), ko.c_str(), &raw); err < 0) {
    return fail(ExitCode::data_err, ko.string() + ": libkmod cannot open it as a module: " + std::strerror(-err));
  }
  std::unique_ptr<kmod_module, decltype(&kmod_module_unref)> mod(raw, kmod_module_unref);
  kmod_list* list = nullptr;
  if (int n = kmod_module_get_info(mod.get(), &list); n < 0) {
    return fail(ExitCode::data_err, ko.string() + ": libkmod cannot read its module info: " + std::strerror(-n));
  }
  std::unique_ptr<kmod_list, decltype(&kmod_module_info_free_list)> infos(list, kmod_module_info_free_list);
  ModuleInfo info;
  info.name = kmod_module_get_name(mod.get());
  for (kmod_list* it = list; it != nullptr; it = kmod_list_next(list, it)) {
    const std::string key = kmod_module_info_get_key(it);
    const char* value = kmod_module_info_get_value(it);
    std::string v = value == nullptr ? "" : value;
    if (key == "vermagic") info.vermagic = v;
    else if (key == "srcversion") info.srcversion = v;
    else if (key == "signer") info.signer = v;
    else if (key == "sig_key") info.sig_key = v;
    else if (key == "sig_hashalgo") info.sig_hashalgo = v;
  }
  if (info.vermagic.empty()) return fail(ExitCode::data_err, ko.string() + ": the module has no vermagic");
  return info;
}

}  // namespace kmodkit::kmod_builder
