#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("sigmoid forward and gradient") {
  require_values(sigmoid(tensor({0.0}, kFloat64)), {0.5});
  Generator gen(0);
  require_gradients_match([](const TensorList& in) { return sigmoid(in[0]); },
                          {randn({3, 4}, gen, kFloat64)});
}
