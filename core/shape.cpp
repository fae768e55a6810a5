#include "shape.h"

#include <algorithm>
#include <sstream>

#include "error.h"

namespace flowgrad {

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (std::int64_t size : shape) n *= size;
  return n;
}

bool is_valid_tensor_shape(const Shape& shape) {
  std::int64_t bound = 1;  // product with zeros counted as ones
  for (std::int64_t size : shape)
    if (size < 0 || __builtin_mul_overflow(bound, std::max<std::int64_t>(size, 1), &bound) ||
        bound > kMaxTensorElements)
      return false;
  return true;
}

std::int64_t checked_numel(const Shape& shape, std::string_view op) {
  if (!is_valid_tensor_shape(shape)) {
    for (std::int64_t size : shape)
      if (size < 0) fail(op, "negative size in shape ", shape_str(shape));
    fail(op, "shape ", shape_str(shape), " exceeds the maximum tensor size of 2^40 elements");
  }
  return shape_numel(shape);
}

std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view op, std::string_view what) {
  std::int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) fail(op, what, ": ", a, " x ", b, " overflows int64");
  return product;
}

std::int64_t checked_add(std::int64_t a, std::int64_t b, std::string_view op, std::string_view what) {
  std::int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) fail(op, what, ": ", a, " + ", b, " overflows int64");
  return sum;
}

Strides contiguous_strides(const Shape& shape) {
  Strides strides(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

std::int64_t normalize_dim(std::int64_t dim, std::int64_t ndim, std::string_view op) {
  if (dim < -ndim || dim >= ndim || ndim == 0)
    fail(op, "dim ", dim, " is out of range for a tensor with ", ndim, " dims");
  return dim < 0 ? dim + ndim : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  std::size_t ndim = std::max(a.size(), b.size());
  Shape out(ndim);
  for (std::size_t i = 0; i < ndim; ++i) {
    std::int64_t da = i < ndim - a.size() ? 1 : a[i - (ndim - a.size())];
    std::int64_t db = i < ndim - b.size() ? 1 : b[i - (ndim - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(op, "shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Groups the old dims into runs that are contiguous with each other, then
// checks that every new dim falls inside one run (the rule PyTorch's view uses).
std::optional<Strides> view_strides(const Shape& shape, const Strides& strides,
                                    const Shape& new_shape) {
  if (shape_numel(shape) == 0) return contiguous_strides(new_shape);
  if (shape.empty()) return view_strides(Shape{1}, Strides{1}, new_shape);
  Strides new_strides(new_shape.size());
  std::int64_t view_d = static_cast<std::int64_t>(new_shape.size()) - 1;
  std::int64_t chunk_base_stride = strides.empty() ? 1 : strides.back();
  std::int64_t tensor_numel = 1;
  std::int64_t view_numel = 1;
  for (std::int64_t tensor_d = static_cast<std::int64_t>(shape.size()) - 1; tensor_d >= 0;
       --tensor_d) {
    tensor_numel *= shape[tensor_d];
    // A run ends where the next-outer dim is not laid out right after this one.
    if (tensor_d == 0 ||
        (shape[tensor_d - 1] != 1 && strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}

Shape infer_reshape(const Shape& shape, Shape target, std::string_view op) {
  std::int64_t numel = shape_numel(shape);
  std::int64_t known = 1;
  int infer_at = -1;
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] == -1) {
      if (infer_at >= 0) fail(op, "only one dim can be -1, got ", shape_str(target));
      infer_at = static_cast<int>(i);
    } else if (target[i] < 0) {
      fail(op, "invalid size ", target[i], " in target shape ", shape_str(target));
    } else if (__builtin_mul_overflow(known, target[i], &known)) {
      fail(op, "shape ", shape_str(target), " is invalid for input of shape ", shape_str(shape),
           " (its element count overflows int64)");
    }
  }
  if (infer_at >= 0) {
    if (known == 0 || numel % known != 0)
      fail(op, "shape ", shape_str(target), " is invalid for input of shape ", shape_str(shape));
    target[infer_at] = numel / known;
  } else if (known != numel) {
    fail(op, "shape ", shape_str(target), " is invalid for input of shape ", shape_str(shape),
         " (", numel, " elements)");
  }
  return target;
}

}  // namespace flowgrad
