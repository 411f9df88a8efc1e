#!/usr/bin/env bash
# The firewall between two network namespaces with real TCP: namespace fwa (10.77.0.1) and
# namespace fwb (10.77.0.2) on one subnet, each behind a veth pair whose outer end is a
# net_af_packet port of the firewall (bump in the wire).
#   veth-test.sh FIREWALL
# Checks: ARP passes by policy; a TCP connection the rules allow (a -> b port 8080) completes and
# its replies pass by state; one to another port, and one started from b, are dropped; an
# established connection left idle past its timeout (--timeout tcp-established=2) is expired and
# its next segment dropped; SIGUSR1 prints the counters and the firewall runs on; SIGTERM stops
# the firewall, which prints its counters and exits 0;
# after a change of the rules file (8080 out, 9090 in) and a restart the verdicts change; after
# another change and SIGHUP (no restart) they change again while an open connection stays open,
# and a broken file on SIGHUP leaves the rules in force.
# Nothing here waits on a guess of how long something takes: the firewall's own 'forwarding:'
# line, listening sockets and files written by the clients say when to go on; a connection that
# must complete gets a long timeout (a busy machine only makes it slower), one that must be
# dropped a short one (a slow machine cannot make a dropped connection complete).
set -euo pipefail
fw=$(realpath "${1:?usage: veth-test.sh FIREWALL}")
for tool in ip ethtool python3; do command -v "$tool" >/dev/null || { echo "veth-test: $tool is missing"; exit 1; }; done
id=$$
na=fwa$id nb=fwb$id pa=fwpa$id pb=fwpb$id
work=$(mktemp -d /tmp/kmodkit-veth.XXXXXX)
fwpid=
cleanup() {
  [ -n "$fwpid" ] && kill "$fwpid" 2>/dev/null || true
  for ns in "$na" "$nb"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  ip netns del "$na" 2>/dev/null || true
  ip netns del "$nb" 2>/dev/null || true
  ip link del "$pa" 2>/dev/null || true
  ip link del "$pb" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "veth-test: FAILED: $*"; [ -f "$work/fw.log" ] && cat "$work/fw.log"; exit 1; }
# wait_for TEXT FILE: until FILE holds TEXT (a fixed string); false after 60 s.
wait_for() {
  for _ in $(seq 600); do grep -qF -- "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# wait_listening NETNS PORT: until a TCP socket listens on PORT in NETNS.
wait_listening() {
  for _ in $(seq 600); do ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q . && return 0; sleep 0.1; done
  fail "nothing listens on port $2 in $1"
}

ip netns add "$na"
ip netns add "$nb"
ip link add "$pa" type veth peer name va netns "$na"
ip link add "$pb" type veth peer name vb netns "$nb"
ip netns exec "$na" ip addr add 10.77.0.1/24 dev va
ip netns exec "$nb" ip addr add 10.77.0.2/24 dev vb
for ns in "$na" "$nb"; do
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sh -c 'ip link set $(ls /sys/class/net | grep -v lo) up'
  # DPDK-NOTES: the namespaces' TX checksum offload off, or af_packet forwards bad checksums.
  ip netns exec "$ns" sh -c 'ethtool -K $(ls /sys/class/net | grep -v lo) tx off >/dev/null'
done
ip link set "$pa" up
ip link set "$pb" up

cat > "$work/fw.rules" <<RULES
policy deny
allow tcp from 10.77.0.1 to 10.77.0.2 port 8080,8081 dir a-to-b
RULES
start_fw() {
  "$fw" --rules "$work/fw.rules" --vdev "net_af_packet0,iface=$pa" --vdev "net_af_packet1,iface=$pb" \
    --no-huge-mb 512 --lcores 0 --file-prefix "veth$id" --log-format human --flows 4096 "$@" >"$work/fw.log" 2>&1 &
  fwpid=$!
  wait_for "forwarding:" "$work/fw.log" || fail "the firewall did not start forwarding"
}
stop_fw() {
  kill -TERM "$fwpid"
  wait "$fwpid" && code=0 || code=$?
  fwpid=
  [ "$code" = 0 ] || fail "the firewall exited $code on SIGTERM"
}
start_fw --timeout tcp-established=2

# Listeners: b on 8080 (allowed) and 9090 (not), a on 7070 (b may not start flows).
serve() {  # serve NETNS ADDR PORT
  ip netns exec "$1" python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('$2', $3)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b'kmodkit-ok\n'); c.close()" >/dev/null 2>&1 &
}
serve "$nb" 10.77.0.2 8080
serve "$nb" 10.77.0.2 9090
serve "$na" 10.77.0.1 7070
# An echo server on b:8081 for the connections left open (one thread each: a connection whose
# FIN the firewall dropped after its flow expired never closes on the server's side).
ip netns exec "$nb" python3 -c "
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(64)
            if not d: break
            self.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(('10.77.0.2', 8081), Echo).serve_forever()" >/dev/null 2>&1 &
wait_listening "$nb" 8080
wait_listening "$nb" 9090
wait_listening "$na" 7070
wait_listening "$nb" 8081
connect() {  # connect NETNS ADDR PORT TIMEOUT: prints what the server said, or why not
  ip netns exec "$1" python3 -c "
import socket
try:
    s = socket.create_connection(('$2', $3), timeout=$4); print(s.recv(64).decode().strip())
except OSError as e:
    print('no connection:', e)"
}
allowed() { connect "$@" 30; }  # must complete: SYN retransmissions over 30 s
dropped() { connect "$@" 2; }   # must not: its SYN is dropped whatever the timeout
allowed=$(allowed "$na" 10.77.0.2 8080)
[ "$allowed" = "kmodkit-ok" ] || fail "a -> b:8080 should connect through the firewall, got: $allowed"
other=$(dropped "$na" 10.77.0.2 9090)
[[ "$other" == "no connection"* ]] || fail "a -> b:9090 should be dropped, got: $other"
inbound=$(dropped "$nb" 10.77.0.1 7070)
[[ "$inbound" == "no connection"* ]] || fail "b -> a:7070 should be dropped, got: $inbound"

# A connection a -> b:8081 that says 'one', writes $work/open once echoed, waits until WAIT
# (seconds, or a file's path: until it exists), then says 'two': prints the two echoes ('nothing'
# for one that does not come back within 3 s).
hold_open() {  # hold_open WAIT (remove $work/open first: this may run in the background)
  ip netns exec "$na" python3 -c "
import os, socket, time
s = socket.create_connection(('10.77.0.2', 8081), timeout=30)
s.sendall(b'one'); first = s.recv(64).decode()
open('$work/open', 'w').close()
wait = '$1'
if wait.startswith('/'):
    while not os.path.exists(wait): time.sleep(0.05)
else:
    time.sleep(float(wait))
s.settimeout(3)
s.sendall(b'two')
try:
    second = s.recv(64).decode()
except OSError:
    second = 'nothing'
print(first, second)"
}

# Idle past the timeout: the connection's next segment meets no flow and is not a SYN. The flow
# is gone within 2 s (its timeout) + 1 s (the clock's resolution) + 0.4 s (a full sweep of 4,096
# slots at 1,024 per tenth of a second); 6 s leaves the sweep room on a busy machine.
idle=$(hold_open 6)
[ "$idle" = "one nothing" ] || fail "an idle connection should echo 'one', then nothing after its timeout; got: $idle"

# SIGUSR1 prints the counters while the firewall keeps running.
kill -USR1 "$fwpid"
wait_for "total: " "$work/fw.log" || true
grep -q "^total: rx [1-9]" "$work/fw.log" || fail "SIGUSR1 should print the counters"
kill -0 "$fwpid" || fail "the firewall should keep running after SIGUSR1"
[ "$(grep -c '^total: ' "$work/fw.log")" = 1 ] || fail "SIGUSR1 should print the counters once"

stop_fw
[ "$(grep -c '^total: ' "$work/fw.log")" = 2 ] || fail "SIGTERM should print the counters again"
grep -q "new flows 2 " "$work/fw.log" || fail "expected exactly two new flows"
grep -Eq "expired [1-9]" "$work/fw.log" || fail "expected the idle flow to expire"
grep -Eq "drop tcp_not_syn: [1-9]" "$work/fw.log" || fail "expected the idle connection's late segment dropped"
grep -Eq "drop policy: [1-9]" "$work/fw.log" || fail "expected policy drops"
grep -Eq "total: rx [0-9]+ tx [0-9]+ by state [1-9]" "$work/fw.log" || fail "expected packets passed by state"
grep -Eq "arp/nd [1-9]" "$work/fw.log" || fail "expected ARP to pass"
grep -E "^total|^drop (policy|rule|tcp_not_syn)|^rule line" "$work/fw.log" | sed 's/^/veth-test: /'

# The rules change (8080 out, 9090 in) and the firewall restarts: the verdicts follow.
cat > "$work/fw.rules" <<RULES
policy deny
allow tcp from 10.77.0.1 to 10.77.0.2 port 9090 dir a-to-b
RULES
start_fw
now_allowed=$(allowed "$na" 10.77.0.2 9090)
[ "$now_allowed" = "kmodkit-ok" ] || fail "after the change a -> b:9090 should connect, got: $now_allowed"
now_denied=$(dropped "$na" 10.77.0.2 8080)
[[ "$now_denied" == "no connection"* ]] || fail "after the change a -> b:8080 should be dropped, got: $now_denied"
stop_fw

# Hot reload: a connection opened under the old rules (to 8081) stays open across SIGHUP, while
# new connections meet the new rules (9090 out, 8080 in). Then a broken file changes nothing.
cat > "$work/fw.rules" <<RULES
policy deny
allow tcp from 10.77.0.1 to 10.77.0.2 port 8081,9090 dir a-to-b
RULES
start_fw
rm -f "$work/go" "$work/open"
hold_open "$work/go" > "$work/open.out" &
open_pid=$!
for _ in $(seq 600); do [ -f "$work/open" ] && break; sleep 0.1; done
[ -f "$work/open" ] || fail "the connection to be held open across the reload did not open"
cat > "$work/fw.rules" <<RULES
policy deny
allow tcp from 10.77.0.1 to 10.77.0.2 port 8080 dir a-to-b
RULES
kill -HUP "$fwpid"
wait_for "reloaded" "$work/fw.log" || true
grep -q "reloaded, 1 rules in force (were 1): 1 added, 1 removed, 0 kept" "$work/fw.log" || fail "SIGHUP did not reload the rules"
after=$(allowed "$na" 10.77.0.2 8080)
[ "$after" = "kmodkit-ok" ] || fail "after the reload a -> b:8080 should connect, got: $after"
gone=$(dropped "$na" 10.77.0.2 9090)
[[ "$gone" == "no connection"* ]] || fail "after the reload a -> b:9090 should be dropped, got: $gone"
touch "$work/go"
wait "$open_pid"
[ "$(cat "$work/open.out")" = "one two" ] || fail "the connection open across the reload should echo 'one two', got: $(cat "$work/open.out")"
echo "policy maybe" > "$work/fw.rules"
kill -HUP "$fwpid"
wait_for "reload refused" "$work/fw.log" || true
grep -q "reload refused, the rules in force stay: .*fw.rules:1:8" "$work/fw.log" || fail "a broken file should be refused on SIGHUP"
still=$(allowed "$na" 10.77.0.2 8080)
[ "$still" = "kmodkit-ok" ] || fail "after a refused reload a -> b:8080 should still connect, got: $still"
stop_fw
echo "veth-test: real TCP through the firewall: allowed connection made, others dropped, an idle one expired," \
  "counters printed, a rules change and restart changed the verdicts, SIGHUP reloaded them with an open" \
  "connection kept, a broken file was refused"
