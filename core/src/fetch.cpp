#include "kmodkit/fetch.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <thread>

#include "kmodkit/files.hpp"

namespace kmodkit::fetch {

bool is_url(std::string_view location) {
  return location.starts_with("http://") || location.starts_with("https://") ||
         location.starts_with("file://");
}

Result<void> stream(const std::string& location, const http::Options& options,
                    const std::function<Result<void>(int fd)>& consume) {
  if (!is_url(location)) {
    auto fd = KK_TRY(files::open_file(location, O_RDONLY));
    return consume(fd.get());
  }

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail(files::errno_error("pipe", errno, ExitCode::software));
  files::Fd read_end(fds[0]);
  files::Fd write_end(fds[1]);
  ::fcntl(write_end.get(), F_SETPIPE_SZ, 1 << 20);  // fewer wake-ups; a smaller pipe also works

  bool reader_gone = false;
  Result<uint64_t> downloaded = 0;
  std::thread producer([&] {
    downloaded = http::get(
        location,
        [&](std::span<const char> bytes) -> Result<void> {
          if (int err = files::write_all(write_end.get(), bytes.data(), bytes.size()); err != 0) {
            reader_gone = err == EPIPE;
            return fail(files::errno_error("pipe", err, ExitCode::software));
          }
          return {};
        },
        options);
    write_end = files::Fd();  // end of input for the consumer
  });

  auto consumed = consume(read_end.get());
  read_end = files::Fd();  // a producer still writing now gets EPIPE instead of blocking
  producer.join();

  if (!downloaded && !reader_gone) return fail(downloaded.error());
  return consumed;
}

}  // namespace kmodkit::fetch
