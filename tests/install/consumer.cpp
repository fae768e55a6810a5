// Out-of-tree program built by scripts/check-install against the INSTALLED
// library, with nothing but `pkg-config --cflags --libs flowgrad`, and as a
// meson project with flowgrad as its subproject (tests/subproject). It proves
// the installed headers are self-contained and that the .pc file brings every
// flag and library they need.
// Exits non-zero on any mismatch.
#include <flowgrad/flowgrad.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

int failures = 0;

void expect_near(const char* what, double actual, double expected) {
  if (std::abs(actual - expected) > 1e-12 * (1.0 + std::abs(expected))) {
    std::printf("MISMATCH %s: got %.17g, expected %.17g\n", what, actual, expected);
    ++failures;
  }
}

}  // namespace

int main() {
  using namespace flowgrad;
  try {
    // The headers and the library loaded at run time are the same version.
    if (std::strcmp(version(), FLOWGRAD_VERSION_STRING) != 0 || FLOWGRAD_VERSION_MAJOR < 0) {
      std::printf("MISMATCH version: library %s, headers %s\n", version(), FLOWGRAD_VERSION_STRING);
      ++failures;
    }
    set_num_threads(2);

    // L = Σ (x·w + sigmoid(x));  dL/dx = w + σ(x)(1 − σ(x)),  dL/dw = x.
    Tensor x = tensor({-1.0, 0.5, 2.0}, kFloat64).requires_grad_();
    Tensor w = tensor({3.0, -2.0, 0.25}, kFloat64).requires_grad_();
    Tensor loss = sum(x * w + sigmoid(x));
    loss.backward();

    std::vector<double> xs = x.detach().to_vector<double>();
    std::vector<double> ws = w.detach().to_vector<double>();
    std::vector<double> dx = x.grad().to_vector<double>();
    std::vector<double> dw = w.grad().to_vector<double>();
    double expected_loss = 0.0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      double s = 1.0 / (1.0 + std::exp(-xs[i]));
      expected_loss += xs[i] * ws[i] + s;
      expect_near("dL/dx", dx[i], ws[i] + s * (1.0 - s));
      expect_near("dL/dw", dw[i], xs[i]);
    }
    expect_near("L", loss.item<double>(), expected_loss);

    // The library's own finite-difference check, through the installed API.
    GradcheckResult check = gradcheck(
        [](const TensorList& in) { return tanh(in[0]) * in[0]; }, {x.detach().requires_grad_()});
    if (!check.passed) {
      std::printf("MISMATCH gradcheck:\n%s\n", check.report().c_str());
      ++failures;
    }

    // parallel_for is a template instantiated here whose chunks run on oneTBB
    // inside the library: no oneTBB header or flag is needed. Each index
    // writes only its own slot.
    std::vector<std::int64_t> squares(100000);
    parallel_for(static_cast<std::int64_t>(squares.size()), 1000,
                 [&](std::int64_t begin, std::int64_t end) {
                   for (std::int64_t i = begin; i < end; ++i) squares[i] = i * i;
                 });
    expect_near("parallel_for", static_cast<double>(squares[99999]), 99999.0 * 99999.0);
  } catch (const Error& e) {
    std::printf("flowgrad error: %s\n", e.what());
    return 1;
  }
  if (failures > 0) return 1;
  std::printf("consumer: flowgrad %s works (gradients, gradcheck, parallel_for)\n", version());
  return 0;
}
