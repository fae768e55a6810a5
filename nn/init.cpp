#include "init.h"

#include <cmath>
#include <utility>

#include "../autograd/grad_mode.h"
#include "../ops/elementwise.h"

namespace flowgrad::nn::init {

namespace {

void check_target(const char* op, const Tensor& t) {
  if (!t.defined()) fail(op, "the tensor is undefined");
  if (!is_floating(t.dtype()))
    fail(op, "expected a float32 or float64 tensor, got ", dtype_name(t.dtype()));
}

// Values are drawn into a fresh tensor and copied in, so views and
// non-contiguous tensors are filled in their row-major order.
void assign(const Tensor& t, const Tensor& values) {
  NoGradGuard no_grad;
  copy_(t, values);
}

}  // namespace

void normal_(const Tensor& t, double std, Generator& gen, double mean) {
  check_target("normal_", t);
  if (!(std >= 0.0) || !std::isfinite(std)) fail("normal_", "std must be finite and >= 0, got ", std);
  assign(t, randn(t.shape(), gen, t.dtype(), mean, std));
}

void uniform_(const Tensor& t, double low, double high, Generator& gen) {
  check_target("uniform_", t);
  if (!(low < high)) fail("uniform_", "expected low < high, got ", low, " and ", high);
  assign(t, rand(t.shape(), gen, t.dtype(), low, high));
}

void constant_(const Tensor& t, double value) {
  check_target("constant_", t);
  NoGradGuard no_grad;
  fill_(t, value);
}

void zeros_(const Tensor& t) { constant_(t, 0.0); }
void ones_(const Tensor& t) { constant_(t, 1.0); }

std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t) {
  if (!t.defined() || t.dim() < 2)
    fail("fan_in_and_fan_out", "needs a tensor of at least 2 dims, got shape ",
         t.defined() ? shape_str(t.shape()) : std::string("(undefined)"));
  std::int64_t receptive = 1;
  for (std::int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

void xavier_uniform_(const Tensor& t, Generator& gen, double gain) {
  check_target("xavier_uniform_", t);
  if (t.dim() < 2)
    fail("xavier_uniform_", "needs a weight of at least 2 dims, got shape ", shape_str(t.shape()));
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  if (fan_in + fan_out == 0) return;  // nothing to fill
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  if (!(bound > 0.0)) fail("xavier_uniform_", "gain must be positive, got ", gain);
  uniform_(t, -bound, bound, gen);
}

void xavier_normal_(const Tensor& t, Generator& gen, double gain) {
  check_target("xavier_normal_", t);
  if (t.dim() < 2) fail("xavier_normal_", "needs a weight of at least 2 dims, got shape ", shape_str(t.shape()));
  if (!(gain > 0.0)) fail("xavier_normal_", "gain must be positive, got ", gain);
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  if (fan_in + fan_out == 0) return;  // nothing to fill
  normal_(t, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), gen);
}

namespace {

// The std of He initialisation, checked.
double kaiming_std(const char* op, const Tensor& t, double a, FanMode mode) {
  check_target(op, t);
  if (t.dim() < 2) fail(op, "needs a weight of at least 2 dims, got shape ", shape_str(t.shape()));
  if (!std::isfinite(a)) fail(op, "the leaky slope a must be finite, got ", a);
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  const std::int64_t fan = mode == FanMode::FanIn ? fan_in : fan_out;
  if (fan == 0) return 0.0;  // an empty weight: nothing to fill
  return std::sqrt(2.0 / (1.0 + a * a)) / std::sqrt(static_cast<double>(fan));
}

}  // namespace

void kaiming_normal_(const Tensor& t, Generator& gen, double a, FanMode mode) {
  const double std = kaiming_std("kaiming_normal_", t, a, mode);
  if (std > 0.0) normal_(t, std, gen);
}

void kaiming_uniform_(const Tensor& t, Generator& gen, double a, FanMode mode) {
  const double bound = std::sqrt(3.0) * kaiming_std("kaiming_uniform_", t, a, mode);
  if (bound > 0.0) uniform_(t, -bound, bound, gen);
}

}  // namespace flowgrad::nn::init
