#include "seed.hpp"

int main(int argc, char** argv) { return kmodkit::seed::main(argc, argv); }
