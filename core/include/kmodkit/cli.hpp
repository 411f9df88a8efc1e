#pragma once
// The option table and the common main runner every kmodkit binary uses.
//
// Each option is declared once: its flag, its KMODKIT_* environment variable (derived from
// the flag), its default and its help text. The flag wins over the environment, the
// environment over the default. Values are parsed strictly by the option's own `apply`.

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kmodkit/result.hpp"

namespace kmodkit::cli {

enum class Kind {
  value,  // --name VALUE; the last one given wins
  list,   // --name VALUE, repeatable; values (flag or environment) are split at env_separator
  flag,   // --name; the environment variable is 1/true/yes/on or 0/false/no/off
};

struct Option {
  std::string name;           // "kernel-release" gives --kernel-release and KMODKIT_KERNEL_RELEASE
  Kind kind = Kind::value;
  std::string default_value;  // text as a user would write it; "" for none
  std::string value_name;     // "RELEASE" in the help text
  std::string help;
  // Receives the values in effect (one for value, any number for list, "true"/"false" for a
  // flag) and stores them; returns a usage or configuration error naming the bad value.
  std::function<Result<void>(const std::vector<std::string>& values)> apply;
  char env_separator = ',';   // between items of a list in the environment variable
};

// The environment variable of an option: "kernel-release" -> "KMODKIT_KERNEL_RELEASE".
std::string env_name(std::string_view option_name);

struct Program {
  std::string name;     // binary name, also the root logger's
  std::string summary;  // one line under the usage
  std::string footer;   // examples, shown at the end of --help
  std::vector<Option> options;
};

// Parses argv and the environment against the program's options plus the common ones
// (--log-format, --log-level, --help, --version), sets up logging, and runs `body`.
// Returns the process exit code: 0, or the code of the error `body` returned, whose message
// becomes the last line on stderr and the content of the termination log.
int run_main(const Program& program, int argc, char** argv,
             const std::function<Result<void>()>& body);

// Writes the final sentence to the termination log (/dev/termination-log, or the path in
// KMODKIT_TERMINATION_LOG) when that file exists; failure to write is ignored.
void write_termination_log(std::string_view sentence);

// `apply` functions for the common cases: store the value (or "" when none) in a string or path,
// or a flag's state in a bool.
std::function<Result<void>(const std::vector<std::string>&)> store(std::string& target);
std::function<Result<void>(const std::vector<std::string>&)> store(std::filesystem::path& target);
std::function<Result<void>(const std::vector<std::string>&)> store_flag(bool& target);

// Strict helpers for `apply`.
Result<long long> parse_integer(std::string_view option, std::string_view text, long long min,
                                long long max);
Result<double> parse_seconds(std::string_view option, std::string_view text);

// `apply` functions that parse strictly and store: a duration in seconds (parse_seconds), or an
// integer in [min, max] (parse_integer) in an integer of any type. The error names `option`.
std::function<Result<void>(const std::vector<std::string>&)> store_seconds(std::string option, double& target);
template <typename Int>
std::function<Result<void>(const std::vector<std::string>&)> store_integer(std::string option, Int& target,
                                                                           long long min, long long max) {
  return [option = std::move(option), &target, min, max](const std::vector<std::string>& v) -> Result<void> {
    target = static_cast<Int>(KK_TRY(parse_integer(option, v.front(), min, max)));
    return {};
  };
}

}  // namespace kmodkit::cli
