// Reductions. A reduction splits the input's dims into kept dims (one output
// element per index) and reduced dims (folded into that element).
#include "reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include <tbb/blocked_range.h>
#include <tbb/parallel_reduce.h>

#include "../autograd/node.h"
#include "elementwise.h"
#include "kernels.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

struct ReductionPlan {
  Shape kept_shape, reduced_shape;      // the input's dims, split
  Strides kept_strides, reduced_strides;
  Strides kept_dense, reduced_dense;    // the same dims in a contiguous tensor of x's shape
  Shape keepdim_shape;                  // output shape with size-1 reduced dims
  Shape out_shape;                      // as requested by keepdim
  std::vector<bool> is_reduced;
};

ReductionPlan plan_reduction(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim,
                             const char* op) {
  ReductionPlan plan;
  const std::int64_t ndim = x.dim();
  plan.is_reduced.assign(static_cast<std::size_t>(ndim), dims.empty());
  for (std::int64_t dim : dims) {
    std::int64_t d = normalize_dim(dim, ndim, op);
    if (plan.is_reduced[d]) fail(op, "dim ", dim, " appears twice in the reduced dims");
    plan.is_reduced[d] = true;
  }
  const Strides dense = contiguous_strides(x.shape());
  for (std::int64_t d = 0; d < ndim; ++d) {
    if (plan.is_reduced[d]) {
      plan.reduced_shape.push_back(x.shape()[d]);
      plan.reduced_strides.push_back(x.strides()[d]);
      plan.reduced_dense.push_back(dense[d]);
      plan.keepdim_shape.push_back(1);
      if (keepdim) plan.out_shape.push_back(1);
    } else {
      plan.kept_shape.push_back(x.shape()[d]);
      plan.kept_strides.push_back(x.strides()[d]);
      plan.kept_dense.push_back(dense[d]);
      plan.keepdim_shape.push_back(x.shape()[d]);
      plan.out_shape.push_back(x.shape()[d]);
    }
  }
  return plan;
}

// True when the elements of `shape` under `strides` form one unit-stride
// run in row-major order (flat index j at offset j).
bool is_unit_stride_run(const Shape& shape, const Strides& strides) {
  std::int64_t expected = 1;
  for (std::size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

// Sums of float tensors accumulate in double, so float32 sums of millions
// of elements stay accurate. Deterministic for a given thread count and
// also across thread counts: the chunking depends only on sizes.
Tensor sum_kernel(const Tensor& x, const ReductionPlan& plan) {
  Tensor out = empty(plan.out_shape, x.dtype());
  const std::int64_t n_out = shape_numel(plan.kept_shape);
  const std::int64_t n_reduced = shape_numel(plan.reduced_shape);
  dispatch_floating(x.dtype(), "sum", [&]<class T>() {
    const T* in = x.data<T>();
    T* result = out.data<T>();
    const bool unit_stride = is_unit_stride_run(plan.reduced_shape, plan.reduced_strides);
    auto sum_range = [&](std::int64_t base, std::int64_t begin, std::int64_t end) {
      if (unit_stride) {  // four partial sums break the chain of dependent adds
        double lanes[4] = {0.0, 0.0, 0.0, 0.0};
        std::int64_t j = begin;
        for (; j + 4 <= end; j += 4)
          for (int lane = 0; lane < 4; ++lane) lanes[lane] += static_cast<double>(in[base + j + lane]);
        for (; j < end; ++j) lanes[0] += static_cast<double>(in[base + j]);
        return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
      }
      double acc = 0.0;
      if (begin == end) return acc;  // strided_range cannot start inside a zero-size shape
      kernels::strided_range<1>(plan.reduced_shape, {&plan.reduced_strides}, begin, end,
                                [&](const std::array<std::int64_t, 1>& off) {
                                  acc += static_cast<double>(in[base + off[0]]);
                                });
      return acc;
    };
    const Strides& kept_strides = plan.kept_strides;
    if (n_out != 1 || n_reduced <= kParallelGrain) {
      const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(n_reduced, 1));
      parallel_for(n_out, grain, [&](std::int64_t begin, std::int64_t end) {
        std::int64_t i = begin;
        kernels::strided_range<1>(plan.kept_shape, {&kept_strides}, begin, end,
                                  [&](const std::array<std::int64_t, 1>& base) {
                                    result[i++] = static_cast<T>(sum_range(base[0], 0, n_reduced));
                                  });
      });
      return;
    }
    // One output, many inputs: split the reduced range itself.
    double total = tbb::parallel_deterministic_reduce(
        tbb::blocked_range<std::int64_t>(0, n_reduced, kParallelGrain), 0.0,
        [&](const tbb::blocked_range<std::int64_t>& r, double acc) {
          return acc + sum_range(0, r.begin(), r.end());
        },
        [](double a, double b) { return a + b; });
    result[0] = static_cast<T>(total);
  });
  return out;
}

// sum: y = Σ_reduced x;  dx = dy broadcast back over the reduced dims
class SumBackward final : public Node {
 public:
  std::string_view name() const override { return "sum"; }
  TensorList backward(const Tensor& dy) override {
    return {dy.reshape(keepdim_shape).expand(next_edges()[0].shape)};
  }
  Shape keepdim_shape;
};

}  // namespace

Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  ReductionPlan plan = plan_reduction(x, dims, keepdim, "sum");
  Tensor y = sum_kernel(x, plan);
  if (auto node = autograd::make_node<SumBackward>({x})) {
    node->keepdim_shape = plan.keepdim_shape;
    autograd::set_history(y, node);
  }
  return y;
}

namespace {

// mean: y = sum(x) / n;  dx = dy / n broadcast back over the reduced dims
// (n = number of elements reduced into each output)
class MeanBackward final : public Node {
 public:
  std::string_view name() const override { return "mean"; }
  TensorList backward(const Tensor& dy) override {
    return {(dy * (1.0 / static_cast<double>(count))).reshape(keepdim_shape).expand(next_edges()[0].shape)};
  }
  Shape keepdim_shape;
  std::int64_t count = 0;
};

}  // namespace

Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  ReductionPlan plan = plan_reduction(x, dims, keepdim, "mean");
  const std::int64_t n = shape_numel(plan.reduced_shape);
  if (n == 0) fail("mean", "mean over zero elements of shape ", shape_str(x.shape()));
  Tensor y = kernels::map_unary(sum_kernel(x, plan), "mean",
                                [n](auto total) { return total * (1 / static_cast<decltype(total)>(n)); });
  if (auto node = autograd::make_node<MeanBackward>({x})) {
    node->keepdim_shape = plan.keepdim_shape;
    node->count = n;
    autograd::set_history(y, node);
  }
  return y;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const std::int64_t lead = x.dim() - static_cast<std::int64_t>(shape.size());
  if (lead < 0) fail("sum_to", "cannot sum shape ", shape_str(x.shape()), " to ", shape_str(shape));
  std::vector<std::int64_t> dims;
  for (std::int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      dims.push_back(d);
    } else if (shape[d - lead] != x.shape()[d]) {
      fail("sum_to", "cannot sum shape ", shape_str(x.shape()), " to ", shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, /*keepdim=*/true).reshape(shape);
}

// ---- max, min, argmax, argmin ----

namespace {

enum class Extreme { Max, Min };

// The running maximum (or minimum) of a slice and the dense offset (in a
// contiguous tensor of x's shape) where it was first seen. Ties keep the
// earlier position, so the gradient goes to the first arg-max; a NaN wins and
// stays, so max and min propagate NaN as in PyTorch.
template <class T, Extreme kind>
struct RunningMax {
  T value{};
  std::int64_t position = -1;  // -1 while nothing was offered

  void offer(T candidate, std::int64_t candidate_position) {
    const bool beyond = kind == Extreme::Max ? candidate > value : candidate < value;
    const bool better = position < 0 || (!std::isnan(value) && (beyond || std::isnan(candidate)));
    if (better) {
      value = candidate;
      position = candidate_position;
    }
  }
  // `later` scanned positions that all come after this one's.
  void merge(const RunningMax& later) {
    if (later.position >= 0) offer(later.value, later.position);
  }
};

struct MaxResult {
  Tensor values;
  std::vector<std::int64_t> argmax;  // per output element, dense offset in x
};

template <Extreme kind>
MaxResult max_kernel(const Tensor& x, const ReductionPlan& plan, const char* op) {
  const std::int64_t n_out = shape_numel(plan.kept_shape);
  const std::int64_t n_reduced = shape_numel(plan.reduced_shape);
  MaxResult result{empty(plan.out_shape, x.dtype()), std::vector<std::int64_t>(n_out)};
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    using Running = RunningMax<T, kind>;
    const T* in = x.data<T>();
    T* values = result.values.data<T>();
    // Scans positions [begin, end) of the slice whose first element is at
    // offset `base` (dense offset `dense_base`).
    auto scan = [&](std::int64_t base, std::int64_t dense_base, std::int64_t begin, std::int64_t end) {
      Running best;
      kernels::strided_range<2>(plan.reduced_shape, {&plan.reduced_strides, &plan.reduced_dense},
                                begin, end, [&](const std::array<std::int64_t, 2>& off) {
                                  best.offer(in[base + off[0]], dense_base + off[1]);
                                });
      return best;
    };
    auto store = [&](std::int64_t i, const Running& best) {
      values[i] = best.value;
      result.argmax[i] = best.position;
    };
    if (n_out != 1 || n_reduced <= kParallelGrain) {
      const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / n_reduced);
      parallel_for(n_out, grain, [&](std::int64_t begin, std::int64_t end) {
        std::int64_t i = begin;
        kernels::strided_range<2>(plan.kept_shape, {&plan.kept_strides, &plan.kept_dense}, begin,
                                  end, [&](const std::array<std::int64_t, 2>& base) {
                                    store(i++, scan(base[0], base[1], 0, n_reduced));
                                  });
      });
      return;
    }
    // One output, many inputs: split the slice, merge the pieces in order.
    Running best = tbb::parallel_deterministic_reduce(
        tbb::blocked_range<std::int64_t>(0, n_reduced, kParallelGrain), Running{},
        [&](const tbb::blocked_range<std::int64_t>& r, Running acc) {
          acc.merge(scan(0, 0, r.begin(), r.end()));
          return acc;
        },
        [](Running earlier, const Running& later) {
          earlier.merge(later);
          return earlier;
        });
    store(0, best);
  });
  return result;
}

// max (min): y = x[first arg-max (arg-min) of each slice];  dx = dy at that position, 0 elsewhere
class MaxBackward final : public Node {
 public:
  explicit MaxBackward(const char* name) : name_(name) {}
  std::string_view name() const override { return name_; }
  TensorList backward(const Tensor& dy) override {
    Tensor dx = zeros(next_edges()[0].shape, dy.dtype());
    const Tensor dy_dense = dy.contiguous();  // row-major order = argmax order
    dispatch_floating(dy.dtype(), "max", [&]<class T>() {
      const T* grad = dy_dense.data<T>();
      T* out = dx.data<T>();
      parallel_for(static_cast<std::int64_t>(argmax.size()), kParallelGrain,
                   [&](std::int64_t begin, std::int64_t end) {
                     for (std::int64_t i = begin; i < end; ++i) out[argmax[i]] = grad[i];
                   });
    });
    return {dx};
  }
  std::vector<std::int64_t> argmax;

 private:
  const char* name_;
};

template <Extreme kind>
Tensor extreme(const char* op, const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  ReductionPlan plan = plan_reduction(x, dims, keepdim, op);
  if (shape_numel(plan.reduced_shape) == 0)
    fail(op, op, " over zero elements: reducing dims ", shape_str(dims), " of shape ", shape_str(x.shape()));
  MaxResult result = max_kernel<kind>(x, plan, op);
  if (autograd::any_requires_grad({x})) {
    auto node = std::make_shared<MaxBackward>(op);
    autograd::connect_inputs(*node, {x});
    node->argmax = std::move(result.argmax);
    autograd::set_history(result.values, node);
  }
  return result.values;
}

// The index along `dim` (or in the flattened tensor, without dim) of each
// slice's first maximum (minimum), int64.
template <Extreme kind>
Tensor arg_extreme(const char* op, const Tensor& x, std::optional<std::int64_t> dim, bool keepdim) {
  const Tensor flat = dim ? x : x.reshape({x.numel()});
  const std::vector<std::int64_t> dims = {dim ? *dim : 0};
  ReductionPlan plan = plan_reduction(flat, dims, dim && keepdim, op);
  if (shape_numel(plan.reduced_shape) == 0)
    fail(op, op, " over zero elements", dim ? ": dim " + std::to_string(*dim) : std::string(), " of shape ",
         shape_str(x.shape()));
  const MaxResult result = max_kernel<kind>(flat.detach(), plan, op);
  // A dense offset o of x holds index (o / stride) mod size along the dim.
  const std::int64_t d = dims[0] < 0 ? dims[0] + flat.dim() : dims[0];
  std::int64_t stride = 1;
  for (std::int64_t later = d + 1; later < flat.dim(); ++later) stride *= flat.shape()[later];
  const std::int64_t size = flat.shape()[d];
  Tensor indices = empty(plan.out_shape, kInt64);
  std::int64_t* out = indices.data<std::int64_t>();
  for (std::size_t i = 0; i < result.argmax.size(); ++i) out[i] = result.argmax[i] / stride % size;
  return dim ? indices : indices.reshape({});
}

}  // namespace

Tensor max(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  return extreme<Extreme::Max>("max", x, dims, keepdim);
}

Tensor min(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  return extreme<Extreme::Min>("min", x, dims, keepdim);
}

Tensor argmax(const Tensor& x) { return arg_extreme<Extreme::Max>("argmax", x, std::nullopt, false); }
Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim) {
  return arg_extreme<Extreme::Max>("argmax", x, dim, keepdim);
}
Tensor argmin(const Tensor& x) { return arg_extreme<Extreme::Min>("argmin", x, std::nullopt, false); }
Tensor argmin(const Tensor& x, std::int64_t dim, bool keepdim) {
  return arg_extreme<Extreme::Min>("argmin", x, dim, keepdim);
}

// ---- cumsum ----

namespace {

// A cumulative sum runs along each line (all indices but `dim`); the lines
// are independent, so they run in parallel. Accumulates in double (as
// PyTorch's CPU kernel and our sum do), so long float32 lines stay accurate.
Tensor cumsum_kernel(const Tensor& x, std::int64_t dim, bool reverse) {
  Tensor out = empty(x.shape(), x.dtype());
  const std::int64_t length = x.shape()[dim];
  const std::int64_t in_step = x.strides()[dim];
  const std::int64_t out_step = out.strides()[dim];
  Shape line_shape = x.shape();
  Strides in_lines = x.strides();
  Strides out_lines = out.strides();
  line_shape.erase(line_shape.begin() + dim);
  in_lines.erase(in_lines.begin() + dim);
  out_lines.erase(out_lines.begin() + dim);
  const std::int64_t n_lines = shape_numel(line_shape);
  if (length == 0 || n_lines == 0) return out;
  dispatch_floating(x.dtype(), "cumsum", [&]<class T>() {
    const T* in = x.data<T>();
    T* result = out.data<T>();
    const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / length);
    parallel_for(n_lines, grain, [&](std::int64_t begin, std::int64_t end) {
      kernels::strided_range<2>(line_shape, {&in_lines, &out_lines}, begin, end,
                                [&](const std::array<std::int64_t, 2>& base) {
                                  double acc = 0.0;
                                  for (std::int64_t step = 0; step < length; ++step) {
                                    const std::int64_t i = reverse ? length - 1 - step : step;
                                    acc += static_cast<double>(in[base[0] + i * in_step]);
                                    result[base[1] + i * out_step] = static_cast<T>(acc);
                                  }
                                });
    });
  });
  return out;
}

// cumsum: y_i = Σ_{j≤i} x_j;  dx_j = Σ_{i≥j} dy_i, the reverse cumsum of dy
// (and the reverse cumsum's backward is the forward cumsum)
class CumsumBackward final : public Node {
 public:
  std::string_view name() const override { return "cumsum"; }
  TensorList backward(const Tensor& dy) override { return {cumsum(dy, dim, !reverse)}; }
  std::int64_t dim = 0;
  bool reverse = false;
};

}  // namespace

Tensor cumsum(const Tensor& x, std::int64_t dim, bool reverse) {
  if (x.dim() == 0) {  // a scalar is a line of one element, as in PyTorch
    normalize_dim(dim, 1, "cumsum");
    return cumsum(x.reshape({1}), 0, reverse).reshape({});
  }
  const std::int64_t d = normalize_dim(dim, x.dim(), "cumsum");
  Tensor y = cumsum_kernel(x, d, reverse);
  if (auto node = autograd::make_node<CumsumBackward>({x})) {
    node->dim = d;
    node->reverse = reverse;
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
