#include "commands.hpp"

int main(int argc, char** argv) { return kmodkit::kmod_builder::main(argc, argv); }
