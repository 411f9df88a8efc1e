#!/usr/bin/env python3
"""The inputs of bench/firewall.sh, generated (nothing here is DPDK's):

  flows.pcap       64-byte frames (60 in the capture, 64 with the FCS on the wire) of FLOWS IPv4
                   flows from 10.0.0.0/16 to 192.168.0.0/16, half TCP, half UDP. Each TCP flow
                   appears as its handshake (SYN, SYN-ACK, ACK), each UDP flow as one datagram,
                   interleaved so that consecutive packets belong to different flows. Replayed
                   with net_pcap's infinite_rx, the first pass opens the flows and every later
                   packet belongs to an established flow.
  fw-N.rules       N firewall rules: N-1 deny rules over random other prefixes, ports and
                   protocols (none matches the traffic), then the rule that allows it.
  l3fwd-N.v4/.v6   the same rule set in the format of DPDK's l3fwd --lookup acl: the deny rules
                   as '@' ACL entries, the allow rule as 'R' route entries to port 1 (one
                   per direction: l3fwd keeps no state for the SYN-ACKs), in the same order (l3fwd gives earlier lines the higher priority, first match wins).
  l3fwd-N.peers.v4 the same, with the replies routed back to port 0 (bench/firewall-peers.sh's
                   traffic goes both ways between the two ports)
  ovs-N.flows      the same rule set as OpenFlow for Open vSwitch with conntrack, as it is deployed
                   for a stateful firewall: table 0 sends IP through ct(table=1); in table 1 an
                   established or related packet goes to the other port, a new one meets the
                   rules (earlier rule, higher priority; a port range becomes the masked ports
                   that cover it, as OpenFlow matches ports only by mask) and, allowed, is
                   committed and forwarded; the rest is dropped.

  firewall-inputs.py OUT_DIR FLOWS [RULES...]      (prints the number of packets)
"""
import random
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src: int, dst: int, proto: int, l4: bytes) -> bytes:
    eth = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"
    total = 20 + len(l4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, proto, 0,
                     src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    f = eth + ip + l4
    return f + b"\0" * (60 - len(f))


def tcp(sport: int, dport: int, flags: int, seq: int, ack: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    payload = b"kmodkit-bench-dns!"  # 18 bytes: 14 + 20 + 8 + 18 = 60
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def write_pcap(path: str, frames) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1, i, len(fr), len(fr)))
            f.write(fr)


def flows_pcap(path: str, n: int) -> int:
    syn, synack, ack, datagrams = [], [], [], []
    for i in range(n):
        client = (10 << 24) | (i // 200 << 8) | (i % 200 + 1)          # 10.0.x.y
        server = (192 << 24) | (168 << 16) | (i % 50 << 8) | 10        # 192.168.z.10
        sport = 10000 + i % 50000
        if i % 2 == 0:
            syn.append(frame(client, server, 6, tcp(sport, 443, 0x02, 1000, 0)))
            synack.append(frame(server, client, 6, tcp(443, sport, 0x12, 5000, 1001)))
            ack.append(frame(client, server, 6, tcp(sport, 443, 0x10, 1001, 5001)))
        else:
            datagrams.append(frame(client, server, 17, udp(sport, 53)))
    frames = []
    for group in (syn, synack):
        frames += group
    for a, d in zip(ack, datagrams):
        frames += [a, d]
    write_pcap(path, frames)
    return len(frames)


def prefix(rng: random.Random) -> tuple:
    """A random IPv4 prefix that overlaps neither 10.0.0.0/8 nor 192.168.0.0/16."""
    while True:
        length = rng.choice([8, 12, 16, 16, 20, 24, 24, 24, 28, 32, 32])
        addr = rng.getrandbits(32) & (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        first = addr >> 24
        if first in (0, 10, 127, 192) or first >= 224:
            continue
        return addr, length


def dotted(a: int) -> str:
    return ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))


def port_masks(lo: int, hi: int) -> list:
    """The value/mask pairs whose union is the port range [lo, hi] (fewest, largest first)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def openflow_match(p: tuple) -> list:
    """tp_ field matches for a port range: [""] for any port, else one per masked block."""
    if p == (0, 65535):
        return [""]
    return ["%d/0x%04x" % vm if vm[1] != 0xFFFF else "%d" % vm[0] for vm in port_masks(*p)]


def rules(out: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    fw = ["# bench/firewall-inputs.py: %d rules, the last allows the traffic" % n, "policy deny"]
    acl = []
    # Open vSwitch: priorities from high to low in rule order, above the allow rule and the drop.
    of = ["table=0,priority=100,ip,actions=ct(table=1)", "table=0,priority=0,actions=drop",
          "table=1,priority=65000,ct_state=+trk+est,ip,in_port=1,actions=output:2",
          "table=1,priority=65000,ct_state=+trk+est,ip,in_port=2,actions=output:1",
          "table=1,priority=65000,ct_state=+trk+rel,ip,in_port=1,actions=output:2",
          "table=1,priority=65000,ct_state=+trk+rel,ip,in_port=2,actions=output:1"]
    priority = 60000
    for _ in range(n - 1):
        (s, sl), (d, dl) = prefix(rng), prefix(rng)
        proto = rng.choice(["tcp", "tcp", "udp", "ip4"])
        if proto == "ip4":
            sp, dp = (0, 65535), (0, 65535)
        else:
            sp = (0, 65535) if rng.random() < 0.8 else (1024, 65535)
            lo = rng.randrange(1, 65535)
            dp = (lo, lo) if rng.random() < 0.7 else (lo, min(65535, lo + rng.randrange(1, 1000)))
        ports = lambda p: "" if p == (0, 65535) else " port %d" % p[0] if p[0] == p[1] else " port %d-%d" % p
        fw.append("deny %s from %s/%d%s to %s/%d%s" % (proto, dotted(s), sl, ports(sp), dotted(d), dl, ports(dp)))
        pnum = {"tcp": "6/0xff", "udp": "17/0xff", "ip4": "0/0x00"}[proto]
        acl.append("@%s/%d %s/%d %d : %d %d : %d %s" % (dotted(s), sl, dotted(d), dl, sp[0], sp[1], dp[0], dp[1], pnum))
        kind = {"tcp": "tcp", "udp": "udp", "ip4": "ip"}[proto]
        for src_port in openflow_match(sp):
            for dst_port in openflow_match(dp):
                match = "%s,ct_state=+trk+new,nw_src=%s/%d,nw_dst=%s/%d" % (kind, dotted(s), sl, dotted(d), dl)
                match += (",tp_src=" + src_port if src_port else "") + (",tp_dst=" + dst_port if dst_port else "")
                of.append("table=1,priority=%d,%s,actions=drop" % (priority, match))
        priority -= 1
    fw.append("allow ip4 from 10.0.0.0/16 to 192.168.0.0/16")
    acl.append("R10.0.0.0/16 192.168.0.0/16 0 : 65535 0 : 65535 0/0x00 1")
    # l3fwd has no state: the SYN-ACKs need a route of their own (the firewall passes them by state)
    acl.append("R192.168.0.0/16 10.0.0.0/16 0 : 65535 0 : 65535 0/0x00 1")
    of.append("table=1,priority=%d,ip,ct_state=+trk+new,in_port=1,nw_src=10.0.0.0/16,nw_dst=192.168.0.0/16,"
              "actions=ct(commit),output:2" % priority)
    of.append("table=1,priority=0,actions=drop")
    with open(f"{out}/fw-{n}.rules", "w") as f:
        f.write("\n".join(fw) + "\n")
    with open(f"{out}/ovs-{n}.flows", "w") as f:
        f.write("\n".join(of) + "\n")
    with open(f"{out}/l3fwd-{n}.v4", "w") as f:
        f.write("\n".join(acl) + "\n")
    with open(f"{out}/l3fwd-{n}.peers.v4", "w") as f:
        f.write("\n".join(acl[:-1] + [acl[-1][:-1] + "0"]) + "\n")
    with open(f"{out}/l3fwd-{n}.v6", "w") as f:  # no IPv6 traffic; l3fwd wants a file
        f.write("R0:0:0:0:0:0:0:0/0 0:0:0:0:0:0:0:0/0 0 : 65535 0 : 65535 0/0x00 1\n")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, flows = sys.argv[1], int(sys.argv[2])
    packets = flows_pcap(f"{out}/flows.pcap", flows)
    for n in sys.argv[3:]:
        rules(out, int(n), seed=int(n))
    print(packets)


if __name__ == "__main__":
    main()
