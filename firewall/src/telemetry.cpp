#include "telemetry.hpp"

#include <rte_telemetry.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <string>

namespace kmodkit::firewall {
namespace {

// The data plane the commands read; rte_telemetry's callbacks take no user pointer. The mutex
// keeps it alive while a callback reads it (the telemetry thread runs beside the destructor).
std::mutex g_mutex;
Dataplane* g_dataplane = nullptr;

constexpr std::chrono::milliseconds kWait{1000};
constexpr size_t kRulesPage = 100;

const MetricFamily* family(const MetricsSnapshot& snap, const std::string& name) {
  for (const auto& f : snap.families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string label(const MetricSample& s, const std::string& key) {
  for (const auto& [k, v] : s.labels) {
    if (k == key) return v;
  }
  return "";
}

// DPDK 22.11's telemetry writes strings into its JSON as they are: quotes, backslashes and
// control characters become '?' so that the answer stays JSON.
std::string json_safe(std::string text) {
  for (char& c : text) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  return text;
}

// A non-negative integer parameter, or -1 when there is none; -2 when it is not one.
long parameter(const char* params) {
  if (params == nullptr || *params == '\0') return -1;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(params, &end, 10);
  return (errno != 0 || *end != '\0' || v < 0) ? -2 : v;
}

// The snapshot, or nullopt when there is no data plane or it did not answer.
std::optional<MetricsSnapshot> take_snapshot() {
  std::lock_guard lock(g_mutex);
  if (g_dataplane == nullptr) return std::nullopt;
  return g_dataplane->snapshot(kWait);
}

int flows(const char*, const char* params, rte_tel_data* d) {
  const long lcore = parameter(params);
  if (lcore == -2) return -EINVAL;
  const auto snap = take_snapshot();
  if (!snap) return -EAGAIN;
  const struct {
    const char* key;
    const char* family;
  } fields[] = {{"entries", "flow_table_entries"}, {"created", "flows_created"}, {"expired", "flows_expired"},
                {"evicted", "flows_evicted"}, {"insert_failures", "flow_insert_failures"}};
  rte_tel_data_start_dict(d);
  bool any = false;
  for (int p = 0; p < kFlowProtos; ++p) {
    const std::string proto = flow_proto_name(static_cast<FlowProto>(p));
    rte_tel_data* per = rte_tel_data_alloc();
    if (per == nullptr) return -ENOMEM;
    rte_tel_data_start_dict(per);
    for (const auto& f : fields) {
      uint64_t n = 0;
      if (const MetricFamily* fam = family(*snap, f.family)) {
        for (const auto& s : fam->samples) {
          if (label(s, "proto") != proto || (lcore >= 0 && label(s, "lcore") != std::to_string(lcore))) continue;
          n += static_cast<uint64_t>(s.value);
          any = true;
        }
      }
      rte_tel_data_add_dict_u64(per, f.key, n);
    }
    if (rte_tel_data_add_dict_container(d, proto.c_str(), per, 0) != 0) rte_tel_data_free(per);
  }
  uint64_t capacity = 0;
  if (const MetricFamily* fam = family(*snap, "flow_table_capacity")) {
    for (const auto& s : fam->samples) {
      if (lcore < 0 || label(s, "lcore") == std::to_string(lcore)) capacity += static_cast<uint64_t>(s.value);
    }
  }
  rte_tel_data_add_dict_u64(d, "capacity", capacity);
  return lcore >= 0 && !any ? -EINVAL : 0;  // no worker on that lcore
}

int rules(const char*, const char* params, rte_tel_data* d) {
  const long first = parameter(params);
  if (first == -2) return -EINVAL;
  const auto snap = take_snapshot();
  if (!snap) return -EAGAIN;
  const auto gauge = [&](const char* name, const char* key = nullptr, const char* value = nullptr) -> uint64_t {
    const MetricFamily* fam = family(*snap, name);
    if (fam == nullptr) return 0;
    for (const auto& s : fam->samples) {
      if (key == nullptr || label(s, key) == value) return static_cast<uint64_t>(s.value);
    }
    return 0;
  };
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "in_force", gauge("rules"));
  rte_tel_data_add_dict_u64(d, "reloads_ok", gauge("rule_reloads", "result", "ok"));
  rte_tel_data_add_dict_u64(d, "reloads_failed", gauge("rule_reloads", "result", "failed"));
  rte_tel_data_add_dict_u64(d, "last_reload_successful", gauge("rules_last_reload_successful"));
  rte_tel_data_add_dict_u64(d, "last_reload_success_time", gauge("rules_last_reload_success_timestamp_seconds"));
  const MetricFamily* hits = family(*snap, "rule_hits");
  const size_t from = first < 0 ? 0 : static_cast<size_t>(first);
  const size_t total = hits == nullptr ? 0 : hits->samples.size();
  rte_tel_data_add_dict_u64(d, "first", from);
  for (size_t r = from; r < total && r < from + kRulesPage; ++r) {
    const MetricSample& s = hits->samples[r];
    rte_tel_data* rule = rte_tel_data_alloc();
    if (rule == nullptr) return -ENOMEM;
    rte_tel_data_start_dict(rule);
    rte_tel_data_add_dict_string(rule, "rule", json_safe(label(s, "rule")).c_str());  // cut at 127 bytes
    rte_tel_data_add_dict_u64(rule, "hits", static_cast<uint64_t>(s.value));
    // (Names may hold letters, digits, '_' and '/' only.)
    if (rte_tel_data_add_dict_container(d, ("line_" + label(s, "line")).c_str(), rule, 0) != 0) rte_tel_data_free(rule);
  }
  if (from + kRulesPage < total) rte_tel_data_add_dict_u64(d, "next", from + kRulesPage);
  return 0;
}

int health(const char*, const char*, rte_tel_data* d) {
  std::lock_guard lock(g_mutex);
  if (g_dataplane == nullptr) return -EAGAIN;
  const std::string live = g_dataplane->unhealthy_because(), ready = g_dataplane->unready_because();
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_string(d, "live", live.empty() ? "ok" : json_safe(live).c_str());
  rte_tel_data_add_dict_string(d, "ready", ready.empty() ? "ok" : json_safe(ready).c_str());
  return 0;
}

}  // namespace

Telemetry::Telemetry(Dataplane& dataplane) {
  static std::once_flag registered;
  std::call_once(registered, [] {
    rte_telemetry_register_cmd("/kmodkit/flows", flows,
                               "The flow tables by protocol (entries, created, expired, evicted, insert failures). "
                               "Parameters: int lcore (none: all workers)");
    rte_telemetry_register_cmd("/kmodkit/rules", rules,
                               "The rules in force with their hits, 100 at a time, and the reloads. Parameters: int first rule (0)");
    rte_telemetry_register_cmd("/kmodkit/health", health, "Liveness and readiness, as /healthz and /readyz. Takes no parameters");
  });
  std::lock_guard lock(g_mutex);
  g_dataplane = &dataplane;
}

Telemetry::~Telemetry() {
  std::lock_guard lock(g_mutex);
  g_dataplane = nullptr;
}

}  // namespace kmodkit::firewall
