#include "classifier_training.h"

#include <cstdio>
#include <numeric>
#include <sstream>

#include "trainer.h"

namespace examples {

namespace {

namespace nn = fg::nn;

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
  const fg::dist::Communicator& comm = fg::dist::Communicator::world();
  const std::int64_t n = train ? data.train_size : data.test_size;
  // With several ranks, each scores its block of the split.
  const std::int64_t begin = n * comm.rank() / comm.size(), end = n * (comm.rank() + 1) / comm.size();
  std::int64_t correct = 0;
  for (std::int64_t first = begin; first < end; first += eval_batch) {
    std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(eval_batch, end - first)));
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
  const double total_correct = comm.all_reduce(static_cast<double>(correct));
  return n > 0 ? total_correct / static_cast<double>(n) : 0.0;
}

std::int64_t training_steps(std::int64_t train_size, const ClassifierTrainingOptions& options) {
  const std::int64_t steps_per_epoch = train_size / options.batch + (train_size % options.batch != 0 ? 1 : 0);
  return fg::checked_mul(steps_per_epoch, options.epochs, "train_classifier", "steps per epoch x --epochs");
}

int train_classifier(nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                     const ClassificationData& data, const ClassifierTrainingOptions& o, const std::string& config,
                     const TrainerRngs& rngs) {
  if (o.epochs < 1 || o.batch < 1 || o.eval_batch < 1)
    fg::fail("train_classifier", "--epochs, --batch and the evaluation batch must be positive, got ", o.epochs, ", ",
             o.batch, " and ", o.eval_batch);
  if (data.train_size < 1 || data.test_size < 1)
    fg::fail("train_classifier", "empty data: ", data.train_size, " training and ", data.test_size, " test examples");
  const std::int64_t total_steps = training_steps(data.train_size, o);
  const std::int64_t steps_per_epoch = total_steps / o.epochs;
  const auto warmup = std::min(total_steps, static_cast<std::int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch)));
  nn::AdamW optimizer(nn::param_groups_for_decay(model.named_parameters(), o.weight_decay),
                      nn::AdamWOptions{.lr = o.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                       .weight_decay = o.weight_decay});
  const nn::WarmupCosineLR schedule(o.lr, o.lr * o.min_lr_ratio, warmup, total_steps);
  Trainer trainer({.program = o.program,
                   .run = o.run,
                   .log_header = "epoch,train_loss,test_acc,seconds",
                   .total_steps = total_steps,
                   .global_batch = o.batch,
                   .steps_per_row = steps_per_epoch,
                   .grad_clip = o.grad_clip,
                   .unit = o.unit,
                   .plain_every = 20},
                  model, optimizer, [&](std::int64_t step) { return schedule.lr_at(step); }, rngs, config);
  if (!o.run.resume.empty()) {
    const std::int64_t step = trainer.resume();
    if (trainer.comm().is_root())
      std::printf("resumed from %s at step %lld (epoch %lld)\n", o.run.resume.c_str(), static_cast<long long>(step),
                  static_cast<long long>(step / steps_per_epoch + 1));
  }

  std::vector<std::int64_t> order;  // this epoch's order of the training examples
  std::int64_t order_epoch = -1;
  double loss_sum = 0.0, seconds = 0.0;  // over the epoch's steps this process ran
  std::int64_t losses = 0;
  return trainer.run(
      [&](std::int64_t step) {
        const std::int64_t epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch;
        if (epoch != order_epoch) {
          order = epoch_order(data.train_size, o.seed, epoch);
          order_epoch = epoch;
        }
        // The step's global batch, and this rank's rows of it.
        const std::int64_t batch_first = in_epoch * o.batch, batch_size = std::min(o.batch, data.train_size - batch_first);
        const auto [first, count] = trainer.shard(batch_size);
        if (count == 0) return ShardLoss{};
        const auto begin = order.begin() + batch_first + first;
        const LabelledBatch batch = data.batch(true, std::vector<std::int64_t>(begin, begin + count));
        return ShardLoss{fg::cross_entropy(classify(batch), batch.labels), count};
      },
      [&](const StepResult& done) {
        loss_sum += done.loss;
        seconds += done.seconds;
        ++losses;
        StepReport report;
        if (done.step % steps_per_epoch != 0) return report;
        const std::int64_t epoch = done.step / steps_per_epoch;
        const double test_acc = accuracy(model, classify, data, false, o.eval_batch);
        const double train_loss = loss_sum / static_cast<double>(std::max<std::int64_t>(losses, 1));
        report.message = "epoch " + std::to_string(epoch) + ": train loss " + std::to_string(train_loss) +
                         ", test accuracy " + std::to_string(100.0 * test_acc) + " %, " + std::to_string(seconds) +
                         " s of training";
        std::ostringstream row;
        row.precision(9);
        row << epoch << ',' << train_loss << ',' << test_acc << ',' << seconds;
        report.log_row = row.str();
        report.save = true;
        if (o.stop_at_epoch > 0 && epoch >= o.stop_at_epoch && done.step < total_steps)
          report.stop = "stopped after epoch " + std::to_string(epoch) + "; continue with --resume";
        loss_sum = seconds = 0.0;
        losses = 0;
        return report;
      });
}

}  // namespace examples
