#!/usr/bin/env bash
# Checks make-rpm-repo.sh's output with the real tools, so the rpm source's tests stand on a
# fixture that rpm, gpgv and kbuild accept:
#   check-rpm-repo.sh RPM_REPO_DIR
# - rpmkeys --checksig, with the key imported into a temporary rpmdb and a signature required
#   (as dnf's gpgcheck=1 requires it), passes on signed/ and
#   zstd/ and fails on unsigned/;
# - gpgv verifies repodata/repomd.xml.asc of signed/ and zstd/ (and unsigned/ has none);
# - each variant's primary lists a provider of kernel-devel-uname-r = R, and repomd.xml's
#   checksum of primary is the file's sha256;
# - the kernel-devel package of R, extracted with rpm2cpio and cpio, builds a trivial
#   module (`make -C /usr/src/kernels/R M=... modules`) whose vermagic is R.
# Prints one line per check; exits 1 at the first that fails.
set -euo pipefail
repo=$(realpath "${1:?usage: check-rpm-repo.sh RPM_REPO_DIR}")
kver=$(cat "$repo/kernel-release")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "check-rpm-repo: FAIL: $*" >&2; exit 1; }
ok() { echo "check-rpm-repo: ok: $*"; }

# rpm signatures, against the key alone (a fresh rpmdb, not the system's). rpmkeys --checksig
# passes an unsigned package whose digests are right ("digests OK") unless a signature is
# required, which is what gpgcheck=1 means: _pkgverify_level signature.
checksig() { rpmkeys --dbpath "$tmp/rpmdb" --define '_pkgverify_level signature' --checksig "$@"; }
rpm --dbpath "$tmp/rpmdb" --initdb
rpmkeys --dbpath "$tmp/rpmdb" --import "$repo/RPM-GPG-KEY-kmodkit-test"
for r in signed zstd; do
  for p in "$repo/$r"/*.rpm; do
    checksig "$p" >"$tmp/out" 2>&1 || fail "$(cat "$tmp/out")"
    grep -q 'signatures OK' "$tmp/out" || fail "not signed: $(cat "$tmp/out")"
  done
  ok "rpmkeys --checksig passes on $r/*.rpm"
done
for p in "$repo/unsigned"/*.rpm; do
  if checksig "$p" >"$tmp/out" 2>&1; then
    fail "rpmkeys --checksig passes on the unsigned $p: $(cat "$tmp/out")"
  fi
done
ok "rpmkeys --checksig fails on unsigned/*.rpm"

# repomd.xml's detached signature, with gpgv and a keyring of the armoured key alone.
gpg --batch --quiet --homedir "$tmp" --dearmor -o "$tmp/key.gpg" "$repo/RPM-GPG-KEY-kmodkit-test"
for r in signed zstd; do
  gpgv --quiet --keyring "$tmp/key.gpg" "$repo/$r/repodata/repomd.xml.asc" "$repo/$r/repodata/repomd.xml" 2>"$tmp/out" ||
    fail "gpgv rejects $r/repodata/repomd.xml.asc: $(cat "$tmp/out")"
  echo tampered >> "$tmp/repomd.xml" && cat "$repo/$r/repodata/repomd.xml" >> "$tmp/repomd.xml"
  if gpgv --quiet --keyring "$tmp/key.gpg" "$repo/$r/repodata/repomd.xml.asc" "$tmp/repomd.xml" 2>/dev/null; then
    fail "gpgv accepts a changed $r/repodata/repomd.xml"
  fi
  rm "$tmp/repomd.xml"
  ok "gpgv verifies $r/repodata/repomd.xml.asc"
done
[ ! -e "$repo/unsigned/repodata/repomd.xml.asc" ] || fail "unsigned/ has a repomd.xml.asc"

# primary: where repomd.xml says, with the checksum it says, listing R's kernel-devel. createrepo_c
# splits the provide's R at a '-' into ver and rel, so they are joined back for the comparison.
for r in signed unsigned zstd; do
  read -r href sum < <(python3 - "$repo/$r/repodata/repomd.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
ns = {"r": "http://linux.duke.edu/metadata/repo"}
d = ET.parse(sys.argv[1]).find("r:data[@type='primary']", ns)
c = d.find("r:checksum", ns)
assert c.get("type") == "sha256", c.get("type")
print(d.find("r:location", ns).get("href"), c.text)
EOF
)
  primary="$repo/$r/$href"
  [ "$(sha256sum "$primary" | cut -d' ' -f1)" = "$sum" ] || fail "$r: the sha256 of $href is not repomd.xml's"
  case $href in
    *.gz) cat=zcat ;; *.zst) cat=zstdcat ;; *.xz) cat=xzcat ;; *) fail "$r: unexpected primary $href" ;;
  esac
  if [ "$r" = zstd ] && [ "$cat" != zstdcat ]; then fail "zstd: primary is $href"; fi
  $cat "$primary" > "$tmp/primary.xml"
  providers=$(python3 - "$tmp/primary.xml" "$kver" <<'EOF'
import sys, xml.etree.ElementTree as ET
ns = {"c": "http://linux.duke.edu/metadata/common", "rpm": "http://linux.duke.edu/metadata/rpm"}
for p in ET.parse(sys.argv[1]).getroot().findall("c:package", ns):
    for e in p.findall("c:format/rpm:provides/rpm:entry", ns):
        if e.get("name") == "kernel-devel-uname-r" and e.get("flags") == "EQ" \
                and f"{e.get('ver')}-{e.get('rel')}" == sys.argv[2]:
            print(p.find("c:location", ns).get("href"))
EOF
)
  [ "$(echo "$providers" | grep -c .)" = 1 ] || fail "$r: primary has not one provider of kernel-devel-uname-r = $kver: '$providers'"
  grep -q 'name="kernel-devel-uname-r"' "$tmp/primary.xml" || fail "$r: no kernel-devel-uname-r in primary"
  [ "$(grep -c 'name="kernel-devel-uname-r"' "$tmp/primary.xml")" = 2 ] || fail "$r: primary does not hold two kernels"
  ok "$r: primary ($href, sha256 as in repomd.xml) lists $providers as kernel-devel-uname-r = $kver"
done

# The rearranged tree builds a module, with this machine's gcc.
devel_rpm=$(ls "$repo/unsigned"/kernel-devel-"${kver%%-*}"-*.rpm | grep -F -- "-$(r=${kver#*-}; echo "${r//-/.}")." )
mkdir "$tmp/root" && (cd "$tmp/root" && rpm2cpio "$devel_rpm" | cpio -idm --quiet)
mkdir "$tmp/mod"
echo 'obj-m := rpm_fixture_hello.o' > "$tmp/mod/Kbuild"
cat > "$tmp/mod/rpm_fixture_hello.c" <<'EOF'
#include <linux/module.h>
static int __init hello_init(void) { return 0; }
static void __exit hello_exit(void) {}
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
EOF
make -s -C "$tmp/root/usr/src/kernels/$kver" M="$tmp/mod" modules >"$tmp/out" 2>&1 ||
  fail "make modules against the kernel-devel tree: $(tail -20 "$tmp/out")"
vermagic=$(modinfo -F vermagic "$tmp/mod"/*.ko)
[ "${vermagic%% *}" = "$kver" ] || fail "the module's vermagic is '$vermagic', not $kver"
ok "$(basename "$devel_rpm") builds $(basename "$tmp"/mod/*.ko) (vermagic $kver)"
