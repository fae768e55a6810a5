// linear: forward and backward as GEMMs on the rows of x.
//
//   Y = X Wᵀ + 1 bᵀ        X [N, in], W [out, in], b [out], Y [N, out]
//   dX = dY W,   dW = dYᵀ X,   db = Σ_rows dY
#include "linear.h"

#include <algorithm>

#include "../autograd/grad_mode.h"
#include "../autograd/node.h"
#include "../core/blas.h"
#include "../core/parallel.h"

namespace flowgrad {
namespace {

// A contiguous, history-free copy (or alias) of `t` viewed as [rows, cols].
Tensor dense_rows(const Tensor& t, std::int64_t cols) {
  NoGradGuard no_grad;
  Tensor dense = t.contiguous().detach();
  return dense.view({cols == 0 ? 0 : dense.numel() / cols, cols});
}

template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C = beta C
    for (std::int64_t i = 0; i < m * n; ++i) c[i] *= beta;
    return;
  }
  blas::gemm<T>(transpose_a, transpose_b, m, n, k, T(1), a, lda, b, ldb, beta, c, n);
}

// Σ_rows of g [rows, cols]: partial sums over fixed blocks of rows in
// parallel, then the partials in block order. The blocks do not depend on
// the thread count, so neither does the result.
template <class T>
Tensor column_sums(const T* g, std::int64_t rows, std::int64_t cols, DType dtype) {
  constexpr std::int64_t kRowsPerBlock = 128;
  const std::int64_t blocks = std::max<std::int64_t>(1, (rows + kRowsPerBlock - 1) / kRowsPerBlock);
  Tensor partial = zeros({blocks, cols}, dtype);
  T* partials = partial.data<T>();
  parallel_for(blocks, std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(kRowsPerBlock * cols, 1)),
               [&](std::int64_t first, std::int64_t last) {
                 for (std::int64_t b = first; b < last; ++b) {
                   T* sums = partials + b * cols;
                   for (std::int64_t r = b * kRowsPerBlock; r < std::min(rows, (b + 1) * kRowsPerBlock); ++r)
                     for (std::int64_t j = 0; j < cols; ++j) sums[j] += g[r * cols + j];
                 }
               });
  Tensor total = empty({cols}, dtype);
  T* result = total.data<T>();
  std::copy_n(partials, cols, result);
  for (std::int64_t b = 1; b < blocks; ++b)
    for (std::int64_t j = 0; j < cols; ++j) result[j] += partials[b * cols + j];
  return total;
}

class LinearBackward final : public autograd::Node {
 public:
  std::string_view name() const override { return "linear"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor x = input.get(), w = weight.get();
    const std::int64_t in = w.size(1), out = w.size(0);
    const Tensor dy_rows = dense_rows(dy, out);
    const std::int64_t rows = dy_rows.size(0);
    Tensor dx, dw, db;
    dispatch_floating(dy.dtype(), "linear", [&]<class T>() {
      const T* g = dy_rows.data<T>();
      if (next_edges()[0].node) {  // dX = dY W
        dx = empty({rows, in}, dy.dtype());
        gemm<T>(false, false, rows, in, out, g, out, w.data<T>(), in, T(0), dx.data<T>());
        dx = dx.view(next_edges()[0].shape);
      }
      if (next_edges()[1].node) {  // dW = dYᵀ X
        dw = empty({out, in}, dy.dtype());
        gemm<T>(true, false, out, in, rows, g, out, x.data<T>(), in, T(0), dw.data<T>());
      }
      if (next_edges().size() > 2 && next_edges()[2].node) db = column_sums<T>(g, rows, out, dy.dtype());
    });
    if (next_edges().size() == 2) return {dx, dw};
    return {dx, dw, db};
  }
  autograd::SavedTensor input{this}, weight{this};  // X as [N, in], W contiguous
};

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2 || x.dim() < 1 || x.size(-1) != weight.size(1))
    fail("linear", "expected x [..., in] and weight [out, in] with the same in; got x ", shape_str(x.shape()),
         " and weight ", shape_str(weight.shape()));
  if (bias.defined() && bias.shape() != Shape{weight.size(0)})
    fail("linear", "bias of shape ", shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()));
  if (x.dtype() != weight.dtype() || (bias.defined() && bias.dtype() != x.dtype()))
    fail("linear", "dtype mismatch: x ", dtype_name(x.dtype()), ", weight ", dtype_name(weight.dtype()),
         bias.defined() ? ", bias " : "", bias.defined() ? dtype_name(bias.dtype()) : "");
  const std::int64_t in = weight.size(1), out = weight.size(0);
  const Tensor x_rows = dense_rows(x, in);
  const Tensor w = dense_rows(weight, in);
  const std::int64_t rows = x_rows.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = out;
  Tensor y = empty({rows, out}, x.dtype());
  dispatch_floating(x.dtype(), "linear", [&]<class T>() {
    T* result = y.data<T>();
    if (bias.defined()) {  // every row starts as b; the GEMM adds X Wᵀ onto it
      const Tensor b = dense_rows(bias, out);
      const T* pb = b.data<T>();
      parallel_for(rows, std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(out, 1)),
                   [&](std::int64_t begin, std::int64_t end) {
                     for (std::int64_t r = begin; r < end; ++r) std::copy_n(pb, out, result + r * out);
                   });
    }
    gemm<T>(false, true, rows, out, in, x_rows.data<T>(), in, w.data<T>(), in, T(bias.defined() ? 1 : 0), result);
  });
  y = y.view(out_shape);
  TensorList inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  if (auto node = autograd::make_node<LinearBackward>(inputs)) {
    node->input.save(x_rows);
    node->weight.save(w);
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
