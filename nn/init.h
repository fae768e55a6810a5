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

}  // namespace flowgrad::nn::init
