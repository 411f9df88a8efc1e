#include "metrics_server.hpp"

#include <pthread.h>
#include <rte_lcore.h>

#include <httplib.h>

#include <chrono>

#include "kmodkit/log.hpp"

namespace kmodkit::firewall {

struct MetricsServer::Impl {
  httplib::Server server;
  pthread_t thread{};
  bool running = false;
};

namespace {

void* serve(void* arg) {
  static_cast<httplib::Server*>(arg)->listen_after_bind();
  return nullptr;
}

}  // namespace

Result<std::pair<std::string, int>> MetricsServer::parse_address(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
  const std::string port_text = colon == std::string::npos ? "" : listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(port_text, &used);
    if (used != port_text.size()) port = 0;
  } catch (const std::exception&) {
    port = 0;
  }
  if (host.empty() || port <= 0 || port > 65535) {
    return fail(ExitCode::usage, "--metrics " + listen + ": not HOST:PORT (e.g. 0.0.0.0:9100, [::]:9100)");
  }
  return std::make_pair(host, port);
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen, Dataplane& dataplane) {
  const auto [host, port] = KK_TRY(parse_address(listen));
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->impl_ = std::make_unique<Impl>();
  auto& server = s->impl_->server;
  // Two threads are enough for a scraper and a person with curl.
  server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  server.Get("/metrics", [&dataplane](const httplib::Request&, httplib::Response& res) {
    if (auto snap = dataplane.snapshot(std::chrono::seconds(1))) {
      res.set_content(format_metrics(*snap), "text/plain; version=0.0.4; charset=utf-8");
    } else {
      res.status = 503;
      res.set_content("the firewall is not forwarding\n", "text/plain");
    }
  });
  // Probes: 200 "ok", or 503 with the reason on one line (the kubelet logs the body's start).
  const auto probe = [](httplib::Response& res, const std::string& why) {
    res.status = why.empty() ? 200 : 503;
    res.set_content(why.empty() ? "ok\n" : why + "\n", "text/plain; charset=utf-8");
  };
  server.Get("/healthz", [&dataplane, probe](const httplib::Request&, httplib::Response& res) {
    probe(res, dataplane.unhealthy_because());
  });
  server.Get("/readyz", [&dataplane, probe](const httplib::Request&, httplib::Response& res) {
    probe(res, dataplane.unready_because());
  });
  if (!server.bind_to_port(host, port)) {
    return fail(ExitCode::config, "--metrics " + listen + ": cannot listen there (in use, or not an address of this pod)");
  }
  if (int err = rte_ctrl_thread_create(&s->impl_->thread, "kk-metrics", nullptr, serve, &server); err != 0) {
    return fail(ExitCode::config, "--metrics: cannot start its thread: " + std::string(strerror(err)));
  }
  s->impl_->running = true;
  log::get("firewall")->info("metrics on http://{}/metrics", listen);
  return s;
}

MetricsServer::~MetricsServer() {
  if (impl_ && impl_->running) {
    impl_->server.stop();
    pthread_join(impl_->thread, nullptr);
  }
}

}  // namespace kmodkit::firewall
