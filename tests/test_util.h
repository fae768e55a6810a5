// Helpers shared by the test executables.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "../flowgrad.h"

namespace flowgrad::testing {

// Runs gradcheck and fails the test case with its report when it fails.
inline void require_gradients_match(const DifferentiableFunction& f, const TensorList& inputs,
                                    GradcheckOptions options = {}) {
  GradcheckResult result = gradcheck(f, inputs, options);
  INFO(result.report());
  REQUIRE(result.passed);
}

// Every element of `actual` within atol + rtol*|expected| of `expected`.
inline void require_close(const Tensor& actual, const Tensor& expected, double rtol = 1e-6,
                          double atol = 1e-9) {
  REQUIRE(actual.shape() == expected.shape());
  std::vector<double> a = actual.to_vector<double>();
  std::vector<double> e = expected.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs expected " << e[i]);
    REQUIRE(std::abs(a[i] - e[i]) <= atol + rtol * std::abs(e[i]));
  }
}

inline void require_values(const Tensor& actual, const std::vector<double>& expected,
                           double tolerance = 1e-6) {
  std::vector<double> a = actual.to_vector<double>();
  REQUIRE(a.size() == expected.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    REQUIRE(a[i] == Approx(expected[i]).margin(tolerance));
  }
}

// A float64 tensor whose layout is the transpose of a contiguous one: the
// way tests exercise non-contiguous inputs.
inline Tensor transposed_randn(const Shape& shape, Generator& gen) {
  REQUIRE(shape.size() >= 2);
  Shape swapped = shape;
  std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
  Tensor t = randn(swapped, gen, kFloat64).transpose(-1, -2);
  REQUIRE_FALSE(t.is_contiguous());
  return t;
}

}  // namespace flowgrad::testing
