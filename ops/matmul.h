// Matrix products with torch.matmul's semantics, computed by BLAS GEMM.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// matmul(a, b), float32 or float64 (both the same):
//   1-D · 1-D   dot product, a 0-dim result;
//   2-D · 2-D   matrix product [n, k] · [k, m] -> [n, m];
//   1-D a       treated as [1, k], the added dim removed from the result;
//   1-D b       treated as [k, 1], the added dim removed from the result;
//   N-D         [..., n, k] · [..., k, m] -> [..., n, m], batch dims broadcast.
// Transposed or strided operands reach BLAS as transpose flags and leading
// dimensions, broadcast batches as stride 0: no copies unless a matrix has
// neither a unit row nor a unit column stride. The result is contiguous.
Tensor matmul(const Tensor& a, const Tensor& b);

}  // namespace flowgrad
