#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("gradients accumulate over shared sub-expressions and several paths") {
  Tensor x = tensor({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  Tensor y = x * x;           // used twice below
  Tensor z = sum(y + y * x);  // z = Σ x² + x³ ;  dz/dx = 2x + 3x²
  z.backward();
  require_values(x.grad(), {2 + 3, 4 + 12, 6 + 27});
  // A second backward accumulates into .grad.
  sum(x * 2.0).backward();
  require_values(x.grad(), {7, 18, 35});
}

TEST_CASE("a diamond graph sums the gradients of both paths") {
  Tensor x = tensor({0.5, -1.0}, kFloat64).requires_grad_();
  Tensor a = exp(x);
  Tensor b = a * 3.0;  // path 1
  Tensor c = a * a;    // path 2 (a used twice)
  sum(b + c).backward();
  std::vector<double> ex = exp(x.detach()).to_vector<double>();
  require_values(x.grad(), {3 * ex[0] + 2 * ex[0] * ex[0], 3 * ex[1] + 2 * ex[1] * ex[1]}, 1e-12);
}

TEST_CASE("a deep chain backpropagates without recursion") {
  Tensor x = tensor({1.0}, kFloat64).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0;
  sum(y).backward();
  require_values(x.grad(), {1.0});
}

TEST_CASE("only inputs that require grad receive one") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor w = tensor({3.0, 4.0}, kFloat64);
  sum(x * w).backward();
  require_values(x.grad(), {3, 4});
  REQUIRE_FALSE(w.grad().defined());
  REQUIRE(x.is_leaf());
  REQUIRE_FALSE((x * w).is_leaf());
}

TEST_CASE("NoGradGuard stops recording and restores the mode") {
  Tensor x = tensor({1.0}, kFloat64).requires_grad_();
  {
    NoGradGuard guard;
    Tensor y = x * 2.0;
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE_FALSE(GradMode::is_enabled());
  }
  REQUIRE(GradMode::is_enabled());
  REQUIRE((x * 2.0).requires_grad());
}

TEST_CASE("detach shares data but cuts the graph") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = x * 2.0;
  Tensor d = y.detach();
  REQUIRE(d.shares_storage_with(y));
  REQUIRE_FALSE(d.requires_grad());
  REQUIRE(d.is_leaf());
  Tensor z = sum(y * d);  // d acts as a constant: dz/dx = 2 d = 4x
  z.backward();
  require_values(x.grad(), {4, 8});
}

TEST_CASE("retain_grad keeps the gradient of a non-leaf") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = x * 3.0;
  Tensor u = x * 4.0;  // not retained
  y.retain_grad();
  REQUIRE(y.retains_grad());
  REQUIRE_FALSE(u.retains_grad());
  sum(y * y + u).backward();
  require_values(y.grad(), {6, 12});  // dz/dy = 2y
  REQUIRE_FALSE(u.grad().defined());
  require_values(x.grad(), {18 + 4, 36 + 4});
}

TEST_CASE("hooks see the gradient and may replace it") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = x * 3.0;
  std::vector<double> seen;
  y.register_hook([&](const Tensor& g) {
    seen = g.to_vector<double>();
    return Tensor();  // keep it
  });
  y.register_hook([](const Tensor& g) { return g * 10.0; });  // replace it
  sum(y).backward();
  REQUIRE(seen == std::vector<double>{1, 1});
  require_values(x.grad(), {30, 30});

  // A hook on a leaf sees the summed gradient of all its uses, once.
  Tensor w = tensor({1.0}, kFloat64).requires_grad_();
  int calls = 0;
  w.register_hook([&](const Tensor& g) {
    ++calls;
    REQUIRE(g.item<double>() == 5.0);
    return Tensor();
  });
  sum(w * 2.0 + w * 3.0).backward();
  REQUIRE(calls == 1);

  Tensor v = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor out = v * 1.0;
  out.register_hook([](const Tensor&) { return zeros({3}, kFloat64); });
  REQUIRE_THROWS_WITH(sum(out).backward(), Catch::Contains("[register_hook]") && Catch::Contains("[3]"));
}

TEST_CASE("post-accumulate hooks run once per backward pass, after .grad holds the summed gradient") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor unused = tensor({5.0}, kFloat64).requires_grad_();
  std::vector<std::vector<double>> seen;
  x.register_post_accumulate_grad_hook([&](const Tensor& leaf) {
    REQUIRE(leaf.shares_storage_with(x));
    seen.push_back(leaf.grad().to_vector<double>());
  });
  bool unused_called = false;
  unused.register_post_accumulate_grad_hook([&](const Tensor&) { unused_called = true; });
  // x reaches the loss along two paths: the hook sees their sum, once.
  sum(x * 3.0 + x * x).backward();
  REQUIRE(seen == std::vector<std::vector<double>>{{5.0, 7.0}});
  // A second pass accumulates; the hook sees the running total.
  sum(x).backward();
  REQUIRE(seen.back() == std::vector<double>{6.0, 8.0});
  REQUIRE(seen.size() == 2);
  REQUIRE_FALSE(unused_called);
  REQUIRE_THROWS_WITH((x * 2.0).register_post_accumulate_grad_hook([](const Tensor&) {}),
                      Catch::Contains("[register_post_accumulate_grad_hook]") && Catch::Contains("produced by an op"));
  REQUIRE_THROWS_WITH(tensor({1.0}).register_post_accumulate_grad_hook([](const Tensor&) {}),
                      Catch::Contains("does not require grad"));
}

TEST_CASE("saved tensors are freed by backward unless the graph is retained") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = exp(x);  // saves its output
  std::weak_ptr<Storage> saved_storage = y.storage();
  Tensor z = sum(y * x);
  y = Tensor();
  REQUIRE_FALSE(saved_storage.expired());  // the graph keeps y's data alive
  z.backward();
  REQUIRE(saved_storage.expired());  // ... and backward released it
  REQUIRE_THROWS_WITH(z.backward(), Catch::Contains("second time") && Catch::Contains("retain_graph"));

  Tensor a = tensor({3.0}, kFloat64).requires_grad_();
  Tensor b = sum(a * a);
  b.backward(Tensor(), /*retain_graph=*/true);
  b.backward();
  require_values(a.grad(), {12});
}

TEST_CASE("an in-place change of a tensor saved for backward is detected") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor w = tensor({3.0, 4.0}, kFloat64);
  Tensor y = sum(x * w);  // saves w
  mul_(w, 2.0);
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("[mul]") && Catch::Contains("in-place"));
  // In-place ops refuse tensors that require grad while recording.
  REQUIRE_THROWS_WITH(mul_(x, 2.0), Catch::Contains("[mul_]") && Catch::Contains("requires grad"));
  {
    NoGradGuard guard;
    mul_(x, 2.0);  // how optimizers update parameters
  }
  require_values(x, {2, 4});
}

TEST_CASE("backward misuse gives clear errors") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = x * 2.0;
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("[backward]") && Catch::Contains("[2]"));
  y.backward(ones({2}, kFloat64));
  require_values(x.grad(), {2, 2});
  REQUIRE_THROWS_WITH((x * 2.0).backward(ones({3}, kFloat64)), Catch::Contains("[backward]") && Catch::Contains("[3]"));
  REQUIRE_THROWS_WITH(sum(tensor({1.0})).backward(), Catch::Contains("does not require grad"));
  REQUIRE_THROWS_WITH(y.requires_grad_(false), Catch::Contains("[requires_grad_]"));
  REQUIRE_THROWS_WITH(arange(3).requires_grad_(), Catch::Contains("[requires_grad_]") && Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(x.set_grad(zeros({3}, kFloat64)), Catch::Contains("[set_grad]"));
}

namespace {

// y = 2x with a deliberately wrong backward (dx = dy): gradcheck must notice.
class WrongDoubleBackward final : public autograd::Node {
 public:
  std::string_view name() const override { return "wrong_double"; }
  TensorList backward(const Tensor& dy) override { return {dy}; }
};

Tensor wrong_double(const Tensor& x) {
  Tensor y = x.detach() * 2.0;
  if (auto node = autograd::make_node<WrongDoubleBackward>({x})) autograd::set_history(y, node);
  return y;
}

}  // namespace

TEST_CASE("gradcheck reports errors per input and catches a wrong backward") {
  Generator gen(0);
  Tensor x = randn({3}, gen, kFloat64);
  GradcheckResult bad = gradcheck([](const TensorList& in) { return wrong_double(in[0]); }, {x});
  REQUIRE_FALSE(bad.passed);
  REQUIRE(bad.max_abs_error[0] > 0.1);
  GradcheckResult good = gradcheck([](const TensorList& in) { return in[0] * 2.0; }, {x});
  REQUIRE(good.passed);
  REQUIRE(good.max_abs_error[0] < 1e-8);
  REQUIRE_THROWS_WITH(gradcheck([](const TensorList& in) { return in[0]; }, {randn({2}, gen)}),
                      Catch::Contains("float32"));
}

TEST_CASE("views propagate gradients to the right elements") {
  Generator gen(3);
  Tensor base = randn({4, 5}, gen, kFloat64);
  require_gradients_match([](const TensorList& in) { return in[0].transpose(0, 1).reshape({5, 4}).narrow(0, 1, 3); }, {base});
  require_gradients_match([](const TensorList& in) { return in[0].permute({1, 0}).unsqueeze(1).expand({5, 3, 4}); }, {base});
  require_gradients_match([](const TensorList& in) { return in[0].select(1, 2) * in[0].select(0, -1).narrow(0, 0, 4); }, {base});
  require_gradients_match([](const TensorList& in) { return in[0].reshape({20}).narrow(0, 3, 10).view({2, 5}).contiguous(); }, {base});
  require_gradients_match([](const TensorList& in) { return in[0].to(kFloat32).to(kFloat64) * in[0].clone(); }, {base},
                          GradcheckOptions{.step = 1e-3, .atol = 1e-3, .rtol = 1e-3});
  require_gradients_match([](const TensorList& in) { return in[0].flatten(); }, {transposed_randn({3, 4}, gen)});
}

TEST_CASE("the README's custom op example is examples/custom_op.cpp, and it passes its gradcheck") {
  const std::string source = read_text_file(std::string(FLOWGRAD_SOURCE_DIR) + "/examples/custom_op.cpp");
  const std::string readme = read_text_file(std::string(FLOWGRAD_SOURCE_DIR) + "/README.md");
  REQUIRE(source.size() > 500);
  CHECK(readme.find("```cpp\n" + source + "```") != std::string::npos);
  TempDir dir;
  const ProgramRun run = run_program(CUSTOM_OP_PATH, "", dir);
  INFO(run.output);
  CHECK(run.status == 0);
  CHECK(run.output.find("softplus: input 0: max abs error") != std::string::npos);
  CHECK(run.output.find("passed") != std::string::npos);
}

TEST_CASE("autograd::grad returns gradients without touching any .grad()") {
  Generator gen(21);
  const Tensor x = randn({3}, gen, kFloat64).requires_grad_();
  const Tensor y = randn({3}, gen, kFloat64).requires_grad_();
  const Tensor unused = randn({2}, gen, kFloat64).requires_grad_();
  const Tensor prior = full({3}, 5.0, kFloat64);
  y.set_grad(prior);
  const Tensor h = x * y;  // a non-leaf input too
  const Tensor out = sum(h + sin(x));
  const TensorList grads = autograd::grad(out, {x, y, h}, Tensor(), /*retain_graph=*/true);
  const std::vector<double> xs = x.to_vector<double>(), ys = y.to_vector<double>();
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(grads[0].to_vector<double>()[i] == Approx(ys[i] + std::cos(xs[i])).epsilon(1e-14));
    CHECK(grads[1].to_vector<double>()[i] == Approx(xs[i]).epsilon(1e-14));
  }
  require_values(grads[2], {1, 1, 1});
  CHECK_FALSE(x.grad().defined());
  CHECK(y.grad().shares_storage_with(prior));
  require_values(y.grad(), {5, 5, 5});
  CHECK_FALSE(grads[0].requires_grad());
  // The same numbers as backward, which then accumulates as usual.
  out.backward();
  require_close(x.grad(), grads[0], 0, 0);

  const Tensor out2 = sum(x * x);
  REQUIRE_THROWS_WITH(autograd::grad(out2, {x, unused}, Tensor(), true),
                      Catch::Contains("[grad]") && Catch::Contains("input 1") && Catch::Contains("allow_unused"));
  const TensorList partial = autograd::grad(out2, {x, unused}, Tensor(), true, /*allow_unused=*/true);
  CHECK_FALSE(partial[1].defined());
  REQUIRE_THROWS_WITH(autograd::grad(out2, {x.detach()}), Catch::Contains("[grad]") && Catch::Contains("require grad"));
  REQUIRE_THROWS_WITH(autograd::grad(x * y, {x}), Catch::Contains("[grad]") && Catch::Contains("[3]"));
  require_values(autograd::grad(x * y, {y}, ones({3}, kFloat64))[0], xs);
  // The gradients are the caller's own: contiguous, sharing no memory with
  // the graph or with grad_output (sum's backward is a broadcast view).
  const Tensor seed = ones({3}, kFloat64);
  const Tensor through = autograd::grad(x + 0.0, {x}, seed)[0];
  CHECK_FALSE(through.shares_storage_with(seed));
  const Tensor of_sum = autograd::grad(sum(x), {x})[0];
  CHECK(of_sum.is_contiguous());
  fill_(of_sum, 2.0);
  require_values(of_sum, {2, 2, 2});
}
