#include "timeseries.h"

#include "../core/error.h"
#include "../core/json_object.h"

namespace flowgrad::models {

namespace {
constexpr const char* kConfigOp = "SeriesClassifierConfig";
}  // namespace

void SeriesClassifierConfig::validate() const {
  if (channels < 1) fail(kConfigOp, "channels must be positive, got ", channels);
  if (max_length < 1) fail(kConfigOp, "max_length must be positive, got ", max_length);
  if (num_classes < 1) fail(kConfigOp, "num_classes must be positive, got ", num_classes);
  if (!class_labels.empty() && static_cast<std::int64_t>(class_labels.size()) != num_classes)
    fail(kConfigOp, "class_labels names ", class_labels.size(), " classes but num_classes is ", num_classes);
  encoder.validate();
  if (encoder.vocab_size != 0 || encoder.causal)
    fail(kConfigOp, "the encoder must take embedded inputs (vocab_size 0) with normal attention");
  if (encoder.block_size != max_length)
    fail(kConfigOp, "encoder.block_size ", encoder.block_size, " must equal max_length ", max_length);
  if (!is_valid_tensor_shape({channels, encoder.n_embd}))
    fail(kConfigOp, "an input embedding of ", channels, "x", encoder.n_embd,
         " exceeds the maximum tensor size of 2^40 elements");
}

std::string SeriesClassifierConfig::to_json() const {
  const nlohmann::json json{{"kind", "series_classifier"},
                            {"channels", channels},
                            {"max_length", max_length},
                            {"num_classes", num_classes},
                            {"class_labels", class_labels},
                            {"encoder", nlohmann::json::parse(encoder.to_json())}};
  return json.dump();
}

SeriesClassifierConfig SeriesClassifierConfig::from_json(const std::string& text) {
  const nlohmann::json json = parse_json(text, kConfigOp);
  JsonObjectReader reader(json, kConfigOp);
  reader.expect_kind("series_classifier", "timeseries");
  SeriesClassifierConfig config;
  reader.read("channels", config.channels);
  reader.read("max_length", config.max_length);
  reader.read("num_classes", config.num_classes);
  reader.read("class_labels", config.class_labels);
  config.encoder = FlowformerConfig::from_json(reader.object("encoder").dump());
  reader.finish();
  config.validate();
  return config;
}

SeriesClassifierConfig series_classifier_config(std::int64_t channels, std::int64_t max_length,
                                                std::int64_t num_classes, FlowformerConfig encoder,
                                                std::vector<std::string> class_labels) {
  SeriesClassifierConfig config;
  config.class_labels = std::move(class_labels);
  config.channels = channels;
  config.max_length = max_length;
  config.num_classes = num_classes;
  encoder.vocab_size = 0;
  encoder.causal = false;
  encoder.block_size = max_length;
  config.encoder = encoder;
  config.validate();
  return config;
}

FlowformerSeriesClassifier::FlowformerSeriesClassifier(const SeriesClassifierConfig& config, Generator& init_gen,
                                                       DType dtype, std::shared_ptr<Generator> dropout_gen)
    : config_(config) {
  config.validate();
  nn::check_parameters_fit("FlowformerSeriesClassifier", parameter_count_for(config), dtype);
  input_embedding = register_module(
      "input_embedding", std::make_shared<nn::Linear>(config.channels, config.encoder.n_embd, init_gen,
                                                      nn::LinearOptions{.dtype = dtype}));
  encoder = register_module("encoder", std::make_shared<FlowformerEncoder>(config.encoder, config.num_classes,
                                                                           Pooling::Mean, init_gen, dtype,
                                                                           std::move(dropout_gen)));
}

double FlowformerSeriesClassifier::parameter_count_for(const SeriesClassifierConfig& config) {
  return (static_cast<double>(config.channels) + 1) * static_cast<double>(config.encoder.n_embd) +
         FlowformerEncoder::parameter_count_for(config.encoder, config.num_classes, Pooling::Mean);
}

Tensor FlowformerSeriesClassifier::forward(const Tensor& series, const Tensor& mask) const {
  if (!series.defined() || series.dim() != 3 || series.size(2) != config_.channels || series.size(1) < 1 ||
      series.size(1) > config_.max_length)
    fail("FlowformerSeriesClassifier", "expected series [B, T, ", config_.channels, "] with 1 <= T <= ",
         config_.max_length, ", got ", series.defined() ? shape_str(series.shape()) : std::string("an undefined tensor"));
  return encoder->forward_embedded(input_embedding->forward(series), mask);
}

}  // namespace flowgrad::models
