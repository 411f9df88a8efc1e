// cpu-link: how long a cache line takes to go from one CPU to another and back, measured by two
// threads handing a flag to each other. firewall-peers.sh runs it around every measurement:
// memif's rings are such lines, shared by the generator's CPU and the device's, and a virtual
// machine's two vCPUs may sit on cores that share a last-level cache or on cores that do not
// (seen on a 2-vCPU AMD EPYC guest: 55 ns, and minutes later 345 ns, with every packet rate
// across memif halved in the slow state). Prints one JSON line.
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "kmodkit/cli.hpp"

namespace kmodkit::bench {
namespace {

struct Options {
  int from = 0, to = 1;
  int round_trips = 1'000'000;
};

Result<void> pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
    return fail(ExitCode::usage, "CPU " + std::to_string(cpu) + " is not one this process may run on");
  }
  return {};
}

Result<void> measure(const Options& o) {
  KK_TRY(pin(o.from));
  alignas(64) std::atomic<int> flag{0};
  std::atomic<int> ready{0};  // 1: the other thread runs on its CPU, -1: it could not
  Result<void> far_side;
  std::thread other([&] {
    far_side = pin(o.to);
    ready.store(far_side ? 1 : -1);
    if (!far_side) return;
    for (int i = 0; i < o.round_trips; ++i) {
      while (flag.load(std::memory_order_acquire) != 1) {
      }
      flag.store(0, std::memory_order_release);
    }
  });
  while (ready.load() == 0) std::this_thread::yield();
  if (ready.load() < 0) {
    other.join();
    return far_side;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < o.round_trips; ++i) {
    flag.store(1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 0) {
    }
  }
  const auto end = std::chrono::steady_clock::now();
  other.join();
  const double ns = std::chrono::duration<double, std::nano>(end - start).count() / o.round_trips;
  std::printf("{\"from\": %d, \"to\": %d, \"round_trips\": %d, \"round_trip_ns\": %.1f}\n", o.from, o.to, o.round_trips, ns);
  return {};
}

}  // namespace
}  // namespace kmodkit::bench

int main(int argc, char** argv) {
  using namespace kmodkit;
  bench::Options o;
  cli::Program program{
      "cpu-link",
      "how long a cache line takes from one CPU to another and back (the cost under every memif packet)",
      "Example: cpu-link --from 0 --to 1",
      {
          {"from", cli::Kind::value, "0", "CPU", "the CPU that starts each round trip", cli::store_integer("from", o.from, 0, 1023)},
          {"to", cli::Kind::value, "1", "CPU", "the CPU that answers", cli::store_integer("to", o.to, 0, 1023)},
          {"round-trips", cli::Kind::value, "1000000", "N", "how many round trips to time",
           cli::store_integer("round-trips", o.round_trips, 1, 1'000'000'000)},
      }};
  return cli::run_main(program, argc, argv, [&] { return bench::measure(o); });
}
