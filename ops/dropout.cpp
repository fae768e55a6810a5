#include "dropout.h"

#include "../autograd/node.h"
#include "kernels.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// dropout: y = x ⊙ m, m_i = [u_i >= p] / (1 − p) (the saved scaled mask);  dx = dy ⊙ m
class DropoutBackward final : public Node {
 public:
  std::string_view name() const override { return "dropout"; }
  TensorList backward(const Tensor& dy) override {
    return {kernels::map_binary(dy, mask.get(), "dropout", [](auto g, auto m) { return g * m; })};
  }
  SavedTensor mask{this};
};

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  if (!x.defined()) fail("dropout", "input is an undefined tensor");
  if (!(p >= 0.0 && p <= 1.0)) fail("dropout", "probability p must be in [0, 1], got ", p);
  if (!is_floating(x.dtype()))
    fail("dropout", "expected a float32 or float64 tensor, got ", dtype_name(x.dtype()));
  if (!training || p == 0.0) return x;

  // Drawn on one thread in row-major order: the mask depends only on the
  // generator's state and x's shape.
  Tensor mask = empty(x.shape(), x.dtype());
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  dispatch_floating(x.dtype(), "dropout", [&]<class T>() {
    T* m = mask.data<T>();
    const T keep_value = static_cast<T>(scale);
    for (std::int64_t i = 0; i < mask.numel(); ++i) m[i] = gen.uniform() >= p ? keep_value : T(0);
  });
  Tensor y = kernels::map_binary(x, mask, "dropout", [](auto v, auto m) { return v * m; });
  if (auto node = autograd::make_node<DropoutBackward>({x})) {
    node->mask.save(mask);
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
