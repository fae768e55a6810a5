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

// The slices of x at `index` (int64, 1-D) along dim: y.size(dim) = index.numel().
// Differentiable in x (repeated indices add their gradients).
Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index);

// y[..., i, ...] = x[..., index[..., i, ...], ...] along dim: index (int64)
// has x's number of dims and no larger size on the others; y has index's
// shape. Differentiable in x (scatter-add of the gradient).
Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index);

// The k largest (or smallest) elements along dim and their indices (int64),
// largest first (smallest first); ties in index order, NaN counts as the
// largest. values is differentiable in x (as gather(x, dim, indices)).
struct TopK {
  Tensor values, indices;
};
TopK topk(const Tensor& x, std::int64_t k, std::int64_t dim = -1, bool largest = true);

// |a − b| <= atol + rtol·|b| everywhere (broadcast); NaNs are equal only
// with equal_nan. As torch.allclose.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8,
              bool equal_nan = false);

}  // namespace flowgrad
