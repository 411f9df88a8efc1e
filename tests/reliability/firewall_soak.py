#!/usr/bin/env python3
"""Firewall soak: the firewall under a sustained generated load on virtual devices for SECONDS,
with everything that stresses its state at once:
  - the flow table full: FLOWS distinct flows (bench/firewall-inputs.py: TCP handshakes and UDP
    datagrams) replayed by net_pcap's infinite_rx into a table of TABLE entries, so new flows
    keep evicting unanswered ones;
  - expiry churn: on a second port pair (a veth whose far end the soak writes to with an
    AF_PACKET socket, net_af_packet on the near end), CHURN fresh TCP connections (handshake
    done, so never evictable) and CHURN fresh UDP flows every second, each then left idle: with
    idle timeouts of 1-2 s they expire while the table is full of the replayed flows;
  - a rules reload every second (the file rewritten and renamed into place, alternating two rule
    sets), and one rules file that does not parse every tenth second (it must be refused and the
    rules in force kept);
  - SIGUSR1 storms: 100 signals every second, each a counters print.
It checks: the firewall runs until told to stop and exits 0 (no crash); the churn's connections
expired (at least 90% of those older than 5 s at the end); its resident memory and
the packet buffers in use at the end are within a small margin of what they were after the
warm-up (no leak); the counters add up (every packet received was forwarded or dropped for a
reason); every good reload succeeded and every bad one was refused. Prints the figures.

  firewall_soak.py --firewall BIN [--seconds 60] [--flows 100000] [--table 8192] [--churn 1000]

Needs root (a veth pair, removed at the end).
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
inputs = __import__("firewall-inputs")


def churn_frames(second, n):
    """The churn of one second: n TCP connections (SYN, SYN-ACK, ACK) and n UDP datagrams, on
    tuples no other second and no replayed flow uses (clients 10.0.x.201-250)."""
    frames = []
    for j in range(n):
        k = second * n + j
        client = (10 << 24) | ((k // 50) % 256 << 8) | (201 + k % 50)
        server = (192 << 24) | (168 << 16) | (200 << 8) | 10
        sport = 1024 + (k // 12800) % 60000
        frames.append(inputs.frame(client, server, 6, inputs.tcp(sport, 443, 0x02, 1000, 0)))
        frames.append(inputs.frame(server, client, 6, inputs.tcp(443, sport, 0x12, 5000, 1001)))
        frames.append(inputs.frame(client, server, 6, inputs.tcp(sport, 443, 0x10, 1001, 5001)))
        frames.append(inputs.frame(client, server, 17, inputs.udp(sport, 53)))
    return frames


class Veth:
    """A veth pair of this process's own (removed by stop()): the firewall's net_af_packet port
    on `near`, the soak's AF_PACKET socket on `far`."""

    def __init__(self):
        self.far, self.near = "kks%da" % os.getpid(), "kks%db" % os.getpid()
        subprocess.run(["ip", "link", "add", self.far, "type", "veth", "peer", "name", self.near], check=True)
        for name in (self.far, self.near):
            # No IPv6 on them: the kernel's own neighbour discovery would be traffic too.
            subprocess.run(["sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1" % name], check=False)
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((self.far, 0))

    def send(self, frames):
        # In bursts of 64 a millisecond apart: the firewall's af_packet ring holds what arrives
        # between two of its polls, and a burst of thousands would overflow it (lost in the kernel,
        # never seen or counted by the firewall).
        for i, f in enumerate(frames):
            self.sock.send(f)
            if i % 64 == 63:
                time.sleep(0.001)

    def stop(self):
        self.sock.close()
        subprocess.run(["ip", "link", "del", self.far], check=False)


def rss_kib(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_rules(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--firewall", required=True)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--flows", type=int, default=100000)
    ap.add_argument("--table", type=int, default=8192)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--churn", type=int, default=1000, help="new TCP and UDP flows a second that then go idle (0: none)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kmodkit-soak."))
    proc = None
    veth = None
    problems = []
    try:
        out = subprocess.run([sys.executable, str(ROOT / "bench/firewall-inputs.py"), str(work), str(args.flows), "100"],
                             check=True, capture_output=True, text=True)
        packets = int(out.stdout.split()[0])
        rules_a = (work / "fw-100.rules").read_text()
        # The second set: the same, with one more deny rule in front that the traffic never meets.
        rules_b = "deny udp from 203.0.113.0/24 to 198.51.100.0/24 port 9\n" + rules_a
        rules = work / "soak.rules"
        write_rules(rules, rules_a)
        port = free_port()
        churn_vdevs = []
        if args.churn:
            veth = Veth()
            churn_vdevs = ["--vdev", "net_af_packet2,iface=%s" % veth.near, "--vdev", "net_null3,no-rx=1"]
        log = open(work / "firewall.log", "wb")
        argv = [args.firewall, "--rules", str(rules),
                "--vdev", "net_pcap0,rx_pcap=%s,infinite_rx=1" % (work / "flows.pcap"), "--vdev", "net_null1,no-rx=1",
                *churn_vdevs,
                "--no-huge-mb", "1024", "--lcores", "0", "--flows", str(args.table), "--mbufs", str(packets + 8192),
                "--timeout", "tcp-syn=1,tcp-established=2,tcp-fin=1,tcp-closed=1,udp-new=1,udp-established=2",
                "--metrics", "127.0.0.1:%d" % port, "--log-format", "human"]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # Ready: the metrics answer and packets flow.
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the firewall exited at start (%s): see %s" % (proc.returncode, work / "firewall.log"))
            try:
                if metrics(port).get('kmodkit_firewall_worker_packets_total{lcore="0",direction="received"}', 0) > 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the firewall forwarded nothing within 60 s")
            time.sleep(0.2)
        time.sleep(args.warmup)
        start_rss = rss_kib(proc.pid)
        start = metrics(port)
        start_buffers = start["kmodkit_firewall_packet_buffers_in_use"]
        good_reloads = bad_reloads = usr1 = 0
        rss = [start_rss]  # once a second
        began = time.monotonic()
        second = 0
        churned = []  # connections opened each second
        while time.monotonic() - began < args.seconds:
            second += 1
            if veth is not None:
                veth.send(churn_frames(second, args.churn))
                churned.append(args.churn)
            if second % 10 == 0:
                write_rules(rules, "allow tcp from nowhere\n")  # refused: the rules in force stay
                bad_reloads += 1
            else:
                write_rules(rules, rules_b if second % 2 else rules_a)
                good_reloads += 1
            for _ in range(100):
                os.kill(proc.pid, signal.SIGUSR1)
                usr1 += 1
                time.sleep(0.002)
            if proc.poll() is not None:
                raise RuntimeError("the firewall died under the soak (%s)" % proc.returncode)
            rss.append(rss_kib(proc.pid))
            time.sleep(max(0.0, began + second - time.monotonic()))
        write_rules(rules, rules_a)  # the last word is a good file
        good_reloads += 1
        time.sleep(2)
        end_rss = rss_kib(proc.pid)
        end = metrics(port)
        end_buffers = end["kmodkit_firewall_packet_buffers_in_use"]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
        text = (work / "firewall.log").read_text(errors="replace")
        if code != 0:
            problems.append("the firewall exited %s" % code)
        # The last counters print (at exit): received = forwarded + every drop.
        last = text[text.rfind("total: rx"):]
        m = re.match(r"total: rx (\d+) tx (\d+)", last)
        drops = sum(int(n) for n in re.findall(r"^drop [a-z_ ]+: (\d+)$", last, re.M))
        received, sent = int(m.group(1)), int(m.group(2))
        if received != sent + drops:
            problems.append("counters do not add up: received %d, forwarded %d, dropped %d" % (received, sent, drops))
        ok = end.get('kmodkit_firewall_rule_reloads_total{result="ok"}', 0) - start.get('kmodkit_firewall_rule_reloads_total{result="ok"}', 0)
        failed = end.get('kmodkit_firewall_rule_reloads_total{result="failed"}', 0) - start.get('kmodkit_firewall_rule_reloads_total{result="failed"}', 0)
        # The file watcher may fold two changes within one of its looks into one reload.
        if failed < 1 or ok < 1 or failed > bad_reloads or ok > good_reloads:
            problems.append("reloads: %d good and %d bad files written, the firewall counted %d ok and %d failed" %
                            (good_reloads, bad_reloads, ok, failed))
        prints = text.count("total: rx")
        evicted = sum(v for k, v in end.items() if k.startswith("kmodkit_firewall_flows_evicted_total"))
        expired = sum(v for k, v in end.items() if k.startswith("kmodkit_firewall_flows_expired_total"))
        tcp_expired = sum(v for k, v in end.items() if k.startswith('kmodkit_firewall_flows_expired_total{') and 'proto="tcp"' in k) - \
            sum(v for k, v in start.items() if k.startswith('kmodkit_firewall_flows_expired_total{') and 'proto="tcp"' in k)
        # The churn's connections opened more than 5 s before the end (2 s of run-out after the
        # loop) are past their 2 s timeout and the sweep: they must have expired.
        due = sum(churned[:-3]) if len(churned) > 3 else 0
        if args.churn and tcp_expired < 0.9 * due:
            problems.append("of %d idle connections due to expire, %d TCP flows expired" % (due, tcp_expired))
        created = sum(v for k, v in end.items() if k.startswith("kmodkit_firewall_flows_created_total"))
        # No leak. Memory: EAL's heap and the flow table touch their pages as they are first
        # used (the reloads' ACL contexts take fresh heap), so the resident size climbs early and
        # then holds; over the second half of the run it must not grow by more than 2 MiB.
        # Buffers: back where they were, give or take one receive burst per ring.
        mid_rss = rss[len(rss) // 2]
        if end_rss > mid_rss + 2048:
            problems.append("resident memory grew from %d KiB at the middle of the run to %d KiB at its end" %
                            (mid_rss, end_rss))
        if end_buffers > start_buffers + 512:
            problems.append("packet buffers in use grew from %d to %d" % (start_buffers, end_buffers))
        print("firewall soak: %d s, %d flows into a table of %d, %d packets received (%.2f Mpps)" %
              (args.seconds, args.flows, args.table, received, received / (args.seconds + args.warmup + 2) / 1e6))
        print("  flows created %d, evicted %d, expired %d (TCP %d of the %d idle connections due)" %
              (created, evicted, expired, tcp_expired, due))
        print("  reloads: %d good files (%d reloads ok), %d bad files (%d refused); SIGUSR1 %d, counter prints %d" %
              (good_reloads, ok, bad_reloads, failed, usr1, prints))
        print("  resident memory %d KiB after the warm-up, %d KiB at the middle, %d KiB at the end; packet buffers in "
              "use %d -> %d of %d" % (start_rss, mid_rss, end_rss, start_buffers, end_buffers,
                                      end["kmodkit_firewall_packet_buffers"]))
        print("  counters: received %d = forwarded %d + dropped %d: %s" %
              (received, sent, drops, "yes" if received == sent + drops else "NO"))
        print("  exit %s; %s" % (code, "ok" if not problems else "FAILED: " + "; ".join(problems)))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if veth is not None:
            veth.stop()
        if not problems:
            subprocess.run(["rm", "-rf", str(work)])
        else:
            print("firewall soak: kept %s" % work)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
