#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

using UnaryOp = Tensor (*)(const Tensor&);

// A float64 input of `shape` in one of three layouts: contiguous, transposed
// (non-contiguous) or narrowed out of a larger tensor (non-zero offset).
Tensor input_in_layout(const Shape& shape, int layout, Generator& gen, double low, double high) {
  switch (layout) {
    case 0: return rand(shape, gen, kFloat64, low, high);
    case 1: {
      Shape swapped = shape;
      std::swap(swapped[0], swapped[1]);
      return rand(swapped, gen, kFloat64, low, high).transpose(0, 1);
    }
    default: {
      Shape wider = shape;
      wider[1] += 3;
      return rand(wider, gen, kFloat64, low, high).narrow(1, 2, shape[1]);
    }
  }
}

}  // namespace

TEST_CASE("unary ops match hand-computed values") {
  Tensor x = tensor({-2.0, -0.5, 0.0, 0.5, 2.0}, kFloat64);
  require_values(neg(x), {2, 0.5, 0, -0.5, -2});
  require_values(relu(x), {0, 0, 0, 0.5, 2});
  require_values(clamp(x, -1.0, 1.0), {-1, -0.5, 0, 0.5, 1});
  require_values(sigmoid(x), {0.11920292202211755, 0.3775406687981454, 0.5, 0.6224593312018546,
                              0.8807970779778823}, 1e-15);
  require_values(tanh(x), {-0.9640275800758169, -0.46211715726000974, 0, 0.46211715726000974,
                           0.9640275800758169}, 1e-15);
  // gelu_tanh reference values (0.5 x (1 + tanh(√(2/π)(x + 0.044715x³))))
  require_values(gelu(x), {-0.04540230591222288, -0.15428599017299725, 0, 0.34571400982700275,
                           1.9545976940877771}, 1e-15);
  Tensor p = tensor({0.25, 1.0, 4.0}, kFloat64);
  require_values(sqrt(p), {0.5, 1, 2});
  require_values(reciprocal(p), {4, 1, 0.25});
  require_values(log(p), {std::log(0.25), 0, std::log(4.0)}, 1e-15);
  require_values(exp(p), {std::exp(0.25), std::exp(1.0), std::exp(4.0)}, 1e-12);
  require_values(pow(p, 1.5), {0.125, 1, 8}, 1e-15);
  require_values(pow(p, -1.0), {4, 1, 0.25}, 1e-15);
}

TEST_CASE("unary ops: float32 agrees with float64") {
  Generator gen(5);
  Tensor x = rand({1000}, gen, kFloat64, 0.1, 3.0);
  for (UnaryOp op : {+[](const Tensor& t) { return sigmoid(t); }, +[](const Tensor& t) { return gelu(t); },
                     +[](const Tensor& t) { return log(t); }, +[](const Tensor& t) { return sqrt(t); }}) {
    require_close(op(x.to(kFloat32)), op(x), 1e-6, 1e-7);
  }
}

TEST_CASE("float32 gelu (exponential-based tanh) matches float64 over its whole range, value and slope") {
  std::vector<double> grid;
  for (double v = -30.0; v <= 30.0; v += 0.00731) grid.push_back(v);
  for (double v : {-1e4, -100.0, -88.0, -44.0, -1e-30, 0.0, 1e-30, 44.0, 88.0, 100.0, 1e4}) grid.push_back(v);
  const Tensor x = from_vector(grid);
  require_close(gelu(x.to(kFloat32)), gelu(x), 1e-6, 1e-6);
  // With a gradient needed the forward also saves the slope: same values, and the slope agrees.
  const Tensor x32 = x.to(kFloat32).requires_grad_(), x64 = x.detach().requires_grad_();
  Tensor y32 = gelu(x32), y64 = gelu(x64);
  require_close(y32, y64, 1e-6, 1e-6);
  sum(y32).backward();
  sum(y64).backward();
  require_close(x32.grad(), x64.grad(), 1e-5, 1e-6);
  // NaN propagates instead of turning into a number.
  REQUIRE(std::isnan(gelu(full({3}, std::nan(""), kFloat32)).to_vector<double>()[1]));
  // With and without the slope: the same bits (both in fused multiply-adds
  // on a CPU that has them, neither on one that has not).
  REQUIRE(y32.detach().to_vector<float>() == gelu(x.to(kFloat32)).to_vector<float>());
}

TEST_CASE("unary ops: gradients in every layout") {
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&)> op;
    double low, high;  // input range, away from kinks and poles
  };
  const std::vector<Case> cases = {
      {"neg", [](const Tensor& t) { return neg(t); }, -2, 2},
      {"pow", [](const Tensor& t) { return pow(t, 2.5); }, 0.2, 2},
      {"pow negative exponent", [](const Tensor& t) { return pow(t, -1.5); }, 0.5, 2},
      {"exp", [](const Tensor& t) { return exp(t); }, -2, 2},
      {"log", [](const Tensor& t) { return log(t); }, 0.2, 3},
      {"sqrt", [](const Tensor& t) { return sqrt(t); }, 0.2, 3},
      {"reciprocal", [](const Tensor& t) { return reciprocal(t); }, 0.5, 3},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }, -4, 4},
      {"tanh", [](const Tensor& t) { return tanh(t); }, -3, 3},
      {"gelu", [](const Tensor& t) { return gelu(t); }, -4, 4},
      {"relu", [](const Tensor& t) { return relu(t); }, 0.1, 2},
      {"relu negative side", [](const Tensor& t) { return relu(t); }, -2, -0.1},
      {"clamp", [](const Tensor& t) { return clamp(t, -0.5, 0.5); }, -1, 1},
  };
  const int layout = GENERATE(0, 1, 2);
  Generator gen(11 + layout);
  for (const Case& c : cases) {
    INFO(c.name << " in layout " << layout);
    Tensor x = input_in_layout({3, 4}, layout, gen, c.low, c.high);
    if (c.name == std::string("clamp")) {
      // Keep inputs off the kinks at ±0.5 where the derivative jumps.
      std::vector<double> v = x.to_vector<double>();
      for (double& e : v)
        if (std::abs(std::abs(e) - 0.5) < 1e-3) e += 0.01;
      x = from_vector(v, {3, 4});
    }
    require_gradients_match([&](const TensorList& in) { return c.op(in[0]); }, {x});
  }
}

TEST_CASE("clamp passes the gradient inside the bounds only") {
  Tensor x = tensor({-2.0, -1.0, 0.0, 1.0, 2.0}, kFloat64).requires_grad_();
  sum(clamp(x, -1.0, 1.0)).backward();
  require_values(x.grad(), {0, 1, 1, 1, 0});  // bounds themselves pass (as in PyTorch)
}

TEST_CASE("binary ops broadcast NumPy-style") {
  Tensor a = tensor({1, 2, 3}, {3, 1}, kFloat64);
  Tensor b = tensor({10, 20}, {2}, kFloat64);
  Tensor s = a + b;
  REQUIRE(s.shape() == Shape{3, 2});
  require_values(s, {11, 21, 12, 22, 13, 23});
  require_values(a - b, {-9, -19, -8, -18, -7, -17});
  require_values(a * b, {10, 20, 20, 40, 30, 60});
  require_values(b / a, {10, 20, 5, 10, 10.0 / 3, 20.0 / 3}, 1e-15);
  require_values(2.0 - a, {1, 0, -1});
  require_values(a / 2.0, {0.5, 1, 1.5});
  require_values(6.0 / a, {6, 3, 2});
  require_values(a * 2.0 + 1.0, {3, 5, 7});
  REQUIRE((tensor({1.0}) + tensor({1.0, 2.0}, {2, 1})).shape() == Shape{2, 1});
  REQUIRE((zeros({4, 1, 3}) * zeros({2, 1})).shape() == Shape{4, 2, 3});
}

TEST_CASE("binary ops: gradients with broadcasting and non-contiguous inputs") {
  using BinaryOp = Tensor (*)(const Tensor&, const Tensor&);
  const std::vector<std::pair<const char*, BinaryOp>> ops = {
      {"add", +[](const Tensor& x, const Tensor& y) { return x + y; }},
      {"sub", +[](const Tensor& x, const Tensor& y) { return x - y; }},
      {"mul", +[](const Tensor& x, const Tensor& y) { return x * y; }},
      {"div", +[](const Tensor& x, const Tensor& y) { return x / y; }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 1}, {1, 4}}, {{2, 1, 4}, {3, 1}}, {{3, 4}, {}}};
  Generator gen(2);
  for (const auto& [name, binding] : ops) {
    const BinaryOp op = binding;  // clang 14's lambdas cannot capture a structured binding
    for (const auto& [sa, sb] : shapes) {
      INFO(name << " " << shape_str(sa) << " with " << shape_str(sb));
      Tensor a = rand(sa, gen, kFloat64, 0.5, 2.0);
      Tensor b = rand(sb, gen, kFloat64, 0.5, 2.0);
      require_gradients_match([&](const TensorList& in) { return op(in[0], in[1]); }, {a, b});
    }
    INFO(name << " with transposed and narrowed inputs");
    Tensor t = transposed_randn({3, 4}, gen) + 3.0;
    Tensor n = rand({3, 6}, gen, kFloat64, 0.5, 2.0).narrow(1, 1, 4);
    require_gradients_match([&](const TensorList& in) { return op(in[0], in[1]); }, {t.detach(), n});
  }
}

TEST_CASE("scalar variants differentiate like their tensor forms") {
  Generator gen(4);
  Tensor x = rand({2, 3}, gen, kFloat64, 0.5, 2.0);
  require_gradients_match([](const TensorList& in) { return 3.0 / in[0] - in[0] * 2.0 + (1.0 - in[0]) / 4.0; }, {x});
}

TEST_CASE("elementwise ops work on large tensors in parallel") {
  // Above the parallel grain, chunked loops must cover every element once.
  Generator gen(9);
  const std::int64_t n = 3 * kParallelGrain + 17;
  Tensor a = rand({n}, gen, kFloat32);
  Tensor b = rand({n}, gen, kFloat32);
  std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>();
  std::vector<float> vs = (a + b).to_vector<float>();
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(vs[i] == va[i] + vb[i]);
  // A non-contiguous large input takes the strided path.
  Tensor m = rand({512, 300}, gen, kFloat64);
  require_close(sigmoid(m.transpose(0, 1)), sigmoid(m).transpose(0, 1).contiguous(), 0, 0);
}

TEST_CASE("elementwise errors name the op, shapes and dtypes") {
  REQUIRE_THROWS_WITH(zeros({2, 3}) + zeros({3, 2}),
                      Catch::Contains("[add]") && Catch::Contains("[2, 3]") && Catch::Contains("[3, 2]"));
  REQUIRE_THROWS_WITH(zeros({2}) * zeros({2}, kFloat64),
                      Catch::Contains("[mul]") && Catch::Contains("float32") && Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(sigmoid(arange(3)), Catch::Contains("[sigmoid]") && Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(gelu(arange(3)), Catch::Contains("[gelu]") && Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(gelu(Tensor()), Catch::Contains("[gelu]") && Catch::Contains("undefined"));
  REQUIRE_THROWS_WITH(clamp(zeros({1}), 1.0, -1.0), Catch::Contains("[clamp]"));
  REQUIRE_THROWS_WITH(add_(zeros({2}), zeros({2}, kFloat64)), Catch::Contains("[add_]"));
}

TEST_CASE("in-place updates write through views and bump the version") {
  Tensor x = zeros({2, 3}, kFloat64);
  std::uint64_t v0 = x.version();
  fill_(x.narrow(1, 1, 1), 5.0);
  require_values(x, {0, 5, 0, 0, 5, 0});
  REQUIRE(x.version() > v0);
  add_(x, tensor({1, 2, 3}, kFloat64), 2.0);  // broadcast other
  require_values(x, {2, 9, 6, 2, 9, 6});
  mul_(x, 0.5);
  require_values(x, {1, 4.5, 3, 1, 4.5, 3});
  copy_(x, tensor({7}, kFloat64));
  require_values(x, {7, 7, 7, 7, 7, 7});
  zero_(x);
  require_values(x, {0, 0, 0, 0, 0, 0});
}
