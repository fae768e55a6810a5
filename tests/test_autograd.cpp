#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("gradients accumulate over shared sub-expressions and several paths") {
  Tensor x = tensor({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  Tensor y = x * x;         // used twice below
  Tensor z = sum(y + y * x);  // z = Σ x² + x³ ;  dz/dx = 2x + 3x²
  z.backward();
  require_values(x.grad(), {2 + 3, 4 + 12, 6 + 27});
  // A second backward accumulates into .grad.
  sum(x * 2.0).backward();
  require_values(x.grad(), {7, 18, 35});
}

TEST_CASE("a deep chain backpropagates without recursion") {
  Tensor x = tensor({1.0}, kFloat64).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0;
  sum(y).backward();
  require_values(x.grad(), {1.0});
}
