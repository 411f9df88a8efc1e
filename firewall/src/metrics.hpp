#pragma once
// The firewall's counters in the Prometheus text exposition format (version 0.0.4), the body of
// its /metrics endpoint. Needs no DPDK: the data plane takes a snapshot of its counters into
// the plain structures below, and this file only writes them out, so the format is unit-tested
// (and checked by promtool) without ports.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kmodkit::firewall {

// A metric family: its samples share the name, help and type. Counters' names end in _total
// (metrics::counter adds it); units are in the name (_bytes, _seconds).
struct MetricSample {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};
struct MetricFamily {
  std::string name;  // without the kmodkit_firewall_ prefix, and without _total for a counter
  std::string help;
  bool counter = true;  // counter, else gauge
  std::vector<MetricSample> samples;
};

// One port's statistics, as rte_eth_stats_get and rte_eth_xstats_get give them.
struct PortSnapshot {
  uint16_t port = 0;
  std::string device;  // its PCI address or vdev name
  uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
  uint64_t rx_missed = 0, rx_errors = 0, tx_errors = 0, rx_no_mbuf = 0;
  std::vector<std::pair<std::string, uint64_t>> xstats;  // the driver's extended statistics
};

// The whole snapshot: what format_metrics writes.
struct MetricsSnapshot {
  std::vector<PortSnapshot> ports;
  std::vector<MetricFamily> families;  // the data plane's own (lcores, flows, rules, drops...)
};

// The exposition text: the ports' families first, then the snapshot's families, each with its
// # HELP and # TYPE lines; names prefixed kmodkit_firewall_, label values escaped (\\, \", \n).
std::string format_metrics(const MetricsSnapshot& snapshot);

// A label value as the text format needs it: backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& value);

}  // namespace kmodkit::firewall
