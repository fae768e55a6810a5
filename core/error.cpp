#include "error.h"

#include <cstdio>

namespace flowgrad::detail {

// snprintf rather than std::to_string, whose inlined copy GCC 12 warns
// about (-Wrestrict, a false positive) with -fno-math-errno.
void append_number(std::string& message, long long value) {
  char text[24];  // 20 digits and a sign
  std::snprintf(text, sizeof text, "%lld", value);
  message += text;
}

void append_number(std::string& message, unsigned long long value) {
  char text[24];
  std::snprintf(text, sizeof text, "%llu", value);
  message += text;
}

void append_number(std::string& message, double value) {
  char text[32];  // "%g" needs at most 13 characters (-1.23457e+308)
  std::snprintf(text, sizeof text, "%g", value);
  message += text;
}

}  // namespace flowgrad::detail

namespace flowgrad {

std::string excerpt(std::string_view text, std::size_t max_chars) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > max_chars) out += "...";
  return out;
}

}  // namespace flowgrad
