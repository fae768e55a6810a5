// Layer normalisation over the last dim.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// y = (x − mean) / sqrt(var + eps) · weight + bias, with mean and the biased
// variance taken over the last dim of x [..., C]. weight and bias have shape
// [C]; either may be an undefined Tensor() (no scale / no shift).
Tensor layer_norm(const Tensor& x, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  double eps = 1e-5);

}  // namespace flowgrad
