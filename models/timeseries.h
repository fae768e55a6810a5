// Flowformer on multivariate time series, as in the paper's UEA
// classification experiments: every time step (all channels at once) is
// embedded linearly, a non-causal FlowformerEncoder (with its learned
// position embedding) reads the sequence, padding masked out for series
// shorter than the batch's longest, and the mean over the real steps is
// classified.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flowformer.h"

namespace flowgrad::models {

struct SeriesClassifierConfig {
  std::int64_t channels = 1;     // values per time step
  std::int64_t max_length = 1;   // longest series the model reads (its position embedding's rows)
  std::int64_t num_classes = 2;
  // The classes' names in label order (e.g. a .ts file's @classLabel list),
  // so that a checkpoint says what its outputs mean; empty, or num_classes names.
  std::vector<std::string> class_labels;
  // vocab_size 0, causal false, block_size max_length, mean pooling.
  FlowformerConfig encoder;

  // Checks sizes, and that `encoder` is a features-only non-causal
  // configuration with block_size max_length; throws
  // "[SeriesClassifierConfig] ..." naming the field.
  void validate() const;
  // {"kind": "series_classifier", "channels": ..., "encoder": {...}}, for checkpoints.
  std::string to_json() const;
  static SeriesClassifierConfig from_json(const std::string& text);
  bool operator==(const SeriesClassifierConfig&) const = default;
};

// A config for series of `channels` values per step and at most
// `max_length` steps, with the encoder's block_size, vocab_size and causal set to fit.
SeriesClassifierConfig series_classifier_config(std::int64_t channels, std::int64_t max_length,
                                                std::int64_t num_classes, FlowformerConfig encoder,
                                                std::vector<std::string> class_labels = {});

// Names: input_embedding.{weight, bias}, encoder.transformer.{wpe, h.i, ln_f},
// encoder.head.{weight, bias}.
class FlowformerSeriesClassifier : public nn::Module {
 public:
  FlowformerSeriesClassifier(const SeriesClassifierConfig& config, Generator& init_gen, DType dtype = kFloat32,
                             std::shared_ptr<Generator> dropout_gen = nullptr);
  static double parameter_count_for(const SeriesClassifierConfig& config);
  // series [B, T, channels] with T <= max_length -> logits [B, num_classes].
  // mask [B, T] (nonzero = a real step) leaves padding out of attention
  // and pooling; every row needs at least one real step.
  Tensor forward(const Tensor& series, const Tensor& mask = Tensor()) const;

  const SeriesClassifierConfig& config() const { return config_; }
  std::shared_ptr<nn::Linear> input_embedding;
  std::shared_ptr<FlowformerEncoder> encoder;

 private:
  SeriesClassifierConfig config_;
};

}  // namespace flowgrad::models
