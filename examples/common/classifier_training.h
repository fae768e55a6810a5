// The training loop shared by the classification examples (fashion,
// listops): shuffled mini-batches, AdamW with decay on matrix weights only,
// linear warm-up + cosine decay, gradient clipping, a progress line, test
// accuracy after every epoch, DIR/log.csv (epoch,train_loss,test_acc,seconds),
// checkpoints after every epoch, at the end and on Ctrl-C (after finishing
// the step), and exact resumption: epoch e's order is a function of the seed
// and e alone, so a run resumed mid-epoch sees the batches it would have seen.
// The files follow examples/training_run.h (no silent overwrite, log trimmed
// on resume, checked writes, no non-finite state saved).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../../flowgrad.h"
#include "trainer.h"

namespace examples {

namespace fg = flowgrad;

// Labels int64 [B] and whatever the model reads for the same examples.
struct LabelledBatch {
  fg::Tensor inputs;  // e.g. images [B, H, W] or tokens [B, T]
  fg::Tensor mask;    // optional [B, T], nonzero = real token
  fg::Tensor labels;
};

struct ClassificationData {
  std::int64_t train_size = 0, test_size = 0;
  // The examples at these indices of the training (train = true) or test split.
  std::function<LabelledBatch(bool train, const std::vector<std::int64_t>& indices)> batch;
};

struct ClassifierTrainingOptions {
  std::string program = "train_classifier";  // names the program in messages
  std::int64_t epochs = 10, batch = 128;
  double lr = 1e-3, min_lr_ratio = 0.1, weight_decay = 0.05, grad_clip = 1.0;
  double warmup_epochs = 0.5;  // linear warm-up length, in epochs
  std::uint64_t seed = 1;
  RunOptions run;  // --out, --resume, --overwrite, --allow-nonfinite (examples/training_run.h)
  std::int64_t stop_at_epoch = 0;  // stop (and save) after this epoch, to --resume later; 0: run all epochs
  std::int64_t eval_batch = 500;
  std::string unit = "img/s";  // what the progress line counts
};

// Optimiser steps of a whole run: ceil(train_size / batch) per epoch.
std::int64_t training_steps(std::int64_t train_size, const ClassifierTrainingOptions& options);

// Trains `model` (its logits come from `classify`) with examples/trainer.h;
// `config` is stored in every checkpoint. Returns the process exit code: 0
// when done, 130 when interrupted (after saving). `rngs` are saved and
// restored with the checkpoint (e.g. the dropout generator, per rank). With
// several ranks, --batch is the global batch and each rank takes its rows.
int train_classifier(fg::nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                     const ClassificationData& data, const ClassifierTrainingOptions& options,
                     const std::string& config, const TrainerRngs& rngs);

// Fraction of the split classified correctly, in eval mode without autograd.
double accuracy(fg::nn::Module& model, const std::function<fg::Tensor(const LabelledBatch&)>& classify,
                const ClassificationData& data, bool train, std::int64_t eval_batch);

}  // namespace examples
