#!/usr/bin/env python3
"""The rendered pod seeds the firewall's rules from the rules ConfigMap, for real.

  seed_rules.py --seed-data BINARY OVERLAY...

For each overlay: render it, lay out in a temporary directory the volumes of the pod as the
kubelet makes them (a ConfigMap volume as its atomic writer does: `..<timestamp>/<key>`,
`..data -> ..<timestamp>`, `<key> -> ..data/<key>`; the data volume an empty directory), run the
real seed-data binary with the seed-data container's rendered environment, each absolute path in
it taken to where that container's volume mounts put it, and check where the firewall
container's rules path leads: a regular file with the ConfigMap's rules, and none of the
ConfigMap volume's `..` entries on the data volume. Then update the ConfigMap as the kubelet
does (a new timestamp directory, `..data` swapped by a rename) and run seed-data again, as a
restarted pod would: the new rules; and once more after an operator's edit on the volume: the
edit kept, the new rules beside it as firewall.rules.kmodkit-new.

Exit codes: 0 every overlay passes, 1 one does not, 125 skipped (no kubectl).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SKIP = 125


class Failed(Exception):
    pass


def render(overlay):
    r = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failed(f"kubectl kustomize {overlay} failed: {r.stderr.strip()}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def image_name(image):
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def the_container(spec, image):
    # The image's main job: a container that runs a subcommand (firewall preflight) is not it.
    found = [c for g in ("initContainers", "containers") for c in spec.get(g) or []
             if image_name(c.get("image", "")) == image and not (c.get("args") or [""])[0][:1].isalpha()]
    if len(found) != 1:
        raise Failed(f"the pod has {len(found)} {image} containers, not one")
    return found[0]


class Kubelet:
    """The pod's volumes under a temporary directory, made and updated as the kubelet does."""

    def __init__(self, root, spec, configmaps):
        self.root = root
        self.configmaps = configmaps
        self.volumes = {v["name"]: v for v in spec.get("volumes") or []}
        self.versions = 0

    def volume_dir(self, name):
        return self.root / "volumes" / name

    def mount_all(self, claim_templates):
        for name in list(self.volumes) + claim_templates:
            self.volume_dir(name).mkdir(parents=True, exist_ok=True)
        for name, v in self.volumes.items():
            if "configMap" in v:
                self.write_configmap(name)

    def configmap_files(self, name):
        """{path in the volume: content} as the kubelet projects the ConfigMap (its items, or every key)."""
        source = self.volumes[name]["configMap"]
        data = self.configmaps.get(source["name"])
        if data is None:
            raise Failed(f"volume {name} names ConfigMap {source['name']}, which the overlay does not render")
        items = source.get("items")
        return {i["path"]: data[i["key"]] for i in items} if items else dict(data)

    def write_configmap(self, name):
        """One atomic update of a ConfigMap volume, as the kubelet's atomic writer does it
        (k8s.io/kubernetes/pkg/volume/util/atomic_writer.go): the files in a new `..<timestamp>`
        directory, a `..data_tmp` link to it renamed over `..data`, a `<key> -> ..data/<key>`
        link for each new key, and the old directory removed."""
        d = self.volume_dir(name)
        self.versions += 1
        stamp = d / f"..2026_12_04_20_00_00.{self.versions:09d}"
        old = os.readlink(d / "..data") if (d / "..data").is_symlink() else None
        stamp.mkdir()
        for path, content in self.configmap_files(name).items():
            (stamp / path).parent.mkdir(parents=True, exist_ok=True)
            (stamp / path).write_text(content)
        os.symlink(stamp.name, d / "..data_tmp")
        os.rename(d / "..data_tmp", d / "..data")
        for path in self.configmap_files(name):
            top = path.split("/")[0]
            if not (d / top).is_symlink():
                os.symlink(f"..data/{top}", d / top)
        if old:
            shutil.rmtree(d / old)

    def path_in(self, container, path):
        """Where `path` of the container is in the temporary directory: under the volume its
        longest mount prefix names, or else in the container's image, which here is empty."""
        best = None
        for m in container.get("volumeMounts") or []:
            mount = m["mountPath"].rstrip("/")
            if path == mount or path.startswith(mount + "/"):
                if best is None or len(mount) > len(best["mountPath"].rstrip("/")):
                    best = m
        if best is None:
            return self.root / "image" / container["name"] / path.lstrip("/")
        rest = path[len(best["mountPath"].rstrip("/")):].lstrip("/")
        return self.volume_dir(best["name"]) / best.get("subPath", "") / rest


def translated(kubelet, container, value):
    """A rendered value with each absolute path (a ';'-separated item, up to an '=') taken to the
    temporary directory: /data -> .../volumes/data, /etc/d/..data=etc/x -> .../volumes/rules/..data=etc/x."""
    items = []
    for item in value.split(";"):
        if item.startswith("/"):
            path, eq, rest = item.partition("=")
            item = str(kubelet.path_in(container, path)) + eq + rest
        items.append(item)
    return ";".join(items)


def seed(binary, kubelet, container):
    env = {}
    for e in container.get("env") or []:
        if "value" not in e:
            raise Failed(f"seed-data's {e['name']} is not a plain value; this test runs only plain values")
        env[e["name"]] = translated(kubelet, container, str(e["value"]))
    env["KMODKIT_TERMINATION_LOG"] = str(kubelet.root / "termination-log")
    argv = [binary] + [translated(kubelet, container, str(a)) for a in (container.get("command") or [])[1:] + (container.get("args") or [])]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=kubelet.root)
    if r.returncode != 0:
        raise Failed(f"seed-data exited {r.returncode}: {last_sentence(r.stderr)}")
    return r.stdout + r.stderr


def last_sentence(stderr):
    """The last line of stderr: the binary's final sentence (the message of a JSON log line)."""
    last = (stderr.strip().splitlines() or [""])[-1]
    try:
        return json.loads(last)["msg"]
    except (ValueError, KeyError, TypeError):
        return last


def rules_path(firewall):
    for i, a in enumerate(firewall.get("args") or []):
        if a.startswith("--rules="):
            return a.split("=", 1)[1]
        if a == "--rules":
            return firewall["args"][i + 1]
    for e in firewall.get("env") or []:
        if e["name"] == "KMODKIT_RULES":
            return e["value"]
    return "/etc/kmodkit/firewall.rules"  # the firewall's default (firewall/README.md)


def expect_rules(path, content, what):
    if path.is_symlink() or not path.is_file():
        raise Failed(f"{what}: {path} is not a regular file" + (f" (a link to {os.readlink(path)})" if path.is_symlink() else ""))
    if path.read_text() != content:
        raise Failed(f"{what}: {path} holds {path.read_text()!r}, not {content!r}")


def check(overlay, binary):
    objects = render(overlay)
    configmaps = {o["metadata"]["name"]: dict(o.get("data") or {}) for o in objects if o.get("kind") == "ConfigMap"}
    sets = [o for o in objects if o.get("kind") == "StatefulSet"]
    if len(sets) != 1:
        raise Failed(f"renders {len(sets)} StatefulSets, not one")
    spec = sets[0]["spec"]["template"]["spec"]
    seeder, firewall = the_container(spec, "seed-data"), the_container(spec, "firewall")
    claims = [t["metadata"]["name"] for t in sets[0]["spec"].get("volumeClaimTemplates") or []]
    with tempfile.TemporaryDirectory(prefix="kmodkit-seed-rules.") as tmp:
        kubelet = Kubelet(Path(tmp), spec, configmaps)
        kubelet.mount_all(claims)
        rules = rules_path(firewall)
        on_volume = kubelet.path_in(firewall, rules)
        # The ConfigMap whose key the rules file is named after: the defaults it seeds from.
        sources = [n for n, v in kubelet.volumes.items() if "configMap" in v and Path(rules).name in kubelet.configmap_files(n)]
        if len(sources) != 1:
            raise Failed(f"{len(sources)} ConfigMap volumes have a key {Path(rules).name}, not one")
        cm = kubelet.volumes[sources[0]]["configMap"]["name"]

        seed(binary, kubelet, seeder)
        expect_rules(on_volume, configmaps[cm][Path(rules).name], f"first start: the firewall's {rules}")
        for volume in claims + [n for n, v in kubelet.volumes.items() if "configMap" not in v]:
            leaked = [str(p) for p in kubelet.volume_dir(volume).rglob("..*")]
            if leaked:
                raise Failed(f"the ConfigMap volume's own entries were seeded onto volume {volume}: {', '.join(leaked)}")

        # The site changes the ConfigMap; the kubelet swaps ..data; the pod restarts.
        configmaps[cm][Path(rules).name] += "allow tcp from any to any port 22\n"
        kubelet.write_configmap(sources[0])
        seed(binary, kubelet, seeder)
        expect_rules(on_volume, configmaps[cm][Path(rules).name], "after a ConfigMap update")

        # An operator edits the replica's rules, then the ConfigMap changes again: the edit stays.
        edited = on_volume.read_text() + "allow udp from any to any port 53\n"
        on_volume.write_text(edited)
        configmaps[cm][Path(rules).name] += "allow icmp from any to any\n"
        kubelet.write_configmap(sources[0])
        seed(binary, kubelet, seeder)
        expect_rules(on_volume, edited, "after an operator's edit and a ConfigMap update")
        expect_rules(on_volume.with_name(on_volume.name + ".kmodkit-new"), configmaps[cm][Path(rules).name],
                     "the new default beside the operator's edit")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed-data", required=True, type=lambda s: str(Path(s).resolve()), help="the seed-data binary")
    p.add_argument("overlays", nargs="+", type=Path)
    args = p.parse_args()
    if not shutil.which("kubectl"):
        print("seed_rules: skipped: kubectl is not installed (it renders the overlays with kustomize)")
        return SKIP
    failed = 0
    for overlay in args.overlays:
        try:
            check(overlay, args.seed_data)
            print(f"{overlay}: the firewall reads the ConfigMap's rules seeded onto the data volume; updates merge, edits stay")
        except (Failed, subprocess.TimeoutExpired) as e:
            failed += 1
            print(f"{overlay}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
