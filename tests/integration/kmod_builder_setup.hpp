#pragma once
// What kmod-builder's end-to-end cases share: a private volume with the fixture kernel's
// headers, a signing key, the test module's sources, and ways to look at what was built.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"

namespace kmodkit::test {

namespace fs = std::filesystem;

// A private modules volume with the fixture kernel's headers, a signing key, and the test
// module's sources in a writable copy.
struct KmodBuilderSetup {
  TempDir tmp;
  fs::path vol = tmp / "vol";
  std::string kver = test::copy_kernel_volume(vol);
  test::SigningKey key = test::make_signing_key(tmp / "keys", "kmodkit test signing key");
  fs::path hello = tmp / "kmod-hello";
  KmodBuilderSetup() { test::copy_tree(test::support_dir() / "kmod-hello", hello); }

  // The volume, kernel and work directory, then `extra`: no signing option.
  std::vector<std::string> plain_args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> a = {"--volume", vol.string(), "--kernel-release", kver, "--work-dir", tmp.path.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // plain_args with the test key.
  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    auto a = plain_args({"--signing-key", key.key.string(), "--signing-cert", key.cert_pem.string()});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  Run build(std::vector<std::string> extra = {}, const test::Env& env = {}) const {
    return test::run_kmod_builder(args(std::move(extra)), env);
  }
  fs::path installed(const std::string& recipe, const std::string& module) const {
    return vol / "usr/lib/modules" / kver / "extra" / recipe / (module + ".ko");
  }
  fs::path record(const std::string& recipe) const { return vol / ".kmodkit/modules" / kver / (recipe + ".json"); }
};

inline int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

inline std::string modinfo_field(const fs::path& ko, const std::string& field) {
  auto r = subprocess::run({"modinfo", "-F", field, ko.string()});
  REQUIRE((r && r->ok()));
  std::string v = r->output;
  while (!v.empty() && v.back() == '\n') v.pop_back();
  return v;
}

inline size_t cache_entries(const fs::path& vol) {
  if (!fs::exists(vol / ".kmodkit/cache")) return 0;
  return static_cast<size_t>(std::distance(fs::directory_iterator(vol / ".kmodkit/cache"), fs::directory_iterator()));
}


}  // namespace kmodkit::test
