#include "select.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../autograd/node.h"
#include "kernels.h"
#include "reduce.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// Every named argument must be a defined tensor.
void check_defined(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> arguments) {
  for (const auto& [name, t] : arguments)
    if (!t->defined()) fail(op, name, " is an undefined tensor");
}

// A mask (1 where compare(a, b), else 0). int64 operands are compared as
// float64 values, exactly up to 2^53.
template <class Compare>
Tensor compare(const char* op, const Tensor& a, const Tensor& b, Compare holds) {
  check_defined(op, {{"a", &a}, {"b", &b}});
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
  check_defined(op, {{"a", &like}});
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
  check_defined("where", {{"condition", &condition}, {"a", &a}, {"b", &b}});
  if (a.dtype() != b.dtype() || !is_floating(a.dtype()))
    fail("where", "a and b must share a float dtype; got ", dtype_name(a.dtype()), " ", shape_str(a.shape()),
         " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  const Shape shape =
      broadcast_shapes(broadcast_shapes(condition.shape(), a.shape(), "where"), b.shape(), "where");
  // Nonzero in the condition's own dtype (1e-50 stays true next to float32 values).
  const Tensor mask = ne(condition.detach(), 0.0).to(a.dtype());
  Tensor y = select_values(mask, a, b, shape);
  if (auto node = autograd::make_node<WhereBackward>({a, b})) {
    node->mask.save(mask);
    autograd::set_history(y, node);
  }
  return y;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined("masked_fill", {{"x", &x}, {"mask", &mask}});
  if (!is_floating(x.dtype()))
    fail("masked_fill", "x must be float32 or float64, got ", dtype_name(x.dtype()), " ", shape_str(x.shape()));
  if (broadcast_shapes(x.shape(), mask.shape(), "masked_fill") != x.shape())
    fail("masked_fill", "mask ", shape_str(mask.shape()), " does not broadcast to x ", shape_str(x.shape()));
  return where(mask, scalar_tensor(value, x.dtype()), x);
}

namespace {

// x with `dim` moved last, contiguous: rows of x.size(dim) elements.
Tensor rows_along(const Tensor& x, std::int64_t dim) { return x.detach().transpose(dim, -1).contiguous(); }

// Checks index values against the size they index.
void check_index_values(const char* op, const Tensor& index, std::int64_t size, std::int64_t dim,
                        const Tensor& x) {
  for (const std::int64_t i : index.contiguous().to_vector<std::int64_t>())
    if (i < 0 || i >= size)
      fail(op, "index ", i, " is out of range for dim ", dim, " of size ", size, " (x ", shape_str(x.shape()), ")");
}

// gather along the last dim of contiguous rows: out[r, j] = x[r, index[r, j]],
// or its backward, dx[r, index[r, j]] += dy[r, j].
template <bool kBackward>
void gather_rows(const Tensor& x_rows, const Tensor& index_rows, const Tensor& out_rows) {
  const std::int64_t rows = index_rows.numel() / std::max<std::int64_t>(index_rows.size(-1), 1);
  const std::int64_t width = index_rows.size(-1), x_width = x_rows.size(-1);
  const std::int64_t* index = index_rows.data<std::int64_t>();
  dispatch_floating(x_rows.dtype(), "gather", [&]<class T>() {
    const T* in = kBackward ? out_rows.data<T>() : x_rows.data<T>();
    T* out = kBackward ? x_rows.data<T>() : out_rows.data<T>();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < width; ++j) {
        const std::int64_t i = index[r * width + j];
        if constexpr (kBackward)
          out[r * x_width + i] += in[r * width + j];
        else
          out[r * width + j] = in[r * x_width + i];
      }
  });
}

// gather: y[r, j] = x[r, index[r, j]] (rows along dim);  dx[r, index[r, j]] += dy[r, j]
class GatherBackward final : public Node {
 public:
  std::string_view name() const override { return "gather"; }
  TensorList backward(const Tensor& dy) override {
    Shape moved = part_shape;  // x within index's extent in the other dims
    std::swap(moved[dim], moved.back());
    Tensor dx_rows = zeros(moved, dy.dtype());
    gather_rows<true>(dx_rows, index_rows.get(), rows_along(dy, dim));
    const Tensor dx_part = dx_rows.transpose(dim, -1);
    const Shape& x_shape = next_edges()[0].shape;
    if (part_shape == x_shape) return {dx_part.contiguous()};
    Tensor dx = zeros(x_shape, dy.dtype());
    Tensor region = dx;
    for (std::int64_t d = 0; d < static_cast<std::int64_t>(x_shape.size()); ++d)
      if (d != dim) region = region.narrow(d, 0, part_shape[d]);
    copy_elements(dx_part, region);
    return {dx};
  }
  SavedTensor index_rows{this};
  Shape part_shape;
  std::int64_t dim = 0;
};

}  // namespace

Tensor gather(const Tensor& x, std::int64_t dim, const Tensor& index) {
  check_defined("gather", {{"x", &x}, {"index", &index}});
  if (!is_floating(x.dtype()) || index.dtype() != kInt64)
    fail("gather", "expected a float x and an int64 index; got x ", dtype_name(x.dtype()), " ", shape_str(x.shape()),
         " and index ", dtype_name(index.dtype()), " ", shape_str(index.shape()));
  if (x.dim() == 0 || index.dim() != x.dim())
    fail("gather", "index ", shape_str(index.shape()), " must have as many dims as x ", shape_str(x.shape()),
         " (at least one)");
  dim = normalize_dim(dim, x.dim(), "gather");
  for (std::int64_t d = 0; d < x.dim(); ++d)
    if (d != dim && index.size(d) > x.size(d))
      fail("gather", "index ", shape_str(index.shape()), " is larger than x ", shape_str(x.shape()), " in dim ", d);
  check_index_values("gather", index, x.size(dim), dim, x);
  // Rows along dim; x restricted to index's extent in the other dims.
  Tensor x_part = x.detach();
  for (std::int64_t d = 0; d < x.dim(); ++d)
    if (d != dim) x_part = x_part.narrow(d, 0, index.size(d));
  const Tensor index_rows = rows_along(index, dim);
  Shape moved = index.shape();
  std::swap(moved[dim], moved.back());
  Tensor out_rows = empty(moved, x.dtype());
  gather_rows<false>(rows_along(x_part, dim), index_rows, out_rows);
  Tensor y = out_rows.transpose(dim, -1).contiguous();
  if (autograd::any_requires_grad({x})) {
    auto node = std::make_shared<GatherBackward>();
    autograd::connect_inputs(*node, {x});
    node->index_rows.save(index_rows);
    node->part_shape = x_part.shape();
    node->dim = dim;
    autograd::set_history(y, node);
  }
  return y;
}

Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& index) {
  check_defined("index_select", {{"x", &x}, {"index", &index}});
  if (index.dtype() != kInt64 || index.dim() != 1)
    fail("index_select", "index must be a 1-D int64 tensor, got ", dtype_name(index.dtype()), " ",
         shape_str(index.shape()));
  if (x.dim() == 0) fail("index_select", "x must have at least one dim, got a 0-dim tensor");
  if (!is_floating(x.dtype()))
    fail("index_select", "x must be float32 or float64, got ", dtype_name(x.dtype()), " ", shape_str(x.shape()));
  dim = normalize_dim(dim, x.dim(), "index_select");
  check_index_values("index_select", index, x.size(dim), dim, x);
  // The same index at every position of the other dims: a gather.
  Shape view_shape(static_cast<std::size_t>(x.dim()), 1);
  view_shape[dim] = index.numel();
  Shape full_shape = x.shape();
  full_shape[dim] = index.numel();
  return gather(x, dim, index.reshape(view_shape).expand(full_shape));
}

TopK topk(const Tensor& x, std::int64_t k, std::int64_t dim, bool largest) {
  check_defined("topk", {{"x", &x}});
  if (!is_floating(x.dtype()))
    fail("topk", "x must be float32 or float64, got ", dtype_name(x.dtype()), " ", shape_str(x.shape()));
  if (x.dim() == 0) fail("topk", "x must have at least one dim, got a 0-dim tensor");
  dim = normalize_dim(dim, x.dim(), "topk");
  if (k < 0 || k > x.size(dim))
    fail("topk", "k = ", k, " is outside [0, ", x.size(dim), "] for dim ", dim, " of x ", shape_str(x.shape()));
  const Tensor rows = rows_along(x, dim);
  const std::int64_t width = x.size(dim);
  const std::int64_t n_rows = width == 0 ? 0 : rows.numel() / width;
  Shape moved = rows.shape();
  moved.back() = k;
  Tensor index_rows = empty(moved, kInt64);
  std::int64_t* out = index_rows.data<std::int64_t>();
  dispatch_floating(x.dtype(), "topk", [&]<class T>() {
    const T* values = rows.data<T>();
    std::vector<std::int64_t> order(static_cast<std::size_t>(width));
    for (std::int64_t r = 0; r < n_rows; ++r) {
      const T* row = values + r * width;
      for (std::int64_t j = 0; j < width; ++j) order[static_cast<std::size_t>(j)] = j;
      // Strictly before: NaN first (the largest), then by value, then by index.
      auto before = [&](std::int64_t a, std::int64_t b) {
        const bool a_nan = std::isnan(row[a]), b_nan = std::isnan(row[b]);
        if (a_nan != b_nan) return largest ? a_nan : b_nan;
        if (!a_nan && row[a] != row[b]) return largest ? row[a] > row[b] : row[a] < row[b];
        return a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      std::copy_n(order.begin(), k, out + r * k);
    }
  });
  const Tensor indices = index_rows.transpose(dim, -1).contiguous();
  return {gather(x, dim, indices), indices};
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
  check_defined("allclose", {{"a", &a}, {"b", &b}});
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
