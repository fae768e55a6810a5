// The autograd methods of Tensor (declared in core/tensor.h).
#include "grad_mode.h"
#include "node.h"

namespace flowgrad {

using autograd::AutogradMeta;

namespace {

AutogradMeta& meta_of(const Tensor& t) {
  auto& meta = t.unsafe_impl()->autograd;
  if (!meta) meta = std::make_shared<AutogradMeta>();
  return *meta;
}

}  // namespace

bool Tensor::requires_grad() const {
  const auto& meta = impl().autograd;
  return meta && meta->requires_grad;
}

Tensor& Tensor::requires_grad_(bool enabled) {
  if (!is_leaf())
    fail("requires_grad_", "can only change requires_grad of a leaf tensor; this one of shape ",
         shape_str(shape()), " was produced by ", grad_fn()->name(), " (use detach())");
  if (enabled && !is_floating(dtype()))
    fail("requires_grad_", "only float tensors can require grad, got ", dtype_name(dtype()));
  meta_of(*this).requires_grad = enabled;
  return *this;
}

bool Tensor::is_leaf() const {
  const auto& meta = impl().autograd;
  return !meta || !meta->grad_fn;
}

Tensor Tensor::grad() const {
  const auto& meta = impl().autograd;
  return meta ? meta->grad : Tensor();
}

void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined() && (grad.shape() != shape() || grad.dtype() != dtype()))
    fail("set_grad", "gradient of shape ", shape_str(grad.shape()), " and dtype ",
         dtype_name(grad.dtype()), " does not match tensor of shape ", shape_str(shape()),
         " and dtype ", dtype_name(dtype()));
  meta_of(*this).grad = grad;
}

std::shared_ptr<autograd::Node> Tensor::grad_fn() const {
  const auto& meta = impl().autograd;
  return meta ? meta->grad_fn : nullptr;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor grad_root = gradient;
  if (!grad_root.defined()) {
    if (numel() != 1)
      fail("backward", "a gradient can be created implicitly only for a one-element tensor, got ",
           "shape ", shape_str(shape()), "; pass the gradient explicitly");
    grad_root = ones(shape(), dtype());
  }
  autograd::run_backward(*this, grad_root, retain_graph);
}

void Tensor::retain_grad() const {
  if (!requires_grad())
    fail("retain_grad", "called on a tensor of shape ", shape_str(shape()),
         " that does not require grad");
  if (is_leaf()) return;  // leaves keep their gradient anyway
  grad_fn()->retain_output_grad(impl_);
}

bool Tensor::retains_grad() const {
  if (!requires_grad()) return false;
  return is_leaf() ? true : grad_fn()->retained_output() == impl_;
}

void Tensor::register_hook(GradHook hook) const {
  if (!requires_grad())
    fail("register_hook", "cannot register a hook on a tensor of shape ", shape_str(shape()),
         " that does not require grad");
  autograd::gradient_node(*this)->add_hook(std::move(hook));
}

void Tensor::register_post_accumulate_grad_hook(PostAccumulateGradHook hook) const {
  if (!requires_grad() || !is_leaf())
    fail("register_post_accumulate_grad_hook", "needs a leaf that requires grad; this tensor of shape ",
         shape_str(shape()), requires_grad() ? " was produced by an op" : " does not require grad");
  std::static_pointer_cast<autograd::AccumulateGrad>(autograd::gradient_node(*this))
      ->add_post_accumulate_hook(std::move(hook));
}

Tensor Tensor::detach() const {
  auto alias = std::make_shared<TensorImpl>();
  alias->storage = impl().storage;
  alias->shape = impl().shape;
  alias->strides = impl().strides;
  alias->offset = impl().offset;
  alias->dtype = impl().dtype;
  return Tensor(std::move(alias));
}

}  // namespace flowgrad
