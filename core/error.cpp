#include "error.h"

#include <cstdio>

namespace flowgrad::detail {

void append_number(std::string& message, long long value) { message += std::to_string(value); }

void append_number(std::string& message, unsigned long long value) { message += std::to_string(value); }

void append_number(std::string& message, double value) {
  char text[32];  // "%g" needs at most 13 characters (-1.23457e+308)
  std::snprintf(text, sizeof text, "%g", value);
  message += text;
}

}  // namespace flowgrad::detail
