#include "classifier_training.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "progress.h"

namespace examples {

namespace {

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
  const std::int64_t steps_per_epoch = train_size / options.batch + (train_size % options.batch != 0 ? 1 : 0);
  return fg::checked_mul(steps_per_epoch, options.epochs, "train_classifier", "steps per epoch x --epochs");
}

int train_classifier(nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                     const ClassificationData& data, const ClassifierTrainingOptions& o, const std::string& config,
                     const std::map<std::string, fg::Generator*>& rngs) {
  if (o.epochs < 1 || o.batch < 1 || o.eval_batch < 1)
    fg::fail("train_classifier", "--epochs and --batch must be positive, got ", o.epochs, " and ", o.batch);
  if (data.train_size < 1 || data.test_size < 1)
    fg::fail("train_classifier", "empty data: ", data.train_size, " training and ", data.test_size, " test examples");
  const std::int64_t total_steps = training_steps(data.train_size, o);
  const std::int64_t steps_per_epoch = total_steps / o.epochs;
  const auto warmup = std::min(total_steps, static_cast<std::int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch)));
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), o.weight_decay),
                      nn::AdamWOptions{.lr = o.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                       .weight_decay = o.weight_decay});
  const nn::WarmupCosineLR schedule(o.lr, o.lr * o.min_lr_ratio, warmup, total_steps);
  TrainingRun run(o.program, o.run, "epoch,train_loss,test_acc,seconds");
  std::int64_t step = 0;
  if (!o.run.resume.empty()) {
    step = run.resume(model, optimizer, rngs, steps_per_epoch);
    std::printf("resumed from %s at step %lld (epoch %lld)\n", o.run.resume.c_str(), static_cast<long long>(step),
                static_cast<long long>(step / steps_per_epoch + 1));
  }

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
      const double loss_value = loss.item<double>();
      run.check_step(step + 1, loss_value, nn::clip_grad_norm_(model.parameters(), o.grad_clip));
      optimizer.step();
      ++step;
      run.check_parameters(step, model);
      const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      seconds += step_seconds;
      loss_sum += loss_value;
      ++losses;
      progress.update(step, loss_value, static_cast<double>(indices.size()) / step_seconds);
    }
    if (step % steps_per_epoch != 0) break;  // interrupted mid-epoch
    const double test_acc = accuracy(model, classify, data, false, o.eval_batch);
    const double train_loss = loss_sum / static_cast<double>(std::max<std::int64_t>(losses, 1));
    progress.message("epoch " + std::to_string(epoch + 1) + ": train loss " + std::to_string(train_loss) +
                     ", test accuracy " + std::to_string(100.0 * test_acc) + " %, " + std::to_string(seconds) +
                     " s of training");
    std::ostringstream row;
    row.precision(9);
    row << epoch + 1 << ',' << train_loss << ',' << test_acc << ',' << seconds;
    run.log_row(row.str());
    run.save(step, model, optimizer, rngs, config);
    if (o.stop_at_epoch > 0 && epoch + 1 >= o.stop_at_epoch && step < total_steps) {
      progress.message("stopped after epoch " + std::to_string(epoch + 1) + "; continue with --resume");
      return 0;
    }
  }
  if (g_interrupted) {
    run.save(step, model, optimizer, rngs, config);
    progress.message("interrupted: saved step " + std::to_string(step) +
                     (run.writes_files() ? " to " + run.checkpoint_path() : " (no --out: nothing written)"));
    return 130;
  }
  return 0;
}

}  // namespace examples
