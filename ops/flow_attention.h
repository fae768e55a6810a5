// Flow-Attention (Flowformer, Wu et al. ICML 2022) as fused ops with a
// hand-derived backward. The derivation, with the section numbers the code
// cites (§N1 ... §C4), is docs/flow-attention-gradients.md; the arithmetic is
// exactly the reference implementation's.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "../core/tensor.h"

namespace flowgrad {

struct FlowAttentionOptions {
  bool causal = false;     // position i sees keys j <= i (needs L == S)
  double eps = 1e-6;       // added inside every flow dot product
  double clamp_min = -1.0; // bounds of the conserved source flow
  double clamp_max = 1.0;
  // The order of normal attention's two products out ∝ q kᵀ W (W = C ⊙ V).
  // KeysValuesFirst forms KV = kᵀW (D×M): (L+S)·D·M multiply-adds each way,
  // linear in the length. ScoresFirst forms the L×S scores q kᵀ: L·S·(D+M),
  // fewer when sequences are shorter than heads are wide (16 patches of a
  // 32-wide head). Cheaper picks the one with fewer. The results agree to
  // rounding. Causal attention always streams KV.
  enum class Order { Cheaper, KeysValuesFirst, ScoresFirst };
  Order order = Order::Cheaper;

  FlowAttentionOptions& set_causal(bool value) { causal = value; return *this; }
  FlowAttentionOptions& set_order(Order value) { order = value; return *this; }
  FlowAttentionOptions& set_eps(double value) { eps = value; return *this; }
  FlowAttentionOptions& set_clamp(double min, double max) {
    clamp_min = min;
    clamp_max = max;
    return *this;
  }
};

// queries [B, H, L, D], keys [B, H, S, D], values [B, H, S, M] -> [B, H, L, M],
// float32 or float64. key_padding_mask (optional, normal attention only):
// [B, S], nonzero marks a real key; padded keys take part in no sum, S in the
// allocation and competition becomes the count of real keys, and they get
// zero gradient. Causal attention keeps O(L·(D+M)) memory per head (no
// L×D×M tensor), computing the prefix states chunk by chunk with GEMMs.
// Inputs whose rows (last dim) are contiguous are read in place, whatever
// their other strides: heads split from a [B, L, H·D] projection by
// reshape + permute cost no copy. The result (and each gradient) is laid out
// like the queries: for such split heads it is a permuted view of a
// [B, L, H, M] tensor, so merging the heads back is a view too; use
// contiguous() before reading its memory directly.
Tensor flow_attention(const Tensor& queries, const Tensor& keys, const Tensor& values,
                      const FlowAttentionOptions& options = {},
                      const Tensor& key_padding_mask = Tensor());

// Causal Flow-Attention as a recurrence, for generation: feeding positions
// 0, 1, 2, ... one at a time gives the rows of the causal flow_attention()
// of the whole sequence (the same flows bit for bit; the output to float
// rounding, its products summed in another order), at O(D·M) cost per position
// whatever the context length. No autograd (inference only).
class CausalFlowAttentionState {
 public:
  CausalFlowAttentionState(std::int64_t batch, std::int64_t heads, std::int64_t dim,
                           std::int64_t value_dim, DType dtype = kFloat32,
                           const FlowAttentionOptions& options = {});
  // q, k [B, H, 1, D] and v [B, H, 1, M] of the next position -> [B, H, 1, M].
  Tensor step(const Tensor& q, const Tensor& k, const Tensor& v);
  std::int64_t position() const { return position_; }  // positions consumed so far
  void reset();

 private:
  std::int64_t batch_, heads_, dim_, value_dim_;
  DType dtype_;
  FlowAttentionOptions options_;
  std::int64_t position_ = 0;
  // Per (batch, head): running sums of k, q, O·k, I·q (D each), of exp(Õ)
  // (1) and the state Σ k ⊗ C v (D×M).
  Tensor k_sum_, q_sum_, k_outgoing_, q_incoming_, exp_sum_, kv_state_;
};

// The fused kernels' own intermediates for one head, for studying the
// gradients: every quantity the kernel holds, by the symbol and section of
// docs/flow-attention-gradients.md ("I", "§N1"), forward values first, then
// the gradients ("dI") in the order the backward completes them. Values are
// float64 copies. They come from the hand-derived backward (which reads
// the flows the normal forward kept, or rebuilds the causal ones from the
// forward's features) and the forward kernel (for out),
// not from autograd. With a key padding mask the key-indexed quantities cover the
// real keys only, in order. Quantities the kernel never stores (u, y and Õ
// as values, dÕ, the causal states H and U) are absent; the causal
// per-position sums are N×D, among them the backward's running suffix sums
// γ, ρ, τ, κ, π (section 5.5 of the page).
struct FlowAttentionQuantity {
  std::string symbol, section;
  Tensor value;
};
struct FlowAttentionInspection {
  std::vector<FlowAttentionQuantity> quantities;
  // The quantity named `symbol`; throws naming it when absent.
  const Tensor& at(std::string_view symbol) const;
};
// grad_out is ∂ℓ/∂out [B, H, L, M]; (batch, head) chooses the head. The
// normal kernel shows KV and dKV unless options.order is ScoresFirst, which
// shows P and dP in their place.
FlowAttentionInspection flow_attention_inspect(const Tensor& queries, const Tensor& keys, const Tensor& values,
                                               const Tensor& grad_out, const FlowAttentionOptions& options = {},
                                               const Tensor& key_padding_mask = Tensor(), std::int64_t batch = 0,
                                               std::int64_t head = 0);

// The argument checks of flow_attention(): throws a flowgrad::Error naming
// the op and the shapes when the inputs, options or mask do not fit.
void check_flow_attention_arguments(const Tensor& queries, const Tensor& keys, const Tensor& values,
                                    const FlowAttentionOptions& options,
                                    const Tensor& key_padding_mask);

}  // namespace flowgrad
