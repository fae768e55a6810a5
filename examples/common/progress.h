// A progress line for training loops: step, loss, throughput and ETA,
// redrawn in place on a terminal, printed as plain lines every
// `plain_every` steps otherwise (logs, CI).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

namespace examples {

class Progress {
 public:
  // `unit` names what items_per_second counts ("tok/s", "img/s", ...).
  Progress(std::int64_t total_steps, std::int64_t first_step = 0, std::int64_t plain_every = 10,
           std::string unit = "tok/s")
      : total_(total_steps), first_(first_step), plain_every_(plain_every), unit_(std::move(unit)),
        terminal_(isatty(fileno(stdout)) != 0), start_(std::chrono::steady_clock::now()) {}

  // `step` is the number of completed steps; `extra` is appended (e.g. "val
  // 1.53"); a model FLOPs utilisation `mfu` (a fraction) follows the rate.
  void update(std::int64_t step, double loss, double items_per_second, const std::string& extra = "",
              double mfu = std::nan("")) {
    const double elapsed = seconds();
    const double per_step = step > first_ ? elapsed / static_cast<double>(step - first_) : 0.0;
    const double eta = per_step * static_cast<double>(total_ - step);
    char line[256];
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * step / total_) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    char utilisation[32] = "";
    if (!std::isnan(mfu)) std::snprintf(utilisation, sizeof utilisation, "  MFU %.0f%%", 100 * mfu);
    std::snprintf(line, sizeof line, "[%s] step %lld/%lld  loss %.4f  %.0f %s%s  ETA %s%s%s", bar.c_str(),
                  static_cast<long long>(step), static_cast<long long>(total_), loss, items_per_second, unit_.c_str(),
                  utilisation, format_duration(eta).c_str(), extra.empty() ? "" : "  ", extra.c_str());
    if (terminal_) {
      std::printf("\r\033[K%s", line);
      if (step >= total_) std::printf("\n");
    } else if (step % plain_every_ == 0 || step >= total_ || !extra.empty()) {
      std::printf("%s\n", line);
    }
    std::fflush(stdout);
  }

  // Prints a message on its own line without breaking the progress line.
  void message(const std::string& text) {
    std::printf(terminal_ ? "\r\033[K%s\n" : "%s\n", text.c_str());
    std::fflush(stdout);
  }

  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  static std::string format_duration(double seconds) {
    const long total = static_cast<long>(seconds + 0.5);
    char text[32];
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", total / 3600, total / 60 % 60, total % 60);
    return text;
  }

  std::int64_t total_, first_, plain_every_;
  std::string unit_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace examples
