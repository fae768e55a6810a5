// nn: layers (values, parameter names, gradients), Module state dicts,
// initialisers, optimizers against reference recurrences, gradient clipping,
// learning-rate schedules, optimizer state and training checkpoints.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <numbers>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::nn;
using namespace flowgrad::testing;
namespace fs = std::filesystem;

namespace {

// Overwrites a tensor (a parameter, say) with the given values.
void set_values(const Tensor& t, const std::vector<double>& values) {
  NoGradGuard no_grad;
  copy_(t, from_vector(values, t.shape()).to(t.dtype()));
}

std::vector<std::string> names_of(const NamedTensors& named) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : named) names.push_back(name);
  return names;
}

// Central finite differences on every registered (float64) parameter of
// `module`, against the .grad that backward leaves on it: checks that the
// gradient reaches the parameters the module owns.
void require_parameter_gradients_match(Module& module, const std::function<Tensor()>& forward) {
  module.zero_grad();
  Generator gen(11);
  Tensor out = forward();
  Tensor weights = randn(out.shape(), gen, kFloat64);
  out.backward(weights);
  auto loss = [&] {
    NoGradGuard no_grad;
    return sum(mul(forward(), weights)).item<double>();
  };
  const double h = 1e-6;
  for (const auto& [name, param] : module.named_parameters()) {
    REQUIRE(param.grad().defined());
    REQUIRE(param.is_contiguous());
    const std::vector<double> analytic = param.grad().to_vector<double>();
    double* data = param.data<double>();
    for (std::int64_t k = 0; k < param.numel(); ++k) {
      const double original = data[k];
      data[k] = original + h;
      const double plus = loss();
      data[k] = original - h;
      const double minus = loss();
      data[k] = original;
      const double numeric = (plus - minus) / (2 * h);
      INFO(name << " element " << k << ": analytic " << analytic[k] << " numeric " << numeric);
      REQUIRE(std::abs(analytic[static_cast<std::size_t>(k)] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
    }
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace

// ================================================================ layers

TEST_CASE("Linear computes x Wᵀ + b (values by hand)") {
  Generator gen(1);
  Linear linear(3, 2, gen, LinearOptions{.dtype = kFloat64});
  REQUIRE(linear.weight.shape() == Shape{2, 3});
  REQUIRE(linear.bias.shape() == Shape{2});
  require_values(linear.bias, {0.0, 0.0}, 0.0);  // bias starts at 0
  set_values(linear.weight, {1, 2, 3, -1, 0, 1});
  set_values(linear.bias, {0.5, -0.5});
  Tensor x = tensor({1, 1, 1, 2, 0, -1}, {2, 3}, kFloat64);
  // Row 0: [1+2+3, -1+0+1] + b = [6.5, -0.5]; row 1: [2-3, -2-1] + b = [-0.5, -3.5].
  Tensor y = linear.forward(x);
  REQUIRE(y.shape() == Shape{2, 2});
  require_values(y, {6.5, -0.5, -0.5, -3.5}, 1e-12);

  SECTION("batched and 1-D inputs") {
    Tensor batched = randn({4, 5, 3}, gen, kFloat64);
    require_close(linear.forward(batched), matmul(batched, linear.weight.transpose(0, 1)) + linear.bias,
                  1e-12, 1e-14);
    require_values(linear.forward(tensor({1, 1, 1}, kFloat64)), {6.5, -0.5}, 1e-12);
  }
  SECTION("without bias") {
    Linear plain(3, 2, gen, LinearOptions{.bias = false, .dtype = kFloat64});
    REQUIRE_FALSE(plain.bias.defined());
    REQUIRE(names_of(plain.named_parameters()) == std::vector<std::string>{"weight"});
    require_close(plain.forward(x), matmul(x, plain.weight.transpose(0, 1)), 1e-12, 0.0);
  }
}

TEST_CASE("Linear initialises its weight ~ N(0, init_std)") {
  Generator gen(2);
  Linear linear(200, 100, gen, LinearOptions{.init_std = 0.5});
  REQUIRE(linear.weight.dtype() == kFloat32);
  const double m = mean(linear.weight).item<double>();
  const double sd = std::sqrt(mean(linear.weight * linear.weight).item<double>() - m * m);
  REQUIRE(std::abs(m) < 0.01);
  REQUIRE(sd == Approx(0.5).epsilon(0.02));
}

TEST_CASE("Linear and layer constructors reject bad arguments") {
  Generator gen(3);
  Linear linear(3, 2, gen);
  REQUIRE_THROWS_WITH(linear.forward(zeros({2, 4})), Catch::Contains("[Linear]") && Catch::Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(linear.forward(Tensor()), Catch::Contains("[Linear]"));
  REQUIRE_THROWS_WITH(Linear(0, 2, gen), Catch::Contains("[Linear] in_features"));
  REQUIRE_THROWS_WITH(Linear(2, -1, gen), Catch::Contains("[Linear] out_features"));
  REQUIRE_THROWS_WITH(Linear(2, 2, gen, LinearOptions{.dtype = kInt64}), Catch::Contains("[Linear]"));
  REQUIRE_THROWS_WITH(LayerNorm(0), Catch::Contains("[LayerNorm]"));
  REQUIRE_THROWS_WITH(LayerNorm(4, 0.0), Catch::Contains("[LayerNorm] eps"));
  REQUIRE_THROWS_WITH(LayerNorm(4).forward(zeros({2, 3})), Catch::Contains("[LayerNorm]"));
  REQUIRE_THROWS_WITH(Embedding(0, 4, gen), Catch::Contains("[Embedding]"));
  REQUIRE_THROWS_WITH(Dropout(1.5, std::make_shared<Generator>(0)), Catch::Contains("[Dropout]"));
  REQUIRE_THROWS_WITH(Dropout(0.1, nullptr), Catch::Contains("[Dropout]"));
}

TEST_CASE("LayerNorm normalises the last dim; weight 1 and bias 0 at start") {
  LayerNorm norm(3, 1e-5, kFloat64);
  require_values(norm.weight, {1, 1, 1}, 0.0);
  require_values(norm.bias, {0, 0, 0}, 0.0);
  REQUIRE(names_of(norm.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  // [1, 2, 3]: mean 2, biased variance 2/3.
  const double s = std::sqrt(2.0 / 3.0 + 1e-5);
  require_values(norm.forward(tensor({1, 2, 3}, kFloat64)), {-1 / s, 0, 1 / s}, 1e-12);
  set_values(norm.weight, {2, 1, 0.5});
  set_values(norm.bias, {0, 1, -1});
  require_values(norm.forward(tensor({1, 2, 3}, kFloat64)), {-2 / s, 1, 0.5 / s - 1}, 1e-12);
  Generator gen(4);
  Tensor x = randn({2, 4, 3}, gen, kFloat64);
  require_close(norm.forward(x), layer_norm(x, norm.weight, norm.bias, 1e-5), 0.0, 0.0);
}

TEST_CASE("Embedding picks rows of its table") {
  Generator gen(5);
  Embedding emb(4, 2, gen, EmbeddingOptions{.init_std = 1.0, .dtype = kFloat64});
  REQUIRE(emb.weight.shape() == Shape{4, 2});
  REQUIRE(names_of(emb.named_parameters()) == std::vector<std::string>{"weight"});
  set_values(emb.weight, {0, 1, 10, 11, 20, 21, 30, 31});
  Tensor ids = from_vector<std::int64_t>({3, 0, 2, 2}, {2, 2});
  Tensor out = emb.forward(ids);
  REQUIRE(out.shape() == Shape{2, 2, 2});
  require_values(out, {30, 31, 0, 1, 20, 21, 20, 21}, 0.0);
  REQUIRE_THROWS_WITH(emb.forward(from_vector<std::int64_t>({4})), Catch::Contains("[embedding]"));
}

TEST_CASE("Sequential names its steps 0, 1, ... and chains them") {
  Generator gen(6);
  Sequential seq;
  auto first = std::make_shared<Linear>(3, 5, gen, LinearOptions{.init_std = 0.5, .dtype = kFloat64});
  auto second = std::make_shared<Linear>(5, 2, gen, LinearOptions{.bias = false, .init_std = 0.5, .dtype = kFloat64});
  seq.add(first).add(std::make_shared<GELU>()).add(second);
  REQUIRE(names_of(seq.named_parameters()) ==
          std::vector<std::string>{"0.weight", "0.bias", "2.weight"});
  REQUIRE(seq.parameter_count() == 3 * 5 + 5 + 5 * 2);
  REQUIRE(seq.children().size() == 3);
  Tensor x = randn({4, 3}, gen, kFloat64);
  require_close(seq.forward(x), second->forward(gelu(first->forward(x))), 0.0, 0.0);
}

TEST_CASE("MLP: c_fc and c_proj by name, forward = c_proj(gelu(c_fc(x)))") {
  Generator gen(7);
  auto dropout_gen = std::make_shared<Generator>(70);
  MLP mlp(4, 16, gen, dropout_gen, MLPOptions{.proj_init_std = 0.001, .dtype = kFloat64});
  REQUIRE(names_of(mlp.named_parameters()) ==
          std::vector<std::string>{"c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"});
  REQUIRE(mlp.c_fc->weight.shape() == Shape{16, 4});
  REQUIRE(mlp.c_proj->weight.shape() == Shape{4, 16});
  REQUIRE(mlp.parameter_count() == 16 * 4 + 16 + 4 * 16 + 4);
  // c_proj uses its own (small) init std.
  REQUIRE(max(mlp.c_proj->weight * mlp.c_proj->weight).item<double>() < 1e-4);
  REQUIRE(max(mlp.c_fc->weight * mlp.c_fc->weight).item<double>() > 1e-4);
  Tensor x = randn({3, 4}, gen, kFloat64);
  require_close(mlp.forward(x), mlp.c_proj->forward(gelu(mlp.c_fc->forward(x))), 0.0, 0.0);
}

TEST_CASE("train() and eval() switch dropout on and off, recursively") {
  Generator gen(8);
  auto dropout_gen = std::make_shared<Generator>(80);
  MLP mlp(8, 32, gen, dropout_gen, MLPOptions{.dropout = 0.5, .dtype = kFloat64});
  Tensor x = randn({16, 8}, gen, kFloat64);
  const Tensor clean = mlp.c_proj->forward(gelu(mlp.c_fc->forward(x)));
  REQUIRE(mlp.is_training());
  REQUIRE(mlp.dropout->is_training());

  Tensor trained = mlp.forward(x);
  std::vector<double> t = trained.to_vector<double>(), c = clean.to_vector<double>();
  int zeroed = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == 0.0) ++zeroed;
    else REQUIRE(t[i] == Approx(2.0 * c[i]).epsilon(1e-12));  // kept elements scaled by 1/(1-p)
  }
  REQUIRE(zeroed > 20);
  REQUIRE(zeroed < 108);

  mlp.eval();
  REQUIRE_FALSE(mlp.is_training());
  REQUIRE_FALSE(mlp.dropout->is_training());
  require_close(mlp.forward(x), clean, 0.0, 0.0);
  mlp.train();
  REQUIRE(mlp.dropout->is_training());
  REQUIRE_FALSE(bitwise_equal(mlp.forward(x), clean));

  Dropout drop(0.5, dropout_gen);
  drop.eval();
  REQUIRE(drop.forward(x).shares_storage_with(x));  // the identity
}

TEST_CASE("zero_grad clears the gradients of every parameter") {
  Generator gen(9);
  Sequential seq;
  seq.add(std::make_shared<Linear>(3, 4, gen)).add(std::make_shared<LayerNorm>(4));
  sum(seq.forward(randn({2, 3}, gen))).backward();
  for (const Tensor& p : seq.parameters()) REQUIRE(p.grad().defined());
  seq.zero_grad();
  for (const Tensor& p : seq.parameters()) REQUIRE_FALSE(p.grad().defined());
}

TEST_CASE("Linear gradients match finite differences (input and parameters)") {
  Generator gen(10);
  Linear linear(4, 3, gen, LinearOptions{.init_std = 0.5, .dtype = kFloat64});
  Tensor x = randn({2, 5, 4}, gen, kFloat64);
  require_gradients_match([&](const TensorList& in) { return linear.forward(in[0]); }, {x});
  require_gradients_match([&](const TensorList& in) { return linear.forward(in[0]); },
                          {transposed_randn({5, 4}, gen)});
  require_gradients_match([&](const TensorList& in) { return linear.forward(in[0]); },
                          {randn({3, 6}, gen, kFloat64).narrow(1, 1, 4)});
  require_parameter_gradients_match(linear, [&] { return linear.forward(x); });
}

TEST_CASE("MLP gradients match finite differences (input and parameters)") {
  Generator gen(12);
  MLP mlp(3, 8, gen, std::make_shared<Generator>(1), MLPOptions{.dropout = 0.1, .proj_init_std = 0.3, .dtype = kFloat64});
  mlp.eval();
  Tensor x = randn({4, 3}, gen, kFloat64);
  require_gradients_match([&](const TensorList& in) { return mlp.forward(in[0]); }, {x});
  require_parameter_gradients_match(mlp, [&] { return mlp.forward(x); });
}

TEST_CASE("LayerNorm and Embedding parameter gradients match finite differences") {
  Generator gen(13);
  LayerNorm norm(5, 1e-5, kFloat64);
  set_values(norm.weight, randn({5}, gen, kFloat64).to_vector<double>());
  set_values(norm.bias, randn({5}, gen, kFloat64).to_vector<double>());
  Tensor x = randn({3, 5}, gen, kFloat64);
  require_parameter_gradients_match(norm, [&] { return norm.forward(x); });
  Embedding emb(6, 3, gen, EmbeddingOptions{.init_std = 1.0, .dtype = kFloat64});
  Tensor ids = from_vector<std::int64_t>({1, 5, 1, 0}, {2, 2});
  require_parameter_gradients_match(emb, [&] { return emb.forward(ids); });
}

// ================================================================ state dicts

TEST_CASE("Module state_dict round trip through a file") {
  TempDir dir;
  Generator gen(14);
  auto dropout_gen = std::make_shared<Generator>(0);
  MLP saved(4, 8, gen, dropout_gen, MLPOptions{.dropout = 0.1});
  saved.save(dir.file("mlp.safetensors"));
  Generator other(99);
  MLP loaded(4, 8, other, dropout_gen, MLPOptions{.dropout = 0.1});
  REQUIRE_FALSE(bitwise_equal(loaded.c_fc->weight, saved.c_fc->weight));
  const Tensor weight_before = loaded.c_fc->weight;
  loaded.load(dir.file("mlp.safetensors"));
  for (const auto& [name, tensor] : saved.state_dict()) {
    INFO(name);
    REQUIRE(bitwise_equal(loaded.state_dict().at(name), tensor));
  }
  REQUIRE(loaded.c_fc->weight.shares_storage_with(weight_before));  // loaded in place
  REQUIRE(loaded.c_fc->weight.requires_grad());
}

TEST_CASE("Module load_state_dict names the offending tensor and changes nothing") {
  Generator gen(15);
  auto dropout_gen = std::make_shared<Generator>(0);
  MLP mlp(4, 8, gen, dropout_gen);
  const Tensor before = mlp.c_fc->weight.clone();
  auto state = mlp.state_dict();
  for (auto& [name, t] : state) t = t.clone();
  set_values(state["c_fc.weight"], std::vector<double>(32, 7.0));

  auto missing = state;
  missing.erase("c_proj.bias");
  REQUIRE_THROWS_WITH(mlp.load_state_dict(missing),
                      Catch::Contains("[load_state_dict]") && Catch::Contains("missing") &&
                          Catch::Contains("\"c_proj.bias\""));
  auto unexpected = state;
  unexpected["c_fc.extra"] = zeros({1});
  REQUIRE_THROWS_WITH(mlp.load_state_dict(unexpected),
                      Catch::Contains("unexpected") && Catch::Contains("\"c_fc.extra\""));
  auto wrong_shape = state;
  wrong_shape["c_proj.weight"] = zeros({8, 4});
  REQUIRE_THROWS_WITH(mlp.load_state_dict(wrong_shape),
                      Catch::Contains("\"c_proj.weight\"") && Catch::Contains("[8, 4]") &&
                          Catch::Contains("[4, 8]"));
  auto wrong_dtype = state;
  wrong_dtype["c_fc.bias"] = zeros({8}, kFloat64);
  REQUIRE_THROWS_WITH(mlp.load_state_dict(wrong_dtype),
                      Catch::Contains("\"c_fc.bias\"") && Catch::Contains("float64"));
  REQUIRE(bitwise_equal(mlp.c_fc->weight, before));  // the failed loads changed nothing
  mlp.load_state_dict(state);
  require_values(mlp.c_fc->weight, std::vector<double>(32, 7.0), 0.0);
}

// ================================================================ init

TEST_CASE("init: normal_, uniform_, zeros_, ones_, constant_") {
  Generator gen(16);
  Tensor p = zeros({100, 100}, kFloat64).requires_grad_(true);
  const auto version = p.version();
  init::normal_(p, 0.02, gen, 1.0);  // allowed on a tensor that requires grad
  REQUIRE(p.version() > version);
  const double m = mean(p.detach()).item<double>();
  const double sd = std::sqrt(mean(p.detach() * p.detach()).item<double>() - m * m);
  REQUIRE(m == Approx(1.0).margin(0.001));
  REQUIRE(sd == Approx(0.02).epsilon(0.03));
  init::uniform_(p, -0.5, 2.0, gen);
  REQUIRE(max(p.detach()).item<double>() < 2.0);
  REQUIRE(max(-p.detach()).item<double>() <= 0.5);
  REQUIRE(mean(p.detach()).item<double>() == Approx(0.75).margin(0.02));
  init::zeros_(p);
  REQUIRE(max(p.detach() * p.detach()).item<double>() == 0.0);
  init::ones_(p);
  REQUIRE(mean(p.detach()).item<double>() == 1.0);
  init::constant_(p.narrow(1, 0, 1), 3.0);  // views are filled in place
  REQUIRE(p.at<double>({5, 0}) == 3.0);
  REQUIRE(p.at<double>({5, 1}) == 1.0);

  REQUIRE_THROWS_WITH(init::normal_(zeros({2}, kInt64), 1.0, gen), Catch::Contains("[normal_]"));
  REQUIRE_THROWS_WITH(init::normal_(p, -1.0, gen), Catch::Contains("[normal_] std"));
  REQUIRE_THROWS_WITH(init::uniform_(p, 1.0, 1.0, gen), Catch::Contains("[uniform_]"));
  REQUIRE_THROWS_WITH(init::zeros_(Tensor()), Catch::Contains("[constant_]"));
}

TEST_CASE("init: xavier_uniform_ uses PyTorch's fan_in and fan_out") {
  Generator gen(17);
  REQUIRE(init::fan_in_and_fan_out(zeros({30, 20})) == std::pair<std::int64_t, std::int64_t>{20, 30});
  REQUIRE(init::fan_in_and_fan_out(zeros({8, 4, 3, 3})) ==
          std::pair<std::int64_t, std::int64_t>{36, 72});
  Tensor w = empty({300, 100}, kFloat64);
  init::xavier_uniform_(w, gen);
  const double bound = std::sqrt(6.0 / 400.0);
  const double largest = std::max(max(w).item<double>(), max(-w).item<double>());
  REQUIRE(largest <= bound);
  REQUIRE(largest > 0.99 * bound);
  init::xavier_uniform_(w, gen, 2.0);
  REQUIRE(max(w).item<double>() > 1.98 * bound);
  REQUIRE_THROWS_WITH(init::xavier_uniform_(zeros({5}), gen), Catch::Contains("[xavier_uniform_]") &&
                                                                  Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(init::fan_in_and_fan_out(zeros({5})), Catch::Contains("[fan_in_and_fan_out]"));
}

TEST_CASE("init: xavier_normal_ and kaiming_* give PyTorch's standard deviations") {
  Generator gen(18);
  auto sample_std = [](const Tensor& w) {
    const std::vector<double> v = w.to_vector<double>();
    double squares = 0.0;
    for (double e : v) squares += e * e;
    return std::sqrt(squares / static_cast<double>(v.size()));
  };
  Tensor w = empty({400, 200}, kFloat64);  // fan_in 200, fan_out 400
  init::xavier_normal_(w, gen);
  CHECK(sample_std(w) == Approx(std::sqrt(2.0 / 600.0)).epsilon(0.02));
  init::kaiming_normal_(w, gen);
  CHECK(sample_std(w) == Approx(std::sqrt(2.0 / 200.0)).epsilon(0.02));
  init::kaiming_normal_(w, gen, 0.0, init::FanMode::FanOut);
  CHECK(sample_std(w) == Approx(std::sqrt(2.0 / 400.0)).epsilon(0.02));
  init::kaiming_uniform_(w, gen, std::sqrt(5.0));  // nn.Linear's default in PyTorch: bound 1/sqrt(fan_in)
  const double bound = 1.0 / std::sqrt(200.0);
  CHECK(std::max(max(w).item<double>(), -min(w).item<double>()) <= bound);
  CHECK(max(w).item<double>() > 0.99 * bound);
  CHECK(sample_std(w) == Approx(bound / std::sqrt(3.0)).epsilon(0.02));
  REQUIRE_THROWS_WITH(init::kaiming_normal_(zeros({5}), gen), Catch::Contains("[kaiming_normal_]") &&
                                                                  Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(init::kaiming_uniform_(w, gen, NAN), Catch::Contains("[kaiming_uniform_]"));
  REQUIRE_THROWS_WITH(init::xavier_normal_(w, gen, 0.0), Catch::Contains("[xavier_normal_] gain"));
}

// ================================================================ optimizers

namespace {

// A float64 parameter with a fixed gradient installed.
Tensor param_with_grad(const std::vector<double>& values, const std::vector<double>& grad) {
  Tensor p = from_vector(values).requires_grad_(true);
  p.set_grad(from_vector(grad));
  return p;
}

struct AdamReference {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
  std::vector<double> m, v;
  int t = 0;
  // The textbook recurrence, written independently of optim.cpp.
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (decoupled) p[i] -= lr * weight_decay * p[i];
      else g += weight_decay * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(beta1, t));
      const double v_hat = v[i] / (1 - std::pow(beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

}  // namespace

TEST_CASE("SGD: plain, weight decay and momentum against the recurrence") {
  SECTION("plain: p -= lr g") {
    Tensor p = param_with_grad({1.0, -2.0}, {0.5, 0.25});
    SGD sgd({p}, SGDOptions{.lr = 0.1});
    sgd.step();
    require_values(p, {0.95, -2.025}, 1e-15);
    REQUIRE(sgd.state_dict().size() == 1);  // only "step": no momentum buffers
  }
  SECTION("momentum 0.9, dampening 0.1, weight decay 0.01, 3 steps with changing grads") {
    Tensor p = param_with_grad({1.0, -2.0}, {0.5, 0.25});
    SGD sgd({p}, SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
    std::vector<double> ref = {1.0, -2.0}, buf(2);
    const std::vector<std::vector<double>> grads = {{0.5, 0.25}, {-1.0, 0.5}, {0.3, 0.3}};
    for (int s = 0; s < 3; ++s) {
      p.set_grad(from_vector(grads[s]));
      sgd.step();
      for (int i = 0; i < 2; ++i) {
        const double d = grads[s][i] + 0.01 * ref[i];
        buf[i] = s == 0 ? d : 0.9 * buf[i] + 0.9 * d;  // the first update takes d undamped
        ref[i] -= 0.1 * buf[i];
      }
      require_values(p, ref, 1e-14);
    }
    require_values(sgd.state_dict().at("state.0.momentum_buffer"), buf, 1e-14);
  }
  SECTION("nesterov") {
    Tensor p = param_with_grad({1.0}, {2.0});
    SGD sgd({p}, SGDOptions{.lr = 0.1, .momentum = 0.5, .nesterov = true});
    sgd.step();  // b = 2, d = 2 + 0.5·2 = 3
    require_values(p, {0.7}, 1e-15);
    sgd.step();  // b = 0.5·2 + 2 = 3, d = 2 + 1.5 = 3.5
    require_values(p, {0.35}, 1e-15);
  }
}

TEST_CASE("Adam with a constant gradient follows the closed form") {
  // With g fixed: m_t = (1 − β1^t) g and v_t = (1 − β2^t) g², so the
  // bias-corrected step is lr · g / (|g| + eps) every time.
  const double lr = 0.01, eps = 1e-8;
  Tensor p = param_with_grad({1.0, -3.0}, {0.2, -4.0});
  Adam adam({p}, AdamOptions{.lr = lr, .eps = eps});
  for (int s = 0; s < 3; ++s) adam.step();
  require_values(p, {1.0 - 3 * lr * 0.2 / (0.2 + eps), -3.0 + 3 * lr * 4.0 / (4.0 + eps)}, 1e-13);
  auto state = adam.state_dict();
  REQUIRE(state.at("step").item<std::int64_t>() == 3);
  REQUIRE(state.at("state.0.step").item<std::int64_t>() == 3);
  require_values(state.at("state.0.exp_avg"), {0.2 * (1 - std::pow(0.9, 3)), -4.0 * (1 - std::pow(0.9, 3))},
                 1e-14);
  require_values(state.at("state.0.exp_avg_sq"),
                 {0.04 * (1 - std::pow(0.999, 3)), 16.0 * (1 - std::pow(0.999, 3))}, 1e-14);
}

TEST_CASE("Adam and AdamW match the reference recurrence over several steps") {
  const std::vector<std::vector<double>> grads = {{0.5, -0.1}, {-0.3, 0.2}, {0.05, 0.7}, {1.0, -1.0}};
  for (bool decoupled : {false, true}) {
    for (double wd : {0.0, 0.1}) {
      INFO((decoupled ? "AdamW" : "Adam") << " weight decay " << wd);
      Tensor p = param_with_grad({0.3, -0.8}, grads[0]);
      std::unique_ptr<Optimizer> opt;
      if (decoupled)
        opt = std::make_unique<AdamW>(TensorList{p}, AdamWOptions{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.95,
                                                                  .eps = 1e-6, .weight_decay = wd});
      else
        opt = std::make_unique<Adam>(TensorList{p}, AdamOptions{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.95,
                                                                .eps = 1e-6, .weight_decay = wd});
      AdamReference ref{0.05, 0.8, 0.95, 1e-6, wd, decoupled, {}, {}};
      std::vector<double> expected = {0.3, -0.8};
      for (const auto& g : grads) {
        p.set_grad(from_vector(g));
        opt->step();
        ref.step(expected, g);
        require_values(p, expected, 1e-13);
      }
    }
  }
}

TEST_CASE("Adam in float32 agrees with float64") {
  Generator gen(18);
  Tensor p64 = randn({50, 40}, gen, kFloat64).requires_grad_(true);
  Tensor p32 = p64.detach().to(kFloat32).requires_grad_(true);
  AdamW a64({p64}, AdamWOptions{.lr = 1e-2, .weight_decay = 0.1});
  AdamW a32({p32}, AdamWOptions{.lr = 1e-2, .weight_decay = 0.1});
  for (int s = 0; s < 5; ++s) {
    Tensor g = randn({50, 40}, gen, kFloat64);
    p64.set_grad(g);
    p32.set_grad(g.to(kFloat32));
    a64.step();
    a32.step();
  }
  require_close(p32, p64, 1e-4, 1e-5);
}

TEST_CASE("An optimizer step bumps the version, skips parameters without grad, updates strided ones") {
  Tensor a = param_with_grad({1.0, 2.0}, {1.0, 1.0});
  Tensor b = from_vector<double>({5.0, 6.0}).requires_grad_(true);  // no grad
  Adam adam({a, b}, AdamOptions{.lr = 0.1});
  const auto version = a.version();
  adam.step();
  REQUIRE(a.version() > version);
  require_values(b, {5.0, 6.0}, 0.0);
  REQUIRE(adam.state_dict().count("state.1.exp_avg") == 0);  // no state for b yet
  b.set_grad(from_vector<double>({1.0, -1.0}));
  adam.step();
  // b's first update is a first step of its own (t = 1): lr · sign(g).
  require_values(b, {4.9, 6.1}, 1e-7);
  REQUIRE(adam.state_dict().at("state.0.step").item<std::int64_t>() == 2);
  REQUIRE(adam.state_dict().at("state.1.step").item<std::int64_t>() == 1);

  // A parameter that is a non-contiguous view of its own storage.
  Tensor base = from_vector<double>({1, 2, 3, 4}, {2, 2});
  Tensor strided = base.transpose(0, 1).detach().requires_grad_(true);
  REQUIRE_FALSE(strided.is_contiguous());
  strided.set_grad(from_vector<double>({1, 0, 0, 0}, {2, 2}));
  SGD sgd({strided}, SGDOptions{.lr = 0.5});
  sgd.step();
  require_values(base, {0.5, 2, 3, 4}, 0.0);

  adam.zero_grad();
  REQUIRE_FALSE(a.grad().defined());
  REQUIRE_FALSE(b.grad().defined());
}

TEST_CASE("Weight decay applies to the decay group only") {
  Generator gen(19);
  Sequential model;
  model.add(std::make_shared<Embedding>(10, 4, gen, EmbeddingOptions{.dtype = kFloat64}))
      .add(std::make_shared<Linear>(4, 6, gen, LinearOptions{.dtype = kFloat64}))
      .add(std::make_shared<LayerNorm>(6, 1e-5, kFloat64));
  // In a Sequential the embedding is "0.weight"; the name rule needs "wte"
  // or "embed", so build the groups from names a GPT would have.
  NamedTensors named = {{"transformer.wte.weight", model.named_parameters()[0].second},
                        {"transformer.h.0.mlp.c_fc.weight", model.named_parameters()[1].second},
                        {"transformer.h.0.mlp.c_fc.bias", model.named_parameters()[2].second},
                        {"transformer.h.0.ln_1.weight", model.named_parameters()[3].second},
                        {"transformer.h.0.ln_1.bias", model.named_parameters()[4].second}};
  auto groups = param_groups_for_decay(named, 0.1);
  REQUIRE(groups.size() == 2);
  REQUIRE(groups[0].params.size() == 1);
  REQUIRE(groups[0].params[0].shares_storage_with(named[1].second));
  REQUIRE(groups[0].weight_decay == 0.1);
  REQUIRE(groups[1].params.size() == 4);
  REQUIRE(groups[1].weight_decay == 0.0);

  std::vector<Tensor> before;
  for (const auto& [name, p] : named) {
    before.push_back(p.clone().detach());
    p.set_grad(zeros_like(p));  // zero gradient: only the decay moves anything
  }
  AdamW adamw(groups, AdamWOptions{.lr = 0.5, .beta2 = 0.95});
  REQUIRE(adamw.param_groups()[0].weight_decay == 0.1);
  REQUIRE(adamw.param_groups()[1].weight_decay == 0.0);
  adamw.step();
  require_close(named[1].second, before[1] * (1.0 - 0.5 * 0.1), 1e-15, 0.0);
  for (std::size_t i : {0u, 2u, 3u, 4u}) {
    INFO(named[i].first);
    REQUIRE(bitwise_equal(named[i].second, before[i]));
  }
}

TEST_CASE("is_decayed_parameter: matrix weights of linear layers only") {
  Tensor matrix = zeros({4, 4}), vector = zeros({4});
  REQUIRE(is_decayed_parameter("transformer.h.0.mlp.c_fc.weight", matrix));
  REQUIRE(is_decayed_parameter("transformer.h.3.attn.query_projection.weight", matrix));
  REQUIRE(is_decayed_parameter("lm_head.weight", matrix));
  REQUIRE(is_decayed_parameter("0.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("transformer.h.0.mlp.c_fc.bias", vector));
  REQUIRE_FALSE(is_decayed_parameter("odd.bias", matrix));  // by name even when 2-D
  REQUIRE_FALSE(is_decayed_parameter("transformer.ln_f.weight", vector));
  REQUIRE_FALSE(is_decayed_parameter("transformer.h.1.ln_2.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("encoder.layernorm.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("transformer.wte.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("transformer.wpe.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("token_embedding.weight", matrix));
  REQUIRE_FALSE(is_decayed_parameter("scale", zeros({})));
  REQUIRE_THROWS_WITH(param_groups_for_decay({}, -0.1), Catch::Contains("[param_groups_for_decay]"));
}

TEST_CASE("Groups with their own lr; set_lr keeps their ratio") {
  Tensor a = param_with_grad({1.0}, {1.0});
  Tensor b = param_with_grad({1.0}, {1.0});
  SGD sgd(std::vector<ParamGroup>{{{a}, std::nullopt, std::nullopt}, {{b}, 0.2, std::nullopt}},
          SGDOptions{.lr = 0.1});
  REQUIRE(sgd.param_groups()[0].lr == 0.1);
  REQUIRE(sgd.param_groups()[1].lr == 0.2);
  sgd.step();
  require_values(a, {0.9}, 1e-15);
  require_values(b, {0.8}, 1e-15);
  sgd.set_lr(0.05);
  REQUIRE(sgd.lr() == 0.05);
  REQUIRE(sgd.param_groups()[0].lr == 0.05);
  REQUIRE(sgd.param_groups()[1].lr == Approx(0.1).epsilon(1e-15));
  sgd.step();
  require_values(a, {0.85}, 1e-15);
  require_values(b, {0.7}, 1e-15);
  REQUIRE_THROWS_WITH(sgd.set_lr(-1.0), Catch::Contains("[SGD]") && Catch::Contains("learning rate"));
}

TEST_CASE("Optimizers validate hyper-parameters and parameters") {
  Tensor p = from_vector<double>({1.0}).requires_grad_(true);
  auto adam = [&](AdamOptions o) { Adam opt({p}, o); };
  auto adamw = [&](AdamWOptions o) { AdamW opt({p}, o); };
  auto sgd = [&](SGDOptions o) { SGD opt({p}, o); };
  REQUIRE_THROWS_WITH(adam({.lr = -1e-3}), Catch::Contains("[Adam] invalid learning rate -0.001"));
  REQUIRE_THROWS_WITH(adam({.lr = std::nan("")}), Catch::Contains("[Adam] invalid learning rate"));
  REQUIRE_THROWS_WITH(adam({.beta1 = 1.0}), Catch::Contains("[Adam] invalid beta1 1"));
  REQUIRE_THROWS_WITH(adam({.beta2 = -0.5}), Catch::Contains("[Adam] invalid beta2 -0.5"));
  REQUIRE_THROWS_WITH(adam({.eps = 0.0}), Catch::Contains("[Adam] invalid eps 0"));
  REQUIRE_THROWS_WITH(adam({.weight_decay = -0.1}), Catch::Contains("[Adam] invalid weight_decay"));
  REQUIRE_THROWS_WITH(adamw({.beta2 = 1.5}), Catch::Contains("[AdamW] invalid beta2"));
  REQUIRE_THROWS_WITH(sgd({.lr = -1.0}), Catch::Contains("[SGD] invalid learning rate"));
  REQUIRE_THROWS_WITH(sgd({.momentum = -0.9}), Catch::Contains("[SGD] invalid momentum"));
  REQUIRE_THROWS_WITH(sgd({.nesterov = true}), Catch::Contains("[SGD] nesterov"));
  REQUIRE_THROWS_WITH(
      SGD(std::vector<ParamGroup>{{{p}, -0.5, std::nullopt}}),
      Catch::Contains("[SGD] invalid learning rate of a group -0.5"));
  REQUIRE_THROWS_WITH(Adam(TensorList{}), Catch::Contains("[Adam] got an empty parameter list"));
  REQUIRE_THROWS_WITH(Adam(TensorList{p, p}), Catch::Contains("more than once"));
  REQUIRE_THROWS_WITH(Adam(std::vector<ParamGroup>{{{p}, std::nullopt, std::nullopt},
                                                   {{p}, std::nullopt, std::nullopt}}),
                      Catch::Contains("more than once"));
  REQUIRE_THROWS_WITH(Adam(TensorList{p * 2.0}), Catch::Contains("not a leaf"));
  REQUIRE_THROWS_WITH(Adam(TensorList{Tensor()}), Catch::Contains("undefined"));
  REQUIRE_THROWS_WITH(Adam(TensorList{zeros({2}, kInt64)}), Catch::Contains("int64"));
}

// ================================================================ clipping

TEST_CASE("clip_grad_norm_ returns the global norm and scales above max_norm") {
  Tensor a = param_with_grad({0.0, 0.0}, {3.0, 4.0});
  Tensor b = param_with_grad({0.0}, {12.0});
  Tensor no_grad = from_vector<double>({1.0}).requires_grad_(true);
  SECTION("below: unchanged") {
    REQUIRE(clip_grad_norm_({a, b, no_grad}, 20.0) == Approx(13.0).epsilon(1e-15));
    require_values(a.grad(), {3.0, 4.0}, 0.0);
    require_values(b.grad(), {12.0}, 0.0);
  }
  SECTION("above: scaled by max_norm / (norm + 1e-6)") {
    const Tensor grad_before = a.grad();
    REQUIRE(clip_grad_norm_({a, b, no_grad}, 6.5) == Approx(13.0).epsilon(1e-15));
    const double c = 6.5 / (13.0 + 1e-6);
    require_values(a.grad(), {3.0 * c, 4.0 * c}, 1e-15);
    require_values(b.grad(), {12.0 * c}, 1e-15);
    REQUIRE(a.grad().shares_storage_with(grad_before));  // in place
    REQUIRE_FALSE(no_grad.grad().defined());
    REQUIRE(clip_grad_norm_({a, b}, 6.5) == Approx(6.5).epsilon(1e-6));
  }
  SECTION("a broadcast (stride 0) gradient is replaced, not written through") {
    Tensor c = zeros({3}, kFloat64).requires_grad_(true);
    Tensor shared = from_vector<double>({4.0});
    c.set_grad(shared.expand({3}));
    REQUIRE(clip_grad_norm_({c}, 1.0) == Approx(std::sqrt(48.0)).epsilon(1e-15));
    const double k = 1.0 / (std::sqrt(48.0) + 1e-6);
    require_values(c.grad(), {4 * k, 4 * k, 4 * k}, 1e-15);
    require_values(shared, {4.0}, 0.0);
  }
  SECTION("large float32 gradients are accumulated in float64") {
    Tensor big = zeros({100000}).requires_grad_(true);
    big.set_grad(full({100000}, 1e20));  // squares overflow float32
    REQUIRE(clip_grad_norm_({big}, 1.0) == Approx(1e20 * std::sqrt(1e5)).epsilon(1e-6));
    REQUIRE(big.grad().at<float>({99999}) == Approx(1.0 / std::sqrt(1e5)).epsilon(1e-5));
  }
  SECTION("non-finite norms and bad max_norm") {
    b.set_grad(from_vector<double>({std::numeric_limits<double>::infinity()}));
    REQUIRE_THROWS_WITH(clip_grad_norm_({a, b}, 1.0, true),
                        Catch::Contains("[clip_grad_norm_]") && Catch::Contains("inf"));
    REQUIRE(std::isinf(clip_grad_norm_({a, b}, 1.0)));
    REQUIRE_THROWS_WITH(clip_grad_norm_({a}, -1.0), Catch::Contains("[clip_grad_norm_] max_norm"));
  }
}

// ================================================================ schedules

TEST_CASE("WarmupCosineLR: linear warm-up, cosine decay, then min_lr") {
  WarmupCosineLR schedule(1.0, 0.1, 10, 110);
  REQUIRE(schedule.lr_at(0) == Approx(0.1));
  REQUIRE(schedule.lr_at(4) == Approx(0.5));
  REQUIRE(schedule.lr_at(9) == 1.0);    // the last warm-up step reaches max_lr
  REQUIRE(schedule.lr_at(10) == 1.0);   // cos(0)
  REQUIRE(schedule.lr_at(60) == Approx(0.55).epsilon(1e-14));  // half way: the mean
  REQUIRE(schedule.lr_at(35) == Approx(0.1 + 0.45 * (1 + std::cos(std::numbers::pi / 4))).epsilon(1e-14));
  REQUIRE(schedule.lr_at(109) > 0.1);
  REQUIRE(schedule.lr_at(110) == 0.1);
  REQUIRE(schedule.lr_at(100000) == 0.1);
  for (std::int64_t s = 10; s < 110; ++s) REQUIRE(schedule.lr_at(s + 1) <= schedule.lr_at(s));

  WarmupCosineLR no_warmup(2.0, 0.0, 0, 4);
  REQUIRE(no_warmup.lr_at(0) == 2.0);
  REQUIRE(no_warmup.lr_at(2) == Approx(1.0));
  REQUIRE(no_warmup.lr_at(4) == 0.0);
  REQUIRE(ConstantLR(0.3).lr_at(12345) == 0.3);

  REQUIRE_THROWS_WITH(WarmupCosineLR(0.1, 0.2, 0, 10), Catch::Contains("[WarmupCosineLR]"));
  REQUIRE_THROWS_WITH(WarmupCosineLR(1.0, 0.1, 20, 10), Catch::Contains("[WarmupCosineLR] expected 0 <= warmup_steps"));
  REQUIRE_THROWS_WITH(schedule.lr_at(-1), Catch::Contains("[WarmupCosineLR] step"));
  REQUIRE_THROWS_WITH(ConstantLR(-1.0), Catch::Contains("[ConstantLR]"));
}

// ================================================================ optimizer state

TEST_CASE("Optimizer state_dict round trip continues identically") {
  Generator gen(20);
  Tensor w = randn({3, 4}, gen, kFloat64).requires_grad_(true);
  std::vector<Tensor> grads;
  for (int s = 0; s < 6; ++s) grads.push_back(randn({3, 4}, gen, kFloat64));
  auto run = [&](Optimizer& opt, Tensor& p, int from, int to) {
    for (int s = from; s < to; ++s) {
      p.set_grad(grads[static_cast<std::size_t>(s)]);
      opt.step();
    }
  };
  Tensor straight = w.detach().clone().requires_grad_(true);
  SGD sgd_straight({straight}, SGDOptions{.lr = 0.1, .momentum = 0.9});
  run(sgd_straight, straight, 0, 6);

  Tensor resumed = w.detach().clone().requires_grad_(true);
  auto state = [&] {
    SGD first({resumed}, SGDOptions{.lr = 0.1, .momentum = 0.9});
    run(first, resumed, 0, 3);
    auto s = first.state_dict();
    std::map<std::string, Tensor> copied;
    for (auto& [name, t] : s) copied[name] = t.clone();
    return copied;
  }();
  SGD second({resumed}, SGDOptions{.lr = 0.1, .momentum = 0.9});
  second.load_state_dict(state);
  REQUIRE(second.step_count() == 3);
  run(second, resumed, 3, 6);
  REQUIRE(bitwise_equal(resumed, straight));
}

TEST_CASE("Optimizer load_state_dict names the offending tensor and changes nothing") {
  Tensor a = param_with_grad({1.0, 2.0}, {0.1, 0.2});
  Tensor b = param_with_grad({1.0, 2.0, 3.0}, {0.1, 0.2, 0.3});
  Adam adam({a, b});
  adam.step();
  auto good = adam.state_dict();
  for (auto& [name, t] : good) t = t.clone();

  Adam fresh(TensorList{a, b});
  auto expect_error = [&](const std::map<std::string, Tensor>& state, const std::string& text) {
    REQUIRE_THROWS_WITH(fresh.load_state_dict(state),
                        Catch::Contains("[load_state_dict] Adam") && Catch::Contains(text));
    REQUIRE(fresh.state_dict().size() == 1);  // unchanged: only "step"
    REQUIRE(fresh.step_count() == 0);
  };
  auto without = [&](const std::string& name) { auto s = good; s.erase(name); return s; };
  auto with = [&](const std::string& name, Tensor t) { auto s = good; s[name] = t; return s; };
  expect_error(without("step"), "missing tensor \"step\"");
  expect_error(without("state.1.exp_avg_sq"), "missing tensor \"state.1.exp_avg_sq\"");
  expect_error(with("state.1.exp_avg", zeros({2}, kFloat64)), "\"state.1.exp_avg\" has shape [2]");
  expect_error(with("state.0.exp_avg", zeros({2})), "float32");
  expect_error(with("state.2.exp_avg", zeros({2}, kFloat64)), "refers to parameter 2");
  expect_error(with("state.0.momentum_buffer", zeros({2}, kFloat64)),
               "unexpected tensor \"state.0.momentum_buffer\"");
  expect_error(with("lr", zeros({})), "unexpected tensor \"lr\"");
  expect_error(with("state.01.exp_avg", zeros({2}, kFloat64)), "unexpected tensor \"state.01.exp_avg\"");
  expect_error(with("step", zeros({})), "\"step\" must be a non-negative int64 scalar");
  expect_error(with("state.0.step", from_vector<std::int64_t>({1})), "\"state.0.step\" must be");

  SGD sgd({a, b}, SGDOptions{.momentum = 0.9});
  REQUIRE_THROWS_WITH(sgd.load_state_dict(good), Catch::Contains("[load_state_dict] SGD") &&
                                                     Catch::Contains("keeps momentum_buffer"));
  fresh.load_state_dict(good);
  REQUIRE(fresh.step_count() == 1);
  REQUIRE(bitwise_equal(fresh.state_dict().at("state.1.exp_avg"), good.at("state.1.exp_avg")));
  // The loaded state is a private copy.
  REQUIRE_FALSE(fresh.state_dict().at("state.1.exp_avg").shares_storage_with(good.at("state.1.exp_avg")));
}

// ================================================================ checkpoints

namespace {

// A small model with dropout: resuming must restore its generator too.
struct TinyNet : Module {
  TinyNet(std::uint64_t seed, std::shared_ptr<Generator> dropout_gen) {
    Generator init(seed);
    wte = register_module("wte", std::make_shared<Embedding>(7, 6, init, EmbeddingOptions{.init_std = 0.3}));
    ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(6));
    mlp = register_module("mlp", std::make_shared<MLP>(6, 12, init, dropout_gen, MLPOptions{.dropout = 0.2, .proj_init_std = 0.1}));
    head = register_module("lm_head", std::make_shared<Linear>(6, 7, init, LinearOptions{.bias = false, .init_std = 0.3}));
  }
  Tensor forward(const Tensor& ids) const {
    Tensor x = wte->forward(ids);
    x = x + mlp->forward(ln_1->forward(x));
    return head->forward(x);
  }
  std::shared_ptr<Embedding> wte;
  std::shared_ptr<LayerNorm> ln_1;
  std::shared_ptr<MLP> mlp;
  std::shared_ptr<Linear> head;
};

struct Run {
  std::shared_ptr<Generator> dropout_gen = std::make_shared<Generator>(5);
  Generator data_gen{6};
  TinyNet model;
  AdamW optimizer;
  WarmupCosineLR schedule{3e-2, 3e-3, 2, 8};

  explicit Run(std::uint64_t seed)
      : model(seed, dropout_gen),
        optimizer(param_groups_for_decay(model.named_parameters(), 0.1),
                  AdamWOptions{.lr = 3e-2, .beta1 = 0.9, .beta2 = 0.95}) {}

  void train_step(std::int64_t step) {
    Tensor ids = randint(0, 7, {4, 5}, data_gen);
    Tensor targets = randint(0, 7, {4, 5}, data_gen);
    optimizer.zero_grad();
    Tensor loss = cross_entropy(model.forward(ids).reshape({20, 7}), targets.reshape({20}));
    loss.backward();
    clip_grad_norm_(model.parameters(), 1.0);
    optimizer.set_lr(schedule.lr_at(step));
    optimizer.step();
  }
};

}  // namespace

TEST_CASE("Checkpoint: N steps straight == N/2, save, load into fresh objects, N/2") {
  TempDir dir;
  const std::int64_t n = 8;
  Run straight(1);
  for (std::int64_t s = 0; s < n; ++s) straight.train_step(s);

  const std::string path = dir.file("ckpt.safetensors");
  {
    Run first(1);
    for (std::int64_t s = 0; s < n / 2; ++s) first.train_step(s);
    save_checkpoint(path, first.model, first.optimizer, n / 2,
                    {{"dropout", first.dropout_gen.get()}, {"data", &first.data_gen}},
                    "{\"n_embd\": 6}");
  }
  REQUIRE(read_checkpoint_info(path).step == n / 2);
  Run resumed(999);  // different init, fresh generators: all must come from the file
  REQUIRE_FALSE(bitwise_equal(resumed.model.head->weight, straight.model.head->weight));
  CheckpointInfo info = load_checkpoint(path, resumed.model, resumed.optimizer,
                                        {{"dropout", resumed.dropout_gen.get()}, {"data", &resumed.data_gen}});
  REQUIRE(info.step == n / 2);
  REQUIRE(info.config == "{\"n_embd\": 6}");
  for (std::int64_t s = info.step; s < n; ++s) resumed.train_step(s);

  const auto expected = straight.model.state_dict();
  const auto actual = resumed.model.state_dict();
  REQUIRE(expected.size() == 8);
  for (const auto& [name, tensor] : expected) {
    INFO(name);
    REQUIRE(bitwise_equal(actual.at(name), tensor));
  }
  REQUIRE(straight.dropout_gen->state() == resumed.dropout_gen->state());
  const auto optim_expected = straight.optimizer.state_dict();
  const auto optim_actual = resumed.optimizer.state_dict();
  REQUIRE(optim_expected.size() == optim_actual.size());
  for (const auto& [name, tensor] : optim_expected) {
    INFO(name);
    REQUIRE(bitwise_equal(optim_actual.at(name), tensor));
  }
}

TEST_CASE("Checkpoint: the file holds model.*, optim.* and metadata") {
  TempDir dir;
  Run run(2);
  run.train_step(0);
  const std::string path = dir.file("ckpt.safetensors");
  save_checkpoint(path, run.model, run.optimizer, 1, {{"dropout", run.dropout_gen.get()}}, "cfg");
  SafetensorsFile file = load_safetensors_file(path);
  REQUIRE(file.tensors.count("model.mlp.c_fc.weight"));
  REQUIRE(file.tensors.count("model.lm_head.weight"));
  REQUIRE(file.tensors.count("optim.step"));
  REQUIRE(file.tensors.count("optim.state.0.exp_avg_sq"));
  REQUIRE(file.metadata.at("format") == "flowgrad-checkpoint-1");
  REQUIRE(file.metadata.at("step") == "1");
  REQUIRE(file.metadata.at("config") == "cfg");
  REQUIRE(file.metadata.at("rng").find("\"dropout\"") != std::string::npos);
}

TEST_CASE("Checkpoint: training_state names what the file holds; find_nonfinite finds the first bad value") {
  TempDir dir;
  Run run(2);
  run.train_step(0);
  const auto state = training_state(run.model, run.optimizer);
  const std::string path = dir.file("ckpt.safetensors");
  save_checkpoint(path, run.model, run.optimizer, 1, {{"dropout", run.dropout_gen.get()}}, "cfg");
  const SafetensorsFile file = load_safetensors_file(path);
  REQUIRE(file.tensors.size() == state.size());
  for (const auto& [name, tensor] : state) REQUIRE(file.tensors.count(name));
  REQUIRE_FALSE(find_nonfinite(state));
  REQUIRE_FALSE(find_nonfinite(run.model.named_parameters()));

  // One corrupted optimizer value (issue 11: it resumed to "validation loss -nan").
  Tensor exp_avg = state.at("optim.state.0.exp_avg_sq");
  exp_avg.data<float>()[3] = std::numeric_limits<float>::infinity();
  const auto bad = find_nonfinite(training_state(run.model, run.optimizer));
  REQUIRE(bad);
  REQUIRE(bad->name == "optim.state.0.exp_avg_sq");
  REQUIRE(bad->index == 3);
  REQUIRE(std::isinf(bad->value));
  // Non-contiguous and float64 tensors, and int64 ones (never non-finite).
  Tensor t = zeros({3, 4}, kFloat64);
  t.data<double>()[6] = std::nan("");  // row 1, column 2
  const auto in_view = find_nonfinite(std::map<std::string, Tensor>{{"i", arange(3)}, {"t", t.transpose(0, 1)}});
  REQUIRE(in_view);
  REQUIRE(in_view->name == "t");
  REQUIRE(in_view->index == 2 * 3 + 1);  // row-major in the transposed view
}

TEST_CASE("Checkpoint: a file already in memory loads as the file does") {
  TempDir dir;
  Run run(2), from_bytes(7);
  run.train_step(0);
  const std::string path = dir.file("ckpt.safetensors");
  save_checkpoint(path, run.model, run.optimizer, 1, {{"dropout", run.dropout_gen.get()}}, "cfg");
  const SafetensorsFile file = parse_safetensors(read_text_file(path), "upload");
  REQUIRE(read_checkpoint_info(file, "upload").config == "cfg");
  REQUIRE(load_checkpoint(file, "upload", from_bytes.model, from_bytes.optimizer,
                          {{"dropout", from_bytes.dropout_gen.get()}}).step == 1);
  REQUIRE(bitwise_equal(from_bytes.model.head->weight, run.model.head->weight));
  SafetensorsFile no_step = file;
  no_step.metadata.erase("step");
  REQUIRE_THROWS_WITH(read_checkpoint_info(no_step, "upload"),
                      Catch::Contains("[load_checkpoint] upload") && Catch::Contains("\"step\""));
}

TEST_CASE("Checkpoint: loading a mismatched file names the tensor and changes nothing") {
  TempDir dir;
  Run run(3);
  run.train_step(0);
  const std::string path = dir.file("ckpt.safetensors");
  save_checkpoint(path, run.model, run.optimizer, 1, {{"dropout", run.dropout_gen.get()}}, "");

  Run other(4);
  const Tensor head_before = other.model.head->weight.clone();
  const std::string rng_before = other.dropout_gen->state();
  auto expect_unchanged = [&] {
    REQUIRE(bitwise_equal(other.model.head->weight, head_before));
    REQUIRE(other.optimizer.step_count() == 0);
    REQUIRE(other.dropout_gen->state() == rng_before);
  };

  SECTION("a generator the file does not have") {
    Generator extra;
    REQUIRE_THROWS_WITH(load_checkpoint(path, other.model, other.optimizer,
                                        {{"dropout", other.dropout_gen.get()}, {"data", &extra}}),
                        Catch::Contains("[load_checkpoint]") && Catch::Contains("\"data\""));
    expect_unchanged();
  }
  SECTION("a model tensor of the wrong shape") {
    auto tensors = load_safetensors_file(path);
    tensors.tensors["model.mlp.c_proj.bias"] = zeros({5});
    save_safetensors(path, tensors.tensors, tensors.metadata);
    REQUIRE_THROWS_WITH(load_checkpoint(path, other.model, other.optimizer, {}),
                        Catch::Contains("[load_checkpoint]") && Catch::Contains("[load_state_dict]") &&
                            Catch::Contains("\"mlp.c_proj.bias\"") && Catch::Contains("[5]"));
    expect_unchanged();
  }
  SECTION("a missing optimizer tensor") {
    auto tensors = load_safetensors_file(path);
    tensors.tensors.erase("optim.state.3.exp_avg");
    save_safetensors(path, tensors.tensors, tensors.metadata);
    REQUIRE_THROWS_WITH(load_checkpoint(path, other.model, other.optimizer, {}),
                        Catch::Contains("optimizer") && Catch::Contains("\"state.3.exp_avg\""));
    expect_unchanged();
  }
  SECTION("a tensor outside model.* and optim.*") {
    auto tensors = load_safetensors_file(path);
    tensors.tensors["stray"] = zeros({1});
    save_safetensors(path, tensors.tensors, tensors.metadata);
    REQUIRE_THROWS_WITH(load_checkpoint(path, other.model, other.optimizer, {}),
                        Catch::Contains("unexpected tensor \"stray\""));
    expect_unchanged();
  }
  SECTION("a file that is not a checkpoint") {
    run.model.save(path);
    REQUIRE_THROWS_WITH(load_checkpoint(path, other.model, other.optimizer, {}),
                        Catch::Contains("[load_checkpoint]") && Catch::Contains("\"format\""));
    expect_unchanged();
  }
  SECTION("a model with other names") {
    TinyNet different(1, other.dropout_gen);
    Sequential seq;
    seq.add(std::make_shared<Linear>(2, 2, *other.dropout_gen));
    SGD sgd(seq.parameters());
    REQUIRE_THROWS_WITH(load_checkpoint(path, seq, sgd, {}), Catch::Contains("[load_checkpoint]"));
  }
}
