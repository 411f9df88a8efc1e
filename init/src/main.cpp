#include "init_modules.hpp"

int main(int argc, char** argv) { return kmodkit::init::main(argc, argv); }
