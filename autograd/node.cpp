#include "node.h"

#include "grad_mode.h"

namespace flowgrad::autograd {

SavedTensor::SavedTensor(Node* owner) : owner_(owner) { owner_->saved_.push_back(this); }

void SavedTensor::save(const Tensor& tensor) {
  data_ = tensor.defined() ? tensor.detach() : Tensor();
  saved_version_ = tensor.defined() ? tensor.version() : 0;
  was_saved_ = true;
}

Tensor SavedTensor::get() const {
  if (owner_->released())
    fail(owner_->name(),
         "trying to run backward through the graph a second time: its saved tensors were "
         "freed by the first backward; call backward(gradient, /*retain_graph=*/true) the first "
         "time");
  if (!was_saved_) fail(owner_->name(), "internal error: a saved tensor was never saved");
  if (data_.defined() && data_.version() != saved_version_)
    fail(owner_->name(), "a tensor of shape ", shape_str(data_.shape()),
         " saved for backward was modified by an in-place operation (version ", saved_version_,
         " -> ", data_.version(), "); clone it before modifying it");
  return data_;
}

// Dropping the last reference to a chain of n nodes would otherwise recurse n
// deep (~Node -> ~Edge -> ~shared_ptr<Node> -> ~Node ...) and overflow the
// stack for long graphs. Instead, the edges of every node that only we still
// hold are moved onto an explicit stack, so each node dies with no edges left.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  auto take_edges = [&pending](std::vector<Edge>& edges) {
    for (Edge& edge : edges)
      if (edge.node) pending.push_back(std::move(edge.node));
  };
  take_edges(next_edges_);
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    if (node.use_count() == 1) take_edges(node->next_edges_);
  }
}

void Node::release_saved() {
  for (SavedTensor* saved : saved_) saved->release();
  released_ = true;
}

void accumulate_grad(Tensor& grad, const Tensor& incoming) {
  if (!grad.defined()) {
    grad = empty(incoming.shape(), incoming.dtype());
    copy_elements(incoming, grad);
  } else {
    add_elements(incoming, grad);
  }
}

TensorList AccumulateGrad::backward(const Tensor& grad_output) {
  std::shared_ptr<TensorImpl> leaf = leaf_.lock();
  if (!leaf) return {};
  accumulate_grad(leaf->autograd->grad, grad_output);
  const Tensor leaf_tensor(leaf);
  for (const PostAccumulateGradHook& hook : post_hooks_) hook(leaf_tensor);
  return {};
}

std::shared_ptr<Node> gradient_node(const Tensor& tensor) {
  const std::shared_ptr<AutogradMeta>& meta = tensor.unsafe_impl()->autograd;
  if (!meta || !meta->requires_grad) return nullptr;
  if (meta->grad_fn) return meta->grad_fn;
  if (!meta->grad_accumulator)
    meta->grad_accumulator = std::make_shared<AccumulateGrad>(tensor.impl_ptr());
  return meta->grad_accumulator;
}

bool any_requires_grad(const TensorList& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& input : inputs)
    if (input.defined() && input.requires_grad()) return true;
  return false;
}

void connect_inputs(Node& node, const TensorList& inputs) {
  for (const Tensor& input : inputs) {
    if (!input.defined()) {
      node.add_next_edge(Edge{});
      continue;
    }
    node.add_next_edge(Edge{gradient_node(input), input.shape(), input.dtype()});
  }
}

void set_history(const Tensor& output, const std::shared_ptr<Node>& node) {
  auto meta = std::make_shared<AutogradMeta>();
  meta->requires_grad = true;
  meta->grad_fn = node;
  output.unsafe_impl()->autograd = std::move(meta);
}

}  // namespace flowgrad::autograd
