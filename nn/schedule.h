// Learning-rate schedules: lr_at(step) for step = 0, 1, 2, ... (the number of
// optimizer steps taken so far). The training loop applies them itself:
//   optimizer.set_lr(schedule.lr_at(step)); optimizer.step();
#pragma once

#include <cstdint>

namespace flowgrad::nn {

class LRSchedule {
 public:
  virtual ~LRSchedule() = default;
  virtual double lr_at(std::int64_t step) const = 0;
};

class ConstantLR final : public LRSchedule {
 public:
  explicit ConstantLR(double lr);
  double lr_at(std::int64_t step) const override;

  const double lr;
};

// Linear warm-up, then a cosine decay to min_lr (as in nanoGPT):
//   step < warmup_steps:            max_lr · (step + 1) / warmup_steps
//   warmup_steps <= step < total:   min_lr + ½ (1 + cos(π r)) (max_lr − min_lr),
//                                   r = (step − warmup_steps) / (total_steps − warmup_steps)
//   step >= total_steps:            min_lr
// So the last warm-up step reaches max_lr, and so does the first decay step.
class WarmupCosineLR final : public LRSchedule {
 public:
  WarmupCosineLR(double max_lr, double min_lr, std::int64_t warmup_steps, std::int64_t total_steps);
  double lr_at(std::int64_t step) const override;

  const double max_lr, min_lr;
  const std::int64_t warmup_steps, total_steps;
};

}  // namespace flowgrad::nn
