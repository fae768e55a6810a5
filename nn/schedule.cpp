#include "schedule.h"

#include <cmath>
#include <numbers>

#include "../core/error.h"

namespace flowgrad::nn {

namespace {

void check_step(const char* schedule, std::int64_t step) {
  if (step < 0) fail(schedule, "step must be >= 0, got ", step);
}

}  // namespace

ConstantLR::ConstantLR(double lr_) : lr(lr_) {
  if (!(lr >= 0.0) || !std::isfinite(lr)) fail("ConstantLR", "lr must be finite and >= 0, got ", lr);
}

double ConstantLR::lr_at(std::int64_t step) const {
  check_step("ConstantLR", step);
  return lr;
}

WarmupCosineLR::WarmupCosineLR(double max_lr_, double min_lr_, std::int64_t warmup_steps_,
                               std::int64_t total_steps_)
    : max_lr(max_lr_), min_lr(min_lr_), warmup_steps(warmup_steps_), total_steps(total_steps_) {
  if (!(min_lr >= 0.0) || !std::isfinite(max_lr) || !(max_lr >= min_lr))
    fail("WarmupCosineLR", "expected finite 0 <= min_lr <= max_lr, got min_lr ", min_lr, " and max_lr ",
         max_lr);
  if (warmup_steps < 0 || total_steps < warmup_steps)
    fail("WarmupCosineLR", "expected 0 <= warmup_steps <= total_steps, got warmup_steps ", warmup_steps,
         " and total_steps ", total_steps);
}

double WarmupCosineLR::lr_at(std::int64_t step) const {
  check_step("WarmupCosineLR", step);
  if (step < warmup_steps)
    return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return min_lr;
  const double ratio =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + 0.5 * (1.0 + std::cos(std::numbers::pi * ratio)) * (max_lr - min_lr);
}

}  // namespace flowgrad::nn
