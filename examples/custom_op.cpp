// A differentiable op written outside the library: softplus(x) = log(1 + eˣ)
// with its backward by hand, checked against finite differences.
#include <flowgrad/flowgrad.h>

#include <cstdio>

namespace fg = flowgrad;

// The node autograd keeps for one softplus call.
// softplus: y = log(1 + eˣ);  dx = dy · σ(x)
class SoftplusBackward final : public fg::autograd::Node {
 public:
  std::string_view name() const override { return "softplus"; }  // shown in errors
  // One gradient per input, in the order given to make_node. Ops called here
  // record nothing: the engine runs backward without grad mode.
  fg::TensorList backward(const fg::Tensor& dy) override { return {dy * fg::sigmoid(input.get())}; }
  fg::autograd::SavedTensor input{this};  // detects in-place changes to x before backward
};

fg::Tensor softplus(const fg::Tensor& x) {
  fg::Tensor y;
  {
    fg::NoGradGuard no_grad;  // the forward's own ops record nothing; the node below does
    // max(x, 0) + log(1 + e^−|x|): the same value, without overflow for large x
    y = fg::relu(x) + fg::log(fg::exp(-fg::abs(x)) + 1.0);
  }
  // make_node returns null when no input requires grad (or grad mode is off).
  if (auto node = fg::autograd::make_node<SoftplusBackward>({x})) {
    node->input.save(x);
    fg::autograd::set_history(y, node);
  }
  return y;
}

int main() {
  fg::Generator gen(0);
  const fg::GradcheckResult check =
      fg::gradcheck([](const fg::TensorList& in) { return softplus(in[0]); }, {fg::randn({3, 4}, gen, fg::kFloat64)});
  std::printf("softplus: %s\n", check.report().c_str());
  return check.passed ? 0 : 1;
}
