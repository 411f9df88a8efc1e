// The firewall's /metrics body: the Prometheus text format, checked by hand and by promtool.
#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "kmodkit/subprocess.hpp"
#include "metrics.hpp"

using namespace kmodkit;
using namespace kmodkit::firewall;

namespace {

MetricsSnapshot sample() {
  MetricsSnapshot s;
  PortSnapshot p0;
  p0.port = 0;
  p0.device = "0000:00:04.0";
  p0.rx_packets = 19;
  p0.tx_packets = 10;
  p0.rx_bytes = 1514;
  p0.xstats = {{"rx_good_packets", 19}, {"rx_q0_errors", 0}};
  PortSnapshot p1 = p0;
  p1.port = 1;
  p1.device = "net_pcap1";
  s.ports = {p0, p1};
  s.families.push_back({"rule_hits", "Flows each rule allowed or denied, by its line.", true,
                        {{{{"line", "3"}, {"rule", "allow tcp from any to any port 8080 # \"web\" \\ in"}}, 7}}});
  s.families.push_back({"flows", "Flows in the tables now.", false, {{{{"protocol", "tcp"}}, 3}, {{{"protocol", "udp"}}, 0}}});
  s.families.push_back({"rule_reload_last_timestamp_seconds", "When the rules were last put in force.", false,
                        {{{}, 1764910000.25}}});
  return s;
}

}  // namespace

TEST_CASE("metrics are in the Prometheus text format", "[unit][metrics]") {
  const std::string text = format_metrics(sample());
  CHECK_THAT(text, Catch::Contains("# TYPE kmodkit_firewall_port_received_packets_total counter\n"));
  CHECK_THAT(text, Catch::Contains("kmodkit_firewall_port_received_packets_total{port=\"0\",device=\"0000:00:04.0\"} 19\n"));
  CHECK_THAT(text, Catch::Contains("kmodkit_firewall_port_received_packets_total{port=\"1\",device=\"net_pcap1\"} 19\n"));
  CHECK_THAT(text, Catch::Contains(
                       "kmodkit_firewall_port_extended_statistic_total{port=\"0\",device=\"0000:00:04.0\",name=\"rx_good_packets\"} 19\n"));
  // A label value's quote and backslash are escaped.
  CHECK_THAT(text, Catch::Contains("rule=\"allow tcp from any to any port 8080 # \\\"web\\\" \\\\ in\"} 7\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE kmodkit_firewall_flows gauge\nkmodkit_firewall_flows{protocol=\"tcp\"} 3\n"));
  CHECK_THAT(text, Catch::Contains("kmodkit_firewall_rule_reload_last_timestamp_seconds 1764910000.25\n"));
  CHECK(escape_label_value("a\nb") == "a\\nb");
}

TEST_CASE("promtool accepts the metrics", "[unit][metrics]") {
  test::TempDir dir;
  test::write_file(dir / "metrics.txt", format_metrics(sample()));
  // promtool reads the exposition on stdin and lints it (names, units, _total, help).
  auto out = subprocess::run({"sh", "-c", "promtool check metrics < " + (dir / "metrics.txt").string()});
  REQUIRE(out);
  INFO(out->output);
  REQUIRE(out->exit_code != 127);  // promtool missing: ci/install-deps.sh installs prometheus
  CHECK(out->ok());
  CHECK(out->output.empty());
}
