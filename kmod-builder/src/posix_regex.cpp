#include "posix_regex.hpp"

namespace kmodkit::kmod_builder {

void PosixRegex::Free::operator()(regex_t* re) const {
  ::regfree(re);
  delete re;
}

Result<PosixRegex> PosixRegex::compile(const std::string& pattern) {
  auto re = std::make_unique<regex_t>();
  // REG_NOSUB: only whether it matches is asked, never where; bash's answer is the same.
  if (const int err = ::regcomp(re.get(), pattern.c_str(), REG_EXTENDED | REG_NOSUB); err != 0) {
    char why[256];
    ::regerror(err, re.get(), why, sizeof why);
    return fail(ExitCode::config, "'" + pattern + "' is not a POSIX extended regular expression: " + why);
  }
  return PosixRegex(std::unique_ptr<regex_t, Free>(re.release()));
}

bool PosixRegex::search(std::string_view text) const {
  return ::regexec(re_.get(), std::string(text).c_str(), 0, nullptr, 0) == 0;
}

}  // namespace kmodkit::kmod_builder
