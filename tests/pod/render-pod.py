#!/usr/bin/env python3
"""Turns the StatefulSet of `kubectl kustomize <overlay>` into a busybox-sh script that runs its
pod (ordinal 0) in a Linux guest: init containers in order, then the main container, each in an
overlayfs root over its image's root filesystem, with the pod's volumes, environment, user and
capabilities as the kubelet and containerd would set them up.

    tests/pod/render-pod.py --manifests FILE --config FILE --out FILE     (FILE - : stdin/stdout)

The config (JSON) is what the cluster supplies at run time: images, claims, devices, annotations,
hugepage sizes, node name, pod IP and the guest directory the script works in (tests/pod/README.md).
Anything the manifests use that the config lacks, and any pod-spec field this renderer does not
implement, is an error naming it (exit 2). The script defines pod_prepare, pod_init,
pod_main_start, pod_main_wait and pod_main_stop."""

import argparse
import json
import math
import os
import re
import sys
from fractions import Fraction

import yaml


class RenderError(Exception):
    """Bad input or something the renderer does not implement; one sentence, exit 2."""


def q(value):
    """Single-quotes one shell word (the only quoting busybox sh and bash agree on entirely)."""
    return "'" + str(value).replace("'", "'\\''") + "'"


# Pod-spec fields that change nothing this script could do (no scheduler, no API server, no
# network or restart policy of its own); the output lists the ones the pod uses in a comment.
POD_IGNORED = {
    "restartPolicy": "init containers stop the pod at the first failure, nothing restarts",
    "nodeSelector": "no scheduler", "affinity": "no scheduler", "tolerations": "no scheduler",
    "topologySpreadConstraints": "no scheduler", "priorityClassName": "no scheduler",
    "priority": "no scheduler", "schedulerName": "no scheduler", "nodeName": "config node_name",
    "dnsPolicy": "no cluster DNS", "serviceAccountName": "only spec.serviceAccountName reads it",
    "serviceAccount": "only spec.serviceAccountName reads it",
    "imagePullSecrets": "images are given as root filesystems",
    "enableServiceLinks": "no services to link", "hostname": "HOSTNAME is the pod name",
    "subdomain": "no cluster DNS", "readinessGates": "no API server",
    "hostNetwork": "every container runs in the guest's network namespace",
    "hostPID": "every container runs in the guest's PID namespace",
    "hostIPC": "every container runs in the guest's IPC namespace",
    "shareProcessNamespace": "every container runs in the guest's PID namespace",
    "preemptionPolicy": "no scheduler", "runtimeClassName": "no runtime classes",
}
POD_IMPLEMENTED = {"containers", "initContainers", "volumes", "securityContext",
                   "terminationGracePeriodSeconds", "automountServiceAccountToken"}
POD_SECURITY_IMPLEMENTED = {"fsGroup", "fsGroupChangePolicy", "runAsUser", "runAsGroup",
                            "runAsNonRoot", "supplementalGroups"}
CONTAINER_IMPLEMENTED = {"name", "image", "command", "args", "env", "workingDir", "volumeMounts",
                         "resources", "securityContext", "terminationMessagePath",
                         "terminationMessagePolicy", "ports", "startupProbe", "livenessProbe",
                         "readinessProbe"}
CONTAINER_IGNORED = {
    "imagePullPolicy": "images are given as root filesystems",
    "resizePolicy": "no cgroups",
}
# The main container's probes become pod_main_probe_KIND functions: the caller runs them (a
# failing liveness probe restarts nothing here). httpGet only, as the kubelet runs it.
PROBES = {"startupProbe": "startup", "livenessProbe": "liveness", "readinessProbe": "readiness"}
PROBE_IMPLEMENTED = {"httpGet", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
                     "failureThreshold", "successThreshold"}
HTTP_GET_IMPLEMENTED = {"path", "port", "scheme", "host"}
PORT_IMPLEMENTED = {"name", "containerPort", "protocol"}
CONTAINER_SECURITY_IMPLEMENTED = {"privileged", "allowPrivilegeEscalation", "capabilities",
                                  "readOnlyRootFilesystem", "runAsUser", "runAsGroup",
                                  "runAsNonRoot"}
MOUNT_IMPLEMENTED = {"name", "mountPath", "readOnly"}
# containerd's default capability set for a container that is not privileged.
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                "AUDIT_WRITE"]
# containerd's PATH when the image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The device nodes every container gets (runc's default devices; /dev/tty included).
DEFAULT_DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}


# ---- Quantities (k8s.io/apimachinery/pkg/api/resource), exact, as Fractions ----------------

SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
            "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(text, what):
    m = re.fullmatch(r"([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?",
                     str(text).strip())
    if not m:
        raise RenderError(f"{what}: {text!r} is not a Kubernetes quantity")
    number = Fraction(m.group(1))
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E") and suffix not in SUFFIXES:
        return number * Fraction(10) ** int(suffix[1:])
    return number * SUFFIXES[suffix]


def resource_value(container, resource, divisor, what):
    """The kubelet's value of a resourceFieldRef (pkg/api/v1/resource ExtractContainerResourceValue):
    the quantity divided by the divisor, rounded up (cpu in millicores first, as it does)."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise RenderError(f"{what}: resource {resource!r} is not limits.<name> or requests.<name>")
    if name not in STANDARD_RESOURCES and not name.startswith("hugepages-"):
        raise RenderError(f"{what}: resource {resource!r} is not cpu, memory, ephemeral-storage or hugepages-*")
    values = (container.get("resources") or {}).get(kind) or {}
    if name not in values:
        raise RenderError(f"{what}: container {container['name']} has no {resource} (the kubelet would "
                          "use the node's allocatable, which the config does not give)")
    value = quantity(values[name], f"{what}: {resource}")
    div = quantity(divisor if divisor is not None else "1", f"{what}: divisor")
    if div <= 0:
        raise RenderError(f"{what}: divisor {divisor!r} is not positive")
    if name == "cpu":
        # MilliValue() of each, itself rounded up to a whole millicore.
        value, div = math.ceil(value * 1000), math.ceil(div * 1000)
    else:
        value, div = math.ceil(value), math.ceil(div)
    return str(math.ceil(Fraction(value, div)))


# ---- $(VAR) expansion (k8s.io/kubernetes/third_party/forked/golang/expansion) ---------------

def expand(text, mapping):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "(":
                close = text.find(")", i + 2)
                if close < 0:
                    out.append("$(")
                    i += 2
                else:
                    name = text[i + 2:close]
                    out.append(mapping[name] if name in mapping else f"$({name})")
                    i = close + 1
            else:
                out.append("$" + nxt)
                i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ---- The pod --------------------------------------------------------------------------------

class Pod:
    def __init__(self, docs, config):
        self.config = config
        name = self.need(config, "statefulset", "config")
        sets = [d for d in docs if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == name]
        if not sets:
            raise RenderError(f"manifests: no StatefulSet {name}")
        self.sts = sets[0]
        self.docs = docs
        self.namespace = self.sts["metadata"].get("namespace", "default")
        # The first ordinal: 0 unless spec.ordinals.start says otherwise.
        self.ordinal = int((self.sts["spec"].get("ordinals") or {}).get("start", 0))
        self.name = f"{name}-{self.ordinal}"
        template = self.sts["spec"]["template"]
        self.spec = template.get("spec") or {}
        meta = template.get("metadata") or {}
        # The StatefulSet controller's labels (controller-revision-hash is a hash of the revision
        # this script does not compute, so it is left out).
        self.labels = dict(meta.get("labels") or {})
        self.labels["statefulset.kubernetes.io/pod-name"] = self.name
        self.labels["apps.kubernetes.io/pod-index"] = str(self.ordinal)
        self.annotations = dict(meta.get("annotations") or {})
        self.annotations.update(config.get("annotations") or {})
        self.run_dir = self.need(config, "run_dir", "config")
        self.ignored = []
        self.check_pod_fields()
        self.volumes = self.collect_volumes()
        self.init_containers = self.spec.get("initContainers") or []
        self.containers = self.spec.get("containers") or []
        if len(self.containers) != 1:
            raise RenderError(f"StatefulSet {name}: {len(self.containers)} containers; "
                              "the script runs exactly one main container")
        names = [c["name"] for c in self.init_containers + self.containers]
        if len(set(names)) != len(names):
            raise RenderError(f"StatefulSet {name}: container names are not unique")
        self.devices_used = {}

    @staticmethod
    def need(mapping, key, where):
        if key not in mapping:
            raise RenderError(f"{where}: {key} is missing")
        return mapping[key]

    def check_pod_fields(self):
        for key in self.spec:
            if key in POD_IGNORED:
                self.ignored.append(f"spec.{key}: {POD_IGNORED[key]}")
            elif key not in POD_IMPLEMENTED:
                raise RenderError(f"pod spec field spec.{key} is not implemented")
        if self.spec.get("automountServiceAccountToken", True) is not False:
            raise RenderError("pod spec field spec.automountServiceAccountToken is not false: "
                              "the service account token volume is not implemented")
        for key in self.spec.get("securityContext") or {}:
            if key not in POD_SECURITY_IMPLEMENTED:
                raise RenderError(f"pod spec field spec.securityContext.{key} is not implemented")
        for c in (self.spec.get("initContainers") or []) + (self.spec.get("containers") or []):
            for key in c:
                if key in CONTAINER_IGNORED:
                    self.ignored.append(f"{c['name']}: {key}: {CONTAINER_IGNORED[key]}")
                elif key not in CONTAINER_IMPLEMENTED:
                    raise RenderError(f"container {c['name']}: field {key} is not implemented")
            for key in c.get("securityContext") or {}:
                if key not in CONTAINER_SECURITY_IMPLEMENTED:
                    raise RenderError(f"container {c['name']}: field securityContext.{key} is not implemented")
            for m in c.get("volumeMounts") or []:
                for key in m:
                    if key not in MOUNT_IMPLEMENTED:
                        raise RenderError(f"container {c['name']}: volumeMounts[{m.get('name')}].{key} is not implemented")
            for port in c.get("ports") or []:
                for key in port:
                    if key not in PORT_IMPLEMENTED:
                        raise RenderError(f"container {c['name']}: ports[{port.get('name')}].{key} is not implemented")
            for field in PROBES:
                if field not in c:
                    continue
                if c not in (self.spec.get("containers") or []):
                    raise RenderError(f"container {c['name']}: an init container's {field} is not implemented")
                for key in c[field]:
                    if key not in PROBE_IMPLEMENTED:
                        raise RenderError(f"container {c['name']}: {field}.{key} is not implemented (httpGet only)")
                if "httpGet" not in c[field]:
                    raise RenderError(f"container {c['name']}: {field} without httpGet is not implemented")
                for key in c[field]["httpGet"]:
                    if key not in HTTP_GET_IMPLEMENTED:
                        raise RenderError(f"container {c['name']}: {field}.httpGet.{key} is not implemented")
                if c[field]["httpGet"].get("scheme", "HTTP") != "HTTP":
                    raise RenderError(f"container {c['name']}: {field}.httpGet.scheme HTTPS is not implemented")
            for key in c.get("resources") or {}:
                if key not in ("limits", "requests"):
                    raise RenderError(f"container {c['name']}: field resources.{key} is not implemented")
            for e in c.get("env") or []:
                src = e.get("valueFrom") or {}
                for key in src:
                    if key not in ("fieldRef", "resourceFieldRef", "configMapKeyRef"):
                        raise RenderError(f"container {c['name']}: env {e['name']}: valueFrom.{key} is not implemented")
            path = c.get("terminationMessagePath", "/dev/termination-log")
            if path != "/dev/termination-log":
                raise RenderError(f"container {c['name']}: terminationMessagePath {path} is not implemented "
                                  "(only /dev/termination-log)")
            policy = c.get("terminationMessagePolicy", "File")
            if policy not in ("File", "FallbackToLogsOnError"):
                raise RenderError(f"container {c['name']}: terminationMessagePolicy {policy} is not File or FallbackToLogsOnError")
        self.ignored.append("resources cpu, memory, ephemeral-storage: no cgroups (limits only feed the downward API)")

    # -- volumes --

    def collect_volumes(self):
        volumes = {}
        for v in self.spec.get("volumes") or []:
            volumes[v["name"]] = v
        # A claim template's volume replaces a pod volume of the same name (the StatefulSet
        # controller's updateStorage); its claim is <template>-<statefulset>-<ordinal>.
        for t in self.sts["spec"].get("volumeClaimTemplates") or []:
            tname = t["metadata"]["name"]
            volumes[tname] = {"name": tname, "persistentVolumeClaim": {"claimName": tname}, "_template": True}
        return volumes

    def volume_kind(self, v):
        kinds = [k for k in v if k not in ("name", "_template")]
        if len(kinds) != 1:
            raise RenderError(f"volume {v['name']}: {len(kinds)} volume sources")
        kind = kinds[0]
        if kind not in ("emptyDir", "configMap", "downwardAPI", "persistentVolumeClaim", "hostPath"):
            raise RenderError(f"volume {v['name']}: volume type {kind} is not implemented")
        return kind

    def volume_dir(self, name):
        v = self.volumes[name]
        kind = self.volume_kind(v)
        if kind == "persistentVolumeClaim":
            return self.claim_dir(v)
        if kind == "hostPath":
            return v["hostPath"]["path"]
        return f"{self.run_dir}/volumes/{name}"

    def claim_dir(self, v):
        claim = v["persistentVolumeClaim"]["claimName"]
        claims = self.config.get("claims") or {}
        if claim not in claims:
            raise RenderError(f"volume {v['name']}: claim {claim} is not in the config's claims")
        return claims[claim]

    def config_map(self, name, where):
        for d in self.docs:
            if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name and \
                    d["metadata"].get("namespace", "default") == self.namespace:
                return d
        raise RenderError(f"{where}: ConfigMap {name} is not in the manifests (namespace {self.namespace})")

    def field_value(self, path, where):
        """A fieldRef's value as the kubelet computes it (pkg/fieldpath ExtractFieldPathAsString)."""
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path) or \
            re.fullmatch(r'metadata\.(labels|annotations)\["([^"]*)"\]', path)
        if m:
            source = self.labels if m.group(1) == "labels" else self.annotations
            return source.get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            source = self.labels if path == "metadata.labels" else self.annotations
            # fieldpath.FormatMap: sorted key="value" lines, values Go-quoted.
            return "\n".join(f"{k}={json.dumps(source[k], ensure_ascii=False)}" for k in sorted(source))
        simple = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "spec.serviceAccountName": self.spec.get("serviceAccountName", "default")}
        if path in simple:
            return simple[path]
        config_fields = {"spec.nodeName": "node_name", "status.podIP": "pod_ip",
                         "status.podIPs": "pod_ip", "status.hostIP": "host_ip",
                         "metadata.uid": "pod_uid"}
        if path in config_fields:
            key = config_fields[path]
            if key not in self.config:
                raise RenderError(f"{where}: fieldRef {path} needs {key} in the config")
            return str(self.config[key])
        raise RenderError(f"{where}: fieldRef {path} is not implemented")

    def hosts_file(self):
        """The kubelet's managed /etc/hosts (kubelet_pods.go managedHostsFileContent): the pod's
        IP with its name, and with its fully qualified name when it has a subdomain (a
        StatefulSet's pods have the service's name)."""
        ip = self.need(self.config, "pod_ip", "config")
        subdomain = self.spec.get("subdomain") or self.sts["spec"].get("serviceName")
        domain = self.config.get("cluster_domain", "cluster.local")
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
                 "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
        if subdomain:
            lines.append(f"{ip}\t{self.name}.{subdomain}.{self.namespace}.svc.{domain}\t{self.name}")
        else:
            lines.append(f"{ip}\t{self.name}")
        return "\n".join(lines) + "\n"

    def container_named(self, name, where):
        for c in self.init_containers + self.containers:
            if c["name"] == name:
                return c
        raise RenderError(f"{where}: no container {name}")

    def projected_files(self, v):
        """(path, content bytes-as-str or None, base64 or None, mode) of a configMap or
        downwardAPI volume, in the order the kubelet writes them."""
        kind = self.volume_kind(v)
        src = v[kind]
        where = f"volume {v['name']}"
        default_mode = src.get("defaultMode", 0o644)
        files = []
        if kind == "configMap":
            for key in src:
                if key not in ("name", "items", "defaultMode", "optional"):
                    raise RenderError(f"{where}: configMap.{key} is not implemented")
            try:
                cm = self.config_map(src["name"], where)
            except RenderError:
                if not src.get("optional"):
                    raise
                # optional: the kubelet mounts an empty volume.
                cm = {}
            data = cm.get("data") or {}
            binary = cm.get("binaryData") or {}
            items = src.get("items")
            if items is None:
                items = [{"key": k, "path": k} for k in sorted(set(data) | set(binary))]
            for item in items:
                key = item["key"]
                if key not in data and key not in binary:
                    raise RenderError(f"{where}: ConfigMap {src['name']} has no key {key}")
                mode = item.get("mode", default_mode)
                if key in data:
                    files.append((item["path"], data[key], None, mode))
                else:
                    files.append((item["path"], None, binary[key], mode))
        else:
            for key in src:
                if key not in ("items", "defaultMode"):
                    raise RenderError(f"{where}: downwardAPI.{key} is not implemented")
            for item in src.get("items") or []:
                mode = item.get("mode", default_mode)
                what = f"{where}: {item['path']}"
                if "fieldRef" in item:
                    value = self.field_value(item["fieldRef"]["fieldPath"], what)
                elif "resourceFieldRef" in item:
                    ref = item["resourceFieldRef"]
                    if "containerName" not in ref:
                        raise RenderError(f"{what}: resourceFieldRef without containerName")
                    value = resource_value(self.container_named(ref["containerName"], what),
                                           ref["resource"], ref.get("divisor"), what)
                else:
                    raise RenderError(f"{what}: neither fieldRef nor resourceFieldRef")
                files.append((item["path"], value, None, mode))
        for path, *_ in files:
            if path.startswith("/") or ".." in path.split("/") or path.startswith(".."):
                raise RenderError(f"{where}: item path {path!r} is not a relative path inside the volume")
        return files

    # -- containers --

    def image(self, c):
        images = self.config.get("images") or {}
        if c["image"] not in images:
            raise RenderError(f"container {c['name']}: image {c['image']} is not in the config's images")
        return images[c["image"]]

    def device_resources(self, c):
        limits = (c.get("resources") or {}).get("limits") or {}
        out = []
        for name, count in limits.items():
            if name in STANDARD_RESOURCES or name.startswith("hugepages-") or "/" not in name:
                continue
            devices = (self.config.get("devices") or {}).get(name)
            if devices is None:
                raise RenderError(f"container {c['name']}: device resource {name} is not in the config's devices")
            n = int(quantity(count, f"container {c['name']}: {name}"))
            if n > len(devices):
                raise RenderError(f"container {c['name']}: {n} of {name} requested, the config has {len(devices)}")
            # The device manager gives an app container the devices its init containers had
            # (reuse), so every container asking for n gets the same first n.
            out.append((name, devices[:n]))
        return out

    def environment(self, c, image):
        """(env list of (name, value) in the container's final order, mapping for command/args)."""
        where = f"container {c['name']}"
        devices_env = []
        for resource, devices in self.device_resources(c):
            var = "PCIDEVICE_" + re.sub(r"[^A-Za-z0-9]", "_", resource).upper()
            devices_env.append((var, ",".join(d["address"] for d in devices)))
            devices_env.append((var + "_INFO", json.dumps({d["address"]: d.get("info", {}) for d in devices},
                                                          separators=(",", ":"))))
        defined = {}
        container_env = []
        for e in c.get("env") or []:
            name = e["name"]
            if "valueFrom" in e:
                src = e["valueFrom"]
                if "fieldRef" in src:
                    value = self.field_value(src["fieldRef"]["fieldPath"], f"{where}: env {name}")
                elif "resourceFieldRef" in src:
                    ref = src["resourceFieldRef"]
                    target = self.container_named(ref["containerName"], where) if ref.get("containerName") else c
                    value = resource_value(target, ref["resource"], ref.get("divisor"), f"{where}: env {name}")
                else:
                    ref = src["configMapKeyRef"]
                    cm = self.config_map(ref["name"], f"{where}: env {name}")
                    data = cm.get("data") or {}
                    if ref["key"] not in data:
                        if ref.get("optional"):
                            continue
                        raise RenderError(f"{where}: env {name}: ConfigMap {ref['name']} has no key {ref['key']}")
                    value = data[ref["key"]]
            else:
                # Only the variables defined before this one expand (kubelet makeEnvironmentVariables).
                value = expand(str(e.get("value", "")), defined)
            defined[name] = value
            container_env.append((name, value))
        # Command and args expand against every variable the kubelet passes (device plugins' and
        # the container's), not the image's.
        mapping = dict(devices_env)
        mapping.update(defined)
        env = {}
        path_set = False
        for item in image.get("env") or []:
            k, _, v = item.partition("=")
            env[k] = v
            path_set |= k == "PATH"
        if not path_set:
            env = {"PATH": DEFAULT_PATH, **env}
        env["HOSTNAME"] = self.name
        for k, v in devices_env + container_env:
            env[k] = v
        return list(env.items()), mapping

    def argv(self, c, image, mapping):
        # Kubernetes: command replaces ENTRYPOINT (and drops CMD); args replace CMD; only the
        # pod's words expand $(VAR), never the image's.
        args = [expand(str(a), mapping) for a in c.get("args") or []]
        if c.get("command"):
            argv = [expand(str(a), mapping) for a in c["command"]] + args
        elif c.get("args"):
            argv = list(image.get("entrypoint") or []) + args
        else:
            argv = list(image.get("entrypoint") or []) + list(image.get("cmd") or [])
        if not argv:
            raise RenderError(f"container {c['name']}: neither command nor the image's entrypoint/cmd")
        return argv

    def security(self, c, image):
        where = f"container {c['name']}"
        pod_sc = self.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        user = str(image.get("user") or "0")
        image_uid, _, image_gid = user.partition(":")
        if not re.fullmatch(r"[0-9]+", image_uid) or (image_gid and not re.fullmatch(r"[0-9]+", image_gid)):
            raise RenderError(f"{where}: image user {user!r} is not numeric (names are not implemented)")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if uid is None:
            uid = int(image_uid)
            if gid is None and image_gid:
                gid = int(image_gid)
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and int(uid) == 0:
            raise RenderError(f"{where}: runAsNonRoot is set but it runs as uid 0 (the kubelet would not start it)")
        groups = []
        if pod_sc.get("fsGroup") is not None:
            groups.append(int(pod_sc["fsGroup"]))
        for g in pod_sc.get("supplementalGroups") or []:
            if int(g) not in groups:
                groups.append(int(g))
        privileged = bool(sc.get("privileged"))
        caps = sc.get("capabilities") or {}
        for key in caps:
            if key not in ("add", "drop"):
                raise RenderError(f"{where}: securityContext.capabilities.{key} is not implemented")
        if privileged:
            bounding = None
        else:
            # containerd: drop (ALL empties the set), then add (ALL gives every capability).
            drop = [x.upper().removeprefix("CAP_") for x in caps.get("drop") or []]
            add = [x.upper().removeprefix("CAP_") for x in caps.get("add") or []]
            bounding = [] if "ALL" in drop else [x for x in DEFAULT_CAPS if x not in drop]
            if "ALL" in add:
                bounding = None
            else:
                bounding += [x for x in add if x not in bounding]
        no_new_privs = sc.get("allowPrivilegeEscalation") is False and not privileged
        return dict(uid=int(uid), gid=gid, groups=groups, privileged=privileged, bounding=bounding,
                    no_new_privs=no_new_privs, read_only_root=bool(sc.get("readOnlyRootFilesystem")))


# ---- The script -----------------------------------------------------------------------------

HELPERS = r'''
pod_uptime() {
  read -r pod_up pod_rest < /proc/uptime
  echo "$pod_up"
}
pod_say() {
  echo "KMODKIT-POD $*"
}
pod_err() {
  echo "pod: $*" >&2
  return 1
}
# pod_alive PID: the process runs (a zombie has ended; only wait reaps it).
pod_alive() {
  [ -r "/proc/$1/stat" ] || return 1
  pod_state=$(sed 's/.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$pod_state" ] && [ "$pod_state" != Z ]
}
# pod_atomic_begin DIR: the kubelet's atomic writer, first half: a fresh ..<timestamp> directory.
pod_atomic_begin() {
  mkdir -p "$1" || return 1
  pod_ts="..$(date -u +%Y_%m_%d_%H_%M_%S).$$"
  mkdir "$1/$pod_ts" && chmod 0755 "$1/$pod_ts"
}
# pod_atomic_end DIR NAME...: ..data points at the timestamp directory, each top-level NAME at ..data/NAME.
pod_atomic_end() {
  pod_dir=$1
  shift
  ln -s "$pod_ts" "$pod_dir/..data" || return 1
  for pod_n in "$@"; do
    ln -s "..data/$pod_n" "$pod_dir/$pod_n" || return 1
  done
}
# pod_fsgroup DIR GID rw|ro OnRootMismatch|Always: the kubelet's SetVolumeOwnership: group GID,
# group (and owner) read-write (ro: read), directories setgid and searchable. OnRootMismatch
# skips a volume whose root already has the group, the bits and setgid.
pod_fsgroup() {
  if [ "$4" = OnRootMismatch ] && [ "$(stat -c %g "$1")" = "$2" ]; then
    if [ "$3" = rw ]; then pod_perm=-2770; else pod_perm=-2550; fi
    [ -n "$(find "$1" -maxdepth 0 -perm "$pod_perm")" ] && return 0
  fi
  if [ "$3" = rw ]; then pod_bits=ug+rw; else pod_bits=ug+r; fi
  chgrp -hR "$2" "$1" && find "$1" ! -type l -exec chmod "$pod_bits" {} + && \
    find "$1" -type d -exec chmod g+s,ug+x {} +
}
# pod_gid ROOT UID: the primary group of UID in the image's /etc/passwd (containerd's lookup), else 0.
pod_gid() {
  pod_g=$(awk -F: -v u="$2" '$3 == u { print $4; exit }' "$1/etc/passwd" 2>/dev/null)
  echo "${pod_g:-0}"
}
# pod_mkdir ROOT PATH: creates PATH inside the image's root and prints where it is from outside,
# resolving the image's symbolic links inside the root (Debian's /var/run -> /run), as runc does.
pod_mkdir() {
  chroot "$1" /usr/bin/mkdir -p "$2" || return 1
  pod_p=$(chroot "$1" /usr/bin/readlink -f "$2") || return 1
  echo "$1$pod_p"
}
# pod_bind SRC ROOT PATH rw|ro: a volume mount (rbind, as the CRI asks runc for).
pod_bind() {
  pod_t=$(pod_mkdir "$2" "$3") || return 1
  mount -o rbind "$1" "$pod_t" || return 1
  if [ "$4" = ro ]; then
    mount -o remount,bind,ro "$pod_t" || return 1
  fi
}
# pod_bind_file SRC ROOT DIR NAME: a file bound at DIR/NAME inside the root (the kubelet's
# /etc/hosts and /etc/hostname), its mount point made if the image has none.
pod_bind_file() {
  pod_t=$(pod_mkdir "$2" "$3") || return 1
  [ -e "$pod_t/$4" ] || : > "$pod_t/$4" || return 1
  mount -o bind "$1" "$pod_t/$4"
}
# pod_dev ROOT PATH: a guest device node bound into the container's /dev.
pod_dev() {
  [ -e "$2" ] || { pod_err "device $2 does not exist"; return 1; }
  mkdir -p "$1$(dirname "$2")" && touch "$1$2" && mount -o bind "$2" "$1$2"
}
# pod_proc_guard ROOT: runc's defaults for a container that is not privileged: /proc's kernel
# knobs read-only, and the paths that leak the host masked (a file by /dev/null, a directory by
# an empty read-only tmpfs).
pod_proc_guard() {
  for pod_p in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
    [ -e "$1$pod_p" ] || continue
    mount -o bind "$1$pod_p" "$1$pod_p" && mount -o remount,bind,ro "$1$pod_p" || return 1
  done
  for pod_p in /proc/acpi /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
      /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
    if [ -d "$1$pod_p" ]; then
      mount -t tmpfs -o ro,size=0 tmpfs "$1$pod_p" || return 1
    elif [ -e "$1$pod_p" ]; then
      mount -o bind /dev/null "$1$pod_p" || return 1
    fi
  done
}
# pod_termination NAME DIR CODE POLICY: prints the container's termination message's first line:
# the termination log (4096 bytes at most), else with FallbackToLogsOnError after a failure the
# last 80 lines of its log (2048 bytes at most), as the kubelet does.
pod_termination() {
  pod_msg=$(head -c 4096 "$2/termination-log" 2>/dev/null)
  if [ -z "$pod_msg" ] && [ "$4" = FallbackToLogsOnError ] && [ "$3" != 0 ]; then
    pod_msg=$(tail -n 80 "$2/log" | tail -c 2048)
  fi
  if [ -n "$pod_msg" ]; then
    pod_say termination-log "$1" "$(printf '%s\n' "$pod_msg" | head -n 1)"
  fi
  return 0
}
# pod_reap ROOT: ends every process still running in a container whose main process has ended,
# as the end of its PID namespace would (the script makes none: the processes are found by
# their root directory); their output then ends too.
pod_reap() {
  for pod_p in /proc/[0-9]*; do
    [ "$(readlink "$pod_p/root" 2>/dev/null)" = "$1" ] && kill -KILL "${pod_p#/proc/}" 2>/dev/null
  done
  return 0
}
# pod_logger DIR: the container's output goes to the console and DIR/log, through a fifo so the
# shell keeps the container's own PID and exit code.
pod_logger() {
  rm -f "$1/log.fifo" && mkfifo "$1/log.fifo" || return 1
  tee "$1/log" < "$1/log.fifo" &
  pod_tee=$!
}
'''


class Script:
    def __init__(self, pod):
        self.pod = pod
        self.lines = []
        self.heredoc_n = 0

    def emit(self, line=""):
        self.lines.append(line)

    def steps(self, steps, indent="  "):
        for s in steps:
            self.emit(f"{indent}{s} || return 1")

    def heredoc(self, content, target, indent="  "):
        # A quoted delimiter: the content is written verbatim, no expansion.
        self.heredoc_n += 1
        delim = f"KMODKIT_POD_EOF_{self.heredoc_n}"
        while delim in content.split("\n"):
            delim += "_"
        if content.endswith("\n"):
            self.emit(f"{indent}cat > {target} <<'{delim}' || return 1")
            for line in content[:-1].split("\n"):
                self.lines.append(line)
            self.lines.append(delim)
        else:
            self.emit(f"{indent}printf '%s' {q(content)} > {target} || return 1")

    def render(self):
        pod = self.pod
        # Check every container (images, devices, users) before writing anything.
        self.containers = []
        for c in pod.init_containers + pod.containers:
            image = pod.image(c)
            env, mapping = pod.environment(c, image)
            argv = pod.argv(c, image, mapping)
            sec = pod.security(c, image)
            devices = [d for _, ds in pod.device_resources(c) for d in ds]
            self.containers.append((c, image, env, argv, sec, devices))
            for m in c.get("volumeMounts") or []:
                if m["name"] not in pod.volumes:
                    raise RenderError(f"container {c['name']}: volumeMount {m['name']} names no volume")
        self.emit("# Generated by tests/pod/render-pod.py from StatefulSet "
                  f"{pod.namespace}/{pod.sts['metadata']['name']}: pod {pod.name}. Do not edit.")
        self.emit("# Usage: . pod.sh; pod_prepare; pod_init || fail; pod_main_start; ...; pod_main_stop")
        self.emit("# Not done, as they do not change what runs here:")
        for item in pod.ignored:
            self.emit(f"#   {item}")
        self.emit(f"POD_RUN={q(pod.run_dir)}")
        self.emit("POD_MAIN_PID=")
        self.emit("POD_MAIN_TEE=")
        self.lines.extend(HELPERS.strip("\n").split("\n"))
        self.emit()
        self.render_prepare()
        for i, (c, image, env, argv, sec, devices) in enumerate(self.containers):
            self.render_container(i, c, image, env, argv, sec, devices)
        self.render_runners()
        self.render_probes()
        return "\n".join(self.lines) + "\n"

    def render_prepare(self):
        pod = self.pod
        pod_sc = pod.spec.get("securityContext") or {}
        fs_group = pod_sc.get("fsGroup")
        policy = pod_sc.get("fsGroupChangePolicy", "Always")
        if policy not in ("Always", "OnRootMismatch"):
            raise RenderError(f"pod spec field spec.securityContext.fsGroupChangePolicy {policy} is not Always or OnRootMismatch")
        self.emit("# Pod-level volumes, made once, as the kubelet does before the first container.")
        self.emit("pod_prepare() {")
        self.steps([f'mkdir -p "$POD_RUN/volumes" "$POD_RUN/containers"'])
        self.emit("  # The kubelet's /etc/hosts and /etc/hostname for every container.")
        self.heredoc(pod.hosts_file(), '"$POD_RUN/hosts"')
        self.heredoc(pod.name + "\n", '"$POD_RUN/hostname"')
        for name, v in pod.volumes.items():
            kind = pod.volume_kind(v)
            d = q(pod.volume_dir(name))
            self.emit(f"  # volume {name}: {kind}")
            ownership = None
            if kind == "emptyDir":
                src = v["emptyDir"] or {}
                for key in src:
                    if key not in ("medium", "sizeLimit"):
                        raise RenderError(f"volume {name}: emptyDir.{key} is not implemented")
                medium = src.get("medium", "")
                self.steps([f"mkdir -p {d}"])
                if medium == "Memory":
                    opts = "mode=0777"
                    if "sizeLimit" in src:
                        opts += f",size={math.ceil(quantity(src['sizeLimit'], f'volume {name}: sizeLimit'))}"
                    self.steps([f"mount -t tmpfs -o {opts} tmpfs {d}"])
                elif medium.startswith("HugePages"):
                    sizes = pod.config.get("hugepages") or {}
                    if medium not in sizes:
                        raise RenderError(f"volume {name}: medium {medium} is not in the config's hugepages")
                    self.steps([f"mount -t hugetlbfs -o {q('pagesize=' + sizes[medium])} nodev {d}"])
                elif medium == "":
                    # A directory on run_dir, which the caller has made a tmpfs.
                    self.steps([f"chmod 0777 {d}"])
                else:
                    raise RenderError(f"volume {name}: emptyDir medium {medium} is not implemented")
                ownership = "rw"
            elif kind in ("configMap", "downwardAPI"):
                files = pod.projected_files(v)
                self.steps([f"pod_atomic_begin {d}"])
                tops = []
                for path, content, b64, mode in files:
                    target = f"{d}/\"$pod_ts\"/{q(path)}"
                    if "/" in path:
                        self.steps([f"mkdir -p {d}/\"$pod_ts\"/{q(path.rsplit('/', 1)[0])}"])
                    if b64 is not None:
                        self.steps([f"printf '%s' {q(b64)} | base64 -d > {target}"])
                    else:
                        self.heredoc(content, target)
                    self.steps([f"chmod {mode:04o} {target}"])
                    top = path.split("/")[0]
                    if top not in tops:
                        tops.append(top)
                self.steps([f"pod_atomic_end {d} {' '.join(q(t) for t in tops)}".rstrip()])
                ownership = "ro"
            elif kind == "persistentVolumeClaim":
                for key in v["persistentVolumeClaim"]:
                    if key not in ("claimName", "readOnly"):
                        raise RenderError(f"volume {name}: persistentVolumeClaim.{key} is not implemented")
                self.steps([f"[ -d {d} ] || pod_err {q(f'volume {name}: claim directory {pod.volume_dir(name)} does not exist')}"])
                ownership = "rw"
            elif kind == "hostPath":
                htype = v["hostPath"].get("type", "")
                path = v["hostPath"]["path"]
                tests = {"Directory": "-d", "File": "-f", "Socket": "-S", "CharDevice": "-c",
                         "BlockDevice": "-b"}
                if htype in tests:
                    self.steps([f"[ {tests[htype]} {d} ] || pod_err {q(f'volume {name}: hostPath {path} is not a {htype}')}"])
                elif htype == "DirectoryOrCreate":
                    self.steps([f"mkdir -p -m 0755 {d}"])
                elif htype == "FileOrCreate":
                    self.steps([f"[ -e {d} ] || touch {d}"])
                elif htype != "":
                    raise RenderError(f"volume {name}: hostPath type {htype} is not implemented")
            if ownership and fs_group is not None:
                self.steps([f"pod_fsgroup {d} {int(fs_group)} {ownership} {policy}"])
        self.emit("}")
        self.emit()

    def render_container(self, i, c, image, env, argv, sec, devices):
        pod = self.pod
        name = c["name"]
        root_dir = f'"$POD_RUN/containers/"{q(name)}'
        self.emit(f"# container {name} ({c['image']})")
        self.emit(f"pod_setup_{i}() {{")
        self.emit(f"  pod_r={root_dir}")
        self.emit('  pod_root="$pod_r/root"')
        lower = q(image["root"]) if "root" in image else None
        if lower is None:
            raise RenderError(f"container {name}: image {c['image']} has no root in the config")
        self.steps([
            'mkdir -p "$pod_r/upper" "$pod_r/work" "$pod_root"',
            f'mount -t overlay overlay -o "lowerdir="{lower}",upperdir=$pod_r/upper,workdir=$pod_r/work" "$pod_root"',
            'mkdir -p "$pod_root/proc" "$pod_root/sys" "$pod_root/dev"',
            'mount -t proc proc "$pod_root/proc"',
            'mount -o rbind /sys "$pod_root/sys"',
        ])
        if not sec["privileged"]:
            self.steps(['mount -o remount,bind,ro "$pod_root/sys"'])
            self.steps(['mount -t tmpfs -o mode=0755,size=65536k,nosuid tmpfs "$pod_root/dev"'])
            for n in DEFAULT_DEVICES:
                self.steps([f'pod_dev "$pod_root" /dev/{n}'])
            self.steps(['ln -s /proc/self/fd "$pod_root/dev/fd"',
                        'ln -s /proc/self/fd/0 "$pod_root/dev/stdin"',
                        'ln -s /proc/self/fd/1 "$pod_root/dev/stdout"',
                        'ln -s /proc/self/fd/2 "$pod_root/dev/stderr"'])
            self.steps(['pod_proc_guard "$pod_root"'])
            seen = set()
            for d in devices:
                for path in self.device_paths(name, d):
                    if path not in seen:
                        seen.add(path)
                        self.steps([f'pod_dev "$pod_root" {q(path)}'])
        else:
            # Privileged: the guest's /dev itself, every device, present and future.
            self.steps(['mount -o rbind /dev "$pod_root/dev"'])
        self.steps(['mkdir -p "$pod_root/dev/shm"',
                    'mount -t tmpfs -o mode=1777,size=65536k,nosuid,nodev,noexec shm "$pod_root/dev/shm"',
                    ': > "$pod_r/termination-log"',
                    '[ -e "$pod_root/dev/termination-log" ] || touch "$pod_root/dev/termination-log"',
                    'mount -o bind "$pod_r/termination-log" "$pod_root/dev/termination-log"'])
        self.steps(['pod_bind_file "$POD_RUN/hosts" "$pod_root" /etc hosts',
                    'pod_bind_file "$POD_RUN/hostname" "$pod_root" /etc hostname'])
        # Shallow mounts first, as containerd orders them, so /a/b lands on the volume at /a.
        mounts = sorted(c.get("volumeMounts") or [], key=lambda m: len([p for p in m["mountPath"].split("/") if p]))
        for m in mounts:
            mode = "ro" if m.get("readOnly") else "rw"
            self.steps([f'pod_bind {q(pod.volume_dir(m["name"]))} "$pod_root" {q(m["mountPath"])} {mode}'])
        workdir = c.get("workingDir") or image.get("workdir") or "/"
        self.steps([f'pod_mkdir "$pod_root" {q(workdir)} > /dev/null'])
        if sec["read_only_root"]:
            self.steps(['mount -o remount,bind,ro "$pod_root"'])
        self.emit("}")
        # The process: env -i with the container's environment, then setpriv (both from the image).
        self.emit(f"pod_exec_{i}() {{")
        self.emit(f"  pod_r={root_dir}")
        if sec["gid"] is None:
            self.emit(f'  pod_g=$(pod_gid "$pod_r/root" {sec["uid"]})')
            gid = '"$pod_g"'
        else:
            gid = str(int(sec["gid"]))
        words = ['exec chroot "$pod_r/root" /usr/bin/env -i', f"-C {q(workdir)}"]
        words += [q(f"{k}={v}") for k, v in env]
        words += ["/usr/bin/setpriv", f"--reuid={sec['uid']}", f"--regid={gid}"]
        if sec["groups"]:
            words.append("--groups=" + ",".join(str(g) for g in sec["groups"]))
        else:
            words.append("--clear-groups")
        if sec["bounding"] is not None:
            caps = ",".join(["-all"] + ["+" + x.lower() for x in sec["bounding"]])
            words += [f"--bounding-set={caps}", "--inh-caps=-all"]
        if sec["no_new_privs"]:
            words.append("--no-new-privs")
        words.append("--")
        words += [q(a) for a in argv]
        self.emit("  " + " \\\n    ".join(words))
        self.emit("}")
        self.emit()

    def probe_url(self, c, field):
        get = c[field]["httpGet"]
        port = get["port"]
        if isinstance(port, str) and not port.isdigit():
            named = [p for p in c.get("ports") or [] if p.get("name") == port]
            if not named:
                raise RenderError(f"container {c['name']}: {field}.httpGet.port {port} names no port of the container")
            port = named[0]["containerPort"]
        host = get.get("host") or self.pod.need(self.pod.config, "pod_ip", "config")
        path = get.get("path", "/")
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{host}:{int(port)}{path}"

    def render_probes(self):
        # The kubelet's way (pkg/probe/http, pkg/kubelet/prober): initialDelaySeconds, then a GET
        # every periodSeconds; a 2xx or 3xx answer within timeoutSeconds is a success; the
        # probe fails after failureThreshold failures in a row, succeeds after successThreshold
        # successes in a row. Defaults as the API's: period 10, timeout 1, failure 3, success 1.
        main = self.pod.containers[0]
        for field, kind in PROBES.items():
            self.emit(f"# pod_main_probe_{kind}: the main container's {field}; 0 once it succeeds, 1 once it fails.")
            self.emit(f"pod_main_probe_{kind}() {{")
            if field not in main:
                self.emit(f"  pod_err {q(main['name'] + ': no ' + field)}")
                self.emit("  return 1")
                self.emit("}")
                continue
            pr = main[field]
            url = self.probe_url(main, field)
            delay = int(pr.get("initialDelaySeconds", 0))
            period = int(pr.get("periodSeconds", 10))
            timeout = int(pr.get("timeoutSeconds", 1))
            failures = int(pr.get("failureThreshold", 3))
            successes = int(pr.get("successThreshold", 1))
            self.emit(f"  sleep {delay}")
            self.emit("  pod_ok=0; pod_bad=0")
            self.emit("  while :; do")
            # (busybox 1.35's wget -T crashes: the timeout applet bounds the request instead.)
            self.emit(f"    if timeout {timeout} wget -q -O /dev/null {q(url)} 2>/dev/null; then")
            self.emit(f"      pod_ok=$((pod_ok + 1)); pod_bad=0; [ \"$pod_ok\" -ge {successes} ] && return 0")
            self.emit("    else")
            self.emit(f"      pod_bad=$((pod_bad + 1)); pod_ok=0; [ \"$pod_bad\" -ge {failures} ] && return 1")
            self.emit("    fi")
            self.emit(f"    sleep {period}")
            self.emit("  done")
            self.emit("}")
        self.emit()

    def device_paths(self, container, device):
        # The SR-IOV device plugin's DeviceSpecs: every "mount"/"dev-mount" of the device's info.
        paths = []

        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("mount", "dev-mount") and isinstance(v, str):
                        if not v.startswith("/dev/") or ".." in v.split("/"):
                            raise RenderError(f"container {container}: device {device.get('address')}: {k} {v} is not under /dev")
                        paths.append(v)
                    else:
                        walk(v)
        walk(device.get("info") or {})
        return paths

    def render_runners(self):
        pod = self.pod
        n_init = len(pod.init_containers)
        grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
        self.emit("# pod_run_container I NAME POLICY: runs container I to its end; returns its exit code.")
        self.emit("pod_run_container() {")
        self.emit('  pod_r="$POD_RUN/containers/$2"')
        self.emit('  if ! pod_setup_$1; then')
        self.emit('    umount -l "$pod_r/root" 2>/dev/null')
        self.emit('    pod_err "$2: setting up the container failed"')
        self.emit('    return 1')
        self.emit('  fi')
        self.emit('  pod_logger "$pod_r" || return 1')
        self.emit('  pod_say start "$2" "$(pod_uptime)"')
        self.emit('  pod_exec_$1 > "$pod_r/log.fifo" 2>&1 &')
        self.emit('  pod_pid=$!')
        self.emit('  wait "$pod_pid"')
        self.emit('  pod_code=$?')
        self.emit('  pod_reap "$pod_r/root"')
        self.emit('  wait "$pod_tee"')
        self.emit('  pod_say exit "$2" "$pod_code" "$(pod_uptime)"')
        self.emit('  pod_termination "$2" "$pod_r" "$pod_code" "$3"')
        # The container is gone: its mounts go with it (a lazy detach takes the whole tree).
        self.emit('  umount -l "$pod_r/root" 2>/dev/null')
        self.emit('  return "$pod_code"')
        self.emit("}")
        self.emit()
        self.emit("# Runs the init containers in order; stops at the first that fails, returning its exit code.")
        self.emit("pod_init() {")
        for i, c in enumerate(pod.init_containers):
            policy = c.get("terminationMessagePolicy", "File")
            self.emit(f"  pod_run_container {i} {q(c['name'])} {policy} || return $?")
        self.emit("  return 0")
        self.emit("}")
        self.emit()
        main = pod.containers[0]
        mname = q(main["name"])
        policy = main.get("terminationMessagePolicy", "File")
        self.emit("# Starts the main container in the background (its PID in POD_MAIN_PID).")
        self.emit("pod_main_start() {")
        self.emit(f'  pod_r="$POD_RUN/containers/"{mname}')
        self.emit(f'  if ! pod_setup_{n_init}; then')
        self.emit('    umount -l "$pod_r/root" 2>/dev/null')
        self.emit(f'    pod_err {q(main["name"] + ": setting up the container failed")}')
        self.emit('    return 1')
        self.emit('  fi')
        self.emit('  pod_logger "$pod_r" || return 1')
        self.emit("  POD_MAIN_TEE=$pod_tee")
        self.emit(f'  pod_say start {mname} "$(pod_uptime)"')
        self.emit(f'  pod_exec_{n_init} > "$pod_r/log.fifo" 2>&1 &')
        self.emit("  POD_MAIN_PID=$!")
        self.emit("}")
        self.emit()
        self.emit("# Waits for the main container to end; returns its exit code.")
        self.emit("pod_main_wait() {")
        self.emit('  [ -n "$POD_MAIN_PID" ] || return 0')
        self.emit('  wait "$POD_MAIN_PID"')
        self.emit("  pod_code=$?")
        self.emit(f'  pod_r="$POD_RUN/containers/"{mname}')
        self.emit('  pod_reap "$pod_r/root"')
        self.emit('  wait "$POD_MAIN_TEE"')
        self.emit("  POD_MAIN_PID=")
        self.emit(f'  pod_say exit {mname} "$pod_code" "$(pod_uptime)"')
        self.emit(f'  pod_termination {mname} "$pod_r" "$pod_code" {policy}')
        self.emit('  umount -l "$pod_r/root" 2>/dev/null')
        self.emit('  return "$pod_code"')
        self.emit("}")
        self.emit()
        self.emit(f"# Stops the main container: SIGTERM, then SIGKILL after terminationGracePeriodSeconds ({grace}).")
        self.emit("pod_main_stop() {")
        self.emit('  [ -n "$POD_MAIN_PID" ] || return 0')
        self.emit('  kill -TERM "$POD_MAIN_PID" 2>/dev/null')
        self.emit("  pod_i=0")
        self.emit(f'  while pod_alive "$POD_MAIN_PID" && [ "$pod_i" -lt {grace * 10} ]; do')
        self.emit("    sleep 0.1")
        self.emit("    pod_i=$((pod_i + 1))")
        self.emit("  done")
        self.emit('  if pod_alive "$POD_MAIN_PID"; then kill -KILL "$POD_MAIN_PID" 2>/dev/null; fi')
        self.emit("  pod_main_wait")
        self.emit("}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", required=True, help="kubectl kustomize output (- for stdin)")
    parser.add_argument("--config", required=True, help="JSON config (- for stdin)")
    parser.add_argument("--out", required=True, help="the script (- for stdout)")
    args = parser.parse_args(argv)
    try:
        def read(path, what):
            try:
                if path == "-":
                    return sys.stdin.read()
                with open(path, encoding="utf-8") as f:
                    return f.read()
            except OSError as e:
                raise RenderError(f"{what} {path}: {e.strerror}")
        try:
            docs = [d for d in yaml.safe_load_all(read(args.manifests, "manifests")) if d]
        except yaml.YAMLError as e:
            raise RenderError(f"manifests {args.manifests}: not YAML: {str(e).splitlines()[0]}")
        try:
            config = json.loads(read(args.config, "config"))
        except json.JSONDecodeError as e:
            raise RenderError(f"config {args.config}: not JSON: {e}")
        script = Script(Pod(docs, config)).render()
        if args.out == "-":
            sys.stdout.write(script)
        else:
            # Written whole or not at all: a half-written script is never left behind.
            tmp = args.out + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(script)
            os.replace(tmp, args.out)
    except RenderError as e:
        print(f"render-pod: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
