// A UEA/UCR classification problem as the archive ships it,
// DIR/NAME/NAME_TRAIN.ts and DIR/NAME/NAME_TEST.ts, ready for training, and
// a generator of synthetic problems in the same layout.
//
// Normalisation: each channel is standardised with the mean and standard
// deviation of its values in the training split (a constant channel is only
// centred). Missing values ('?') then become 0, the channel's training mean:
// the series keeps its length and time steps stay aligned across channels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"

namespace timeseries {

namespace fg = flowgrad;

class UeaProblem {
 public:
  // Reads both splits; they must agree on the number of channels, be
  // labelled, and the test split's labels must be listed by the training
  // split (in any order: labels follow the training split's). Errors name the file.
  UeaProblem(const std::string& dir, const std::string& name);

  std::int64_t channels() const { return train_.dimensions; }
  std::int64_t max_length() const;  // longest series of either split
  const std::vector<std::string>& class_labels() const { return train_.class_labels; }
  std::int64_t num_classes() const { return static_cast<std::int64_t>(train_.class_labels.size()); }
  const fg::TsDataset& split(bool train) const { return train ? train_ : test_; }
  // Fraction of the test split in its most frequent class (what a model
  // that always answers that class scores).
  double majority_test_accuracy() const;

  // Series [B, T, channels] float32 normalised, padded with zeros to the
  // longest of the batch (T), mask [B, T] (1 = a real step), labels int64 [B].
  examples::LabelledBatch batch(bool train, const std::vector<std::int64_t>& indices) const;
  examples::ClassificationData as_classification_data() const;

 private:
  std::string train_path_, test_path_;
  fg::TsDataset train_, test_;
  std::vector<float> mean_, inverse_std_;  // per channel, from the training split
};

struct SyntheticOptions {
  std::string dir, problem = "Waves";
  std::int64_t classes = 4, channels = 3, length = 64, train = 240, test = 120;
  bool unequal = false;       // lengths drawn from [length / 2, length]
  double missing = 0.0;       // probability of writing a value as '?'
  double noise = 0.3;
  std::uint64_t seed = 1;
  bool overwrite = false;
};

// Writes DIR/PROBLEM/PROBLEM_TRAIN.ts and _TEST.ts. Each series is a noisy
// sine wave on every channel (at least 2) plus a transient bump on every
// channel. Classes (2 to 8) differ by the phase relation of the channels
// (all in phase, or each in antiphase to the previous), from 3 classes on by the bump's position
// (at a quarter or at three quarters of the series), and from 5 classes on
// by the wave's frequency (1 or 4 cycles per --length steps; otherwise a
// random frequency in between). Phase,
// amplitude, per-channel offset and scale, and noise are random, so no
// single value tells the class. Classes are balanced. Refuses to replace
// existing files unless `overwrite`.
void write_synthetic_problem(const SyntheticOptions& options);

}  // namespace timeseries
