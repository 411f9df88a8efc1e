#!/usr/bin/env bash
# Builds real dnf repositories of kernel packages for the tests of init-modules' rpm source:
#   make-rpm-repo.sh OUT_DIR [APT_REPO_DIR]
# APT_REPO_DIR (default: OUT_DIR's sibling apt-repo) is make-apt-repo.sh's output: its
# kernel-release R and the Debian packages of R's headers (pool/main), already downloaded.
# Writes, with rpmbuild, rpmsign, gpg and createrepo_c:
#   rpms/                    the packages, unsigned:
#       kernel-devel (R)       Debian's headers rearranged into RHEL's layout: /usr/src/kernels/R as
#                              one self-contained tree; Provides: kernel-devel-uname-r = R
#       kernel-core (R)        /usr/lib/modules/R/modules.* only; Provides: kernel-core-uname-r = R
#       kernel-modules-core (R) modules.order, modules.block and modules.networking of
#                              /usr/lib/modules/R (RHEL 9.2's and Fedora 38's split of the
#                              modules out of kernel-core); Provides: kernel-modules-core-uname-r = R
#       kernel-devel (R2)      an older kernel, 6.1.0-1-amd64, with only a Makefile
#   signed/                  those packages signed, repodata/repomd.xml.asc (detached, armoured)
#   unsigned/                those packages unsigned, no repomd.xml.asc
#   zstd/                    signed/ with every metadata file zstd-compressed, repomd.xml re-signed
#   gnupg/                   the throwaway signing key (no passphrase)
#   RPM-GPG-KEY-kmodkit-test its public key, armoured
#   kmodkit-test.repo        a dnf .repo file for signed/ (see the comment in it for the port)
#   kernel-release           R
#   format                   what this script's output holds, by number: a different one is rebuilt
# Idempotent: a complete OUT_DIR is left as it is. It is built in OUT_DIR.partial and renamed when
# complete, so an interrupted run leaves no half-made repository behind.
set -euo pipefail
out=$(realpath -m "${1:?usage: make-rpm-repo.sh OUT_DIR [APT_REPO_DIR]}")
apt_repo=$(realpath -m "${2:-$(dirname "$out")/apt-repo}")
kver=$(cat "$apt_repo/kernel-release")
old_kver=6.1.0-1-amd64

summary() {
  echo "make-rpm-repo: $out holds kernel-devel, kernel-core and kernel-modules-core for $kver and kernel-devel" \
       "for $old_kver (signed/, unsigned/, zstd/)"
}
format=2
if [ "$(cat "$out/kernel-release" 2>/dev/null)" = "$kver" ] && [ "$(cat "$out/format" 2>/dev/null)" = "$format" ] &&
   [ -f "$out/zstd/repodata/repomd.xml.asc" ]; then
  summary
  exit 0
fi

work="$out.partial"
rm -rf "$work"
mkdir -p "$work"/{stage,rpmbuild,rpms}
start=$SECONDS

# --- 1. The packages -------------------------------------------------------------------------
# RHEL's kernel-devel names are uname -r = VERSION-RELEASE.ARCH (5.14.0-427.el9.x86_64); Debian's
# release has no arch part, so R = 6.1.0-57-amd64 becomes Version 6.1.0, Release 57.amd64 (a
# Release cannot hold '-'). Only the Provides carries R itself, as RHEL's does.
rpm_version() { echo "${1%%-*}"; }
rpm_release() { local r=${1#*-}; echo "${r//-/.}"; }

# Debian splits the headers in three: linux-headers-R (the arch tree: .config, Module.symvers,
# generated headers, a two-line Makefile including the common one), linux-headers-ABI-common (the
# sources' Makefile, arch/ and include/) and linux-kbuild-6.1 (the host programs of scripts/ and
# tools/, which both trees reach by symlinks into /usr/lib). RHEL ships one tree. So: the common
# tree, the arch tree's files over it (its Makefile excepted: the common one is the real top-level
# Makefile, and the overrides of the arch Makefile are set by .kernelvariables, which the common
# Makefile includes, and by include/config/kernel.release), and kbuild's scripts/, tools/ and
# certs/ copied in place of the symlinks.
# Checked on Debian 12 with gcc 12: tests/support/check-rpm-repo.sh extracts the package with
# rpm2cpio and builds a trivial module with `make -C <tree> M=<dir> modules` (gcc-12, as the
# tree's .kernelvariables asks), and the module's vermagic is R.
deb_x="$work/debs"
mkdir -p "$deb_x"
for deb in "$apt_repo"/pool/main/*.deb; do dpkg-deb -x "$deb" "$deb_x"; done
abi=${kver%-amd64}
common="$deb_x/usr/src/linux-headers-$abi-common"
archtree="$deb_x/usr/src/linux-headers-$kver"
kbuild="$deb_x/usr/$(readlink "$common/scripts" | sed -n 's|^\.\./\.\./\(lib/linux-kbuild-[0-9.]*\)/scripts$|\1|p')"
[ -d "$common" ] && [ -d "$archtree" ] && [ -d "$kbuild/scripts" ] || {
  echo "make-rpm-repo: $apt_repo/pool/main lacks the headers, common headers or kbuild of $kver" >&2
  exit 1
}
devel="$work/stage/devel/usr/src/kernels/$kver"
mkdir -p "$devel"
cp -a "$common/." "$devel/"
rm -f "$devel/scripts" "$devel/tools"
(cd "$archtree" && find . ! -type d ! -name Makefile ! -name scripts ! -name tools -print0) |
  (cd "$archtree" && cpio -0pdm --quiet "$devel")
for d in scripts tools certs; do cp -a "$kbuild/$d" "$devel/$d"; done
echo "$kver" > "$devel/include/config/kernel.release"
if broken=$(find "$devel" -xtype l -print -quit) && [ -n "$broken" ]; then
  echo "make-rpm-repo: the rearranged tree has a dangling symlink: $broken" >&2
  exit 1
fi

core="$work/stage/core/usr/lib/modules/$kver"
mkdir -p "$core"
# A kernel without loadable modules: depmod (the real tool) writes modules.dep and the other
# indexes from an empty modules.order and modules.builtin.
: > "$core/modules.order"
: > "$core/modules.builtin"
: > "$core/modules.builtin.modinfo"
# This depmod looks under BASE/lib/modules; RHEL's packages hold /usr/lib/modules (/lib is a link).
ln -s usr/lib "$work/stage/core/lib"
depmod -b "$work/stage/core" "$kver"
rm "$work/stage/core/lib"
# RHEL 9.2 and Fedora 38 moved the modules (and these lists of them) into kernel-modules-core.
modules_core="$work/stage/modules-core/usr/lib/modules/$kver"
mkdir -p "$modules_core"
mv "$core/modules.order" "$modules_core/"
: > "$modules_core/modules.block"
: > "$modules_core/modules.networking"

old_devel="$work/stage/old-devel/usr/src/kernels/$old_kver"
mkdir -p "$old_devel"
printf 'VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\nEXTRAVERSION = -1-amd64\n' > "$old_devel/Makefile"

# spec NAME KVER STAGE_DIR SUMMARY FILES: a spec that copies STAGE_DIR into the buildroot.
spec() {
  local name=$1 kv=$2 stage=$3 summary=$4 files=$5 provides=$6
  cat <<EOF
Name: $name
Version: $(rpm_version "$kv")
Release: $(rpm_release "$kv")
Summary: $summary
License: GPL-2.0-only
BuildArch: x86_64
Provides: $provides = $kv
AutoReqProv: no
# No debuginfo, no strip, no byte-compiling: the payload is copied as it is, and quickly.
%global debug_package %{nil}
%global __os_install_post %{nil}
%global _binary_payload w19.zstdio
%global _wrong_version_format_terminate_build 0

%description
$summary (kmodkit test fixture).

%install
cp -a $stage/. %{buildroot}/

%files
$files
EOF
}
spec kernel-devel "$kver" "$work/stage/devel" "Kernel headers and makefiles for building modules against $kver" \
  "/usr/src/kernels/$kver" kernel-devel-uname-r > "$work/kernel-devel.spec"
spec kernel-core "$kver" "$work/stage/core" "The module indexes of kernel $kver" \
  "/usr/lib/modules/$kver" kernel-core-uname-r > "$work/kernel-core.spec"
spec kernel-modules-core "$kver" "$work/stage/modules-core" "The core modules of kernel $kver" \
  "$(printf '/usr/lib/modules/%s/%s\n' "$kver" modules.order "$kver" modules.block "$kver" modules.networking)" \
  kernel-modules-core-uname-r > "$work/kernel-modules-core.spec"
spec kernel-devel "$old_kver" "$work/stage/old-devel" "Kernel makefile of $old_kver" \
  "/usr/src/kernels/$old_kver" kernel-devel-uname-r > "$work/kernel-devel-old.spec"
for s in kernel-devel kernel-core kernel-modules-core kernel-devel-old; do
  # Debian's R has two '-' (6.1.0-57-amd64), RHEL's one (5.14.0-427.el9.x86_64), and rpmbuild
  # refuses a second one in a Provides' version unless told it is only worth a warning. The
  # provide then carries R verbatim; createrepo_c splits it at the first '-' (ver 6.1.0, rel
  # 57-amd64), so a reader of primary.xml compares ver-rel joined with R, as for RHEL's names.
  rpmbuild --quiet -bb --define "_topdir $work/rpmbuild" --define "_rpmdir $work/rpms" \
    --define '_build_id_links none' --define '_wrong_version_format_terminate_build 0' \
    "$work/$s.spec" 2>&1 | { grep -v "double separator '-'" || true; } >&2
done
find "$work/rpms" -name '*.rpm' -exec mv {} "$work/rpms/" \;
find "$work/rpms" -mindepth 1 -type d -delete

# --- 2. The key and the signatures --------------------------------------------------------------
export GNUPGHOME="$work/gnupg"
mkdir -p -m 700 "$GNUPGHOME"
key_uid='kmodkit test repository <test@kmodkit.invalid>'
gpg --batch --quiet --passphrase '' --quick-gen-key "$key_uid" rsa2048 sign never
gpg --batch --armor --export "$key_uid" > "$work/RPM-GPG-KEY-kmodkit-test"

mkdir -p "$work/unsigned" "$work/signed" "$work/zstd"
cp "$work"/rpms/*.rpm "$work/unsigned/"
cp "$work"/rpms/*.rpm "$work/signed/"
rpmsign --addsign --define "_gpg_name $key_uid" --define "_gpg_path $GNUPGHOME" --define "__gpg $(command -v gpg)" "$work"/signed/*.rpm </dev/null 2>&1 >/dev/null |
  { grep -v 'Could not set GPG_TTY' || true; } >&2
cp "$work"/signed/*.rpm "$work/zstd/"

# --- 3. The repositories --------------------------------------------------------------------------
createrepo_c --quiet "$work/unsigned"
createrepo_c --quiet "$work/signed"
# zstd metadata: createrepo_c makes it itself (--general-compress-type=zstd) where it was built
# with zstd; Debian 12's 0.17.3 was not ("Unknown/Unsupported compression type"), so there the
# gzip'd primary, filelists and other are recompressed with zstd and repomd.xml rewritten: the
# new location (named by its checksum, as createrepo_c names them), checksum and size; the
# open-checksum and open-size, of the uncompressed XML, stay.
if ! createrepo_c --quiet --general-compress-type=zstd "$work/zstd" 2>/dev/null; then
  rm -rf "$work/zstd/repodata" "$work/zstd/.repodata"
  createrepo_c --quiet "$work/zstd"
  python3 - "$work/zstd" <<'PY'
import gzip, hashlib, os, subprocess, sys, xml.etree.ElementTree as ET
repo = sys.argv[1]
ns = "http://linux.duke.edu/metadata/repo"
ET.register_namespace("", ns)
ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
path = os.path.join(repo, "repodata", "repomd.xml")
tree = ET.parse(path)
for data in tree.getroot().findall(f"{{{ns}}}data"):
    if data.get("type") not in ("primary", "filelists", "other"):
        continue
    loc = data.find(f"{{{ns}}}location")
    old = os.path.join(repo, loc.get("href"))
    with gzip.open(old) as f:
        xml = f.read()
    zst = subprocess.run(["zstd", "-q", "-c", "-19"], input=xml, check=True, capture_output=True).stdout
    digest = hashlib.sha256(zst).hexdigest()
    href = f"repodata/{digest}-{data.get('type')}.xml.zst"
    with open(os.path.join(repo, href), "wb") as f:
        f.write(zst)
    os.remove(old)
    loc.set("href", href)
    data.find(f"{{{ns}}}checksum").text = digest
    data.find(f"{{{ns}}}size").text = str(len(zst))
tree.write(path + ".new", xml_declaration=True, encoding="UTF-8")
os.replace(path + ".new", path)
PY
fi
for r in signed zstd; do
  gpg --batch --yes --armor --detach-sign --local-user "$key_uid" \
    -o "$work/$r/repodata/repomd.xml.asc" "$work/$r/repodata/repomd.xml"
done

# --- 4. The .repo file ------------------------------------------------------------------------
cat > "$work/kmodkit-test.repo" <<EOF
# The tests serve OUT_DIR over HTTP on a free port of 127.0.0.1 and replace @PORT@ with it
# (e.g. sed 's/@PORT@/8123/'); the key's path is OUT_DIR's final one.
[kmodkit-test]
name=kmodkit test repository
baseurl=http://127.0.0.1:@PORT@/signed
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=file://$out/RPM-GPG-KEY-kmodkit-test
EOF

# --- 5. Done: the staging trees go, the rest takes OUT_DIR's place ---------------------------------
rm -rf "$work/stage" "$work/debs" "$work/rpmbuild" "$work"/*.spec
echo "$kver" > "$work/kernel-release"
echo "$format" > "$work/format"
gpgconf --kill gpg-agent 2>/dev/null || true
rm -rf "$out"
mv "$work" "$out"
summary
echo "make-rpm-repo: built in $((SECONDS - start)) s"
