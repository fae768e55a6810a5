// In-place parameter initialisers, like torch.nn.init. They run under
// NoGradGuard (so they accept parameters that require grad), draw from an
// explicit generator in row-major order, and bump the tensor's version.
#pragma once

#include <utility>

#include "../core/random.h"
#include "../core/tensor.h"

namespace flowgrad::nn::init {

// t ~ N(mean, std²).
void normal_(const Tensor& t, double std, Generator& gen, double mean = 0.0);
// t ~ U[low, high).
void uniform_(const Tensor& t, double low, double high, Generator& gen);
void zeros_(const Tensor& t);
void ones_(const Tensor& t);
void constant_(const Tensor& t, double value);

// (fan_in, fan_out) as PyTorch computes them for a weight of at least 2 dims:
// [out, in, k...] gives fan_in = in·Πk, fan_out = out·Πk.
std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t);
// t ~ U[−a, a) with a = gain·sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio).
void xavier_uniform_(const Tensor& t, Generator& gen, double gain = 1.0);
// t ~ N(0, std²) with std = gain·sqrt(2 / (fan_in + fan_out)).
void xavier_normal_(const Tensor& t, Generator& gen, double gain = 1.0);

// He et al. for (leaky) ReLU networks, as torch.nn.init: std = gain / sqrt(fan)
// with gain = sqrt(2 / (1 + a²)) (a: the leaky slope, 0 for ReLU) and fan
// fan_in (preserves the forward variance) or fan_out (the backward's).
enum class FanMode { FanIn, FanOut };
void kaiming_normal_(const Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn);
// t ~ U[−b, b) with b = sqrt(3)·std, the same std.
void kaiming_uniform_(const Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn);

}  // namespace flowgrad::nn::init
