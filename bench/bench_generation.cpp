// Generation speed of FlowformerLM: incremental decoding (the causal
// Flow-Attention recurrence, constant cost per token) against recomputing
// the full forward pass over the whole context for every new token (what
// the reference implementation does), at several context lengths.
//
//   bench_generation [--threads N] [--contexts 128,1024,8192] [--layers 6 --heads 6 --embd 192]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "../flowgrad.h"
#include "bench_util.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::vector<std::int64_t> contexts = {128, 1024, 8192};
  fg::models::FlowformerConfig config = fg::models::FlowformerConfig::mini(65);
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--threads") threads = std::stoi(args[i + 1]);
    if (args[i] == "--contexts") contexts = bench::parse_int_list(args[i + 1]);
    if (args[i] == "--layers") config.n_layer = std::stoll(args[i + 1]);
    if (args[i] == "--heads") config.n_head = std::stoll(args[i + 1]);
    if (args[i] == "--embd") config.n_embd = std::stoll(args[i + 1]);
  }
  fg::set_num_threads(threads);
  config.block_size = *std::max_element(contexts.begin(), contexts.end());
  config.dropout = 0.0;
  fg::Generator gen(0);
  fg::models::FlowformerLM model(config, gen);
  model.eval();
  fg::NoGradGuard no_grad;

  std::printf("FlowformerLM %lld layers, %lld heads, width %lld, float32, %d thread(s)\n",
              static_cast<long long>(config.n_layer), static_cast<long long>(config.n_head),
              static_cast<long long>(config.n_embd), threads);
  std::printf("%10s %22s %22s %10s\n", "context", "incremental tokens/s", "full recompute tok/s", "ratio");
  for (std::int64_t context : contexts) {
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(context));
    for (auto& t : tokens) t = static_cast<std::int64_t>(gen.next_u64() % 65);

    // Incremental: consume the context, then time the next tokens.
    fg::models::IncrementalDecoder decoder = model.start_decoding(1);
    const std::int64_t timed = std::min<std::int64_t>(32, context / 4);
    for (std::int64_t i = 0; i < context - timed; ++i) decoder.next_logits(tokens[static_cast<std::size_t>(i)]);
    auto start = std::chrono::steady_clock::now();
    for (std::int64_t i = context - timed; i < context; ++i) decoder.next_logits(tokens[static_cast<std::size_t>(i)]);
    const double incremental = static_cast<double>(timed) / seconds_since(start);

    // Full recomputation: one forward over the whole context per new token.
    const fg::Tensor all = fg::from_vector(tokens, {1, context});
    const int repeats = context >= 4096 ? 2 : 5;
    model.forward(all);  // warm-up
    start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r) model.forward(all);
    const double full = repeats / seconds_since(start);
    std::printf("%10lld %22.1f %22.2f %9.0fx\n", static_cast<long long>(context), incremental, full, incremental / full);
    std::fflush(stdout);
  }
  return 0;
}
