// Errors: every failure is a flowgrad::Error whose message starts with "[op]".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace flowgrad {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds "[op] part1part2..." from anything that can be streamed.
template <class... Parts>
[[noreturn]] void fail(std::string_view op, const Parts&... parts) {
  std::ostringstream message;
  message << '[' << op << "] ";
  (message << ... << parts);
  throw Error(message.str());
}

}  // namespace flowgrad
