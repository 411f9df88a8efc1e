// Catch's main for the tests that need DPDK: an EAL without hugepages, PCI or shared files
// (--no-huge implies legacy memory, which --in-memory refuses: --no-shconf instead),
// on one lcore, initialised once for the process.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <rte_eal.h>

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::string> eal = {"kmodkit-tests", "--no-huge", "-m", "768", "--no-pci", "--no-shconf",
                                  "-l",            "0",         "--log-level=error", "--no-telemetry"};
  std::vector<char*> args;
  for (auto& a : eal) args.push_back(a.data());
  if (rte_eal_init(static_cast<int>(args.size()), args.data()) < 0) {
    std::fprintf(stderr, "rte_eal_init failed: the DPDK tests cannot run\n");
    return 1;
  }
  const int result = Catch::Session().run(argc, argv);
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  ::rmdir(runtime_dir.c_str());  // empty with --no-shconf; fails harmlessly while another test process is in it
  return result;
}
