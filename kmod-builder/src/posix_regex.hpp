#pragma once
// A POSIX extended regular expression, compiled and matched as bash's [[ text =~ regex ]] does
// (regcomp with REG_EXTENDED, then regexec: a search, anchored only where the pattern says ^ or
// $). DKMS reads BUILD_EXCLUSIVE_KERNEL and BUILD_EXCLUSIVE_ARCH that way, so recipes match as
// they do under DKMS.

#include <regex.h>

#include <memory>
#include <string>
#include <string_view>

#include "kmodkit/result.hpp"

namespace kmodkit::kmod_builder {

class PosixRegex {
 public:
  // Compiles `pattern`. Configuration error (78) with regcomp's reason when it is not a POSIX
  // extended regular expression, or, before regcomp is asked, when regcomp would take memory or
  // time without bound: repetitions multiplying past 2,000 copies, nested more than 8 deep, a
  // count above 255, or a quantifier right after a quantifier (x++++...: each '+' doubles what
  // it builds). The caller adds which recipe and field it came from.
  static Result<PosixRegex> compile(const std::string& pattern);

  // Whether the pattern matches anywhere in `text`.
  bool search(std::string_view text) const;

 private:
  struct Free {
    void operator()(regex_t* re) const;
  };
  explicit PosixRegex(std::unique_ptr<regex_t, Free> re) : re_(std::move(re)) {}
  std::unique_ptr<regex_t, Free> re_;
};

}  // namespace kmodkit::kmod_builder
