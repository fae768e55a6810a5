#include "vision.h"

#include "../core/error.h"
#include "../core/json_object.h"

namespace flowgrad::models {

namespace {

constexpr const char* kConfigOp = "ImageClassifierConfig";

std::string_view pooling_name(Pooling pooling) { return pooling == Pooling::Mean ? "mean" : "class_token"; }

Pooling parse_pooling(const std::string& text) {
  if (text == "mean") return Pooling::Mean;
  if (text == "class_token") return Pooling::ClassToken;
  fail(kConfigOp, "pooling must be mean or class_token, got \"", text.substr(0, 40), "\"");
}

}  // namespace

Tensor patchify(const Tensor& images, std::int64_t patch) {
  if (!images.defined() || (images.dim() != 3 && images.dim() != 4))
    fail("patchify", "expected images [B, H, W] or [B, C, H, W], got ",
         images.defined() ? shape_str(images.shape()) : std::string("an undefined tensor"));
  const Tensor x = images.dim() == 3 ? images.unsqueeze(1) : images;
  const std::int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (patch < 1 || H % patch != 0 || W % patch != 0)
    fail("patchify", "patch ", patch, " must be positive and divide the image size ", H, "x", W, " (images ",
         shape_str(images.shape()), ")");
  const std::int64_t rows = H / patch, cols = W / patch;
  // [B, C, rows, p, cols, p] -> [B, rows, cols, C, p, p] -> [B, rows·cols, C·p·p]
  return x.reshape({B, C, rows, patch, cols, patch})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({B, rows * cols, C * patch * patch});
}

std::int64_t ImageClassifierConfig::num_patches() const {
  if (patch < 1) fail(kConfigOp, "patch must be positive, got ", patch);
  return checked_mul(image_height / patch, image_width / patch, kConfigOp, "number of patches");
}

void ImageClassifierConfig::validate() const {
  if (image_height < 1 || image_width < 1 || channels < 1)
    fail(kConfigOp, "image size and channels must be positive, got ", image_height, "x", image_width, "x",
         channels);
  if (patch < 1 || image_height % patch != 0 || image_width % patch != 0)
    fail(kConfigOp, "patch ", patch, " must be positive and divide the image size ", image_height, "x",
         image_width);
  if (num_classes < 1) fail(kConfigOp, "num_classes must be positive, got ", num_classes);
  if (!is_valid_tensor_shape({image_height, image_width, channels}))
    fail(kConfigOp, "images of ", image_height, "x", image_width, "x", channels,
         " exceed the maximum tensor size of 2^40 elements");
  encoder.validate();
  if (encoder.vocab_size != 0 || encoder.causal)
    fail(kConfigOp, "the encoder must take embedded inputs (vocab_size 0) with normal attention");
  if (encoder.block_size != num_patches())
    fail(kConfigOp, "encoder.block_size ", encoder.block_size, " must equal the number of patches ",
         num_patches(), " (", image_height, "x", image_width, " in ", patch, "x", patch, " patches)");
}

std::string ImageClassifierConfig::to_json() const {
  const nlohmann::json json{{"kind", "image_classifier"},
                            {"image_height", image_height},
                            {"image_width", image_width},
                            {"channels", channels},
                            {"patch", patch},
                            {"num_classes", num_classes},
                            {"pooling", pooling_name(pooling)},
                            {"encoder", nlohmann::json::parse(encoder.to_json())}};
  return json.dump();
}

ImageClassifierConfig ImageClassifierConfig::from_json(const std::string& text) {
  const nlohmann::json json = parse_json(text, kConfigOp);
  JsonObjectReader reader(json, kConfigOp);
  reader.expect_kind("image_classifier", "fashion");
  ImageClassifierConfig config;
  reader.read("image_height", config.image_height);
  reader.read("image_width", config.image_width);
  reader.read("channels", config.channels);
  reader.read("patch", config.patch);
  reader.read("num_classes", config.num_classes);
  std::string pooling(pooling_name(config.pooling));
  reader.read("pooling", pooling);
  config.pooling = parse_pooling(pooling);
  config.encoder = FlowformerConfig::from_json(reader.object("encoder").dump());
  reader.finish();
  config.validate();
  return config;
}

ImageClassifierConfig image_classifier_config(std::int64_t image_height, std::int64_t image_width,
                                              std::int64_t patch, std::int64_t num_classes,
                                              FlowformerConfig encoder, std::int64_t channels) {
  ImageClassifierConfig config;
  config.image_height = image_height;
  config.image_width = image_width;
  config.channels = channels;
  config.patch = patch;
  config.num_classes = num_classes;
  encoder.vocab_size = 0;
  encoder.causal = false;
  encoder.block_size = patch > 0 ? config.num_patches() : 0;
  config.encoder = encoder;
  config.validate();
  return config;
}

FlowformerImageClassifier::FlowformerImageClassifier(const ImageClassifierConfig& config, Generator& init_gen,
                                                     DType dtype, std::shared_ptr<Generator> dropout_gen)
    : config_(config) {
  config.validate();
  nn::check_parameters_fit("FlowformerImageClassifier", parameter_count_for(config), dtype);
  const std::int64_t patch_features = config.channels * config.patch * config.patch;
  patch_embedding = register_module(
      "patch_embedding", std::make_shared<nn::Linear>(patch_features, config.encoder.n_embd, init_gen, nn::LinearOptions{.dtype = dtype}));
  encoder = register_module("encoder", std::make_shared<FlowformerEncoder>(config.encoder, config.num_classes,
                                                                           config.pooling, init_gen, dtype,
                                                                           std::move(dropout_gen)));
}

double FlowformerImageClassifier::parameter_count_for(const ImageClassifierConfig& config) {
  const double patch_features = static_cast<double>(config.channels) * static_cast<double>(config.patch) *
                                static_cast<double>(config.patch);
  return (patch_features + 1) * static_cast<double>(config.encoder.n_embd) +  // patch embedding with bias
         FlowformerEncoder::parameter_count_for(config.encoder, config.num_classes, config.pooling);
}

void FlowformerImageClassifier::check_images(const Tensor& images) const {
  const Shape expected = config_.channels == 1 ? Shape{config_.image_height, config_.image_width}
                                               : Shape{config_.channels, config_.image_height, config_.image_width};
  const bool ok = images.defined() && images.dim() == static_cast<std::int64_t>(expected.size()) + 1 &&
                  Shape(images.shape().begin() + 1, images.shape().end()) == expected;
  if (!ok) {
    std::string wanted = "[B";
    for (std::int64_t size : expected) wanted += ", " + std::to_string(size);
    wanted += "]";
    fail("FlowformerImageClassifier", "expected images ", wanted, ", got ",
         images.defined() ? shape_str(images.shape()) : std::string("an undefined tensor"));
  }
}

Tensor FlowformerImageClassifier::embed(const Tensor& images) const {
  check_images(images);
  return patch_embedding->forward(patchify(images, config_.patch));
}

Tensor FlowformerImageClassifier::forward(const Tensor& images) const {
  return encoder->forward_embedded(embed(images));
}

std::vector<FlowAttentionTrace> FlowformerImageClassifier::attention_traces(const Tensor& images) const {
  return encoder->attention_traces(embed(images));
}

}  // namespace flowgrad::models
