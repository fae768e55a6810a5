// Flowformer on images, as in the paper's image experiments: the image is
// cut into non-overlapping p×p patches read row by row, each patch is
// embedded linearly, and a non-causal FlowformerEncoder (with its learned
// position embedding) classifies the sequence of patches. patch = 1 gives
// the pixel-level sequence of the Long Range Arena image task.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flowformer.h"

namespace flowgrad::models {

// images [B, H, W] (one channel) or [B, C, H, W] -> patches [B, (H/p)·(W/p), C·p·p],
// patch-major, row by row; within a patch: channel, then row, then column.
// H and W must be multiples of p. Differentiable (views and one copy).
Tensor patchify(const Tensor& images, std::int64_t patch);

struct ImageClassifierConfig {
  std::int64_t image_height = 28, image_width = 28, channels = 1;
  std::int64_t patch = 4;
  std::int64_t num_classes = 10;
  Pooling pooling = Pooling::Mean;
  // vocab_size 0, causal false; block_size is set to the number of patches.
  FlowformerConfig encoder;

  // (image_height / patch) * (image_width / patch); throws when that overflows.
  std::int64_t num_patches() const;
  // Checks sizes and the divisibility of the image by the patch, and that
  // `encoder` is a features-only non-causal configuration with block_size
  // num_patches(); throws "[ImageClassifierConfig] ..." naming the field.
  void validate() const;
  // {"kind": "image_classifier", ..., "encoder": {...}}, for checkpoints.
  std::string to_json() const;
  static ImageClassifierConfig from_json(const std::string& text);
  bool operator==(const ImageClassifierConfig&) const = default;
};

// A config for `image_height`×`image_width` images cut into `patch`-sized
// patches, with the encoder's block_size, vocab_size and causal set to fit.
ImageClassifierConfig image_classifier_config(std::int64_t image_height, std::int64_t image_width,
                                              std::int64_t patch, std::int64_t num_classes,
                                              FlowformerConfig encoder, std::int64_t channels = 1);

// Names: patch_embedding.{weight, bias}, encoder.transformer.{wpe, h.i, ln_f},
// encoder.head.{weight, bias} (and encoder.cls_token with class-token pooling).
class FlowformerImageClassifier : public nn::Module {
 public:
  FlowformerImageClassifier(const ImageClassifierConfig& config, Generator& init_gen, DType dtype = kFloat32,
                            std::shared_ptr<Generator> dropout_gen = nullptr);
  static double parameter_count_for(const ImageClassifierConfig& config);
  // images [B, H, W] (or [B, C, H, W] for C > 1) of the configured size -> logits [B, num_classes].
  Tensor forward(const Tensor& images) const;
  // The embedded patch sequence [B, num_patches, n_embd] the encoder sees.
  Tensor embed(const Tensor& images) const;
  // For inspection: every block's attention trace on these images (see
  // FlowformerEncoder::attention_traces); token t is patch t (after the
  // class token, with class-token pooling).
  std::vector<FlowAttentionTrace> attention_traces(const Tensor& images) const;

  const ImageClassifierConfig& config() const { return config_; }
  std::shared_ptr<nn::Linear> patch_embedding;
  std::shared_ptr<FlowformerEncoder> encoder;

 private:
  void check_images(const Tensor& images) const;
  ImageClassifierConfig config_;
};

}  // namespace flowgrad::models
