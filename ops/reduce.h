// Reductions over one or several dims (negative dims count from the end),
// and cumulative sums.
#pragma once

#include <vector>

#include "../core/tensor.h"

namespace flowgrad {

// Sum over `dims` (all dims when empty); keepdim leaves them as size 1.
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
// Maximum over `dims`; the gradient goes to the first arg-max of each slice.
// A slice containing NaN has max NaN (and its gradient goes to that NaN).
Tensor max(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
// Minimum over `dims`, the same way (first arg-min; NaN propagates).
Tensor min(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false);
// Index (int64) of the first maximum (minimum) along `dim`, or in the
// flattened tensor (a 0-dim result) without it; NaN counts as the maximum and
// the minimum, as in PyTorch. Not differentiable.
Tensor argmax(const Tensor& x);
Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x);
Tensor argmin(const Tensor& x, std::int64_t dim, bool keepdim = false);

// Sums a broadcast result back to `shape` (the reverse of broadcasting):
// what a broadcast input's gradient needs.
Tensor sum_to(const Tensor& x, const Shape& shape);

// Inclusive cumulative sum along `dim`; reverse = true sums from the end
// (y_i = sum_{j >= i} x_j), which is also cumsum's backward.
Tensor cumsum(const Tensor& x, std::int64_t dim, bool reverse = false);

}  // namespace flowgrad
