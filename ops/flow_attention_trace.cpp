// The reference arithmetic of docs/flow-attention-forward.md, line by line, in
// differentiable primitive ops (shapes [B, H, tokens, features]).
#include "flow_attention_trace.h"

#include "elementwise.h"
#include "matmul.h"
#include "reduce.h"
#include "softmax.h"

namespace flowgrad {
namespace {

constexpr std::int64_t kTokens = 2, kFeatures = 3;

// (a + ε)·(b + ε) over the feature dim.
Tensor flow_dot(const Tensor& a, const Tensor& b, double eps) {
  return sum((a + eps) * (b + eps), {kFeatures});
}

Tensor per_token(const Tensor& scalars) { return scalars.unsqueeze(-1); }

// 1 where mask != 0, else 0 (masks may hold any nonzero value for "real").
Tensor ne_zero(const Tensor& mask) {
  std::vector<double> flags = mask.to_vector<double>();
  for (double& f : flags) f = f != 0 ? 1.0 : 0.0;
  return from_vector(flags, mask.shape());
}

void trace_normal(FlowAttentionTrace& t, const Tensor& v, const FlowAttentionOptions& o,
                  const Tensor& mask) {
  const Tensor& q = t.q_features;
  const Tensor& k = t.k_features;
  const double L = static_cast<double>(q.size(kTokens));
  // Padded keys are multiplied by 0 in every sum over keys; `keys` counts the real ones.
  Tensor key_weight, keys;
  if (mask.defined()) {
    Tensor real = ne_zero(mask).to(q.dtype());
    key_weight = real.unsqueeze(1);                           // [B, 1, S]
    keys = sum(real, {1}, /*keepdim=*/true).unsqueeze(-1);    // [B, 1, 1]
  }
  auto over_keys = [&](const Tensor& x) {  // x [B, H, S, D] → Σ_j x_j  [B, H, 1, D]
    return sum(key_weight.defined() ? x * per_token(key_weight) : x, {kTokens}, true);
  };
  t.sink_incoming = reciprocal(flow_dot(q, over_keys(k), o.eps));
  t.source_outgoing = reciprocal(flow_dot(k, sum(q, {kTokens}, true), o.eps));
  t.conserved_sink = flow_dot(q, over_keys(k * per_token(t.source_outgoing)), o.eps);
  t.conserved_source = clamp(
      flow_dot(k, sum(q * per_token(t.sink_incoming), {kTokens}, true), o.eps), o.clamp_min,
      o.clamp_max);
  if (key_weight.defined()) {
    t.sink_allocation = sigmoid(t.conserved_sink * L / keys);
    Tensor e = exp(t.conserved_source) * key_weight;
    t.source_competition = e / sum(e, {-1}, true) * keys;
  } else {
    const double S = static_cast<double>(k.size(kTokens));
    t.sink_allocation = sigmoid(t.conserved_sink * (L / S));
    t.source_competition = softmax(t.conserved_source, -1) * S;
  }
  Tensor kv = matmul(k.transpose(-2, -1), v * per_token(t.source_competition));
  t.out = matmul(q * per_token(t.sink_incoming), kv) * per_token(t.sink_allocation);
}

void trace_causal(FlowAttentionTrace& t, const Tensor& v, const FlowAttentionOptions& o) {
  const Tensor& q = t.q_features;
  const Tensor& k = t.k_features;
  const std::int64_t L = q.size(kTokens);
  Tensor n = arange(1.0, static_cast<double>(L) + 1.0, 1.0, q.dtype());  // n_i = i + 1
  t.sink_incoming = reciprocal(flow_dot(q, cumsum(k, kTokens), o.eps)) * n;
  t.source_outgoing = reciprocal(flow_dot(k, cumsum(q, kTokens), o.eps)) * n;
  t.conserved_sink = flow_dot(q, cumsum(k * per_token(t.source_outgoing), kTokens), o.eps) / n;
  t.conserved_source =
      clamp(flow_dot(k, cumsum(q * per_token(t.sink_incoming), kTokens), o.eps) / n, o.clamp_min,
            o.clamp_max);
  t.sink_allocation = sigmoid(t.conserved_sink);
  Tensor e = exp(t.conserved_source);
  t.source_competition = e / cumsum(e, -1) * n;
  // The reference's causal dot product: all L prefix states k_j ⊗ (C_j v_j), L×D×M.
  Tensor weighted = v * per_token(t.source_competition);
  Tensor states = cumsum(k.unsqueeze(-1) * weighted.unsqueeze(-2), kTokens);  // [B,H,L,D,M]
  Tensor scaled_q = q * per_token(t.sink_incoming / n);
  t.out = sum(scaled_q.unsqueeze(-1) * states, {kFeatures}) * per_token(t.sink_allocation);
}

}  // namespace

Tensor FlowAttentionTrace::attention_matrix() const {
  Tensor row_scale = sink_allocation * sink_incoming;                      // [B, H, L]
  Tensor scores = matmul(q_features, k_features.transpose(-2, -1));       // q_i · k_j
  if (causal) {
    const std::int64_t L = q_features.size(kTokens);
    row_scale = row_scale / arange(1.0, static_cast<double>(L) + 1.0, 1.0, row_scale.dtype());
    std::vector<double> lower(static_cast<std::size_t>(L * L), 0.0);
    for (std::int64_t i = 0; i < L; ++i)
      for (std::int64_t j = 0; j <= i; ++j) lower[static_cast<std::size_t>(i * L + j)] = 1.0;
    scores = scores * from_vector(lower, {L, L}).to(scores.dtype());
  }
  return scores * per_token(row_scale) * source_competition.unsqueeze(-2);
}

std::vector<std::pair<std::string, Tensor>> FlowAttentionTrace::named() const {
  return {{"q_features", q_features},
          {"k_features", k_features},
          {"sink_incoming", sink_incoming},
          {"source_outgoing", source_outgoing},
          {"conserved_sink", conserved_sink},
          {"conserved_source", conserved_source},
          {"sink_allocation", sink_allocation},
          {"source_competition", source_competition},
          {"out", out}};
}

FlowAttentionTrace flow_attention_trace(const Tensor& queries, const Tensor& keys,
                                        const Tensor& values, const FlowAttentionOptions& options,
                                        const Tensor& key_padding_mask) {
  check_flow_attention_arguments(queries, keys, values, options, key_padding_mask);
  FlowAttentionTrace t;
  t.causal = options.causal;
  t.q_features = sigmoid(queries);
  t.k_features = sigmoid(keys);
  if (options.causal) {
    trace_causal(t, values, options);
  } else {
    trace_normal(t, values, options, key_padding_mask);
  }
  for (auto& [name, tensor] : t.named())
    if (tensor.requires_grad()) tensor.retain_grad();
  return t;
}

}  // namespace flowgrad
