// Strided iteration: the loop every elementwise kernel is built on.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "shape.h"

namespace flowgrad {

// Walks the row-major flat range [begin, end) of `shape`, calling
// body(offsets) with the element offset of each of the N operands.
template <std::size_t N, class Body>
void strided_range(const Shape& shape, const std::array<const Strides*, N>& strides,
                   std::int64_t begin, std::int64_t end, Body&& body) {
  const std::size_t ndim = shape.size();
  if (ndim == 0) {
    if (begin < end) body(std::array<std::int64_t, N>{});
    return;
  }
  std::vector<std::int64_t> index(ndim);
  std::array<std::int64_t, N> offsets{};
  std::int64_t rest = begin;
  for (std::size_t d = ndim; d-- > 0;) {
    index[d] = rest % shape[d];
    rest /= shape[d];
    for (std::size_t k = 0; k < N; ++k) offsets[k] += index[d] * (*strides[k])[d];
  }
  const std::size_t last = ndim - 1;
  std::array<std::int64_t, N> inner{};
  for (std::size_t k = 0; k < N; ++k) inner[k] = (*strides[k])[last];
  for (std::int64_t i = begin; i < end;) {
    // A run along the innermost dim: constant strides, no carries.
    const std::int64_t run = std::min(shape[last] - index[last], end - i);
    for (std::int64_t r = 0; r < run; ++r) {
      body(offsets);
      for (std::size_t k = 0; k < N; ++k) offsets[k] += inner[k];
    }
    i += run;
    index[last] += run;
    if (index[last] < shape[last]) break;  // only reached when i == end
    // Carry into the outer dims.
    for (std::size_t k = 0; k < N; ++k) offsets[k] -= inner[k] * shape[last];
    index[last] = 0;
    for (std::size_t d = last; d-- > 0;) {
      if (++index[d] < shape[d]) {
        for (std::size_t k = 0; k < N; ++k) offsets[k] += (*strides[k])[d];
        break;
      }
      for (std::size_t k = 0; k < N; ++k) offsets[k] -= (*strides[k])[d] * (shape[d] - 1);
      index[d] = 0;
    }
  }
}

}  // namespace flowgrad
