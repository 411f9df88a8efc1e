// firewall: the pod's main container. The process is firewall::run (run.cpp); the data plane
// is in dataplane.cpp.
#include "run.hpp"

// run() takes the stop, print and reload signals as its first instruction.
int main(int argc, char** argv) { return kmodkit::firewall::run(argc, argv); }
