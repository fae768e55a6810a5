#include "classifier_training.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "progress.h"

namespace examples {

namespace {

namespace fs = std::filesystem;
namespace nn = fg::nn;

std::atomic<bool> g_interrupted{false};

// Epoch e's order of the n training examples: a function of (seed, e) only.
std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  fg::Generator gen(seed * 1000003u + static_cast<std::uint64_t>(epoch));
  for (std::int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(order[static_cast<std::size_t>(i)],
              order[static_cast<std::size_t>(gen.next_u64() % static_cast<std::uint64_t>(i + 1))]);
  return order;
}

void append_log(const fs::path& path, std::int64_t epoch, double train_loss, double test_acc, double seconds) {
  const bool fresh = !fs::exists(path);
  std::ofstream out(path, std::ios::app);
  if (fresh) out << "epoch,train_loss,test_acc,seconds\n";
  out.precision(9);
  out << epoch << ',' << train_loss << ',' << test_acc << ',' << seconds << '\n';
  if (!out) fg::fail("train_classifier", "cannot append to ", path.string());
}

}  // namespace

double accuracy(nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                const ClassificationData& data, bool train, std::int64_t eval_batch) {
  fg::NoGradGuard no_grad;
  model.eval();
  const std::int64_t n = train ? data.train_size : data.test_size;
  std::int64_t correct = 0;
  for (std::int64_t first = 0; first < n; first += eval_batch) {
    std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(eval_batch, n - first)));
    std::iota(indices.begin(), indices.end(), first);
    const LabelledBatch batch = data.batch(train, indices);
    const fg::Tensor logits = classify(batch);
    const std::vector<double> scores = logits.to_vector<double>();
    const std::vector<std::int64_t> labels = batch.labels.to_vector<std::int64_t>();
    const std::size_t classes = static_cast<std::size_t>(logits.size(1));
    for (std::size_t b = 0; b < labels.size(); ++b) {
      const auto row = scores.begin() + static_cast<std::ptrdiff_t>(b * classes);
      correct += std::max_element(row, row + static_cast<std::ptrdiff_t>(classes)) - row == labels[b];
    }
  }
  return n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

std::int64_t training_steps(std::int64_t train_size, const ClassifierTrainingOptions& options) {
  return (train_size + options.batch - 1) / options.batch * options.epochs;
}

int train_classifier(nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                     const ClassificationData& data, const ClassifierTrainingOptions& o, const std::string& config,
                     const std::map<std::string, fg::Generator*>& rngs) {
  if (o.epochs < 1 || o.batch < 1 || o.eval_batch < 1)
    fg::fail("train_classifier", "--epochs and --batch must be positive, got ", o.epochs, " and ", o.batch);
  if (data.train_size < 1 || data.test_size < 1)
    fg::fail("train_classifier", "empty data: ", data.train_size, " training and ", data.test_size, " test examples");
  const std::int64_t steps_per_epoch = (data.train_size + o.batch - 1) / o.batch;
  const std::int64_t total_steps = training_steps(data.train_size, o);
  const auto warmup = std::min(total_steps, static_cast<std::int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch)));
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), o.weight_decay),
                      nn::AdamWOptions{.lr = o.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                       .weight_decay = o.weight_decay});
  const nn::WarmupCosineLR schedule(o.lr, o.lr * o.min_lr_ratio, warmup, total_steps);
  std::int64_t step = 0;
  if (!o.resume.empty()) {
    step = nn::load_checkpoint(o.resume, model, optimizer, rngs).step;
    std::printf("resumed from %s at step %lld (epoch %lld)\n", o.resume.c_str(), static_cast<long long>(step),
                static_cast<long long>(step / steps_per_epoch + 1));
  }
  const fs::path out_dir = o.out;
  if (!o.out.empty()) fs::create_directories(out_dir);
  auto save = [&] {
    if (o.out.empty()) return;
    const std::map<std::string, const fg::Generator*> const_rngs(rngs.begin(), rngs.end());
    nn::save_checkpoint((out_dir / "checkpoint.safetensors").string(), model, optimizer, step, const_rngs, config);
  };

  std::signal(SIGINT, [](int) { g_interrupted = true; });
  Progress progress(total_steps, step, 20, o.unit);
  while (step < total_steps && !g_interrupted) {
    const std::int64_t epoch = step / steps_per_epoch;
    const std::vector<std::int64_t> order = epoch_order(data.train_size, o.seed, epoch);
    double loss_sum = 0.0, seconds = 0.0;
    std::int64_t losses = 0;
    for (std::int64_t in_epoch = step % steps_per_epoch; in_epoch < steps_per_epoch && !g_interrupted; ++in_epoch) {
      const auto start = std::chrono::steady_clock::now();
      const auto first = order.begin() + in_epoch * o.batch;
      const std::vector<std::int64_t> indices(first, first + std::min(o.batch, data.train_size - in_epoch * o.batch));
      model.train();
      optimizer.set_lr(schedule.lr_at(step));
      const LabelledBatch batch = data.batch(true, indices);
      fg::Tensor loss = fg::cross_entropy(classify(batch), batch.labels);
      optimizer.zero_grad();
      loss.backward();
      nn::clip_grad_norm_(model.parameters(), o.grad_clip);
      optimizer.step();
      ++step;
      const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      seconds += step_seconds;
      loss_sum += loss.item<double>();
      ++losses;
      progress.update(step, loss.item<double>(), static_cast<double>(indices.size()) / step_seconds);
    }
    if (step % steps_per_epoch != 0) break;  // interrupted mid-epoch
    const double test_acc = accuracy(model, classify, data, false, o.eval_batch);
    const double train_loss = loss_sum / static_cast<double>(std::max<std::int64_t>(losses, 1));
    progress.message("epoch " + std::to_string(epoch + 1) + ": train loss " + std::to_string(train_loss) +
                     ", test accuracy " + std::to_string(100.0 * test_acc) + " %, " + std::to_string(seconds) +
                     " s of training");
    if (!o.out.empty()) append_log(out_dir / "log.csv", epoch + 1, train_loss, test_acc, seconds);
    save();
    if (o.stop_at_epoch > 0 && epoch + 1 >= o.stop_at_epoch && step < total_steps) {
      progress.message("stopped after epoch " + std::to_string(epoch + 1) + "; continue with --resume");
      return 0;
    }
  }
  if (g_interrupted) {
    save();
    progress.message("interrupted: saved step " + std::to_string(step) +
                     (o.out.empty() ? " (no --out: nothing written)" : " to " + (out_dir / "checkpoint.safetensors").string()));
    return 130;
  }
  return 0;
}

}  // namespace examples
