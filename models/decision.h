// A decision model for offline reinforcement learning: Flowformer's fifth
// domain, a Decision Transformer (Chen et al., 2021) whose attention is
// Flow-Attention (or softmax, to compare). A trajectory is read as the token
// sequence
//
//   R_0, s_0, a_0, R_1, s_1, a_1, ...     R_t = the return still to come
//
// Each modality has its own linear embedding (an embedding table for discrete
// actions), the step's timestep embedding is added to all three tokens, then
// a LayerNorm and a causal Flowformer trunk follow. The action a_t is
// predicted from the output at s_t, which has seen R_0..R_t, s_0..s_t and
// a_0..a_{t-1}: asking for a high R_0 at evaluation asks for good actions.
//
// The trunk has no position table of its own: the timestep embedding is the
// position (the original Decision Transformer does the same). When training
// segments start at an episode's first step and cover whole episodes (the
// decision program's default), training sees exactly the prefixes that
// incremental decoding (DecisionDecoder) produces at evaluation, where each
// step costs the same whatever the episode's length with Flow-Attention.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flowformer.h"

namespace flowgrad::models {

struct DecisionConfig {
  std::int64_t state_dim = 1;
  // Continuous: values per action (each in [-1, 1]: the head ends in tanh).
  // Discrete: the number of actions (the head gives their logits).
  std::int64_t action_dim = 1;
  bool discrete = false;
  std::int64_t max_timestep = 1;  // rows of the timestep embedding: episodes of up to this many steps
  double return_scale = 1.0;      // returns-to-go are divided by it before their embedding
  // States are standardised, (s − mean) / std, before their embedding
  // (e.g. with the training data's statistics); empty: used as they are.
  std::vector<double> state_mean, state_std;
  // The return asked for at step 0 when evaluating, unless told otherwise
  // (e.g. the best episode return of the training data).
  double target_return = 0.0;
  // vocab_size 0, causal, block_size 3 · max_timestep (the three tokens of every step).
  FlowformerConfig trunk;

  // Throws "[DecisionConfig] ..." naming the bad field.
  void validate() const;
  // {"kind": "decision", "state_dim": ..., "trunk": {...}}, for checkpoints.
  std::string to_json() const;
  static DecisionConfig from_json(const std::string& text);
  bool operator==(const DecisionConfig&) const = default;
};

// A configuration with the trunk's vocab_size, causal and block_size set to fit.
DecisionConfig decision_config(std::int64_t state_dim, std::int64_t action_dim, bool discrete,
                               std::int64_t max_timestep, double return_scale, FlowformerConfig trunk);

// A batch of trajectory segments that start at an episode's first step,
// padded at the end to the longest one.
struct TrajectoryBatch {
  Tensor returns_to_go;  // [B, T] (unscaled)
  Tensor states;         // [B, T, state_dim]
  Tensor actions;        // continuous: [B, T, action_dim]; discrete: int64 [B, T]
  Tensor timesteps;      // int64 [B, T], in [0, max_timestep)
  Tensor mask;           // [B, T], 1 = a real step, 0 = padding (finite values the loss leaves out)
};

class DecisionDecoder;

// Names: embed_timestep, embed_return, embed_state, embed_action, embed_ln,
// transformer.{h.i, ln_f}, predict_action.
class DecisionFlowformer : public nn::Module {
 public:
  DecisionFlowformer(const DecisionConfig& config, Generator& init_gen, DType dtype = kFloat32,
                     std::shared_ptr<Generator> dropout_gen = nullptr);
  static double parameter_count_for(const DecisionConfig& config);

  // The action predicted at every step: [B, T, action_dim] (continuous, in
  // [-1, 1]) or logits [B, T, action_dim] (discrete). Padding needs no mask:
  // the trunk is causal, so steps after a sequence's end change nothing before it.
  // Floating inputs must have the model's dtype; timesteps and discrete action
  // ids are checked to be in range.
  Tensor forward(const Tensor& returns_to_go, const Tensor& states, const Tensor& actions,
                 const Tensor& timesteps) const;
  // Mean squared error over the real steps and action values (continuous),
  // or mean cross-entropy over the real steps (discrete).
  Tensor loss(const TrajectoryBatch& batch) const;

  // A decoder for `batch` episodes played in parallel, one step at a time.
  // The model must outlive it; call eval() first unless dropout is wanted.
  DecisionDecoder start_decoding(std::int64_t batch = 1) const;

  const DecisionConfig& config() const { return config_; }

  std::shared_ptr<nn::Embedding> embed_timestep;
  std::shared_ptr<nn::Linear> embed_return, embed_state;
  std::shared_ptr<nn::Module> embed_action;  // nn::Linear, or nn::Embedding when discrete
  std::shared_ptr<nn::LayerNorm> embed_ln;
  std::shared_ptr<FlowformerTrunk> transformer;
  std::shared_ptr<nn::Linear> predict_action;

 private:
  friend class DecisionDecoder;
  // Checks shapes and dtypes; B and T from the states.
  void check_inputs(const Tensor& returns_to_go, const Tensor& states, const Tensor& actions,
                    const Tensor& timesteps) const;
  // [B, T, n_embd] embeddings of each modality, timestep embedding added.
  Tensor embed_returns(const Tensor& returns_to_go, const Tensor& time) const;
  Tensor embed_states(const Tensor& states, const Tensor& time) const;
  Tensor embed_actions(const Tensor& actions, const Tensor& time) const;
  Tensor action_output(const Tensor& hidden) const;  // the head (and tanh when continuous)

  DecisionConfig config_;
  DType dtype_;
  Tensor state_mean_, state_inverse_std_;  // [state_dim], undefined without standardisation
};

// Plays `batch` episodes step by step with the trunk's incremental decoding
// (a constant-size Flow-Attention state per layer; a key/value cache for
// softmax). Each step is act(R_t, s_t, t), which returns the predicted
// action, then record(a_t) with the action actually taken; the predictions
// equal forward() on the whole prefix.
class DecisionDecoder {
 public:
  // returns_to_go [B], state [B, state_dim], timestep int64 [B] -> the
  // predicted action [B, action_dim] (logits when discrete).
  Tensor act(const Tensor& returns_to_go, const Tensor& state, const Tensor& timestep);
  // The action taken: [B, action_dim], or int64 [B] when discrete.
  void record(const Tensor& action);
  std::int64_t steps() const { return steps_; }  // actions recorded so far

 private:
  friend class DecisionFlowformer;
  DecisionDecoder(const DecisionFlowformer& model, std::int64_t batch);
  Tensor feed(const Tensor& embedded);  // one token [B, 1, n_embd] through the trunk -> [B, 1, n_embd]

  const DecisionFlowformer* model_;
  std::int64_t batch_;
  std::int64_t steps_ = 0;
  Tensor timestep_;  // of the last act(), for record(); undefined when an act() is due
  std::vector<nn::AttentionDecodeState> layers_;
};

// A trained model rebuilt from a checkpoint of the decision program, in
// eval mode. Errors name the file.
std::unique_ptr<DecisionFlowformer> load_decision_model(const std::string& path, DType dtype = kFloat32);

}  // namespace flowgrad::models
