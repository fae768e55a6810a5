// Differentiable views and conversions: the Tensor methods declared in
// core/tensor.h. Views share storage with their input (core's make_view);
// their backward maps the gradient back to the input's layout.
#include <numeric>

#include "../autograd/node.h"
#include "reduce.h"

namespace flowgrad {

using autograd::Node;

namespace {

// reshape/view: y = x viewed as another shape;  dx = dy viewed as x's shape
class ReshapeBackward final : public Node {
 public:
  std::string_view name() const override { return "reshape"; }
  TensorList backward(const Tensor& dy) override { return {dy.reshape(next_edges()[0].shape)}; }
};

// permute: y = x with dims reordered by p;  dx = dy permuted by p⁻¹
class PermuteBackward final : public Node {
 public:
  std::string_view name() const override { return "permute"; }
  TensorList backward(const Tensor& dy) override { return {dy.permute(inverse)}; }
  std::vector<std::int64_t> inverse;
};

// narrow: y = x[start : start+length] along dim;  dx = zeros with dy there
class NarrowBackward final : public Node {
 public:
  std::string_view name() const override { return "narrow"; }
  TensorList backward(const Tensor& dy) override {
    Tensor dx = zeros(next_edges()[0].shape, dy.dtype());
    copy_elements(dy, dx.narrow(dim, start, dy.shape()[dim]));
    return {dx};
  }
  std::int64_t dim = 0, start = 0;
};

// expand: y = x broadcast to a larger shape;  dx = dy summed back to x's shape
class ExpandBackward final : public Node {
 public:
  std::string_view name() const override { return "expand"; }
  TensorList backward(const Tensor& dy) override { return {sum_to(dy, next_edges()[0].shape)}; }
};

// clone / contiguous: y = copy of x;  dx = dy
class CloneBackward final : public Node {
 public:
  std::string_view name() const override { return "clone"; }
  TensorList backward(const Tensor& dy) override { return {dy}; }
};

// to: y = x converted to another dtype;  dx = dy converted back
class ToBackward final : public Node {
 public:
  std::string_view name() const override { return "to"; }
  TensorList backward(const Tensor& dy) override { return {dy.to(next_edges()[0].dtype)}; }
};

template <class NodeT>
Tensor record(const Tensor& input, Tensor output) {
  if (auto node = autograd::make_node<NodeT>({input})) autograd::set_history(output, node);
  return output;
}

}  // namespace

Tensor Tensor::view(Shape shape) const {
  Shape target = infer_reshape(this->shape(), std::move(shape), "view");
  std::optional<Strides> strides = view_strides(this->shape(), this->strides(), target);
  if (!strides)
    fail("view", "cannot view a tensor of shape ", shape_str(this->shape()), " and strides ",
         shape_str(this->strides()), " as shape ", shape_str(target),
         " without copying; use reshape()");
  return record<ReshapeBackward>(*this, make_view(*this, target, *strides, offset()));
}

Tensor Tensor::reshape(Shape shape) const {
  Shape target = infer_reshape(this->shape(), std::move(shape), "reshape");
  if (target == this->shape()) return *this;
  if (view_strides(this->shape(), this->strides(), target)) return view(target);
  return contiguous().view(target);
}

Tensor Tensor::flatten() const { return reshape({numel()}); }

Tensor Tensor::permute(std::vector<std::int64_t> dims) const {
  if (static_cast<std::int64_t>(dims.size()) != dim())
    fail("permute", "got ", dims.size(), " dims for a tensor of shape ", shape_str(shape()));
  Shape new_shape(dims.size());
  Strides new_strides(dims.size());
  std::vector<std::int64_t> inverse(dims.size(), -1);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    std::int64_t d = normalize_dim(dims[i], dim(), "permute");
    if (inverse[d] != -1)
      fail("permute", "dim ", dims[i], " repeated in ", shape_str(dims), " for shape ",
           shape_str(shape()));
    inverse[d] = static_cast<std::int64_t>(i);
    new_shape[i] = shape()[d];
    new_strides[i] = strides()[d];
  }
  Tensor out = make_view(*this, new_shape, new_strides, offset());
  if (auto node = autograd::make_node<PermuteBackward>({*this})) {
    node->inverse = inverse;
    autograd::set_history(out, node);
  }
  return out;
}

Tensor Tensor::transpose(std::int64_t dim0, std::int64_t dim1) const {
  std::vector<std::int64_t> order(static_cast<std::size_t>(dim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[normalize_dim(dim0, dim(), "transpose")],
            order[normalize_dim(dim1, dim(), "transpose")]);
  return permute(order);
}

Tensor Tensor::narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const {
  const std::int64_t d = normalize_dim(dim, this->dim(), "narrow");
  const std::int64_t size = shape()[d];
  if (start < 0) start += size;
  if (start < 0 || length < 0 || start + length > size)
    fail("narrow", "range [", start, ", ", start + length, ") is out of bounds for dim ", dim,
         " of shape ", shape_str(shape()));
  Shape new_shape = shape();
  new_shape[d] = length;
  Tensor out = make_view(*this, new_shape, strides(), offset() + start * strides()[d]);
  if (auto node = autograd::make_node<NarrowBackward>({*this})) {
    node->dim = d;
    node->start = start;
    autograd::set_history(out, node);
  }
  return out;
}

Tensor Tensor::select(std::int64_t dim, std::int64_t index) const {
  const std::int64_t d = normalize_dim(dim, this->dim(), "select");
  if (index < -shape()[d] || index >= shape()[d])
    fail("select", "index ", index, " is out of range for dim ", dim, " of shape ",
         shape_str(shape()));
  return narrow(d, index < 0 ? index + shape()[d] : index, 1).squeeze(d);
}

Tensor Tensor::squeeze(std::int64_t dim) const {
  const std::int64_t d = normalize_dim(dim, this->dim(), "squeeze");
  if (shape()[d] != 1)
    fail("squeeze", "dim ", dim, " of shape ", shape_str(shape()), " has size ", shape()[d],
         ", not 1");
  Shape new_shape = shape();
  new_shape.erase(new_shape.begin() + d);
  return view(new_shape);
}

Tensor Tensor::unsqueeze(std::int64_t dim) const {
  const std::int64_t d = normalize_dim(dim, this->dim() + 1, "unsqueeze");
  Shape new_shape = shape();
  new_shape.insert(new_shape.begin() + d, 1);
  return view(new_shape);
}

Tensor Tensor::expand(Shape target) const {
  const std::int64_t lead = static_cast<std::int64_t>(target.size()) - dim();
  if (lead < 0)
    fail("expand", "cannot expand shape ", shape_str(shape()), " to fewer dims ",
         shape_str(target));
  Strides new_strides(target.size(), 0);
  for (std::int64_t d = 0; d < dim(); ++d) {
    const std::int64_t t = d + lead;
    if (target[t] == -1) target[t] = shape()[d];
    if (shape()[d] == target[t]) {
      new_strides[t] = strides()[d];
    } else if (shape()[d] != 1) {
      fail("expand", "cannot expand shape ", shape_str(shape()), " to ", shape_str(target),
           ": dim ", d, " has size ", shape()[d], ", not 1");
    }
  }
  for (std::int64_t size : target)
    if (size < 0) fail("expand", "invalid target shape ", shape_str(target));
  if (target == shape()) return *this;
  return record<ExpandBackward>(*this, make_view(*this, target, new_strides, offset()));
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype());
  copy_elements(*this, out);
  return record<CloneBackward>(*this, out);
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target);
  copy_elements(*this, out);
  if (!is_floating(target)) return out;  // integer tensors carry no gradient
  return record<ToBackward>(*this, out);
}

}  // namespace flowgrad
