#include "posix_regex.hpp"

#include <algorithm>

namespace kmodkit::kmod_builder {
namespace {

// What glibc's regcomp would take for an extended regex, bounded before it is asked. regcomp
// spells repetitions out (E+ as E E*, E{n,m} as m copies of E, the optional ones nested), so
// repetitions of repeated expressions multiply: each '+' of "x+++" doubles what it builds
// (twenty took 700 MB), "x{1,9000}" took 640 MB, and "a" with 45 '?' and "+++" took 1.4 s. The
// walk reads the syntax only as far as sizes go (groups, alternation, brackets, escapes,
// quantifiers) and leaves validity to regcomp. It refuses:
//   - copies: more than kMaxCopies nodes once repetitions are spelled out;
//   - depth: repetitions nested more than kMaxDepth deep (groups or stacked quantifiers);
//   - an interval count above 255 (RE_DUP_MAX, all POSIX promises);
//   - a quantifier right after a quantifier ("x++", "x?*", "x{2}{3}"): POSIX leaves it undefined.
// DKMS's patterns are short alternations of releases or architectures, far inside all four.
class CostOfRegex {
 public:
  static constexpr double kMaxCopies = 2000;
  static constexpr int kMaxDepth = 8;
  static constexpr int kMaxCount = 255;
  explicit CostOfRegex(std::string_view p) : p_(p) {}
  // Why the regex costs too much to compile, or "" when it does not.
  std::string refusal() {
    double cost = 0;
    while (i_ < p_.size() && why_.empty()) {
      cost = cap(cost + alternation().cost);
      if (i_ < p_.size()) ++i_, cost = cap(cost + 1);  // an unmatched ')', taken literally
    }
    if (why_.empty() && cost >= kMaxCopies) {
      why_ = "its repetitions multiply past " + std::to_string(static_cast<int>(kMaxCopies)) + " copies of its parts";
    }
    return why_;
  }

 private:
  struct Part {
    double cost = 0;
    int depth = 0;  // repetitions nested inside
  };
  static double cap(double v) { return v < kMaxCopies ? v : kMaxCopies; }
  bool at(char c) const { return i_ < p_.size() && p_[i_] == c; }
  bool at_quantifier() const { return at('*') || at('+') || at('?') || at('{'); }
  Part alternation() {
    Part all = concatenation();
    while (at('|') && why_.empty()) {
      ++i_;
      const Part next = concatenation();
      all = {cap(all.cost + 1 + next.cost), std::max(all.depth, next.depth)};
    }
    return all;
  }
  Part concatenation() {
    Part all;
    while (i_ < p_.size() && !at('|') && !at(')') && why_.empty()) {
      const Part next = repeated(atom());
      all = {cap(all.cost + next.cost), std::max(all.depth, next.depth)};
    }
    return all;
  }
  Part atom() {
    const char c = p_[i_++];
    if (c == '(') {
      Part inner = alternation();
      if (at(')')) ++i_;
      inner.cost = cap(inner.cost + 2);
      return inner;
    }
    if (c == '\\') {
      if (i_ < p_.size()) ++i_;
    } else if (c == '[') {  // a bracket expression is one node: [^]x], [[:alpha:]], [.-.], [=e=]
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
    return {1, 0};
  }
  // The quantifier after an atom, if any (one: a second one is refused).
  Part repeated(Part part) {
    if (!at_quantifier()) return part;
    double copies = 1;
    if (at('{')) {
      size_t j = i_ + 1;
      long low = 0, high = -1;
      const auto digit = [&] { return j < p_.size() && p_[j] >= '0' && p_[j] <= '9'; };
      const auto more = [&](long v) { return std::min(v * 10 + (p_[j++] - '0'), 1000000L); };  // saturates
      while (digit()) low = more(low);
      if (j < p_.size() && p_[j] == ',') {
        ++j;
        if (digit()) high = 0;
        while (digit()) high = more(high);
      } else {
        high = low;
      }
      if (j >= p_.size() || p_[j] != '}') return part;  // not an interval: regcomp decides
      if (low > kMaxCount || high > kMaxCount) {
        why_ = "a repetition count above " + std::to_string(kMaxCount) + " (RE_DUP_MAX, all POSIX promises)";
        return part;
      }
      i_ = j + 1;
      copies = static_cast<double>(high < 0 ? low + 1 : std::max(low, high));
    } else {
      copies = at('+') ? 2 : 1;
      ++i_;
    }
    if (at_quantifier()) {
      why_ = "a repetition right after a repetition ('x++', 'x?*'), which POSIX leaves undefined";
      return part;
    }
    part = {cap(part.cost * std::max(copies, 1.0) + 1), part.depth + 1};
    if (part.depth > kMaxDepth) why_ = "repetitions nested more than " + std::to_string(kMaxDepth) + " deep";
    return part;
  }
  std::string_view p_;
  size_t i_ = 0;
  std::string why_;
};

}  // namespace

void PosixRegex::Free::operator()(regex_t* re) const {
  ::regfree(re);
  delete re;
}

Result<PosixRegex> PosixRegex::compile(const std::string& pattern) {
  if (const std::string why = CostOfRegex(pattern).refusal(); !why.empty()) {
    const std::string shown = pattern.size() <= 80 ? pattern : pattern.substr(0, 77) + "...";
    return fail(ExitCode::config, "'" + shown + "' is too costly to compile: " + why +
                                      " (regcomp spells repetitions out, and would take memory and time without bound)");
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
