// Training-step benchmark: tokens/s and model FLOPs utilisation (MFU) of a
// FlowformerLM training step (forward, backward, gradient clipping, AdamW),
// for the "mini" configuration (6 layers, width 192, block 128, batch 64) and
// the main job's "small" one (4 layers, width 128, block 64, batch 32), flow
// and softmax attention, at each thread count given.
//
//   bench_training_step [--threads 1,2] [--configs mini,small]
//                       [--attention flow,softmax] [--steps 6]
//
// MFU = model FLOPs per token (FlowformerConfig::training_flops_per_token)
// × tokens/s ÷ the sgemm rate that the same process measures (square 1024
// sgemm, same threads), just before the steps and again just after. The
// machine is shared and its neighbours come and go within seconds, so each
// side is taken at its best: the fastest step after two warm-up steps
// against the fastest probe. The median step is printed beside it. Each
// configuration runs in its own process (re-executed with --single), so its
// peak RSS is its own. The breakdown
// lists profile regions (core/profile.h): forward regions by name, backward
// time under "backward:<the forward region that built it>".
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "../flowgrad.h"

namespace {

namespace models = fg::models;
namespace nn = fg::nn;

constexpr std::int64_t kVocab = 65;  // the characters of the tiny Shakespeare text

struct Shape {
  const char* name;
  std::int64_t layers, heads, embd, block, batch;
  double dropout;
};

// The configurations charlm trains: its defaults and the main job's flags.
const Shape kShapes[] = {
    {"mini", 6, 6, 192, 128, 64, 0.1},
    {"small", 4, 4, 128, 64, 32, 0.0},
};

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');)
    if (!item.empty()) items.push_back(item);
  return items;
}

const Shape& find_shape(const std::string& name) {
  for (const Shape& shape : kShapes)
    if (name == shape.name) return shape;
  fg::fail("bench_training_step", "unknown configuration \"", name, "\" (expected mini or small)");
}

int run_single(const Shape& shape, const std::string& attention, int threads, int steps) {
  fg::set_num_threads(threads);
  double sgemm_gflops = 0;  // the best of the probes before and after the steps
  auto probe = [&] {
    for (int r = 0; r < 5; ++r) sgemm_gflops = std::max(sgemm_gflops, fg::blas::measure_sgemm_gflops(1024, 1));
  };
  probe();

  models::FlowformerConfig config;
  config.vocab_size = kVocab;
  config.block_size = shape.block;
  config.n_layer = shape.layers;
  config.n_head = shape.heads;
  config.n_embd = shape.embd;
  config.dropout = shape.dropout;
  config.attention = nn::parse_attention_kind(attention);
  fg::Generator init_gen(1), data_gen(2);
  models::FlowformerLM model(config, init_gen);
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), 0.1),
                      nn::AdamWOptions{.lr = 5e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  const fg::Tensor tokens = fg::randint(0, kVocab, {shape.batch, shape.block}, data_gen);
  const fg::Tensor targets = fg::randint(0, kVocab, {shape.batch, shape.block}, data_gen);

  std::vector<double> forward_s, backward_s, optimizer_s, step_s;
  for (int s = 0; s < steps + 2; ++s) {
    const bool timed = s >= 2;
    if (s == 2) {
      fg::profile::reset();
      fg::profile::set_enabled(true);
    }
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    fg::Tensor loss = model.loss(tokens, targets);
    const double forward = seconds_since(start);
    loss.backward();
    const double backward = seconds_since(start) - forward;
    nn::clip_grad_norm_(model.parameters(), 1.0);
    optimizer.step();
    const double total = seconds_since(start);
    if (timed) {
      forward_s.push_back(forward);
      backward_s.push_back(backward);
      optimizer_s.push_back(total - forward - backward);
      step_s.push_back(total);
    }
  }
  fg::profile::set_enabled(false);
  const double training_rss_mb = peak_rss_mb();  // before the second probe's matrices
  probe();

  const double tokens_per_step = static_cast<double>(shape.batch * shape.block);
  const double flops_per_token = config.training_flops_per_token(shape.block);
  const double step = median(step_s);
  const double best_step = *std::min_element(step_s.begin(), step_s.end());
  const double tokens_per_s = tokens_per_step / best_step;
  const double mfu = flops_per_token * tokens_per_s / (sgemm_gflops * 1e9);
  std::printf("%-6s %-8s %7d %12.2f %9.0f %10.1f %8.3f %8.3f %6.1f %% %8.0f\n", shape.name, attention.c_str(),
              threads, flops_per_token * 1e-6, tokens_per_s, sgemm_gflops, best_step, step, 100.0 * mfu,
              training_rss_mb);
  std::printf("       median step %.3f s = forward %.3f + backward %.3f + clip & optimizer %.3f; top regions per step:\n",
              step, median(forward_s), median(backward_s), median(optimizer_s));
  const std::vector<fg::profile::Entry> entries = fg::profile::entries();
  for (std::size_t i = 0; i < entries.size() && i < 12; ++i)
    std::printf("         %-28s %7.3f s  %5.1f %%\n", entries[i].name.c_str(), entries[i].seconds / steps,
                100.0 * entries[i].seconds / steps / step);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 5 && args[0] == "--single")
      return run_single(find_shape(args[1]), args[2], std::stoi(args[3]), std::stoi(args[4]));

    std::string thread_list = "1,2", config_list = "mini,small", attention_list = "flow,softmax";
    int steps = 6;
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
      if (args[i] == "--threads") thread_list = args[i + 1];
      else if (args[i] == "--configs") config_list = args[i + 1];
      else if (args[i] == "--attention") attention_list = args[i + 1];
      else if (args[i] == "--steps") steps = std::stoi(args[i + 1]);
      else fg::fail("bench_training_step", "unknown flag ", args[i]);
    }
    if (args.size() % 2 != 0) fg::fail("bench_training_step", "flag ", args.back(), " needs a value");
    if (steps < 1) fg::fail("bench_training_step", "--steps must be positive, got ", steps);
    for (const std::string& name : split(config_list)) find_shape(name);

    std::printf("FlowformerLM training step (vocabulary %lld); MFU = model FLOPs/token x tokens/s / sgemm rate\n",
                static_cast<long long>(kVocab));
    std::printf("FLOPs, tokens/s and MFU from the fastest step against the fastest sgemm probe\n");
    std::printf("%-6s %-8s %7s %12s %9s %10s %8s %8s %8s %8s\n", "config", "attn", "threads", "MFLOP/token",
                "tokens/s", "sgemm GF/s", "best s", "median s", "MFU", "RSS MB");
    std::fflush(stdout);
    int status = 0;
    for (const std::string& config : split(config_list))
      for (const std::string& attention : split(attention_list))
        for (const std::string& threads : split(thread_list)) {
          const std::string command = std::string(argv[0]) + " --single " + config + " " + attention + " " +
                                      threads + " " + std::to_string(steps);
          if (std::system(command.c_str()) != 0) status = 1;
        }
    return status;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
