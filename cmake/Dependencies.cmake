# Every third-party dependency is found here, once, as an IMPORTED target. Nothing is downloaded.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBKMOD REQUIRED IMPORTED_TARGET libkmod)
pkg_check_modules(LIBELF REQUIRED IMPORTED_TARGET libelf)
pkg_check_modules(LIBARCHIVE REQUIRED IMPORTED_TARGET libarchive>=3.6)
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
# init-modules' rpm source reads repomd.xml and primary.xml as streams.
pkg_check_modules(EXPAT REQUIRED IMPORTED_TARGET expat)
find_package(OpenSSL 3 REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)
if(BUILD_TESTING)
  find_package(Catch2 2 REQUIRED)
endif()

# DPDK only for the firewall's data plane; everything else builds without it.
pkg_check_modules(LIBDPDK QUIET IMPORTED_TARGET libdpdk)
