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

std::int64_t shape_numel(const Shape& shape);
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
