#include "kmodkit/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>

#include "kmodkit/files.hpp"

extern char** environ;

namespace kmodkit::subprocess {

std::string Outcome::describe() const {
  if (timed_out) return "timed out";
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  return "exited with " + std::to_string(exit_code);
}

Result<Outcome> run(const std::vector<std::string>& argv, const Options& options) {
  if (argv.empty()) return fail(ExitCode::software, "subprocess: empty command");
  const std::string& program = argv.front();

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return fail(files::errno_error("pipe", errno, ExitCode::software));
  files::Fd read_end(pipefd[0]), write_end(pipefd[1]);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env_map[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& [k, v] : options.env) env_map[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env_map) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  // The program's path, found before fork: between fork and exec the child makes only
  // async-signal-safe calls (the caller may have other threads).
  std::string path;
  if (program.find('/') != std::string::npos) {
    path = program;
  } else {
    const char* search = std::getenv("PATH");
    std::string_view dirs = search != nullptr ? search : "/usr/local/bin:/usr/bin:/bin";
    for (size_t begin = 0; begin <= dirs.size();) {
      const size_t colon = std::min(dirs.find(':', begin), dirs.size());
      const std::string dir(dirs.substr(begin, colon - begin));
      const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + program;
      struct stat st{};
      if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
        path = candidate;
        break;
      }
      begin = colon + 1;
    }
    if (path.empty()) return fail(ExitCode::no_input, "cannot run " + program + ": not found in PATH");
  }
  // The child reports a failed exec through this pipe; a successful exec closes it.
  int errfd[2];
  if (::pipe2(errfd, O_CLOEXEC) != 0) return fail(files::errno_error("pipe", errno, ExitCode::software));
  files::Fd err_read(errfd[0]), err_write(errfd[1]);
  const std::string cwd = options.cwd.string();
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) return fail(files::errno_error("cannot run " + program, errno, ExitCode::software));
  if (pid == 0) {
    // Its own process group, so a timeout kills make and the compilers it started; and killed
    // when this process dies, also by SIGKILL, so no build outlives the run that started it
    // (a rerun removes a killed run's build directory).
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int err = 0;
    const int in = ::open("/dev/null", O_RDONLY);
    if (in < 0 || ::dup2(in, STDIN_FILENO) < 0 || ::dup2(write_end.get(), STDOUT_FILENO) < 0 ||
        ::dup2(write_end.get(), STDERR_FILENO) < 0 || (!cwd.empty() && ::chdir(cwd.c_str()) != 0)) {
      err = errno;
    } else {
      ::execve(path.c_str(), args.data(), envp.data());
      err = errno;
    }
    [[maybe_unused]] auto written = ::write(err_write.get(), &err, sizeof err);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: a timeout may come before the child ran
  write_end = files::Fd();
  err_write = files::Fd();
  int exec_errno = 0;
  ssize_t got_err;
  do {
    got_err = ::read(err_read.get(), &exec_errno, sizeof exec_errno);
  } while (got_err < 0 && errno == EINTR);
  if (got_err == static_cast<ssize_t>(sizeof exec_errno)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (exec_errno == ENOENT) return fail(ExitCode::no_input, "cannot run " + program + ": not found in PATH");
    return fail(files::errno_error("cannot run " + program, exec_errno, ExitCode::software));
  }

  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      out.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = ::read(read_end.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    size_t room = options.max_output > out.output.size() ? options.max_output - out.output.size() : 0;
    out.output.append(buf, std::min(room, static_cast<size_t>(got)));
  }

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return fail(files::errno_error("waitpid " + program, errno, ExitCode::software));
  }
  if (WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
  return out;
}

}  // namespace kmodkit::subprocess
