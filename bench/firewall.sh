#!/usr/bin/env bash
# The firewall's data plane against DPDK's own applications, all in this one script, on the same
# virtual devices, the same CPU and the same hugepages:
#   traffic   64-byte TCP and UDP packets of 10,000 IPv4 flows (bench/firewall-inputs.py), replayed
#             by net_pcap with infinite_rx=1 on port 0 and forwarded to net_null (no-rx=1) port 1;
#             one forwarding lcore (CPU 1; CPU 0 runs the main lcore and the rate sampler)
#   testpmd   dpdk-testpmd --forward-mode=io: the I/O ceiling of these devices (target: the
#             firewall >= 0.5x)
#   l3fwd     DPDK's l3fwd --lookup acl, built here from dpdk-doc's sources, with the same rule set
#             (1,000 and 10,000 rules; targets: the firewall >= 1.0x and >= 1.3x)
#   firewall  kmodkit's firewall with the same rules, tracking the state of every flow
#   firewall with metrics  the same, serving --metrics while a scraper (curl, on CPU 0) GETs
#             /metrics once a second, as Prometheus would: the ratio to the firewall without
#             shows what reading the counters costs the data path (target: 1.00 within noise)
# Rates come from each application's EAL telemetry socket (bench/dpdk-rate.py): packets forwarded
# over SECONDS after a warm-up. Cycles per packet = TSC frequency / rate (one busy lcore).
# Rounds alternate the applications; medians are reported.
#   bench/firewall.sh [ROUNDS [SECONDS]]   (default 3 rounds of 5 s; needs a build (ci/build.sh),
#                                          ci/install-deps.sh --bench, root for hugepages)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
seconds=${2:-5}
preset=${KMODKIT_PRESET:-default}
firewall=$PWD/build/$preset/firewall/firewall
flows=10000
rule_sets=(1000 10000)
huge_pages=768  # 2 MiB pages: 1.5 GiB, one application at a time

die() { echo "bench: $*" >&2; exit 1; }
[ -x "$firewall" ] || die "build first (ci/build.sh); no $firewall"
command -v dpdk-testpmd >/dev/null || die "no dpdk-testpmd: run ci/install-deps.sh --bench"
[ "$(id -u)" -eq 0 ] || die "needs root (hugepages)"

work=$(mktemp -d /var/tmp/kmodkit-bench-fw.XXXXXX)
# The application running now, by PID (run() starts it in a command substitution's subshell,
# so the PID goes through a file): only that process is ever stopped.
app_pid_file=$work/app.pid
stop_app() {
  [ -f "$app_pid_file" ] || return 0
  local pid
  pid=$(cat "$app_pid_file")
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$app_pid_file"
}
cleanup() {
  stop_app
  bench_hugepages_release
  rm -rf "$work" /var/run/dpdk/kmodkit-bench-*
}
trap cleanup EXIT

# Hugepages: reserved for the run, given back at the end.
bench_hugepages "$huge_pages" 512

# Inputs, and l3fwd built from dpdk-doc's copy of its sources (bench_build_l3fwd).
packets=$(python3 bench/firewall-inputs.py "$work" "$flows" "${rule_sets[@]}")
bench_build_l3fwd

rx_dev="net_pcap0,rx_pcap=$work/flows.pcap,infinite_rx=1"
tx_dev="net_null0,no-rx=1"
mbufs=65536

# run NAME PREFIX COMMAND...: starts the application, samples its rate, stops it. Appends
# "rx_mpps tx_mpps ..." to $work/NAME and keeps its output in $work/NAME.log.
run() {
  local name=$1 prefix=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$app_pid_file"
  local rate
  if ! rate=$(taskset -c 0 python3 bench/dpdk-rate.py "$prefix" 0 1 "$seconds" 120 2>"$work/$name.err"); then
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rm -f "$app_pid_file"
    die "$name: $(cat "$work/$name.err"); its output: $(tail -5 "$work/$name.log")"
  fi
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$app_pid_file"
  echo "$rate" >> "$work/$name"
  echo "$rate"
}

testpmd() {
  run testpmd kmodkit-bench-testpmd dpdk-testpmd -l 0,1 --no-pci --file-prefix kmodkit-bench-testpmd --huge-dir "$huge_dir" \
    --vdev "$rx_dev" --vdev "$tx_dev" -- --forward-mode=io --nb-cores=1 --total-num-mbufs=$mbufs --stats-period 3600 --auto-start
}
l3fwd() {
  run "l3fwd-$1" "kmodkit-bench-l3fwd" "$l3fwd" -l 1 --no-pci --file-prefix kmodkit-bench-l3fwd --huge-dir "$huge_dir" \
    --vdev "$rx_dev" --vdev "$tx_dev" -- -p 0x3 --config '(0,0,1),(1,0,1)' --lookup acl --parse-ptype \
    --rule_ipv4 "$work/l3fwd-$1.v4" --rule_ipv6 "$work/l3fwd-$1.v6"
}
fw() {
  run "firewall-$1" kmodkit-bench-fw "$firewall" --rules "$work/fw-$1.rules" --lcores 0,1 --file-prefix kmodkit-bench-fw \
    --huge-dir "$huge_dir" --vdev "$rx_dev" --vdev "$tx_dev" --mbufs $mbufs --log-format json
  # The firewall must have tracked: every flow opened once, every later packet passed by state.
  grep -q "new flows $flows expired" "$work/firewall-$1.log" ||
    die "firewall-$1 did not open exactly $flows flows: $(grep '^total' "$work/firewall-$1.log")"
  if grep -E '^drop [a-z_ ]+: [1-9]' "$work/firewall-$1.log"; then die "firewall-$1 dropped packets"; fi
}

# fw_scraped N: the firewall with N rules serving --metrics, scraped once a second (from CPU 0,
# the main lcore's, never the worker's) for as long as it runs.
fw_scraped() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -f "$work/scrapes-$1"
  (
    # Until the firewall's runtime directory is gone again (it has stopped): one GET a second.
    for _ in $(seq 600); do [ -S /var/run/dpdk/kmodkit-bench-fw/dpdk_telemetry.v2 ] && break; sleep 0.1; done
    while [ -S /var/run/dpdk/kmodkit-bench-fw/dpdk_telemetry.v2 ]; do
      taskset -c 0 curl -s -o /dev/null -w '%{http_code}\n' --max-time 2 "http://127.0.0.1:$port/metrics" >> "$work/scrapes-$1" || true
      sleep 1
    done
  ) &
  local scraper=$!
  run "firewall-metrics-$1" kmodkit-bench-fw "$firewall" --rules "$work/fw-$1.rules" --lcores 0,1 --file-prefix kmodkit-bench-fw \
    --huge-dir "$huge_dir" --vdev "$rx_dev" --vdev "$tx_dev" --mbufs $mbufs --log-format json --metrics "127.0.0.1:$port"
  wait "$scraper" 2>/dev/null || true
  # Before the firewall forwards and once it stops, /metrics answers 503 or nothing: from the
  # first 200 to the last, every scrape must be a 200, and there must be one a second.
  local verdict
  verdict=$(awk '{c[NR] = $1} $1 == 200 {if (!f) f = NR; l = NR}
                 END {bad = 0; for (i = f; i <= l; i++) if (c[i] != 200) bad++; print (f ? l - f + 1 : 0), bad}' "$work/scrapes-$1")
  [ "${verdict% *}" -ge "$seconds" ] && [ "${verdict#* }" -eq 0 ] ||
    die "firewall-metrics-$1: scrapes while forwarding (count, failed): $verdict; all answers: $(sort "$work/scrapes-$1" | uniq -c | tr '\n' ' ')"
}

col() { awk -v c="$2" '{print $c}' "$work/$1"; }

echo "bench: $packets packets of $flows flows, rules ${rule_sets[*]}, $rounds rounds of $seconds s, hugepages in $huge_dir"
for i in $(seq "$rounds"); do
  printf 'round %d: testpmd %s' "$i" "$(testpmd | cut -d' ' -f2)"
  for n in "${rule_sets[@]}"; do
    printf ', l3fwd-acl %d rules %s, firewall %s' "$n" "$(l3fwd "$n" | cut -d' ' -f2)" "$(fw "$n" | cut -d' ' -f2)"
    fw_scraped "$n" > /dev/null
    printf ', with metrics %s' "$(tail -1 "$work/firewall-metrics-$n" | cut -d' ' -f2)"
  done
  echo " Mpps"
  for n in "${rule_sets[@]}"; do
    paste "$work/firewall-$n" "$work/l3fwd-$n" | tail -1 | awk '{print $2 / $7}' >> "$work/r_l3fwd_$n"
    paste "$work/firewall-$n" "$work/testpmd" | tail -1 | awk '{print $2 / $7}' >> "$work/r_testpmd_$n"
    paste "$work/firewall-metrics-$n" "$work/firewall-$n" | tail -1 | awk '{print $2 / $7}' >> "$work/r_metrics_$n"
  done
done

tsc_mhz=$(awk -F: '/^cpu MHz/ {print $2; exit}' /proc/cpuinfo)
cpp() { awk -v mhz="$tsc_mhz" -v mpps="$1" 'BEGIN {printf "%.0f", mhz / mpps}'; }
printf '\nresults: median of %d rounds, %d s each, Mpps forwarded to net_null; cycles/packet at %.0f MHz\n' "$rounds" "$seconds" "$tsc_mhz"
printf '  %-34s %8s %14s\n' application Mpps cycles/packet
tp=$(col testpmd 2 | median)
printf '  %-34s %8.2f %14s\n' "dpdk-testpmd io" "$tp" "$(cpp "$tp")"
for n in "${rule_sets[@]}"; do
  l=$(col "l3fwd-$n" 2 | median); f=$(col "firewall-$n" 2 | median)
  printf '  %-34s %8.2f %14s\n' "l3fwd --lookup acl, $n rules" "$l" "$(cpp "$l")"
  printf '  %-34s %8.2f %14s\n' "firewall, $n rules, stateful" "$f" "$(cpp "$f")"
  m=$(col "firewall-metrics-$n" 2 | median)
  printf '  %-34s %8.2f %14s\n' "  the same, /metrics scraped at 1 Hz" "$m" "$(cpp "$m")"
done
printf '\n  %-44s %8s %8s\n' ratio median target
for n in "${rule_sets[@]}"; do
  target=$([ "$n" -ge 10000 ] && echo 1.3 || echo 1.0)
  printf '  %-44s %8.2f %8s\n' "firewall / l3fwd-acl, $n rules" "$(median < "$work/r_l3fwd_$n")" ">= $target"
  printf '  %-44s %8.2f %8s\n' "firewall / testpmd io, $n rules" "$(median < "$work/r_testpmd_$n")" ">= 0.5"
  printf '  %-44s %8.2f %8s\n' "scraped at 1 Hz / not, $n rules" "$(median < "$work/r_metrics_$n")" "1.00"
done
