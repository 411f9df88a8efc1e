#!/usr/bin/env python3
"""tests/pod/render-pod.py on the real deploy/overlays/kubernetes: the script it writes is run for
real, as root, in a private mount namespace (unshare -m) with busybox sh, on stub image roots:
one small root filesystem whose /usr/bin/<binary> scripts print their argv, environment, ids,
capabilities, the mounts they see and what they can write, in place of the images' binaries.

    tests/pod/test_render_pod.py [unittest options]      exit 125: skipped (no kubectl)"""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent
RENDER = HERE / "render-pod.py"
OVERLAY = SOURCE / "deploy" / "overlays" / "kubernetes"
SKIP = 125

spec = importlib.util.spec_from_file_location("render_pod", RENDER)
render_pod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_pod)

IMAGES = {"init-modules": "0", "seed-data": "65532:65532", "kmod-builder": "0", "firewall": "0"}
INIT_ORDER = ["init-modules", "seed-data", "kmod-builder", "kmod-builder-load", "kmod-builder-bind", "preflight"]

# The stub binary: reports what the container's process sees, one "STUB <what> ..." line each;
# fails when /etc/stub/fail names "<binary> <first arg>" (termination message written first);
# the firewall (not its preflight subcommand) waits for SIGTERM (or ignores it when
# /etc/stub/ignore-term exists).
STUB = r'''#!/bin/sh
me=${0##*/}
say() { echo "STUB $me${1:+ $1} $2"; }
say start ""
for a in "$@"; do say arg "$a"; done
env | sort | while IFS= read -r l; do say env "$l"; done
say id "$(id -u) $(id -g) $(id -G)"
while read -r k v; do
  case $k in CapBnd:|CapEff:|NoNewPrivs:) say "$k" "$v" ;; esac
done < /proc/self/status
say cwd "$(pwd)"
while read -r id parent dev root mp opts rest; do
  fstype=${rest#*- }
  say mount "$mp ${fstype%% *} $opts"
done < /proc/self/mountinfo
[ -c /proc/keys ] && say masked /proc/keys
for p in / /data /modules /host /tmp /etc/podinfo /dev/hugepages /var/run/dpdk /etc/kmodkit/defaults \
    /proc/sys/kernel/hostname; do
  if [ -e "$p" ]; then
    if [ -w "$p" ]; then say writable "$p yes"; else say writable "$p no"; fi
  fi
done
for f in /etc/podinfo/* /etc/kmodkit/defaults/* /etc/hosts /etc/hostname; do
  [ -f "$f" ] && say file "$f $(cat "$f" | tr '\n' '|')"
done
for d in /dev/uio0 /dev/uio1 /dev/kmodkit-test-other; do
  [ -e "$d" ] && say dev "$d"
done
if [ -f /etc/stub/daemon ] && [ "$(cat /etc/stub/daemon)" = "$me ${1:-}" ]; then
  sleep 1000 &
  say daemon "$!"
fi
if [ -f /etc/stub/fail ] && [ "$(cat /etc/stub/fail)" = "$me ${1:-}" ]; then
  echo "stub $me failed on purpose" > /dev/termination-log
  echo "stub $me: failing"
  exit 3
fi
if [ "$me" = firewall ] && [ "${1:-}" != preflight ]; then
  if [ -e /etc/stub/ignore-term ]; then trap '' TERM; else trap 'say term ""; exit 0' TERM; fi
  say ready ""
  while :; do sleep 0.1; done
fi
say end ""
'''

# Copied with their libraries into the stub root (Debian's merged /usr).
TOOLS = ["/bin/sh", "/usr/bin/env", "/usr/bin/setpriv", "/usr/bin/mkdir", "/usr/bin/readlink",
         "/usr/bin/id", "/usr/bin/cat", "/usr/bin/sort", "/usr/bin/tr", "/usr/bin/sleep"]


def usr_path(path):
    p = path
    for top in ("/lib64/", "/lib/", "/bin/", "/sbin/"):
        if p.startswith(top):
            return "/usr" + p
    return p


def make_stub_root(root):
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc/stub", "run", "var", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                         ("sbin", "usr/bin"), ("var/run", "/run")):
        (root / link).symlink_to(target)
    (root / "tmp").chmod(0o1777)
    files = set()
    for tool in TOOLS:
        files.add(tool)
        out = subprocess.run(["ldd", tool], capture_output=True, text=True).stdout
        files.update(re.findall(r"(/\S+) \(0x", out))
    for f in files:
        dest = root / usr_path(f).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
    for name in IMAGES:
        stub = root / "usr/bin" / name
        stub.write_text(STUB)
        stub.chmod(0o755)


def kustomize():
    return subprocess.run(["kubectl", "kustomize", str(OVERLAY)], check=True, capture_output=True,
                          text=True).stdout


class Rendered(unittest.TestCase):
    """Renders into a temporary directory; runs the script there."""

    @classmethod
    def setUpClass(cls):
        cls.manifests = kustomize()

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="kmodkit-pod-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.stub = self.tmp / "image"
        self.run_dir = self.tmp / "run"
        self.pv = self.tmp / "pv"
        self.config = {
            "statefulset": "kmodkit-firewall", "node_name": "node-0", "pod_ip": "10.0.2.15",
            "images": {f"kmodkit/{n}:0.1.0": {"root": str(self.stub), "entrypoint": [f"/usr/bin/{n}"],
                                               "cmd": [], "user": u, "workdir": "/"}
                       for n, u in IMAGES.items()},
            "claims": {"kmodkit-modules": str(self.pv / "modules"), "data": str(self.pv / "data")},
            "devices": {"intel.com/intel_sriov_dpdk": [
                {"address": "0000:00:04.0", "info": {"uio": {"mount": "/dev/uio0"}}},
                {"address": "0000:00:05.0", "info": {"uio": {"mount": "/dev/uio1"}}}]},
            "annotations": {"k8s.v1.cni.cncf.io/network-status": '[{"name": "kmodkit-outside"}]'},
            # The machine running the test may have no 1 GiB pages; the page size is the config's.
            "hugepages": {"HugePages-2Mi": "2M", "HugePages-1Gi": "2M", "HugePages": "2M"},
            "run_dir": str(self.run_dir),
        }

    def render(self, manifests=None, config=None):
        (self.tmp / "manifests.yaml").write_text(manifests if manifests is not None else self.manifests)
        (self.tmp / "config.json").write_text(json.dumps(config if config is not None else self.config))
        out = self.tmp / "pod.sh"
        r = subprocess.run([sys.executable, str(RENDER), "--manifests", str(self.tmp / "manifests.yaml"),
                            "--config", str(self.tmp / "config.json"), "--out", str(out)],
                           capture_output=True, text=True)
        return r, out

    def render_ok(self, manifests=None):
        r, out = self.render(manifests)
        self.assertEqual(r.returncode, 0, r.stderr)
        return out

    def rejected(self, manifests=None, config=None):
        r, out = self.render(manifests, config)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertFalse(out.exists())
        return r.stderr.strip()

    def statefulset(self, docs):
        return next(d for d in docs if d.get("kind") == "StatefulSet")

    def edited(self, edit):
        docs = [d for d in yaml.safe_load_all(self.manifests) if d]
        edit(self.statefulset(docs)["spec"]["template"]["spec"], docs)
        return yaml.safe_dump_all(docs)


def run_in_namespace(tmp, script, body):
    """Runs BODY after sourcing SCRIPT with busybox sh and only busybox's applets on PATH, in a
    private mount namespace whose /dev
    is a tmpfs holding the real null, zero, full, random, urandom and tty plus stand-ins for
    the config's devices and one other device, and whose run_dir is a tmpfs."""
    driver = f'''
set -u
T={render_pod.q(str(tmp))}
# Only busybox's applets, as in the guest.
mkdir -p "$T/bb" && busybox --install -s "$T/bb" || exit 90
PATH="$T/bb"
mkdir -p "$T/realdev" "$T/run" "$T/pv/modules" "$T/pv/data"
mount -o rbind /dev "$T/realdev" || exit 90
mount -t tmpfs -o mode=0755 tmpfs /dev || exit 90
for n in null zero full random urandom tty; do
  touch "/dev/$n" && mount -o bind "$T/realdev/$n" "/dev/$n" || exit 90
done
echo uio0 > /dev/uio0; echo uio1 > /dev/uio1; echo other > /dev/kmodkit-test-other
mount -t tmpfs tmpfs "$T/run" || exit 90
. {render_pod.q(str(script))}
{body}
'''
    # Its own process group, so that a hung run ends with every process it started.
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "busybox", "sh", "-c", driver],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\ntest_render_pod: the run took more than 120 s and was killed"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stub_lines(out, container_binary, what):
    prefix = f"STUB {container_binary} {what} "
    return [line[len(prefix):] for line in out.splitlines() if line.startswith(prefix)]


def markers(out):
    return [line.split()[1:] for line in out.splitlines() if line.startswith("KMODKIT-POD ")]


def reports(out):
    """Each container's STUB lines, in the order the containers ran (split at each start)."""
    runs, current = [], None
    for line in out.splitlines():
        if line.startswith("STUB "):
            parts = line.split(" ", 3)
            if parts[2] == "start":
                current = []
                runs.append(current)
            current.append(line)
    return runs


def field(run, what):
    out = []
    for line in run:
        parts = line.split(" ", 3)
        if parts[2] == what:
            out.append(parts[3] if len(parts) > 3 else "")
    return out


HAVE_NAMESPACES = os.geteuid() == 0 and shutil.which("unshare") and shutil.which("busybox")


class TheScript(Rendered):
    def test_the_script_rendered_from_the_kubernetes_overlay_is_valid_busybox_sh_and_bash(self):
        out = self.render_ok()
        for shell in (["busybox", "sh"], ["bash"]):
            if shutil.which(shell[0]):
                r = subprocess.run(shell + ["-n", str(out)], capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
        text = out.read_text()
        for fn in ("pod_prepare()", "pod_init()", "pod_main_start()", "pod_main_stop()"):
            self.assertIn(fn, text)

    def test_the_configmap_is_written_verbatim_and_unused_fields_are_listed_in_a_comment(self):
        text = self.render_ok().read_text()
        rules = next(d for d in yaml.safe_load_all(self.manifests)
                     if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kmodkit-firewall-rules")
        self.assertIn(rules["data"]["firewall.rules"], text)
        self.assertRegex(text, r"(?m)^#   resources cpu, memory")

    def test_manifest_values_are_single_quoted_so_the_shell_expands_nothing(self):
        def edit(spec, docs):
            spec["containers"][0]["env"].append({"name": "TRICKY", "value": "it's $HOME `id` $(A) \\"})
        text = self.render_ok(self.edited(edit)).read_text()
        self.assertIn("'TRICKY=it'\\''s $HOME `id` $(A) \\'", text)


    def test_the_pod_is_named_after_the_first_ordinal(self):
        docs = [d for d in yaml.safe_load_all(self.manifests) if d]
        self.statefulset(docs)["spec"]["ordinals"] = {"start": 3}
        self.assertIn("'HOSTNAME=kmodkit-firewall-3'", self.render_ok(yaml.safe_dump_all(docs)).read_text())

    def test_a_missing_configmap_is_an_error_unless_it_is_optional(self):
        def edit(spec, docs):
            spec["volumes"].append({"name": "extra", "configMap": {"name": "nowhere"}})
        self.assertIn("ConfigMap nowhere", self.rejected(self.edited(edit)))

        def optional(spec, docs):
            spec["volumes"].append({"name": "extra", "configMap": {"name": "nowhere", "optional": True}})
        self.assertIn("pod_atomic_end '", self.render_ok(self.edited(optional)).read_text())


class Expansion(unittest.TestCase):
    def test_dollar_parentheses_expand_defined_variables_and_double_dollar_escapes(self):
        m = {"A": "x", "B": "y"}
        self.assertEqual(render_pod.expand("$(A)-$(B)", m), "x-y")
        self.assertEqual(render_pod.expand("$$(A)", m), "$(A)")
        self.assertEqual(render_pod.expand("$(C)", m), "$(C)")
        self.assertEqual(render_pod.expand("$(A", m), "$(A")
        self.assertEqual(render_pod.expand("$A $", m), "$A $")
        self.assertEqual(render_pod.expand("$$$(A)", m), "$x")

    def test_resource_values_are_divided_and_rounded_up_as_the_kubelet_does(self):
        c = {"name": "c", "resources": {"limits": {"cpu": "250m", "memory": "129Mi", "hugepages-1Gi": "2Gi"}}}
        self.assertEqual(render_pod.resource_value(c, "limits.cpu", None, "t"), "1")
        self.assertEqual(render_pod.resource_value(c, "limits.cpu", "1m", "t"), "250")
        self.assertEqual(render_pod.resource_value(c, "limits.memory", "1Mi", "t"), "129")
        self.assertEqual(render_pod.resource_value(c, "limits.memory", "1Gi", "t"), "1")
        self.assertEqual(render_pod.resource_value(c, "limits.hugepages-1Gi", "1Gi", "t"), "2")


class Errors(Rendered):
    def test_an_image_the_config_lacks_is_an_error_naming_it(self):
        del self.config["images"]["kmodkit/seed-data:0.1.0"]
        self.assertIn("kmodkit/seed-data:0.1.0", self.rejected(config=self.config))

    def test_a_claim_the_config_lacks_is_an_error_naming_it(self):
        del self.config["claims"]["data"]
        self.assertIn("claim data", self.rejected(config=self.config))

    def test_a_device_resource_the_config_lacks_is_an_error_naming_it(self):
        del self.config["devices"]["intel.com/intel_sriov_dpdk"]
        self.assertIn("intel.com/intel_sriov_dpdk", self.rejected(config=self.config))

    def test_a_hugepages_medium_the_config_lacks_is_an_error_naming_it(self):
        del self.config["hugepages"]["HugePages-1Gi"]
        self.assertIn("HugePages-1Gi", self.rejected(config=self.config))

    def test_unimplemented_fields_are_errors_naming_the_field(self):
        cases = {
            "lifecycle": lambda s, d: s["containers"][0].update(lifecycle={"preStop": {"exec": {"command": ["x"]}}}),
            "startupProbe": lambda s, d: s["containers"][0].update(startupProbe={"exec": {"command": ["x"]}}),
            "envFrom": lambda s, d: s["initContainers"][0].update(envFrom=[{"configMapRef": {"name": "x"}}]),
            "subPath": lambda s, d: s["containers"][0]["volumeMounts"][0].update(subPath="etc"),
            "mountPropagation": lambda s, d: s["initContainers"][0]["volumeMounts"][1].update(
                mountPropagation="HostToContainer"),
            "secret": lambda s, d: s["volumes"].append({"name": "s", "secret": {"secretName": "s"}}),
            "hostAliases": lambda s, d: s.update(hostAliases=[{"ip": "1.2.3.4", "hostnames": ["a"]}]),
            "automountServiceAccountToken": lambda s, d: s.pop("automountServiceAccountToken"),
            "seccompProfile": lambda s, d: s["containers"][0]["securityContext"].update(
                seccompProfile={"type": "RuntimeDefault"}),
        }
        for name, edit in cases.items():
            with self.subTest(field=name):
                self.assertIn(name, self.rejected(self.edited(edit)))

    def test_the_main_containers_http_probes_become_functions_that_get_its_named_port_on_the_pod_ip(self):
        text = self.render_ok().read_text()
        ip = self.config["pod_ip"]
        for kind, path in (("startup", "/healthz"), ("liveness", "/healthz"), ("readiness", "/readyz")):
            with self.subTest(probe=kind):
                body = text.split(f"pod_main_probe_{kind}() {{", 1)[1].split("\n}", 1)[0]
                self.assertIn(f"'http://{ip}:9100{path}'", body)
        startup = text.split("pod_main_probe_startup() {", 1)[1].split("\n}", 1)[0]
        self.assertIn("timeout 1 wget -q ", startup)  # the API's default timeout
        self.assertIn('[ "$pod_bad" -ge 90 ] && return 1', startup)
        self.assertIn("sleep 2\n", startup + "\n")

    def test_the_probe_functions_succeed_on_a_2xx_answer_and_fail_on_an_error_or_no_server_under_busybox(self):
        # A real HTTP server on a free port of 127.0.0.1, the pod's IP here; /healthz answers, /readyz is 404.
        served = self.tmp / "served"
        served.mkdir()
        (served / "healthz").write_text("ok\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

        def edit(spec, docs):
            main = spec["containers"][0]
            main["ports"] = [{"name": "metrics", "containerPort": port}]
            main["startupProbe"] = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 1, "failureThreshold": 3}
            main["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1, "failureThreshold": 2}
        self.config["pod_ip"] = "127.0.0.1"
        script = self.render_ok(self.edited(edit))
        bb = self.tmp / "bb"
        bb.mkdir()
        subprocess.run(["busybox", "--install", "-s", str(bb)], check=True)
        probe = ("PATH=" + str(bb) + "; . " + str(script) + "; pod_main_probe_startup; echo startup=$?; "
                 "pod_main_probe_readiness; echo readiness=$?")
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(served)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                with socket.socket() as c:
                    if c.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            up = subprocess.run(["busybox", "sh", "-c", probe], capture_output=True, text=True, timeout=60)
        finally:
            server.terminate()
            server.wait()
        down = subprocess.run(["busybox", "sh", "-c", probe], capture_output=True, text=True, timeout=60)
        self.assertIn("startup=0\nreadiness=1\n", up.stdout, up.stdout + up.stderr)
        self.assertIn("startup=1\nreadiness=1\n", down.stdout, down.stdout + down.stderr)

    def test_a_probe_that_is_not_http_or_names_no_port_of_the_container_is_refused(self):
        def unnamed(spec, docs):
            spec["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "admin"}}

        def tcp(spec, docs):
            spec["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 9100}}
        self.assertIn("readinessProbe.httpGet.port admin names no port of the container", self.rejected(self.edited(unnamed)))
        self.assertIn("livenessProbe.tcpSocket is not implemented", self.rejected(self.edited(tcp)))

    def test_a_non_root_container_that_would_run_as_root_is_refused(self):
        def edit(spec, docs):
            spec["initContainers"][1]["securityContext"].pop("runAsUser")
            spec["initContainers"][1]["securityContext"].pop("runAsGroup")
        self.config["images"]["kmodkit/seed-data:0.1.0"]["user"] = "0"
        self.assertIn("runAsNonRoot", self.rejected(self.edited(edit), self.config))


@unittest.skipUnless(HAVE_NAMESPACES, "needs root, unshare and busybox")
class ThePodRuns(Rendered):
    def setUp(self):
        super().setUp()
        make_stub_root(self.stub)

    def run_pod(self, manifests=None, after_init="", stop="pod_main_stop"):
        script = self.render_ok(manifests)
        body = f'''
pod_prepare || {{ echo "PREPARE-FAILED"; exit 91; }}
ls -ln "$T/pv" | sed 's/^/DRV pv /'
for f in "$T/run/volumes/rules/"* "$T/run/volumes/rules/"..data; do echo "DRV rules ${{f##*/}} -> $(readlink "$f")"; done
pod_init
echo "DRV init-rc $?"
{after_init}
'''
        return run_in_namespace(self.tmp, script, body)

    def full_run(self, grace_body="pod_main_stop"):
        body = f'''
pod_main_start || echo "DRV main-start-failed"
i=0
until grep -q 'STUB firewall ready' "$T/run/containers/firewall/log" 2>/dev/null || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
{grace_body}
echo "DRV main-rc $?"
'''
        return self.run_pod(after_init=body)

    def test_the_init_containers_run_in_order_then_the_main_container_until_it_is_stopped(self):
        r = self.full_run()
        out = r.stdout
        self.assertEqual(r.returncode, 0, out + r.stderr)
        self.assertIn("DRV init-rc 0", out, out + r.stderr)
        seq = [(m[0], m[1]) for m in markers(out) if m[0] in ("start", "exit")]
        expected = []
        for name in INIT_ORDER:
            expected += [("start", name), ("exit", name)]
        expected += [("start", "firewall"), ("exit", "firewall")]
        self.assertEqual(seq, expected, out + r.stderr)
        for m in markers(out):
            if m[0] == "exit":
                self.assertEqual(m[2], "0", m)
            self.assertRegex(m[-1], r"^[0-9]+\.[0-9]+$")
        self.assertIn("STUB firewall term", out)
        self.assertIn("DRV main-rc 0", out)
        runs = reports(out)
        self.assertEqual([run[0].split()[1] for run in runs],
                         ["init-modules", "seed-data", "kmod-builder", "kmod-builder", "kmod-builder", "firewall", "firewall"])
        self.check_args_and_env(runs)
        self.check_users_and_capabilities(runs)
        self.check_mounts(runs)
        self.check_volumes(out, runs)

    def check_args_and_env(self, runs):
        init_modules, seed, build, load, bind, preflight, firewall = runs
        self.assertEqual(field(init_modules, "arg"), [])
        self.assertEqual(field(build, "arg"), ["build"])
        self.assertEqual(field(load, "arg"), ["load"])
        self.assertEqual(field(bind, "arg"), ["bind"])
        self.assertEqual(field(preflight, "arg"), ["preflight"])
        self.assertEqual(field(firewall, "arg"), [])
        # env -i: exactly the container's variables, PATH and HOSTNAME (dash adds PWD).
        env = dict(line.split("=", 1) for line in field(init_modules, "env"))
        env.pop("PWD", None)
        self.assertEqual(env, {"PATH": render_pod.DEFAULT_PATH, "HOSTNAME": "kmodkit-firewall-0",
                               "KMODKIT_VOLUME": "/modules", "KMODKIT_HOST_ROOT": "/host"})
        env = dict(line.split("=", 1) for line in field(seed, "env"))
        self.assertEqual(env["KMODKIT_TREE"], "/etc/kmodkit/defaults/..data=etc/kmodkit")
        for run in (bind, preflight, firewall):
            env = dict(line.split("=", 1) for line in field(run, "env"))
            self.assertEqual(env["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK"], "0000:00:04.0,0000:00:05.0")
            self.assertEqual(json.loads(env["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"]),
                             {"0000:00:04.0": {"uio": {"mount": "/dev/uio0"}},
                              "0000:00:05.0": {"uio": {"mount": "/dev/uio1"}}})
        for run in (init_modules, seed, build, load):
            self.assertFalse([l for l in field(run, "env") if l.startswith("PCIDEVICE_")])
        env = dict(line.split("=", 1) for line in field(firewall, "env"))
        self.assertEqual(env["KMODKIT_RULES"], "/data/etc/kmodkit/firewall.rules")
        # preflight: the firewall's CPU limit through the downward API, its own view of the pod.
        env = dict(line.split("=", 1) for line in field(preflight, "env"))
        self.assertEqual(env["KMODKIT_CPUS"], "4")
        self.assertEqual(env["KMODKIT_NETWORK_STATUS"], "/etc/podinfo/network-status")

    def check_users_and_capabilities(self, runs):
        init_modules, seed, build, load, bind, preflight, firewall = runs
        host_bounding = subprocess.run(["grep", "CapBnd", "/proc/self/status"], capture_output=True,
                                       text=True).stdout.split()[1]
        self.assertEqual(field(init_modules, "id"), ["0 0 0 65532"])
        self.assertEqual(field(seed, "id"), ["65532 65532 65532"])
        self.assertEqual(field(firewall, "id"), ["0 0 0 65532"])
        # CHOWN DAC_OVERRIDE FOWNER; none; all (privileged); IPC_LOCK.
        self.assertEqual(field(init_modules, "CapBnd:"), ["000000000000000b"])
        self.assertEqual(field(init_modules, "CapEff:"), ["000000000000000b"])
        self.assertEqual(field(seed, "CapEff:"), ["0000000000000000"])
        self.assertEqual(field(build, "CapBnd:"), ["0000000000000000"])
        self.assertEqual(field(load, "CapBnd:"), [host_bounding])
        self.assertEqual(field(bind, "CapEff:"), [host_bounding])
        self.assertEqual(field(firewall, "CapBnd:"), ["0000000000004000"])
        self.assertEqual(field(preflight, "CapBnd:"), ["0000000000000000"])
        for run in (init_modules, seed, build, preflight, firewall):
            self.assertEqual(field(run, "NoNewPrivs:"), ["1"])
        for run in (load, bind):
            self.assertEqual(field(run, "NoNewPrivs:"), ["0"])
            self.assertEqual(field(run, "cwd"), ["/"])

    def check_mounts(self, runs):
        init_modules, seed, build, load, bind, preflight, firewall = runs

        def mounts(run):
            out = {}
            for line in field(run, "mount"):
                mp, fstype, opts = line.split(" ")
                out[mp] = (fstype, opts.split(","))
            return out

        def writable(run, under=""):
            out = dict(line.split(" ") for line in field(run, "writable"))
            return {k: v for k, v in out.items() if k.startswith("/proc/") == (under == "/proc")}

        for run in (init_modules, seed, build, firewall):
            self.assertEqual(writable(run)["/"], "no")
            self.assertIn("ro", mounts(run)["/"][1])
            self.assertIn("ro", mounts(run)["/sys"][1])
            self.assertEqual(mounts(run)["/dev"][0], "tmpfs")
        # runc's read-only and masked /proc paths, for the containers that are not privileged.
        for run in (init_modules, seed, build, firewall):
            self.assertEqual(writable(run, "/proc"), {"/proc/sys/kernel/hostname": "no"})
            self.assertEqual(field(run, "masked"), ["/proc/keys"])
        for run in (load, bind):
            self.assertEqual(writable(run, "/proc"), {"/proc/sys/kernel/hostname": "yes"})
            self.assertEqual(field(run, "masked"), [])
            self.assertEqual(writable(run)["/"], "yes")
            self.assertIn("rw", mounts(run)["/sys"][1])
        self.assertEqual(mounts(init_modules)["/"][0], "overlay")
        self.assertEqual(writable(init_modules), {"/": "no", "/modules": "yes", "/host": "no", "/tmp": "yes"})
        # seed-data has no /tmp volume: the image's /tmp is on the read-only root.
        self.assertEqual(writable(seed), {"/": "no", "/data": "yes", "/tmp": "no", "/etc/kmodkit/defaults": "no"})
        self.assertIn("ro", mounts(load)["/modules"][1])
        self.assertIn("rw", mounts(bind)["/modules"][1])
        # /var/run is the image's link to /run: the volume lands on /run/dpdk inside the root.
        fw = mounts(firewall)
        self.assertEqual(fw["/run/dpdk"][0], "tmpfs")
        self.assertEqual(fw["/dev/hugepages"][0], "hugetlbfs")
        self.assertEqual(fw["/dev/shm"][0], "tmpfs")
        self.assertIn("/dev/termination-log", fw)
        self.assertEqual(writable(firewall), {"/": "no", "/data": "no", "/tmp": "no", "/etc/podinfo": "no",
                                              "/dev/hugepages": "yes", "/var/run/dpdk": "yes"})
        # Devices: the firewall's VFs only (and preflight's, the same); a privileged container
        # sees the guest's /dev.
        self.assertEqual(field(firewall, "dev"), ["/dev/uio0", "/dev/uio1"])
        self.assertEqual(field(preflight, "dev"), ["/dev/uio0", "/dev/uio1"])
        self.assertEqual(field(seed, "dev"), [])
        self.assertEqual(field(bind, "dev"), ["/dev/uio0", "/dev/uio1", "/dev/kmodkit-test-other"])

    def check_volumes(self, out, runs):
        firewall = runs[6]
        files = dict(line.split(" ", 1) for line in field(firewall, "file"))
        self.assertEqual(files["/etc/podinfo/cpu-limit"], "4")
        self.assertEqual(files["/etc/podinfo/memory-limit"], "1024")
        self.assertEqual(files["/etc/podinfo/hugepages-limit"], "2")
        self.assertEqual(files["/etc/podinfo/network-status"], '[{"name": "kmodkit-outside"}]')
        # The kubelet's /etc/hosts and /etc/hostname, also on a read-only root.
        self.assertEqual(files["/etc/hostname"], "kmodkit-firewall-0|")
        self.assertTrue(files["/etc/hosts"].startswith("# Kubernetes-managed hosts file.|127.0.0.1\tlocalhost|"))
        self.assertTrue(files["/etc/hosts"].endswith(
            "|10.0.2.15\tkmodkit-firewall-0.kmodkit-firewall.kmodkit.svc.cluster.local\tkmodkit-firewall-0|"))
        seed_files = dict(line.split(" ", 1) for line in field(runs[1], "file"))
        self.assertTrue(seed_files["/etc/kmodkit/defaults/firewall.rules"].startswith("# Deny new flows"))
        rules = {m.group(1): m.group(2) for m in re.finditer(r"(?m)^DRV rules (\S+) -> (\S*)$", out)}
        self.assertEqual(rules["firewall.rules"], "..data/firewall.rules")
        self.assertRegex(rules["..data"], r"^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$")
        # fsGroup: the claims' roots now belong to group 65532, setgid, group-writable.
        claim_roots = [line for line in out.splitlines() if line.startswith("DRV pv d")]
        self.assertEqual(len(claim_roots), 2, out)
        for line in claim_roots:
            perms, _, _, group = line.split()[2:6]
            self.assertEqual(group, "65532", line)
            self.assertRegex(perms, r"^d.....s", line)
            self.assertEqual(perms[4:6], "rw", line)

    def test_the_first_failing_init_container_stops_the_pod_with_its_exit_code_and_message(self):
        (self.stub / "etc/stub/fail").write_text("kmod-builder build\n")
        r = self.run_pod()
        out = r.stdout
        self.assertIn("DRV init-rc 3", out, out + r.stderr)
        started = [m[1] for m in markers(out) if m[0] == "start"]
        self.assertEqual(started, ["init-modules", "seed-data", "kmod-builder"])
        self.assertIn(["exit", "kmod-builder", "3"], [m[:3] for m in markers(out)])
        self.assertIn(["termination-log", "kmod-builder", "stub", "kmod-builder", "failed", "on", "purpose"],
                      markers(out))

    def test_a_failure_without_a_termination_message_reports_the_last_log_lines(self):
        (self.stub / "usr/bin/init-modules").write_text("#!/bin/sh\necho first words\necho last words\nexit 4\n")
        r = self.run_pod()
        self.assertIn("DRV init-rc 4", r.stdout, r.stdout + r.stderr)
        # FallbackToLogsOnError: the message is the log's last 80 lines; its first line is shown.
        tail = [m for m in markers(r.stdout) if m[0] == "termination-log"]
        self.assertEqual(tail, [["termination-log", "init-modules", "first", "words"]])

    def test_processes_a_container_leaves_behind_end_with_it(self):
        (self.stub / "etc/stub/daemon").write_text("kmod-builder load\n")
        r = self.run_pod(after_init='''
for p in /proc/[0-9]*; do
  case $(readlink "$p/root") in "$T"/*) echo "DRV left ${p#/proc/}" ;; esac
done
''')
        self.assertIn("DRV init-rc 0", r.stdout, r.stdout + r.stderr)
        self.assertIn("STUB kmod-builder daemon", r.stdout)
        self.assertNotIn("DRV left", r.stdout)

    def test_a_main_container_that_ignores_sigterm_is_killed_after_the_grace_period(self):
        (self.stub / "etc/stub/ignore-term").write_text("")

        def edit(spec, docs):
            spec["terminationGracePeriodSeconds"] = 1
        self.manifests = self.edited(edit)
        r = self.full_run()
        self.assertIn(["exit", "firewall", "137"], [m[:3] for m in markers(r.stdout)], r.stdout + r.stderr)
        self.assertIn("DRV main-rc 137", r.stdout)

    def test_configmap_items_and_modes_are_honoured_in_the_atomic_writer_layout(self):
        def edit(spec, docs):
            rules = next(v for v in spec["volumes"] if v["name"] == "rules")
            rules["configMap"]["defaultMode"] = 0o640
            rules["configMap"]["items"] = [{"key": "firewall.rules", "path": "sub/dir/rules.txt"},
                                           {"key": "firewall.rules", "path": "again", "mode": 0o400}]
        script = self.render_ok(self.edited(edit))
        r = run_in_namespace(self.tmp, script, '''
pod_prepare || exit 91
cd "$T/run/volumes/rules" && stat -c 'DRV %n %a %g %N' * ..data ..data/sub/dir/rules.txt ..data/again
''')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = {line.split()[1]: line.split(" ", 4)[2:] for line in r.stdout.splitlines() if line.startswith("DRV ")}
        self.assertEqual(sorted(lines), ["..data", "..data/again", "..data/sub/dir/rules.txt", "again", "sub"])
        self.assertTrue(lines["sub"][2].endswith("-> '..data/sub'"), lines)
        self.assertTrue(lines["again"][2].endswith("-> '..data/again'"), lines)
        # defaultMode, or the item's mode; the fsGroup adds group read, as the kubelet does.
        self.assertEqual(lines["..data/sub/dir/rules.txt"][:2], ["640", "65532"])
        self.assertEqual(lines["..data/again"][:2], ["440", "65532"])

    def test_fsgroup_on_root_mismatch_leaves_a_volume_whose_root_already_matches(self):
        script = self.render_ok()
        r = run_in_namespace(self.tmp, script, '''
mkdir -p "$T/pv/data/old" "$T/pv/modules/old"
chgrp 65532 "$T/pv/data" && chmod 2770 "$T/pv/data"
pod_prepare || exit 91
stat -c 'DRV %n %a %g' "$T/pv/data/old" "$T/pv/modules/old" "$T/pv/modules"
''')
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = {Path(line.split()[1]).relative_to(self.pv).as_posix(): line.split()[2:]
                 for line in r.stdout.splitlines() if line.startswith("DRV ")}
        self.assertEqual(lines["data/old"][1], "0")
        self.assertEqual(lines["modules/old"], ["2775", "65532"])
        self.assertEqual(lines["modules"], ["2775", "65532"])

    def test_env_and_args_expand_dollar_parentheses_as_kubernetes_does(self):
        def edit(spec, docs):
            c = spec["initContainers"][2]
            c["env"] += [{"name": "A", "value": "$(KMODKIT_RECIPE)-$$(KMODKIT_RECIPE)-$(LATER)"},
                         {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                            "divisor": "1Mi"}}},
                         {"name": "LATER", "value": "late"}]
            c["args"] = ["build", "$(A)", "$(POD)", "$(PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK)", "$(NOPE)"]
            spec["initContainers"][2]["resources"]["limits"]["intel.com/intel_sriov_dpdk"] = "1"
        r = self.run_pod(self.edited(edit))
        build = reports(r.stdout)[2]
        env = dict(line.split("=", 1) for line in field(build, "env"))
        self.assertEqual(env["A"], "igb_uio-$(KMODKIT_RECIPE)-$(LATER)")
        self.assertEqual(env["POD"], "kmodkit-firewall-0")
        self.assertEqual(env["MEM"], "1024")
        self.assertEqual(field(build, "arg"), ["build", "igb_uio-$(KMODKIT_RECIPE)-$(LATER)",
                                               "kmodkit-firewall-0", "0000:00:04.0", "$(NOPE)"])


if __name__ == "__main__":
    if not shutil.which("kubectl"):
        print("test_render_pod: skipped: kubectl is not installed (it renders the overlay with kustomize)")
        sys.exit(SKIP)
    unittest.main()
