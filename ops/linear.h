// The affine map of a Linear layer as one op: y = x Wᵀ + b.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// x [..., in], weight [out, in] (PyTorch's layout), bias [out] or undefined
// -> [..., out]. The bias is written first and the product added onto it by
// one GEMM; the backward is two GEMMs and a column sum.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace flowgrad
