// Flowformer models: the GPT-style causal language model of the reference
// implementation (FlowformerLM), with incremental generation at constant
// cost per token, and a non-causal encoder with a classification head
// (FlowformerEncoder) for tokens or already-embedded inputs such as patches.
//
// Parameter names match the reference PyTorch state_dict exactly
// (transformer.wte.weight, transformer.h.0.attn.query_projection.weight, ...,
// lm_head.weight), so checkpoints move between the two by name.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/random.h"
#include "../nn/layers.h"
#include "../nn/attention.h"

namespace flowgrad::models {

struct FlowformerConfig {
  std::int64_t vocab_size = 0;  // token ids in [0, vocab_size); 0 = no token embedding (encoder on features)
  std::int64_t block_size = 128;  // longest sequence: rows of the position embedding
  std::int64_t n_layer = 6;
  std::int64_t n_head = 6;
  std::int64_t n_embd = 192;  // a multiple of n_head
  double dropout = 0.1;
  bool causal = true;
  nn::AttentionKind attention = nn::AttentionKind::Flow;

  // The character-level configuration "mini" of the spec.
  static FlowformerConfig mini(std::int64_t vocab_size);

  // Throws a flowgrad::Error "[FlowformerConfig] ..." naming the bad field
  // (sizes must also give weight matrices within kMaxTensorElements).
  void validate() const;
  // Parameters of the trunk (embeddings, blocks, final LayerNorm) with
  // `positions` rows of position embedding. A double, so that it can be
  // computed for any sizes (from flags or files) before anything is built.
  double trunk_parameter_count(std::int64_t positions) const;
  // Model FLOPs of one training step (forward + backward) per token of a
  // sequence of `length` tokens, the numerator of model FLOPs utilisation:
  //   6·N + n_layer·A,  N = n_layer·12·d² + d·vocab_size (the weight
  //   matrices; embeddings are lookups, biases and norms are O(d)),
  //   A = 12·d·(d / n_head) for Flow-Attention (per head, k vᵀ into the
  //   state and q·state, 2·Dh² each, forward; backward twice that),
  //   A = 12·length·d for softmax (Q Kᵀ and A V over the whole length,
  //   as PaLM counts it; the causal half is not subtracted).
  double training_flops_per_token(std::int64_t length) const;
  // A JSON object with one key per field, for a checkpoint's metadata:
  //   {"vocab_size": 65, "block_size": 128, ..., "attention": "flow"}
  // from_json reads it back (unknown keys, repeated keys and values of the
  // wrong type throw, missing keys keep their defaults) and validates.
  std::string to_json() const;
  static FlowformerConfig from_json(const std::string& text);

  bool operator==(const FlowformerConfig&) const = default;
};

// Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class FlowformerBlock : public nn::Module {
 public:
  FlowformerBlock(const FlowformerConfig& config, Generator& init_gen, std::shared_ptr<Generator> dropout_gen,
                  DType dtype = kFloat32);
  // x [B, T, n_embd]; mask [B, T] (nonzero = real token, non-causal only).
  Tensor forward(const Tensor& x, const Tensor& mask = Tensor()) const;
  // One position of incremental causal decoding (no autograd).
  Tensor step(const Tensor& x_t, nn::AttentionDecodeState& state) const;

  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<nn::FlowAttention> attn;
  std::shared_ptr<nn::MLP> mlp;
};

// The blocks, registered as "0", "1", ... (PyTorch's ModuleList naming).
class FlowformerBlocks : public nn::Module {
 public:
  void append(std::shared_ptr<FlowformerBlock> block);
  const std::vector<std::shared_ptr<FlowformerBlock>>& blocks() const { return blocks_; }

 private:
  std::vector<std::shared_ptr<FlowformerBlock>> blocks_;
};

// The "transformer" sub-module: embeddings, blocks, final LayerNorm. wte is
// null when vocab_size is 0 (inputs arrive embedded), wpe when positions is 0
// (the caller adds its own, e.g. the decision model's timestep embedding).
class FlowformerTrunk : public nn::Module {
 public:
  FlowformerTrunk(const FlowformerConfig& config, std::int64_t positions, Generator& init_gen,
                  std::shared_ptr<Generator> dropout_gen, DType dtype);
  // dropout(x + wpe[0..T)) (or dropout(x) without wpe), the blocks, ln_f:
  // x [B, T, n_embd] -> [B, T, n_embd].
  Tensor forward_embedded(const Tensor& x, const Tensor& mask = Tensor()) const;
  // For inspection: the same pass (no mask), returning each block's
  // attention trace (see FlowAttention::trace), first block first.
  std::vector<FlowAttentionTrace> attention_traces(const Tensor& x) const;

  std::shared_ptr<nn::Embedding> wte, wpe;
  std::shared_ptr<nn::Dropout> drop;
  std::shared_ptr<FlowformerBlocks> h;
  std::shared_ptr<nn::LayerNorm> ln_f;

 private:
  Tensor add_positions(const Tensor& x) const;  // dropout(x + wpe[0..T))
};

struct SamplingOptions {
  double temperature = 1.0;  // logits are divided by it; must be positive unless greedy
  std::int64_t top_k = 0;    // keep the k most likely tokens (ties at the k-th kept); 0 = all
  bool greedy = false;       // take the arg-max (the first one on ties); ignores the rest

  void validate() const;  // throws "[sample_token] ..." naming a bad temperature or top_k
};

// Picks a token from a row of logits [vocab]: arg-max when greedy, else a
// draw from softmax(logits / temperature) restricted to the top k.
std::int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& rng);

class IncrementalDecoder;

class FlowformerLM : public nn::Module {
 public:
  // Weights are drawn from init_gen; dropout masks from dropout_gen, or,
  // when it is null, from a generator seeded by init_gen after the weights.
  FlowformerLM(const FlowformerConfig& config, Generator& init_gen, DType dtype = kFloat32,
               std::shared_ptr<Generator> dropout_gen = nullptr);
  // parameter_count() of a model with this configuration, without building it.
  static double parameter_count_for(const FlowformerConfig& config);

  // tokens int64 [B, T], T <= block_size -> logits [B, T, vocab_size].
  Tensor forward(const Tensor& tokens) const;
  // Mean cross-entropy of forward(tokens) against targets [B, T] (int64;
  // ignore_index -100 marks positions that do not count).
  Tensor loss(const Tensor& tokens, const Tensor& targets) const;

  // A decoder for `batch` sequences fed one token at a time. Causal only.
  // The model must outlive it; call eval() first unless dropout is wanted.
  IncrementalDecoder start_decoding(std::int64_t batch = 1) const;
  // prompt (at least one token) followed by n_new sampled tokens. Each new
  // token costs one decoding step, whatever the context length. The position
  // embedding bounds the context: prompt.size() + n_new − 1 positions must
  // fit into block_size, otherwise this throws before generating anything.
  std::vector<std::int64_t> generate(const std::vector<std::int64_t>& prompt, std::int64_t n_new,
                                     const SamplingOptions& sampling, Generator& rng) const;

  const FlowformerConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  const std::shared_ptr<Generator>& dropout_generator() const { return dropout_gen_; }

  std::shared_ptr<FlowformerTrunk> transformer;
  std::shared_ptr<nn::Linear> lm_head;

 private:
  FlowformerConfig config_;
  DType dtype_;
  std::shared_ptr<Generator> dropout_gen_;
};

// Incremental causal decoding of a FlowformerLM: next_logits feeds the next
// position of every sequence and returns its logits, equal to that row of
// forward() on the whole prefix. Each layer keeps a constant-size
// Flow-Attention state (a key/value cache for the softmax kind), so a step
// costs the same at position 5 as at position 5000 (for Flow).
class IncrementalDecoder {
 public:
  // tokens int64 [B] -> logits [B, vocab_size].
  Tensor next_logits(const Tensor& tokens);
  // batch 1: one token id -> logits [vocab_size].
  Tensor next_logits(std::int64_t token);
  std::int64_t position() const { return position_; }  // tokens consumed so far
  std::int64_t batch() const { return batch_; }
  void reset();

 private:
  friend class FlowformerLM;
  IncrementalDecoder(const FlowformerLM& model, std::int64_t batch);

  const FlowformerLM* model_;
  std::int64_t batch_;
  std::int64_t position_ = 0;
  std::vector<nn::AttentionDecodeState> layers_;
};

enum class Pooling {
  Mean,        // mean over the real tokens
  ClassToken,  // a learned token prepended at position 0; its final state
};

// A non-causal Flowformer encoder with a classification head. Names:
// transformer.{wte (when vocab_size > 0), wpe, h.i, ln_f}, cls_token (with
// class-token pooling, [1, 1, n_embd]), head.weight / head.bias.
class FlowformerEncoder : public nn::Module {
 public:
  FlowformerEncoder(const FlowformerConfig& config, std::int64_t num_classes, Pooling pooling,
                    Generator& init_gen, DType dtype = kFloat32,
                    std::shared_ptr<Generator> dropout_gen = nullptr);
  static double parameter_count_for(const FlowformerConfig& config, std::int64_t num_classes, Pooling pooling);

  // tokens int64 [B, T] -> class logits [B, num_classes]. mask [B, T]
  // (nonzero = real token) excludes padding from attention and pooling.
  Tensor forward(const Tensor& tokens, const Tensor& mask = Tensor()) const;
  // The same for inputs already embedded, x [B, T, n_embd] (e.g. patches).
  Tensor forward_embedded(const Tensor& x, const Tensor& mask = Tensor()) const;
  // The pooled representation [B, n_embd] that the head classifies.
  Tensor features_embedded(const Tensor& x, const Tensor& mask = Tensor()) const;
  // Every block's attention trace for embedded inputs x [B, T, n_embd]
  // (with class-token pooling, token 0 of each trace is the class token).
  std::vector<FlowAttentionTrace> attention_traces(const Tensor& x) const;

  const FlowformerConfig& config() const { return config_; }
  Pooling pooling() const { return pooling_; }

  std::shared_ptr<FlowformerTrunk> transformer;
  Tensor cls_token;  // undefined with mean pooling
  std::shared_ptr<nn::Linear> head;

 private:
  void check_embedded(const Tensor& x) const;  // [B, T, n_embd] with 1 <= T <= block_size
  FlowformerConfig config_;
  Pooling pooling_;
  DType dtype_;
};

}  // namespace flowgrad::models
