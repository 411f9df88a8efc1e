#include "dataplane.hpp"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>
#include <rte_malloc.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "flow_table.hpp"
#include "sizing.hpp"
#include "metrics.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/log.hpp"

namespace kmodkit::firewall {
namespace {

constexpr uint16_t kBurst = 32;

// A symmetric Toeplitz key (0x6d5a repeated): both directions of a flow hash alike, so RSS
// brings them to the same queue and the same worker.
uint8_t kSymmetricKey[40] = {0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
                             0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
                             0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a};

// A burst's working arrays, kept with the worker rather than initialised on the stack per burst.
// key_of[i]: the index of packet i's key among the IPv4 keys (0..31), among the IPv6 keys
// (32..63, kV6 added), or kNoKey.
struct Scratch {
  Packet pkt[kBurst];
  FlowKey4 keys4[kBurst];
  FlowKey keys6[kBurst];
  Flow* found[2 * kBurst];
  uint8_t key_of[kBurst];
  bool from_lo[kBurst];
};
constexpr uint8_t kV6 = kBurst;
constexpr uint8_t kNoKey = 0xFF;

// The rules in force, replaced as a whole by a reload: workers read it through one pointer, and
// the old one is freed once every worker has passed a quiescent state (rte_rcu_qsbr).
struct RuleState {
  RuleSet rules;
  Classifier classifier;
  std::vector<std::vector<Count>> hits;  // [worker][rule]
  // [rule]: the hits of the same rule in the rule sets before this one (a reload keeps the
  // counters of the rules it did not change); written by the control thread only.
  std::vector<uint64_t> carried;
};

struct Worker {
  Scratch scratch;
  unsigned lcore = 0;
  uint16_t queue = 0;                            // also its RCU thread id
  const std::atomic<RuleState*>* in_force = nullptr;
  RuleState* rules = nullptr;                    // read from in_force once per loop
  rte_rcu_qsbr* rcu = nullptr;
  FlowTable* flows = nullptr;
  Counters* counters = nullptr;
  const std::vector<uint16_t>* ports = nullptr;
  const DataplaneConfig* config = nullptr;
  std::atomic<bool>* stop = nullptr;
};

// The index of the first rule matching a packet of either family, or -1.
int classify(const Worker& w, const Packet& p, int pair, Direction dir) {
  if (p.l3 == L3::ipv4) {
    Key4 k;
    make_key(p, pair, dir, &k);
    return w.rules->classifier.classify(k);
  }
  Key6 k;
  make_key(p, pair, dir, &k);
  return w.rules->classifier.classify(k);
}

// What the rules say of a packet: the action of rule `rule`, or the policy when none matched.
Action action_of(const Worker& w, int rule) {
  return rule >= 0 ? w.rules->rules.rules[static_cast<size_t>(rule)].action : w.rules->rules.policy;
}

// What the rules say of a packet that has no flow: the matching rule's hit is counted, and a
// denial counted by whether a rule or the policy denied it. True when allowed.
bool rules_allow(Worker& w, const Packet& p, int pair, Direction dir) {
  const int rule = classify(w, p, pair, dir);
  if (rule >= 0) ++w.rules->hits[w.queue][static_cast<size_t>(rule)];
  if (action_of(w, rule) == Action::allow) return true;
  ++w.counters->drops[static_cast<int>(rule >= 0 ? Drop::rule : Drop::policy)];
  return false;
}

// Neighbour discovery proper: router and neighbour solicitations and advertisements (RFC 4861
// 133-136), which a link needs. Redirects (137) are not among them: the rules decide those.
bool is_nd(const Packet& p) { return p.l3 == L3::ipv6 && p.proto == 58 && p.has_l4 && p.icmp_type >= 133 && p.icmp_type <= 136; }

// An ICMP error related to a tracked flow, as conntrack finds one (nf_conntrack_inet_error): the
// packet it quotes, read as it was sent, belongs to a tracked flow, and the error goes back to
// that packet's sender (else any host could pass errors about any open flow to a third one).
bool related_error(Worker& w, const uint8_t* data, uint32_t len, const Packet& p, int pair) {
  Packet inner;
  if (icmp_role(p) != IcmpRole::error || !parse_quoted(data, len, p, &inner) || !has_flow_key(inner) || inner.src != p.dst) {
    return false;
  }
  bool lo = false;
  return w.flows->find(flow_key(inner, pair, &lo)) != nullptr;
}

// A packet the flow table cannot know: malformed, ARP/ND, other EtherTypes, later fragments,
// ICMP messages that are neither a query nor a reply. True to forward it.
bool decide_untracked(Worker& w, const uint8_t* data, uint32_t len, const Packet& p, int pair, Direction dir) {
  Counters& c = *w.counters;
  if (p.malformed != Malformed::none) {
    ++c.malformed[static_cast<int>(p.malformed)];
    return false;
  }
  if (p.l3 == L3::arp || is_nd(p)) {
    if (w.config->pass_arp_nd) ++c.arp_nd;
    else ++c.drops[static_cast<int>(Drop::policy)];
    return w.config->pass_arp_nd;
  }
  if (p.l3 == L3::other) {
    if (!w.config->pass_non_ip) ++c.drops[static_cast<int>(Drop::non_ip)];
    return w.config->pass_non_ip;
  }
  if (p.later_fragment) {
    // A later fragment carries no ports: only rules without ports decide, and it is not tracked.
    Packet q = p;
    q.src_port = q.dst_port = 0;
    const Action a = action_of(w, classify(w, q, pair, dir));
    if (a == Action::deny) ++c.drops[static_cast<int>(Drop::fragment)];
    else ++c.passed_untracked;
    return a == Action::allow;
  }
  // ICMP errors, redirects and the other types that open no flow: an error quoting a tracked
  // flow passes as related; the rest is for the rules, and opens no flow when they allow it.
  if (related_error(w, data, len, p, pair)) {
    ++c.passed_related;
    return true;
  }
  if (!rules_allow(w, p, pair, dir)) return false;
  ++c.passed_untracked;
  return true;
}

bool trackable(const Packet& p) {
  return p.malformed == Malformed::none && (p.l3 == L3::ipv4 || p.l3 == L3::ipv6) && !p.later_fragment && !is_nd(p) &&
         has_flow_key(p);
}

// A packet of a known flow: the state machine decides.
bool decide_tracked(Worker& w, Flow& f, const Packet& p, bool from_lo, uint32_t now) {
  // The common case inline: an established flow's packet that changes nothing (no FIN or RST).
  const bool quiet = f.track.state == FlowState::established &&
                     (p.proto != 6 || (p.tcp_flags & (TcpFlag::fin | TcpFlag::rst)) == 0);
  if (!quiet && track(f.track, p, from_lo) == Verdict::drop_invalid) {
    ++w.counters->drops[static_cast<int>(Drop::invalid_state)];
    return false;
  }
  f.last_seen = now;
  return true;
}

// A packet whose flow the burst's lookup did not find: a new flow the rules decide. When an
// earlier packet of the same burst opened a flow (`opened` > 0), it may be this one's: looked up again.
bool decide_new(Worker& w, const Packet& p, const FlowKey& key, bool from_lo, int pair, Direction dir, uint32_t now,
                uint32_t& opened) {
  Counters& c = *w.counters;
  if (Flow* f = opened > 0 ? w.flows->find(key) : nullptr) {
    if (!decide_tracked(w, *f, p, from_lo, now)) return false;
    ++c.passed_state;
    return true;
  }
  if (!rules_allow(w, p, pair, dir)) return false;
  FlowTrack t;
  if (!start_flow(p, from_lo, &t)) {
    ++c.drops[static_cast<int>(p.proto == 6 ? Drop::not_syn : Drop::unsolicited_reply)];
    return false;
  }
  const int proto = static_cast<int>(flow_proto(p.proto));
  int evicted = -1;
  Flow* f = w.flows->insert(key, &evicted);
  if (evicted >= 0) ++c.flows_evicted[static_cast<int>(flow_proto(static_cast<uint8_t>(evicted)))];
  if (f == nullptr) {
    ++c.flows_refused[proto];
    ++c.drops[static_cast<int>(Drop::table_full)];
    return false;
  }
  f->track = t;
  f->last_seen = now;
  ++c.flows_created[proto];
  ++opened;
  return true;
}

// One burst from a port, in stages so that memory latency overlaps: parse every packet (its
// data prefetched a few packets ahead) and make its flow key; look all keys up in one bulk
// rte_hash call (which prefetches the buckets); prefetch the flows found; then decide each
// packet. Forwarded packets are compacted into `out`; returns how many.
uint16_t process_burst(Worker& w, rte_mbuf** in, uint16_t n, rte_mbuf** out, int pair, Direction dir, uint32_t now) {
  constexpr int kAhead = 4;
  Scratch& s = w.scratch;
  uint32_t n4 = 0, n6 = 0;
  for (uint16_t i = 0; i < n && i < kAhead; ++i) rte_prefetch0(rte_pktmbuf_mtod(in[i], void*));
  for (uint16_t i = 0; i < n; ++i) {
    if (i + kAhead < n) rte_prefetch0(rte_pktmbuf_mtod(in[i + kAhead], void*));
    Packet& p = s.pkt[i];
    const uint8_t* data = rte_pktmbuf_mtod(in[i], const uint8_t*);
    if (!parse_ipv4_fast(data, rte_pktmbuf_data_len(in[i]), p)) parse_packet(data, rte_pktmbuf_data_len(in[i]), p);
    if (!trackable(p)) {
      s.key_of[i] = kNoKey;
    } else if (p.l3 == L3::ipv4) {
      flow_key4(p, pair, s.keys4[n4], &s.from_lo[i]);
      s.key_of[i] = static_cast<uint8_t>(n4++);
    } else {
      flow_key(p, pair, s.keys6[n6], &s.from_lo[i]);
      s.key_of[i] = static_cast<uint8_t>(kV6 + n6++);
    }
  }
  if (n4 > 0) w.flows->find_bulk(s.keys4, s.found, n4);
  if (n6 > 0) w.flows->find_bulk(s.keys6, s.found + kV6, n6);
  for (uint32_t k = 0; k < n4; ++k) {
    if (s.found[k] != nullptr) rte_prefetch0(s.found[k]);
  }
  for (uint32_t k = 0; k < n6; ++k) {
    if (s.found[kV6 + k] != nullptr) rte_prefetch0(s.found[kV6 + k]);
  }
  uint16_t keep = 0;
  uint64_t by_state = 0;
  uint32_t opened = 0;  // flows this burst opened
  for (uint16_t i = 0; i < n; ++i) {
    const uint8_t k = s.key_of[i];
    const Packet& p = s.pkt[i];
    bool pass;
    if (k == kNoKey) {
      pass = decide_untracked(w, rte_pktmbuf_mtod(in[i], const uint8_t*), rte_pktmbuf_data_len(in[i]), p, pair, dir);
    } else if (s.found[k] != nullptr) {
      pass = decide_tracked(w, *s.found[k], p, s.from_lo[i], now);
      by_state += pass;
    } else {
      bool lo = false;
      const FlowKey key = flow_key(p, pair, &lo);  // the slow path: the generic key
      pass = decide_new(w, p, key, lo, pair, dir, now, opened);
    }
    if (pass) out[keep++] = in[i];
    else rte_pktmbuf_free(in[i]);
  }
  w.counters->passed_state += by_state;
  return keep;
}

int worker_main(void* arg) {
  Worker& w = *static_cast<Worker*>(arg);
  const auto& ports = *w.ports;
  rte_mbuf* in[kBurst];
  rte_mbuf* out[kBurst];
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t start = rte_get_tsc_cycles();
  uint64_t last_sweep = start;
  const uint32_t sweep_budget = std::max<uint32_t>(1024, w.flows->slots() / 50);  // a full pass in 5 s
  rte_rcu_qsbr_thread_register(w.rcu, w.queue);
  rte_rcu_qsbr_thread_online(w.rcu, w.queue);
  while (!w.stop->load(std::memory_order_relaxed)) {
    // A quiescent state: nothing of the previous loop's rules is held past this point.
    rte_rcu_qsbr_quiescent(w.rcu, w.queue);
    w.rules = w.in_force->load(std::memory_order_acquire);
    const uint64_t tsc = rte_get_tsc_cycles();
    const auto now = static_cast<uint32_t>((tsc - start) / hz);
    bool busy = false;
    for (size_t port_index = 0; port_index < ports.size(); ++port_index) {
      const uint16_t rx = ports[port_index];
      const uint16_t tx = ports[port_index ^ 1];
      const int pair = static_cast<int>(port_index / 2);
      const Direction dir = port_index % 2 == 0 ? Direction::a_to_b : Direction::b_to_a;
      const uint16_t n = rte_eth_rx_burst(rx, w.queue, in, kBurst);
      if (n == 0) continue;
      busy = true;
      w.counters->rx += n;
      const uint16_t keep = process_burst(w, in, n, out, pair, dir, now);
      const uint16_t sent = keep == 0 ? 0 : rte_eth_tx_burst(tx, w.queue, out, keep);
      w.counters->tx += sent;
      if (sent < keep) {
        w.counters->drops[static_cast<int>(Drop::tx_full)] += keep - sent;
        rte_pktmbuf_free_bulk(out + sent, keep - sent);
      }
    }
    if (busy) ++w.counters->busy_polls;
    else ++w.counters->idle_polls;
    if (tsc - last_sweep > hz / 10) {  // expiry: a 1/50 slice of the table ten times a second
      uint32_t expired[kFlowProtos] = {};
      if (w.flows->expire(now, w.config->timeouts, sweep_budget, expired) > 0) {
        for (int p = 0; p < kFlowProtos; ++p) w.counters->flows_expired[p] += expired[p];
      }
      last_sweep = tsc;
    }
  }
  rte_rcu_qsbr_thread_offline(w.rcu, w.queue);
  rte_rcu_qsbr_thread_unregister(w.rcu, w.queue);
  return 0;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Compiles a rule set into the state workers read; `generation` alternates the rte_acl context
// names (a live context's name returns that context).
Result<std::unique_ptr<RuleState>> compile(RuleSet rules, unsigned generation, size_t workers, int socket) {
  auto classifier = KK_TRY(Classifier::build(rules, "fw_rules" + std::to_string(generation % 2) + "_", socket));
  auto state = std::make_unique<RuleState>(RuleState{std::move(rules), std::move(classifier), {}, {}});
  state->hits.resize(workers);
  for (auto& h : state->hits) h = std::vector<Count>(state->rules.rules.size());
  state->carried.assign(state->rules.rules.size(), 0);
  return state;
}

// Stops and closes the ports a run configured however it leaves: at its end, on an error part
// way through start-up, or on a stop request before forwarding.
struct OpenPorts {
  std::vector<uint16_t> ports;
  OpenPorts() = default;
  OpenPorts(const OpenPorts&) = delete;
  OpenPorts& operator=(const OpenPorts&) = delete;
  ~OpenPorts() {
    for (uint16_t p : ports) {
      rte_eth_dev_stop(p);
      rte_eth_dev_close(p);
    }
  }
};

}  // namespace

// What a run has built so far, in the order it is built: members go in reverse order, so the
// flow tables go before the ports are stopped and closed, and those before the RCU state and
// the rules. The packet buffer pool stays with EAL, which frees its memory at cleanup.
struct Dataplane::State {
  State(const DataplaneConfig& c, Signals& s) : cfg(c), signals(s) {}

  // What asked for a reload: SIGHUP always reloads, a change the watch saw only when the text
  // differs from the last one read.
  enum class Trigger { signal, file_changed };
  // Reads, compiles and puts in force the rules file (see forward_until_stopped); false when
  // the file had not changed. Counts the reload in `reloads`.
  Result<bool> reload(Trigger trigger);
  void reload_and_count(Trigger trigger);
  // The deadline, printing and reloads, until a stop request.
  void control(const std::chrono::steady_clock::time_point& deadline);
  void print_counters() const;
  // What the counters are read from (the control thread only: it owns the rules in force).
  CounterView view() const {
    return {current->rules, current->hits, current->carried, counters, named, workers,
            tables.empty() ? 0 : tables.front().capacity(), reloads, pool == nullptr ? 0 : pool->size,
            pool == nullptr ? 0 : rte_mempool_in_use_count(pool)};
  }

  const DataplaneConfig& cfg;
  Signals& signals;
  std::shared_ptr<spdlog::logger> logger = log::get("firewall");
  std::vector<uint16_t> ports;
  std::vector<std::pair<uint16_t, std::string>> named;
  std::vector<unsigned> workers;
  bool main_works = false;  // one lcore: the main lcore polls itself
  uint16_t queues = 0;
  int socket = 0;
  rte_mempool* pool = nullptr;  // EAL's: freed at its cleanup
  unsigned generation = 0;
  std::unique_ptr<RuleState> current;
  std::atomic<RuleState*> in_force{nullptr};
  std::unique_ptr<rte_rcu_qsbr, void (*)(void*)> rcu{nullptr, rte_free};
  OpenPorts open;
  std::vector<FlowTable> tables;
  std::vector<Counters> counters;
  std::vector<Worker> state;
  // /metrics: a scrape asks (metrics_wanted) and waits; the control loop, the one thread that
  // reads the rules in force, answers with a fresh text and a new metrics_generation.
  std::mutex metrics_mutex;
  std::condition_variable metrics_ready;
  bool metrics_wanted = false;
  uint64_t metrics_generation = 0;
  MetricsSnapshot metrics_snapshot;
  void answer_metrics();
  // Health, judged by the control loop each tick (judge_health) and read by any thread.
  std::vector<uint64_t> polls_seen;
  std::vector<std::chrono::steady_clock::time_point> polled_at;
  std::string reload_error;  // the last reload's error; "" once a reload succeeds
  ReloadStats reloads;
  std::optional<FileWatch> watch;  // the rules file's directory, when followed
  std::string rules_text;          // the rules file's text as last read
  mutable std::mutex health_mutex;
  std::string unhealthy = "not forwarding yet", unready = "not forwarding yet";
  std::chrono::steady_clock::time_point judged_at;
  void judge_health();
};

Dataplane::Dataplane(const DataplaneConfig& config, Signals& signals) : s_(std::make_unique<State>(config, signals)) {}

Dataplane::~Dataplane() = default;

Result<void> Dataplane::find_ports_and_lcores() {
  uint16_t pid;
  RTE_ETH_FOREACH_DEV(pid) {
    s_->ports.push_back(pid);
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(pid, name);
    s_->named.emplace_back(pid, name);
  }
  if (s_->ports.size() < 2 || s_->ports.size() % 2 != 0) {
    return fail(ExitCode::config, "the firewall needs ports in pairs (A and B of each pair); EAL found " +
                                      std::to_string(s_->ports.size()));
  }
  unsigned lcore;
  RTE_LCORE_FOREACH_WORKER(lcore) { s_->workers.push_back(lcore); }
  s_->main_works = s_->workers.empty();
  if (s_->main_works) s_->workers.push_back(rte_get_main_lcore());
  s_->queues = static_cast<uint16_t>(s_->workers.size());
  s_->socket = static_cast<int>(rte_socket_id());
  return {};
}

Result<void> Dataplane::load_rules(RuleSet rules) {
  auto& s = *s_;
  s.current = KK_TRY(compile(std::move(rules), s.generation, s.workers.size(), s.socket));
  s.in_force.store(s.current.get());
  s.reloads.last_success_unix = unix_now();
  const size_t rcu_size = rte_rcu_qsbr_get_memsize(static_cast<uint32_t>(s.workers.size()));
  s.rcu.reset(static_cast<rte_rcu_qsbr*>(rte_zmalloc_socket("fw_rcu", rcu_size, RTE_CACHE_LINE_SIZE, s.socket)));
  if (!s.rcu || rte_rcu_qsbr_init(s.rcu.get(), static_cast<uint32_t>(s.workers.size())) != 0) {
    return fail(ExitCode::config, "cannot set up RCU for " + std::to_string(s.workers.size()) + " workers (memory)");
  }
  return {};
}

Result<void> Dataplane::open_ports() {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  const uint16_t queues = s.queues;
  const int socket = s.socket;
  const uint32_t mbufs = std::max(mbufs_needed(s.ports.size(), queues, cfg.ring_size), cfg.mbufs);
  rte_mempool* pool = rte_pktmbuf_pool_create("fw_mbufs", mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (pool == nullptr) {
    return fail(ExitCode::config, "cannot allocate " + std::to_string(mbufs) + " packet buffers: " + rte_strerror(rte_errno) +
                                      " (not enough hugepages?)");
  }
  s.pool = pool;
  for (uint16_t p : s.ports) {
    // Ports take a while each (a PCI device's link): the caller looks at a stop request again.
    if (s.signals.stop.load()) return {};
    rte_eth_dev_info info{};
    if (int err = rte_eth_dev_info_get(p, &info); err != 0) return fail(ExitCode::config, "port " + std::to_string(p) + ": no device info");
    if (info.max_rx_queues < queues || info.max_tx_queues < queues) {
      return fail(ExitCode::config, "port " + std::to_string(p) + " has " + std::to_string(info.max_rx_queues) +
                                        " RX queues, the " + std::to_string(queues) + " workers need one each");
    }
    rte_eth_conf conf{};
    if (queues > 1 && (info.flow_type_rss_offloads & RTE_ETH_RSS_IP) != 0) {
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
      conf.rx_adv_conf.rss_conf.rss_key = kSymmetricKey;
      conf.rx_adv_conf.rss_conf.rss_key_len = sizeof kSymmetricKey;
      conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
    }
    if (int err = rte_eth_dev_configure(p, queues, queues, &conf); err != 0) {
      return fail(ExitCode::config, "port " + std::to_string(p) + ": configure: " + rte_strerror(-err));
    }
    s.open.ports.push_back(p);
    for (uint16_t q = 0; q < queues; ++q) {
      if (rte_eth_rx_queue_setup(p, q, cfg.ring_size, static_cast<unsigned>(socket), nullptr, pool) != 0 ||
          rte_eth_tx_queue_setup(p, q, cfg.ring_size, static_cast<unsigned>(socket), nullptr) != 0) {
        return fail(ExitCode::config, "port " + std::to_string(p) + ": queue " + std::to_string(q) + " setup failed");
      }
    }
    rte_eth_promiscuous_enable(p);  // transparent at L2; vdevs may not support it
    if (int err = rte_eth_dev_start(p); err != 0) {
      return fail(ExitCode::unavailable, "port " + std::to_string(p) + " does not start: " + rte_strerror(-err));
    }
  }
  return {};
}

Result<void> Dataplane::make_flow_tables() {
  auto& s = *s_;
  for (size_t i = 0; i < s.workers.size(); ++i) {
    s.tables.push_back(
        KK_TRY(FlowTable::create("fw_flows" + std::to_string(i), std::max<uint32_t>(64, s.cfg.flows / s.queues), s.socket)));
  }
  return {};
}

void Dataplane::print_counters() const { s_->print_counters(); }

void Dataplane::State::print_counters() const {
  std::fputs(format_counters(view()).c_str(), stdout);
  std::fflush(stdout);
}

void Dataplane::follow_rules_file(FileWatch watch, std::string text) {
  s_->watch.emplace(std::move(watch));
  s_->rules_text = std::move(text);
}

Result<bool> Dataplane::State::reload(Trigger trigger) {
  auto text = KK_TRY_CTX(files::read_file(cfg.rules_file, 64 << 20), "rules file");
  if (trigger == Trigger::file_changed && text == rules_text) {
    logger->debug("{}: touched, its text unchanged: nothing to reload", cfg.rules_file);
    return false;
  }
  rules_text = text;
  if (trigger == Trigger::file_changed) logger->info("{}: changed, reloading", cfg.rules_file);
  auto parsed = KK_TRY(parse_rules(text, cfg.rules_file));
  auto next = KK_TRY(compile(std::move(parsed), generation + 1, workers.size(), socket));
  ++generation;
  const size_t before = current->rules.rules.size();
  const RuleDiff diff = diff_rules(current->rules, next->rules);
  in_force.store(next.get(), std::memory_order_release);
  // Wait until every worker has been through a quiescent state since the store: then none
  // holds the old rules, and they can go (their rte_acl contexts with them). Their counts are
  // final from then on, and go on in the rules kept.
  rte_rcu_qsbr_check(rcu.get(), rte_rcu_qsbr_start(rcu.get()), true);
  for (size_t r = 0; r < diff.kept_from.size(); ++r) {
    const int from = diff.kept_from[r];
    if (from < 0) continue;
    uint64_t total = current->carried[static_cast<size_t>(from)];
    for (const auto& worker_hits : current->hits) total += worker_hits[static_cast<size_t>(from)];
    next->carried[r] = total;
  }
  current = std::move(next);
  logger->info("{}: reloaded, {} rules in force (were {}): {} added, {} removed, {} kept with their counters; "
               "open flows stay open", cfg.rules_file, current->rules.rules.size(), before, diff.added, diff.removed, diff.kept);
  if (const auto warning = no_rules_warning(current->rules, cfg.rules_file); !warning.empty()) logger->warn("{}", warning);
  return true;
}

void Dataplane::State::reload_and_count(Trigger trigger) {
  auto r = reload(trigger);
  if (!r) {
    logger->error("reload refused, the rules in force stay: {}", r.error().message);
    reload_error = r.error().message;
    ++reloads.failed;
    reloads.last_ok = false;
  } else if (*r) {
    reload_error.clear();
    ++reloads.ok;
    reloads.last_ok = true;
    reloads.last_success_unix = unix_now();
  }
}

void Dataplane::State::judge_health() {
  const auto now = std::chrono::steady_clock::now();
  if (polls_seen.size() != counters.size()) {
    polls_seen.assign(counters.size(), 0);
    polled_at.assign(counters.size(), now);
  }
  std::string sick, unready_now;
  for (size_t i = 0; i < counters.size(); ++i) {
    const uint64_t polls = counters[i].busy_polls + counters[i].idle_polls;
    if (polls != polls_seen[i]) {
      polls_seen[i] = polls;
      polled_at[i] = now;
    } else if (now - polled_at[i] > std::chrono::seconds(1) && sick.empty()) {
      sick = "worker lcore " + std::to_string(workers[i]) + " has not polled for " +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - polled_at[i]).count()) + " ms";
    }
  }
  for (const auto& [id, name] : named) {
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(id, &link) == 0 && link.link_status == RTE_ETH_LINK_DOWN && unready_now.empty()) {
      unready_now = "port " + std::to_string(id) + " (" + name + ") has no link";
    }
  }
  if (!reload_error.empty() && unready_now.empty()) unready_now = "the rules file has an error, the previous rules stay in force: " + reload_error;
  std::lock_guard lock(health_mutex);
  unhealthy = sick;
  unready = sick.empty() ? unready_now : sick;
  judged_at = now;
}

std::string Dataplane::unhealthy_because() const {
  std::lock_guard lock(s_->health_mutex);
  if (!s_->unhealthy.empty()) return s_->unhealthy;
  if (std::chrono::steady_clock::now() - s_->judged_at > std::chrono::seconds(1)) return "the control loop has not looked for over 1 s";
  return "";
}

std::string Dataplane::unready_because() const {
  const std::string sick = unhealthy_because();
  if (!sick.empty()) return sick;
  std::lock_guard lock(s_->health_mutex);
  return s_->unready;
}

void Dataplane::State::answer_metrics() {
  {
    std::lock_guard lock(metrics_mutex);
    if (!metrics_wanted) return;
  }
  MetricsSnapshot snap = snapshot_metrics(view());
  {
    std::lock_guard lock(metrics_mutex);
    metrics_snapshot = std::move(snap);
    metrics_wanted = false;
    ++metrics_generation;
  }
  metrics_ready.notify_all();
}

std::optional<MetricsSnapshot> Dataplane::snapshot(std::chrono::milliseconds timeout) {
  auto& s = *s_;
  std::unique_lock lock(s.metrics_mutex);
  const uint64_t asked_at = s.metrics_generation;
  s.metrics_wanted = true;
  if (!s.metrics_ready.wait_for(lock, timeout, [&] { return s.metrics_generation != asked_at; })) return std::nullopt;
  return s.metrics_snapshot;
}

void Dataplane::State::control(const std::chrono::steady_clock::time_point& deadline) {
  while (!signals.stop.load()) {
    if (cfg.duration_s > 0 && std::chrono::steady_clock::now() >= deadline) signals.stop.store(true);
    if (signals.print.exchange(false)) print_counters();
    judge_health();
    answer_metrics();
    if (signals.reload.exchange(false)) {
      if (watch) watch->changed();  // what it saw is read now
      reload_and_count(Trigger::signal);
    } else if (watch && watch->changed()) {
      reload_and_count(Trigger::file_changed);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::lock_guard lock(health_mutex);
  unhealthy = unready = "stopping";
}

void Dataplane::forward_until_stopped() {
  auto& s = *s_;
  s.counters = std::vector<Counters>(s.workers.size());
  s.state = std::vector<Worker>(s.workers.size());
  for (size_t i = 0; i < s.workers.size(); ++i) {
    s.state[i] = Worker{{},           s.workers[i], static_cast<uint16_t>(i), &s.in_force, s.current.get(), s.rcu.get(),
                        &s.tables[i], &s.counters[i], &s.ports,                 &s.cfg,      &s.signals.stop};
  }
  s.logger->info("forwarding: {} port(s) in {} pair(s), {} worker(s), {} rules ({} IPv4 and {} IPv6 ACL rules), {} flows per worker",
                 s.ports.size(), s.ports.size() / 2, s.workers.size(), s.current->rules.rules.size(),
                 s.current->classifier.acl_rules4(), s.current->classifier.acl_rules6(), s.tables.front().capacity());

  // The control loop runs on the main lcore, or on a thread beside it when the main lcore polls.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long long>(s.cfg.duration_s * 1000));
  if (s.main_works) {
    std::thread timer([&] { s.control(deadline); });
    worker_main(&s.state[0]);
    timer.join();
  } else {
    for (auto& w : s.state) rte_eal_remote_launch(worker_main, &w, w.lcore);
    s.control(deadline);
    rte_eal_mp_wait_lcore();
  }
}

}  // namespace kmodkit::firewall
