#include "rpm_package.hpp"

namespace kmodkit::init::rpm {

Result<PackageInfo> check_package(const std::filesystem::path&, std::string_view, const std::vector<std::string>&,
                                  SignaturePolicy) {
  return fail(ExitCode::software, "not implemented");
}

Result<archive::Stats> extract_package(const std::filesystem::path&, std::string_view, archive::Extraction&) {
  return fail(ExitCode::software, "not implemented");
}

}  // namespace kmodkit::init::rpm
