// The backward engine: Kahn's algorithm over the graph reachable from the
// root, with an explicit stack (no recursion, so deep graphs are fine).
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "grad_mode.h"
#include "node.h"

namespace flowgrad::autograd {
namespace {

// Number of edges into each node from nodes reachable from `root`.
std::unordered_map<Node*, int> count_dependencies(Node* root) {
  std::unordered_map<Node*, int> dependencies;
  std::unordered_set<Node*> seen{root};
  std::vector<Node*> stack{root};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& edge : node->next_edges()) {
      Node* next = edge.node.get();
      if (next == nullptr) continue;
      ++dependencies[next];
      if (seen.insert(next).second) stack.push_back(next);
    }
  }
  return dependencies;
}

void check_gradient(const Tensor& grad, const Shape& shape, DType dtype, std::string_view producer,
                    std::string_view what) {
  if (grad.shape() != shape || grad.dtype() != dtype)
    fail(producer, what, " has shape ", shape_str(grad.shape()), " and dtype ",
         dtype_name(grad.dtype()), ", expected ", shape_str(shape), " and ", dtype_name(dtype));
}

// Gradients that autograd::grad asks for: those arriving at these nodes are
// kept (after hooks) in `grads`, and no leaf's .grad() is touched.
struct Capture {
  std::unordered_map<Node*, std::vector<std::size_t>> inputs_of;  // node -> input positions
  TensorList grads;
};

// Runs the tensor hooks of `node`'s output, then keeps a retained gradient.
Tensor apply_hooks(Node& node, Tensor grad, bool keep_retained = true) {
  for (const GradHook& hook : node.hooks()) {
    Tensor replaced = hook(grad);
    if (replaced.defined()) {
      check_gradient(replaced, grad.shape(), grad.dtype(), "register_hook",
                     "the gradient returned by a hook");
      grad = replaced;
    }
  }
  if (std::shared_ptr<TensorImpl> retained = node.retained_output(); retained && keep_retained)
    accumulate_grad(retained->autograd->grad, grad);
  return grad;
}

// Sums gradients arriving at one node. The first is kept as it is (no copy);
// later ones are added into a buffer this function owns.
void add_to_pending(Tensor& sum, const Tensor& incoming) {
  if (!sum.defined()) {
    sum = incoming;
    return;
  }
  const bool privately_owned = sum.impl_ptr().use_count() == 1 &&
                               sum.storage().use_count() == 1 && sum.is_contiguous() &&
                               !sum.shares_storage_with(incoming);
  if (!privately_owned) {
    Tensor owned;
    accumulate_grad(owned, sum);  // a private contiguous copy
    sum = owned;
  }
  add_elements(incoming, sum);
}

void run_engine(const Tensor& root, const Tensor& grad_root, bool retain_graph, Capture* capture) {
  const char* op = capture != nullptr ? "grad" : "backward";
  std::shared_ptr<Node> root_node = gradient_node(root);
  if (!root_node)
    fail(op, "the tensor of shape ", shape_str(root.shape()), " does not require grad and has no grad_fn");
  check_gradient(grad_root, root.shape(), root.dtype(), op, "the gradient given");

  NoGradGuard no_grad;
  std::unordered_map<Node*, int> dependencies = count_dependencies(root_node.get());
  std::unordered_map<Node*, Tensor> pending;  // summed gradient of each node's output
  pending[root_node.get()] = grad_root;
  std::vector<std::shared_ptr<Node>> ready{root_node};

  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    auto found = pending.find(node.get());
    Tensor grad = found == pending.end() ? Tensor() : std::move(found->second);
    if (found != pending.end()) pending.erase(found);

    // A node that received no gradient only passes on "nothing": its inputs
    // still need their dependency counts lowered.
    TensorList input_grads;
    if (grad.defined()) {
      if (node->released())
        fail(node->name(),
             "trying to run backward through the graph a second time: it was freed by the "
             "first backward; call backward(gradient, /*retain_graph=*/true) the first time");
      grad = apply_hooks(*node, std::move(grad), capture == nullptr);
      if (capture != nullptr) {
        if (auto wanted = capture->inputs_of.find(node.get()); wanted != capture->inputs_of.end()) {
          Tensor own;  // a private contiguous copy: grad may be a broadcast view or the caller's tensor
          accumulate_grad(own, grad);
          for (std::size_t position : wanted->second) capture->grads[position] = own;
        }
      }
      if (capture != nullptr && dynamic_cast<AccumulateGrad*>(node.get()) != nullptr) {
        // autograd::grad leaves every .grad() as it was.
      } else if (profile::enabled()) {
        const std::int64_t start = profile::now_ns();
        input_grads = node->backward(grad);
        const char* region = node->profile_region();
        profile::record("backward:" + std::string(region != nullptr ? std::string_view(region) : node->name()),
                        static_cast<double>(profile::now_ns() - start) * 1e-9);
      } else {
        input_grads = node->backward(grad);
      }
      if (!retain_graph && node->releasable()) node->release_saved();
    }

    const std::vector<Edge>& edges = node->next_edges();
    if (!input_grads.empty() && input_grads.size() != edges.size())
      fail(node->name(), "internal error: backward returned ", input_grads.size(),
           " gradients for ", edges.size(), " inputs");
    for (std::size_t i = 0; i < edges.size(); ++i) {
      Node* next = edges[i].node.get();
      if (next == nullptr) continue;
      if (i < input_grads.size() && input_grads[i].defined()) {
        check_gradient(input_grads[i], edges[i].shape, edges[i].dtype, node->name(),
                       "the gradient of input " + std::to_string(i));
        add_to_pending(pending[next], input_grads[i]);
      }
      if (--dependencies[next] == 0) ready.push_back(edges[i].node);
    }
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph) {
  run_engine(root, grad_root, retain_graph, nullptr);
}

TensorList grad(const Tensor& output, const TensorList& inputs, const Tensor& grad_output, bool retain_graph,
                bool allow_unused) {
  if (!output.defined()) fail("grad", "the output is an undefined tensor");
  Capture capture;
  capture.grads.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::shared_ptr<Node> node = inputs[i].defined() ? gradient_node(inputs[i]) : nullptr;
    if (!node)
      fail("grad", "input ", i, inputs[i].defined() ? " of shape " + shape_str(inputs[i].shape()) : std::string(),
           " does not require grad");
    capture.inputs_of[node.get()].push_back(i);
  }
  Tensor grad_root = grad_output;
  if (!grad_root.defined()) {
    if (output.numel() != 1)
      fail("grad", "a grad_output can be created implicitly only for a one-element output, got shape ",
           shape_str(output.shape()));
    grad_root = ones(output.shape(), output.dtype());
  }
  run_engine(output, grad_root, retain_graph, &capture);
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (!capture.grads[i].defined() && !allow_unused)
      fail("grad", "the output of shape ", shape_str(output.shape()), " does not depend on input ", i, " of shape ",
           shape_str(inputs[i].shape()), " (pass allow_unused = true to get an undefined gradient)");
  return capture.grads;
}

}  // namespace flowgrad::autograd
