// softmax / log_softmax: one fused pass per row for the forward (max, sum of
// exponentials, normalise) and one for the backward (a row dot product, then
// the update). Rows along any dim of any strided input; outputs contiguous.
#include "softmax.h"

#include <cmath>
#include <limits>

#include "../autograd/node.h"
#include "rows.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// Writes softmax (or log_softmax) of x along `dim` into y (same shape).
void softmax_forward_kernel(const Tensor& x, const Tensor& y, std::int64_t dim, bool log,
                            const char* op) {
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const std::int64_t length = x.shape()[dim];
    const std::int64_t sx = x.strides()[dim];
    const std::int64_t sy = y.strides()[dim];
    kernels::parallel_rows<2>(
        x.shape(), dim, {&x.strides(), &y.strides()},
        [&](std::int64_t, const std::array<std::int64_t, 2>& base) {
          const T* row = in + base[0];
          T* result = out + base[1];
          T row_max = -std::numeric_limits<T>::infinity();
          for (std::int64_t i = 0; i < length; ++i) row_max = std::max(row_max, row[i * sx]);
          // A NaN input leaves row_max alone but makes total NaN, so it still
          // reaches every output of its row. Accumulate in double: rows can be long.
          double total = 0.0;
          for (std::int64_t i = 0; i < length; ++i) {
            const T e = std::exp(row[i * sx] - row_max);
            if (!log) result[i * sy] = e;
            total += static_cast<double>(e);
          }
          if (log) {
            const T log_total = row_max + static_cast<T>(std::log(total));
            for (std::int64_t i = 0; i < length; ++i) result[i * sy] = row[i * sx] - log_total;
          } else {
            const T inverse = static_cast<T>(1.0 / total);
            for (std::int64_t i = 0; i < length; ++i) result[i * sy] *= inverse;
          }
        });
  });
}

// softmax:     y = softmax(x);      dx = y ⊙ (dy − Σ_j dy_j y_j)
// log_softmax: y = log_softmax(x);  dx = dy − e^y · Σ_j dy_j      (e^y = softmax(x))
// Both formulas reduce over the same row as the forward: one pass per row.
class SoftmaxBackward final : public Node {
 public:
  SoftmaxBackward() = default;
  std::string_view name() const override { return log ? "log_softmax" : "softmax"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor y = output.get();
    Tensor dx = empty(y.shape(), y.dtype());
    if (dy.dtype() != y.dtype())
      fail(name(), "gradient dtype ", dtype_name(dy.dtype()), " differs from output dtype ",
           dtype_name(y.dtype()));
    dispatch_floating(y.dtype(), name(), [&]<class T>() {
      const T* py = y.data<T>();
      const T* pdy = dy.data<T>();
      T* pdx = dx.data<T>();
      const std::int64_t length = y.shape()[dim];
      const std::int64_t sy = y.strides()[dim];
      const std::int64_t sdy = dy.strides()[dim];
      const std::int64_t sdx = dx.strides()[dim];
      kernels::parallel_rows<3>(
          y.shape(), dim, {&y.strides(), &dy.strides(), &dx.strides()},
          [&](std::int64_t, const std::array<std::int64_t, 3>& base) {
            const T* y_row = py + base[0];
            const T* dy_row = pdy + base[1];
            T* dx_row = pdx + base[2];
            double total = 0.0;
            for (std::int64_t i = 0; i < length; ++i)
              total += log ? static_cast<double>(dy_row[i * sdy])
                           : static_cast<double>(dy_row[i * sdy]) * y_row[i * sy];
            const T dot = static_cast<T>(total);
            for (std::int64_t i = 0; i < length; ++i) {
              const T yi = y_row[i * sy];
              dx_row[i * sdx] = log ? dy_row[i * sdy] - std::exp(yi) * dot : yi * (dy_row[i * sdy] - dot);
            }
          });
    });
    return {dx};
  }
  SavedTensor output{this};
  std::int64_t dim = 0;
  bool log = false;
};

Tensor softmax_impl(const Tensor& x, std::int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  if (!x.defined()) fail(op, "input is an undefined tensor");
  if (x.dim() == 0) {  // a scalar is a row of one element, as in PyTorch
    normalize_dim(dim, 1, op);
    return softmax_impl(x.reshape({1}), 0, log).reshape({});
  }
  const std::int64_t d = normalize_dim(dim, x.dim(), op);
  Tensor y = empty(x.shape(), x.dtype());
  softmax_forward_kernel(x, y, d, log, op);
  if (auto node = autograd::make_node<SoftmaxBackward>({x})) {
    node->dim = d;
    node->log = log;
    node->output.save(y);
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, std::int64_t dim) { return softmax_impl(x, dim, false); }

Tensor log_softmax(const Tensor& x, std::int64_t dim) { return softmax_impl(x, dim, true); }

}  // namespace flowgrad
