// Joining and splitting tensors along a dim (negative dims count from the end).
#pragma once

#include <vector>

#include "../core/tensor.h"

namespace flowgrad {

// Joins tensors of equal shape except along `dim` (same ndim and dtype).
Tensor concat(const TensorList& tensors, std::int64_t dim = 0);
Tensor cat(const TensorList& tensors, std::int64_t dim = 0);  // same as concat
// Joins tensors of one shape along a new dim inserted at `dim`.
Tensor stack(const TensorList& tensors, std::int64_t dim = 0);

// Views (narrow) of consecutive pieces of `split_size` along dim; the last
// piece is smaller when the size is not a multiple. Differentiable through
// narrow, so they need no backward of their own.
TensorList split(const Tensor& x, std::int64_t split_size, std::int64_t dim = 0);
// Pieces of the given sizes, which must add up to x.size(dim).
TensorList split_with_sizes(const Tensor& x, const std::vector<std::int64_t>& sizes,
                            std::int64_t dim = 0);
// At most `chunks` pieces of ceil(size / chunks) each (fewer when the size
// does not allow `chunks` non-empty pieces, like PyTorch).
TensorList chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim = 0);

}  // namespace flowgrad
