// Row-wise loops for ops that work on one dim at a time (softmax, layer_norm,
// cross_entropy): every index of the other dims names one "row" of
// shape[dim] elements. Rows are independent, so they run in parallel, each
// written by exactly one task (deterministic).
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "kernels.h"

namespace flowgrad::kernels {

// `strides` without the entry of `dim`: the strides that step between rows.
inline Strides outer_strides(const Strides& strides, std::int64_t dim) {
  Strides outer = strides;
  outer.erase(outer.begin() + dim);
  return outer;
}

// Calls body(row, bases) for every row of `shape` along `dim`, where bases[k]
// is the element offset of the row's first element in operand k (the row's
// elements are then bases[k] + i * strides[k][dim]). `dim` must be valid.
template <std::size_t N, class Body>
void parallel_rows(const Shape& shape, std::int64_t dim, const std::array<const Strides*, N>& strides,
                   Body&& body) {
  Shape outer_shape = shape;
  outer_shape.erase(outer_shape.begin() + dim);
  std::array<Strides, N> outer;
  std::array<const Strides*, N> outer_ptrs;
  for (std::size_t k = 0; k < N; ++k) {
    outer[k] = outer_strides(*strides[k], dim);
    outer_ptrs[k] = &outer[k];
  }
  const std::int64_t rows = shape_numel(outer_shape);
  const std::int64_t length = std::max<std::int64_t>(shape[dim], 1);
  const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / length);
  parallel_for(rows, grain, [&](std::int64_t begin, std::int64_t end) {
    std::int64_t row = begin;
    strided_range<N>(outer_shape, outer_ptrs, begin, end,
                     [&](const std::array<std::int64_t, N>& bases) { body(row++, bases); });
  });
}

}  // namespace flowgrad::kernels
