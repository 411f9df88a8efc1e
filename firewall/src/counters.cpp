#include "counters.hpp"

#include <rte_ethdev.h>

#include <cstdio>

namespace kmodkit::firewall {

uint64_t total(const Count (&by_proto)[kFlowProtos]) {
  uint64_t n = 0;
  for (const auto& c : by_proto) n += c;
  return n;
}

const char* drop_name(Drop d) {
  static constexpr const char* names[] = {"rule",     "policy", "invalid_state", "tcp_not_syn", "icmp_unsolicited_reply",
                                          "table_full", "fragment", "non_ip",      "tx_full"};
  return names[static_cast<int>(d)];
}

std::string format_counters(const CounterView& view) {
  const auto& [rules, rule_hits, carried, per_lcore, ports, lcores, capacity, reloads, mbufs, mbufs_in_use] = view;
  std::string out;
  char line[256];
  for (const auto& [id, name] : ports) {
    rte_eth_stats s{};
    rte_eth_stats_get(id, &s);
    std::snprintf(line, sizeof line, "port %u %s: rx %lu tx %lu missed %lu rx_errors %lu tx_errors %lu\n", id, name.c_str(),
                  static_cast<unsigned long>(s.ipackets), static_cast<unsigned long>(s.opackets),
                  static_cast<unsigned long>(s.imissed), static_cast<unsigned long>(s.ierrors), static_cast<unsigned long>(s.oerrors));
    out += line;
  }
  std::snprintf(line, sizeof line, "packet buffers: %u in use of %u\n", mbufs_in_use, mbufs);
  out += line;
  uint64_t rx = 0, tx = 0, by_state = 0, related = 0, untracked = 0, new_flows = 0, expired = 0, arp_nd = 0;
  uint64_t drops[static_cast<int>(Drop::count_)] = {};
  uint64_t malformed[static_cast<int>(Malformed::count_)] = {};
  std::vector<uint64_t> hits(rules.rules.size(), 0);
  for (size_t r = 0; r < hits.size() && r < carried.size(); ++r) hits[r] = carried[r];
  for (size_t l = 0; l < per_lcore.size(); ++l) {
    const auto& c = per_lcore[l];
    std::snprintf(line, sizeof line, "worker %zu: rx %lu tx %lu by state %lu new flows %lu\n", l,
                  static_cast<unsigned long>(c.rx), static_cast<unsigned long>(c.tx),
                  static_cast<unsigned long>(c.passed_state), static_cast<unsigned long>(total(c.flows_created)));
    out += line;
    rx += c.rx;
    tx += c.tx;
    by_state += c.passed_state;
    related += c.passed_related;
    untracked += c.passed_untracked;
    new_flows += total(c.flows_created);
    expired += total(c.flows_expired);
    arp_nd += c.arp_nd;
    for (int d = 0; d < static_cast<int>(Drop::count_); ++d) drops[d] += c.drops[d];
    for (int m = 0; m < static_cast<int>(Malformed::count_); ++m) malformed[m] += c.malformed[m];
    if (l < rule_hits.size()) {
      for (size_t r = 0; r < hits.size() && r < rule_hits[l].size(); ++r) hits[r] += rule_hits[l][r];
    }
  }
  std::snprintf(line, sizeof line,
                "total: rx %lu tx %lu by state %lu related %lu new flows %lu expired %lu arp/nd %lu untracked %lu\n",
                static_cast<unsigned long>(rx), static_cast<unsigned long>(tx), static_cast<unsigned long>(by_state),
                static_cast<unsigned long>(related), static_cast<unsigned long>(new_flows),
                static_cast<unsigned long>(expired), static_cast<unsigned long>(arp_nd), static_cast<unsigned long>(untracked));
  out += line;
  for (int d = 0; d < static_cast<int>(Drop::count_); ++d) {
    std::snprintf(line, sizeof line, "drop %s: %lu\n", drop_name(static_cast<Drop>(d)), static_cast<unsigned long>(drops[d]));
    out += line;
  }
  for (int m = 1; m < static_cast<int>(Malformed::count_); ++m) {
    std::snprintf(line, sizeof line, "drop malformed %s: %lu\n", malformed_name(static_cast<Malformed>(m)),
                  static_cast<unsigned long>(malformed[m]));
    out += line;
  }
  for (size_t r = 0; r < rules.rules.size(); ++r) {
    std::snprintf(line, sizeof line, "rule line %d: %lu  # %s\n", rules.rules[r].line, static_cast<unsigned long>(hits[r]),
                  rules.rules[r].text.c_str());
    out += line;
  }
  return out;
}


MetricsSnapshot snapshot_metrics(const CounterView& view) {
  const auto& [rules, rule_hits, carried, per_lcore, ports, lcores, capacity, reloads, mbufs, mbufs_in_use] = view;
  MetricsSnapshot snap;
  for (const auto& [id, name] : ports) {
    rte_eth_stats st{};
    rte_eth_stats_get(id, &st);
    PortSnapshot p{id, name, st.ipackets, st.opackets, st.ibytes, st.obytes, st.imissed, st.ierrors, st.oerrors, st.rx_nombuf, {}};
    const int n = rte_eth_xstats_get(id, nullptr, 0);
    if (n > 0) {
      std::vector<rte_eth_xstat> values(static_cast<size_t>(n));
      std::vector<rte_eth_xstat_name> names(static_cast<size_t>(n));
      if (rte_eth_xstats_get(id, values.data(), static_cast<unsigned>(n)) == n &&
          rte_eth_xstats_get_names(id, names.data(), static_cast<unsigned>(n)) == n) {
        for (const auto& v : values) {
          if (v.id < names.size()) p.xstats.emplace_back(names[v.id].name, v.value);
        }
      }
    }
    snap.ports.push_back(std::move(p));
  }
  using Field = Count Counters::*;
  const struct {
    const char* name;
    const char* help;
    const char* label;
    std::vector<std::pair<const char*, Field>> values;
  } per_worker[] = {
      {"worker_packets", "Packets each worker lcore received and sent.", "direction",
       {{"received", &Counters::rx}, {"sent", &Counters::tx}}},
      {"passed_packets", "Packets passed without a new decision of the rules, by why.", "by",
       {{"state", &Counters::passed_state}, {"related", &Counters::passed_related},
        {"untracked", &Counters::passed_untracked}, {"arp_nd", &Counters::arp_nd}}},
      {"worker_polls", "Loops of each worker lcore over its ports: busy when a port gave packets, idle when none did.",
       "result", {{"busy", &Counters::busy_polls}, {"idle", &Counters::idle_polls}}},
  };
  for (const auto& w : per_worker) {
    MetricFamily f{w.name, w.help, true, {}};
    for (size_t l = 0; l < per_lcore.size(); ++l) {
      for (const auto& [value, field] : w.values) {
        MetricSample sm{{{"lcore", std::to_string(lcores[l])}}, static_cast<double>(per_lcore[l].*field)};
        if (*w.label != '\0') sm.labels.emplace_back(w.label, value);
        f.samples.push_back(std::move(sm));
      }
    }
    snap.families.push_back(std::move(f));
  }
  // The flow tables', by protocol. Entries are what came in less what went (removals read
  // first: a flow created meanwhile can only make the figure larger, never negative).
  using ByProto = Count (Counters::*)[kFlowProtos];
  const struct {
    const char* name;
    const char* help;
    ByProto field;
  } per_proto[] = {
      {"flows_created", "Flows each worker's table took in, by protocol.", &Counters::flows_created},
      {"flows_expired", "Flows each worker's table let go after their state's idle timeout, by protocol.", &Counters::flows_expired},
      {"flows_evicted", "Unanswered flows a full table evicted to make room for a new one, by protocol.", &Counters::flows_evicted},
      {"flow_insert_failures", "New flows a full table refused (nothing it could evict), by protocol; their packets are dropped as table_full.",
       &Counters::flows_refused},
  };
  MetricFamily entries{"flow_table_entries", "Flows in each worker's table, by protocol.", false, {}};
  for (const auto& pp : per_proto) {
    MetricFamily f{pp.name, pp.help, true, {}};
    for (size_t l = 0; l < per_lcore.size(); ++l) {
      for (int p = 0; p < kFlowProtos; ++p) {
        f.samples.push_back({{{"lcore", std::to_string(lcores[l])}, {"proto", flow_proto_name(static_cast<FlowProto>(p))}},
                             static_cast<double>((per_lcore[l].*pp.field)[p])});
      }
    }
    snap.families.push_back(std::move(f));
  }
  for (size_t l = 0; l < per_lcore.size(); ++l) {
    const auto& c = per_lcore[l];
    for (int p = 0; p < kFlowProtos; ++p) {
      const uint64_t gone = c.flows_expired[p] + c.flows_evicted[p];
      const uint64_t came = c.flows_created[p];
      entries.samples.push_back({{{"lcore", std::to_string(lcores[l])}, {"proto", flow_proto_name(static_cast<FlowProto>(p))}},
                                 static_cast<double>(came > gone ? came - gone : 0)});
    }
  }
  snap.families.push_back(std::move(entries));
  MetricFamily cap{"flow_table_capacity", "Flows each worker's table holds at most (IPv4 and IPv6 together).", false, {}};
  for (unsigned lcore : lcores) cap.samples.push_back({{{"lcore", std::to_string(lcore)}}, static_cast<double>(capacity)});
  snap.families.push_back(std::move(cap));
  MetricFamily drops{"dropped_packets", "Packets dropped, by reason (malformed_* for the parser's).", true, {}};
  for (int d = 0; d < static_cast<int>(Drop::count_); ++d) {
    uint64_t n = 0;
    for (const auto& c : per_lcore) n += c.drops[d];
    drops.samples.push_back({{{"reason", drop_name(static_cast<Drop>(d))}}, static_cast<double>(n)});
  }
  for (int m = 1; m < static_cast<int>(Malformed::count_); ++m) {
    uint64_t n = 0;
    for (const auto& c : per_lcore) n += c.malformed[m];
    drops.samples.push_back({{{"reason", std::string("malformed_") + malformed_name(static_cast<Malformed>(m))}}, static_cast<double>(n)});
  }
  snap.families.push_back(std::move(drops));
  MetricFamily hits{"rule_hits", "New flows (or untracked packets) each rule decided, by its line in the rules file.", true, {}};
  for (size_t r = 0; r < rules.rules.size(); ++r) {
    uint64_t n = r < carried.size() ? carried[r] : 0;
    for (const auto& worker_hits : rule_hits) n += r < worker_hits.size() ? static_cast<uint64_t>(worker_hits[r]) : 0;
    hits.samples.push_back({{{"line", std::to_string(rules.rules[r].line)}, {"rule", rules.rules[r].text}}, static_cast<double>(n)});
  }
  snap.families.push_back(std::move(hits));
  snap.families.push_back({"rules", "Rules in force.", false, {{{}, static_cast<double>(rules.rules.size())}}});
  snap.families.push_back({"packet_buffers", "Packet buffers in the pool.", false, {{{}, static_cast<double>(mbufs)}}});
  snap.families.push_back({"packet_buffers_in_use",
                           "Packet buffers out of the pool: in rings, devices and workers (stable under a steady load; a "
                           "rise that never falls is a leak).",
                           false, {{{}, static_cast<double>(mbufs_in_use)}}});
  snap.families.push_back({"rule_reloads", "Reloads of the rules file (SIGHUP or the file changing), by result.", true,
                           {{{{"result", "ok"}}, static_cast<double>(reloads.ok)}, {{{"result", "failed"}}, static_cast<double>(reloads.failed)}}});
  snap.families.push_back({"rules_last_reload_successful", "1 when the last reload of the rules file succeeded (or none failed since start), else 0.",
                           false, {{{}, reloads.last_ok ? 1.0 : 0.0}}});
  snap.families.push_back({"rules_last_reload_success_timestamp_seconds",
                           "When the rules in force were loaded: at start, or by the last good reload (Unix time).", false,
                           {{{}, reloads.last_success_unix}}});
  return snap;
}


}  // namespace kmodkit::firewall
