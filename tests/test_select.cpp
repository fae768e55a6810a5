// Comparisons, where, masked_fill, allclose; abs, sin, cos; nll_loss, mse_loss.
#include <cmath>
#include <limits>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("comparisons give 0/1 masks with broadcasting, and no history") {
  const Tensor a = tensor({1, 2, 3}, {3, 1}, kFloat64).requires_grad_();
  const Tensor b = tensor({2, 3}, {2}, kFloat64);
  require_values(eq(a, b), {0, 0, 1, 0, 0, 1});
  require_values(ne(a, b), {1, 1, 0, 1, 1, 0});
  require_values(lt(a, b), {1, 1, 0, 1, 0, 0});
  require_values(le(a, b), {1, 1, 1, 1, 0, 1});
  require_values(gt(a, b), {0, 0, 0, 0, 1, 0});
  require_values(ge(a, b), {0, 0, 1, 0, 1, 1});
  CHECK(eq(a, b).shape() == Shape{3, 2});
  CHECK_FALSE(lt(a, b).requires_grad());
  require_values(gt(a, 1.5), {0, 1, 1});
  // NaN equals nothing; int64 tensors compare as values.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  require_values(eq(tensor({nan, 1.0}, kFloat64), tensor({nan, 1.0}, kFloat64)), {0, 1});
  require_values(ne(tensor({nan}, kFloat64), 0.0), {1});
  require_values(eq(from_vector<std::int64_t>({3, 4, 5}), 4.0), {0, 1, 0});
  REQUIRE_THROWS_WITH(lt(a, tensor({1, 2}, {2}, kFloat32)), Catch::Contains("[lt]") && Catch::Contains("float32"));
  REQUIRE_THROWS_WITH(eq(a, zeros({2, 2}, kFloat64)), Catch::Contains("[eq]") && Catch::Contains("[3, 1]"));
  REQUIRE_THROWS_WITH(ge(Tensor(), 1.0), Catch::Contains("[ge]"));
}

TEST_CASE("where picks per element, broadcasts, and sends the gradient to the side taken") {
  const Tensor condition = tensor({1, 0, 1}, {3}, kFloat64);
  const Tensor a = tensor({10, 20, 30, 40, 50, 60}, {2, 3}, kFloat64);
  const Tensor b = tensor({-1}, {1}, kFloat64);
  require_values(where(condition, a, b), {10, -1, 30, 40, -1, 60});
  // An int64 condition works; the side not taken never leaks NaN or inf.
  const double inf = std::numeric_limits<double>::infinity();
  require_values(where(from_vector<std::int64_t>({0, 2}), tensor({inf, 1.0}, kFloat64), tensor({5.0, inf}, kFloat64)),
                 {5, 1});
  Generator gen(3);
  const Tensor mask = gt(rand({2, 3}, gen, kFloat64), 0.5);
  require_gradients_match([&](const TensorList& in) { return where(mask, in[0], in[1]); },
                          {randn({2, 3}, gen, kFloat64), randn({3}, gen, kFloat64)});
  // da is dy where the condition holds, db the rest, summed over b's broadcast.
  const Tensor x = randn({2, 3}, gen, kFloat64).requires_grad_();
  const Tensor y = randn({3}, gen, kFloat64).requires_grad_();
  sum(where(condition, x, y)).backward();
  require_values(x.grad(), {1, 0, 1, 1, 0, 1});
  require_values(y.grad(), {0, 2, 0});
  REQUIRE_THROWS_WITH(where(condition, a, tensor({1.0}, kFloat32)), Catch::Contains("[where]"));
  // Nonzero counts in the condition's own dtype: 1e-50 is true next to float32 values.
  require_values(where(tensor({1e-50, 0.0}, kFloat64), tensor({1, 2}, kFloat32), tensor({3, 4}, kFloat32)), {1, 4});
  REQUIRE_THROWS_WITH(where(Tensor(), a, b), Catch::Contains("[where] condition is an undefined tensor"));
  REQUIRE_THROWS_WITH(where(tensor({1, 0}, kFloat64), a, b), Catch::Contains("[where]") && Catch::Contains("[2]"));
}

TEST_CASE("masked_fill fills where the mask is set and passes the gradient elsewhere") {
  const Tensor x = tensor({1, 2, 3, 4}, {2, 2}, kFloat64);
  const Tensor mask = tensor({0, 1}, {2}, kFloat64);
  require_values(masked_fill(x, mask, -1e9), {1, -1e9, 3, -1e9});
  Generator gen(4);
  require_gradients_match([&](const TensorList& in) { return masked_fill(in[0], mask, 0.5); },
                          {randn({2, 2}, gen, kFloat64)});
  REQUIRE_THROWS_WITH(masked_fill(x, zeros({3}, kFloat64), 0.0),
                      Catch::Contains("[masked_fill]") && Catch::Contains("[3]") && Catch::Contains("[2, 2]"));
  REQUIRE_THROWS_WITH(masked_fill(x, zeros({2, 2, 2}, kFloat64), 0.0), Catch::Contains("[masked_fill]"));
  REQUIRE_THROWS_WITH(masked_fill(zeros({2}, kInt64), mask, 0.0), Catch::Contains("[masked_fill]"));
}

TEST_CASE("allclose follows torch.allclose") {
  const Tensor a = tensor({1.0, 2.0, 1e10}, kFloat64);
  CHECK(allclose(a, tensor({1.0, 2.0 + 1e-6, 1e10 * (1 + 1e-6)}, kFloat64)));
  CHECK_FALSE(allclose(a, tensor({1.0, 2.001, 1e10}, kFloat64)));
  CHECK(allclose(a, tensor({1.0, 2.001, 1e10}, kFloat64), 1e-3));
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK_FALSE(allclose(tensor({nan}, kFloat64), tensor({nan}, kFloat64)));
  CHECK(allclose(tensor({nan, inf}, kFloat64), tensor({nan, inf}, kFloat64), 1e-5, 1e-8, true));
  CHECK_FALSE(allclose(tensor({inf}, kFloat64), tensor({-inf}, kFloat64)));
  CHECK(allclose(tensor({1, 1}, {2, 1}, kFloat32), tensor({1}, kFloat64)));  // broadcast, any float dtypes
  REQUIRE_THROWS_WITH(allclose(a, zeros({2}, kFloat64)), Catch::Contains("[allclose]"));
  REQUIRE_THROWS_WITH(allclose(a, a, -1.0), Catch::Contains("[allclose]") && Catch::Contains("rtol=-1"));
}

TEST_CASE("abs, sin and cos: values and gradients") {
  const Tensor x = tensor({-2.0, -0.5, 0.0, 0.5, 2.0}, kFloat64).requires_grad_();
  require_values(abs(x), {2, 0.5, 0, 0.5, 2});
  require_values(sin(x), {std::sin(-2.0), std::sin(-0.5), 0, std::sin(0.5), std::sin(2.0)}, 1e-15);
  require_values(cos(x), {std::cos(-2.0), std::cos(-0.5), 1, std::cos(0.5), std::cos(2.0)}, 1e-15);
  sum(abs(x)).backward();
  require_values(x.grad(), {-1, -1, 0, 1, 1});  // 0 at the kink, as PyTorch
  Generator gen(5);
  for (const auto& op : {+[](const Tensor& t) { return sin(t); }, +[](const Tensor& t) { return cos(t); }})
    require_gradients_match([&](const TensorList& in) { return op(in[0]); }, {transposed_randn({3, 4}, gen)});
  // abs away from its kink
  require_gradients_match([](const TensorList& in) { return abs(in[0]); },
                          {tensor({-1.5, -0.25, 0.25, 3.0}, kFloat64)});
  CHECK(sin(tensor({1.0}, kFloat32)).dtype() == kFloat32);
}

TEST_CASE("nll_loss is cross_entropy on log-probabilities, ignore_index included") {
  Generator gen(6);
  const Tensor logits = randn({4, 5}, gen, kFloat64);
  const Tensor targets = from_vector<std::int64_t>({1, -100, 4, 0});
  const Tensor log_probs = log_softmax(logits, -1);
  CHECK(nll_loss(log_probs, targets).item<double>() ==
        Approx(cross_entropy(logits, targets).item<double>()).epsilon(1e-13));
  const std::vector<double> lp = log_probs.to_vector<double>();
  CHECK(nll_loss(log_probs, targets).item<double>() == Approx(-(lp[1] + lp[14] + lp[15]) / 3).epsilon(1e-14));
  require_gradients_match([&](const TensorList& in) { return nll_loss(in[0], targets); },
                          {randn({4, 5}, gen, kFloat64)});
  // [B, T, C] with targets [B, T], every row ignored: NaN as in PyTorch
  CHECK(std::isnan(nll_loss(zeros({2, 1, 3}, kFloat64), full({2, 1}, -100, kInt64)).item<double>()));
  REQUIRE_THROWS_WITH(nll_loss(log_probs, from_vector<std::int64_t>({0, 1, 5, 0})),
                      Catch::Contains("[nll_loss]") && Catch::Contains("target 5"));
  REQUIRE_THROWS_WITH(nll_loss(log_probs, zeros({4}, kFloat64)), Catch::Contains("[nll_loss]") && Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(nll_loss(log_probs, from_vector<std::int64_t>({0, 1})),
                      Catch::Contains("[nll_loss]") && Catch::Contains("[4, 5]"));
}

TEST_CASE("mse_loss: value and gradients in both arguments") {
  const Tensor x = tensor({1, 2, 3, 4}, {2, 2}, kFloat64);
  const Tensor t = tensor({1, 0, 3, 1}, {2, 2}, kFloat64);
  CHECK(mse_loss(x, t).item<double>() == Approx((4.0 + 9.0) / 4.0));
  Generator gen(7);
  require_gradients_match([](const TensorList& in) { return mse_loss(in[0], in[1]); },
                          {transposed_randn({3, 2}, gen), randn({3, 2}, gen, kFloat64)});
  REQUIRE_THROWS_WITH(mse_loss(x, zeros({4}, kFloat64)), Catch::Contains("[mse_loss]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(mse_loss(x, t.to(kFloat32)), Catch::Contains("[mse_loss]") && Catch::Contains("float32"));
  REQUIRE_THROWS_WITH(mse_loss(zeros({0}, kFloat64), zeros({0}, kFloat64)), Catch::Contains("[mse_loss]"));
}

// Smaller fixes that came with these ops.

TEST_CASE("mean has its own node, and its gradient is 1/n everywhere") {
  const Tensor x = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64).requires_grad_();
  const Tensor y = mean(x, {1});
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name() == "mean");
  require_values(y, {2, 5});
  sum(y).backward();
  require_values(x.grad(), {1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3});
  Generator gen(8);
  require_gradients_match([](const TensorList& in) { return mean(in[0], {0}, true); }, {transposed_randn({3, 4}, gen)});
}

TEST_CASE("from_vector takes any integer type as int64, and refuses what int64 cannot hold") {
  const Tensor a = from_vector(std::vector<int>{-1, 2, 3}, {3});
  CHECK(a.dtype() == kInt64);
  CHECK(a.to_vector<std::int64_t>() == std::vector<std::int64_t>{-1, 2, 3});
  CHECK(from_vector(std::vector<std::uint8_t>{255, 0}).to_vector<std::int64_t>() == std::vector<std::int64_t>{255, 0});
  CHECK(from_vector(std::vector<float>{1.5f}).dtype() == kFloat32);
  REQUIRE_THROWS_WITH(from_vector(std::vector<std::uint64_t>{1, std::uint64_t{1} << 63}),
                      Catch::Contains("[from_vector]") && Catch::Contains("index 1"));
  REQUIRE_THROWS_WITH(from_vector(std::vector<int>{1, 2}, {3}), Catch::Contains("[from_vector]"));
}

TEST_CASE("Module::load names the file when its tensors do not fit the module") {
  TempDir dir;
  Generator gen(9);
  nn::Linear small(2, 3, gen);
  nn::Linear other(4, 3, gen);
  const std::string path = dir.file("small.safetensors");
  small.save(path);
  REQUIRE_THROWS_WITH(other.load(path), Catch::Contains("[Module::load]") && Catch::Contains(path) &&
                                            Catch::Contains("weight") && Catch::Contains("[3, 2]"));
  REQUIRE_THROWS_WITH(other.load(dir.file("missing.safetensors")), Catch::Contains("missing.safetensors"));
}

TEST_CASE("min, argmax and argmin: first extreme, NaN propagates, gradient to the first arg-min") {
  const Tensor x = tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 9}, {3, 4}, kFloat64).requires_grad_();
  require_values(min(x, {1}), {1, 2, 3});
  CHECK(min(x).item<double>() == 1);
  CHECK(min(x, {0}, true).shape() == Shape{1, 4});
  CHECK(min(x, {1}).grad_fn()->name() == "min");
  sum(min(x, {1})).backward();  // ties: the first 1 in row 0
  require_values(x.grad(), {0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0});
  Generator gen(10);
  require_gradients_match([](const TensorList& in) { return min(in[0], {0}); }, {transposed_randn({3, 4}, gen)});

  require_values(argmax(x, 1), {2, 1, 3});
  require_values(argmin(x, 1), {1, 2, 1});
  CHECK(argmax(x, 1).dtype() == kInt64);
  CHECK(argmax(x, 0, true).shape() == Shape{1, 4});
  require_values(argmax(x, 0), {1, 1, 2, 2});  // ties: the first 5 in column 0
  CHECK(argmax(x).item<std::int64_t>() == 5);  // the first 9, flattened
  CHECK(argmin(x).dim() == 0);
  CHECK(argmin(x).item<std::int64_t>() == 1);
  CHECK(argmax(x, -1).shape() == Shape{3});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(argmax(tensor({1.0, nan, 7.0}, kFloat64)).item<std::int64_t>() == 1);
  CHECK(argmin(tensor({1.0, nan, -7.0}, kFloat64)).item<std::int64_t>() == 1);
  CHECK(std::isnan(min(tensor({1.0, nan}, kFloat64)).item<double>()));
  REQUIRE_THROWS_WITH(argmax(x, 2), Catch::Contains("[argmax]"));
  REQUIRE_THROWS_WITH(argmin(zeros({0}, kFloat64)), Catch::Contains("[argmin]"));
  REQUIRE_THROWS_WITH(min(zeros({2, 0}, kFloat64), {1}), Catch::Contains("[min]") && Catch::Contains("[2, 0]"));
}

TEST_CASE("gradcheck_parameters checks a module's own parameters and leaves their gradients alone") {
  Generator gen(12);
  nn::Linear linear(3, 2, gen, nn::LinearOptions{.init_std = 0.5, .dtype = kFloat64});
  const Tensor x = randn({4, 3}, gen, kFloat64);
  const Tensor sentinel = full({2, 3}, 7.0, kFloat64);
  linear.weight.set_grad(sentinel);  // a gradient the caller accumulated before
  const TensorList params = linear.parameters();
  GradcheckResult result = gradcheck_parameters([&] { return tanh(linear.forward(x)); }, params);
  INFO(result.report());
  CHECK(result.passed);
  CHECK(linear.weight.grad().shares_storage_with(sentinel));
  require_values(linear.weight.grad(), std::vector<double>(6, 7.0));
  CHECK_FALSE(linear.bias.grad().defined());
  // A gradient that misses a path fails: the weight is also used outside autograd.
  GradcheckResult wrong = gradcheck_parameters(
      [&] { return linear.forward(x) + sum(linear.weight.detach() * linear.weight.detach()); }, params);
  CHECK_FALSE(wrong.passed);
  // A tied parameter listed twice keeps its gradient.
  GradcheckResult tied = gradcheck_parameters([&] { return linear.forward(x); }, {linear.weight, linear.weight});
  CHECK(tied.passed);
  CHECK(linear.weight.grad().shares_storage_with(sentinel));
  // A function that throws leaves the parameters' values as they were.
  const std::vector<double> before = linear.weight.to_vector<double>();
  int calls = 0;
  REQUIRE_THROWS(gradcheck_parameters(
      [&] {
        if (++calls == 3) fail("test", "thrown during a finite difference");
        return linear.forward(x);
      },
      params));
  CHECK(linear.weight.to_vector<double>() == before);
  CHECK(linear.weight.grad().shares_storage_with(sentinel));
  REQUIRE_THROWS_WITH(gradcheck_parameters([&] { return linear.forward(x); }, {x}),
                      Catch::Contains("[gradcheck_parameters]") && Catch::Contains("[4, 3]"));
}

TEST_CASE("index_select and gather pick along a dim; their gradients scatter-add back") {
  const Tensor x = tensor({0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23}, {3, 4}, kFloat64);
  require_values(index_select(x, 0, from_vector<std::int64_t>({2, 0, 2})), {20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23});
  require_values(index_select(x, -1, from_vector<std::int64_t>({3, 1})), {3, 1, 13, 11, 23, 21});
  const Tensor index = from_vector<std::int64_t>({3, 0, 1, 1, 2, 2}, {3, 2});
  require_values(gather(x, 1, index), {3, 0, 11, 11, 22, 22});
  // An index smaller than x in the other dims reads only that part.
  require_values(gather(x, 0, from_vector<std::int64_t>({2, 1}, {1, 2})), {20, 11});
  Generator gen(13);
  require_gradients_match([&](const TensorList& in) { return gather(in[0], 1, index); }, {transposed_randn({3, 4}, gen)});
  require_gradients_match([&](const TensorList& in) { return gather(in[0], 0, from_vector<std::int64_t>({2, 2}, {1, 2})); },
                          {randn({3, 4}, gen, kFloat64)});
  require_gradients_match(
      [&](const TensorList& in) { return index_select(in[0], 0, from_vector<std::int64_t>({1, 1, 0})); },
      {randn({2, 3}, gen, kFloat64)});
  const Tensor leaf = randn({2, 3}, gen, kFloat64).requires_grad_();
  sum(index_select(leaf, 1, from_vector<std::int64_t>({2, 2, 0}))).backward();
  require_values(leaf.grad(), {1, 0, 2, 1, 0, 2});  // a repeated index adds up
  REQUIRE_THROWS_WITH(index_select(x, 0, from_vector<std::int64_t>({3})),
                      Catch::Contains("[index_select]") && Catch::Contains("index 3") && Catch::Contains("[3, 4]"));
  REQUIRE_THROWS_WITH(index_select(x, 2, from_vector<std::int64_t>({0})), Catch::Contains("[index_select]"));
  REQUIRE_THROWS_WITH(index_select(x, 0, tensor({0.0}, kFloat64)), Catch::Contains("[index_select]") &&
                                                                         Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(gather(x, 1, from_vector<std::int64_t>({0, 1})), Catch::Contains("[gather]") &&
                                                                             Catch::Contains("as many dims"));
  REQUIRE_THROWS_WITH(gather(x, 1, zeros({4, 1}, kInt64)), Catch::Contains("[gather]") && Catch::Contains("dim 0"));
  REQUIRE_THROWS_WITH(gather(x, 1, full({3, 1}, -1, kInt64)), Catch::Contains("[gather]") && Catch::Contains("index -1"));
}

TEST_CASE("topk: the k largest or smallest, ties in index order, NaN largest; values differentiable") {
  const Tensor x = tensor({3, 1, 4, 1, 5, 9, 2, 6}, {2, 4}, kFloat64);
  TopK top = topk(x, 2);
  require_values(top.values, {4, 3, 9, 6});
  require_values(top.indices, {2, 0, 1, 3});
  CHECK(top.indices.dtype() == kInt64);
  TopK bottom = topk(x, 3, 1, false);
  require_values(bottom.values, {1, 1, 3, 2, 5, 6});
  require_values(bottom.indices, {1, 3, 0, 2, 0, 3});  // the tie 1, 1 in index order
  TopK columns = topk(x, 1, 0);
  require_values(columns.values, {5, 9, 4, 6});
  CHECK(columns.values.shape() == Shape{1, 4});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(topk(tensor({1.0, nan, 2.0}, kFloat64), 1).indices.item<std::int64_t>() == 1);
  CHECK(topk(x, 0).values.shape() == Shape{2, 0});
  Generator gen(14);
  require_gradients_match([](const TensorList& in) { return topk(in[0], 2, 1).values; }, {transposed_randn({3, 5}, gen)});
  REQUIRE_THROWS_WITH(topk(x, 5), Catch::Contains("[topk]") && Catch::Contains("k = 5") && Catch::Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(topk(x, 1, 3), Catch::Contains("[topk]"));
  REQUIRE_THROWS_WITH(topk(zeros({3}, kInt64), 1), Catch::Contains("[topk]") && Catch::Contains("int64"));
}
