#include "flowformer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "../autograd/grad_mode.h"
#include "../core/json_object.h"
#include "../ops/elementwise.h"
#include "../ops/loss.h"
#include "../ops/reduce.h"
#include "../ops/shape_ops.h"

namespace flowgrad::models {

// ---------------------------------------------------------------------------
// FlowformerConfig
// ---------------------------------------------------------------------------

FlowformerConfig FlowformerConfig::mini(std::int64_t vocab_size) {
  FlowformerConfig config;
  config.vocab_size = vocab_size;
  config.block_size = 128;
  config.n_layer = 6;
  config.n_head = 6;
  config.n_embd = 192;
  config.dropout = 0.1;
  config.causal = true;
  config.attention = nn::AttentionKind::Flow;
  return config;
}

void FlowformerConfig::validate() const {
  const char* op = "FlowformerConfig";
  if (vocab_size < 0) fail(op, "vocab_size must not be negative, got ", vocab_size);
  if (block_size <= 0) fail(op, "block_size must be positive, got ", block_size);
  if (n_layer <= 0) fail(op, "n_layer must be positive, got ", n_layer);
  if (n_head <= 0) fail(op, "n_head must be positive, got ", n_head);
  if (n_embd <= 0) fail(op, "n_embd must be positive, got ", n_embd);
  if (n_embd % n_head != 0) fail(op, "n_embd=", n_embd, " must be a multiple of n_head=", n_head);
  if (!(dropout >= 0.0 && dropout < 1.0)) fail(op, "dropout must be in [0, 1), got ", dropout);
  // The largest weights: the tables [vocab_size or block_size, n_embd] and the MLP's [4 n_embd, n_embd].
  if (!is_valid_tensor_shape({vocab_size, n_embd}) || !is_valid_tensor_shape({block_size, n_embd}) ||
      n_embd > kMaxTensorElements / 4 || !is_valid_tensor_shape({4 * n_embd, n_embd}))
    fail(op, "vocab_size=", vocab_size, ", block_size=", block_size, ", n_embd=", n_embd,
         " give a weight of more than 2^40 elements (the maximum tensor size)");
}

double FlowformerConfig::trunk_parameter_count(std::int64_t positions) const {
  const auto C = static_cast<double>(n_embd);
  // Per block: 2 LayerNorms (4C), 4 projections C x C with bias, MLP C -> 4C -> C with biases.
  const double block = 4 * C + 4 * (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C);
  return static_cast<double>(vocab_size) * C + static_cast<double>(positions) * C +
         static_cast<double>(n_layer) * block + 2 * C;
}

std::string FlowformerConfig::to_json() const {
  const nlohmann::json json{{"vocab_size", vocab_size}, {"block_size", block_size}, {"n_layer", n_layer},
                            {"n_head", n_head},         {"n_embd", n_embd},         {"dropout", dropout},
                            {"causal", causal},         {"attention", nn::attention_kind_name(attention)}};
  return json.dump();
}

FlowformerConfig FlowformerConfig::from_json(const std::string& text) {
  constexpr const char* op = "FlowformerConfig";
  const nlohmann::json json = parse_json(text, op);
  JsonObjectReader reader(json, op);
  FlowformerConfig config;
  reader.read("vocab_size", config.vocab_size);
  reader.read("block_size", config.block_size);
  reader.read("n_layer", config.n_layer);
  reader.read("n_head", config.n_head);
  reader.read("n_embd", config.n_embd);
  reader.read("dropout", config.dropout);
  reader.read("causal", config.causal);
  std::string attention(nn::attention_kind_name(config.attention));
  reader.read("attention", attention);
  config.attention = nn::parse_attention_kind(attention);
  reader.finish();
  config.validate();
  return config;
}

// ---------------------------------------------------------------------------
// Blocks and the trunk
// ---------------------------------------------------------------------------

FlowformerBlock::FlowformerBlock(const FlowformerConfig& config, Generator& init_gen,
                                 std::shared_ptr<Generator> dropout_gen, DType dtype) {
  config.validate();
  if (!dropout_gen) fail("FlowformerBlock", "the dropout generator is null");
  nn::FlowAttentionLayerOptions attn_options;
  attn_options.d_model = config.n_embd;
  attn_options.n_heads = config.n_head;
  attn_options.causal = config.causal;
  attn_options.kind = config.attention;
  attn_options.dropout = config.dropout;
  // GPT-2's scaled init of the residual projection, on the MLP's only (as
  // the reference does): keeps the residual stream's variance from growing
  // with depth.
  const double proj_std = nn::kDefaultInitStd / std::sqrt(2.0 * static_cast<double>(config.n_layer));
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(config.n_embd, 1e-5, dtype));
  attn = register_module("attn", std::make_shared<nn::FlowAttention>(attn_options, init_gen, dropout_gen, dtype));
  ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(config.n_embd, 1e-5, dtype));
  mlp = register_module("mlp", std::make_shared<nn::MLP>(config.n_embd, 4 * config.n_embd, init_gen, dropout_gen, nn::MLPOptions{.dropout = config.dropout, .proj_init_std = proj_std, .dtype = dtype}));
}

Tensor FlowformerBlock::forward(const Tensor& x, const Tensor& mask) const {
  const Tensor y = x + attn->forward(ln_1->forward(x), mask);
  return y + mlp->forward(ln_2->forward(y));
}

Tensor FlowformerBlock::step(const Tensor& x_t, nn::AttentionDecodeState& state) const {
  NoGradGuard no_grad;
  const Tensor y = x_t + attn->step(ln_1->forward(x_t), state);
  return y + mlp->forward(ln_2->forward(y));
}

void FlowformerBlocks::append(std::shared_ptr<FlowformerBlock> block) {
  blocks_.push_back(register_module(std::to_string(blocks_.size()), std::move(block)));
}

FlowformerTrunk::FlowformerTrunk(const FlowformerConfig& config, std::int64_t positions, Generator& init_gen,
                                 std::shared_ptr<Generator> dropout_gen, DType dtype) {
  if (config.vocab_size > 0)
    wte = register_module(
        "wte", std::make_shared<nn::Embedding>(config.vocab_size, config.n_embd, init_gen, nn::EmbeddingOptions{.dtype = dtype}));
  if (positions > 0)
    wpe = register_module("wpe",
                          std::make_shared<nn::Embedding>(positions, config.n_embd, init_gen, nn::EmbeddingOptions{.dtype = dtype}));
  drop = register_module("drop", std::make_shared<nn::Dropout>(config.dropout, dropout_gen));
  h = register_module("h", std::make_shared<FlowformerBlocks>());
  for (std::int64_t i = 0; i < config.n_layer; ++i)
    h->append(std::make_shared<FlowformerBlock>(config, init_gen, dropout_gen, dtype));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(config.n_embd, 1e-5, dtype));
}

Tensor FlowformerTrunk::add_positions(const Tensor& x) const {
  if (!wpe) return drop->forward(x);  // the caller embedded the positions
  const std::int64_t T = x.size(1);
  if (T > wpe->num_embeddings)
    fail("Flowformer", "sequence of length ", T, " exceeds the ", wpe->num_embeddings,
         " positions of the position embedding");
  // wpe rows 0..T-1 broadcast over the batch.
  return drop->forward(x + wpe->weight.narrow(0, 0, T));
}

Tensor FlowformerTrunk::forward_embedded(const Tensor& x, const Tensor& mask) const {
  Tensor hidden = add_positions(x);
  for (const auto& block : h->blocks()) hidden = block->forward(hidden, mask);
  return ln_f->forward(hidden);
}

std::vector<FlowAttentionTrace> FlowformerTrunk::attention_traces(const Tensor& x) const {
  std::vector<FlowAttentionTrace> traces;
  Tensor hidden = add_positions(x);
  for (const auto& block : h->blocks()) {
    traces.push_back(block->attn->trace(block->ln_1->forward(hidden)));
    hidden = block->forward(hidden);
  }
  return traces;
}

// ---------------------------------------------------------------------------
// FlowformerLM
// ---------------------------------------------------------------------------

FlowformerLM::FlowformerLM(const FlowformerConfig& config, Generator& init_gen, DType dtype,
                           std::shared_ptr<Generator> dropout_gen)
    : config_(config), dtype_(dtype) {
  config.validate();
  if (config.vocab_size <= 0) fail("FlowformerLM", "vocab_size must be positive, got ", config.vocab_size);
  nn::check_parameters_fit("FlowformerLM", parameter_count_for(config), dtype);
  if (!config.causal) fail("FlowformerLM", "a language model needs causal attention (config.causal=false)");
  // The generator is made now but seeded after the weights are drawn.
  const bool own_dropout_gen = !dropout_gen;
  dropout_gen_ = own_dropout_gen ? std::make_shared<Generator>() : std::move(dropout_gen);
  transformer = register_module("transformer", std::make_shared<FlowformerTrunk>(
                                                   config, config.block_size, init_gen, dropout_gen_, dtype));
  lm_head = register_module("lm_head", std::make_shared<nn::Linear>(config.n_embd, config.vocab_size, init_gen, nn::LinearOptions{.bias = false, .dtype = dtype}));
  if (own_dropout_gen) dropout_gen_->manual_seed(init_gen.next_u64());
}

double FlowformerConfig::training_flops_per_token(std::int64_t length) const {
  const double d = static_cast<double>(n_embd), layers = static_cast<double>(n_layer);
  const double weights = layers * 12.0 * d * d + d * static_cast<double>(vocab_size);
  const double per_layer_attention = attention == nn::AttentionKind::Flow ? 12.0 * d * (d / static_cast<double>(n_head))
                                                            : 12.0 * static_cast<double>(length) * d;
  return 6.0 * weights + layers * per_layer_attention;
}

double FlowformerLM::parameter_count_for(const FlowformerConfig& config) {
  return config.trunk_parameter_count(config.block_size) +
         static_cast<double>(config.n_embd) * static_cast<double>(config.vocab_size);  // lm_head, no bias
}

Tensor FlowformerLM::forward(const Tensor& tokens) const {
  if (!tokens.defined() || tokens.dim() != 2 || tokens.dtype() != kInt64)
    fail("FlowformerLM", "expected int64 tokens [B, T], got ",
         tokens.defined() ? dtype_name(tokens.dtype()) : "undefined", " ",
         tokens.defined() ? shape_str(tokens.shape()) : "");
  const std::int64_t T = tokens.size(1);
  if (T == 0 || T > config_.block_size)
    fail("FlowformerLM", "sequence length T=", T, " must be in [1, block_size=", config_.block_size,
         "] (tokens ", shape_str(tokens.shape()), ")");
  return lm_head->forward(transformer->forward_embedded(transformer->wte->forward(tokens)));
}

Tensor FlowformerLM::loss(const Tensor& tokens, const Tensor& targets) const {
  return cross_entropy(forward(tokens), targets);
}

IncrementalDecoder FlowformerLM::start_decoding(std::int64_t batch) const {
  return IncrementalDecoder(*this, batch);
}

std::vector<std::int64_t> FlowformerLM::generate(const std::vector<std::int64_t>& prompt, std::int64_t n_new,
                                                 const SamplingOptions& sampling, Generator& rng) const {
  if (prompt.empty()) fail("FlowformerLM::generate", "the prompt must hold at least one token");
  if (n_new < 0) fail("FlowformerLM::generate", "n_new must not be negative, got ", n_new);
  const std::int64_t positions = static_cast<std::int64_t>(prompt.size()) + n_new - 1;
  if (n_new > 0 && positions > config_.block_size)
    fail("FlowformerLM::generate", "a prompt of ", prompt.size(), " tokens and ", n_new, " new tokens need ",
         positions, " positions, more than block_size=", config_.block_size);
  sampling.validate();  // before any work

  std::vector<std::int64_t> sequence = prompt;
  if (n_new == 0) return sequence;
  IncrementalDecoder decoder = start_decoding(1);
  Tensor logits;
  for (std::int64_t token : prompt) logits = decoder.next_logits(token);
  for (std::int64_t i = 0; i < n_new; ++i) {
    const std::int64_t next = sample_token(logits, sampling, rng);
    sequence.push_back(next);
    if (i + 1 < n_new) logits = decoder.next_logits(next);  // the last token needs no position
  }
  return sequence;
}

// ---------------------------------------------------------------------------
// Sampling and incremental decoding
// ---------------------------------------------------------------------------

void SamplingOptions::validate() const {
  if (!greedy && !(temperature > 0.0 && std::isfinite(temperature)))
    fail("sample_token", "temperature must be positive and finite, got ", temperature);
  if (top_k < 0) fail("sample_token", "top_k must not be negative, got ", top_k);
}

std::int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& rng) {
  if (!logits.defined() || logits.dim() != 1 || logits.numel() == 0 || !is_floating(logits.dtype()))
    fail("sample_token", "expected float logits [vocab], got ",
         logits.defined() ? shape_str(logits.shape()) : std::string("an undefined tensor"));
  options.validate();
  const std::vector<double> values = logits.to_vector<double>();
  const std::int64_t vocab = static_cast<std::int64_t>(values.size());
  for (double v : values)
    if (std::isnan(v)) fail("sample_token", "logits contain NaN");

  std::int64_t best = 0;
  for (std::int64_t i = 1; i < vocab; ++i)
    if (values[i] > values[best]) best = i;
  if (options.greedy) return best;
  // exp(v − max) needs a finite max (−inf everywhere or +inf give 0/0).
  if (!std::isfinite(values[best]))
    fail("sample_token", "the largest logit is ", values[best], "; sampling needs a finite one");

  // Tokens below the k-th largest logit get probability 0.
  double threshold = -std::numeric_limits<double>::infinity();
  if (options.top_k > 0 && options.top_k < vocab) {
    std::vector<double> sorted = values;
    std::nth_element(sorted.begin(), sorted.begin() + (options.top_k - 1), sorted.end(),
                     std::greater<double>());
    threshold = sorted[static_cast<std::size_t>(options.top_k - 1)];
  }
  // softmax((logits − max) / temperature) over the kept tokens, in double.
  std::vector<double> weights(values.size(), 0.0);
  double total = 0.0;
  for (std::int64_t i = 0; i < vocab; ++i) {
    if (values[i] < threshold) continue;
    weights[i] = std::exp((values[i] - values[best]) / options.temperature);
    total += weights[i];
  }
  double u = rng.uniform() * total;
  for (std::int64_t i = 0; i < vocab; ++i) {
    if (weights[i] == 0.0) continue;
    if (u < weights[i]) return i;
    u -= weights[i];
  }
  return best;  // only reached through rounding at the very end of the range
}

IncrementalDecoder::IncrementalDecoder(const FlowformerLM& model, std::int64_t batch)
    : model_(&model), batch_(batch) {
  if (batch <= 0) fail("IncrementalDecoder", "batch must be positive, got ", batch);
  for (const auto& block : model.transformer->h->blocks())
    layers_.push_back(block->attn->make_decode_state(batch, model.config().block_size));
}

void IncrementalDecoder::reset() {
  for (auto& layer : layers_) layer.reset();
  position_ = 0;
}

Tensor IncrementalDecoder::next_logits(const Tensor& tokens) {
  if (!tokens.defined() || tokens.dtype() != kInt64 || tokens.shape() != Shape{batch_})
    fail("IncrementalDecoder", "expected int64 tokens [", batch_, "], got ",
         tokens.defined() ? shape_str(tokens.shape()) : std::string("an undefined tensor"));
  const std::int64_t block_size = model_->config().block_size;
  if (position_ >= block_size)
    fail("IncrementalDecoder", "the context is full: all block_size=", block_size,
         " positions of the position embedding are used");
  NoGradGuard no_grad;
  const FlowformerTrunk& trunk = *model_->transformer;
  // The same steps as forward(), for the single position `position_`.
  Tensor x = trunk.wte->forward(tokens.reshape({batch_, 1})) + trunk.wpe->weight.narrow(0, position_, 1);
  x = trunk.drop->forward(x);
  const auto& blocks = trunk.h->blocks();
  for (std::size_t i = 0; i < blocks.size(); ++i) x = blocks[i]->step(x, layers_[i]);
  Tensor logits = model_->lm_head->forward(trunk.ln_f->forward(x));
  ++position_;
  return logits.reshape({batch_, model_->config().vocab_size});
}

Tensor IncrementalDecoder::next_logits(std::int64_t token) {
  if (batch_ != 1) fail("IncrementalDecoder", "next_logits(token) needs batch 1, this decoder has ", batch_);
  return next_logits(from_vector(std::vector<std::int64_t>{token})).reshape({model_->config().vocab_size});
}

// ---------------------------------------------------------------------------
// FlowformerEncoder
// ---------------------------------------------------------------------------

FlowformerEncoder::FlowformerEncoder(const FlowformerConfig& config, std::int64_t num_classes,
                                     Pooling pooling, Generator& init_gen, DType dtype,
                                     std::shared_ptr<Generator> dropout_gen)
    : config_(config), pooling_(pooling), dtype_(dtype) {
  config.validate();
  if (config.causal) fail("FlowformerEncoder", "an encoder needs normal attention (config.causal=true)");
  if (num_classes <= 0) fail("FlowformerEncoder", "num_classes must be positive, got ", num_classes);
  nn::check_parameters_fit("FlowformerEncoder", parameter_count_for(config, num_classes, pooling), dtype);
  const bool own_dropout_gen = !dropout_gen;
  auto dropout_generator = own_dropout_gen ? std::make_shared<Generator>() : std::move(dropout_gen);
  // The class token takes position 0, so block_size real tokens still fit.
  const std::int64_t positions = config.block_size + (pooling == Pooling::ClassToken ? 1 : 0);
  if (pooling == Pooling::ClassToken)
    cls_token = register_parameter("cls_token", randn({1, 1, config.n_embd}, init_gen, dtype, 0.0, nn::kDefaultInitStd));
  transformer = register_module("transformer", std::make_shared<FlowformerTrunk>(config, positions, init_gen,
                                                                                 dropout_generator, dtype));
  head = register_module(
      "head", std::make_shared<nn::Linear>(config.n_embd, num_classes, init_gen, nn::LinearOptions{.dtype = dtype}));
  if (own_dropout_gen) dropout_generator->manual_seed(init_gen.next_u64());
}

double FlowformerEncoder::parameter_count_for(const FlowformerConfig& config, std::int64_t num_classes,
                                              Pooling pooling) {
  const bool class_token = pooling == Pooling::ClassToken;
  const auto C = static_cast<double>(config.n_embd);
  return config.trunk_parameter_count(config.block_size + (class_token ? 1 : 0)) + (class_token ? C : 0.0) +
         (C + 1) * static_cast<double>(num_classes);  // head with bias
}

Tensor FlowformerEncoder::forward(const Tensor& tokens, const Tensor& mask) const {
  if (!transformer->wte)
    fail("FlowformerEncoder", "this encoder has no token embedding (vocab_size=0); use forward_embedded");
  if (!tokens.defined() || tokens.dim() != 2 || tokens.dtype() != kInt64)
    fail("FlowformerEncoder", "expected int64 tokens [B, T], got ",
         tokens.defined() ? shape_str(tokens.shape()) : std::string("an undefined tensor"));
  return forward_embedded(transformer->wte->forward(tokens), mask);
}

Tensor FlowformerEncoder::forward_embedded(const Tensor& x, const Tensor& mask) const {
  return head->forward(features_embedded(x, mask));
}

void FlowformerEncoder::check_embedded(const Tensor& x) const {
  if (!x.defined() || x.dim() != 3 || x.size(2) != config_.n_embd)
    fail("FlowformerEncoder", "expected inputs [B, T, n_embd=", config_.n_embd, "], got ",
         x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  if (x.size(1) == 0 || x.size(1) > config_.block_size)
    fail("FlowformerEncoder", "sequence length T=", x.size(1), " must be in [1, block_size=",
         config_.block_size, "]");
}

std::vector<FlowAttentionTrace> FlowformerEncoder::attention_traces(const Tensor& x) const {
  check_embedded(x);
  if (pooling_ != Pooling::ClassToken) return transformer->attention_traces(x);
  return transformer->attention_traces(concat({cls_token.expand({x.size(0), 1, config_.n_embd}), x}, 1));
}

Tensor FlowformerEncoder::features_embedded(const Tensor& x, const Tensor& mask) const {
  check_embedded(x);
  const std::int64_t B = x.size(0), T = x.size(1);
  if (mask.defined() && mask.shape() != Shape{B, T})
    fail("FlowformerEncoder", "mask of shape ", shape_str(mask.shape()),
         " does not match [B, T] = ", shape_str({B, T}));

  // 0/1 flags of the real tokens, in the model's dtype (for pooling).
  Tensor keep;
  if (mask.defined()) {
    std::vector<double> flags = mask.to_vector<double>();
    for (double& f : flags) f = f != 0 ? 1.0 : 0.0;
    for (std::int64_t b = 0; pooling_ == Pooling::Mean && b < B; ++b)  // a row without real tokens has nothing to pool
      if (std::all_of(flags.begin() + b * T, flags.begin() + (b + 1) * T, [](double f) { return f == 0; }))
        fail("FlowformerEncoder", "row ", b, " of the mask ", shape_str(mask.shape()), " has no real token");
    keep = from_vector(flags, {B, T}).to(x.dtype());
  }

  if (pooling_ == Pooling::ClassToken) {
    Tensor inputs = concat({cls_token.expand({B, 1, config_.n_embd}), x}, 1);
    Tensor full_mask = keep.defined() ? concat({ones({B, 1}, keep.dtype()), keep}, 1) : Tensor();
    return transformer->forward_embedded(inputs, full_mask).select(1, 0);
  }
  const Tensor hidden = transformer->forward_embedded(x, keep);
  if (!keep.defined()) return mean(hidden, {1});
  const Tensor counts = sum(keep, {1}, true);            // [B, 1]
  return sum(hidden * keep.unsqueeze(2), {1}) / counts;  // padded rows weigh 0
}

}  // namespace flowgrad::models
