// gradcheck: compares the analytic gradient of every input with central
// finite differences, in float64.
//
// With a fixed random weight tensor W (seeded), the scalar
//   L(x) = Σ W ⊙ f(x)
// is differentiated twice: by backward (W as the output gradient) and by
//   ∂L/∂x_k ≈ (L(x + h e_k) − L(x − h e_k)) / 2h   for every element k.
// Inputs may be non-contiguous views; they must be float64 (int64 inputs
// such as indices are passed through and not checked).
#pragma once

#include <functional>
#include <vector>

#include "../core/tensor.h"

namespace flowgrad {

struct GradcheckOptions {
  double step = 1e-6;     // h
  double atol = 1e-7;     // element passes when |analytic - numeric| <= atol + rtol*|numeric|
  double rtol = 1e-5;
  std::uint64_t seed = 0;  // for W
};

struct GradcheckResult {
  std::vector<double> max_abs_error;  // per input (0 for inputs not checked)
  std::vector<double> max_rel_error;  // |a - n| / max(|a|, |n|), over elements with max > atol
  bool passed = true;                 // every element within atol + rtol*|numeric|
  std::string report() const;         // one line per input
};

using DifferentiableFunction = std::function<Tensor(const TensorList&)>;

GradcheckResult gradcheck(const DifferentiableFunction& f, const TensorList& inputs,
                          const GradcheckOptions& options = {});

// The same check for tensors the function uses itself, such as a module's
// parameters (module.parameters()): f() is evaluated as it is, the
// parameters (float64 leaves that require grad) are perturbed in place and
// restored, and their .grad is left exactly as it was before the call.
GradcheckResult gradcheck_parameters(const std::function<Tensor()>& f, const TensorList& parameters,
                                     const GradcheckOptions& options = {});

}  // namespace flowgrad
