// Recipes (JSON and dkms.conf), compiler versions and vermagic rules of kmod-builder.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <regex>
#include <vector>

#include "helpers.hpp"
#include "kernel.hpp"
#include "kmodkit/subprocess.hpp"
#include "recipe.hpp"

using namespace kmodkit;
using namespace kmodkit::kmod_builder;
using kmodkit::test::TempDir;

TEST_CASE("Debian's dpdk-kmods dkms.conf reads as a recipe", "[unit][recipe]") {
  // The file as Debian's dpdk-kmods-dkms 0~20220829+git-3 ships it.
  const std::string conf =
      "PACKAGE_NAME=\"dpdk-kmods\"\n"
      "PACKAGE_VERSION=\"0~20220829+git\"\n"
      "BUILT_MODULE_NAME[0]=\"igb_uio\"\n"
      "MAKE=\"make -C $kernel_source_dir M=$dkms_tree/$PACKAGE_NAME/$PACKAGE_VERSION/build MODULE_CFLAGS='-fno-PIE' modules\"\n"
      "CLEAN=\"make -C $kernel_source_dir M=$dkms_tree/$PACKAGE_NAME/$PACKAGE_VERSION/build clean\"\n"
      "DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n"
      "AUTOINSTALL=\"YES\"\n";
  auto r = parse_dkms_conf(conf, "dkms.conf", "/src");
  REQUIRE(r);
  CHECK(r->name == "dpdk-kmods");
  CHECK(r->version == "0~20220829+git");
  CHECK(r->modules == std::vector<std::string>{"igb_uio"});
  REQUIRE(r->make_vars.size() == 1);
  CHECK(r->make_vars[0] == std::pair<std::string, std::string>{"MODULE_CFLAGS", "-fno-PIE"});
}

TEST_CASE("dkms.conf: module locations, exclusive kernels, and what is refused", "[unit][recipe]") {
  auto r = parse_dkms_conf("# comment\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=a\n"
                           "BUILT_MODULE_LOCATION[0]=src/\nBUILT_MODULE_NAME[1]=b\nBUILD_EXCLUSIVE_KERNEL=\"^6\\..*\"\n",
                           "x/dkms.conf", "/src");
  REQUIRE(r);
  CHECK(r->modules == std::vector<std::string>{"src/a", "b"});
  CHECK(r->kernel_refusal("6.1.0-56-amd64", "x86_64").empty());
  CHECK_THAT(r->kernel_refusal("5.15.0-1-generic", "x86_64"), Catch::Contains("matching"));

  auto code = parse_dkms_conf("PACKAGE_NAME=foo\nif [ -n x ]; then BUILT_MODULE_NAME[0]=a; fi\n", "y/dkms.conf", "/src");
  REQUIRE_FALSE(code);
  CHECK(code.error().code == ExitCode::config);
  CHECK_THAT(code.error().message, Catch::Contains("y/dkms.conf:2") && Catch::Contains("no shell code"));

  auto script = parse_dkms_conf("PACKAGE_NAME=foo\nPRE_BUILD=\"configure\"\n", "z/dkms.conf", "/src");
  REQUIRE_FALSE(script);
  CHECK_THAT(script.error().message, Catch::Contains("PRE_BUILD"));

  // DKMS would choose MAKE[1] on kernels matching MAKE_MATCH[1]: building with MAKE[0] would differ.
  auto make_match = parse_dkms_conf("PACKAGE_NAME=foo\nMAKE[0]=make\nMAKE[1]='make OLD=1'\nMAKE_MATCH[1]=\"^4\\.\"\n", "mm/dkms.conf", "/src");
  REQUIRE_FALSE(make_match);
  CHECK(make_match.error().code == ExitCode::config);
  CHECK_THAT(make_match.error().message, Catch::Contains("mm/dkms.conf") && Catch::Contains("MAKE_MATCH"));

  auto index = parse_dkms_conf("PACKAGE_NAME=foo\nBUILT_MODULE_NAME[99999999999]=a\n", "i/dkms.conf", "/src");
  REQUIRE_FALSE(index);
  CHECK(index.error().code == ExitCode::config);
  CHECK_THAT(index.error().message, Catch::Contains("i/dkms.conf:2") && Catch::Contains("index out of range"));

  auto quote = parse_dkms_conf("PACKAGE_NAME=\"foo\n", "q/dkms.conf", "/src");
  REQUIRE_FALSE(quote);
  CHECK_THAT(quote.error().message, Catch::Contains("q/dkms.conf:1") && Catch::Contains("unterminated"));

  // Found by fuzzing: bytes that are not UTF-8 in a value made the cache key's canonical JSON
  // throw, and kmod-builder abort. The line is refused instead, and what is read is UTF-8.
  auto latin1 = parse_dkms_conf("PACKAGE_NAME=foo\nMAKE[0]=\"make CFLAGS=-DNAME=\xb9\"\n", "l/dkms.conf", "/src");
  REQUIRE_FALSE(latin1);
  CHECK(latin1.error().code == ExitCode::config);
  CHECK_THAT(latin1.error().message, Catch::Contains("l/dkms.conf:2") && Catch::Contains("not UTF-8"));
  auto utf8 = parse_dkms_conf("PACKAGE_NAME=caf\xc3\xa9\n", "u/dkms.conf", "/src");
  REQUIRE(utf8);
  CHECK_THAT(utf8->canonical(), Catch::Contains("caf\xc3\xa9"));
}

TEST_CASE("a JSON recipe with a number too large for a double is a configuration error, not an exception", "[unit][recipe]") {
  // Found by fuzzing (tests/fuzz/fuzz_recipe.cpp): nlohmann's parser throws out_of_range there.
  auto r = parse_json(R"({"name": "x", "version": 7e7777777777})", "big.json", "/");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == ExitCode::config);
  CHECK_THAT(r.error().message, Catch::Contains("big.json") && Catch::Contains("not valid JSON"));
}


TEST_CASE("BUILD_EXCLUSIVE_KERNEL and BUILD_EXCLUSIVE_ARCH are searched in the release and the arch as DKMS's bash does",
          "[unit][recipe]") {
  struct Case {
    const char* regex;
    const char* release;
  };
  // Anchored and unanchored patterns, POSIX bracket classes, alternation, and what ECMAScript reads
  // otherwise (\d is a plain 'd' in POSIX; a full match is not needed).
  for (const auto& c : {Case{"^6\\.", "6.1.0-57-amd64"}, Case{"^6\\.", "5.10.0-30-amd64"},
                        Case{"^3\\.1[4-9].*|^[4-9].*", "6.1.0-57-amd64"}, Case{"^3\\.1[4-9].*|^[4-9].*", "3.10.0-1160.el7.x86_64"},
                        Case{"amd64", "6.1.0-57-amd64"}, Case{"^(6\\.(1[7-9]|[2-9][0-9])\\.|[7-9]\\.)", "6.1.0-57-amd64"},
                        Case{"^(6\\.(1[7-9]|[2-9][0-9])\\.|[7-9]\\.)", "6.18.1-1-amd64"}, Case{"^[[:digit:]]+\\.1\\.", "6.1.0-57-amd64"},
                        Case{"^\\d", "6.1.0-57-amd64"}, Case{"-rt-", "6.1.0-57-rt-amd64"}, Case{"^6\\.1$", "6.1.0-57-amd64"}}) {
    INFO(c.regex << " on " << c.release);
    auto r = parse_dkms_conf(std::string("PACKAGE_NAME=m\nBUILT_MODULE_NAME[0]=m\nBUILD_EXCLUSIVE_KERNEL=\"") + c.regex + "\"\n",
                             "k/dkms.conf", "/src");
    REQUIRE(r);
    const std::string why = r->kernel_refusal(c.release, "x86_64");
    CHECK(why.empty() == kmodkit::test::bash_regex_matches(c.release, c.regex));
    if (!why.empty()) CHECK_THAT(why, Catch::Contains(c.regex) && Catch::Contains(c.release));
  }
  for (const auto& c : {Case{"x86_64|i.86", "x86_64"}, Case{"^(aarch64|arm64)$", "x86_64"}, Case{"86", "x86_64"},
                        Case{"^(aarch64|arm64)$", "aarch64"}}) {
    INFO(c.regex << " on " << c.release);
    auto r = parse_dkms_conf(std::string("PACKAGE_NAME=m\nBUILT_MODULE_NAME[0]=m\nBUILD_EXCLUSIVE_ARCH=\"") + c.regex + "\"\n",
                             "a/dkms.conf", "/src");
    REQUIRE(r);
    const std::string why = r->kernel_refusal("6.1.0-57-amd64", c.release);
    CHECK(why.empty() == kmodkit::test::bash_regex_matches(c.release, c.regex));
    if (!why.empty()) CHECK_THAT(why, Catch::Contains(c.regex) && Catch::Contains(c.release) && Catch::Contains("arch"));
  }
}

TEST_CASE("a regex that would cost regcomp memory or time without bound is refused before regcomp, naming it",
          "[unit][recipe]") {
  // glibc's regcomp spells repetitions out: each '+' of x+++... doubles what it builds (twenty
  // take 700 MB), x{1,9000} takes 640 MB, "a" with 45 '?' and "+++" takes 1.4 s. Found by the
  // recipe fuzz target: a 148-byte dkms.conf took 2.6 GB, a 150-byte one more than 10 s.
  const std::string nested = "(((((((((a)?)?)?)?)?)?)?)?)?";
  for (const std::string& regex : std::vector<std::string>{
           "M" + std::string(100, '+'), "x++", "a" + std::string(45, '?') + "+++", "[[:alpha:]]{100}{100}",  // stacked
           "((a{1,100}){1,100}){1,20}", "(a|b|c|d){1,200}{1}",                                              // copies
           "x{1,9000}", "(a{9999})", "a{256}",                                                               // counts
           nested}) {                                                                                        // depth
    INFO(regex);
    auto conf = parse_dkms_conf("PACKAGE_NAME=m\nBUILT_MODULE_NAME[0]=m\nBUILD_EXCLUSIVE_ARCH=\"" + regex + "\"\n",
                                "dos/dkms.conf", "/src");
    REQUIRE_FALSE(conf);
    CHECK(conf.error().code == ExitCode::config);
    CHECK_THAT(conf.error().message, Catch::Contains("dos/dkms.conf") && Catch::Contains("BUILD_EXCLUSIVE_ARCH") &&
                                         Catch::Contains("too costly to compile"));
  }
  // What real recipes write still compiles, repetitions and all.
  for (const std::string regex : {"^6\\.(1[7-9]|[2-9][0-9])\\.", "x86_64|i.86", "^[[:digit:]]+\\.[0-9]{1,3}\\.", "a+b*c?",
                                  "(ab){2,8}", "[]a-z]{1,16}", "((a?)?)+", "x{255}", "^(5\\.(1[5-9]|[2-9][0-9])|6\\.)"}) {
    INFO(regex);
    CHECK(parse_dkms_conf("PACKAGE_NAME=m\nBUILT_MODULE_NAME[0]=m\nBUILD_EXCLUSIVE_KERNEL=\"" + regex + "\"\n", "ok/dkms.conf",
                          "/src"));
  }
}

TEST_CASE("a regex that POSIX does not read is a configuration error naming the recipe and the regex", "[unit][recipe]") {
  // Valid ECMAScript, invalid POSIX extended syntax: bash's [[ =~ ]] fails on both.
  for (const std::string regex : {"^6\\.(?:1|2)", "^(6\\.", "[[:digits:]]"}) {
    INFO(regex);
    auto conf = parse_dkms_conf("PACKAGE_NAME=m\nBUILT_MODULE_NAME[0]=m\nBUILD_EXCLUSIVE_KERNEL=\"" + regex + "\"\n",
                                "bad/dkms.conf", "/src");
    REQUIRE_FALSE(conf);
    CHECK(conf.error().code == ExitCode::config);
    CHECK_THAT(conf.error().message, Catch::Contains("bad/dkms.conf") && Catch::Contains("'" + regex + "'") &&
                                         Catch::Contains("BUILD_EXCLUSIVE_KERNEL"));
    TempDir tmp;
    auto json = parse_json(R"({"name": "m", "modules": ["m"], "kernel": {"regex": ")" + std::regex_replace(regex, std::regex(R"(\\)"), R"(\\)") + "\"}}",
                           "bad.json", tmp.path);
    REQUIRE_FALSE(json);
    CHECK(json.error().code == ExitCode::config);
    CHECK_THAT(json.error().message, Catch::Contains("recipe bad.json") && Catch::Contains("'" + regex + "'"));
  }
}

TEST_CASE("the README's JSON recipe, as written there, reads and builds on Debian 12's kernel", "[unit][recipe]") {
  // The ```json block of kmod-builder/README.md with its page-only // comments taken off.
  const std::string readme = test::read_file(test::support_dir() / "../../kmod-builder/README.md");
  const auto begin = readme.find("```json\n");
  REQUIRE(begin != std::string::npos);
  const auto end = readme.find("```", begin + 8);
  const std::string example = std::regex_replace(readme.substr(begin + 8, end - begin - 8), std::regex(R"( +//[^\n]*)"), "");
  TempDir tmp;
  ::setenv("KMODKIT_DPDK_SRC", tmp.path.c_str(), 1);
  auto r = parse_json(example, "README.md", tmp.path);
  ::unsetenv("KMODKIT_DPDK_SRC");
  INFO(example);
  REQUIRE(r);
  CHECK(r->kernel_regex == "^6\\.");
  CHECK(r->kernel_refusal("6.1.0-57-amd64", "x86_64").empty());
  CHECK_THAT(r->kernel_refusal("5.10.0-30-amd64", "x86_64"), Catch::Contains("'^6\\.'"));
}

TEST_CASE("JSON recipes: fields, defaults and errors that name the recipe", "[unit][recipe]") {
  TempDir tmp;
  auto r = parse_json(R"({"name": "m", "source": "src", "modules": ["m"], "make_vars": {"A": "1"},
                          "include_dirs": ["inc"], "kernel": {"min": "5.4", "max": "6.6"},
                          "probes": [{"define": "HAVE_X", "header": "include/linux/x.h", "line": "x"}]})",
                      "r.json", tmp.path);
  REQUIRE(r);
  CHECK(r->source == tmp.path / "src");
  CHECK(r->cflags_var == "KCFLAGS");
  CHECK(r->kernel_refusal("6.1.0-56-amd64", "x86_64").empty());
  CHECK_THAT(r->kernel_refusal("6.8.0-1-generic", "x86_64"), Catch::Contains("up to 6.6"));
  CHECK_THAT(r->kernel_refusal("4.19.0-20-amd64", "x86_64"), Catch::Contains("5.4 and later"));
  // The canonical form (part of the cache key) changes with any field that changes the build.
  auto r2 = parse_json(R"({"name": "m", "source": "src", "modules": ["m"], "make_vars": {"A": "2"},
                           "include_dirs": ["inc"], "probes": [{"define": "HAVE_X", "header": "include/linux/x.h", "line": "x"}]})",
                       "r.json", tmp.path);
  REQUIRE(r2);
  CHECK(r->canonical() != r2->canonical());

  struct Bad {
    const char* json;
    const char* says;
  };
  for (const auto& bad : {Bad{"{", "not valid JSON"}, Bad{R"({"name": "m", "modules": ["m"], "colour": 1})", "unknown field \"colour\""},
                          Bad{R"({"name": "m"})", "no modules"}, Bad{R"({"name": "../x", "modules": ["m"]})", "name"},
                          Bad{R"({"name": "m", "modules": ["m.ko"]})", "without .ko"},
                          Bad{R"({"name": "m", "modules": ["m"], "copy": [{"from": "../etc"}]})", "without .."},
                          Bad{R"({"name": "m", "modules": ["m"], "make_vars": {"M": "/x"}})", "kmod-builder's to set"},
                          Bad{R"({"name": "m", "modules": ["m"], "kernel": {"min": "new"}})", "not a version"}}) {
    INFO(bad.json);
    auto res = parse_json(bad.json, "bad.json", tmp.path);
    REQUIRE_FALSE(res);
    CHECK(res.error().code == ExitCode::config);
    CHECK_THAT(res.error().message, Catch::Contains("recipe bad.json") && Catch::Contains(bad.says));
  }
}

TEST_CASE("the built-in rte_kni recipe asks for its DPDK tree and follows DPDK's meson build", "[unit][recipe]") {
  ::unsetenv("KMODKIT_DPDK_SRC");
  auto missing = load("rte_kni", "");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == ExitCode::no_input);
  CHECK_THAT(missing.error().message, Catch::Contains("KMODKIT_DPDK_SRC") && Catch::Contains("--source"));

  TempDir tmp;
  auto r = load("rte_kni", tmp.path.string());
  REQUIRE(r);
  CHECK(r->source == tmp.path);
  CHECK(r->cflags_var == "MODULE_CFLAGS");
  CHECK(r->directory == "kernel/linux/kni");
  REQUIRE(r->probes.size() == 1);
  CHECK(r->probes[0].define == "HAVE_ARG_TX_QUEUE");

  auto unknown = load("no-such-recipe", "");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == ExitCode::no_input);
  CHECK_THAT(unknown.error().message, Catch::Contains("no-such-recipe") && Catch::Contains("built-in"));
}

TEST_CASE("shell words: quotes and backslashes as the shell reads them", "[unit][recipe]") {
  auto w = split_words(R"(make -C "a b" 'X=-DA="1"' Y=\ z)");
  REQUIRE(w);
  CHECK(*w == std::vector<std::string>{"make", "-C", "a b", "X=-DA=\"1\"", "Y= z"});
}

TEST_CASE("compiler versions from --version and CONFIG_CC_VERSION_TEXT", "[unit][compiler]") {
  auto gcc = parse_compiler("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0");
  REQUIRE(gcc);
  CHECK(gcc->family == "gcc");
  CHECK(gcc->major == 12);
  auto gcc11 = parse_compiler("gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0");
  REQUIRE(gcc11);
  CHECK(gcc11->major == 11);
  auto clang = parse_compiler("Debian clang version 14.0.6");
  REQUIRE(clang);
  CHECK(clang->family == "clang");
  CHECK(clang->major == 14);
  CHECK_FALSE(parse_compiler("cc"));
  auto huge = parse_compiler("gcc 99999999999999.1.0");
  REQUIRE_FALSE(huge);
  CHECK(huge.error().code == ExitCode::data_err);
}

TEST_CASE("vermagic: exact when taken from a module, flags when composed from .config", "[unit][vermagic]") {
  const KernelTree::Vermagic exact{"6.1.0-56-amd64 SMP preempt mod_unload modversions ", "kernel/x.ko", true};
  CHECK(vermagic_mismatch("6.1.0-56-amd64 SMP preempt mod_unload modversions ", exact).empty());
  CHECK_THAT(vermagic_mismatch("6.1.0-55-amd64 SMP preempt mod_unload modversions ", exact),
             Catch::Contains("6.1.0-55-amd64") && Catch::Contains("kernel/x.ko"));
  CHECK_FALSE(vermagic_mismatch("6.1.0-56-amd64 SMP mod_unload modversions ", exact).empty());
  const KernelTree::Vermagic composed{"6.1.0-56-amd64 SMP mod_unload ", ".config", false};
  CHECK(vermagic_mismatch("6.1.0-56-amd64 SMP mod_unload RANDSTRUCT_abc", composed).empty());
  CHECK_FALSE(vermagic_mismatch("6.1.0-56-amd64 mod_unload ", composed).empty());
}
