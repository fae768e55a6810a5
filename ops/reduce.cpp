// Reductions. A reduction splits the input's dims into kept dims (one output
// element per index) and reduced dims (folded into that element).
#include "reduce.h"

#include <algorithm>
#include <limits>

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
  for (std::int64_t d = 0; d < ndim; ++d) {
    if (plan.is_reduced[d]) {
      plan.reduced_shape.push_back(x.shape()[d]);
      plan.reduced_strides.push_back(x.strides()[d]);
      plan.keepdim_shape.push_back(1);
      if (keepdim) plan.out_shape.push_back(1);
    } else {
      plan.kept_shape.push_back(x.shape()[d]);
      plan.kept_strides.push_back(x.strides()[d]);
      plan.keepdim_shape.push_back(x.shape()[d]);
      plan.out_shape.push_back(x.shape()[d]);
    }
  }
  return plan;
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
    auto sum_range = [&](std::int64_t base, std::int64_t begin, std::int64_t end) {
      double acc = 0.0;
      kernels::strided_range<1>(plan.reduced_shape, {&plan.reduced_strides}, begin, end,
                                [&](const std::array<std::int64_t, 1>& off) {
                                  acc += static_cast<double>(in[base + off[0]]);
                                });
      return acc;
    };
    const Strides& kept_strides = plan.kept_strides;
    if (n_out > 1 || n_reduced <= kParallelGrain) {
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

// mean: y = sum(x) / n  (n = number of elements reduced into each output)
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  ReductionPlan plan = plan_reduction(x, dims, keepdim, "mean");
  const std::int64_t n = shape_numel(plan.reduced_shape);
  if (n == 0) fail("mean", "mean over zero elements of shape ", shape_str(x.shape()));
  return sum(x, dims, keepdim) * (1.0 / static_cast<double>(n));
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

}  // namespace flowgrad
