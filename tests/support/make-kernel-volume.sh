#!/usr/bin/env bash
# Lays the fixture repository's kernel headers onto a modules volume with the real
# init-modules, for the kmod-builder tests (they copy it):
#   make-kernel-volume.sh INIT_MODULES APT_REPO_DIR OUT_DIR
# Uses init-modules' archive source on the repository's .deb files, each with its SHA-256.
# Idempotent: a volume that already holds the kernel is left as it is.
set -euo pipefail
init_modules=${1:?usage: make-kernel-volume.sh INIT_MODULES APT_REPO_DIR OUT_DIR}
repo=$(realpath "${2:?}")
out=$(realpath -m "${3:?}")
kver=$(cat "$repo/kernel-release")
mkdir -p "$out"
args=()
for deb in "$repo"/pool/main/*.deb; do
  args+=(--archive "$deb" --sha256 "$(sha256sum "$deb" | cut -d' ' -f1)")
done
KMODKIT_LOG_FORMAT=human "$init_modules" --kernel-release "$kver" --volume "$out" --host-root /nonexistent \
  --sources volume,archive "${args[@]}"
