// Loop helpers shared by the ops: parallel elementwise maps over strided and
// broadcast operands. Ops write only the scalar function; these handle
// layout, broadcasting and threads.
#pragma once

#include <algorithm>
#include <array>
#include <string_view>

#include "../core/parallel.h"
#include "../core/strided.h"
#include "../core/tensor.h"

namespace flowgrad::kernels {

// Strides that read `t` as if it had `shape` (NumPy broadcasting): 0 on the
// dims that are new or of size 1 in t.
Strides broadcast_strides(const Tensor& t, const Shape& shape);

using flowgrad::strided_range;

// out = f(x) elementwise, out contiguous with x's shape and dtype.
template <class F>
Tensor map_unary(const Tensor& x, std::string_view op, F f) {
  Tensor out = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    const T* in = x.data<T>();
    T* result = out.data<T>();
    if (x.is_contiguous()) {
      parallel_for(x.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) result[i] = f(in[i]);
      });
      return;
    }
    const Strides out_strides = contiguous_strides(x.shape());
    parallel_for(x.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
      strided_range<1>(x.shape(), {&x.strides()}, begin, end,
                       [&](const std::array<std::int64_t, 1>& off) { result[begin++] = f(in[off[0]]); });
    });
  });
  return out;
}

// out = f(a, b) elementwise with broadcasting; a and b must share a dtype.
template <class F>
Tensor map_binary(const Tensor& a, const Tensor& b, std::string_view op, F f) {
  if (a.dtype() != b.dtype())
    fail(op, "dtype mismatch: ", dtype_name(a.dtype()), " ", shape_str(a.shape()), " and ",
         dtype_name(b.dtype()), " ", shape_str(b.shape()));
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = empty(shape, a.dtype());
  dispatch_floating(a.dtype(), op, [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* result = out.data<T>();
    const bool a_flat = a.shape() == shape && a.is_contiguous();
    const bool b_flat = b.shape() == shape && b.is_contiguous();
    if (a_flat && (b_flat || b.numel() == 1)) {  // the common fast paths
      const std::int64_t b_step = b_flat ? 1 : 0;
      parallel_for(out.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) result[i] = f(pa[i], pb[i * b_step]);
      });
      return;
    }
    if (b_flat && a.numel() == 1) {
      parallel_for(out.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) result[i] = f(pa[0], pb[i]);
      });
      return;
    }
    const Strides sa = broadcast_strides(a, shape);
    const Strides sb = broadcast_strides(b, shape);
    parallel_for(out.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
      strided_range<2>(shape, {&sa, &sb}, begin, end,
                       [&](const std::array<std::int64_t, 2>& off) {
                         result[begin++] = f(pa[off[0]], pb[off[1]]);
                       });
    });
  });
  return out;
}

}  // namespace flowgrad::kernels
