// Elementwise ops. Each op is its forward function and, next to it, the
// derivative used by its backward, with the formula in the comment above.
#include "elementwise.h"

#include <bit>
#include <cstdint>

#include <cmath>
#include <numbers>
#include <type_traits>

#include "../autograd/grad_mode.h"
#include "../autograd/node.h"
#include "kernels.h"
#include "vector_math.h"
#include "reduce.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;

// h = ½(1 + tanh u) = σ(2u), the factor gelu needs. In float, 1/(1 + e^{−2u})
// costs one exponential (a fraction of tanhf) and, unlike 1 + tanh u, does
// not cancel to 0 for negative u, so tiny gelu values keep their precision.
template <bool kFused = false, class T>
[[gnu::always_inline]] inline T gelu_half_one_plus_tanh(T u) {
  if constexpr (std::is_same_v<T, float>) {
    return 1.0f / (1.0f + exp_vectorisable<kFused>(-2.0f * u));
  } else {
    return T(0.5) * (1 + std::tanh(u));
  }
}

// ---- unary ops: y = forward(x), dx = derivative(dy, s) with s = x or y ----

enum class Keep { Input, Output };

template <class Derivative>
class UnaryBackward final : public Node {
 public:
  UnaryBackward(const char* name, Derivative derivative) : name_(name), derivative_(derivative) {}
  std::string_view name() const override { return name_; }
  TensorList backward(const Tensor& grad_output) override {
    return {kernels::map_binary(grad_output, saved.get(), name_, derivative_)};
  }
  SavedTensor saved{this};

 private:
  const char* name_;
  Derivative derivative_;
};

template <class Forward, class Derivative>
Tensor unary_op(const char* name, const Tensor& x, Keep keep, Forward forward,
                Derivative derivative) {
  Tensor y = kernels::map_unary(x, name, forward);
  if (autograd::any_requires_grad({x})) {
    auto node = std::make_shared<UnaryBackward<Derivative>>(name, derivative);
    autograd::connect_inputs(*node, {x});
    node->saved.save(keep == Keep::Input ? x : y);
    autograd::set_history(y, node);
  }
  return y;
}

Tensor scalar_like(double value, const Tensor& like) {
  return scalar_tensor(value, like.dtype());
}

}  // namespace

// neg: y = -x;  dx = -dy
Tensor neg(const Tensor& x) {
  return unary_op("neg", x, Keep::Input, [](auto v) { return -v; },
                  [](auto dy, auto) { return -dy; });
}

// pow: y = x^p;  dx = dy · p · x^(p-1)
Tensor pow(const Tensor& x, double p) {
  return unary_op(
      "pow", x, Keep::Input,
      [p](auto v) { return std::pow(v, static_cast<decltype(v)>(p)); },
      [p](auto dy, auto v) {
        using T = decltype(v);
        return dy * static_cast<T>(p) * std::pow(v, static_cast<T>(p - 1));
      });
}

// exp: y = e^x;  dx = dy · y
Tensor exp(const Tensor& x) {
  return unary_op("exp", x, Keep::Output, [](auto v) { return std::exp(v); },
                  [](auto dy, auto y) { return dy * y; });
}

// log: y = ln x;  dx = dy / x
Tensor log(const Tensor& x) {
  return unary_op("log", x, Keep::Input, [](auto v) { return std::log(v); },
                  [](auto dy, auto v) { return dy / v; });
}

// sqrt: y = √x;  dx = dy / (2y)
Tensor sqrt(const Tensor& x) {
  return unary_op("sqrt", x, Keep::Output, [](auto v) { return std::sqrt(v); },
                  [](auto dy, auto y) { return dy / (2 * y); });
}

// reciprocal: y = 1/x;  dx = -dy · y²
Tensor reciprocal(const Tensor& x) {
  return unary_op("reciprocal", x, Keep::Output, [](auto v) { return 1 / v; },
                  [](auto dy, auto y) { return -dy * y * y; });
}

// sigmoid: y = 1 / (1 + e^-x);  dx = dy · y · (1 - y)
Tensor sigmoid(const Tensor& x) {
  return unary_op("sigmoid", x, Keep::Output, [](auto v) { return 1 / (1 + std::exp(-v)); },
                  [](auto dy, auto y) { return dy * y * (1 - y); });
}

// tanh: y = tanh x;  dx = dy · (1 - y²)
Tensor tanh(const Tensor& x) {
  return unary_op("tanh", x, Keep::Output, [](auto v) { return std::tanh(v); },
                  [](auto dy, auto y) { return dy * (1 - y * y); });
}

// relu: y = max(x, 0);  dx = dy · [x > 0]
Tensor relu(const Tensor& x) {
  return unary_op("relu", x, Keep::Input, [](auto v) { return v > 0 ? v : decltype(v){0}; },
                  [](auto dy, auto v) { return v > 0 ? dy : decltype(dy){0}; });
}

// abs: y = |x|;  dx = dy · sign(x), 0 at x = 0
Tensor abs(const Tensor& x) {
  return unary_op("abs", x, Keep::Input, [](auto v) { return std::abs(v); },
                  [](auto dy, auto v) {
                    using T = decltype(v);
                    return v > 0 ? dy : v < 0 ? -dy : T(0);
                  });
}

// sin: y = sin x;  dx = dy · cos x
Tensor sin(const Tensor& x) {
  return unary_op("sin", x, Keep::Input, [](auto v) { return std::sin(v); },
                  [](auto dy, auto v) { return dy * std::cos(v); });
}

// cos: y = cos x;  dx = −dy · sin x
Tensor cos(const Tensor& x) {
  return unary_op("cos", x, Keep::Input, [](auto v) { return std::cos(v); },
                  [](auto dy, auto v) { return -dy * std::sin(v); });
}

// gelu: y = ½x(1 + t), t = tanh(u), u = c(x + 0.044715x³), c = √(2/π)
//       dx = dy · (½(1 + t) + ½x(1 - t²) · c(1 + 3·0.044715x²))
// With h = ½(1 + t): y = x·h and dy/dx = h + 2x·h(1 − h) · c(1 + 3·0.044715x²).
// h dominates the cost, so when a gradient is needed the forward pass
// evaluates it once and saves dy/dx; the backward is then a multiply.
namespace {

// One float gelu pass: the values, and with kSlope dy/dx too; kFused
// evaluates h's exponential in fused multiply-adds.
template <bool kFused, bool kSlope>
[[gnu::always_inline]] inline void gelu_float_pass(const float* in, float* out, float* slope, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = in[i];
    const float h = gelu_half_one_plus_tanh<kFused>(float(kGeluC) * (v + float(kGeluA) * v * v * v));
    out[i] = v * h;
    if constexpr (kSlope) slope[i] = h + 2 * v * h * (1 - h) * float(kGeluC) * (1 + 3 * float(kGeluA) * v * v);
  }
}

// For each x86 level (vector_math.h). With and without a slope buffer the
// same arithmetic, so gelu's values have the same bits whether or not a
// gradient is needed.
FLOWGRAD_PER_CPU
void gelu_pass(const float* in, float* out, float* slope, std::int64_t n) {
  const bool fused = per_cpu_clone_has_fma();
  if (fused && slope) gelu_float_pass<true, true>(in, out, slope, n);
  else if (fused) gelu_float_pass<true, false>(in, out, slope, n);
  else if (slope) gelu_float_pass<false, true>(in, out, slope, n);
  else gelu_float_pass<false, false>(in, out, slope, n);
}

void gelu_pass(const double* in, double* out, double* slope, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = in[i];
    const double h = gelu_half_one_plus_tanh(kGeluC * (v + kGeluA * v * v * v));
    out[i] = v * h;
    if (slope) slope[i] = h + 2 * v * h * (1 - h) * kGeluC * (1 + 3 * kGeluA * v * v);
  }
}

}  // namespace

Tensor gelu(const Tensor& x) {
  if (!x.defined()) fail("gelu", "input is an undefined tensor");
  if (!is_floating(x.dtype())) fail("gelu", "expected a float32 or float64 tensor, got ", dtype_name(x.dtype()));
  const bool needs_slope = autograd::any_requires_grad({x});
  Tensor input;
  {
    NoGradGuard no_grad;
    input = x.contiguous();
  }
  Tensor y = empty(x.shape(), x.dtype()), derivative;
  if (needs_slope) derivative = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), "gelu", [&]<class T>() {
    const T* in = input.data<T>();
    T* out = y.data<T>();
    T* slope = needs_slope ? derivative.data<T>() : nullptr;
    parallel_for(x.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
      gelu_pass(in + begin, out + begin, slope ? slope + begin : nullptr, end - begin);
    });
  });
  if (!needs_slope) return y;
  auto times_slope = [](auto dy, auto d) { return dy * d; };
  auto node = std::make_shared<UnaryBackward<decltype(times_slope)>>("gelu", times_slope);
  autograd::connect_inputs(*node, {x});
  node->saved.save(derivative);
  autograd::set_history(y, node);
  return y;
}

// clamp: y = min(max(x, lo), hi);  dx = dy · [lo <= x <= hi]
Tensor clamp(const Tensor& x, double lo, double hi) {
  if (!(lo <= hi)) fail("clamp", "expected min <= max, got min=", lo, " max=", hi);
  return unary_op(
      "clamp", x, Keep::Input,
      [lo, hi](auto v) {
        using T = decltype(v);
        return std::min(std::max(v, static_cast<T>(lo)), static_cast<T>(hi));
      },
      [lo, hi](auto dy, auto v) {
        using T = decltype(v);
        return v >= static_cast<T>(lo) && v <= static_cast<T>(hi) ? dy : T(0);
      });
}

// ---- binary ops with broadcasting ----
// Each input's gradient is reduced back to its own shape with sum_to: a
// broadcast input received the same value in many places.

namespace {

class AddBackward final : public Node {
 public:
  std::string_view name() const override { return "add"; }
  // add: y = a + b;  da = dy,  db = dy
  TensorList backward(const Tensor& dy) override {
    return {sum_to(dy, next_edges()[0].shape), sum_to(dy, next_edges()[1].shape)};
  }
};

class SubBackward final : public Node {
 public:
  std::string_view name() const override { return "sub"; }
  // sub: y = a - b;  da = dy,  db = -dy
  TensorList backward(const Tensor& dy) override {
    Tensor da, db;
    if (next_edges()[0].node) da = sum_to(dy, next_edges()[0].shape);
    if (next_edges()[1].node) db = neg(sum_to(dy, next_edges()[1].shape));
    return {da, db};
  }
};

class MulBackward final : public Node {
 public:
  std::string_view name() const override { return "mul"; }
  // mul: y = a · b;  da = dy · b,  db = dy · a
  TensorList backward(const Tensor& dy) override {
    Tensor da, db;
    if (next_edges()[0].node) da = sum_to(mul(dy, b.get()), next_edges()[0].shape);
    if (next_edges()[1].node) db = sum_to(mul(dy, a.get()), next_edges()[1].shape);
    return {da, db};
  }
  SavedTensor a{this}, b{this};
};

class DivBackward final : public Node {
 public:
  std::string_view name() const override { return "div"; }
  // div: y = a / b;  da = dy / b,  db = -dy · a / b²
  TensorList backward(const Tensor& dy) override {
    Tensor da, db;
    const Tensor b_value = b.get();
    if (next_edges()[0].node) da = sum_to(div(dy, b_value), next_edges()[0].shape);
    if (next_edges()[1].node) {
      Tensor local = kernels::map_binary(a.get(), b_value, "div", [](auto av, auto bv) {
        return -av / (bv * bv);
      });
      db = sum_to(mul(dy, local), next_edges()[1].shape);
    }
    return {da, db};
  }
  SavedTensor a{this}, b{this};
};

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::map_binary(a, b, "add", [](auto x, auto z) { return x + z; });
  if (auto node = autograd::make_node<AddBackward>({a, b})) autograd::set_history(y, node);
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::map_binary(a, b, "sub", [](auto x, auto z) { return x - z; });
  if (auto node = autograd::make_node<SubBackward>({a, b})) autograd::set_history(y, node);
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::map_binary(a, b, "mul", [](auto x, auto z) { return x * z; });
  if (auto node = autograd::make_node<MulBackward>({a, b})) {
    if (b.requires_grad()) node->a.save(a);  // da needs b, db needs a
    if (a.requires_grad()) node->b.save(b);
    autograd::set_history(y, node);
  }
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::map_binary(a, b, "div", [](auto x, auto z) { return x / z; });
  if (auto node = autograd::make_node<DivBackward>({a, b})) {
    node->a.save(a);
    node->b.save(b);
    autograd::set_history(y, node);
  }
  return y;
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(b, a)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(b, a)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(b, a)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(b, a)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like(a, b), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(a, b), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(a, b), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(a, b), b); }

// ---- in-place updates ----

namespace {

void check_inplace(const char* op, const Tensor& self) {
  if (GradMode::is_enabled() && self.requires_grad())
    fail(op, "in-place update of a tensor of shape ", shape_str(self.shape()),
         " that requires grad; wrap it in NoGradGuard (as optimizers do) or use the "
         "out-of-place op");
}

}  // namespace

void add_(const Tensor& self, const Tensor& other, double alpha) {
  check_inplace("add_", self);
  if (self.dtype() != other.dtype())
    fail("add_", "dtype mismatch: ", dtype_name(self.dtype()), " and ", dtype_name(other.dtype()));
  Tensor scaled = alpha == 1.0 ? other : kernels::map_unary(other, "add_", [alpha](auto v) {
    return v * static_cast<decltype(v)>(alpha);
  });
  add_elements(scaled.shape() == self.shape() ? scaled : scaled.expand(self.shape()), self);
}

void mul_(const Tensor& self, double factor) {
  check_inplace("mul_", self);
  Tensor scaled = kernels::map_unary(self, "mul_", [factor](auto v) {
    return v * static_cast<decltype(v)>(factor);
  });
  copy_elements(scaled, self);
}

void fill_(const Tensor& self, double value) {
  check_inplace("fill_", self);
  copy_elements(full({}, value, self.dtype()).expand(self.shape()), self);
}

void zero_(const Tensor& self) { fill_(self, 0.0); }

void copy_(const Tensor& self, const Tensor& src) {
  check_inplace("copy_", self);
  copy_elements(src.shape() == self.shape() ? src : src.expand(self.shape()), self);
}

}  // namespace flowgrad
