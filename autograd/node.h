// The autograd graph.
//
// Every differentiable op that runs with grad mode on and an input that
// requires grad creates one Node: it holds an Edge to the node of each input
// (its grad_fn, or the leaf's AccumulateGrad), the tensors it saved for its
// backward, and its backward formula. The output tensor points back at the
// node (AutogradMeta::grad_fn). Nodes have exactly one output.
//
// Gradient contract: backward passes *accumulate* into .grad() of leaves
// (and of tensors that called retain_grad()); they never overwrite it.
// Zero it between steps.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "../core/profile.h"
#include "../core/tensor.h"

namespace flowgrad::autograd {

class Node;

// Where the gradient of one input goes, and what it must look like.
struct Edge {
  std::shared_ptr<Node> node;  // null when the input does not require grad
  Shape shape;
  DType dtype = kFloat32;
};

// A tensor kept for backward. It holds a history-free alias (so a node that
// saves its own output makes no reference cycle) and the storage version at
// save time: unpacking after an in-place change, or after the graph was
// released, throws instead of returning silently wrong data.
class SavedTensor {
 public:
  explicit SavedTensor(Node* owner);
  SavedTensor(const SavedTensor&) = delete;
  SavedTensor& operator=(const SavedTensor&) = delete;

  void save(const Tensor& tensor);
  Tensor get() const;
  void release() { data_ = Tensor(); }

 private:
  Node* owner_;
  Tensor data_;
  std::uint64_t saved_version_ = 0;
  bool was_saved_ = false;
};

class Node {
 public:
  Node() = default;
  virtual ~Node();  // iterative: freeing a long chain must not recurse per node
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual std::string_view name() const = 0;
  // dL/d(input_i) for every input, given dL/d(output). An undefined tensor
  // means "no gradient" for that input. Runs with grad mode off.
  virtual TensorList backward(const Tensor& grad_output) = 0;
  // AccumulateGrad nodes outlive a backward pass; op nodes are released.
  virtual bool releasable() const { return true; }

  const std::vector<Edge>& next_edges() const { return next_edges_; }
  void add_next_edge(Edge edge) { next_edges_.push_back(std::move(edge)); }

  // Hooks on the gradient of this node's output (i.e. of its output tensor).
  void add_hook(GradHook hook) { hooks_.push_back(std::move(hook)); }
  const std::vector<GradHook>& hooks() const { return hooks_; }
  // The output tensor whose .grad() should keep this gradient (retain_grad).
  void retain_output_grad(const std::shared_ptr<TensorImpl>& output) { retained_output_ = output; }
  std::shared_ptr<TensorImpl> retained_output() const { return retained_output_.lock(); }

  // Frees the saved tensors; a later backward through this node throws.
  void release_saved();
  bool released() const { return released_; }

  // The profile region open when the node was made (see core/profile.h), or null.
  const char* profile_region() const { return profile_region_; }

 private:
  friend class SavedTensor;
  std::vector<Edge> next_edges_;
  std::vector<SavedTensor*> saved_;
  std::vector<GradHook> hooks_;
  std::weak_ptr<TensorImpl> retained_output_;
  bool released_ = false;
  const char* profile_region_ = profile::current_region();
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;           // set for op outputs (non-leaves)
  std::shared_ptr<Node> grad_accumulator;  // leaves: created on first use
};

// Accumulates the incoming gradient into a leaf's .grad(), then runs the
// leaf's post-accumulate hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const std::shared_ptr<TensorImpl>& leaf) : leaf_(leaf) {}
  std::string_view name() const override { return "AccumulateGrad"; }
  TensorList backward(const Tensor& grad_output) override;
  bool releasable() const override { return false; }
  void add_post_accumulate_hook(PostAccumulateGradHook hook) { post_hooks_.push_back(std::move(hook)); }

 private:
  std::weak_ptr<TensorImpl> leaf_;
  std::vector<PostAccumulateGradHook> post_hooks_;
};

// grad += incoming, or a private contiguous copy of incoming when grad is
// undefined (the incoming gradient may alias other tensors).
void accumulate_grad(Tensor& grad, const Tensor& incoming);

// The node that receives the gradient of `tensor`: its grad_fn, or for a
// leaf that requires grad its AccumulateGrad node; null otherwise.
std::shared_ptr<Node> gradient_node(const Tensor& tensor);

// The op-writing helpers. make_node returns null when no history is needed
// (grad mode off, or no input requires grad); otherwise a node with one edge
// per input. set_history makes `output` a non-leaf produced by `node`.
bool any_requires_grad(const TensorList& inputs);
template <class NodeT>
std::shared_ptr<NodeT> make_node(const TensorList& inputs);
void set_history(const Tensor& output, const std::shared_ptr<Node>& node);

// Runs backward from `root` with dL/d(root) = `grad_root`.
void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph);

// The gradients of `output` with respect to `inputs`, returned instead of
// accumulated: no .grad() anywhere in the graph changes (as torch.autograd.grad).
// `grad_output` is dL/d(output) (default: 1 for a one-element output).
// Every input must require grad; one that `output` does not depend on is an
// error, or an undefined tensor with allow_unused. Hooks on the inputs run.
// The gradients carry no graph themselves (no double backward).
TensorList grad(const Tensor& output, const TensorList& inputs, const Tensor& grad_output = Tensor(),
                bool retain_graph = false, bool allow_unused = false);

// ---- template definitions ----

void connect_inputs(Node& node, const TensorList& inputs);

template <class NodeT>
std::shared_ptr<NodeT> make_node(const TensorList& inputs) {
  if (!any_requires_grad(inputs)) return nullptr;
  auto node = std::make_shared<NodeT>();
  connect_inputs(*node, inputs);
  return node;
}

}  // namespace flowgrad::autograd
