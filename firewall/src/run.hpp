#pragma once
// The firewall's start-up, forwarding and orderly stop: the whole process but its main().

namespace kmodkit::firewall {

// The process: takes the stop, print and reload signals, parses the options, starts EAL, the
// ports and the workers, forwards until a stop request, and stops in order. Returns the exit
// code: 0 when done or stopped, otherwise that of the error, whose sentence is the last line
// on stderr and the termination log (see --help).
int run(int argc, char** argv);

}  // namespace kmodkit::firewall
