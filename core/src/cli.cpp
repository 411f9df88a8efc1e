#include "kmodkit/cli.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>

#include "kmodkit/log.hpp"
#include "kmodkit/text.hpp"

namespace kmodkit::cli {
namespace {

Result<std::string> parse_bool(std::string_view option, std::string_view text) {
  std::string lower;
  for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") return std::string("true");
  if (lower == "0" || lower == "false" || lower == "no" || lower == "off" || lower.empty())
    return std::string("false");
  return fail(ExitCode::usage, std::string(option) + ": '" + std::string(text) +
                                   "' is not a boolean (use 1/true/yes/on or 0/false/no/off)");
}

std::string help_suffix(const Option& opt) {
  std::string s = " [env " + env_name(opt.name);
  if (!opt.default_value.empty()) s += ", default " + opt.default_value;
  return s + "]";
}

}  // namespace

std::string env_name(std::string_view option_name) {
  std::string out = "KMODKIT_";
  for (char c : option_name) {
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

void write_termination_log(std::string_view sentence) {
  const char* path = std::getenv("KMODKIT_TERMINATION_LOG");
  if (path == nullptr || *path == '\0') path = "/dev/termination-log";
  // Never create it: it exists only where Kubernetes mounted it.
  int fd = ::open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return;
  std::string line(sentence);
  line += '\n';
  [[maybe_unused]] ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
}

Result<long long> parse_integer(std::string_view option, std::string_view text, long long min,
                                long long max) {
  long long value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) {
    return fail(ExitCode::usage, "--" + std::string(option) + ": '" + std::string(text) +
                                     "' is not a whole number");
  }
  if (value < min || value > max) {
    return fail(ExitCode::usage, "--" + std::string(option) + ": " + std::to_string(value) +
                                     " is out of range " + std::to_string(min) + ".." +
                                     std::to_string(max));
  }
  return value;
}

Result<double> parse_seconds(std::string_view option, std::string_view text) {
  char* end = nullptr;
  std::string copy(text);
  double v = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !(v >= 0) || v > 1e7) {
    return fail(ExitCode::usage, "--" + std::string(option) + ": '" + copy +
                                     "' is not a number of seconds");
  }
  return v;
}

std::function<Result<void>(const std::vector<std::string>&)> store(std::string& target) {
  return [&target](const std::vector<std::string>& v) -> Result<void> {
    target = v.empty() ? "" : v.front();
    return {};
  };
}

std::function<Result<void>(const std::vector<std::string>&)> store(std::filesystem::path& target) {
  return [&target](const std::vector<std::string>& v) -> Result<void> {
    target = v.empty() ? std::filesystem::path() : std::filesystem::path(v.front());
    return {};
  };
}

std::function<Result<void>(const std::vector<std::string>&)> store_flag(bool& target) {
  return [&target](const std::vector<std::string>& v) -> Result<void> {
    target = !v.empty() && v.front() == "true";
    return {};
  };
}

std::function<Result<void>(const std::vector<std::string>&)> store_seconds(std::string option, double& target) {
  return [option = std::move(option), &target](const std::vector<std::string>& v) -> Result<void> {
    target = KK_TRY(parse_seconds(option, v.front()));
    return {};
  };
}

int run_main(const Program& program, int argc, char** argv,
             const std::function<Result<void>()>& body) {
  // Writes to a closed pipe (a download whose reader stopped) must fail with EPIPE, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{program.summary, program.name};
  app.footer(program.footer);
  app.set_version_flag("--version", std::string(KMODKIT_VERSION));
  app.get_formatter()->column_width(34);

  // Raw values as given on the command line, per option.
  std::map<std::string, std::vector<std::string>> given;
  std::map<std::string, bool> flags_given;
  std::string log_format_text, log_level_text;

  std::vector<Option> all = program.options;
  all.push_back({"log-format", Kind::value, "auto", "FORMAT",
                 "auto (human on a terminal, JSON lines otherwise), human or json", nullptr, ','});
  all.push_back({"log-level", Kind::value, "info", "LEVEL", "debug, info, warn or error", nullptr, ','});

  for (const auto& opt : all) {
    const std::string flag = "--" + opt.name;
    const std::string help = opt.help + help_suffix(opt);
    if (opt.kind == Kind::flag) {
      app.add_flag(flag, flags_given[opt.name], help);
    } else {
      auto* o = app.add_option(flag, given[opt.name], help);
      if (!opt.value_name.empty()) o->type_name(opt.value_name);
      if (opt.kind == Kind::value) o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::printf("%s %s\n", program.name.c_str(), KMODKIT_VERSION);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::string sentence = program.name + ": " + e.what() + " (see --help)";
    std::fprintf(stderr, "%s\n", sentence.c_str());
    write_termination_log(sentence);
    return static_cast<int>(ExitCode::usage);
  }

  // Resolve each option: flag, then environment, then default.
  auto resolve = [&](const Option& opt) -> Result<std::vector<std::string>> {
    const std::string env = env_name(opt.name);
    const char* env_value = std::getenv(env.c_str());
    if (opt.kind == Kind::flag) {
      if (app.count("--" + opt.name) > 0) return std::vector<std::string>{"true"};
      if (env_value != nullptr) return std::vector<std::string>{KK_TRY(parse_bool(env, env_value))};
      return std::vector<std::string>{opt.default_value.empty() ? "false" : opt.default_value};
    }
    if (app.count("--" + opt.name) > 0) {
      auto& values = given[opt.name];
      if (opt.kind == Kind::value) return std::vector<std::string>{values.back()};
      std::vector<std::string> items;
      for (const auto& v : values) {
        auto parts = text::split_items(v, opt.env_separator);
        items.insert(items.end(), parts.begin(), parts.end());
      }
      return items;
    }
    if (env_value != nullptr) {
      if (opt.kind == Kind::list) return text::split_items(env_value, opt.env_separator);
      return std::vector<std::string>{env_value};
    }
    if (opt.default_value.empty()) return std::vector<std::string>{};
    if (opt.kind == Kind::list) return text::split_items(opt.default_value, opt.env_separator);
    return std::vector<std::string>{opt.default_value};
  };

  auto configure = [&]() -> Result<void> {
    auto fmt_values = KK_TRY(resolve(all[all.size() - 2]));
    auto lvl_values = KK_TRY(resolve(all[all.size() - 1]));
    auto format = KK_TRY(log::parse_format(fmt_values.at(0)));
    auto level = KK_TRY(log::parse_level(lvl_values.at(0)));
    log::init(program.name, format, level);
    for (const auto& opt : program.options) {
      auto values = KK_TRY(resolve(opt));
      if (opt.apply) KK_TRY(opt.apply(values));
    }
    return {};
  };

  Result<void> outcome;
  try {
    outcome = configure();
    if (outcome) outcome = body();
  } catch (const std::exception& e) {
    outcome = fail(ExitCode::software, std::string("internal error: ") + e.what());
  }
  if (outcome) return 0;

  const Error& err = outcome.error();
  std::string sentence = err.message;
  if (auto logger = spdlog::default_logger(); logger && logger->name() == program.name) {
    logger->error("{}", sentence);
  } else {
    std::fprintf(stderr, "%s: %s\n", program.name.c_str(), sentence.c_str());
  }
  write_termination_log(program.name + ": " + sentence);
  return static_cast<int>(err.code);
}

}  // namespace kmodkit::cli
