// Rollout cost of the decision model (models/decision.h) per environment
// step, early and late in a long episode: with Flow-Attention each step
// feeds three tokens through a constant-size state, so a step at t = 4000
// costs what one at t = 0 does; softmax attention's key/value cache makes a
// step's cost grow with t. Prints the mean time per step over windows of
// steps starting at each --at position, and its ratio to the first window,
// for both kinds, measured in the same run.
//
//   bench_decision_rollout [--threads N] [--episodes B] [--at 0,1000,4000] [--window 64]
//                          [--layers 3 --heads 4 --embd 64]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../flowgrad.h"
#include "bench_util.h"

namespace fg = flowgrad;

int main(int argc, char** argv) {
  int threads = 1;
  std::int64_t episodes = 1, window = 64;
  std::vector<std::int64_t> starts = {0, 1000, 4000};
  fg::models::FlowformerConfig trunk;
  trunk.n_layer = 3;
  trunk.n_head = 4;
  trunk.n_embd = 64;
  trunk.dropout = 0.0;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--threads") threads = std::stoi(args[i + 1]);
    if (args[i] == "--episodes") episodes = std::stoll(args[i + 1]);
    if (args[i] == "--at") starts = bench::parse_int_list(args[i + 1]);
    if (args[i] == "--window") window = std::stoll(args[i + 1]);
    if (args[i] == "--layers") trunk.n_layer = std::stoll(args[i + 1]);
    if (args[i] == "--heads") trunk.n_head = std::stoll(args[i + 1]);
    if (args[i] == "--embd") trunk.n_embd = std::stoll(args[i + 1]);
  }
  std::sort(starts.begin(), starts.end());
  if (starts.empty()) starts = {0};
  for (std::size_t i = 0; i < starts.size(); ++i)
    if (window < 1 || starts[i] < 0 || (i > 0 && starts[i] < starts[i - 1] + window)) {
      std::fprintf(stderr, "bench_decision_rollout: --at needs positions >= 0, at least --window (%lld) apart\n",
                   static_cast<long long>(window));
      return 2;
    }
  fg::set_num_threads(threads);
  const std::int64_t horizon = starts.back() + window;
  std::printf("decision model: %lld layers, %lld heads, width %lld, %lld episode(s) in parallel, float32, %d thread(s)\n",
              static_cast<long long>(trunk.n_layer), static_cast<long long>(trunk.n_head),
              static_cast<long long>(trunk.n_embd), static_cast<long long>(episodes), threads);
  std::printf("%-8s %10s %14s %10s\n", "kind", "steps from", "ms per step", "vs first");
  fg::NoGradGuard no_grad;
  for (const fg::nn::AttentionKind kind : {fg::nn::AttentionKind::Flow, fg::nn::AttentionKind::Softmax}) {
    trunk.attention = kind;
    fg::Generator gen(0);
    const fg::models::DecisionConfig config = fg::models::decision_config(6, 2, false, horizon, 50.0, trunk);
    fg::models::DecisionFlowformer model(config, gen);
    model.eval();
    fg::models::DecisionDecoder decoder = model.start_decoding(episodes);
    const fg::Tensor state = fg::randn({episodes, 6}, gen), to_go = fg::full({episodes}, 20.0);
    double first_window = 0;
    std::size_t next = 0;
    double elapsed = 0;
    for (std::int64_t t = 0; t < horizon; ++t) {
      const auto started = std::chrono::steady_clock::now();
      const fg::Tensor action = decoder.act(to_go, state, fg::full({episodes}, static_cast<double>(t), fg::kInt64));
      decoder.record(action);
      if (t >= starts[next]) elapsed += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (t == starts[next] + window - 1) {
        const double ms = 1e3 * elapsed / static_cast<double>(window);
        if (next == 0) first_window = ms;
        std::printf("%-8s %10lld %14.3f %9.2fx\n", fg::nn::attention_kind_name(kind).data(),
                    static_cast<long long>(starts[next]), ms, ms / first_window);
        elapsed = 0;
        if (++next == starts.size()) break;
      }
    }
  }
  return 0;
}
