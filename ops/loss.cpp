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

// The rows of input [..., C] and their targets, checked: int64, of shape
// [...] or [N], each in [0, C) or ignore_index. `input_name` is how the op
// calls its input in errors.
struct TargetRows {
  Tensor values;  // contiguous int64
  std::int64_t rows = 0, classes = 0, count = 0;  // count: rows not ignored
};

TargetRows check_targets(const char* op, const char* input_name, const Tensor& input, const Tensor& targets,
                         std::int64_t ignore_index) {
  if (!input.defined() || !targets.defined()) fail(op, input_name, " and targets must be defined tensors");
  if (input.dim() == 0) fail(op, input_name, " must have a class dim [..., C], got a 0-dim tensor");
  if (targets.dtype() != kInt64)
    fail(op, "targets must be int64, got ", dtype_name(targets.dtype()), " of shape ", shape_str(targets.shape()));
  const Shape row_shape(input.shape().begin(), input.shape().end() - 1);
  TargetRows t;
  t.rows = shape_numel(row_shape);
  t.classes = input.shape().back();
  const bool flat_targets = targets.dim() == 1 && targets.numel() == t.rows;
  if (targets.shape() != row_shape && !flat_targets)
    fail(op, input_name, " ", shape_str(input.shape()), " need targets of shape ", shape_str(row_shape), " or [",
         t.rows, "], got targets ", shape_str(targets.shape()));
  t.values = targets.detach().contiguous();
  const std::int64_t* target = t.values.data<std::int64_t>();
  for (std::int64_t n = 0; n < t.rows; ++n) {
    if (target[n] == ignore_index) continue;
    if (target[n] < 0 || target[n] >= t.classes)
      fail(op, "target ", target[n], " at row ", n, " is out of range for C = ", t.classes, " classes (",
           input_name, " ", shape_str(input.shape()), ", ignore_index ", ignore_index, ")");
    ++t.count;
  }
  return t;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index) {
  const TargetRows checked = check_targets("cross_entropy", "logits", logits, targets, ignore_index);
  const Shape row_shape(logits.shape().begin(), logits.shape().end() - 1);
  const std::int64_t rows = checked.rows, classes = checked.classes, count = checked.count;
  const Tensor& target_values = checked.values;
  const std::int64_t* target = target_values.data<std::int64_t>();

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

namespace {

// nll_loss: L = −(1/K) Σ_{n not ignored} x[n, t_n], K = number of non-ignored rows
// dx[n, t_n] = −dL / K;  every other element (and every ignored row): 0
class NllLossBackward final : public Node {
 public:
  std::string_view name() const override { return "nll_loss"; }
  TensorList backward(const Tensor& dy) override {
    const std::int64_t* target = targets.get().data<std::int64_t>();
    Tensor dx = zeros(shape, dtype);
    const double scale = count > 0 ? -dy.item<double>() / static_cast<double>(count) : 0.0;
    dispatch_floating(dtype, "nll_loss", [&]<class T>() {
      T* pdx = dx.data<T>();  // contiguous: row n starts at n·C
      for (std::int64_t n = 0; n < rows; ++n)
        if (target[n] != ignore_index) pdx[n * classes + target[n]] = static_cast<T>(scale);
    });
    return {dx};
  }
  SavedTensor targets{this};
  Shape shape;
  DType dtype = kFloat32;
  std::int64_t rows = 0, classes = 0, count = 0, ignore_index = -100;
};

// mse_loss: L = (1/N) Σ (x − t)²;  dx = 2(x − t) · dL / N,  dt = −dx
class MseLossBackward final : public Node {
 public:
  std::string_view name() const override { return "mse_loss"; }
  TensorList backward(const Tensor& dy) override {
    const double scale = 2.0 * dy.item<double>() / static_cast<double>(difference.get().numel());
    const Tensor dx = kernels::map_unary(difference.get(), "mse_loss", [scale](auto d) {
      return d * static_cast<decltype(d)>(scale);
    });
    Tensor dt;
    if (next_edges()[1].node) dt = kernels::map_unary(dx, "mse_loss", [](auto v) { return -v; });
    return {dx, dt};
  }
  SavedTensor difference{this};  // x − t
};

}  // namespace

Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, std::int64_t ignore_index) {
  const TargetRows checked = check_targets("nll_loss", "log_probs", log_probs, targets, ignore_index);
  if (!is_floating(log_probs.dtype()))
    fail("nll_loss", "log_probs must be float32 or float64, got ", dtype_name(log_probs.dtype()), " ",
         shape_str(log_probs.shape()));
  const std::int64_t* target = checked.values.data<std::int64_t>();
  const Tensor x = log_probs.detach().contiguous();
  double total = 0.0;  // in row order: the same for any thread count
  dispatch_floating(x.dtype(), "nll_loss", [&]<class T>() {
    const T* px = x.data<T>();
    for (std::int64_t n = 0; n < checked.rows; ++n)
      if (target[n] != ignore_index) total -= static_cast<double>(px[n * checked.classes + target[n]]);
  });
  const double mean = checked.count > 0 ? total / static_cast<double>(checked.count)
                                        : std::numeric_limits<double>::quiet_NaN();  // PyTorch: 0/0
  Tensor out = scalar_tensor(mean, log_probs.dtype());
  if (auto node = autograd::make_node<NllLossBackward>({log_probs})) {
    node->targets.save(checked.values);
    node->shape = log_probs.shape();
    node->dtype = log_probs.dtype();
    node->rows = checked.rows;
    node->classes = checked.classes;
    node->count = checked.count;
    node->ignore_index = ignore_index;
    autograd::set_history(out, node);
  }
  return out;
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  if (!input.defined() || !target.defined()) fail("mse_loss", "input and target must be defined tensors");
  if (input.shape() != target.shape() || input.dtype() != target.dtype() || !is_floating(input.dtype()))
    fail("mse_loss", "input and target must have the same shape and float dtype; got input ",
         dtype_name(input.dtype()), " ", shape_str(input.shape()), " and target ", dtype_name(target.dtype()), " ",
         shape_str(target.shape()));
  if (input.numel() == 0) fail("mse_loss", "input ", shape_str(input.shape()), " has no element to average");
  const Tensor difference = kernels::map_binary(input.detach(), target.detach(), "mse_loss",
                                                [](auto x, auto t) { return x - t; });
  double total = 0.0;
  for (const double d : difference.to_vector<double>()) total += d * d;
  Tensor out = scalar_tensor(total / static_cast<double>(input.numel()), input.dtype());
  if (auto node = autograd::make_node<MseLossBackward>({input, target})) {
    node->difference.save(difference);
    autograd::set_history(out, node);
  }
  return out;
}

}  // namespace flowgrad
