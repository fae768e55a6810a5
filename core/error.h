// Errors: every failure is a flowgrad::Error whose message starts with "[op]".
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace flowgrad {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
// Appends one part of a message as an ostream would print it (numbers as
// with the default "%g" precision, bool as 0/1), without pulling <sstream>
// into every file that includes this header.
void append_number(std::string& message, long long value);
void append_number(std::string& message, unsigned long long value);
void append_number(std::string& message, double value);

template <class Part>
void append_part(std::string& message, const Part& part) {
  if constexpr (std::is_same_v<Part, char>) {
    message += part;
  } else if constexpr (std::is_floating_point_v<Part>) {
    append_number(message, static_cast<double>(part));
  } else if constexpr (std::is_integral_v<Part> && std::is_signed_v<Part>) {
    append_number(message, static_cast<long long>(part));
  } else if constexpr (std::is_integral_v<Part>) {
    append_number(message, static_cast<unsigned long long>(part));
  } else {
    message += std::string_view(part);  // strings, string_views, C strings
  }
}
}  // namespace detail

// Builds "[op] part1part2..." from strings, characters and numbers.
template <class... Parts>
[[noreturn]] void fail(std::string_view op, const Parts&... parts) {
  std::string message = "[";
  message += op;
  message += "] ";
  (detail::append_part(message, parts), ...);
  throw Error(message);
}

// Text from an untrusted input, fit to quote in a message: at most
// `max_chars` bytes ("..." marks a cut), non-printable bytes as \xNN.
std::string excerpt(std::string_view text, std::size_t max_chars = 80);

}  // namespace flowgrad
