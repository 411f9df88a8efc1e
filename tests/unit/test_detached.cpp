// The signatures file's reader (kmod-builder build --signatures) on malformed input: each is a
// data error naming the file, never an exception. The first cases were found by fuzzing
// (tests/fuzz/fuzz_signatures.cpp).
#include <catch2/catch.hpp>

#include "detached.hpp"

using namespace kmodkit;
using kmodkit::kmod_builder::Signatures;

TEST_CASE("a signatures file with fields of the wrong type, or not JSON at all, is a data error naming it", "[unit][signing]") {
  for (const char* text : {R"({"format": 1})", R"({"format": "kmodkit-signatures/1", "certificate": 7})",
                           R"({"format": "kmodkit-signatures/1", "modules": []})", "[]", "", "{", "\xff\xfe",
                           R"({"format": "kmodkit-signatures/1", "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})"}) {
    INFO(text);
    auto s = Signatures::parse(text, "sigs.json");
    REQUIRE_FALSE(s);
    CHECK(s.error().code == ExitCode::data_err);
    CHECK_THAT(s.error().message, Catch::Contains("sigs.json"));
  }
}
