#include "posix_regex.hpp"

namespace kmodkit::kmod_builder {
namespace {

// An upper bound of what glibc's regcomp builds for an extended regex, in nodes. It spells
// repetitions out: E+ becomes E E*, E{n,m} m copies of E, so repetitions applied to repeated
// expressions multiply (each '+' of "x++++" doubles the tree: twenty of them take 700 MB). The
// walk reads the syntax only as far as sizes go (groups, alternation, brackets, escapes,
// quantifiers) and leaves validity to regcomp; it saturates at the limit.
class CostOfRegex {
 public:
  static constexpr double kLimit = 10000;
  explicit CostOfRegex(std::string_view p) : p_(p) {}
  double total() {
    double cost = 0;
    while (i_ < p_.size()) {
      cost = cap(cost + alternation());
      if (i_ < p_.size()) ++i_, cost = cap(cost + 1);  // an unmatched ')', taken literally
    }
    return cost;
  }

 private:
  static double cap(double v) { return v < kLimit ? v : kLimit; }
  bool at(char c) const { return i_ < p_.size() && p_[i_] == c; }
  double alternation() {
    double cost = concatenation();
    while (at('|')) {
      ++i_;
      cost = cap(cost + 1 + concatenation());
    }
    return cost;
  }
  double concatenation() {
    double cost = 0;
    while (i_ < p_.size() && !at('|') && !at(')')) cost = cap(cost + repeated(atom()));
    return cost;
  }
  double atom() {
    const char c = p_[i_++];
    if (c == '(') {
      const double inner = alternation();
      if (at(')')) ++i_;
      return inner + 2;
    }
    if (c == '\\') {
      if (i_ < p_.size()) ++i_;
      return 1;
    }
    if (c == '[') {  // a bracket expression is one node: [^]x], [[:alpha:]], [.-.], [=e=]
      if (at('^')) ++i_;
      if (at(']')) ++i_;
      while (i_ < p_.size() && !at(']')) {
        if (at('[') && i_ + 1 < p_.size() && (p_[i_ + 1] == ':' || p_[i_ + 1] == '.' || p_[i_ + 1] == '=')) {
          const char kind = p_[i_ + 1];
          i_ += 2;
          while (i_ + 1 < p_.size() && !(p_[i_] == kind && p_[i_ + 1] == ']')) ++i_;
          i_ = i_ + 1 < p_.size() ? i_ + 2 : p_.size();
        } else {
          ++i_;
        }
      }
      if (at(']')) ++i_;
    }
    return 1;
  }
  // The quantifiers after an atom of cost `cost`.
  double repeated(double cost) {
    for (;;) {
      if (at('*') || at('?')) {
        ++i_;
        cost = cap(cost + 1);
      } else if (at('+')) {
        ++i_;
        cost = cap(2 * cost + 1);
      } else if (at('{')) {
        size_t j = i_ + 1;
        double low = 0, high = -1;
        while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') low = cap(low * 10 + (p_[j++] - '0'));
        if (j < p_.size() && p_[j] == ',') {
          ++j;
          if (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') high = 0;
          while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') high = cap(high * 10 + (p_[j++] - '0'));
        } else {
          high = low;
        }
        if (j >= p_.size() || p_[j] != '}') return cost;  // not an interval: regcomp decides
        i_ = j + 1;
        const double copies = high < 0 ? low + 1 : (high > low ? high : low);  // {n,} is n copies and a star
        cost = cap(cost * (copies > 1 ? copies : 1) + 1);
      } else {
        return cost;
      }
    }
  }
  std::string_view p_;
  size_t i_ = 0;
};

}  // namespace

void PosixRegex::Free::operator()(regex_t* re) const {
  ::regfree(re);
  delete re;
}

Result<PosixRegex> PosixRegex::compile(const std::string& pattern) {
  if (CostOfRegex(pattern).total() >= CostOfRegex::kLimit) {
    const std::string shown = pattern.size() <= 80 ? pattern : pattern.substr(0, 77) + "...";
    return fail(ExitCode::config, "'" + shown + "' repeats too much to compile: its repetitions multiply past " +
                                      std::to_string(static_cast<int>(CostOfRegex::kLimit)) +
                                      " copies of its parts (regcomp spells each repetition out, so this would take "
                                      "memory without bound; POSIX leaves a repeated repetition such as 'x++' undefined)");
  }
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
