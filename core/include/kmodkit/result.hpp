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
  io_err = 74,       // the storage failed a read or a write (EIO)
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

#define KK_CONCAT_(a, b) a##b
#define KK_CONCAT(a, b) KK_CONCAT_(a, b)
#define KK_TRY_IMPL_(expr, ctx_expr, name)                                          \
  __extension__({                                                                 \
    auto&& name = (expr);                                                         \
    if (!name) return std::unexpected(ctx_expr(std::move(name).error()));         \
    std::move(name).value();                                                      \
  })
#define KK_NO_CONTEXT_(e) (e)

// Evaluates a Result expression; on failure returns its error from the enclosing function,
// otherwise yields the value (as ccache's TRY). GCC/Clang statement expression.
#define KK_TRY(expr) KK_TRY_IMPL_(expr, KK_NO_CONTEXT_, KK_CONCAT(kk_try_, __COUNTER__))

// As KK_TRY, but passes the error through `map` (a callable Error -> Error) on the way out.
#define KK_TRY_MAP(expr, map) KK_TRY_IMPL_(expr, map, KK_CONCAT(kk_try_, __COUNTER__))

// As KK_TRY, but prefixes context to the error on the way out.
#define KK_TRY_CTX(expr, ctx) \
  KK_TRY_IMPL_(expr, [&](::kmodkit::Error e_) { return std::move(e_).context(ctx); }, KK_CONCAT(kk_try_, __COUNTER__))
