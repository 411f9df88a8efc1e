#!/usr/bin/env bash
# The firewall as buyers of stateful firewalls measure one (RFC 9411's figures: new connections a
# second, concurrent flows at full rate, latency), side by side with Open vSwitch's userspace
# datapath with conntrack, the stateful DPDK switch deployed in clusters. One script, one
# machine, the same traffic for both:
#   traffic   bench/trafficgen (built with the project): one DPDK process on CPU 0 serving two
#             memif sockets. The device under test attaches its ports 0 and 1 to them and
#             forwards between them; the generator plays every client behind port 0 and every
#             server behind port 1, answering each packet the way a TCP endpoint would.
#   devices   the firewall (its worker on CPU 1, its main lcore on CPU 0) and Open vSwitch 3.1
#             with DPDK (its PMD thread on CPU 1), started privately: its own database, run
#             directory, EAL file prefix and network namespace, stopped by PID; nothing
#             system-wide changes. OVS's flows: table 0 sends IP through ct(table=1); table 1
#             forwards established and related packets and sends new ones through the same rule
#             set (bench/firewall-inputs.py renders it for both), committing what it allows.
#   workloads (a) churn: short TCP connections (SYN, SYN-ACK, ACK, data, FIN both ways, last ACK)
#             with fresh tuples, 256 in flight: each costs the device a rule lookup, an insert
#             and a removal; figure: connections a second, and how many were lost
#             (b) 1,000,000 established flows, 64-byte packets round robin over them, both ways;
#             figure: Mpps, and its ratio to the same with 10,000 flows
#             (c) 10,000 flows with IMIX frames (64, 594, 1518 bytes as 7:4:1): Mpps and Gbit/s
#             (d) half the packets of 10,000 established flows, half of new connections: Mpps
#             latency: 10,000 flows offered at a fixed rate well below either device's limit;
#             per-packet latency from the generator's TSC stamp at enqueue to its reading where the
#             packet came back: two memif crossings each way, the device's queueing and work
#   ceiling   dpdk-testpmd --forward-mode=io on the same sockets, its forwarding lcore on CPU 1:
#             what these ports and this generator carry when the device does no work at all
#   floor     DPDK's l3fwd --lookup acl (built from dpdk-doc's sources) with the same rules and no
#             state: what classifying and forwarding alone cost on these ports (it passes a
#             connection's every packet by the rules, so churn is no harder for it than flows)
#   rules     1,000 and 10,000 (bench/firewall-inputs.py: deny rules that miss, then the allow)
# Rounds alternate the devices; medians are reported. Rates are what came back to the generator
# (forwarded by the device) over SECONDS after a warm-up. Cycles per packet: the TSC frequency
# over the rate, the device's one worker being busy throughout (its idle share is reported).
#   bench/firewall-peers.sh [ROUNDS [SECONDS]]   (default 3 rounds of 5 s; needs a build
#                                               (ci/build.sh), ci/install-deps.sh --bench, root)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
seconds=${2:-5}
preset=${KMODKIT_PRESET:-default}
build=$PWD/build/$preset
firewall=$build/firewall/firewall
gen=$build/bench/trafficgen/trafficgen
cpu_link=$build/bench/trafficgen/cpu-link
ovs_vswitchd=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
rule_sets=(1000 10000)
fw_flows=2097152  # the firewall's table: room for the million flows and what churn leaves closing
# Connections in flight (churn, mix): few enough that every packet in flight fits the memif
# rings (1,024 slots each way) however the device queues them. With 1,024 the firewall, faster
# than the generator drains its rings, lost a tenth of its connections to full rings; a
# connection lost is a failed one (RFC 9411 counts them) and leaves a flow behind.
window=256
# The two CPUs' link: a cache line's round trip from CPU 0 to CPU 1 and back (cpu-link), taken
# before and after each measurement. Every packet crosses memif's rings, lines both CPUs share;
# a VM's two vCPUs may sit on cores that share a last-level cache or on cores that do not, and
# the host moves them: on a 2-vCPU AMD EPYC guest the round trip went from 55 ns to 345 ns and
# back within minutes, and every device's rate over memif halved while it was slow. Figures are
# medians of the measurements on a fast link (both probes at most link_fast_ns), when any were.
link_fast_ns=200
link_ns() { "$cpu_link" --from 0 --to 1 --round-trips 200000 | python3 -c 'import json, sys; print(json.load(sys.stdin)["round_trip_ns"])'; }
huge_pages=2048  # 2 MiB pages: 4 GiB (a million flows in either device, the generator's buffers)

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$firewall" ] || die "build first (ci/build.sh); no $firewall"
[ -x "$gen" ] || die "build first (ci/build.sh); no $gen"
[ -x "$cpu_link" ] || die "build first (ci/build.sh); no $cpu_link"
[ -x "$ovs_vswitchd" ] || die "no $ovs_vswitchd: run ci/install-deps.sh --bench"
[ "$(id -u)" -eq 0 ] || die "needs root (hugepages, a network namespace for Open vSwitch)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (the generator on one, the device's worker on the other)"

work=$(mktemp -d /var/tmp/kmodkit-bench-peers.XXXXXX)
pids=()      # what this script started and has not stopped yet
forget() {  # PID: stopped, no longer for cleanup to end
  local kept=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}
ovs_dir=$work/ovs
cleanup() {
  local pid
  ovs_stop
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  bench_hugepages_release
  rm -rf "$work" /var/run/dpdk/kmodkit-bench-peers-*
}
trap cleanup EXIT

bench_hugepages "$huge_pages" 1536

python3 bench/firewall-inputs.py "$work" 100 "${rule_sets[@]}" > /dev/null
bench_build_l3fwd
memif() { echo "net_memif$1,role=client,id=0,socket-abstract=no,socket=$work/$2.sock"; }

# The generator: traffic NAME ARGS... runs one measurement against the device attached now and
# appends its JSON line to $work/NAME.
gen_pid=
gen_start() {
  rm -f "$work/a.sock" "$work/b.sock" "$work/go" "$work/gen.out"
  "$gen" --socket-dir "$work" --go-file "$work/go" --lcore 0 --file-prefix kmodkit-bench-peers-gen --huge-dir "$huge_dir" \
    --mbufs 262144 --seconds "$seconds" --warmup 2 --setup-timeout 300 --hold "$@" > "$work/gen.out" 2> "$work/gen.err" &
  gen_pid=$!
  pids+=("$gen_pid")
  # Up (its memory taken, its sockets served) once it waits for the device.
  for _ in $(seq 300); do grep -q 'waiting for the device under test' "$work/gen.err" && return 0; sleep 0.1; done
  die "the generator did not start: $(tail -3 "$work/gen.err")"
}
# Waits for the generator's result (it holds its ports up after it: the device is stopped
# first, then the generator).
gen_result() {
  while [ ! -s "$work/gen.out" ]; do
    kill -0 "$gen_pid" 2>/dev/null || die "$1: the generator failed: $(grep -v TELEMETRY "$work/gen.err" | tail -2)"
    sleep 0.2
  done
  cat "$work/gen.out" >> "$work/$1"
}
gen_stop() {
  kill -INT "$gen_pid" 2>/dev/null || true
  wait "$gen_pid" 2>/dev/null || true
  forget "$gen_pid"
}

# The DPDK applications, one at a time: app_start NAME READY INPUT COMMAND... starts COMMAND
# reading INPUT, with its output in $work/NAME.out, and waits for the line READY; app_stop stops
# it (SIGINT) and fails the run unless it exited 0.
app_pid=
app_name=
app_start() {
  app_name=$1
  local ready=$2 input=$3
  shift 3
  "$@" < "$input" > "$work/$app_name.out" 2>&1 &
  app_pid=$!
  pids+=("$app_pid")
  for _ in $(seq 1200); do
    grep -q -- "$ready" "$work/$app_name.out" && return 0
    kill -0 "$app_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "$app_name did not start: $(grep -v TELEMETRY "$work/$app_name.out" | tail -3)"
}
app_stop() {
  local rc=0
  kill -INT "$app_pid" 2>/dev/null || true
  wait "$app_pid" || rc=$?
  forget "$app_pid"
  [ "$rc" = 0 ] || die "$app_name exited $rc: $(grep -v TELEMETRY "$work/$app_name.out" | tail -2)"
}

# The firewall with RULES rules and a table of $fw_flows, ready once it says it forwards (rules
# compiled, ports started, workers running).
firewall_start() {
  app_start firewall '"msg":"forwarding: ' /dev/null "$firewall" --rules "$work/fw-$1.rules" --lcores 0,1 --flows "$fw_flows" \
    --file-prefix kmodkit-bench-peers-fw --huge-dir "$huge_dir" --vdev "$(memif 0 a)" --vdev "$(memif 1 b)" --log-format json
}
# l3fwd with RULES rules, on CPU 1 alone (one lcore: its main loop).
l3fwd_start() {
  app_start l3fwd 'entering main loop' /dev/null "$l3fwd" -l 1 --no-pci --file-prefix kmodkit-bench-peers-l3fwd --huge-dir "$huge_dir" \
    --vdev "$(memif 0 a)" --vdev "$(memif 1 b)" -- -p 0x3 --config '(0,0,1),(1,0,1)' --lookup acl --parse-ptype \
    --rule_ipv4 "$work/l3fwd-$1.peers.v4" --rule_ipv6 "$work/l3fwd-$1.v6"
}
# dpdk-testpmd, forwarding what it receives as it is (io), its forwarding lcore on CPU 1. A
# statistics period keeps it running without a terminal (it stops on SIGINT).
testpmd_start() {
  app_start testpmd 'forwards packets on' /dev/null dpdk-testpmd -l 0,1 --no-pci \
    --file-prefix kmodkit-bench-peers-testpmd --huge-dir "$huge_dir" --vdev "$(memif 0 a)" --vdev "$(memif 1 b)" \
    -- --forward-mode=io --nb-cores=1 --auto-start --stats-period 3600
}
# Open vSwitch, private: ovsdb-server and ovs-vswitchd with their own files under $ovs_dir,
# vswitchd in a network namespace of its own (the netdev datapath makes tap devices), EAL with
# its own file prefix, the PMD thread on CPU 1; the rule set RULES as OpenFlow.
ovs_env=(env OVS_RUNDIR="$ovs_dir" OVS_DBDIR="$ovs_dir" OVS_LOGDIR="$ovs_dir" OVS_SYSCONFDIR="$ovs_dir")
vsctl() { "${ovs_env[@]}" ovs-vsctl --db="unix:$ovs_dir/db.sock" --timeout=60 "$@"; }
appctl() { "${ovs_env[@]}" ovs-appctl -t "$ovs_dir/ovs-vswitchd.ctl" "$@"; }
ovs_start() {
  rm -rf "$ovs_dir" && mkdir -p "$ovs_dir"
  "${ovs_env[@]}" ovsdb-tool create "$ovs_dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  "${ovs_env[@]}" ovsdb-server "$ovs_dir/conf.db" --remote="punix:$ovs_dir/db.sock" --pidfile="$ovs_dir/ovsdb-server.pid" \
    --log-file="$ovs_dir/ovsdb-server.log" --unixctl="$ovs_dir/ovsdb-server.ctl" -vconsole:off --detach --no-chdir \
    2>> "$ovs_dir/start.err" || die "ovsdb-server did not start: $(tail -2 "$ovs_dir/start.err")"
  vsctl --no-wait init
  vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-lcore-mask=0x1 \
    other_config:pmd-cpu-mask=0x2 other_config:per-port-memory=true \
    "other_config:dpdk-extra=--no-pci --file-prefix kmodkit-bench-peers-ovs --huge-dir $huge_dir --socket-mem 1024"
  vsctl --no-wait add-br br0 -- set bridge br0 datapath_type=netdev fail_mode=secure \
    -- add-port br0 p0 -- set Interface p0 type=dpdk ofport_request=1 "options:dpdk-devargs=$(memif 0 a)" \
    -- add-port br0 p1 -- set Interface p1 type=dpdk ofport_request=2 "options:dpdk-devargs=$(memif 1 b)"
  "${ovs_env[@]}" unshare --net "$ovs_vswitchd" "unix:$ovs_dir/db.sock" --pidfile="$ovs_dir/ovs-vswitchd.pid" \
    --log-file="$ovs_dir/ovs-vswitchd.log" --unixctl="$ovs_dir/ovs-vswitchd.ctl" -vconsole:off --detach --no-chdir \
    2>> "$ovs_dir/start.err" || die "ovs-vswitchd did not start: $(tail -2 "$ovs_dir/start.err")"
  vsctl wait-until Interface p1 ofport=2 > /dev/null
  local p
  for p in p0 p1; do
    [ "$(vsctl get Interface "$p" ofport)" -gt 0 ] || die "Open vSwitch port $p: $(vsctl get Interface "$p" error)"
  done
  # A million connections fit (its default limit is 3,000,000).
  "${ovs_env[@]}" ovs-ofctl -O OpenFlow13 add-flows "$ovs_dir/br0.mgmt" "$work/ovs-$1.flows"
}
ovs_stop() {
  [ -d "$ovs_dir" ] || return 0
  if [ -S "$ovs_dir/ovs-vswitchd.ctl" ]; then appctl exit --cleanup 2>/dev/null || true; fi
  "${ovs_env[@]}" ovs-appctl -t "$ovs_dir/ovsdb-server.ctl" exit 2>/dev/null || true
  local f pid
  for f in "$ovs_dir/ovs-vswitchd.pid" "$ovs_dir/ovsdb-server.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$ovs_dir" /var/run/dpdk/kmodkit-bench-peers-ovs
}

# One measurement: DEVICE (firewall|ovs) RULES NAME GENERATOR-ARGS...
measure() {
  local device=$1 rules=$2 name=$3 link_before
  shift 3
  link_before=$(link_ns)
  # The generator's rings per port: as many as the device sends on (Open vSwitch: its PMD
  # thread's and its main thread's): memif hands a packet in once more for each ring the device lacks.
  gen_start --rings "$([ "$device" = ovs ] && echo 2 || echo 1)" "$@"
  # Memory: the firewall takes its tables from hugepages at start (free pages before and once it
  # forwards); Open vSwitch allocates a connection as it commits it (its resident memory when
  # ready and after the run).
  local free_before ready=0 after=0
  free_before=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
  local rss='/VmRSS/ {print $2}'
  if [ "$device" = ovs ]; then
    ovs_start "$rules"
    ready=$(awk "$rss" "/proc/$(cat "$ovs_dir/ovs-vswitchd.pid")/status")
  else
    "${device}_start" "$rules"
    [ "$device" != firewall ] || ready=$(( (free_before - $(awk '/HugePages_Free/ {print $2}' /proc/meminfo)) * 2048 ))
    after=$ready
  fi
  touch "$work/go"
  gen_result "$name"
  if [ "$device" = ovs ]; then
    after=$(awk "$rss" "/proc/$(cat "$ovs_dir/ovs-vswitchd.pid")/status")
    ovs_stop
  else
    app_stop
  fi
  echo "$ready $after" >> "$work/$name.mem"  # KiB
  gen_stop
  echo "$link_before $(link_ns)" >> "$work/$name.link"
}

# field NAME FIELD [fast]: FIELD of each of NAME's measurements; with "fast", only of those on a
# fast link (all of them when none was).
field() { python3 -c 'import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
links = [max(map(float, line.split())) for line in open(sys.argv[1] + ".link")]
if len(sys.argv) > 4:
    fast = [r for r, l in zip(runs, links) if l <= float(sys.argv[3])]
    runs = fast or runs
for v in runs:
    for k in sys.argv[2].split("."):
        v = v[k]
    print(v)' "$work/$1" "$2" "$link_fast_ns" ${3:+"$3"}; }

echo "bench: $rounds rounds of $seconds s, rules ${rule_sets[*]}, hugepages in $huge_dir; $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
for i in $(seq "$rounds"); do
  for device in firewall ovs l3fwd testpmd; do
    for n in "${rule_sets[@]}"; do
      measure "$device" "$n" "$device-churn-$n" --workload churn --window "$window"
    done
    measure "$device" 1000 "$device-flows-10k" --workload flows --flows 10000
    measure "$device" 1000 "$device-flows-1m" --workload flows --flows 1000000 --window 16384
    measure "$device" 1000 "$device-imix" --workload flows --flows 10000 --sizes imix
    measure "$device" 1000 "$device-mix" --workload mix --flows 10000 --window "$window"
    measure "$device" 1000 "$device-latency" --workload flows --flows 10000 --rate 500000
  done
  printf 'round %d: connections/s firewall %s, ovs %s, l3fwd %s, testpmd %s; 1M flows Mpps firewall %s, ovs %s, l3fwd %s, testpmd %s\n' "$i" \
    "$(field firewall-churn-1000 connections_per_s | tail -1)" "$(field ovs-churn-1000 connections_per_s | tail -1)" \
    "$(field l3fwd-churn-1000 connections_per_s | tail -1)" "$(field testpmd-churn-1000 connections_per_s | tail -1)" \
    "$(field firewall-flows-1m received_mpps | tail -1)" "$(field ovs-flows-1m received_mpps | tail -1)" \
    "$(field l3fwd-flows-1m received_mpps | tail -1)" "$(field testpmd-flows-1m received_mpps | tail -1)"
done

tsc_mhz=$(awk -F: '/^cpu MHz/ {print $2; exit}' /proc/cpuinfo)
med() { field "$1" "$2" fast | median; }
links=$(cat "$work"/*.link | tr ' ' '\n')
printf '\nthe CPUs'"'"' link: %d of %d probes fast (round trip <= %d ns); round trips %s ns (min, median, max)\n' \
  "$(echo "$links" | awk -v f="$link_fast_ns" '$1 <= f' | wc -l)" "$(echo "$links" | wc -l)" "$link_fast_ns" \
  "$(echo "$links" | sort -g | awk '{a[NR]=$1} END {printf "%.0f, %.0f, %.0f", a[1], a[int((NR+1)/2)], a[NR]}')"
for d in firewall ovs l3fwd testpmd; do
  printf '  %s: measurements on a fast link %s\n' "$d" \
    "$(cat "$work/$d"-*.link | awk -v f="$link_fast_ns" '{n++} $1 <= f && $2 <= f {k++} END {printf "%d of %d", k, n}')"
done
printf '\nresults: medians of %d rounds, %d s each, of the measurements on a fast link; cycles/packet at %.0f MHz\n' "$rounds" "$seconds" "$tsc_mhz"
printf '  %-40s %14s %14s %8s %14s %14s %10s\n' figure firewall "ovs+ct" ratio "l3fwd-acl" "testpmd io" "fw/testpmd"
ratio() { if [ "$(echo "$2 == 0" | bc)" = 1 ]; then echo -; else printf '%.2f' "$(echo "$1 / $2" | bc -l)"; fi; }
row() {  # LABEL NAME FIELD
  local f o l
  f=$(med "firewall-$2" "$3"); o=$(med "ovs-$2" "$3"); l=$(med "l3fwd-$2" "$3"); t=$(med "testpmd-$2" "$3")
  printf '  %-40s %14s %14s %8s %14s %14s %10s\n' "$1" "$f" "$o" "$(ratio "$f" "$o")" "$l" "$t" "$(ratio "$f" "$t")"
}
cpp() { awk -v mhz="$tsc_mhz" -v mpps="$1" 'BEGIN {printf "%.0f", mhz / mpps}'; }
for n in "${rule_sets[@]}"; do row "connections/s, churn, $n rules" "churn-$n" connections_per_s; done
for n in "${rule_sets[@]}"; do row "  connections lost of them" "churn-$n" lost; done
row "Mpps, 10,000 flows, 64 B" flows-10k received_mpps
row "Mpps, 1,000,000 flows, 64 B" flows-1m received_mpps
row "Mpps, 10,000 flows, IMIX" imix received_mpps
row "Mpps, 50/50 new and established" mix received_mpps
row "latency p50 (ns) at 0.5 Mpps" latency latency_ns.p50
row "latency p99 (ns)" latency latency_ns.p99
row "latency p99.9 (ns)" latency latency_ns.p999
printf '\n  cycles per packet (one busy lcore: TSC / rate)\n'
for w in churn-1000 churn-10000 flows-10k flows-1m imix mix; do
  f=$(med "firewall-$w" received_mpps); o=$(med "ovs-$w" received_mpps); l=$(med "l3fwd-$w" received_mpps)
  t=$(med "testpmd-$w" received_mpps)
  printf '  %-40s %14s %14s %8s %14s %14s\n' "$w" "$(cpp "$f")" "$(cpp "$o")" "" "$(cpp "$l")" "$(cpp "$t")"
done
# Memory for a million flows: the firewall's hugepages for a table of $fw_flows (preallocated:
# per slot), Open vSwitch's resident memory grown while its million connections were committed.
fw_kib=$(awk '{print $1}' "$work/firewall-flows-1m.mem" | median)
ovs_kib=$(awk '{print $2 - $1}' "$work/ovs-flows-1m.mem" | median)
printf '\n  memory: firewall %.0f bytes per flow slot (%d MiB of hugepages for %d slots, buffers included);\n' \
  "$(echo "$fw_kib * 1024 / $fw_flows" | bc -l)" "$((fw_kib / 1024))" "$fw_flows"
printf '          Open vSwitch %.0f bytes per connection (resident memory +%d MiB over the million)\n' \
  "$(echo "$ovs_kib * 1024 / 1000000" | bc -l)" "$((ovs_kib / 1024))"
printf '\n  firewall at 1M flows / its 10k-flow rate: %.2f (goal >= 0.7)\n' \
  "$(echo "$(med firewall-flows-1m received_mpps) / $(med firewall-flows-10k received_mpps)" | bc -l)"
[ "$(nproc)" -ge 4 ] || echo "  two worker lcores: not measured here ($(nproc) CPUs; the generator, the main lcore and two workers need 4)"
