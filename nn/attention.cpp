#include "attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "../autograd/grad_mode.h"
#include "../core/profile.h"
#include "../ops/elementwise.h"
#include "../ops/embedding.h"
#include "../ops/matmul.h"
#include "../ops/shape_ops.h"
#include "../ops/softmax.h"

namespace flowgrad::nn {

std::string_view attention_kind_name(AttentionKind kind) {
  return kind == AttentionKind::Flow ? "flow" : "softmax";
}

AttentionKind parse_attention_kind(std::string_view name) {
  if (name == "flow") return AttentionKind::Flow;
  if (name == "softmax") return AttentionKind::Softmax;
  fail("AttentionKind", "unknown attention kind \"", name.substr(0, 40), "\" (expected \"flow\" or \"softmax\")");
}

void AttentionDecodeState::reset() {
  if (flow_) flow_->reset();
  position_ = 0;  // the softmax cache is overwritten from position 0 on
}

namespace {

const char* kOp = "FlowAttention";

// The real positions of each batch element of a [B, T] mask (nonzero = real).
struct MaskRows {
  std::vector<std::vector<std::int64_t>> real;  // per batch element, ascending
  bool all_real = true;
};

MaskRows read_mask(const Tensor& mask, std::int64_t B, std::int64_t T, const char* name) {
  if (mask.shape() != Shape{B, T})
    fail(kOp, name, " of shape ", shape_str(mask.shape()), " does not match [B, T] = ", shape_str({B, T}));
  const std::vector<double> flags = mask.to_vector<double>();
  MaskRows rows;
  rows.real.resize(B);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t)
      if (flags[b * T + t] != 0) rows.real[b].push_back(t);
    if (rows.real[b].empty()) fail(kOp, name, " marks every position of batch element ", b, " as padding");
    if (static_cast<std::int64_t>(rows.real[b].size()) != T) rows.all_real = false;
  }
  return rows;
}

Tensor index_tensor(const std::vector<std::int64_t>& indices) { return from_vector(indices); }

// Rows `real` of x [T, d] -> [n, d] (embedding is a differentiable gather).
Tensor gather_rows(const Tensor& x, const std::vector<std::int64_t>& real) {
  if (static_cast<std::int64_t>(real.size()) == x.size(0)) return x;
  return embedding(x, index_tensor(real));
}

// The inverse of gather_rows: rows [n, d] back at positions `real` of a
// [T, d] result, zero elsewhere. A gather from [0; rows] keeps it linear in T
// and differentiable.
Tensor scatter_rows(const Tensor& rows, const std::vector<std::int64_t>& real, std::int64_t T) {
  if (static_cast<std::int64_t>(real.size()) == T) return rows;
  std::vector<std::int64_t> source(static_cast<std::size_t>(T), 0);
  for (std::size_t r = 0; r < real.size(); ++r)
    source[static_cast<std::size_t>(real[r])] = static_cast<std::int64_t>(r) + 1;
  Tensor padded = concat({zeros({1, rows.size(1)}, rows.dtype()), rows}, 0);
  return embedding(padded, index_tensor(source));
}

// An additive mask: 0 where attention is allowed, −inf where it is not, so
// masked scores get exactly zero weight after the softmax.
Tensor causal_bias(std::int64_t T, DType dtype) {
  std::vector<double> bias(static_cast<std::size_t>(T * T), 0.0);
  for (std::int64_t i = 0; i < T; ++i)
    for (std::int64_t j = i + 1; j < T; ++j) bias[i * T + j] = -std::numeric_limits<double>::infinity();
  return from_vector(bias, {T, T}).to(dtype);
}

Tensor key_padding_bias(const MaskRows& keys, std::int64_t S, DType dtype) {
  const std::int64_t B = static_cast<std::int64_t>(keys.real.size());
  std::vector<double> bias(static_cast<std::size_t>(B * S), -std::numeric_limits<double>::infinity());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j : keys.real[b]) bias[b * S + j] = 0.0;
  return from_vector(bias, {B, 1, 1, S}).to(dtype);
}

}  // namespace

FlowAttention::FlowAttention(const FlowAttentionLayerOptions& options, Generator& init_gen,
                             std::shared_ptr<Generator> dropout_gen, DType dtype)
    : options_(options), dtype_(dtype) {
  if (options.d_model <= 0 || options.n_heads <= 0)
    fail(kOp, "d_model and n_heads must be positive, got d_model=", options.d_model,
         " n_heads=", options.n_heads);
  if (options.d_model % options.n_heads != 0)
    fail(kOp, "d_model=", options.d_model, " is not a multiple of n_heads=", options.n_heads);
  if (!(options.dropout >= 0.0 && options.dropout < 1.0))
    fail(kOp, "dropout must be in [0, 1), got ", options.dropout);
  options_.flow.causal = options.causal;
  const std::int64_t d = options.d_model;
  query_projection =
      register_module("query_projection", std::make_shared<nn::Linear>(d, d, init_gen, nn::LinearOptions{.dtype = dtype}));
  key_projection =
      register_module("key_projection", std::make_shared<nn::Linear>(d, d, init_gen, nn::LinearOptions{.dtype = dtype}));
  value_projection =
      register_module("value_projection", std::make_shared<nn::Linear>(d, d, init_gen, nn::LinearOptions{.dtype = dtype}));
  out_projection =
      register_module("out_projection", std::make_shared<nn::Linear>(d, d, init_gen, nn::LinearOptions{.dtype = dtype}));
  // Without a shared generator the layer draws its own seed, after the
  // weights, so the layer still follows from init_gen alone.
  if (!dropout_gen) dropout_gen = std::make_shared<Generator>(init_gen.next_u64());
  dropout =
      register_module("dropout", std::make_shared<nn::Dropout>(options.dropout, std::move(dropout_gen)));
}

Tensor FlowAttention::split_heads(const Tensor& x) const {
  return x.reshape({x.size(0), x.size(1), options_.n_heads, head_dim()}).permute({0, 2, 1, 3});
}

Tensor FlowAttention::merge_heads(const Tensor& x) const {
  return x.permute({0, 2, 1, 3}).reshape({x.size(0), x.size(2), options_.d_model});
}

Tensor FlowAttention::forward(const Tensor& x_q, const Tensor& x_k, const Tensor& x_v, const Tensor& key_mask,
                              const Tensor& query_mask) const {
  if (!x_q.defined() || !x_k.defined() || !x_v.defined()) fail(kOp, "inputs must be defined tensors");
  const std::int64_t d = options_.d_model;
  for (const Tensor* x : {&x_q, &x_k, &x_v})
    if (x->dim() != 3 || x->size(2) != d)
      fail(kOp, "expected inputs [B, T, d_model=", d, "]; got x_q ", shape_str(x_q.shape()), ", x_k ",
           shape_str(x_k.shape()), ", x_v ", shape_str(x_v.shape()));
  const std::int64_t B = x_q.size(0), L = x_q.size(1), S = x_k.size(1);
  if (x_k.size(0) != B || x_v.size(0) != B || x_v.size(1) != S)
    fail(kOp, "x_k and x_v must be [B, S, d] with the batch of x_q; got x_q ", shape_str(x_q.shape()),
         ", x_k ", shape_str(x_k.shape()), ", x_v ", shape_str(x_v.shape()));
  if (L == 0 || S == 0)
    fail(kOp, "empty sequence: x_q ", shape_str(x_q.shape()), ", x_k ", shape_str(x_k.shape()));
  if (options_.causal && L != S)
    fail(kOp, "causal attention needs as many queries as keys; got L=", L, " and S=", S);
  if (options_.causal && (key_mask.defined() || query_mask.defined()))
    fail(kOp,
         "padding masks are for normal attention only (a causal sequence is padded at its end, "
         "which no earlier position sees)");

  profile::Scope region("attn.projections");
  std::optional<MaskRows> keys, queries;
  if (key_mask.defined()) keys = read_mask(key_mask, B, S, "key_mask");
  if (query_mask.defined()) queries = read_mask(query_mask, B, L, "query_mask");

  const Tensor q = query_projection->forward(x_q);
  const Tensor k = key_projection->forward(x_k);
  const Tensor v = value_projection->forward(x_v);
  Tensor heads;
  if (options_.kind == AttentionKind::Flow && queries && !queries->all_real) {
    // Padded queries enter the flow sums (Σ_i q_i, the count L): only a
    // per-element pass over the real rows keeps them out.
    heads = attend_each_element(q, k, v, key_mask, query_mask);
  } else {
    // Softmax rows are independent of other queries: the query mask changes
    // no real row.
    heads = attend(q, k, v, keys && !keys->all_real ? key_mask : Tensor());
  }
  return dropout->forward(out_projection->forward(heads));
}

Tensor FlowAttention::forward(const Tensor& x, const Tensor& mask) const {
  return forward(x, x, x, mask, mask);
}

FlowAttentionTrace FlowAttention::trace(const Tensor& x) const {
  if (options_.kind != AttentionKind::Flow)
    fail(kOp, "trace() shows Flow-Attention; this layer computes ", attention_kind_name(options_.kind),
         " attention");
  if (!x.defined() || x.dim() != 3 || x.size(2) != options_.d_model)
    fail(kOp, "trace expects x [B, T, d_model=", options_.d_model, "], got ",
         x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  return flow_attention_trace(split_heads(query_projection->forward(x)), split_heads(key_projection->forward(x)),
                              split_heads(value_projection->forward(x)), options_.flow);
}

Tensor FlowAttention::attend(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& key_mask) const {
  profile::Scope region("attn.core");
  const Tensor qh = split_heads(q), kh = split_heads(k), vh = split_heads(v);
  if (options_.kind == AttentionKind::Flow)
    return merge_heads(flow_attention(qh, kh, vh, options_.flow, key_mask));

  // softmax(Q Kᵀ / sqrt(Dh) + bias) V, the L×S matrix materialised.
  const std::int64_t L = q.size(1), S = k.size(1);
  Tensor scores = matmul(qh, kh.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(head_dim())));
  if (options_.causal) scores = scores + causal_bias(L, scores.dtype());
  if (key_mask.defined())
    scores = scores + key_padding_bias(read_mask(key_mask, q.size(0), S, "key_mask"), S, scores.dtype());
  return merge_heads(matmul(softmax(scores, -1), vh));
}

Tensor FlowAttention::attend_each_element(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const Tensor& key_mask, const Tensor& query_mask) const {
  const std::int64_t B = q.size(0), L = q.size(1), S = k.size(1);
  const MaskRows queries = read_mask(query_mask, B, L, "query_mask");
  MaskRows keys;
  if (key_mask.defined()) {
    keys = read_mask(key_mask, B, S, "key_mask");
  } else {
    keys.real.assign(B, std::vector<std::int64_t>());
    for (auto& real : keys.real)
      for (std::int64_t j = 0; j < S; ++j) real.push_back(j);
  }
  TensorList rows;
  for (std::int64_t b = 0; b < B; ++b) {
    const Tensor qb = gather_rows(q.select(0, b), queries.real[b]).unsqueeze(0);
    const Tensor kb = gather_rows(k.select(0, b), keys.real[b]).unsqueeze(0);
    const Tensor vb = gather_rows(v.select(0, b), keys.real[b]).unsqueeze(0);
    rows.push_back(scatter_rows(attend(qb, kb, vb, Tensor()).squeeze(0), queries.real[b], L));
  }
  return stack(rows, 0);
}

// ---- incremental decoding ----

AttentionDecodeState FlowAttention::make_decode_state(std::int64_t batch, std::int64_t capacity) const {
  if (!options_.causal) fail(kOp, "incremental decoding needs causal attention");
  if (batch <= 0 || capacity <= 0)
    fail(kOp, "decode state needs a positive batch and capacity, got batch=", batch, " capacity=", capacity);
  AttentionDecodeState state;
  state.capacity_ = capacity;
  if (options_.kind == AttentionKind::Flow) {
    state.flow_.emplace(batch, options_.n_heads, head_dim(), head_dim(), dtype_, options_.flow);
  } else {
    state.keys_ = zeros({batch, options_.n_heads, capacity, head_dim()}, dtype_);
    state.values_ = zeros({batch, options_.n_heads, capacity, head_dim()}, dtype_);
  }
  return state;
}

void FlowAttention::check_step_input(const Tensor& x_t, std::int64_t batch) const {
  if (!options_.causal) fail(kOp, "step() is incremental causal decoding; this layer is not causal");
  if (!x_t.defined() || x_t.dim() != 3 || x_t.size(1) != 1 || x_t.size(2) != options_.d_model ||
      (batch > 0 && x_t.size(0) != batch)) {
    const std::string got = x_t.defined() ? shape_str(x_t.shape()) : std::string("an undefined tensor");
    if (batch > 0)
      fail(kOp, "step() expects x_t [B=", batch, ", 1, d_model=", options_.d_model, "], got ", got);
    fail(kOp, "step() expects x_t [B, 1, d_model=", options_.d_model, "], got ", got);
  }
}

Tensor FlowAttention::step(const Tensor& x_t, CausalFlowAttentionState& state) const {
  if (options_.kind != AttentionKind::Flow)
    fail(kOp, "a CausalFlowAttentionState needs the flow kind; this layer uses ",
         attention_kind_name(options_.kind), " attention (use make_decode_state)");
  check_step_input(x_t, 0);
  NoGradGuard no_grad;
  const Tensor q = split_heads(query_projection->forward(x_t));
  const Tensor k = split_heads(key_projection->forward(x_t));
  const Tensor v = split_heads(value_projection->forward(x_t));
  return dropout->forward(out_projection->forward(merge_heads(state.step(q, k, v))));
}

Tensor FlowAttention::step(const Tensor& x_t, AttentionDecodeState& state) const {
  const bool flow_state = state.flow_.has_value();
  if (flow_state != (options_.kind == AttentionKind::Flow) || (!flow_state && !state.keys_.defined()))
    fail(kOp, "the decode state was not made for this layer's ", attention_kind_name(options_.kind),
         " attention");
  if (state.position_ >= state.capacity_)
    fail(kOp, "the decode state is full: it holds ", state.capacity_, " positions");
  if (flow_state) {
    Tensor out = step(x_t, *state.flow_);
    state.position_ = state.flow_->position();
    return out;
  }

  check_step_input(x_t, state.keys_.size(0));
  NoGradGuard no_grad;
  const Tensor q = split_heads(query_projection->forward(x_t));
  const std::int64_t t = state.position_;
  copy_elements(split_heads(key_projection->forward(x_t)), state.keys_.narrow(2, t, 1));
  copy_elements(split_heads(value_projection->forward(x_t)), state.values_.narrow(2, t, 1));
  const Tensor keys = state.keys_.narrow(2, 0, t + 1), values = state.values_.narrow(2, 0, t + 1);
  // The same arithmetic as attend() on row t (whose masked entries weigh 0).
  Tensor scores = matmul(q, keys.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(head_dim())));
  Tensor heads = merge_heads(matmul(softmax(scores, -1), values));
  state.position_ = t + 1;
  return dropout->forward(out_projection->forward(heads));
}

}  // namespace flowgrad::nn
