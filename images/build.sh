#!/usr/bin/env bash
# Builds kmodkit's four images with buildah, from the repository as it is checked out:
#   images/build.sh [IMAGE ...]       IMAGE: init-modules seed-data kmod-builder firewall (default: all)
# 1. the Debian 12 base (images/build-base.sh; debootstrap, kept once built),
# 2. the build stage, localhost/kmodkit/build:<revision> (the four binaries compiled once),
# 3. each image, localhost/kmodkit/<image>:<version> and :<revision>, with OCI labels
#    (source, revision, version). Layers are cached, so a rebuild of an unchanged tree is quick.
# Environment: KMODKIT_BASE_IMAGE (the base's name), KMODKIT_SOURCE_URL (the source label;
# default: the repository's origin), KMODKIT_IMAGE_TAG (an extra tag for every image).
# Ends by printing each image's size. Needs root (buildah's chroot isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
all=(init-modules seed-data kmod-builder firewall)
images=("$@")
[ "${#images[@]}" -gt 0 ] || images=("${all[@]}")
for i in "${images[@]}"; do
  [ -f "images/$i.Containerfile" ] || { echo "build: no image '$i' (one of: ${all[*]})" >&2; exit 64; }
done

base=${KMODKIT_BASE_IMAGE:-localhost/kmodkit-base:bookworm}
version=$(sed -n 's/^project(kmodkit VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse HEAD)
# A tree with uncommitted changes is not that revision: say so in the tag and the label.
short=${revision:0:12}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then revision="$revision-dirty"; short="$short-dirty"; fi
source_url=${KMODKIT_SOURCE_URL:-$(git remote get-url origin 2>/dev/null || echo "file://$PWD")}
# --force-rm: buildah 1.28 otherwise keeps the working container of each `FROM ${BUILD} AS build`
# stage (a FROM whose image is a build argument) after a successful build.
bud=(buildah bud --isolation chroot --layers --force-rm --quiet --build-arg "BASE=$base")

KMODKIT_BASE_IMAGE=$base images/build-base.sh
build=localhost/kmodkit/build:$short
echo "build: the build stage $build"
"${bud[@]}" -f images/build.Containerfile -t "$build" . >/dev/null
for i in "${images[@]}"; do
  echo "build: localhost/kmodkit/$i:$version"
  tags=(-t "localhost/kmodkit/$i:$version" -t "localhost/kmodkit/$i:$short")
  [ -z "${KMODKIT_IMAGE_TAG:-}" ] || tags+=(-t "localhost/kmodkit/$i:$KMODKIT_IMAGE_TAG")
  "${bud[@]}" --build-arg "BUILD=$build" --label "org.opencontainers.image.source=$source_url" \
    --label "org.opencontainers.image.revision=$revision" --label "org.opencontainers.image.version=$version" \
    -f "images/$i.Containerfile" "${tags[@]}" . >/dev/null
done
for i in "${images[@]}"; do
  printf 'build: %-30s %s\n' "localhost/kmodkit/$i:$short" "$(buildah images --format '{{.Size}}' "localhost/kmodkit/$i:$short" | head -1)"
done
