// trafficgen: the firewall benchmarks' traffic, made and answered by one DPDK process on one
// lcore. It serves two memif sockets; the device under test (the firewall, Open vSwitch, l3fwd)
// attaches its ports 0 and 1 to them as a memif client and forwards between them. Port A plays
// every client, port B every server (frames.hpp has the exchange). Workloads:
//   churn        short TCP connections with fresh tuples, --window of them in flight: each costs the
//                device a rule lookup, an insert and, once closed, a removal
//   flows        --flows established connections (opened first, by handshakes), then their packets
//                round robin, both directions, 64-byte frames (--sizes imix: 64/594/1518 as 7:4:1)
//   mix          half the packets of --flows established connections, half of new connections
// After --warmup seconds it counts for --seconds and prints one JSON line: packets sent and
// received, connections completed, their rates, and the latency each received packet saw
// (the TSC written at enqueue on one port, read where it came back), as percentiles.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include "frames.hpp"
#include "histogram.hpp"
#include "kmodkit/cli.hpp"
#include "kmodkit/log.hpp"

namespace kmodkit::bench {
namespace {

constexpr uint16_t kBurst = 32;
// Rings each memif port has at most (--rings): a client may bring more than one (Open vSwitch
// has a transmit queue per PMD thread and one for its main thread). The generator reads them
// all and sends on ring 0.
constexpr uint16_t kQueues = 8;
// Frames waiting for a port whose ring is full: the generator holds them (the device pushes
// back, as a real sender's queue would) and makes no new traffic while they wait.
constexpr uint32_t kPending = 8192;
std::atomic<bool> g_stop{false};

enum class Workload { churn, flows, mix };

struct Options {
  std::string workload = "churn";
  uint32_t flows = 10000;
  uint32_t window = 4096;
  std::string sizes = "64";
  double seconds = 5, warmup = 2, setup_timeout = 120;
  double rate = 0;  // packets a second of established flows; 0: as fast as the device takes them
  std::string socket_dir = "/var/run/kmodkit-bench";
  std::string go_file;  // sends nothing until this file exists ("" : once the links are up)
  bool hold = false;    // after the result, keep the ports up until stopped
  unsigned lcore = 0;
  std::string file_prefix = "kmodkit-bench-gen";
  std::string huge_dir;
  uint32_t no_huge_mb = 0;
  uint32_t mbufs = 65536;
  uint16_t rings = 1;  // as many as the device under test brings (memif repeats packets on rings it lacks)
};

// Frames of the established flows: 64 bytes, or IMIX (64, 594, 1518 on the wire, 7:4:1).
constexpr uint16_t kImix[12] = {60, 590, 60, 60, 1514, 60, 590, 60, 60, 590, 60, 590};

struct Counts {
  uint64_t sent = 0, received = 0, completed = 0, opened = 0, tx_dropped = 0, foreign = 0, lost = 0;
};

class Generator {
 public:
  Generator(const Options& o, Workload w, rte_mempool* pool) : o_(o), w_(w), pool_(pool) {
    hz_ = rte_get_tsc_hz();
    opened_flag_.assign(o.flows, false);
    slots_.assign(std::bit_ceil(4ULL * o.window), 0);
    tx_[0].resize(kPending);
    tx_[1].resize(kPending);
  }
  Result<std::string> run();

 private:
  // Queues a frame for port p (0: A, 1: B), stamped now; sends when a burst is full.
  void queue(int p, rte_mbuf* m) {
    if (ntx_[p] == kPending) {
      ++all_.tx_dropped;
      rte_pktmbuf_free(m);
      return;
    }
    stamp(rte_pktmbuf_mtod(m, uint8_t*), rte_pktmbuf_data_len(m), rte_get_tsc_cycles());
    tx_[p][ntx_[p]++] = m;
    if (ntx_[p] == kBurst) flush(p);
  }
  bool backlog() const { return ntx_[0] >= kBurst || ntx_[1] >= kBurst; }
  void flush(int p);
  rte_mbuf* segment(const Tuple& t, Side from, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t payload);
  void open_connection(uint64_t k, uint16_t port);
  uint16_t receive(int p, uint16_t ring, uint64_t now);
  // Answers what waits on both ports, up to 8 bursts a ring: the device's replies go before new
  // traffic, so that the generator never makes the device drop for want of a reader.
  void receive_all(uint64_t now) {
    for (int p = 0; p < 2; ++p) {
      for (uint16_t q = 0; q < o_.rings; ++q) {
        for (int b = 0; b < 8 && receive(p, q, now) == kBurst; ++b) {
        }
      }
    }
  }
  void send_flow_burst(uint64_t now);
  bool measuring(uint64_t now) const { return now >= measure_from_ && now < measure_to_; }

  const Options& o_;
  Workload w_;
  rte_mempool* pool_;
  uint64_t hz_ = 0;
  std::vector<rte_mbuf*> tx_[2];
  uint32_t ntx_[2] = {0, 0};
  Counts all_, at_start_;
  Histogram latency_;
  uint64_t measure_from_ = UINT64_MAX, measure_to_ = UINT64_MAX;
  uint64_t next_churn_ = 0;    // the next new connection's number
  uint64_t in_flight_ = 0;     // churn connections opened and not completed
  // When each connection in flight opened (TSC; 0: completed), at its number modulo the size:
  // a connection still open when its slot comes round again (three windows later) was lost.
  std::vector<uint64_t> slots_;
  uint32_t next_flow_ = 0;     // round robin over the established flows
  uint32_t size_at_ = 0;       // position in the IMIX pattern
  uint64_t flows_opened_ = 0;  // distinct established flows up
  std::vector<bool> opened_flag_;
  uint64_t churn_sent_ = 0;    // packets of new connections sent (mix: the established ones follow)
  uint64_t flow_sent_ = 0;
};

void Generator::flush(int p) {
  const uint32_t n = ntx_[p];
  if (n == 0) return;
  uint32_t sent = 0;
  while (sent < n) {
    const auto want = static_cast<uint16_t>(std::min<uint32_t>(n - sent, 512));
    const uint16_t took = rte_eth_tx_burst(static_cast<uint16_t>(p), 0, tx_[p].data() + sent, want);
    sent += took;
    if (took < want) break;  // the ring is full: the rest waits
  }
  all_.sent += sent;
  if (sent > 0 && sent < n) std::copy(tx_[p].begin() + sent, tx_[p].begin() + n, tx_[p].begin());
  ntx_[p] = n - sent;
}

rte_mbuf* Generator::segment(const Tuple& t, Side from, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t payload) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (m == nullptr) return nullptr;
  const uint16_t len = write_segment(rte_pktmbuf_mtod(m, uint8_t*), t, from, flags, seq, ack, payload);
  m->data_len = len;
  m->pkt_len = len;
  return m;
}

void Generator::open_connection(uint64_t k, uint16_t port) {
  const Tuple t = tuple_of(k, port);
  if (port == kChurnPort) {
    uint64_t& slot = slots_[k & (slots_.size() - 1)];
    if (slot != 0) {  // connection k - size never completed
      ++all_.lost;
      if (in_flight_ > 0) --in_flight_;
    }
    slot = rte_get_tsc_cycles();
    ++in_flight_;
    ++churn_sent_;
  }
  if (rte_mbuf* m = segment(t, Side::client, tcp::syn, client_isn(t), 0, 0)) queue(0, m);
}

// Answers what came back on port p: each received frame becomes the next packet of its exchange.
uint16_t Generator::receive(int p, uint16_t ring, uint64_t now) {
  rte_mbuf* in[kBurst];
  const uint16_t n = rte_eth_rx_burst(static_cast<uint16_t>(p), ring, in, kBurst);
  const Side at = p == 0 ? Side::client : Side::server;
  const bool measure = measuring(now);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = in[i];
    auto* frame = rte_pktmbuf_mtod(m, uint8_t*);
    uint16_t len = rte_pktmbuf_data_len(m);
    if (measure && len >= kMinFrame) {
      const uint64_t sent_at = stamp_of(frame, len);
      const uint64_t now48 = now & ((uint64_t{1} << 48) - 1);
      if (sent_at != 0 && sent_at <= now48) latency_.record(now48 - sent_at);
    }
    const Next next = answer(frame, &len, at);
    m->data_len = len;
    m->pkt_len = len;
    switch (next) {
      case Next::reply:
        // A reply keeps its connection's ports: one of a new connection counts for the mix.
        if (Seen seen; inspect(frame, len, &seen) && seen.src_port != kFlowPort && seen.dst_port != kFlowPort) ++churn_sent_;
        queue(p, m);
        break;
      case Next::reply_and_data: {
        rte_mbuf* data = rte_pktmbuf_alloc(pool_);
        queue(p, m);
        churn_sent_ += 2;
        if (data != nullptr) {
          const uint16_t dlen = write_data(frame, rte_pktmbuf_mtod(data, uint8_t*));
          data->data_len = dlen;
          data->pkt_len = dlen;
          queue(p, data);
        }
        break;
      }
      case Next::done: {
        ++all_.completed;
        uint64_t& slot = slots_[number_of(frame, len) & (slots_.size() - 1)];
        if (slot != 0 && in_flight_ > 0) --in_flight_;
        slot = 0;
        rte_pktmbuf_free(m);
        break;
      }
      case Next::opened: {
        const uint64_t k = number_of(frame, len);
        if (k < opened_flag_.size() && !opened_flag_[k]) {
          opened_flag_[k] = true;
          ++flows_opened_;
          ++all_.opened;
        }
        rte_pktmbuf_free(m);
        break;
      }
      case Next::foreign:
        ++all_.foreign;
        rte_pktmbuf_free(m);
        break;
      case Next::drop:
        rte_pktmbuf_free(m);
        break;
    }
  }
  all_.received += n;
  return n;
}

// One burst of established flows' packets, each direction: flow i's client packet on A, its
// server packet on B. Retransmissions, as conntrack sees them (the numbers stay those after the
// handshake), so no flow runs out of window however long the run.
void Generator::send_flow_burst(uint64_t /*now*/) {
  for (uint16_t i = 0; i < kBurst / 2; ++i) {
    const Tuple t = tuple_of(next_flow_, kFlowPort);
    next_flow_ = next_flow_ + 1 == o_.flows ? 0 : next_flow_ + 1;
    uint16_t frame = kMinFrame;
    if (o_.sizes == "imix") {
      frame = kImix[size_at_];
      size_at_ = size_at_ + 1 == 12 ? 0 : size_at_ + 1;
    }
    const auto payload = static_cast<uint16_t>(frame - kHeaders - kTrailer);
    const uint32_t c = client_isn(t) + 1, s = server_isn(t) + 1;
    if (rte_mbuf* m = segment(t, Side::client, tcp::psh | tcp::ack, c, s, payload)) queue(0, m);
    if (rte_mbuf* m = segment(t, Side::server, tcp::psh | tcp::ack, s, c, payload)) queue(1, m);
    flow_sent_ += 2;
  }
}

Result<std::string> Generator::run() {
  auto log = log::get("trafficgen");
  // Established flows first (flows, mix): handshakes, --window at a time, until all are up.
  if (w_ != Workload::churn) {
    const uint64_t deadline = rte_get_tsc_cycles() + static_cast<uint64_t>(o_.setup_timeout * static_cast<double>(hz_));
    uint64_t next_syn = 0, last_progress = rte_get_tsc_cycles(), seen_opened = 0;
    while (flows_opened_ < o_.flows && !g_stop.load(std::memory_order_relaxed)) {
      const uint64_t now = rte_get_tsc_cycles();
      if (now > deadline) {
        return fail(ExitCode::software, "only " + std::to_string(flows_opened_) + " of " + std::to_string(o_.flows) +
                                            " flows were opened through the device in " +
                                            std::to_string(static_cast<int>(o_.setup_timeout)) + " s");
      }
      // SYNs while fewer than a window are in flight; after 50 ms without progress, the flows
      // sent a SYN and not up yet get theirs again (the device dropped some handshakes).
      if (flows_opened_ != seen_opened) {
        seen_opened = flows_opened_;
        last_progress = now;
      } else if (now - last_progress > hz_ / 20) {
        for (uint32_t k = 0; k < next_syn; ++k) {
          if (!opened_flag_[k]) open_connection(k, kFlowPort);
        }
        flush(0);
        last_progress = now;
      }
      while (next_syn < o_.flows && next_syn < flows_opened_ + o_.window) open_connection(next_syn++, kFlowPort);
      flush(0);
      receive_all(now);
      flush(0);
      flush(1);
    }
    log->info("{} flows open through the device", flows_opened_);
  }
  const uint64_t start = rte_get_tsc_cycles();
  measure_from_ = start + static_cast<uint64_t>(o_.warmup * static_cast<double>(hz_));
  measure_to_ = measure_from_ + static_cast<uint64_t>(o_.seconds * static_cast<double>(hz_));
  const double per_packet = o_.rate > 0 ? static_cast<double>(hz_) / o_.rate : 0;
  double next_send = static_cast<double>(start);
  uint64_t last_rx = start;
  bool counting = false;
  Histogram empty;
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_get_tsc_cycles();
    if (!counting && now >= measure_from_) {
      at_start_ = all_;
      latency_ = empty;
      counting = true;
    }
    if (now >= measure_to_) break;
    // What came back first (answers), then new traffic into what room the rings have.
    const uint64_t before = all_.received;
    receive_all(now);
    if (all_.received != before) last_rx = now;
    flush(0);
    flush(1);
    if (w_ != Workload::flows) {
      // New connections up to the window; if nothing came back for 10 ms, the device dropped
      // what was in flight: a new window.
      if (now - last_rx > hz_ / 100) in_flight_ = 0;
      while (in_flight_ < o_.window && !backlog()) open_connection(next_churn_++, kChurnPort);
    }
    if (w_ == Workload::flows) {
      if (!backlog() && (per_packet == 0 || static_cast<double>(now) >= next_send)) {
        send_flow_burst(now);
        next_send += per_packet * kBurst;
        if (static_cast<double>(now) > next_send + static_cast<double>(hz_) / 1000) next_send = static_cast<double>(now);
      }
    } else if (w_ == Workload::mix) {
      while (flow_sent_ + kBurst <= churn_sent_ && !backlog()) send_flow_burst(now);
    }
    flush(0);
    flush(1);
  }
  if (!counting) return fail(ExitCode::software, "stopped before the measurement began");
  const double secs = static_cast<double>(std::min<uint64_t>(rte_get_tsc_cycles(), measure_to_) - measure_from_) /
                      static_cast<double>(hz_);
  const Counts d{all_.sent - at_start_.sent,         all_.received - at_start_.received,
                 all_.completed - at_start_.completed, all_.opened - at_start_.opened,
                 all_.tx_dropped - at_start_.tx_dropped, all_.foreign - at_start_.foreign,
                 all_.lost - at_start_.lost};
  const double ns = 1e9 / static_cast<double>(hz_);
  const auto pct = [&](double f) { return static_cast<double>(latency_.percentile(f)) * ns; };
  char line[1024];
  std::snprintf(line, sizeof line,
                "{\"workload\": \"%s\", \"sizes\": \"%s\", \"flows\": %u, \"window\": %u, \"seconds\": %.3f, "
                "\"sent\": %llu, \"received\": %llu, \"tx_dropped\": %llu, \"foreign\": %llu, \"lost\": %llu, "
                "\"connections\": %llu, \"connections_per_s\": %.0f, \"received_mpps\": %.4f, "
                "\"latency_ns\": {\"samples\": %llu, \"p50\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"max\": %.0f}}",
                o_.workload.c_str(), o_.sizes.c_str(), o_.flows, o_.window, secs, static_cast<unsigned long long>(d.sent),
                static_cast<unsigned long long>(d.received), static_cast<unsigned long long>(d.tx_dropped),
                static_cast<unsigned long long>(d.foreign), static_cast<unsigned long long>(d.lost),
                static_cast<unsigned long long>(d.completed),
                static_cast<double>(d.completed) / secs, static_cast<double>(d.received) / secs / 1e6,
                static_cast<unsigned long long>(latency_.count()), pct(0.5), pct(0.99), pct(0.999),
                static_cast<double>(latency_.max()) * ns);
  return std::string(line);
}

// A memif port in the server role, started, with `rings` rings each way.
Result<void> start_port(uint16_t port, uint16_t rings, rte_mempool* pool) {
  rte_eth_conf conf{};
  int rc = rte_eth_dev_configure(port, rings, rings, &conf);
  const auto socket = static_cast<unsigned>(rte_eth_dev_socket_id(port));
  for (uint16_t q = 0; rc == 0 && q < rings; ++q) {
    rc = rte_eth_rx_queue_setup(port, q, 1024, socket, nullptr, pool);
    if (rc == 0) rc = rte_eth_tx_queue_setup(port, q, 1024, socket, nullptr);
  }
  if (rc == 0) rc = rte_eth_dev_start(port);
  if (rc != 0) return fail(ExitCode::config, "port " + std::to_string(port) + ": " + rte_strerror(-rc));
  return {};
}

Result<void> generate(const Options& o) {
  Workload w;
  if (o.workload == "churn") w = Workload::churn;
  else if (o.workload == "flows") w = Workload::flows;
  else if (o.workload == "mix") w = Workload::mix;
  else return fail(ExitCode::usage, "--workload '" + o.workload + "': expected churn, flows or mix");
  if (o.sizes != "64" && o.sizes != "imix") return fail(ExitCode::usage, "--sizes '" + o.sizes + "': expected 64 or imix");

  std::vector<std::string> args = {"trafficgen", "-l", std::to_string(o.lcore), "--file-prefix", o.file_prefix,
                                   "--no-pci", "--log-level", "notice"};
  for (const char* side : {"a", "b"}) {
    args.push_back("--vdev");
    args.push_back(std::string("net_memif") + (side[0] == 'a' ? "0" : "1") + ",role=server,id=0,socket-abstract=no,socket=" +
                   o.socket_dir + "/" + side + ".sock");
  }
  if (o.no_huge_mb > 0) {
    args.insert(args.end(), {"--no-huge", "-m", std::to_string(o.no_huge_mb)});
  } else if (!o.huge_dir.empty()) {
    args.insert(args.end(), {"--huge-dir", o.huge_dir});
  }
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  if (rte_eal_init(static_cast<int>(cargs.size()), cargs.data()) < 0) {
    return fail(ExitCode::config, std::string("EAL did not start: ") + rte_strerror(rte_errno));
  }
  struct Cleanup {
    ~Cleanup() {
      uint16_t p;
      RTE_ETH_FOREACH_DEV(p) {
        rte_eth_dev_stop(p);
        rte_eth_dev_close(p);
      }
      rte_eal_cleanup();
    }
  } cleanup;
  if (rte_eth_dev_count_avail() != 2) return fail(ExitCode::config, "the two memif ports did not come up");
  rte_mempool* pool = rte_pktmbuf_pool_create("gen_pool", o.mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                              static_cast<int>(rte_socket_id()));
  if (pool == nullptr) return fail(ExitCode::config, std::string("no packet buffer pool: ") + rte_strerror(rte_errno));
  KK_TRY(start_port(0, o.rings, pool));
  KK_TRY(start_port(1, o.rings, pool));
  auto log = log::get("trafficgen");
  log->info("waiting for the device under test on {}/a.sock and {}/b.sock", o.socket_dir, o.socket_dir);
  const uint64_t hz = rte_get_tsc_hz(), deadline = rte_get_tsc_cycles() + 120 * hz;
  for (;;) {
    rte_eth_link a{}, b{};
    rte_eth_link_get_nowait(0, &a);
    rte_eth_link_get_nowait(1, &b);
    if (a.link_status == RTE_ETH_LINK_UP && b.link_status == RTE_ETH_LINK_UP) break;
    if (g_stop.load()) return fail(ExitCode::software, "stopped while waiting for the device under test");
    if (rte_get_tsc_cycles() > deadline) {
      return fail(ExitCode::unavailable, "no device under test attached to " + o.socket_dir + "/a.sock and b.sock in 120 s");
    }
    rte_delay_ms(10);
  }
  // The device under test may need a while after its links come up (Open vSwitch loads its
  // flows then): the script that starts it says when by making the go file.
  if (!o.go_file.empty()) {
    log->info("waiting for {}", o.go_file);
    while (access(o.go_file.c_str(), F_OK) != 0) {
      if (g_stop.load()) return fail(ExitCode::software, "stopped while waiting for " + o.go_file);
      if (rte_get_tsc_cycles() > deadline + 480 * hz) {
        return fail(ExitCode::unavailable, o.go_file + " did not appear in 10 minutes");
      }
      rte_delay_ms(10);
    }
  }
  Generator gen(o, w, pool);
  const std::string result = KK_TRY(gen.run());
  std::printf("%s\n", result.c_str());
  std::fflush(stdout);
  // A memif client whose server goes away while its data path runs can fault (DPDK 22.11 unmaps
  // the shared rings from its interrupt thread): with --hold the device under test is stopped
  // first, the generator reading and freeing what still comes meanwhile.
  while (o.hold && !g_stop.load()) {
    rte_mbuf* in[kBurst];
    bool any = false;
    for (uint16_t p = 0; p < 2; ++p) {
      rte_eth_link link{};
      rte_eth_link_get_nowait(p, &link);
      if (link.link_status != RTE_ETH_LINK_UP) continue;  // its client is gone: not touched again
      for (uint16_t q = 0; q < o.rings; ++q) {
        const uint16_t n = rte_eth_rx_burst(p, q, in, kBurst);
        rte_pktmbuf_free_bulk(in, n);
        any = any || n > 0;
      }
    }
    if (!any) rte_delay_us_sleep(1000);
  }
  return {};
}

}  // namespace
}  // namespace kmodkit::bench

int main(int argc, char** argv) {
  using namespace kmodkit;
  using namespace kmodkit::bench;
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop.store(true); };
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT}) sigaction(sig, &sa, nullptr);
  Options o;
  cli::Program program{
      "trafficgen",
      "the firewall benchmarks' traffic generator: TCP connections and flows over two memif ports",
      "Example: trafficgen --workload churn --window 4096 --socket-dir /run/bench --seconds 5\n"
      "  then attach the device under test: --vdev net_memif0,role=client,socket-abstract=no,socket=/run/bench/a.sock\n"
      "  --vdev net_memif1,role=client,socket-abstract=no,socket=/run/bench/b.sock",
      {
          {"workload", cli::Kind::value, "churn", "NAME", "churn, flows or mix", cli::store(o.workload)},
          {"flows", cli::Kind::value, "10000", "N", "established flows (flows, mix)",
           cli::store_integer("flows", o.flows, 1, 16'000'000)},
          {"window", cli::Kind::value, "4096", "N", "connections in flight (churn, mix) or handshakes at once (opening flows)",
           cli::store_integer("window", o.window, 1, 1'000'000)},
          {"sizes", cli::Kind::value, "64", "SIZES", "frame sizes of the established flows: 64 or imix", cli::store(o.sizes)},
          {"rate", cli::Kind::value, "0", "PPS", "packets a second of established flows (0: as many as the device takes)",
           [&o](const std::vector<std::string>& v) -> Result<void> {
             o.rate = static_cast<double>(KK_TRY(cli::parse_integer("rate", v.front(), 0, 1'000'000'000)));
             return {};
           }},
          {"seconds", cli::Kind::value, "5", "SECONDS", "how long to count", cli::store_seconds("seconds", o.seconds)},
          {"warmup", cli::Kind::value, "2", "SECONDS", "how long to run before counting", cli::store_seconds("warmup", o.warmup)},
          {"setup-timeout", cli::Kind::value, "120", "SECONDS", "how long opening the flows may take",
           cli::store_seconds("setup-timeout", o.setup_timeout)},
          {"socket-dir", cli::Kind::value, "/var/run/kmodkit-bench", "DIR", "where a.sock and b.sock are served",
           cli::store(o.socket_dir)},
          {"go-file", cli::Kind::value, "", "FILE", "send nothing until FILE exists (the device under test is ready)",
           cli::store(o.go_file)},
          {"hold", cli::Kind::flag, "", "", "after printing the result, keep the ports up until SIGINT or SIGTERM "
           "(stop the device under test first)", cli::store_flag(o.hold)},
          {"lcore", cli::Kind::value, "0", "CPU", "the CPU to run on", cli::store_integer("lcore", o.lcore, 0, 1023)},
          {"file-prefix", cli::Kind::value, "kmodkit-bench-gen", "NAME", "EAL's --file-prefix", cli::store(o.file_prefix)},
          {"huge-dir", cli::Kind::value, "", "DIR", "the hugepage mount (default: EAL's search)", cli::store(o.huge_dir)},
          {"no-huge-mb", cli::Kind::value, "0", "MB", "run without hugepages on this much memory",
           cli::store_integer("no-huge-mb", o.no_huge_mb, 0, 1 << 20)},
          {"rings", cli::Kind::value, "1", "N",
           "rings each memif port has, as many as the device under test brings (Open vSwitch with one PMD thread: 2); "
           "a client with more is refused, and with fewer, memif hands each packet in once more per ring the client lacks",
           cli::store_integer("rings", o.rings, 1, kQueues)},
          {"mbufs", cli::Kind::value, "65536", "N", "packet buffers", cli::store_integer("mbufs", o.mbufs, 4096, 1 << 24)},
      }};
  return cli::run_main(program, argc, argv, [&] { return generate(o); });
}
