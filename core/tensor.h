// Tensor: a view (shape, strides, offset, dtype) of a shared Storage, plus a
// slot for autograd state.
//
// Tensor is a cheap handle: copies share the same TensorImpl, like
// torch::Tensor. The class declares three groups of methods:
//   - layout and element access, defined in core/tensor.cpp;
//   - autograd state (requires_grad, grad, backward, hooks), defined in
//     autograd/tensor_autograd.cpp;
//   - differentiable views and conversions (reshape, permute, narrow,
//     contiguous, to, ...), defined in ops/views.cpp.
// This header depends on nothing above core: the autograd metadata is only
// forward-declared here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <type_traits>
#include <vector>

#include "dtype.h"
#include "shape.h"
#include "storage.h"

namespace flowgrad {

namespace autograd {
struct AutogradMeta;
class Node;
}  // namespace autograd

class Tensor;
using TensorList = std::vector<Tensor>;

// A gradient hook sees the gradient flowing into a tensor; returning a
// defined tensor replaces that gradient, returning Tensor() keeps it.
using GradHook = std::function<Tensor(const Tensor& grad)>;
// A post-accumulate hook of a leaf sees the leaf itself once its gradient of
// this backward pass has been added to .grad() (PyTorch's
// register_post_accumulate_grad_hook): the moment data-parallel training
// can start reducing that gradient.
using PostAccumulateGradHook = std::function<void(const Tensor& leaf)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  std::int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;
  std::shared_ptr<autograd::AutogradMeta> autograd;  // null until needed
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (no storage)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- layout (core/tensor.cpp) ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  std::int64_t size(std::int64_t dim) const;    // negative dims count from the end
  std::int64_t stride(std::int64_t dim) const;
  std::int64_t dim() const { return static_cast<std::int64_t>(impl().shape.size()); }
  std::int64_t numel() const { return shape_numel(impl().shape); }
  std::int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  bool shares_storage_with(const Tensor& other) const;
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // Pointer to the first element; T must match dtype().
  template <class T> T* data() const;
  // The single element of a one-element tensor, converted to T.
  template <class T> T item() const;
  // The element at a full index, converted to T (for tests and inspection).
  template <class T> T at(const std::vector<std::int64_t>& index) const;
  // All elements in row-major order, converted to T.
  template <class T> std::vector<T> to_vector() const;

  // Version of the underlying storage; in-place writes bump it.
  std::uint64_t version() const { return impl().storage->version(); }
  void bump_version() const { impl().storage->bump_version(); }

  // ---- autograd (autograd/tensor_autograd.cpp) ----
  bool requires_grad() const;
  // Marks a leaf as needing a gradient; returns *this for chaining.
  Tensor& requires_grad_(bool enabled = true);
  bool is_leaf() const;
  // Accumulated gradient of a leaf (or of a tensor that called retain_grad);
  // undefined until a backward pass reaches it.
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;  // set or clear (Tensor()) .grad
  std::shared_ptr<autograd::Node> grad_fn() const;
  // Runs reverse-mode differentiation from this tensor. Without `gradient`
  // the tensor must hold one element. Gradients accumulate into .grad().
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  void retain_grad() const;
  bool retains_grad() const;
  void register_hook(GradHook hook) const;
  // Leaves that require grad only; called once per backward pass that
  // reaches the leaf, after .grad() holds the accumulated gradient.
  void register_post_accumulate_grad_hook(PostAccumulateGradHook hook) const;
  // Same data, no history, requires_grad false.
  Tensor detach() const;

  // ---- differentiable views and conversions (ops/views.cpp) ----
  Tensor reshape(Shape shape) const;   // a view when strides allow, else a copy
  Tensor view(Shape shape) const;      // always a view; throws when impossible
  Tensor flatten() const;
  Tensor permute(std::vector<std::int64_t> dims) const;
  Tensor transpose(std::int64_t dim0, std::int64_t dim1) const;
  Tensor narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const;
  Tensor select(std::int64_t dim, std::int64_t index) const;  // removes dim
  Tensor squeeze(std::int64_t dim) const;
  Tensor unsqueeze(std::int64_t dim) const;
  Tensor expand(Shape shape) const;    // broadcast view, stride 0 on new dims
  Tensor contiguous() const;           // itself when already contiguous
  Tensor clone() const;                // always a copy
  Tensor to(DType dtype) const;        // itself when already of that dtype

 private:
  TensorImpl& impl() const;
  std::shared_ptr<TensorImpl> impl_;
};

// ---- factories (core/tensor.cpp) ----
Tensor empty(const Shape& shape, DType dtype = kFloat32);  // uninitialised
Tensor zeros(const Shape& shape, DType dtype = kFloat32);
Tensor ones(const Shape& shape, DType dtype = kFloat32);
Tensor full(const Shape& shape, double value, DType dtype = kFloat32);
Tensor zeros_like(const Tensor& like);
Tensor ones_like(const Tensor& like);
// [start, end) in steps of `step`.
Tensor arange(double start, double end, double step = 1.0, DType dtype = kFloat32);
Tensor arange(std::int64_t end, DType dtype = kInt64);
// A tensor holding `values` in row-major order: 1-D, or of the given shape.
template <class T>
Tensor from_vector(const std::vector<T>& values);
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape);
Tensor tensor(std::initializer_list<double> values, DType dtype = kFloat32);
Tensor tensor(std::initializer_list<double> values, const Shape& shape, DType dtype = kFloat32);
Tensor scalar_tensor(double value, DType dtype = kFloat32);  // 0-dim
// A contiguous tensor over the caller's memory, without a copy: writes go
// both ways. The memory must stay valid (and aligned for the dtype) while
// any tensor, view or saved-for-backward copy uses it; `release`, if given,
// is called with `data` once the last of them is gone (never when from_blob
// throws: the memory stays the caller's). `release` must not throw (it runs
// in a destructor). As torch::from_blob.
Tensor from_blob(void* data, const Shape& shape, DType dtype, std::function<void(void*)> release = {});

// A tensor with the given layout over an existing storage. No autograd:
// the differentiable views in ops/views.cpp build on it.
Tensor make_view(const Tensor& base, Shape shape, Strides strides, std::int64_t offset);

// Copies the elements of `src` into `dst` (same shape, any strides, same or
// different dtypes). No autograd; bumps dst's version.
void copy_elements(const Tensor& src, const Tensor& dst);
// dst += src elementwise (same shape, any strides). No autograd; bumps dst's
// version. Used to accumulate gradients.
void add_elements(const Tensor& src, const Tensor& dst);

// Calls body(offset) with the element offset of every index of `shape` under
// `strides`, in row-major order. The building block of strided loops.
template <class Body>
void for_each_offset(const Shape& shape, const Strides& strides, Body&& body);

std::ostream& operator<<(std::ostream& out, const Tensor& t);

// ---- template definitions ----

template <class T>
T* Tensor::data() const {
  if (dtype() != dtype_of<T>)
    fail("Tensor::data", "requested ", dtype_name(dtype_of<T>), " from a ", dtype_name(dtype()),
         " tensor");
  return static_cast<T*>(impl().storage->data()) + impl().offset;
}

template <class Body>
void for_each_offset(const Shape& shape, const Strides& strides, Body&& body) {
  const std::size_t ndim = shape.size();
  if (shape_numel(shape) == 0) return;
  std::vector<std::int64_t> index(ndim, 0);
  std::int64_t offset = 0;
  while (true) {
    body(offset);
    std::size_t d = ndim;
    while (d > 0) {
      --d;
      if (++index[d] < shape[d]) {
        offset += strides[d];
        break;
      }
      offset -= strides[d] * (shape[d] - 1);
      index[d] = 0;
      if (d == 0) return;
    }
    if (ndim == 0) return;
  }
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  std::vector<T> values;
  values.reserve(static_cast<std::size_t>(numel()));
  dispatch_all(dtype(), [&]<class Src>() {
    const Src* base = static_cast<const Src*>(impl().storage->data()) + impl().offset;
    for_each_offset(shape(), strides(),
                    [&](std::int64_t off) { values.push_back(static_cast<T>(base[off])); });
  });
  return values;
}

template <class T>
T Tensor::item() const {
  if (numel() != 1) fail("item", "expected a tensor with one element, got shape ", shape_str(shape()));
  return to_vector<T>()[0];
}

template <class T>
T Tensor::at(const std::vector<std::int64_t>& index) const {
  if (static_cast<std::int64_t>(index.size()) != dim())
    fail("at", "index has ", index.size(), " entries for a tensor of shape ", shape_str(shape()));
  std::int64_t off = impl().offset;
  for (std::size_t d = 0; d < index.size(); ++d) {
    if (index[d] < 0 || index[d] >= impl().shape[d])
      fail("at", "index ", index[d], " is out of range for dim ", d, " of shape ",
           shape_str(shape()));
    off += index[d] * impl().strides[d];
  }
  return dispatch_all(dtype(), [&]<class Src>() {
    return static_cast<T>(static_cast<const Src*>(impl().storage->data())[off]);
  });
}

template <class T>
Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<std::int64_t>(values.size())});
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                "from_vector takes numbers: float and double keep their type, other integers become int64");
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, std::int64_t>) {
    std::vector<std::int64_t> wide(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t))
        if (values[i] > static_cast<T>(INT64_MAX))
          fail("from_vector", "value ", values[i], " at index ", i, " does not fit in int64");
      wide[i] = static_cast<std::int64_t>(values[i]);
    }
    return from_vector(wide, shape);
  } else {
    if (shape_numel(shape) != static_cast<std::int64_t>(values.size()))
      fail("from_vector", "shape ", shape_str(shape), " needs ", shape_numel(shape), " values, got ", values.size());
    Tensor t = empty(shape, dtype_of<T>);
    std::copy(values.begin(), values.end(), t.data<T>());
    return t;
  }
}

}  // namespace flowgrad
