#pragma once
// Expected failures as values: Result<T> carries either a T or an Error with a sysexits code.

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace kmodkit {

// Exit codes from sysexits.h, as ARCHITECTURE.md fixes them.
enum class ExitCode : int {
  ok = 0,
  usage = 64,        // bad command line
  data_err = 65,     // bad input data: checksum, corrupt or malicious archive
  no_input = 66,     // input missing: no source has the kernel's headers
  unavailable = 69,  // service unavailable: network, repository server
  software = 70,     // internal error
  cant_create = 73,  // cannot create output: volume read-only or full
  temp_fail = 75,    // temporary failure, worth a retry (lock timeout)
  no_perm = 77,      // permission denied
  config = 78,       // configuration error
};

// Name of an exit code for logs ("data error"), never empty.
std::string_view exit_code_name(ExitCode code);

// One failure: the exit code it maps to and a sentence that says why.
struct Error {
  ExitCode code = ExitCode::software;
  std::string message;

  // Prefixes context so messages read "outer: inner: cause".
  [[nodiscard]] Error context(std::string_view what) const&;
  [[nodiscard]] Error context(std::string_view what) &&;
};

template <typename T = void>
using Result = std::expected<T, Error>;

// Builds the unexpected value for a Result: `return fail(ExitCode::data_err, "bad")`.
inline std::unexpected<Error> fail(ExitCode code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}
inline std::unexpected<Error> fail(Error error) { return std::unexpected(std::move(error)); }

// Adds context to the error of a failed result and passes a good one through.
template <typename T>
Result<T> with_context(Result<T> r, std::string_view what) {
  if (!r) return std::unexpected(std::move(r).error().context(what));
  return r;
}

}  // namespace kmodkit

// Evaluates a Result expression; on failure returns its error from the enclosing function,
// otherwise yields the value (as ccache's TRY). GCC/Clang statement expression.
#define KK_TRY(expr)                                                          \
  __extension__({                                                             \
    auto&& kk_try_result_ = (expr);                                           \
    if (!kk_try_result_) return std::unexpected(std::move(kk_try_result_).error()); \
    std::move(kk_try_result_).value();                                        \
  })

// As KK_TRY, but prefixes context to the error on the way out.
#define KK_TRY_CTX(expr, ctx)                                                 \
  __extension__({                                                             \
    auto&& kk_try_result_ = (expr);                                           \
    if (!kk_try_result_)                                                      \
      return std::unexpected(std::move(kk_try_result_).error().context(ctx)); \
    std::move(kk_try_result_).value();                                        \
  })
