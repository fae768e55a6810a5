// flow_inspect: every named intermediate of Flow-Attention and the gradient
// of a loss with respect to it, on a small random input.
//
//   flow_inspect [--causal] [--L 6] [--S 5] [--D 4] [--M 3] [--seed 0] [--out FILE]
//
// Prints a table of each intermediate's norm and first values next to those
// of ∂ℓ/∂(intermediate), for ℓ = Σ G ⊙ out with a random G. Then it splits
// ∂ℓ/∂Q by path: blocking the gradient at the sink allocation A (or the
// source competition C) with a hook removes exactly the paths through it,
// since no path passes through both. With --out, all tensors and gradients
// go to a safetensors file ("name" and "grad/name").
#include <CLI/CLI.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "../flowgrad.h"
#include "common/flags.h"

namespace {

struct Config {
  bool causal = false;
  std::int64_t L = 6, S = 5, D = 4, M = 3;
  std::uint64_t seed = 0;
  std::string out_path;
};

double norm(const fg::Tensor& t) {
  double total = 0;
  for (double x : t.to_vector<double>()) total += x * x;
  return std::sqrt(total);
}

std::string first_values(const fg::Tensor& t, std::size_t count = 4) {
  std::vector<double> values = t.to_vector<double>();
  std::ostringstream out;
  out << std::showpos << std::setprecision(3) << std::scientific;
  for (std::size_t i = 0; i < std::min(count, values.size()); ++i) out << (i ? " " : "") << values[i];
  if (values.size() > count) out << " ...";
  return out.str();
}

struct Inputs {
  fg::Tensor q, k, v, grad_out;
};

// ∂ℓ/∂Q with the gradient blocked at `blocked` (a name of the trace, or "").
fg::Tensor grad_q_blocking(const Inputs& in, const fg::FlowAttentionOptions& options,
                           const std::string& blocked) {
  fg::Tensor q = in.q.detach().requires_grad_();
  fg::FlowAttentionTrace trace = fg::flow_attention_trace(q, in.k, in.v, options);
  for (auto& [name, tensor] : trace.named())
    if (name == blocked) tensor.register_hook([](const fg::Tensor& g) { return fg::zeros_like(g); });
  trace.out.backward(in.grad_out);
  return q.grad();
}

int run(const Config& config) {
  fg::Generator gen(config.seed);
  const std::int64_t S = config.causal ? config.L : config.S;
  Inputs in{fg::randn({1, 1, config.L, config.D}, gen, fg::kFloat64),
            fg::randn({1, 1, S, config.D}, gen, fg::kFloat64),
            fg::randn({1, 1, S, config.M}, gen, fg::kFloat64),
            fg::randn({1, 1, config.L, config.M}, gen, fg::kFloat64)};
  const auto options = fg::FlowAttentionOptions{}.set_causal(config.causal);

  fg::Tensor q = in.q.detach().requires_grad_();
  fg::Tensor k = in.k.detach().requires_grad_();
  fg::Tensor v = in.v.detach().requires_grad_();
  fg::FlowAttentionTrace trace = fg::flow_attention_trace(q, k, v, options);
  trace.out.backward(in.grad_out);

  std::cout << (config.causal ? "causal" : "normal") << " Flow-Attention, L=" << config.L
            << " S=" << S << " D=" << config.D << " M=" << config.M << ", loss = sum(G * out)\n\n";
  std::cout << std::left << std::setw(20) << "tensor" << std::setw(16) << "shape" << std::setw(11)
            << "norm" << std::setw(50) << "values" << std::setw(11) << "grad norm"
            << "grad values\n";
  std::vector<std::pair<std::string, fg::Tensor>> rows = {{"Q", q}, {"K", k}, {"V", v}};
  for (auto& row : trace.named()) rows.push_back(row);
  std::map<std::string, fg::Tensor> saved;
  for (const auto& [name, tensor] : rows) {
    fg::Tensor grad = tensor.grad();
    std::cout << std::setw(20) << name << std::setw(16) << fg::shape_str(tensor.shape())
              << std::setw(11) << std::setprecision(4) << norm(tensor) << std::setw(50)
              << first_values(tensor) << std::setw(11) << norm(grad) << first_values(grad) << '\n';
    saved[name] = tensor.detach();
    saved["grad/" + name] = grad;
  }

  // The fused kernel must agree with the composed form it is checked against.
  fg::Tensor fused = fg::flow_attention(in.q, in.k, in.v, options);
  double max_diff = 0;
  std::vector<double> a = fused.to_vector<double>(), b = trace.out.to_vector<double>();
  for (std::size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, std::abs(a[i] - b[i]));

  const fg::Tensor total = q.grad();
  const fg::Tensor via_allocation = total - grad_q_blocking(in, options, "sink_allocation");
  const fg::Tensor via_competition = total - grad_q_blocking(in, options, "source_competition");
  const fg::Tensor other = total - via_allocation - via_competition;
  std::cout << "\n∂ℓ/∂Q by path (norms):\n"
            << "  through the sink allocation A      " << norm(via_allocation) << '\n'
            << "  through the source competition C   " << norm(via_competition) << '\n'
            << "  all other paths (aggregation, I)   " << norm(other) << '\n'
            << "  total                              " << norm(total) << '\n';
  std::cout << "\nfused kernel vs composed ops: max |difference| of out = " << max_diff
            << (max_diff < 1e-12 ? "  (agree)" : "  (DISAGREE)") << '\n';
  saved["grad/Q/via_allocation"] = via_allocation;
  saved["grad/Q/via_competition"] = via_competition;

  if (!config.out_path.empty()) {
    fg::save_safetensors(config.out_path, saved, {{"causal", config.causal ? "1" : "0"}});
    std::cout << "wrote " << saved.size() << " tensors to " << config.out_path << '\n';
  }
  return max_diff < 1e-12 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  CLI::App app{"Every intermediate of Flow-Attention and its gradient, on a small random input"};
  app.add_flag("--causal", config.causal, "causal Flow-Attention (S = L)");
  app.add_option("--L", config.L, "number of queries")->transform(examples::integer_in(1, 4096));
  app.add_option("--S", config.S, "number of keys (normal attention)")->transform(examples::integer_in(1, 4096));
  app.add_option("--D", config.D, "query/key feature size")->transform(examples::integer_in(1, 1024));
  app.add_option("--M", config.M, "value feature size")->transform(examples::integer_in(1, 1024));
  app.add_option("--seed", config.seed, "random seed")->transform(examples::unsigned_value());
  app.add_option("--out", config.out_path, "write all tensors and gradients to this safetensors file");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(config);
  } catch (const std::exception& error) {
    std::cerr << "flow_inspect: " << error.what() << '\n';
    return 1;
  }
}
