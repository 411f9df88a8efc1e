// Container image sources: image references, the registry's WWW-Authenticate challenges, manifest
// documents (indexes and image manifests) and an image config's kernel-version label.
#include <catch2/catch.hpp>

#include <string>

#include "oci.hpp"

using namespace kmodkit;
namespace oci = kmodkit::init::oci;

namespace {

const std::string kDigestA = "sha256:" + std::string(64, 'a');
const std::string kDigestB = "sha256:" + std::string(64, 'b');

}  // namespace

TEST_CASE("an image reference is read as docker pull reads it", "[unit][oci]") {
  auto hub = oci::parse_reference("busybox");
  REQUIRE(hub);
  CHECK(hub->registry == "registry-1.docker.io");
  CHECK(hub->repository == "library/busybox");
  CHECK(hub->tag == "latest");
  auto dtk = oci::parse_reference("quay.io/openshift/driver-toolkit:4.14@" + kDigestA);
  REQUIRE(dtk);
  CHECK(dtk->registry == "quay.io");
  CHECK(dtk->repository == "openshift/driver-toolkit");
  CHECK(dtk->tag == "4.14");
  CHECK(dtk->digest == kDigestA);
  auto bad = oci::parse_reference("quay.io/Upper/case");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ExitCode::usage);
}

TEST_CASE("WWW-Authenticate challenges are parsed as RFC 7235 writes them", "[unit][oci]") {
  // distribution's registry, with a scope and a comma inside a quoted value
  auto one = oci::parse_challenges(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push")");
  REQUIRE(one);
  REQUIRE(one->size() == 1);
  CHECK((*one)[0].scheme == "Bearer");
  CHECK((*one)[0].params.at("realm") == "https://auth.example/token");
  CHECK((*one)[0].params.at("service") == "registry.example");
  CHECK((*one)[0].params.at("scope") == "repository:a/b:pull,push");

  // A realm named inside another parameter's quoted value is not the realm.
  auto hidden = oci::parse_challenges(R"(Bearer service="x,realm=http://evil/", realm="https://good/token")");
  REQUIRE(hidden);
  CHECK((*hidden)[0].params.at("realm") == "https://good/token");

  // Two challenges in one header, names case-insensitive, escapes, spaces around '='.
  auto two = oci::parse_challenges(R"(Basic realm="a \"quoted\" realm", Bearer REALM = "https://t/" , service=reg)");
  REQUIRE(two);
  REQUIRE(two->size() == 2);
  CHECK((*two)[0].scheme == "Basic");
  CHECK((*two)[0].params.at("realm") == "a \"quoted\" realm");
  CHECK((*two)[1].params.at("realm") == "https://t/");
  CHECK((*two)[1].params.at("service") == "reg");

  // A bare scheme, and a token68 credential form.
  auto bare = oci::parse_challenges("Negotiate, Basic");
  REQUIRE(bare);
  CHECK(bare->size() == 2);
  auto t68 = oci::parse_challenges("Negotiate abc+/def==");
  REQUIRE(t68);
  CHECK((*t68)[0].params.at("") == "abc+/def==");

  for (const char* bad : {"", "Bearer realm=\"https://t/", "Bearer service=\"a\", realm=", "Bearer realm=,service=x", "Bearer realm=\"a\" junk", "Bearer\"x\"",
                          "Bearer realm=\"a\", realm=\"b\"", "@"}) {
    auto r = oci::parse_challenges(bad);
    CAPTURE(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
    CHECK(r.error().message.find("WWW-Authenticate") != std::string::npos);
  }
}

TEST_CASE("a manifest is read as an index or an image manifest, and anything else is refused", "[unit][oci]") {
  const std::string index = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + kDigestA + R"(","size":10,
     "platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + kDigestB + R"(","size":11,
     "platform":{"os":"linux","architecture":"amd64"}}]})";
  auto i = oci::parse_manifest(index, "", "index");
  REQUIRE(i);
  CHECK(i->index);
  REQUIRE(i->manifests.size() == 2);
  CHECK(i->manifests[0].platform == "linux/arm64/v8");
  CHECK(i->manifests[1].platform == "linux/amd64");
  CHECK(i->manifests[1].size == 11);

  // Docker schema 2 without mediaType in the body: the Content-Type says what it is.
  const std::string image = R"({"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json",
    "digest":")" + kDigestA + R"(","size":5},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",
    "digest":"sha256:)" + std::string(64, 'B') + R"(","size":7}]})";
  auto m = oci::parse_manifest(image, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8", "m");
  REQUIRE(m);
  CHECK_FALSE(m->index);
  CHECK(m->config.digest == kDigestA);
  REQUIRE(m->layers.size() == 1);
  CHECK(m->layers[0].digest == kDigestB);  // upper-case hex, as some registries write it, normalized
  REQUIRE_FALSE(oci::parse_manifest(image, "", "m"));  // no media type at all

  struct Bad {
    std::string body, why;
  };
  for (const auto& [body, why] : {
           Bad{"[]", "m is not a JSON object"},
           Bad{R"({"mediaType":"application/vnd.oci.image.index.v1+json"})", "index without a list of manifests"},
           Bad{R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]})", "no config or no layers"},
           Bad{R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"md5:x"},"layers":[]})",
               "'md5:x', which is not sha256"},
           Bad{R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":")" + kDigestA +
                   R"("},"layers":[{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kDigestB + R"("}]})",
               "not a tar, tar+gzip or tar+zstd layer"},
           Bad{R"({"mediaType":"application/vnd.docker.distribution.manifest.v1+json"})", "not an OCI or Docker schema 2"},
       }) {
    auto r = oci::parse_manifest(body, "", "m");
    CAPTURE(body);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ExitCode::data_err);
    CHECK_THAT(r.error().message, Catch::Contains(why));
  }
}

TEST_CASE("an image config's kernel-version label is read, and anything else is no label", "[unit][oci]") {
  CHECK(oci::kernel_label(R"({"config":{"Labels":{"kernel-version":"5.14.0-362.8.1.el9_3.x86_64"}}})") ==
        "5.14.0-362.8.1.el9_3.x86_64");
  CHECK(oci::kernel_label(R"({"config":{"Labels":{"kernel-version":5}}})").empty());
  CHECK(oci::kernel_label(R"({"config":{"Labels":null}})").empty());
  CHECK(oci::kernel_label("not json").empty());
}
