// Shapes, strides and the arithmetic on them (row-major, PyTorch dim order).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flowgrad {

using Shape = std::vector<std::int64_t>;
using Strides = std::vector<std::int64_t>;

// The largest tensor flowgrad makes: 2^40 elements (4 TiB of float32). The
// bound applies to the product of all sizes with zeros counted as ones, so
// that the strides of an empty tensor fit too ([0, 2^40, 2^40] is refused).
// Below it, every element count, stride and byte count fits in int64.
constexpr std::int64_t kMaxTensorElements = std::int64_t{1} << 40;

// Element count of a shape every Tensor already holds (no checks).
std::int64_t shape_numel(const Shape& shape);
// Whether every size is non-negative and the shape is within kMaxTensorElements.
bool is_valid_tensor_shape(const Shape& shape);
// The element count of a shape from outside (a file, a flag, a user): throws
// "[op] ..." naming the shape when a size is negative or the shape exceeds
// kMaxTensorElements.
std::int64_t checked_numel(const Shape& shape, std::string_view op);
// a * b, or a throw "[op] <what>: a x b overflows"; for counts derived from
// user input (batch x block, steps per epoch x epochs, ...).
std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view op, std::string_view what);
std::int64_t checked_add(std::int64_t a, std::int64_t b, std::string_view op, std::string_view what);
Strides contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

// Wraps a possibly negative dim into [0, ndim); throws naming `op` otherwise.
std::int64_t normalize_dim(std::int64_t dim, std::int64_t ndim, std::string_view op);

// NumPy broadcasting of two shapes; throws naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);

// Strides that let a tensor of `shape`/`strides` be viewed as `new_shape`
// without copying, or nullopt when the memory layout does not allow it.
std::optional<Strides> view_strides(const Shape& shape, const Strides& strides,
                                    const Shape& new_shape);

// Resolves one -1 entry of a reshape target and checks the element count.
Shape infer_reshape(const Shape& shape, Shape target, std::string_view op);

}  // namespace flowgrad
