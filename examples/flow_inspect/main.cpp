// flow_inspect: the companion of docs/flow-attention-gradients.md. On a
// small random input it prints every quantity the fused kernel holds, by the
// page's symbol and section (§N0 … §N4, §C0 … §C4), with its gradient for
// ℓ = Σ G ⊙ out (G random): the hand-derived kernel's own numbers
// (flow_attention_inspect). Next to them, the same quantities from autograd
// on the composed ops (flow_attention_trace) and the largest difference.
// Then it splits ∂ℓ/∂Q by path: blocking the gradient at the sink
// allocation A (or the source competition C) with a hook removes exactly the
// paths through it, since no path passes through both.
//
//   flow_inspect [--causal] [--L 6] [--S 5] [--D 4] [--M 3] [--mask 1,0,1,1,1]
//                [--seed 0] [--full] [--out FILE] [--html FILE]
//
// Tensors of at most 12 elements are printed whole (--full: all of them).
// With --out, everything goes to a safetensors file ("kernel/<symbol>",
// "trace/<name>", "trace/grad/<name>"); with --html, to a self-contained page
// (html_report.h).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "../../flowgrad.h"
#include "../common/flags.h"
#include "html_report.h"

namespace {

struct Config {
  bool causal = false;
  std::int64_t L = 6, S = 5, D = 4, M = 3;
  std::vector<int> mask;  // key padding mask (normal attention only), one flag per key
  std::uint64_t seed = 0;
  bool full = false;
  std::string out_path, html_path;
};

double norm(const fg::Tensor& t) {
  double total = 0;
  for (double x : t.to_vector<double>()) total += x * x;
  return std::sqrt(total);
}

// Every value of a small tensor, the first few of a larger one.
std::string values_of(const fg::Tensor& t, bool full) {
  std::vector<double> values = t.contiguous().to_vector<double>();
  const std::size_t count = full || values.size() <= 12 ? values.size() : 4;
  std::ostringstream out;
  out << std::showpos << std::setprecision(4) << std::scientific;
  for (std::size_t i = 0; i < count; ++i) out << (i ? " " : "") << values[i];
  if (values.size() > count) out << " ... (" << values.size() << " values)";
  return out.str();
}

double max_difference(const fg::Tensor& a, const fg::Tensor& b) {
  const std::vector<double> x = a.contiguous().to_vector<double>(), y = b.contiguous().to_vector<double>();
  double largest = 0;
  for (std::size_t i = 0; i < x.size(); ++i) largest = std::max(largest, std::abs(x[i] - y[i]));
  return largest;
}

struct Inputs {
  fg::Tensor q, k, v, grad_out, mask;
};

// ∂ℓ/∂Q with the gradient blocked at `blocked` (a name of the trace, or "").
fg::Tensor grad_q_blocking(const Inputs& in, const fg::FlowAttentionOptions& options,
                           const std::string& blocked) {
  fg::Tensor q = in.q.detach().requires_grad_();
  fg::FlowAttentionTrace trace = fg::flow_attention_trace(q, in.k, in.v, options, in.mask);
  for (auto& [name, tensor] : trace.named())
    if (name == blocked) tensor.register_hook([](const fg::Tensor& g) { return fg::zeros_like(g); });
  trace.out.backward(in.grad_out);
  return q.grad();
}

// The trace's names for the page's symbols (the quantities both hold).
const std::vector<std::pair<std::string, std::string>> kTraceNames{
    {"q", "q_features"},      {"k", "k_features"},          {"I", "sink_incoming"}, {"O", "source_outgoing"},
    {"Ĩ", "conserved_sink"}, {"A", "sink_allocation"}, {"C", "source_competition"}, {"out", "out"}};

int run(const Config& config) {
  fg::Generator gen(config.seed);
  const std::int64_t S = config.causal ? config.L : config.S;
  Inputs in{fg::randn({1, 1, config.L, config.D}, gen, fg::kFloat64),
            fg::randn({1, 1, S, config.D}, gen, fg::kFloat64),
            fg::randn({1, 1, S, config.M}, gen, fg::kFloat64),
            fg::randn({1, 1, config.L, config.M}, gen, fg::kFloat64), fg::Tensor()};
  if (!config.mask.empty()) {
    std::vector<double> flags(config.mask.begin(), config.mask.end());
    in.mask = fg::from_vector(flags, {1, S});
  }
  const auto options = fg::FlowAttentionOptions{}.set_causal(config.causal);

  // The kernel's own numbers, then autograd's on the composed ops.
  const fg::FlowAttentionInspection kernel = fg::flow_attention_inspect(in.q, in.k, in.v, in.grad_out, options, in.mask);
  fg::Tensor q = in.q.detach().requires_grad_();
  fg::Tensor k = in.k.detach().requires_grad_();
  fg::Tensor v = in.v.detach().requires_grad_();
  fg::FlowAttentionTrace trace = fg::flow_attention_trace(q, k, v, options, in.mask);
  trace.out.backward(in.grad_out);

  std::cout << (config.causal ? "causal" : "normal") << " Flow-Attention, N=" << config.L << " S=" << S
            << " D=" << config.D << " M=" << config.M;
  if (in.mask.defined()) {
    std::cout << ", key padding mask";
    for (int flag : config.mask) std::cout << ' ' << flag;
    std::cout << " (key rows: real keys only)";
  }
  std::cout << ", loss ℓ = Σ G ⊙ out\n"
            << "symbols and sections: docs/flow-attention-gradients.md\n\n"
            << "The hand-derived kernel's own quantities (forward, then backward):\n";
  std::cout << std::left << std::setw(6) << "stage" << std::setw(14) << "symbol" << std::setw(10) << "shape"
            << std::setw(12) << "norm" << "values\n";
  std::map<std::string, fg::Tensor> saved;
  for (const fg::FlowAttentionQuantity& quantity : kernel.quantities) {
    // Symbols such as Ĩ take two bytes but one column.
    const std::size_t extra = quantity.symbol.size() - std::count_if(quantity.symbol.begin(), quantity.symbol.end(), [](char c) {
      return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    });
    std::cout << std::setw(6 + 1) << quantity.section << std::setw(static_cast<int>(14 + extra)) << quantity.symbol
              << std::setw(10) << fg::shape_str(quantity.value.shape()) << std::setw(12) << std::setprecision(4)
              << norm(quantity.value) << values_of(quantity.value, config.full) << '\n';
    saved["kernel/" + quantity.symbol] = quantity.value;
  }

  // The kernel against autograd on the composed ops (the trace), where both hold a quantity.
  std::cout << "\nKernel vs autograd on the composed ops (max |difference|):\n";
  double worst = 0;
  const auto compare = [&](const std::string& label, const fg::Tensor& kernel_value, const fg::Tensor& traced) {
    fg::Tensor expected = traced.reshape(kernel_value.shape());
    const double difference = max_difference(kernel_value, expected);
    worst = std::max(worst, difference / (1.0 + norm(expected)));
    std::cout << "  " << std::setw(static_cast<int>(8 + label.size() - std::count_if(label.begin(), label.end(), [](char c) {
                                                       return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
                                                     })))
              << label << std::scientific << std::setprecision(2) << difference << std::defaultfloat << '\n';
  };
  std::map<std::string, fg::Tensor> traced;
  for (const auto& [name, tensor] : trace.named()) traced[name] = tensor;
  for (const auto& [symbol, name] : kTraceNames) {
    if (in.mask.defined() && (symbol == "k" || symbol == "O" || symbol == "C")) continue;  // the trace keeps padded keys
    compare(symbol, kernel.at(symbol), traced.at(name));
    if (symbol != "out") compare("d" + symbol, kernel.at("d" + symbol), traced.at(name).grad());
  }
  compare("dQ", kernel.at("dQ"), q.grad());
  if (!in.mask.defined()) {
    compare("dK", kernel.at("dK"), k.grad());
    compare("dV", kernel.at("dV"), v.grad());
  }
  for (const auto& [name, tensor] : trace.named()) {
    saved["trace/" + name] = tensor.detach();
    saved["trace/grad/" + name] = tensor.grad();
  }

  const fg::Tensor total = q.grad();
  const fg::Tensor via_allocation = total - grad_q_blocking(in, options, "sink_allocation");
  const fg::Tensor via_competition = total - grad_q_blocking(in, options, "source_competition");
  const fg::Tensor other = total - via_allocation - via_competition;
  std::cout << std::defaultfloat << std::setprecision(4) << "\n∂ℓ/∂Q by path (norms):\n"
            << "  through the sink allocation A      " << norm(via_allocation) << '\n'
            << "  through the source competition C   " << norm(via_competition) << '\n'
            << "  all other paths (aggregation, I)   " << norm(other) << '\n'
            << "  total                              " << norm(total) << '\n';
  const bool agree = worst < 1e-9;
  std::cout << "\nkernel and autograd " << (agree ? "agree" : "DISAGREE") << " (largest difference relative to the norm: "
            << std::scientific << std::setprecision(2) << worst << ")\n";
  saved["trace/grad/Q/via_allocation"] = via_allocation;
  saved["trace/grad/Q/via_competition"] = via_competition;

  if (!config.html_path.empty()) {
    const auto head = [](const fg::Tensor& t) { return t.select(0, 0).select(0, 0); };
    flow_inspect::ReportInput report{config.causal,
                                     config.mask,
                                     head(in.q),
                                     head(in.k),
                                     head(in.v),
                                     &kernel,
                                     head(trace.attention_matrix()),
                                     head(via_allocation),
                                     head(via_competition),
                                     head(other)};
    fg::replace_file_contents("flow_inspect --html", config.html_path, flow_inspect::html_report(report));
    std::cout << "wrote the report " << config.html_path << '\n';
  }
  if (!config.out_path.empty()) {
    fg::save_safetensors(config.out_path, saved, {{"causal", config.causal ? "1" : "0"}});
    std::cout << "wrote " << saved.size() << " tensors to " << config.out_path << '\n';
  }
  return agree ? 0 : 1;
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
  app.add_option("--mask", config.mask, "key padding mask, one 0/1 flag per key, e.g. 1,0,1,1,1 (normal only)")
      ->delimiter(',');
  app.add_option("--seed", config.seed, "random seed")->transform(examples::unsigned_value());
  app.add_flag("--full", config.full, "print every value of every tensor");
  app.add_option("--out", config.out_path, "write all tensors and gradients to this safetensors file");
  app.add_option("--html", config.html_path, "write a self-contained HTML report (graph, heat maps) to this file");
  CLI11_PARSE(app, argc, argv);
  if (!config.html_path.empty() && (config.L > 64 || (!config.causal && config.S > 64))) {
    std::cerr << "flow_inspect: --html is for small inputs: --L and --S at most 64\n";
    return 2;
  }
  // Options that do not apply are errors, not silently ignored.
  if (config.causal && app.count("--S") > 0) {
    std::cerr << "flow_inspect: --S does not apply to causal attention, whose keys are its queries (S = L)\n";
    return 2;
  }
  if (config.causal && !config.mask.empty()) {
    std::cerr << "flow_inspect: --mask applies to normal attention only (a causal sequence is padded at its end)\n";
    return 2;
  }
  if (!config.mask.empty() && static_cast<std::int64_t>(config.mask.size()) != config.S) {
    std::cerr << "flow_inspect: --mask has " << config.mask.size() << " flags for --S " << config.S << " keys\n";
    return 2;
  }
  for (int flag : config.mask)
    if (flag != 0 && flag != 1) {
      std::cerr << "flow_inspect: --mask flags must be 0 or 1, got " << flag << '\n';
      return 2;
    }
  try {
    return run(config);
  } catch (const std::exception& error) {
    std::cerr << "flow_inspect: " << error.what() << '\n';
    return 1;
  }
}
