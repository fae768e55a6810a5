// cross_entropy: log_softmax, the pick of the target and the mean fused in
// one pass per row; the backward is fused the same way (no softmax tensor is
// kept, only each row's log-sum-exp).
#include "loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../autograd/node.h"
#include "rows.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// cross_entropy: L = (1/K) Σ_{n not ignored} (lse_n − x[n, t_n]),
//   lse_n = log Σ_j e^(x[n, j]), K = number of non-ignored rows
// dx[n, j] = (e^(x[n, j] − lse_n) − [j = t_n]) · dL / K;  ignored rows: 0
class CrossEntropyBackward final : public Node {
 public:
  std::string_view name() const override { return "cross_entropy"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor x = logits.get();
    const Tensor lse = log_sum_exp.get();
    const std::int64_t* target = targets.get().data<std::int64_t>();
    const std::int64_t last = x.dim() - 1;
    const std::int64_t classes = x.shape()[last];
    Tensor dx = empty(x.shape(), x.dtype());
    // With every row ignored no row reads the scale, so 0/0 never spreads.
    const double scale = count > 0 ? dy.item<double>() / static_cast<double>(count) : 0.0;
    dispatch_floating(x.dtype(), "cross_entropy", [&]<class T>() {
      const T* px = x.data<T>();
      const T* plse = lse.data<T>();
      T* pdx = dx.data<T>();
      const std::int64_t sx = x.strides()[last];
      const T s = static_cast<T>(scale);
      kernels::parallel_rows<2>(
          x.shape(), last, {&x.strides(), &dx.strides()},
          [&](std::int64_t row, const std::array<std::int64_t, 2>& base) {
            const T* x_row = px + base[0];
            T* dx_row = pdx + base[1];  // contiguous
            if (target[row] == ignore_index) {
              std::fill(dx_row, dx_row + classes, T(0));
              return;
            }
            for (std::int64_t j = 0; j < classes; ++j)
              dx_row[j] = std::exp(x_row[j * sx] - plse[row]) * s;
            dx_row[target[row]] -= s;
          });
    });
    return {dx};
  }
  SavedTensor logits{this}, targets{this}, log_sum_exp{this};
  std::int64_t count = 0;
  std::int64_t ignore_index = -100;
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index) {
  if (!logits.defined() || !targets.defined())
    fail("cross_entropy", "logits and targets must be defined tensors");
  if (logits.dim() == 0)
    fail("cross_entropy", "logits must have a class dim [..., C], got a 0-dim tensor");
  if (targets.dtype() != kInt64)
    fail("cross_entropy", "targets must be int64, got ", dtype_name(targets.dtype()), " of shape ",
         shape_str(targets.shape()));
  const Shape row_shape(logits.shape().begin(), logits.shape().end() - 1);
  const std::int64_t rows = shape_numel(row_shape);
  const bool flat_targets = targets.dim() == 1 && targets.numel() == rows;
  if (targets.shape() != row_shape && !flat_targets)
    fail("cross_entropy", "logits ", shape_str(logits.shape()), " need targets of shape ",
         shape_str(row_shape), " or [", rows, "], got targets ", shape_str(targets.shape()));
  const std::int64_t classes = logits.shape().back();
  const Tensor target_values = targets.detach().contiguous();
  const std::int64_t* target = target_values.data<std::int64_t>();
  std::int64_t count = 0;
  for (std::int64_t n = 0; n < rows; ++n) {
    if (target[n] == ignore_index) continue;
    if (target[n] < 0 || target[n] >= classes)
      fail("cross_entropy", "target ", target[n], " at row ", n, " is out of range for C = ",
           classes, " classes (logits ", shape_str(logits.shape()), ", ignore_index ",
           ignore_index, ")");
    ++count;
  }

  const std::int64_t last = logits.dim() - 1;
  Tensor lse = empty(row_shape, logits.dtype());
  std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
  dispatch_floating(logits.dtype(), "cross_entropy", [&]<class T>() {
    const T* px = logits.data<T>();
    T* plse = lse.data<T>();
    const std::int64_t sx = logits.strides()[last];
    kernels::parallel_rows<1>(
        logits.shape(), last, {&logits.strides()},
        [&](std::int64_t row, const std::array<std::int64_t, 1>& base) {
          const T* x_row = px + base[0];
          if (target[row] == ignore_index) {
            plse[row] = T(0);
            return;
          }
          T row_max = -std::numeric_limits<T>::infinity();
          for (std::int64_t j = 0; j < classes; ++j) row_max = std::max(row_max, x_row[j * sx]);
          double total = 0.0;
          for (std::int64_t j = 0; j < classes; ++j) total += std::exp(x_row[j * sx] - row_max);
          const T log_total = row_max + static_cast<T>(std::log(total));
          plse[row] = log_total;
          row_loss[static_cast<std::size_t>(row)] =
              static_cast<double>(log_total) - static_cast<double>(x_row[target[row] * sx]);
        });
  });
  // Summed in row order on one thread: the same result for any thread count.
  double total_loss = 0.0;
  for (double loss : row_loss) total_loss += loss;
  const double mean_loss = count > 0 ? total_loss / static_cast<double>(count)
                                     : std::numeric_limits<double>::quiet_NaN();  // PyTorch: 0/0
  Tensor out = scalar_tensor(mean_loss, logits.dtype());
  if (auto node = autograd::make_node<CrossEntropyBackward>({logits})) {
    node->logits.save(logits);
    node->targets.save(target_values);
    node->log_sum_exp.save(lse);
    node->count = count;
    node->ignore_index = ignore_index;
    autograd::set_history(out, node);
  }
  return out;
}

}  // namespace flowgrad
