#!/usr/bin/env python3
"""Packet rates of a running DPDK application, read from its EAL telemetry socket (every DPDK
application has one unless started with --no-telemetry; nothing is added to the process):

  dpdk-rate.py FILE_PREFIX RX_PORT TX_PORT SECONDS [TIMEOUT]

Waits for the socket and for the first forwarded packet, lets the application run one more
second (the first pass of the capture opens the firewall's flows), then reads the ports'
counters, sleeps SECONDS, reads them again and prints one line:
  rx_mpps tx_mpps rx_packets tx_packets seconds
Exit 1 (with the reason on stderr) when the application never forwards within TIMEOUT seconds.
"""
import json
import os
import socket
import sys
import time


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 64
    prefix, rx_port, tx_port, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120
    runtime = os.environ.get("XDG_RUNTIME_DIR", "/var/run") if os.getuid() != 0 else "/var/run"
    path = f"{runtime}/dpdk/{prefix}/dpdk_telemetry.v2"
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    while True:
        try:
            sock.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                print(f"dpdk-rate: no telemetry socket {path} after {timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.1)
    json.loads(sock.recv(1024))  # the greeting: version, pid, max_output_len

    def stats(port: int) -> dict:
        sock.send(f"/ethdev/stats,{port}".encode())
        reply = json.loads(sock.recv(65536))["/ethdev/stats"]
        if not isinstance(reply, dict):
            raise SystemExit(f"dpdk-rate: the application has no port {port}")
        return reply

    while stats(tx_port)["opackets"] == 0:
        if time.monotonic() > deadline:
            print(f"dpdk-rate: nothing forwarded to port {tx_port} after {timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(1)
    t0, rx0, tx0 = time.monotonic(), stats(rx_port)["ipackets"], stats(tx_port)["opackets"]
    time.sleep(seconds)
    t1, rx1, tx1 = time.monotonic(), stats(rx_port)["ipackets"], stats(tx_port)["opackets"]
    dt = t1 - t0
    print(f"{(rx1 - rx0) / dt / 1e6:.3f} {(tx1 - tx0) / dt / 1e6:.3f} {rx1 - rx0} {tx1 - tx0} {dt:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
