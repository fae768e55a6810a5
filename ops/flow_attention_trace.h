// Flow-Attention composed from primitive differentiable ops, with every
// named intermediate kept as a tensor of the autograd graph.
//
// Two uses: (1) studying the gradients — after trace.out.backward(g), each
// intermediate's .grad() is ∂ℓ/∂(intermediate), and hooks on them can block
// or rescale one path (e.g. the allocation path) to see what it contributes;
// (2) testing — it shares no code with the fused kernels of
// ops/flow_attention.cpp, so agreement of the two checks both. Its causal
// form materialises the L×D×M prefix states as the reference does: it is
// for inspection and small inputs, not for speed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "flow_attention.h"

namespace flowgrad {

struct FlowAttentionTrace {
  Tensor q_features, k_features;  // σ(Q) [B, H, L, D], σ(K) [B, H, S, D]
  Tensor sink_incoming;           // I  [B, H, L]
  Tensor source_outgoing;         // O  [B, H, S]
  Tensor conserved_sink;          // Ĩ  [B, H, L]
  Tensor conserved_source;        // Õ  [B, H, S], after the clamp
  Tensor sink_allocation;         // A  [B, H, L]
  Tensor source_competition;      // C  [B, H, S]
  Tensor out;                     // [B, H, L, M]
  bool causal = false;

  // For inspection of small inputs: the L×S attention matrix [B, H, L, S]
  // that Flow-Attention applies implicitly (out = matrix · values),
  // materialised; entry (i, j) is
  //   A_i · I_i · (q_i · k_j) · C_j                (normal)
  //   A_i · (I_i / n_i) · (q_i · k_j) · C_j, j ≤ i  (causal; 0 above the diagonal)
  // Padded keys have C_j = 0, so their columns are 0. O(L·S) memory.
  Tensor attention_matrix() const;

  // (name, tensor) in forward order, for printing and saving.
  std::vector<std::pair<std::string, Tensor>> named() const;
};

// Same arguments and result (trace.out) as flow_attention(). Every
// intermediate that depends on an input requiring grad retains its gradient.
FlowAttentionTrace flow_attention_trace(const Tensor& queries, const Tensor& keys,
                                        const Tensor& values,
                                        const FlowAttentionOptions& options = {},
                                        const Tensor& key_padding_mask = Tensor());

}  // namespace flowgrad
