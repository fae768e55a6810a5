#include "decision.h"

#include <cmath>

#include "../core/error.h"
#include "../autograd/grad_mode.h"
#include "../core/json_object.h"
#include "../core/serialize.h"
#include "../nn/checkpoint.h"
#include "../ops/elementwise.h"
#include "../ops/loss.h"
#include "../ops/reduce.h"
#include "../ops/select.h"
#include "../ops/shape_ops.h"

namespace flowgrad::models {

namespace {
constexpr const char* kConfigOp = "DecisionConfig";
constexpr const char* kModelOp = "DecisionFlowformer";
constexpr std::int64_t kTokensPerStep = 3;  // return-to-go, state, action

std::string describe(const Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string text(dtype_name(t.dtype()));
  text += ' ';
  text += shape_str(t.shape());
  return text;
}
// Fails unless every id of an int64 tensor is in [0, end), naming the argument.
void check_ids(const char* op, const char* what, const Tensor& ids, std::int64_t end) {
  const std::vector<std::int64_t> values = ids.contiguous().to_vector<std::int64_t>();
  for (std::size_t i = 0; i < values.size(); ++i)
    if (values[i] < 0 || values[i] >= end)
      fail(op, what, " element ", i, " is ", values[i], ", outside [0, ", end, ")");
}

// Fails unless a floating tensor has the model's dtype and this shape, naming the argument.
void check_floating(const char* op, const char* what, const Tensor& t, DType dtype, const Shape& shape) {
  if (!t.defined() || t.dtype() != dtype || t.shape() != shape)
    fail(op, "expected ", what, " ", dtype_name(dtype), " ", shape_str(shape), ", got ", describe(t));
}

}  // namespace

// ---------------------------------------------------------------------------
// DecisionConfig
// ---------------------------------------------------------------------------

void DecisionConfig::validate() const {
  if (state_dim < 1) fail(kConfigOp, "state_dim must be positive, got ", state_dim);
  if (action_dim < 1) fail(kConfigOp, "action_dim must be positive, got ", action_dim);
  if (max_timestep < 1) fail(kConfigOp, "max_timestep must be positive, got ", max_timestep);
  if (!std::isfinite(return_scale) || return_scale <= 0)
    fail(kConfigOp, "return_scale must be a positive finite number, got ", return_scale);
  if (state_mean.size() != state_std.size() ||
      (!state_mean.empty() && static_cast<std::int64_t>(state_mean.size()) != state_dim))
    fail(kConfigOp, "state_mean and state_std must both be empty or hold state_dim=", state_dim, " values, got ",
         state_mean.size(), " and ", state_std.size());
  for (std::size_t i = 0; i < state_mean.size(); ++i)
    if (!std::isfinite(state_mean[i]) || !std::isfinite(state_std[i]) || state_std[i] <= 0)
      fail(kConfigOp, "state ", i, ": mean ", state_mean[i], " and std ", state_std[i],
           " must be finite with std > 0");
  if (!std::isfinite(target_return)) fail(kConfigOp, "target_return must be finite, got ", target_return);
  trunk.validate();
  if (trunk.vocab_size != 0 || !trunk.causal)
    fail(kConfigOp, "the trunk must take embedded inputs (vocab_size 0) with causal attention");
  if (max_timestep > kMaxTensorElements / kTokensPerStep)
    fail(kConfigOp, "max_timestep ", max_timestep, " gives more than 2^40 tokens per episode");
  if (trunk.block_size != kTokensPerStep * max_timestep)
    fail(kConfigOp, "trunk.block_size ", trunk.block_size, " must be 3 x max_timestep ", max_timestep);
  for (const std::int64_t rows : {state_dim, action_dim, max_timestep})
    if (!is_valid_tensor_shape({rows, trunk.n_embd}))
      fail(kConfigOp, "an embedding of ", rows, "x", trunk.n_embd, " exceeds the maximum tensor size of 2^40 elements");
}

std::string DecisionConfig::to_json() const {
  const nlohmann::json json{{"kind", "decision"},
                            {"state_dim", state_dim},
                            {"action_dim", action_dim},
                            {"discrete", discrete},
                            {"max_timestep", max_timestep},
                            {"return_scale", return_scale},
                            {"state_mean", state_mean},
                            {"state_std", state_std},
                            {"target_return", target_return},
                            {"trunk", nlohmann::json::parse(trunk.to_json())}};
  return json.dump();
}

DecisionConfig DecisionConfig::from_json(const std::string& text) {
  const nlohmann::json json = parse_json(text, kConfigOp);
  JsonObjectReader reader(json, kConfigOp);
  reader.expect_kind("decision", "decision");
  DecisionConfig config;
  reader.read("state_dim", config.state_dim);
  reader.read("action_dim", config.action_dim);
  reader.read("discrete", config.discrete);
  reader.read("max_timestep", config.max_timestep);
  reader.read("return_scale", config.return_scale);
  reader.read("state_mean", config.state_mean);
  reader.read("state_std", config.state_std);
  reader.read("target_return", config.target_return);
  config.trunk = FlowformerConfig::from_json(reader.object("trunk").dump());
  reader.finish();
  config.validate();
  return config;
}

DecisionConfig decision_config(std::int64_t state_dim, std::int64_t action_dim, bool discrete,
                               std::int64_t max_timestep, double return_scale, FlowformerConfig trunk) {
  DecisionConfig config;
  config.state_dim = state_dim;
  config.action_dim = action_dim;
  config.discrete = discrete;
  config.max_timestep = max_timestep;
  config.return_scale = return_scale;
  trunk.vocab_size = 0;
  trunk.causal = true;
  trunk.block_size = max_timestep <= kMaxTensorElements / kTokensPerStep ? kTokensPerStep * max_timestep : 0;
  config.trunk = trunk;
  config.validate();
  return config;
}

// ---------------------------------------------------------------------------
// DecisionFlowformer
// ---------------------------------------------------------------------------

DecisionFlowformer::DecisionFlowformer(const DecisionConfig& config, Generator& init_gen, DType dtype,
                                       std::shared_ptr<Generator> dropout_gen)
    : config_(config), dtype_(dtype) {
  config.validate();
  nn::check_parameters_fit(kModelOp, parameter_count_for(config), dtype);
  const std::int64_t C = config.trunk.n_embd;
  const nn::LinearOptions linear{.dtype = dtype};
  embed_timestep = register_module("embed_timestep", std::make_shared<nn::Embedding>(
                                                         config.max_timestep, C, init_gen, nn::EmbeddingOptions{.dtype = dtype}));
  embed_return = register_module("embed_return", std::make_shared<nn::Linear>(1, C, init_gen, linear));
  embed_state = register_module("embed_state", std::make_shared<nn::Linear>(config.state_dim, C, init_gen, linear));
  if (config.discrete)
    embed_action = register_module("embed_action", std::make_shared<nn::Embedding>(
                                                       config.action_dim, C, init_gen, nn::EmbeddingOptions{.dtype = dtype}));
  else
    embed_action = register_module("embed_action", std::make_shared<nn::Linear>(config.action_dim, C, init_gen, linear));
  embed_ln = register_module("embed_ln", std::make_shared<nn::LayerNorm>(C, 1e-5, dtype));
  if (!dropout_gen) dropout_gen = std::make_shared<Generator>(init_gen.next_u64());
  transformer = register_module("transformer", std::make_shared<FlowformerTrunk>(config.trunk, 0, init_gen,
                                                                                 std::move(dropout_gen), dtype));
  predict_action = register_module("predict_action", std::make_shared<nn::Linear>(C, config.action_dim, init_gen, linear));
  if (!config.state_mean.empty()) {
    std::vector<double> inverse_std;
    for (const double std : config.state_std) inverse_std.push_back(1.0 / std);
    state_mean_ = from_vector(config.state_mean).to(dtype);
    state_inverse_std_ = from_vector(inverse_std).to(dtype);
  }
}

double DecisionFlowformer::parameter_count_for(const DecisionConfig& config) {
  const double C = static_cast<double>(config.trunk.n_embd);
  const double actions = static_cast<double>(config.action_dim);
  const double action_embedding = config.discrete ? actions * C : (actions + 1) * C;
  return static_cast<double>(config.max_timestep) * C + 2 * C + (static_cast<double>(config.state_dim) + 1) * C +
         action_embedding + 2 * C + config.trunk.trunk_parameter_count(0) + (C + 1) * actions;
}

void DecisionFlowformer::check_inputs(const Tensor& returns_to_go, const Tensor& states, const Tensor& actions,
                                      const Tensor& timesteps) const {
  if (!states.defined() || states.dim() != 3 || states.size(2) != config_.state_dim || states.size(1) < 1 ||
      states.dtype() != dtype_)
    fail(kModelOp, "expected states ", dtype_name(dtype_), " [B, T, ", config_.state_dim, "] with T >= 1, got ",
         describe(states));
  const std::int64_t B = states.size(0), T = states.size(1);
  if (T > config_.max_timestep)
    fail(kModelOp, "a sequence of ", T, " steps exceeds max_timestep ", config_.max_timestep);
  check_floating(kModelOp, "returns_to_go", returns_to_go, dtype_, {B, T});
  if (config_.discrete) {
    if (!actions.defined() || actions.dtype() != kInt64 || actions.shape() != Shape{B, T})
      fail(kModelOp, "expected actions int64 ", shape_str({B, T}), ", got ", describe(actions));
    check_ids(kModelOp, "actions", actions, config_.action_dim);
  } else {
    check_floating(kModelOp, "actions", actions, dtype_, {B, T, config_.action_dim});
  }
  if (!timesteps.defined() || timesteps.dtype() != kInt64 || timesteps.shape() != Shape{B, T})
    fail(kModelOp, "expected timesteps int64 ", shape_str({B, T}), ", got ", describe(timesteps));
  check_ids(kModelOp, "timesteps", timesteps, config_.max_timestep);
}

Tensor DecisionFlowformer::embed_returns(const Tensor& returns_to_go, const Tensor& time) const {
  return embed_return->forward(returns_to_go.unsqueeze(-1) * (1.0 / config_.return_scale)) + time;
}

Tensor DecisionFlowformer::embed_states(const Tensor& states, const Tensor& time) const {
  if (!state_mean_.defined()) return embed_state->forward(states) + time;
  return embed_state->forward((states - state_mean_) * state_inverse_std_) + time;
}

Tensor DecisionFlowformer::embed_actions(const Tensor& actions, const Tensor& time) const {
  if (config_.discrete) return static_cast<const nn::Embedding&>(*embed_action).forward(actions) + time;
  return static_cast<const nn::Linear&>(*embed_action).forward(actions) + time;
}

Tensor DecisionFlowformer::action_output(const Tensor& hidden) const {
  const Tensor out = predict_action->forward(hidden);
  return config_.discrete ? out : tanh(out);
}

Tensor DecisionFlowformer::forward(const Tensor& returns_to_go, const Tensor& states, const Tensor& actions,
                                   const Tensor& timesteps) const {
  check_inputs(returns_to_go, states, actions, timesteps);
  const std::int64_t B = states.size(0), T = states.size(1), C = config_.trunk.n_embd;
  const Tensor time = embed_timestep->forward(timesteps);
  // [B, T, 3, C] -> [B, 3T, C]: R_0, s_0, a_0, R_1, ...
  const Tensor tokens = stack({embed_returns(returns_to_go, time), embed_states(states, time),
                               embed_actions(actions, time)}, 2).reshape({B, kTokensPerStep * T, C});
  const Tensor hidden = transformer->forward_embedded(embed_ln->forward(tokens));
  // The outputs at the state tokens predict the actions.
  return action_output(hidden.reshape({B, T, kTokensPerStep, C}).select(2, 1));
}

Tensor DecisionFlowformer::loss(const TrajectoryBatch& batch) const {
  const Tensor predicted = forward(batch.returns_to_go, batch.states, batch.actions, batch.timesteps);
  const std::int64_t B = predicted.size(0), T = predicted.size(1);
  if (!batch.mask.defined() || batch.mask.shape() != Shape{B, T} || !is_floating(batch.mask.dtype()))
    fail(kModelOp, "expected a mask [", B, ", ", T, "] (floating), got ", describe(batch.mask));
  const std::vector<double> real = batch.mask.to(kFloat64).contiguous().to_vector<double>();
  double real_steps = 0;
  for (std::size_t i = 0; i < real.size(); ++i) {
    if (real[i] != 0 && real[i] != 1) fail(kModelOp, "mask element ", i, " is ", real[i], ", not 0 or 1");
    real_steps += real[i];
  }
  if (real_steps == 0) fail(kModelOp, "the batch's mask holds no real step");
  if (config_.discrete) {
    // Padded steps get cross-entropy's ignore_index.
    std::vector<std::int64_t> targets = batch.actions.contiguous().to_vector<std::int64_t>();
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (real[i] == 0) targets[i] = -100;
    return cross_entropy(predicted.reshape({B * T, config_.action_dim}), from_vector(targets));
  }
  // Σ over real steps of (â − a)², / (real steps · action_dim). (Padding must
  // still be finite: the trunk's GEMMs multiply it by 0 for earlier steps.)
  const Tensor error = where(batch.mask.unsqueeze(-1), predicted - batch.actions, zeros({1}, dtype_));
  return sum(error * error) * (1.0 / (real_steps * static_cast<double>(config_.action_dim)));
}

DecisionDecoder DecisionFlowformer::start_decoding(std::int64_t batch) const { return DecisionDecoder(*this, batch); }

// ---------------------------------------------------------------------------
// DecisionDecoder
// ---------------------------------------------------------------------------

DecisionDecoder::DecisionDecoder(const DecisionFlowformer& model, std::int64_t batch) : model_(&model), batch_(batch) {
  if (batch <= 0) fail("DecisionDecoder", "batch must be positive, got ", batch);
  for (const auto& block : model.transformer->h->blocks())
    layers_.push_back(block->attn->make_decode_state(batch, model.config().trunk.block_size));
}

Tensor DecisionDecoder::feed(const Tensor& embedded) {
  // The same steps as forward(), for one token.
  const FlowformerTrunk& trunk = *model_->transformer;
  Tensor x = trunk.drop->forward(model_->embed_ln->forward(embedded));
  const auto& blocks = trunk.h->blocks();
  for (std::size_t i = 0; i < blocks.size(); ++i) x = blocks[i]->step(x, layers_[i]);
  return trunk.ln_f->forward(x);
}

Tensor DecisionDecoder::act(const Tensor& returns_to_go, const Tensor& state, const Tensor& timestep) {
  const DecisionConfig& config = model_->config();
  if (timestep_.defined())
    fail("DecisionDecoder", "act() called twice: record() the action taken at step ", steps_, " first");
  if (steps_ >= config.max_timestep)
    fail("DecisionDecoder", "the episode has reached max_timestep ", config.max_timestep, " steps");
  check_floating("DecisionDecoder", "returns_to_go", returns_to_go, model_->dtype_, {batch_});
  check_floating("DecisionDecoder", "state", state, model_->dtype_, {batch_, config.state_dim});
  if (!timestep.defined() || timestep.dtype() != kInt64 || timestep.shape() != Shape{batch_})
    fail("DecisionDecoder", "expected timestep int64 [", batch_, "], got ", describe(timestep));
  check_ids("DecisionDecoder", "timestep", timestep, config.max_timestep);
  NoGradGuard no_grad;
  // Both tokens are embedded before either is fed: a failure leaves the decoder as it was.
  const Tensor time = model_->embed_timestep->forward(timestep.reshape({batch_, 1}));
  const Tensor return_token = model_->embed_returns(returns_to_go.reshape({batch_, 1}), time);
  const Tensor state_token = model_->embed_states(state.reshape({batch_, 1, config.state_dim}), time);
  feed(return_token);
  const Tensor hidden = feed(state_token);
  timestep_ = timestep;
  return model_->action_output(hidden).reshape({batch_, config.action_dim});
}

void DecisionDecoder::record(const Tensor& action) {
  const DecisionConfig& config = model_->config();
  if (!timestep_.defined()) fail("DecisionDecoder", "record() without act(): each step is act() then record()");
  if (config.discrete) {
    if (!action.defined() || action.dtype() != kInt64 || action.shape() != Shape{batch_})
      fail("DecisionDecoder", "expected the action int64 ", shape_str({batch_}), ", got ", describe(action));
    check_ids("DecisionDecoder", "action", action, config.action_dim);
  } else {
    check_floating("DecisionDecoder", "the action", action, model_->dtype_, {batch_, config.action_dim});
  }
  NoGradGuard no_grad;
  const Tensor time = model_->embed_timestep->forward(timestep_.reshape({batch_, 1}));
  const Tensor step_action = config.discrete ? action.reshape({batch_, 1}) : action.reshape({batch_, 1, config.action_dim});
  feed(model_->embed_actions(step_action, time));
  timestep_ = Tensor();
  ++steps_;
}

std::unique_ptr<DecisionFlowformer> load_decision_model(const std::string& path, DType dtype) {
  const SafetensorsFile file = load_safetensors_file(path);  // read once: configuration and weights agree
  DecisionConfig config;
  try {
    config = DecisionConfig::from_json(nn::read_checkpoint_info(file, path).config);
  } catch (const Error& e) {
    fail("load_decision_model", "'", path, "': ", e.what());
  }
  Generator init_gen(0);  // every weight is then overwritten by the checkpoint's
  auto model = std::make_unique<DecisionFlowformer>(config, init_gen, dtype);
  nn::load_model_weights(file, path, *model);
  model->eval();
  return model;
}

}  // namespace flowgrad::models
