#!/usr/bin/env python3
"""Validates kmodkit's deployments offline.

  validate.py [--schemas DIR] OVERLAY             render OVERLAY with `kubectl kustomize`, check it
  validate.py [--schemas DIR] --expect-reject DIR  every fixture in DIR must be rejected, each with
                                                   the message its first line names

Each object is checked strictly against the real API schemas (the Kubernetes 1.32 OpenAPI
document, OpenShift's, and the CRDs), as `kubectl apply --validate=strict` would: an unknown
field is an error. Then the checks no schema makes (volumes, QoS, hugepages, NADs, networks, what
seed-data seeds and the firewall reads) and, given the binaries (--binary), each container's
options and env against its binary: its --help, then a dry run of the binary as the container
would run it.
Every error names the object, the path in it and what is wrong.

Exit codes: 0 valid, 1 invalid, 64 usage, 125 skipped (no schemas folder or no kubectl).
"""

import argparse
import copy
import functools
import gzip
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import jsonschema
import yaml

SKIP = 125  # ctest's SKIP_RETURN_CODE for these tests (ccache's convention)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMAS = REPO.parent / "shared" / "schemas"

# Kubernetes' quantity grammar (k8s.io/apimachinery/pkg/api/resource, the OpenAPI pattern it
# publishes for Quantity); YAML may also give a plain number, which the API server accepts.
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
# Definitions the API server treats as opaque JSON, whatever their schema says.
OPAQUE = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Error(Exception):
    pass


# ---------------------------------------------------------------- schemas

def close(schema):
    """Makes a schema strict the way the API server's field validation is: an object schema that
    neither allows additional properties nor preserves unknown fields is closed; int-or-string
    and nullable are spelled out for jsonschema."""
    if isinstance(schema, list):
        return [close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = dict(schema)
    if s.get("x-kubernetes-int-or-string") or s.get("format") == "int-or-string":
        s.pop("type", None)
        s.pop("format", None)
        s["type"] = ["integer", "string"]
    if "properties" in s:
        s["properties"] = {k: close(v) for k, v in s["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), (dict, list)):
            s[key] = close(s[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = close(s[key])
    is_object = s.get("type") == "object" or "properties" in s
    if is_object and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s["additionalProperties"] = False
    if s.get("nullable") and isinstance(s.get("type"), str):
        s["type"] = [s["type"], "null"]
    return s


def close_definitions(defs):
    out = {}
    for name, d in defs.items():
        if name in OPAQUE:
            out[name] = {}
        elif name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            out[name] = {"type": ["string", "number"], "pattern": QUANTITY}
        elif name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
            out[name] = {"type": ["integer", "string"]}
        else:
            out[name] = close(d)
    return out


class Schemas:
    """The API schemas, read in place from the schemas folder."""

    def __init__(self, folder: Path):
        with gzip.open(folder / "k8s-1.32-swagger.json.gz", "rt") as f:
            k8s = json.load(f)
        self.k8s_defs = close_definitions(k8s["definitions"])
        self.by_gvk = {}  # (apiVersion, kind) -> (definitions, name)
        for name, d in k8s["definitions"].items():
            for gvk in d.get("x-kubernetes-group-version-kind", []):
                api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
                self.by_gvk[(api, gvk["kind"])] = (self.k8s_defs, name)
        with gzip.open(folder / "openshift-api-openapi.json.gz", "rt") as f:
            self.os_defs = close_definitions(json.load(f)["definitions"])
        # CRDs: the root's apiVersion, kind and metadata are the API server's, not the CRD's.
        meta = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        for path in sorted(folder.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    root.setdefault("properties", {})
                    root["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata=meta)
                    defs = dict(self.k8s_defs)
                    name = f"crd.{group}.{version['name']}.{kind}"
                    defs[name] = close(root)
                    self.by_gvk[(f"{group}/{version['name']}", kind)] = (defs, name)

    def lookup(self, api, kind):
        if (api, kind) in self.by_gvk:
            return self.by_gvk[(api, kind)]
        # OpenShift's document carries no x-kubernetes-group-version-kind: its names are
        # com.github.openshift.api.<pkg>.<version>.<Kind> for <pkg>.openshift.io/<version>.
        m = re.fullmatch(r"([a-z]+)\.openshift\.io/(v[0-9a-z]+)", api or "")
        if m:
            name = f"com.github.openshift.api.{m.group(1)}.{m.group(2)}.{kind}"
            if name in self.os_defs:
                return self.os_defs, name
        return None


def json_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out or "."


def schema_errors(schemas, obj):
    found = schemas.lookup(obj.get("apiVersion"), obj.get("kind"))
    if not found:
        return [(".", f"no schema for apiVersion {obj.get('apiVersion')!r} kind {obj.get('kind')!r}")]
    defs, name = found
    validator = jsonschema.Draft4Validator({"$ref": f"#/definitions/{name}", "definitions": defs})
    out = []
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = list(e.absolute_path)
        if e.validator == "additionalProperties" and e.validator_value is False:
            for field in sorted(set(e.instance) - set(e.schema.get("properties", {}))):
                out.append((json_path(path + [field]), "unknown field"))
            continue
        if e.validator == "pattern" and e.validator_value == QUANTITY:
            out.append((json_path(path), f"{e.instance!r} is not a quantity (such as 500m, 2, 1Gi)"))
            continue
        if e.validator == "enum":
            out.append((json_path(path), f"{e.instance!r} is not one of {e.validator_value}"))
            continue
        out.append((json_path(path), e.message))
    return out


# ---------------------------------------------------------------- the project's own checks

def quantity(value):
    """A Kubernetes quantity as a Decimal (1Gi, 500m, 2, 1e3)."""
    m = re.fullmatch(QUANTITY, str(value))
    if not m:
        raise ValueError(f"{value!r} is not a quantity")
    suffixes = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
                "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    number, suffix = m.groups()
    if suffix and suffix[0] in "eE" and suffix not in suffixes:
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    if suffix not in suffixes:
        raise ValueError(f"{value!r} has an unknown suffix {suffix!r}")
    return Decimal(number) * Decimal(suffixes[suffix])


def pod_spec(obj):
    """(path, pod spec) of a Pod or a workload's template, or None."""
    if obj.get("kind") == "Pod":
        return ".spec", obj.get("spec") or {}
    if obj.get("kind") in POD_TEMPLATE_KINDS:
        return ".spec.template.spec", ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def pod_annotations(obj):
    if obj.get("kind") == "Pod":
        return (obj.get("metadata") or {}).get("annotations") or {}, ".metadata.annotations"
    tmpl = (obj.get("spec") or {}).get("template") or {}
    return (tmpl.get("metadata") or {}).get("annotations") or {}, ".spec.template.metadata.annotations"


def containers(path, spec):
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            yield f"{path}.{group}[{i}]", group, c


def pod_check(check):
    """Makes check(obj, objects, path, spec) a check of every object with a pod spec (a Pod, or a
    workload's template; `path` is where the spec is), giving no error for other objects."""
    @functools.wraps(check)
    def run(obj, objects):
        found = pod_spec(obj)
        return check(obj, objects, *found) if found else []
    return run


@pod_check
def check_volume_mounts(obj, objects, path, spec):
    """Every volumeMount names a volume of the pod (or a volumeClaimTemplate of the StatefulSet)."""
    names = {v.get("name") for v in spec.get("volumes") or []}
    names |= {(t.get("metadata") or {}).get("name") for t in (obj.get("spec") or {}).get("volumeClaimTemplates") or []}
    out = []
    for cpath, _, c in containers(path, spec):
        for j, m in enumerate(c.get("volumeMounts") or []):
            if m.get("name") not in names:
                out.append((f"{cpath}.volumeMounts[{j}].name", f"names no volume: {m.get('name')!r}"))
    return out


@pod_check
def check_guaranteed_qos(obj, objects, path, spec):
    """Guaranteed QoS: cpu and memory requests equal limits in every container, init containers
    included; the main containers' CPUs are whole, so the static CPU manager pins them."""
    out = []
    for cpath, group, c in containers(path, spec):
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r not in lim:
                out.append((f"{cpath}.resources.limits", f"no {r} limit: the pod is not Guaranteed QoS"))
            elif r in req and quantity(req[r]) != quantity(lim[r]):
                out.append((f"{cpath}.resources.requests.{r}",
                            f"{req[r]} differs from the limit {lim[r]}: the pod is not Guaranteed QoS"))
        if group == "containers" and "cpu" in lim and quantity(lim["cpu"]) % 1 != 0:
            out.append((f"{cpath}.resources.limits.cpu", f"{lim['cpu']} is not a whole number of CPUs"))
    return out


@pod_check
def check_hugepages(obj, objects, path, spec):
    """hugepages-<size> requests equal limits, and each hugepages emptyDir's medium is a size
    the pod requests (the kubelet refuses the pod otherwise)."""
    out, sizes = [], set()
    for cpath, _, c in containers(path, spec):
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in sorted(set(req) | set(lim)):
            if not r.startswith("hugepages-"):
                continue
            sizes.add(r[len("hugepages-"):])
            if r not in req or r not in lim or quantity(req[r]) != quantity(lim[r]):
                out.append((f"{cpath}.resources", f"{r} requests ({req.get(r)}) and limits ({lim.get(r)}) differ"))
    for i, v in enumerate(spec.get("volumes") or []):
        medium = (v.get("emptyDir") or {}).get("medium", "")
        if not medium.startswith("HugePages"):
            continue
        size = medium[len("HugePages-"):] if medium.startswith("HugePages-") else None
        if size is None and len(sizes) != 1:
            out.append((f"{path}.volumes[{i}].emptyDir.medium",
                        f"medium HugePages needs exactly one hugepages size requested, the pod requests {sorted(sizes)}"))
        elif size is not None and size not in sizes:
            out.append((f"{path}.volumes[{i}].emptyDir.medium",
                        f"{medium} but the pod requests no hugepages-{size} (it requests {sorted(sizes) or 'none'})"))
        # A container that mounts the pages may use only what it requests itself (its hugetlb
        # cgroup limit): the size of the medium must be among them.
        for cpath, _, c in containers(path, spec):
            if size is None or size not in sizes or not any(m.get("name") == v.get("name") for m in c.get("volumeMounts") or []):
                continue
            own = {r for r in ((c.get("resources") or {}).get("limits") or {}) if r.startswith("hugepages-")}
            if f"hugepages-{size}" not in own:
                out.append((f"{cpath}.resources", f"mounts {v.get('name')} ({medium}) but requests no hugepages-{size} "
                            f"(it requests {sorted(own) or 'none'}): its hugetlb limit for those pages is 0"))
    return out


def provided_resources(objects):
    """Resource names the SR-IOV device plugin's ConfigMaps and the SR-IOV operator's policies
    provide, as a pod requests them (prefix/name)."""
    out = set()
    for o in objects:
        if o.get("kind") == "ConfigMap":
            raw = (o.get("data") or {}).get("config.json")
            try:
                config = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                config = None
            if isinstance(config, dict):
                for r in config.get("resourceList") or []:
                    out.add(f"{r.get('resourcePrefix', 'intel.com')}/{r.get('resourceName')}")
        elif o.get("kind") == "SriovNetworkNodePolicy":
            out.add(f"openshift.io/{(o.get('spec') or {}).get('resourceName')}")
    return out


def on_off(config, key, out, where):
    if key in config and config[key] not in ("on", "off"):
        out.append((where, f"{key} is {config[key]!r}, must be \"on\" or \"off\""))


def vlan_range(value, out, where):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4094:
        out.append((where, f"vlan {value!r} is not in 0-4094"))


def check_network_attachments(obj, objects):
    """A NAD's spec.config is JSON with what its CNI type needs, and its resourceName annotation
    names a resource some device-plugin config or SriovNetworkNodePolicy provides; a
    SriovNetwork's resourceName likewise."""
    out = []
    if obj.get("kind") == "SriovNetwork":
        name = f"openshift.io/{(obj.get('spec') or {}).get('resourceName')}"
        if name not in provided_resources(objects):
            out.append((".spec.resourceName", f"{name} is provided by no SriovNetworkNodePolicy"))
        return out
    if obj.get("kind") != "NetworkAttachmentDefinition":
        return out
    where = ".spec.config"
    try:
        config = json.loads((obj.get("spec") or {}).get("config") or "")
    except json.JSONDecodeError as e:
        return [(where, f"is not JSON: {e}")]
    if not isinstance(config, dict):
        return [(where, "is not a JSON object")]
    for key in ("cniVersion", "type"):
        if key not in config:
            out.append((where, f"has no {key!r}"))
    resource = ((obj.get("metadata") or {}).get("annotations") or {}).get("k8s.v1.cni.cncf.io/resourceName")
    kind = config.get("type")
    if kind == "sriov":
        on_off(config, "spoofchk", out, where)
        on_off(config, "trust", out, where)
        if "vlan" in config:
            vlan_range(config["vlan"], out, where)
        if not resource and "deviceID" not in config:
            out.append((".metadata.annotations", "a sriov network needs the k8s.v1.cni.cncf.io/resourceName annotation"))
    elif kind == "host-device":
        if not resource and not any(k in config for k in ("device", "hwaddr", "kernelpath", "pciBusID")):
            out.append((where, "a host-device network names no device and has no resourceName annotation"))
    if resource and resource not in provided_resources(objects):
        out.append((".metadata.annotations.k8s.v1.cni.cncf.io/resourceName",
                    f"{resource} is provided by no device-plugin config or SriovNetworkNodePolicy"))
    return out


def requested_networks(value):
    """(namespace or None, name) of each network in a k8s.v1.cni.cncf.io/networks annotation:
    a JSON list of selection elements, or comma-separated [namespace/]name[@interface]."""
    value = value.strip()
    if value.startswith("["):
        return [(n.get("namespace"), n.get("name")) for n in json.loads(value)]
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        item = item.split("@")[0]
        ns, _, name = item.rpartition("/")
        out.append((ns or None, name))
    return out


@pod_check
def check_pod_networks(obj, objects, path, spec):
    """Each network the pod's annotation asks for exists (a NAD, or a SriovNetwork that makes one
    in the pod's namespace), and the pod requests a device of each network's resource."""
    annotations, apath = pod_annotations(obj)
    value = annotations.get("k8s.v1.cni.cncf.io/networks")
    if not value:
        return []
    where = f"{apath}.k8s.v1.cni.cncf.io/networks"
    try:
        wanted = requested_networks(value)
    except (json.JSONDecodeError, AttributeError) as e:
        return [(where, f"is not a network selection: {e}")]
    pod_ns = (obj.get("metadata") or {}).get("namespace") or "default"
    known = {}  # (namespace, name) -> resource name or None
    for o in objects:
        meta = o.get("metadata") or {}
        if o.get("kind") == "NetworkAttachmentDefinition":
            known[(meta.get("namespace") or "default", meta.get("name"))] = \
                (meta.get("annotations") or {}).get("k8s.v1.cni.cncf.io/resourceName")
        elif o.get("kind") == "SriovNetwork":
            s = o.get("spec") or {}
            known[(s.get("networkNamespace") or meta.get("namespace"), meta.get("name"))] = \
                f"openshift.io/{s.get('resourceName')}"
    needed = {}
    out = []
    for ns, name in wanted:
        key = (ns or pod_ns, name)
        if key not in known:
            out.append((where, f"asks for network {key[0]}/{key[1]}, which no NetworkAttachmentDefinition or SriovNetwork defines"))
        elif known[key]:
            needed[known[key]] = needed.get(known[key], 0) + 1
    for resource, count in sorted(needed.items()):
        for cpath, group, c in containers(path, spec):
            if group != "containers":
                continue
            have = ((c.get("resources") or {}).get("limits") or {}).get(resource, 0)
            if quantity(have) < count:
                out.append((f"{cpath}.resources.limits",
                            f"requests {have} {resource} but the networks annotation attaches {count}"))
    return out


def built_images():
    return sorted(p.name[:-len(".Containerfile")] for p in (REPO / "images").glob("*.Containerfile"))


def image_name(image):
    """The image's name without registry, path, tag or digest: quay.io/x/kmodkit/firewall:1 -> firewall."""
    image = image.split("@")[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":")[0]


def image_binary(image):
    """The binary an image runs: its Containerfile's ENTRYPOINT, so the image OpenShift builds on
    its driver toolkit (kmod-builder-driver-toolkit) is checked as the kmod-builder it runs."""
    name = image_name(image)
    containerfile = REPO / "images" / f"{name}.Containerfile"
    m = re.search(r'^ENTRYPOINT \["([^"]+)"', containerfile.read_text(), re.M) if containerfile.is_file() else None
    return m.group(1).rsplit("/", 1)[-1] if m else name


@pod_check
def check_images(obj, objects, path, spec):
    """Every container runs an image built from images/ (its name, wherever a site pushed it,
    is a Containerfile's), so no step runs something CI never built. A bare name (no registry or
    path: an image the cluster built) is an image stream of the pod's namespace only if that
    stream has lookupPolicy.local or the pod asks with resolve-names; else the node would pull
    it from docker.io/library."""
    known = built_images()
    namespace = (obj.get("metadata") or {}).get("namespace")
    local = {(o.get("metadata") or {}).get("name") for o in objects
             if o.get("kind") == "ImageStream" and (o.get("metadata") or {}).get("namespace") == namespace
             and ((o.get("spec") or {}).get("lookupPolicy") or {}).get("local")}
    resolve_names = "alpha.image.policy.openshift.io/resolve-names" in pod_annotations(obj)[0]
    out = []
    for cpath, _, c in containers(path, spec):
        image = c.get("image") or ""
        if image_name(image) not in known:
            out.append((f"{cpath}.image", f"{image!r} is built by no images/*.Containerfile ({', '.join(known)})"))
        elif "/" not in image and not resolve_names and image_name(image) not in local:
            out.append((f"{cpath}.image", f"{image!r} resolves to no image stream: its ImageStream needs lookupPolicy.local: true in the pod's namespace"))
    return out


# The pipeline's steps in the order they must run (docs/ARCHITECTURE.md, "The pipeline"):
# each reads what the one before wrote, and bind needs the module load loaded.
PIPELINE = ["init-modules", "seed-data", "kmod-builder build", "kmod-builder load", "kmod-builder bind", "firewall preflight"]


def step(c):
    name = image_binary(c.get("image") or "")
    if name == "kmod-builder":
        args = c.get("args") or c.get("command") or []
        sub = args[0] if args and not str(args[0]).startswith("-") else "build"
        return f"kmod-builder {sub}"
    if name == "firewall" and is_subcommand(c):
        return f"firewall {(c.get('args') or c.get('command')[1:])[0]}"
    return name


@pod_check
def check_init_order(obj, objects, path, spec):
    """The init containers run the pipeline in its order (a strategic merge patch that names an
    init container moves it first, which no schema notices)."""
    seen = [(i, step(c)) for i, c in enumerate(spec.get("initContainers") or []) if step(c) in PIPELINE]
    out = []
    for (i, a), (j, b) in zip(seen, seen[1:]):
        if PIPELINE.index(a) > PIPELINE.index(b):
            out.append((f"{path}.initContainers[{j}]", f"{b} runs after {a} (initContainers[{i}]); the pipeline's order is {' -> '.join(PIPELINE)}"))
    return out


@pod_check
def check_security_context(obj, objects, path, spec):
    """What the API server's validation refuses beyond the schema: a privileged container
    whose allowPrivilegeEscalation is false (privileged implies it)."""
    out = []
    for cpath, _, c in containers(path, spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False:
            out.append((f"{cpath}.securityContext", "privileged with allowPrivilegeEscalation false, which the API server refuses"))
    return out


# Paths each image carries for a step to read (a product image adds its own default trees to the
# seed-data image, images/seed-data.Containerfile): none yet, so every tree seed-data seeds and
# the firewall's rules must come from a volume.
IMAGE_PATHS = {"seed-data": [], "firewall": []}
FIREWALL_RULES_DEFAULT = "/etc/kmodkit/firewall.rules"  # the firewall's --rules default


def option_value(c, option, default=None):
    """The value a container gives an option of our binaries: its --flag in args (the flag
    wins), else its KMODKIT_* variable, else the default."""
    args = [str(a) for a in (c.get("command") or [])[1:] + (c.get("args") or [])]
    value = default
    for i, a in enumerate(args):
        if a.startswith(f"--{option}="):
            value = a.split("=", 1)[1]
        elif a == f"--{option}" and i + 1 < len(args):
            value = args[i + 1]
    if value is not default:
        return value
    var = "KMODKIT_" + option.upper().replace("-", "_")
    for e in c.get("env") or []:
        if e.get("name") == var and "value" in e:
            return str(e["value"])
    return default


def mount_of(c, path):
    """(volumeMount, path inside the volume) of the container's mount holding path, or None."""
    best = None
    for m in c.get("volumeMounts") or []:
        mount = str(m.get("mountPath", "")).rstrip("/")
        if (path == mount or path.startswith(mount + "/")) and (best is None or len(mount) > len(best[0])):
            best = (mount, m)
    if best is None:
        return None
    return best[1], rel_join(best[1].get("subPath", ""), path[len(best[0]):].lstrip("/"))


def rel_join(*parts):
    """A relative path from parts, normalised; "" for the top."""
    joined = posixpath.normpath("/".join(p for p in parts if p) or ".")
    return "" if joined == "." else joined


def in_image(image, path):
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in IMAGE_PATHS.get(image, []))


def seed_trees(c):
    """(source, destination in the data volume) of each tree a seed-data container seeds."""
    trees = []
    args = [str(a) for a in (c.get("command") or [])[1:] + (c.get("args") or [])]
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--tree"] + [a.split("=", 1)[1] for a in args if a.startswith("--tree=")]
    if not given:
        given = [t for t in (option_value(c, "tree") or "").split(";") if t.strip()]
    for t in given:
        source, eq, dest = t.strip().partition("=")
        trees.append((source, dest if eq else source.lstrip("/")))
    return trees


@pod_check
def check_seeded_paths(obj, objects, path, spec):
    """What seed-data seeds and the firewall reads are where something puts them: each tree
    seed-data seeds lies under one of its volumeMounts (or is a path its image carries), and in a
    pod that seeds its data volume the firewall's rules file is on a volume it mounts: a ConfigMap
    that has it, or a volume a seed-data init container seeds with a tree holding it."""
    out, seeded = [], []  # seeded: (volume name, path in the volume) of each seeded tree
    for cpath, group, c in containers(path, spec):
        if image_name(c.get("image") or "") != "seed-data":
            continue
        data = option_value(c, "data", "/data")
        data_mount = mount_of(c, data)
        for source, dest in seed_trees(c):
            if not mount_of(c, source) and not in_image("seed-data", source):
                out.append((f"{cpath}.env", f"seed-data's tree {source} is on no volume it mounts, and the seed-data image carries no such tree"))
            if data_mount and group == "initContainers":
                seeded.append((data_mount[0].get("name"), rel_join(data_mount[1], dest)))
    has_trees = any(seed_trees(c) for _, _, c in containers(path, spec) if image_name(c.get("image") or "") == "seed-data")
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    configmaps = {(o.get("metadata") or {}).get("name"): o.get("data") or {} for o in objects if o.get("kind") == "ConfigMap"}
    for cpath, _, c in containers(path, spec):
        if image_name(c.get("image") or "") != "firewall" or not has_trees or is_subcommand(c):
            continue
        rules = option_value(c, "rules", FIREWALL_RULES_DEFAULT)
        where = f"{cpath}.env"
        found = mount_of(c, rules)
        if not found:
            if not in_image("firewall", rules):
                out.append((where, f"the firewall's rules {rules} are on no volume it mounts, and the firewall image carries none"))
            continue
        mount, inside = found
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if source is not None:
            keys = [i.get("path") for i in source.get("items") or []] or list(configmaps.get(source.get("name"), {}))
            if source.get("name") in configmaps and inside not in keys:
                out.append((where, f"the firewall's rules {rules} are not in ConfigMap {source.get('name')} (keys: {', '.join(keys)})"))
        elif not any(mount.get("name") == vol and (inside == tree or inside.startswith(tree + "/")) for vol, tree in seeded):
            out.append((where, f"the firewall's rules {rules} are on volume {mount.get('name')}, where no init container seeds them"))
    return out


BINARIES = {}  # image name -> path of the binary built from the same sources (--binary)
_help_cache = {}


def is_subcommand(c):
    """Whether a container runs a subcommand of its image's binary (firewall preflight), not the
    binary's main job."""
    args = [str(a) for a in (c.get("command") or [])[1:] + (c.get("args") or [])]
    return bool(args) and not args[0].startswith("-")


def binary_options(binary, subcommand):
    """(options, environment variables) the binary's --help lists, or an error sentence."""
    key = (binary, subcommand)
    if key not in _help_cache:
        argv = [binary] + ([subcommand] if subcommand else []) + ["--help"]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            _help_cache[key] = f"`{' '.join(argv[1:]) or '--help'}` exits {r.returncode}: {(r.stderr or r.stdout).strip()}"
        else:
            _help_cache[key] = (set(re.findall(r"^\s+(?:-\w,)?(--[a-z0-9-]+)", r.stdout, re.M)),
                                set(re.findall(r"\bKMODKIT_[A-Z0-9_]+", r.stdout)))
    return _help_cache[key]


# How each step is run for the check, so that it changes nothing: the flag that makes it only say
# what it would do. Each was read for what it does with that flag: init-modules, seed-data and
# kmod-builder build write nothing (no volume prepared, no lock taken); kmod-builder load and bind
# only read sysfs, /proc and the volume (policy, loaded modules, drivers, IOMMU groups) and write
# nothing; the firewall reads the rules, builds EAL's arguments, prints them and exits before EAL
# starts; firewall preflight only reads, and with --on-fail=continue reports a node that fails
# its checks (this machine) without failing. A step without such a flag (kmod-builder unload,
# unbind, status) is not run.
DRY_RUN = {"init-modules": "--dry-run", "seed-data": "--dry-run", "kmod-builder build": "--dry-run",
           "kmod-builder load": "--dry-run", "kmod-builder bind": "--dry-run", "firewall": "--print-eal-args",
           "firewall preflight": "--on-fail=continue"}
DRY_RUN_TIMEOUT = 60  # seconds; a dry run takes well under one
# The last stderr line of a run that failed for another reason (66: /modules does not exist
# here) but whose message still says a value was refused.
REFUSED = re.compile(r"\b(invalid|unknown option|not a whole number|not a boolean|not one of|out of range|"
                     r"not a number|not a valid|is not (once|auto|human|json|debug))\b", re.I)
_run_cache = {}


def placeholder(e, c, objects):
    """A value for an env entry whose value the kubelet computes (valueFrom): the ConfigMap's or a
    plausible one, of the kind the source gives (a number for a resource, a name for a field)."""
    source = e.get("valueFrom") or {}
    if "resourceFieldRef" in source:
        resource = source["resourceFieldRef"].get("resource", "")
        limits = ((c.get("resources") or {}).get("limits") or {})
        value = limits.get(resource.split(".", 1)[-1])
        return str(max(1, int(quantity(value)))) if value is not None else "1"
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        for o in objects:
            if o.get("kind") == "ConfigMap" and (o.get("metadata") or {}).get("name") == ref.get("name"):
                return str((o.get("data") or {}).get(ref.get("key"), "placeholder"))
    if "fieldRef" in source:
        return {"metadata.name": "kmodkit-firewall-0", "metadata.namespace": "kmodkit", "spec.nodeName": "node-1",
                "status.podIP": "10.0.0.2", "status.hostIP": "10.0.0.1"}.get(source["fieldRef"].get("fieldPath"), "placeholder")
    return "placeholder"


def device_plugin_env(c):
    """The variables the SR-IOV device plugin gives a container for each device resource it
    requests (PCIDEVICE_<RESOURCE>, the devices' PCI addresses), with addresses no machine has
    (domain ffff), so that bind and the firewall see devices but touch none."""
    env = {}
    for resource, count in ((c.get("resources") or {}).get("limits") or {}).items():
        if "/" not in resource:
            continue
        n = max(1, min(8, int(quantity(count))))
        env["PCIDEVICE_" + re.sub(r"[^A-Za-z0-9]", "_", resource).upper()] = ",".join(f"ffff:ff:1f.{i}" for i in range(n))
    return env


def dry_run(binary, argv_tail, c, objects):
    """Runs the binary as the container would (its command's arguments, args and env; only the
    env the manifest and the device plugin give) plus its dry-run flag, in a scratch directory:
    an error sentence when it refuses an option or a value, else None."""
    env = device_plugin_env(c)
    for e in c.get("env") or []:
        env[e.get("name", "")] = str(e["value"]) if "value" in e else placeholder(e, c, objects)
    key = (binary, tuple(argv_tail), tuple(sorted(env.items())))
    if key in _run_cache:
        return _run_cache[key]
    with tempfile.TemporaryDirectory(prefix="kmodkit-dry-run.") as scratch:
        # Not the manifest's: where the run may put what it must (the termination log, which is
        # never created, temporary files) and no network (a proxy on a closed port), so a dry run
        # neither writes outside the scratch directory nor depends on the CI machine's network.
        closed = "http://127.0.0.1:9"
        env.update(KMODKIT_TERMINATION_LOG=f"{scratch}/termination-log", TMPDIR=scratch, HOME=scratch,
                   http_proxy=closed, https_proxy=closed, HTTPS_PROXY=closed, ALL_PROXY=closed, no_proxy="")
        # Downloads that cannot succeed here are not retried (unless the manifest sets retries,
        # which is then what is checked).
        env.setdefault("KMODKIT_RETRIES", "0")
        try:
            r = subprocess.run([binary] + argv_tail, env=env, cwd=scratch, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=DRY_RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            _run_cache[key] = f"did not finish its dry run in {DRY_RUN_TIMEOUT} s"
            return _run_cache[key]
    last = (r.stderr.strip().splitlines() or [""])[-1]
    try:  # a JSON log line (--log-format auto when stderr is not a terminal): its message
        last = json.loads(last)["msg"]
    except (ValueError, KeyError, TypeError):
        pass
    if r.returncode == 64 or (r.returncode != 0 and REFUSED.search(last)):
        _run_cache[key] = f"exits {r.returncode}: {last}"
    else:
        _run_cache[key] = None
    return _run_cache[key]


@pod_check
def check_binaries(obj, objects, path, spec):
    """The manifests match the binaries. Each container's subcommand, flags and KMODKIT_*
    variables are ones its binary's --help lists (the binary ignores an unknown variable: only
    this notices a misspelt one). Then the binary is run as the container would run it, with its
    dry-run flag, so that a value it refuses (a mode, a number, a driver) fails here, not in a pod:
    exit 64, or a message that says a value is invalid. Other failures are expected here
    (/modules, /host and the devices do not exist on this machine)."""
    if not BINARIES:
        return []
    out = []
    for cpath, _, c in containers(path, spec):
        name = image_binary(c.get("image") or "")
        if name not in BINARIES:
            continue
        command = [str(a) for a in (c.get("command") or [])]
        args = command[1:] + [str(a) for a in (c.get("args") or [])]
        sub = args[0] if name in ("kmod-builder", "firewall") and args and not args[0].startswith("-") else None
        who = f"{name}{' ' + sub if sub else ''}"
        known = binary_options(BINARIES[name], sub)
        if isinstance(known, str):
            out.append((f"{cpath}.args", f"{name}: {known}"))
            continue
        flags, variables = known
        bad = len(out)
        for i, a in enumerate(args):
            flag = a.split("=")[0]
            if flag.startswith("--") and flag not in flags:
                out.append((f"{cpath}.args[{i}]", f"{who} has no option {flag}"))
        for i, e in enumerate(c.get("env") or []):
            var = e.get("name", "")
            if var.startswith("KMODKIT_") and var not in variables | {"KMODKIT_TERMINATION_LOG"}:
                out.append((f"{cpath}.env[{i}].name", f"{who} reads no {var}"))
        step_name = f"kmod-builder {sub or 'build'}" if name == "kmod-builder" else f"{name}{' ' + sub if sub else ''}"
        flag = DRY_RUN.get(step_name)
        # A name --help does not list is reported once, above; its run would only repeat it.
        if len(out) == bad and flag and flag.split("=")[0] in flags:
            refused = dry_run(BINARIES[name], args + ([flag] if flag not in args else []), c, objects)
            if refused:
                out.append((cpath, f"{who} {flag} with the container's args and env {refused}"))
    return out


CHECKS = [check_images, check_init_order, check_security_context, check_binaries, check_seeded_paths, check_volume_mounts, check_guaranteed_qos, check_hugepages, check_network_attachments, check_pod_networks]


# ---------------------------------------------------------------- driver

def validate(schemas, objects):
    """Every error as 'Kind/name: path: problem'."""
    errors = []
    for obj in objects:
        who = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        problems = schema_errors(schemas, obj)
        for check in CHECKS:
            try:
                problems += check(obj, objects)
            except ValueError as e:  # a quantity that does not parse: the schema said where
                if not problems:
                    problems.append((".", f"{check.__name__}: {e}"))
        errors += [f"{who}: {p}: {msg}" for p, msg in problems]
    return errors


def render(overlay):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("validate: skipped: kubectl is not installed (it renders the overlays with kustomize)")
        sys.exit(SKIP)
    r = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Error(f"kubectl kustomize {overlay} failed: {r.stderr.strip()}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def expect_reject(schemas, folder):
    """Each *.yaml in folder begins with '# expect: <message>'; the validator must reject it,
    and every error it reports must contain that message."""
    fixtures = sorted(folder.glob("*.yaml"))
    if not fixtures:
        raise Error(f"{folder}: no fixtures (*.yaml)")
    failed = skipped = 0
    for f in fixtures:
        lines = f.read_text().splitlines()
        first = lines[0]
        if "# needs: binaries" in lines and not BINARIES:
            print(f"skipped {f.name}: it needs the binaries (--binary NAME=PATH)")
            skipped += 1
            continue
        m = re.fullmatch(r"# expect: (.+)", first)
        if not m:
            raise Error(f"{f}: the first line must be '# expect: <message>'")
        errors = validate(schemas, [o for o in yaml.safe_load_all(f.read_text()) if o])
        # Each fixture breaks one thing: the expected error, and no other, so a fixture that
        # is rejected for a reason it was not written for fails too.
        others = [e for e in errors if m.group(1) not in e]
        if errors and not others:
            print(f"rejected {f.name}: {errors[0]}")
        else:
            failed += 1
            print(f"NOT REJECTED AS EXPECTED {f.name}: want only errors saying {m.group(1)!r}; got: {errors or 'none'}")
    checked = len(fixtures) - skipped
    print(f"{checked - failed} of {checked} broken fixtures rejected" + (f" ({skipped} skipped)" if skipped else ""))
    return 1 if failed else 0


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"validate.py: {message}", file=sys.stderr)
        sys.exit(64)  # EX_USAGE, as the project's binaries


def main():
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS,
                   help=f"the API schemas folder (default: {DEFAULT_SCHEMAS})")
    p.add_argument("--expect-reject", type=Path, metavar="DIR", help="fixtures that must be rejected")
    p.add_argument("--binary", action="append", default=[], metavar="NAME=PATH",
                   help="the binary an image runs (init-modules, seed-data, kmod-builder, firewall): "
                        "containers' options and KMODKIT_* variables are checked against its --help and by a dry run")
    p.add_argument("overlay", type=Path, nargs="?", help="a kustomize directory to render and validate")
    args = p.parse_args()
    for b in args.binary:
        name, eq, binary = b.partition("=")
        if not eq or not Path(binary).is_file():
            p.error(f"--binary {b}: give NAME=PATH of an existing binary")
        BINARIES[name] = str(Path(binary).resolve())  # the dry runs run in a scratch directory
    if bool(args.overlay) == bool(args.expect_reject):
        p.error("give an overlay or --expect-reject DIR")
    if not (args.schemas / "k8s-1.32-swagger.json.gz").is_file():
        print(f"validate: skipped: no API schemas in {args.schemas} (the folder CI provides beside the repository)")
        return SKIP
    try:
        schemas = Schemas(args.schemas)
        if args.expect_reject:
            return expect_reject(schemas, args.expect_reject)
        objects = render(args.overlay)
        errors = validate(schemas, objects)
    except Error as e:
        print(f"validate: {e}", file=sys.stderr)
        return 1
    for e in errors:
        print(e)
    kinds = ", ".join(sorted({f"{o['kind']}" for o in objects}))
    if errors:
        print(f"{args.overlay}: {len(errors)} errors in {len(objects)} objects")
        return 1
    print(f"{args.overlay}: {len(objects)} objects valid ({kinds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
