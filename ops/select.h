// Comparisons, masks and selection. flowgrad has no bool dtype: a mask is a
// tensor of 0 and 1 in its operands' dtype, and any nonzero value of a
// condition counts as true (int64 conditions are accepted too).
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// Elementwise comparisons with broadcasting -> 1 where true, 0 elsewhere.
// Not differentiable (the result never requires grad). NaN compares unequal.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);

// condition ? a : b elementwise, the three broadcast together; a and b share
// a float dtype. Differentiable in a and b (the gradient goes to the side
// each element came from); never NaN from the side not taken.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);

// x with `value` where mask is nonzero; mask broadcasts to x's shape.
// Differentiable in x (zero gradient where filled).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// |a − b| <= atol + rtol·|b| everywhere (broadcast); NaNs are equal only
// with equal_nan. As torch.allclose.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8,
              bool equal_nan = false);

}  // namespace flowgrad
