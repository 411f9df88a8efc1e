#pragma once
// Streams an input, local or remote, into a consumer without holding it in memory.

#include <functional>
#include <string>
#include <string_view>

#include "kmodkit/http.hpp"
#include "kmodkit/result.hpp"

namespace kmodkit::fetch {

// True for http://, https:// and file:// locations; anything else is a local path.
bool is_url(std::string_view location);

// Runs consume(fd) on the bytes of `location`. A local path is opened directly; a URL is
// downloaded by a second thread into a pipe that `consume` reads, so the download overlaps
// with whatever consume does (decompression, file creation). When the download fails, its
// error is returned rather than the truncation the consumer saw.
Result<void> stream(const std::string& location, const http::Options& options,
                    const std::function<Result<void>(int fd)>& consume);

}  // namespace kmodkit::fetch
