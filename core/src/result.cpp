#include "kmodkit/result.hpp"

namespace kmodkit {

std::string_view exit_code_name(ExitCode code) {
  switch (code) {
    case ExitCode::ok: return "ok";
    case ExitCode::usage: return "usage error";
    case ExitCode::data_err: return "bad input data";
    case ExitCode::no_input: return "input missing";
    case ExitCode::unavailable: return "service unavailable";
    case ExitCode::software: return "internal error";
    case ExitCode::cant_create: return "cannot create output";
    case ExitCode::io_err: return "input/output error";
    case ExitCode::temp_fail: return "temporary failure";
    case ExitCode::no_perm: return "permission denied";
    case ExitCode::config: return "configuration error";
  }
  return "error";
}

Error Error::context(std::string_view what) const& {
  return Error{code, std::string(what) + ": " + message};
}

Error Error::context(std::string_view what) && {
  message.insert(0, std::string(what) + ": ");
  return std::move(*this);
}

}  // namespace kmodkit
