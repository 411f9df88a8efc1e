#include "metrics.hpp"

#include <cmath>
#include <cstdio>

namespace kmodkit::firewall {
namespace {

constexpr const char* kPrefix = "kmodkit_firewall_";

// A sample value: integers without an exponent (counters reach 2^53 only after years), others
// with enough digits to read back the same double.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

// HELP text: backslash and newline escaped.
std::string escape_help(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void write_family(std::string& out, const MetricFamily& f) {
  const std::string name = kPrefix + f.name + (f.counter ? "_total" : "");
  out += "# HELP " + name + " " + escape_help(f.help) + "\n";
  out += "# TYPE " + name + (f.counter ? " counter\n" : " gauge\n");
  for (const auto& s : f.samples) {
    out += name;
    if (!s.labels.empty()) {
      out += "{";
      for (size_t i = 0; i < s.labels.size(); ++i) {
        out += (i ? "," : "") + s.labels[i].first + "=\"" + escape_label_value(s.labels[i].second) + "\"";
      }
      out += "}";
    }
    out += " " + number(s.value) + "\n";
  }
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_metrics(const MetricsSnapshot& snap) {
  using Field = uint64_t PortSnapshot::*;
  const struct {
    const char* name;
    const char* help;
    Field field;
  } port_fields[] = {
      {"port_received_packets", "Packets the port received (ethdev ipackets).", &PortSnapshot::rx_packets},
      {"port_sent_packets", "Packets the port sent (ethdev opackets).", &PortSnapshot::tx_packets},
      {"port_received_bytes", "Bytes the port received (ethdev ibytes).", &PortSnapshot::rx_bytes},
      {"port_sent_bytes", "Bytes the port sent (ethdev obytes).", &PortSnapshot::tx_bytes},
      {"port_missed_packets", "Packets the port dropped because no receive descriptor was free (ethdev imissed).",
       &PortSnapshot::rx_missed},
      {"port_receive_errors", "Erroneous packets the port received (ethdev ierrors).", &PortSnapshot::rx_errors},
      {"port_send_errors", "Packets the port failed to send (ethdev oerrors).", &PortSnapshot::tx_errors},
      {"port_receive_no_buffer", "Receive failures for want of a packet buffer (ethdev rx_nombuf).",
       &PortSnapshot::rx_no_mbuf},
  };
  std::string out;
  for (const auto& pf : port_fields) {
    MetricFamily f{pf.name, pf.help, true, {}};
    for (const auto& p : snap.ports) {
      f.samples.push_back({{{"port", std::to_string(p.port)}, {"device", p.device}}, static_cast<double>(p.*pf.field)});
    }
    write_family(out, f);
  }
  MetricFamily x{"port_extended_statistic", "The port driver's extended statistics (ethdev xstats), by name.", true, {}};
  for (const auto& p : snap.ports) {
    for (const auto& [n, v] : p.xstats) {
      x.samples.push_back({{{"port", std::to_string(p.port)}, {"device", p.device}, {"name", n}}, static_cast<double>(v)});
    }
  }
  write_family(out, x);
  for (const auto& f : snap.families) write_family(out, f);
  return out;
}

}  // namespace kmodkit::firewall
