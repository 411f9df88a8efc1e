#pragma once
// The firewall's HTTP endpoint (--metrics HOST:PORT): GET /metrics answers with
// Dataplane::snapshot() in the Prometheus text format. Served by cpp-httplib from a DPDK control thread
// (rte_ctrl_thread_create: on the CPUs no lcore polls) and the two threads of its pool, which
// inherit that thread's CPUs; never from a worker lcore.

#include <memory>
#include <string>
#include <utility>

#include "dataplane.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::firewall {

class MetricsServer {
 public:
  // Listens on `listen` (HOST:PORT; [ADDRESS]:PORT for IPv6) and serves until destroyed.
  // Errors: 64 for an address that is not HOST:PORT, 78 when it cannot listen there.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen, Dataplane& dataplane);
  // The host and port of `listen`, or 64 naming it: checked before EAL starts.
  static Result<std::pair<std::string, int>> parse_address(const std::string& listen);
  ~MetricsServer();  // stops listening and joins the thread
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

 private:
  MetricsServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmodkit::firewall
