#include "flags.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>

namespace examples {

namespace {

// 2^40 reads better than 1099511627776 in a message.
std::string bound_text(std::int64_t value) {
  if (value == kMaxCount) return "2^40";
  if (value == std::numeric_limits<std::int64_t>::max()) return "2^63-1";
  return std::to_string(value);
}

bool plain_integer_text(const std::string& text) {
  const std::size_t digits = !text.empty() && text[0] == '-' ? 1 : 0;
  if (text.size() == digits) return false;
  for (std::size_t i = digits; i < text.size(); ++i)
    if (text[i] < '0' || text[i] > '9') return false;
  return true;
}

}  // namespace

CLI::Validator integer_in(std::int64_t min, std::int64_t max) {
  const std::string range = "from " + bound_text(min) + " to " + bound_text(max);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        std::int64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (!plain_integer_text(text) || error != std::errc() || end != text.data() + text.size() || value < min ||
            value > max)
          return text + " is not an integer " + range;
        text = std::to_string(value);  // decimal: CLI11 would read "010" as octal
        return {};
      },
      "INT " + range);
}

CLI::Validator unsigned_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (!plain_integer_text(text) || text[0] == '-' || error != std::errc() || end != text.data() + text.size())
          return text + " is not an integer from 0 to 2^64-1";
        text = std::to_string(value);
        return {};
      },
      "UINT from 0 to 2^64-1");
}

CLI::Validator real_in(double min, double max, bool max_open) {
  auto number = [](double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  };
  const std::string range = "from " + number(min) + " to " + number(max) + (max_open ? " (excluded)" : "");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || value < min ||
            value > max || (max_open && value == max))
          return text + " is not a number " + range;
        return {};
      },
      "NUMBER " + range);
}

CLI::Validator thread_count() { return integer_in(0, flowgrad::kMaxThreads); }

void add_run_flags(CLI::App* command, RunOptions& options) {
  command->add_option("--out", options.out, "directory for log.csv and checkpoint.safetensors");
  command->add_option("--resume", options.resume, "checkpoint to continue from");
  command->add_flag("--overwrite", options.overwrite,
                    "a new run may replace the checkpoint and log already in --out (otherwise refused)");
  command->add_flag("--allow-nonfinite", options.allow_nonfinite,
                    "train on when the loss, a gradient or a parameter is NaN or infinite (otherwise an error)");
}

}  // namespace examples
