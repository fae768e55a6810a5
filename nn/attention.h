// The multi-head attention layer of Flowformer: Q/K/V projections, a split
// into heads, Flow-Attention (or, as a baseline, softmax attention) per head,
// the merge of the heads and an output projection with dropout.
//
// Parameter names follow the reference implementation (query_projection,
// key_projection, value_projection, out_projection), so weights move between
// flowgrad and PyTorch by name. Both attention kinds use the same parameters:
// a trained Flow model can be evaluated with softmax attention and back.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "../core/random.h"
#include "../ops/flow_attention.h"
#include "../ops/flow_attention_trace.h"
#include "layers.h"

namespace flowgrad::nn {

enum class AttentionKind {
  Flow,     // the fused linear-time Flow-Attention kernel
  Softmax,  // scaled dot-product softmax attention, quadratic in the length
};

std::string_view attention_kind_name(AttentionKind kind);  // "flow" / "softmax"
// The inverse of attention_kind_name; throws naming the text otherwise.
AttentionKind parse_attention_kind(std::string_view name);

struct FlowAttentionLayerOptions {
  std::int64_t d_model = 0;
  std::int64_t n_heads = 1;  // d_model must be a multiple of it
  bool causal = false;       // position i attends to positions j <= i
  AttentionKind kind = AttentionKind::Flow;
  double dropout = 0.0;         // on the output, after out_projection
  FlowAttentionOptions flow{};  // eps and clamp of the Flow kind (causal is set from above)
};

// What one attention layer carries from one decoding step to the next: the
// Flow-Attention recurrence (constant size and cost per step) or, for the
// softmax kind, a key/value cache whose cost per step grows with the context.
// Move-only: a copy would share the running sums.
class AttentionDecodeState {
 public:
  AttentionDecodeState(AttentionDecodeState&&) = default;
  AttentionDecodeState& operator=(AttentionDecodeState&&) = default;
  AttentionDecodeState(const AttentionDecodeState&) = delete;
  AttentionDecodeState& operator=(const AttentionDecodeState&) = delete;

  std::int64_t position() const { return position_; }  // positions consumed so far
  std::int64_t capacity() const { return capacity_; }  // most positions it accepts
  void reset();

 private:
  friend class FlowAttention;
  AttentionDecodeState() = default;

  std::int64_t capacity_ = 0, position_ = 0;
  std::optional<CausalFlowAttentionState> flow_;
  Tensor keys_, values_;  // softmax kind: [B, H, capacity, Dh], filled up to position_
};

class FlowAttention : public nn::Module {
 public:
  // dropout_gen draws the output dropout masks; when null, the layer seeds
  // its own generator from init_gen (after drawing the weights).
  FlowAttention(const FlowAttentionLayerOptions& options, Generator& init_gen,
                std::shared_ptr<Generator> dropout_gen, DType dtype = kFloat32);

  // x_q [B, L, d], x_k and x_v [B, S, d] -> [B, L, d]. Causal needs L == S.
  // key_mask [B, S] (nonzero = real key) hides padded keys; query_mask
  // [B, L] additionally removes padded queries from the flow sums of the
  // Flow kind (their Σ_i q_i terms and the count L), so a padded sequence
  // gives exactly the result of its unpadded version. Rows of padded
  // queries are unspecified. Masks are for normal (non-causal) attention.
  Tensor forward(const Tensor& x_q, const Tensor& x_k, const Tensor& x_v, const Tensor& key_mask = Tensor(),
                 const Tensor& query_mask = Tensor()) const;
  // Self-attention; `mask` [B, T] marks the real tokens (keys and queries).
  Tensor forward(const Tensor& x, const Tensor& mask = Tensor()) const;

  // For inspection: the Flow-Attention of self-attention on x [B, T, d]
  // composed from primitive ops, every intermediate per head (after the
  // projections, before the head merge and out_projection), and through
  // trace.attention_matrix() the implicit T×T matrix. Flow kind only.
  FlowAttentionTrace trace(const Tensor& x) const;
  // Incremental causal decoding, inference only (no autograd): x_t [B, 1, d]
  // is the next position; returns its output row [B, 1, d], equal to that
  // row of forward() on the whole sequence. The state comes from
  // make_decode_state (any kind) or is a CausalFlowAttentionState built with
  // this layer's sizes (Flow kind).
  Tensor step(const Tensor& x_t, AttentionDecodeState& state) const;
  Tensor step(const Tensor& x_t, CausalFlowAttentionState& state) const;
  // A fresh decoding state for `batch` sequences of at most `capacity`
  // positions (the Flow kind's state does not depend on the capacity).
  AttentionDecodeState make_decode_state(std::int64_t batch, std::int64_t capacity) const;

  const FlowAttentionLayerOptions& options() const { return options_; }
  std::int64_t head_dim() const { return options_.d_model / options_.n_heads; }

  std::shared_ptr<nn::Linear> query_projection, key_projection, value_projection, out_projection;
  std::shared_ptr<nn::Dropout> dropout;

 private:
  // Attention on projected inputs q [B, L, d], k and v [B, S, d] -> [B, L, d]
  // (heads merged, before out_projection).
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask) const;
  Tensor attend_each_element(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                             const Tensor& query_mask) const;
  Tensor split_heads(const Tensor& x) const;  // [B, T, d] -> [B, H, T, Dh]
  Tensor merge_heads(const Tensor& x) const;  // [B, H, T, Dh] -> [B, T, d]
  void check_step_input(const Tensor& x_t, std::int64_t batch) const;

  FlowAttentionLayerOptions options_;
  DType dtype_;
};

}  // namespace flowgrad::nn
