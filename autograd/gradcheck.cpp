#include "gradcheck.h"

#include <cmath>
#include <sstream>

#include "../core/random.h"
#include "grad_mode.h"

namespace flowgrad {
namespace {

double weighted_sum(const Tensor& output, const std::vector<double>& weights) {
  std::vector<double> values = output.to_vector<double>();
  double total = 0.0;
  for (std::size_t i = 0; i < values.size(); ++i) total += weights[i] * values[i];
  return total;
}

// Row-major element offsets of `t` in its storage.
std::vector<std::int64_t> element_offsets(const Tensor& t) {
  std::vector<std::int64_t> offsets;
  for_each_offset(t.shape(), t.strides(),
                  [&](std::int64_t off) { offsets.push_back(t.offset() + off); });
  return offsets;
}

}  // namespace

std::string GradcheckResult::report() const {
  std::ostringstream out;
  for (std::size_t i = 0; i < max_abs_error.size(); ++i)
    out << "input " << i << ": max abs error " << max_abs_error[i] << ", max rel error "
        << max_rel_error[i] << '\n';
  out << (passed ? "passed" : "FAILED");
  return out.str();
}

namespace {

// Backward once with random output weights W, then central differences of
// Σ W ⊙ evaluate() on every element of every float64 leaf, poked in place
// in its storage. Leaves of other dtypes (indices) are not checked.
GradcheckResult compare_with_finite_differences(const std::function<Tensor()>& evaluate, const TensorList& leaves,
                                                const GradcheckOptions& options, const char* op) {
  GradcheckResult result;
  result.max_abs_error.assign(leaves.size(), 0.0);
  result.max_rel_error.assign(leaves.size(), 0.0);
  Tensor output = evaluate();
  if (!output.requires_grad())
    fail(op, "the function's output of shape ", shape_str(output.shape()),
         " does not depend on any input that requires grad");
  Generator gen(options.seed);
  Tensor weights = randn(output.shape(), gen, output.dtype());
  output.backward(weights);
  std::vector<double> w = weights.to_vector<double>();

  NoGradGuard no_grad;
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const Tensor& leaf = leaves[i];
    if (leaf.dtype() != kFloat64) continue;
    std::vector<double> analytic = leaf.grad().defined() ? leaf.grad().to_vector<double>()
                                                         : std::vector<double>(leaf.numel(), 0.0);
    double* data = static_cast<double*>(leaf.storage()->data());
    std::vector<std::int64_t> offsets = element_offsets(leaf);
    for (std::size_t k = 0; k < offsets.size(); ++k) {
      // The poked element gets its value back even when the function throws.
      struct Restore {
        double& element;
        const double original;
        ~Restore() { element = original; }
      } restore{data[offsets[k]], data[offsets[k]]};
      restore.element = restore.original + options.step;
      const double plus = weighted_sum(evaluate(), w);
      restore.element = restore.original - options.step;
      const double minus = weighted_sum(evaluate(), w);
      restore.element = restore.original;
      const double numeric = (plus - minus) / (2.0 * options.step);

      const double error = std::abs(analytic[k] - numeric);
      const double scale = std::max(std::abs(analytic[k]), std::abs(numeric));
      result.max_abs_error[i] = std::max(result.max_abs_error[i], error);
      if (scale > options.atol) result.max_rel_error[i] = std::max(result.max_rel_error[i], error / scale);
      if (!(error <= options.atol + options.rtol * std::abs(numeric))) result.passed = false;
    }
  }
  return result;
}

}  // namespace

GradcheckResult gradcheck(const DifferentiableFunction& f, const TensorList& inputs,
                          const GradcheckOptions& options) {
  // Leaves that alias the inputs' storage (keeping their strides), so the
  // function sees the same layouts and finite differences can poke elements.
  TensorList leaves;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (input.dtype() == kFloat32)
      fail("gradcheck", "input ", i, " of shape ", shape_str(input.shape()),
           " is float32; finite differences need float64");
    Tensor leaf = input.detach();
    if (input.dtype() == kFloat64) {
      for (std::int64_t s : leaf.strides())
        if (s == 0) leaf = leaf.clone();  // an expanded input would alias its own elements
      leaf.requires_grad_(true);
    }
    leaves.push_back(leaf);
  }
  return compare_with_finite_differences([&] { return f(leaves); }, leaves, options, "gradcheck");
}

GradcheckResult gradcheck_parameters(const std::function<Tensor()>& f, const TensorList& parameters,
                                     const GradcheckOptions& options) {
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const Tensor& p = parameters[i];
    if (!p.defined() || p.dtype() != kFloat64 || !p.requires_grad() || !p.is_leaf())
      fail("gradcheck_parameters", "parameter ", i, " must be a float64 leaf that requires grad; got ",
           p.defined() ? dtype_name(p.dtype()) : "an undefined tensor", p.defined() ? " " : "",
           p.defined() ? shape_str(p.shape()) : "");
    for (std::int64_t s : p.strides())
      if (s == 0) fail("gradcheck_parameters", "parameter ", i, " of shape ", shape_str(p.shape()),
                       " is an expanded view: its elements alias each other");
  }
  // Each parameter once (tied modules list a tensor twice): its own gradient
  // is put aside and given back, whatever happens.
  TensorList unique;
  for (const Tensor& p : parameters) {
    bool seen = false;
    for (const Tensor& u : unique) seen = seen || u.impl_ptr() == p.impl_ptr();
    if (!seen) unique.push_back(p);
  }
  struct RestoreGradients {
    const TensorList& parameters;
    TensorList saved;
    ~RestoreGradients() {
      for (std::size_t i = 0; i < saved.size(); ++i) parameters[i].set_grad(saved[i]);
    }
  } restore{unique, {}};
  for (const Tensor& p : unique) {
    restore.saved.push_back(p.grad());
    p.set_grad(Tensor());
  }
  return compare_with_finite_differences(f, unique, options, "gradcheck_parameters");
}

}  // namespace flowgrad
