#include "select.h"

#include <cmath>

#include "../autograd/node.h"
#include "kernels.h"
#include "reduce.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

void check_defined(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (!t->defined()) fail(op, "inputs must be defined tensors");
}

// A mask (1 where compare(a, b), else 0). int64 operands are compared as
// float64 values, exactly up to 2^53.
template <class Compare>
Tensor compare(const char* op, const Tensor& a, const Tensor& b, Compare holds) {
  check_defined(op, {&a, &b});
  const bool integers = a.dtype() == kInt64 || b.dtype() == kInt64;
  if (integers && a.dtype() != b.dtype() && a.dtype() != kFloat64 && b.dtype() != kFloat64)
    fail(op, "cannot compare ", dtype_name(a.dtype()), " ", shape_str(a.shape()), " with ", dtype_name(b.dtype()),
         " ", shape_str(b.shape()));
  const Tensor x = integers ? a.detach().to(kFloat64) : a.detach();
  const Tensor y = integers ? b.detach().to(kFloat64) : b.detach();
  return kernels::map_binary(x, y, op, [holds](auto u, auto v) {
    using T = decltype(u);
    return holds(u, v) ? T(1) : T(0);
  });
}

// `value` as a 0-dim tensor to compare `like` with.
Tensor scalar_for(const char* op, double value, const Tensor& like) {
  check_defined(op, {&like});
  return scalar_tensor(value, like.dtype() == kInt64 ? kFloat64 : like.dtype());
}

// out = mask ? a : b over `shape`, all three broadcast to it; no history.
Tensor select_values(const Tensor& mask, const Tensor& a, const Tensor& b, const Shape& shape) {
  Tensor out = empty(shape, a.dtype());
  dispatch_floating(a.dtype(), "where", [&]<class T>() {
    const T* pm = mask.data<T>();
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* result = out.data<T>();
    const Strides sm = kernels::broadcast_strides(mask, shape);
    const Strides sa = kernels::broadcast_strides(a, shape);
    const Strides sb = kernels::broadcast_strides(b, shape);
    parallel_for(out.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
      strided_range<3>(shape, {&sm, &sa, &sb}, begin, end, [&](const std::array<std::int64_t, 3>& off) {
        result[begin++] = pm[off[0]] != T(0) ? pa[off[1]] : pb[off[2]];
      });
    });
  });
  return out;
}

class WhereBackward final : public Node {
 public:
  std::string_view name() const override { return "where"; }
  // where: y = m ? a : b;  da = sum_to(m ? dy : 0),  db = sum_to(m ? 0 : dy)
  TensorList backward(const Tensor& dy) override {
    const Tensor m = mask.get();
    const Tensor zero = scalar_tensor(0.0, dy.dtype());
    Tensor da, db;
    if (next_edges()[0].node) da = sum_to(select_values(m, dy, zero, dy.shape()), next_edges()[0].shape);
    if (next_edges()[1].node) db = sum_to(select_values(m, zero, dy, dy.shape()), next_edges()[1].shape);
    return {da, db};
  }
  SavedTensor mask{this};
};

}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, [](auto u, auto v) { return u == v; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, [](auto u, auto v) { return u != v; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, [](auto u, auto v) { return u < v; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, [](auto u, auto v) { return u <= v; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, [](auto u, auto v) { return u > v; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, [](auto u, auto v) { return u >= v; }); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_for("eq", b, a)); }
Tensor ne(const Tensor& a, double b) { return ne(a, scalar_for("ne", b, a)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_for("lt", b, a)); }
Tensor le(const Tensor& a, double b) { return le(a, scalar_for("le", b, a)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_for("gt", b, a)); }
Tensor ge(const Tensor& a, double b) { return ge(a, scalar_for("ge", b, a)); }

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  check_defined("where", {&condition, &a, &b});
  if (a.dtype() != b.dtype() || !is_floating(a.dtype()))
    fail("where", "a and b must share a float dtype; got ", dtype_name(a.dtype()), " ", shape_str(a.shape()),
         " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  const Shape shape =
      broadcast_shapes(broadcast_shapes(condition.shape(), a.shape(), "where"), b.shape(), "where");
  const Tensor mask = ne(condition.detach().to(a.dtype()), 0.0);
  Tensor y = select_values(mask, a, b, shape);
  if (auto node = autograd::make_node<WhereBackward>({a, b})) {
    node->mask.save(mask);
    autograd::set_history(y, node);
  }
  return y;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined("masked_fill", {&x, &mask});
  if (!is_floating(x.dtype()))
    fail("masked_fill", "x must be float32 or float64, got ", dtype_name(x.dtype()), " ", shape_str(x.shape()));
  if (broadcast_shapes(x.shape(), mask.shape(), "masked_fill") != x.shape())
    fail("masked_fill", "mask ", shape_str(mask.shape()), " does not broadcast to x ", shape_str(x.shape()));
  return where(mask, scalar_tensor(value, x.dtype()), x);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
  check_defined("allclose", {&a, &b});
  if (!(rtol >= 0) || !(atol >= 0)) fail("allclose", "rtol and atol must be >= 0, got rtol=", rtol, " atol=", atol);
  const Tensor close = kernels::map_binary(
      a.detach().to(kFloat64), b.detach().to(kFloat64), "allclose", [=](double x, double y) {
        if (std::isnan(x) || std::isnan(y)) return equal_nan && std::isnan(x) && std::isnan(y) ? 1.0 : 0.0;
        if (x == y) return 1.0;  // equal infinities too
        if (std::isinf(x) || std::isinf(y)) return 0.0;  // inf − (−inf) is not within any tolerance
        return std::abs(x - y) <= atol + rtol * std::abs(y) ? 1.0 : 0.0;
      });
  for (const double flag : close.contiguous().to_vector<double>())
    if (flag == 0.0) return false;
  return true;
}

}  // namespace flowgrad
