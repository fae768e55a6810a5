#include "test_util.h"

#include <unistd.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <utility>

#include "../ops/flow_attention_trace.h"
#include "../ops/vector_math.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

struct Shapes {
  std::int64_t B, H, L, S, D, M;
};

TensorList random_inputs(const Shapes& s, Generator& gen, DType dtype = kFloat64, double scale = 1.0) {
  return {randn({s.B, s.H, s.L, s.D}, gen, dtype, 0.0, scale),
          randn({s.B, s.H, s.S, s.D}, gen, dtype, 0.0, scale),
          randn({s.B, s.H, s.S, s.M}, gen, dtype)};
}

// out and the three input gradients of `f` for a fixed random output gradient.
TensorList value_and_grads(const TensorList& inputs, const std::function<Tensor(const TensorList&)>& f,
                           std::uint64_t seed) {
  TensorList leaves;
  for (const Tensor& x : inputs) leaves.push_back(x.detach().requires_grad_());
  Tensor out = f(leaves);
  Generator gen(seed);
  out.backward(randn(out.shape(), gen, out.dtype()));
  return {out.detach(), leaves[0].grad(), leaves[1].grad(), leaves[2].grad()};
}

// out, dQ, dK and dV of two value_and_grads results agree.
void require_results_close(const TensorList& actual, const TensorList& expected, double rtol, double atol) {
  const char* names[] = {"out", "dQ", "dK", "dV"};
  for (int i = 0; i < 4; ++i) {
    INFO(names[i]);
    require_close(actual[i], expected[i], rtol, atol);
  }
}

void require_fused_matches_composed(const TensorList& inputs, const FlowAttentionOptions& options,
                                    const Tensor& mask, double rtol, double atol) {
  TensorList fused = value_and_grads(
      inputs, [&](const TensorList& in) { return flow_attention(in[0], in[1], in[2], options, mask); }, 1);
  TensorList composed = value_and_grads(
      inputs,
      [&](const TensorList& in) { return flow_attention_trace(in[0], in[1], in[2], options, mask).out; },
      1);
  require_results_close(fused, composed, rtol, atol);
}

}  // namespace

using Order = FlowAttentionOptions::Order;

TEST_CASE("fused normal Flow-Attention equals the composed one, float64, in either product order") {
  // Cheaper puts the scores first for the last two shapes (L·S·(D+M) = 42 < (L+S)·D·M = 84, 18 < 32) and KV
  // first for the others.
  const Shapes s = GENERATE(Shapes{1, 1, 5, 5, 3, 3}, Shapes{2, 3, 7, 4, 5, 2}, Shapes{1, 2, 1, 6, 4, 3},
                            Shapes{2, 1, 3, 1, 2, 4});
  const Order order = GENERATE(Order::Cheaper, Order::KeysValuesFirst, Order::ScoresFirst);
  INFO("order " << static_cast<int>(order));
  Generator gen(s.L * 100 + s.S);
  require_fused_matches_composed(random_inputs(s, gen), FlowAttentionOptions{}.set_order(order), Tensor(), 1e-11,
                                 1e-12);
}

TEST_CASE("fused Flow-Attention equals the composed one on both sides of the small-product threshold") {
  // The kernels' products of at most 16,384 multiply-adds run in their own
  // loops, larger ones in OpenBLAS. Fashion-MNIST's heads (16 × 32, both
  // orders: whole vectors of B and transposed ones packed, rows in blocks of
  // four), ragged sizes (packed and padded columns, a tail row), heads
  // whose products exceed the threshold (40 × 48 keys of 24 → 20: KV first),
  // and heads of more than one block of 256 rows in the forward's KV order.
  const DType dtype = GENERATE(kFloat64, kFloat32);
  const Shapes s = GENERATE(Shapes{2, 2, 16, 16, 32, 32}, Shapes{1, 2, 9, 10, 8, 16}, Shapes{1, 1, 13, 11, 7, 9},
                            Shapes{1, 2, 40, 48, 24, 20}, Shapes{1, 1, 300, 600, 8, 5});
  const Order order = GENERATE(Order::KeysValuesFirst, Order::ScoresFirst);
  const bool causal = GENERATE(false, true);
  if (causal && (s.L != s.S || order == Order::ScoresFirst)) return;
  INFO("dtype " << dtype_name(dtype) << " L " << s.L << " S " << s.S << " order " << static_cast<int>(order)
                << " causal " << causal);
  Generator gen(s.L * 100 + s.S);
  const bool single = dtype == kFloat32;
  require_fused_matches_composed(random_inputs(s, gen, dtype),
                                 FlowAttentionOptions{}.set_order(order).set_causal(causal), Tensor(),
                                 single ? 2e-4 : 1e-11, single ? 1e-5 : 1e-12);
}

TEST_CASE("fused causal Flow-Attention equals the composed one, float64, across chunks") {
  // Chunks of 16 rows for D, M <= 16; up to 32 rows are one chunk, 33 are 16 + 16 + 1.
  const Shapes s = GENERATE(Shapes{1, 1, 1, 1, 3, 3}, Shapes{2, 2, 9, 9, 4, 3}, Shapes{1, 1, 32, 32, 4, 4},
                            Shapes{1, 2, 33, 33, 4, 4}, Shapes{1, 1, 300, 300, 8, 5});
  Generator gen(s.L);
  require_fused_matches_composed(random_inputs(s, gen), FlowAttentionOptions{}.set_causal(true), Tensor(),
                                 1e-10, 1e-12);
}

TEST_CASE("fused Flow-Attention: gradcheck, including saturated sigmoids and an active clamp") {
  const bool causal = GENERATE(false, true);
  const double scale = GENERATE(1.0, 6.0);
  const Order order = GENERATE(Order::KeysValuesFirst, Order::ScoresFirst);  // causal streams KV either way
  Generator gen(7);
  const Shapes s = causal ? Shapes{2, 1, 6, 6, 3, 2} : Shapes{2, 1, 5, 4, 3, 2};
  TensorList inputs = random_inputs(s, gen, kFloat64, scale);
  FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal).set_order(order);
  // Tight clamp bounds so that some conserved source flows are clamped.
  options.set_clamp(-1.0, causal ? 0.4 : 2.5);
  INFO("causal " << causal << " scale " << scale << " order " << static_cast<int>(order));
  require_gradients_match(
      [&](const TensorList& in) { return flow_attention(in[0], in[1], in[2], options); }, inputs,
      GradcheckOptions{.step = 1e-6, .atol = 1e-7, .rtol = 1e-5});
}

namespace {

// max |a − e| ≤ tolerance · max |e| + floor: a relative error that near-zero
// elements cannot inflate. The floor covers gradients that are tiny because
// O(1) terms cancel (L = 1): there only rounding of those terms is left.
void require_close_to_scale(const Tensor& actual, const Tensor& expected, double tolerance) {
  const double floor = actual.dtype() == kFloat64 ? 1e-15 : 5e-7;
  REQUIRE(actual.shape() == expected.shape());
  std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double scale = 0, worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(e[i]));
    worst = std::max(worst, std::abs(a[i] - e[i]));
  }
  INFO("max abs error " << worst << " at scale " << scale);
  REQUIRE(worst <= tolerance * scale + floor);
}

std::string golden_path(const std::string& name) { return std::string(FLOWGRAD_SOURCE_DIR) + "/tests/golden/" + name; }

}  // namespace

TEST_CASE("Flow-Attention matches golden values from PyTorch") {
  const std::string file = GENERATE("normal_cross", "normal_saturated", "normal_masked", "causal_small",
                                    "causal_chunks", "causal_length_one");
  const std::string precision = GENERATE("f64", "f32");
  SafetensorsFile golden = load_safetensors_file(golden_path(file + "_" + precision + ".safetensors"));
  std::map<std::string, Tensor>& t = golden.tensors;
  const double tolerance = precision == "f64" ? 1e-10 : 1e-5;
  INFO(file << " " << precision);
  const Order order = GENERATE(Order::KeysValuesFirst, Order::ScoresFirst);
  INFO("order " << static_cast<int>(order));
  const FlowAttentionOptions options =
      FlowAttentionOptions{}.set_causal(golden.metadata.at("causal") == "1").set_order(order);
  const Tensor mask = t.count("mask") ? t.at("mask") : Tensor();
  Tensor q = t.at("q").detach().requires_grad_(), k = t.at("k").detach().requires_grad_(),
         v = t.at("v").detach().requires_grad_();
  Tensor out = flow_attention(q, k, v, options, mask);
  out.backward(t.at("grad_out"));
  require_close_to_scale(out, t.at("out"), tolerance);
  require_close_to_scale(q.grad(), t.at("grad_q"), tolerance);
  require_close_to_scale(k.grad(), t.at("grad_k"), tolerance);
  require_close_to_scale(v.grad(), t.at("grad_v"), tolerance);
}

TEST_CASE("a key padding mask gives each batch element the result of its real keys alone") {
  Generator gen(21);
  const Shapes s{3, 2, 4, 7, 3, 2};
  TensorList in = random_inputs(s, gen);
  // Real keys at arbitrary positions, a different set per batch element.
  const std::vector<std::vector<std::int64_t>> real = {{0, 1, 2, 3, 4, 5, 6}, {1, 4, 5}, {6}};
  std::vector<std::int64_t> flags(s.B * s.S, 0);
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t j : real[b]) flags[b * s.S + j] = 1;
  const Tensor mask = from_vector(flags, {s.B, s.S});

  TensorList leaves;
  for (const Tensor& x : in) leaves.push_back(x.detach().requires_grad_());
  Tensor out = flow_attention(leaves[0], leaves[1], leaves[2], {}, mask);
  Tensor grad_out = randn(out.shape(), gen, kFloat64);
  out.backward(grad_out);

  for (std::int64_t b = 0; b < s.B; ++b) {
    INFO("batch element " << b);
    // The unpadded sequence of this element alone.
    TensorList keys, values;
    for (std::int64_t j : real[b]) {
      keys.push_back(in[1].select(0, b).narrow(1, j, 1));
      values.push_back(in[2].select(0, b).narrow(1, j, 1));
    }
    Tensor q = in[0].narrow(0, b, 1).detach().requires_grad_();
    Tensor k = concat(keys, 1).unsqueeze(0).detach().requires_grad_();
    Tensor v = concat(values, 1).unsqueeze(0).detach().requires_grad_();
    Tensor alone = flow_attention(q, k, v);
    alone.backward(grad_out.narrow(0, b, 1));
    require_close(out.narrow(0, b, 1), alone, 1e-13, 1e-14);
    require_close(leaves[0].grad().narrow(0, b, 1), q.grad(), 1e-12, 1e-14);
    for (std::int64_t j = 0, r = 0; j < s.S; ++j) {
      Tensor dk = leaves[1].grad().select(0, b).narrow(1, j, 1);
      Tensor dv = leaves[2].grad().select(0, b).narrow(1, j, 1);
      if (r < static_cast<std::int64_t>(real[b].size()) && real[b][r] == j) {
        require_close(dk, k.grad().select(0, 0).narrow(1, r, 1), 1e-12, 1e-14);
        require_close(dv, v.grad().select(0, 0).narrow(1, r, 1), 1e-12, 1e-14);
        ++r;
      } else {
        require_values(dk.flatten(), std::vector<double>(dk.numel(), 0.0), 0.0);
        require_values(dv.flatten(), std::vector<double>(dv.numel(), 0.0), 0.0);
      }
    }
  }
  // The composed form agrees, mask included (float masks work too), in
  // both product orders (the scores of the compact keys, or KV).
  for (const Order order : {Order::KeysValuesFirst, Order::ScoresFirst})
    require_fused_matches_composed(in, FlowAttentionOptions{}.set_order(order), mask.to(kFloat32), 1e-11, 1e-13);
}

TEST_CASE("many heads of growing size share each thread's scratch block, at 1 and 2 threads, in both orders") {
  // 48 heads: one run of heads per thread at 1 thread, chunks of 3 at 2.
  // Batch element b has b % 9 + 1 real keys, so heads grow within a run
  // and their buffers outgrow the block it keeps, which must then grow.
  Generator gen(31);
  const Shapes s{12, 4, 5, 9, 3, 2};
  const TensorList in = random_inputs(s, gen);
  std::vector<std::int64_t> flags(s.B * s.S, 0);
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t j = 0; j <= b % 9; ++j) flags[b * s.S + (j * 4 + b) % s.S] = 1;
  const Tensor mask = from_vector(flags, {s.B, s.S});
  struct ThreadsRestored {
    int original = get_num_threads();
    ~ThreadsRestored() { set_num_threads(original); }
  } restore;
  for (const Order order : {Order::KeysValuesFirst, Order::ScoresFirst}) {
    INFO("order " << static_cast<int>(order));
    const auto options = FlowAttentionOptions{}.set_order(order);
    TensorList one_thread;
    for (const int threads : {1, 2}) {
      INFO("threads " << threads);
      set_num_threads(threads);
      require_fused_matches_composed(in, options, mask, 1e-11, 1e-13);
      const TensorList fused = value_and_grads(
          in, [&](const TensorList& x) { return flow_attention(x[0], x[1], x[2], options, mask); }, 1);
      if (threads == 1) {
        one_thread = fused;
        continue;
      }
      // Each head is computed whole by one task: the thread count changes no bit.
      require_results_close(fused, one_thread, 0, 0);
    }
  }
}

TEST_CASE("Flow-Attention reads heads split by a view and lays results out like them") {
  // Heads split from [B, T, H·D] projections are strided views; the kernels
  // read them in place and write the output and gradients with the heads of
  // a position side by side, so merging them back is a view. The numbers are
  // those of contiguous inputs, bit for bit.
  const bool causal = GENERATE(false, true);
  const bool masked = GENERATE(false, true);
  if (causal && masked) return;  // masks are for normal attention
  const DType dtype = GENERATE(kFloat32, kFloat64);
  INFO((causal ? "causal" : "normal") << (masked ? ", masked" : "") << ", " << dtype_name(dtype));
  const std::int64_t B = 2, T = 40, H = 3, D = 4;  // T > 2·16: several causal chunks
  Generator gen(5);
  const TensorList projections = {randn({B, T, H * D}, gen, dtype), randn({B, T, H * D}, gen, dtype),
                                  randn({B, T, H * D}, gen, dtype)};
  std::vector<std::int64_t> flags(B * T, 1);
  std::fill_n(flags.begin() + T + 3, 5, 0);  // batch element 1 has padded keys 3..7
  const Tensor mask = masked ? from_vector(flags, {B, T}) : Tensor();
  const FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal);
  auto split = [&](const Tensor& x) { return x.reshape({B, T, H, D}).permute({0, 2, 1, 3}); };
  auto attend = [&](bool copy_first) {
    return [&, copy_first](const TensorList& in) {
      auto heads = [&](const Tensor& x) { return copy_first ? split(x).contiguous() : split(x); };
      const Tensor out = flow_attention(heads(in[0]), heads(in[1]), heads(in[2]), options, mask);
      if (!copy_first) {
        REQUIRE(out.permute({0, 2, 1, 3}).is_contiguous());  // merging the heads is a view
      } else {
        REQUIRE(out.is_contiguous());
      }
      return out.permute({0, 2, 1, 3}).reshape({B, T, H * D});
    };
  };
  const TensorList in_place = value_and_grads(projections, attend(false), 3);
  const TensorList copied = value_and_grads(projections, attend(true), 3);
  require_results_close(in_place, copied, 0.0, 0.0);

  // Rows that are not contiguous (last stride ≠ 1) are copied first: same numbers.
  const Tensor q_columns = randn({B, H, D, T}, gen, dtype), q_rows = q_columns.transpose(2, 3);
  const Tensor k = split(projections[1]), v = split(projections[2]);
  require_close(flow_attention(q_rows, k, v, options, mask), flow_attention(q_rows.contiguous(), k, v, options, mask),
                0.0, 0.0);
}

TEST_CASE("Flow-Attention takes rows that share memory, as an expand along the sequence makes") {
  // A view can put rows closer than their width (expand: 0 apart), which
  // BLAS cannot take as a matrix (its leading dimension is at least the
  // width): such inputs are copied first, and give a copy's numbers.
  const bool causal = GENERATE(false, true);
  INFO((causal ? "causal" : "normal"));
  const std::int64_t B = 2, H = 2, T = 40, D = 4, M = 3;  // T > 2·16: several causal chunks
  Generator gen(8);
  const TensorList leaves = {randn({B, H, T, D}, gen), randn({B, H, T, D}, gen), randn({B, H, 1, M}, gen)};
  const FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal);
  auto attend = [&](bool copy_first) {
    return [&, copy_first](const TensorList& in) {
      const Tensor v = in[2].expand({B, H, T, M});
      return flow_attention(in[0], in[1], copy_first ? v.contiguous() : v, options);
    };
  };
  const TensorList shared = value_and_grads(leaves, attend(false), 3);
  const TensorList copied = value_and_grads(leaves, attend(true), 3);
  require_results_close(shared, copied, 0.0, 0.0);
}

TEST_CASE("the clamp of the conserved source flow is exercised and blocks gradients") {
  const bool causal = GENERATE(false, true);
  Generator gen(5);
  TensorList in = random_inputs({1, 2, 8, 8, 3, 2}, gen, kFloat64, 2.0);
  // Put the upper bound at the median of the unclamped flows: half are clamped.
  FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal).set_clamp(-1e9, 1e9);
  std::vector<double> raw = flow_attention_trace(in[0], in[1], in[2], options).conserved_source.to_vector<double>();
  std::nth_element(raw.begin(), raw.begin() + raw.size() / 2, raw.end());
  const double bound = raw[raw.size() / 2] + 1e-4;
  options.set_clamp(-1e9, bound);
  std::vector<double> source = flow_attention_trace(in[0], in[1], in[2], options).conserved_source.to_vector<double>();
  const auto clamped = std::count(source.begin(), source.end(), bound);
  INFO("causal " << causal << ", " << clamped << " of " << source.size() << " clamped");
  REQUIRE(clamped > 0);
  REQUIRE(clamped < static_cast<std::ptrdiff_t>(source.size()));
  require_fused_matches_composed(in, options, Tensor(), 1e-11, 1e-13);
  require_gradients_match([&](const TensorList& x) { return flow_attention(x[0], x[1], x[2], options); }, in);
}

TEST_CASE("float32 Flow-Attention agrees with float64") {
  Generator gen(8);
  const bool causal = GENERATE(false, true);
  TensorList in = random_inputs({2, 2, 200, 200, 16, 16}, gen);
  FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal);
  TensorList in32;
  for (const Tensor& x : in) in32.push_back(x.to(kFloat32));
  TensorList f64 = value_and_grads(in, [&](const TensorList& x) { return flow_attention(x[0], x[1], x[2], options); }, 3);
  TensorList f32 = value_and_grads(in32, [&](const TensorList& x) { return flow_attention(x[0], x[1], x[2], options); }, 3);
  for (int i = 0; i < 4; ++i) require_close_to_scale(f32[i], f64[i], 2e-5);
}

TEST_CASE("causal Flow-Attention at L = 65,536 runs in memory linear in L") {
  const std::int64_t L = 65536, D = 64;
  Generator gen(1);
  Tensor q = randn({1, 1, L, D}, gen), k = randn({1, 1, L, D}, gen), v = randn({1, 1, L, D}, gen);
  const std::size_t input_bytes = 3 * static_cast<std::size_t>(L * D) * sizeof(float);
  const std::size_t before = memory_stats().current_bytes;
  reset_peak_memory();
  Tensor out = flow_attention(q, k, v, FlowAttentionOptions{}.set_causal(true));
  const std::size_t peak_extra = memory_stats().peak_bytes - before;
  INFO("peak extra bytes " << peak_extra << " for inputs of " << input_bytes << " bytes");
  // The reference's L×D×M prefix tensor alone would be L·D·M·4 bytes = 1 GiB.
  REQUIRE(peak_extra <= 2 * input_bytes);
  REQUIRE(out.shape() == Shape{1, 1, L, D});
  for (float x : out.narrow(2, L - 5, 5).to_vector<float>()) REQUIRE(std::isfinite(x));
}

TEST_CASE("Flow-Attention keeps σ(Q) and σ(K) for its backward, in place of Q and K, and the normal flows") {
  struct Case {
    bool causal;
    Shapes s;
    Order order;
    bool scores_first;  // the product the normal kernel keeps: P (L×S) or KV (D×M)
  };
  // Cheaper takes KV at L = S = 6, D = 4, M = 5 (36·9 > 12·20) and the
  // scores at L = 3, S = 4, D = M = 8 (12·16 < 7·64).
  for (const Case c : {Case{false, {2, 3, 6, 6, 4, 5}, Order::Cheaper, false},
                       Case{false, {2, 3, 6, 6, 4, 5}, Order::ScoresFirst, true},
                       Case{false, {2, 3, 3, 4, 8, 8}, Order::Cheaper, true},
                       Case{false, {2, 3, 3, 4, 8, 8}, Order::KeysValuesFirst, false},
                       Case{true, {2, 3, 6, 6, 4, 5}, Order::Cheaper, false}}) {
    const bool causal = c.causal;
    const Shapes s = c.s;
    INFO("causal " << causal << " L " << s.L << " order " << static_cast<int>(c.order));
    Generator gen(5);
    const TensorList in = random_inputs(s, gen, kFloat32);
    const auto options = FlowAttentionOptions{}.set_causal(causal).set_order(c.order);
    TensorList expected = value_and_grads(
        in, [&](const TensorList& x) { return flow_attention_trace(x[0], x[1], x[2], options).out; }, 3);

    TensorList leaves;  // copies, so that nothing else holds their memory
    for (const Tensor& x : in) leaves.push_back(x.clone().requires_grad_());
    const std::weak_ptr<Storage> q_memory = leaves[0].storage(), k_memory = leaves[1].storage();
    const std::size_t before = memory_stats().current_bytes;
    Tensor out = flow_attention(leaves[0], leaves[1], leaves[2], options);
    Tensor values = leaves[2];
    leaves.clear();
    // Q and K are freed once the caller lets them go; the features, as
    // large, took their place, so the output is the one allocation left,
    // with, for normal attention, each head's flows and KV or P:
    // 3(L+S) + 4D + D·M or L·S.
    REQUIRE(q_memory.expired());
    REQUIRE(k_memory.expired());
    const std::int64_t product = c.scores_first ? s.L * s.S : s.D * s.M;
    const std::int64_t kept_flows = causal ? 0 : s.B * s.H * (3 * (s.L + s.S) + 4 * s.D + product);
    REQUIRE(memory_stats().current_bytes == before + (out.numel() + kept_flows) * sizeof(float));
    Generator grad_gen(3);
    out.backward(randn(out.shape(), grad_gen, out.dtype()));
    require_close(out.detach(), expected[0], 1e-5, 1e-6);
    require_close(values.grad(), expected[3], 1e-4, 1e-5);
    // dQ and dK, which come from the kept features alone, with Q and K kept
    // by the caller this time to read them.
    TensorList fused = value_and_grads(
        in, [&](const TensorList& x) { return flow_attention(x[0], x[1], x[2], options); }, 3);
    require_close(fused[1], expected[1], 1e-4, 1e-5);
    require_close(fused[2], expected[2], 1e-4, 1e-5);
  }
}

TEST_CASE("float σ in fused multiply-adds is as accurate as with separate roundings, which keep their bits") {
  // The feature map takes the fused form on an x86-64-v3/v4 CPU, the other elsewhere.
  double worst_fused = 0, worst_apart = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00377f) {
    const double exact = 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
    worst_fused = std::max(worst_fused, std::abs(sigmoid_vectorisable<true>(x) - exact) / exact);
    worst_apart = std::max(worst_apart, std::abs(sigmoid_vectorisable<false>(x) - exact) / exact);
  }
  INFO("largest relative errors: fused " << worst_fused << ", apart " << worst_apart);
  REQUIRE(worst_fused < 2.4e-7);  // 2^-22, four units of float's rounding
  REQUIRE(worst_apart < 2.4e-7);
  for (const bool fused : {false, true}) {  // beyond the clamp: the limits, and NaN stays NaN
    const auto sigma = fused ? &sigmoid_vectorisable<true> : &sigmoid_vectorisable<false>;
    REQUIRE(sigma(1e4f) == 1.0f);
    REQUIRE(sigma(-1e4f) > 0.0f);  // σ(-87): the clamp keeps it a normal float
    REQUIRE(sigma(-1e4f) < 2e-38f);
    REQUIRE(std::isnan(sigma(std::nanf(""))));
  }
  // The separate roundings give the bits they gave before the fused form
  // existed (GELU and CPUs without FMA rely on them).
  const std::pair<float, std::uint32_t> before[] = {
      {-87.0f, 0x00B33688u}, {-20.5f, 0x30ABD1D8u}, {-3.25f, 0x3D18E414u}, {-0.7f, 0x3EA9E34Bu},
      {0.0f, 0x3F000000u},   {0.3f, 0x3F130EAAu},   {1.0f, 0x3F3B26A8u},   {2.5f, 0x3F6C948Fu},
      {9.75f, 0x3F7FFC2Eu},  {17.0f, 0x3F800000u}};
  for (const auto& [x, bits] : before) {
    INFO("x = " << x);
    REQUIRE(std::bit_cast<std::uint32_t>(sigmoid_vectorisable<false>(x)) == bits);
  }
}

TEST_CASE("Flow-Attention argument errors name the op and the shapes") {
  Tensor q = zeros({1, 2, 4, 3}), k = zeros({1, 2, 5, 3}), v = zeros({1, 2, 5, 2});
  REQUIRE_THROWS_WITH(flow_attention(q.squeeze(0), k, v), Catch::Contains("[flow_attention]") && Catch::Contains("[2, 4, 3]"));
  REQUIRE_THROWS_WITH(flow_attention(q, zeros({1, 2, 5, 4}), v), Catch::Contains("feature dim") && Catch::Contains("[1, 2, 5, 4]"));
  REQUIRE_THROWS_WITH(flow_attention(q, k, zeros({1, 2, 6, 2})), Catch::Contains("sequence length"));
  REQUIRE_THROWS_WITH(flow_attention(q, k, zeros({2, 2, 5, 2})), Catch::Contains("batch and head"));
  REQUIRE_THROWS_WITH(flow_attention(q, k.to(kFloat64), v), Catch::Contains("dtype"));
  REQUIRE_THROWS_WITH(flow_attention(q, k, v, FlowAttentionOptions{}.set_causal(true)), Catch::Contains("L == S"));
  REQUIRE_THROWS_WITH(flow_attention(q, k, v, {}, ones({1, 4})), Catch::Contains("key_padding_mask") && Catch::Contains("[1, 4]"));
  REQUIRE_THROWS_WITH(flow_attention(q, k, v, {}, zeros({1, 5})), Catch::Contains("every key"));
  REQUIRE_THROWS_WITH(flow_attention(q, q, q, FlowAttentionOptions{}.set_causal(true), ones({1, 4})),
                      Catch::Contains("normal attention only"));
  REQUIRE_THROWS_WITH(flow_attention(q, zeros({1, 2, 0, 3}), zeros({1, 2, 0, 2})), Catch::Contains("S = 0"));
  // No features: every flow would be 0/0 (NaN everywhere) or nothing to aggregate.
  for (const bool causal : {false, true}) {
    const auto options = FlowAttentionOptions{}.set_causal(causal);
    REQUIRE_THROWS_WITH(flow_attention(zeros({1, 2, 4, 0}), zeros({1, 2, 4, 0}), zeros({1, 2, 4, 2}), options),
                        Catch::Contains("[flow_attention]") && Catch::Contains("D = 0") &&
                            Catch::Contains("[1, 2, 4, 0]"));
    REQUIRE_THROWS_WITH(flow_attention(zeros({1, 2, 4, 3}), zeros({1, 2, 4, 3}), zeros({1, 2, 4, 0}), options),
                        Catch::Contains("M = 0"));
  }
  REQUIRE_THROWS_WITH(flow_attention(q, k, v, FlowAttentionOptions{}.set_clamp(1.0, -1.0)), Catch::Contains("clamp"));
  REQUIRE_THROWS_WITH(flow_attention_trace(q, zeros({1, 2, 5, 4}), v), Catch::Contains("[flow_attention]"));
}

TEST_CASE("the flowattn tool reproduces the golden values and rejects bad input") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("flowattn_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string output = (dir / "out.safetensors").string();
  auto run = [&](const std::string& arguments) {
    const std::string command = std::string(FLOWATTN_PATH) + " " + arguments + " 2>" + (dir / "stderr").string();
    return std::system(command.c_str());
  };
  auto stderr_text = [&] {
    std::ifstream in(dir / "stderr");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };

  for (const std::string name : {"normal_masked_f64", "causal_small_f32"}) {
    INFO(name);
    const std::string input = golden_path(name + ".safetensors");
    const bool causal = name.rfind("causal", 0) == 0;
    REQUIRE(run((causal ? "--causal " : "") + input + " " + output) == 0);
    std::map<std::string, Tensor> golden = load_safetensors(input), result = load_safetensors(output);
    REQUIRE(result.size() == 4);
    const double tolerance = golden.at("q").dtype() == kFloat64 ? 1e-10 : 1e-5;
    for (const std::string key : {"out", "grad_q", "grad_k", "grad_v"}) {
      INFO(key);
      REQUIRE(result.at(key).dtype() == golden.at("q").dtype());
      require_close_to_scale(result.at(key), golden.at(key), tolerance);
    }
  }
  // Without grad_out only `out` is written.
  save_safetensors((dir / "no_grad.safetensors").string(),
                   {{"q", zeros({1, 1, 3, 2})}, {"k", zeros({1, 1, 3, 2})}, {"v", ones({1, 1, 3, 2})}});
  REQUIRE(run((dir / "no_grad.safetensors").string() + " " + output) == 0);
  REQUIRE(load_safetensors(output).size() == 1);

  save_safetensors((dir / "missing_v.safetensors").string(), {{"q", zeros({1, 1, 3, 2})}, {"k", zeros({1, 1, 3, 2})}});
  REQUIRE(run((dir / "missing_v.safetensors").string() + " " + output) != 0);
  REQUIRE_THAT(stderr_text(), Catch::Contains("\"v\" is missing"));
  save_safetensors((dir / "bad_shape.safetensors").string(),
                   {{"q", zeros({1, 1, 3, 2})}, {"k", zeros({1, 1, 3, 5})}, {"v", zeros({1, 1, 3, 2})}});
  REQUIRE(run((dir / "bad_shape.safetensors").string() + " " + output) != 0);
  REQUIRE_THAT(stderr_text(), Catch::Contains("[flow_attention]") && Catch::Contains("[1, 1, 3, 5]"));
  {
    std::ofstream garbage(dir / "garbage.safetensors");
    garbage << "not a safetensors file";
  }
  REQUIRE(run((dir / "garbage.safetensors").string() + " " + output) != 0);
  REQUIRE_THAT(stderr_text(), Catch::Contains("[load_safetensors]"));
  REQUIRE(run("only_one_argument") != 0);
  fs::remove_all(dir);
}

TEST_CASE("the trace exposes intermediates and their gradients") {
  Generator gen(31);
  TensorList in = random_inputs({1, 1, 4, 3, 2, 2}, gen);
  Tensor q = in[0].detach().requires_grad_();
  FlowAttentionTrace trace = flow_attention_trace(q, in[1], in[2]);
  Tensor grad_out = randn(trace.out.shape(), gen, kFloat64);
  trace.out.backward(grad_out);
  // Definitions: I_i (q_i+ε)·(Σ_j k_j+ε) = 1 and Σ_j C_j = S.
  Tensor k_sum = sum(trace.k_features, {2}, true);
  require_close(trace.sink_incoming * sum((trace.q_features + 1e-6) * (k_sum + 1e-6), {3}),
                ones({1, 1, 4}, kFloat64), 1e-14, 1e-14);
  REQUIRE(sum(trace.source_competition).item<double>() == Approx(3.0).epsilon(1e-14));
  // out_i = A_i (...): ∂L/∂A_i = Σ_m G_im out_im / A_i.
  require_close(trace.sink_allocation.grad(),
                sum(grad_out * trace.out, {3}) / trace.sink_allocation, 1e-12, 1e-14);
  require_close(trace.out.grad(), grad_out, 0, 0);
  REQUIRE(trace.named().size() == 9);
  REQUIRE(trace.q_features.grad().defined());
  REQUIRE_FALSE(trace.k_features.requires_grad());  // K was not marked
}

TEST_CASE("flow_attention_inspect: the kernel's own intermediates and gradients equal the trace's and autograd's") {
  Generator gen(41);
  for (const bool causal : {false, true}) {
    INFO("causal " << causal);
    // 37 causal rows are chunks of 16 + 16 + 5: the prefix sums are rebuilt per chunk.
    const std::int64_t N = causal ? 37 : 6, S = causal ? 37 : 5, D = 3, M = 4;
    const Tensor Q = randn({2, 2, N, D}, gen, kFloat64), K = randn({2, 2, S, D}, gen, kFloat64),
                 V = randn({2, 2, S, M}, gen, kFloat64), G = randn({2, 2, N, M}, gen, kFloat64);
    const FlowAttentionOptions options = FlowAttentionOptions{}.set_causal(causal);
    const FlowAttentionInspection inspection = flow_attention_inspect(Q, K, V, G, options, Tensor(), 1, 0);
    const std::string section = causal ? "§C" : "§N";
    for (const FlowAttentionQuantity& quantity : inspection.quantities) REQUIRE(quantity.section.rfind(section, 0) == 0);

    Tensor q = Q.detach().requires_grad_(), k = K.detach().requires_grad_(), v = V.detach().requires_grad_();
    const FlowAttentionTrace trace = flow_attention_trace(q, k, v, options);
    trace.out.backward(G);
    const auto head = [](const Tensor& t) { return t.select(0, 1).select(0, 0); };  // (batch 1, head 0)
    const std::vector<std::pair<std::string, Tensor>> same{
        {"q", trace.q_features},      {"k", trace.k_features},    {"I", trace.sink_incoming},
        {"O", trace.source_outgoing}, {"Ĩ", trace.conserved_sink}, {"A", trace.sink_allocation},
        {"C", trace.source_competition}, {"out", trace.out}};
    for (const auto& [symbol, traced] : same) {
      INFO(symbol);
      require_close(inspection.at(symbol), head(traced).contiguous(), 1e-10, 1e-12);
      if (symbol != "out")  // dout is grad_out itself
        require_close(inspection.at("d" + symbol), head(traced.grad()).contiguous(), 1e-8, 1e-10);
    }
    require_close(inspection.at("dQ"), head(q.grad()).contiguous(), 1e-8, 1e-10);
    require_close(inspection.at("dK"), head(k.grad()).contiguous(), 1e-8, 1e-10);
    require_close(inspection.at("dV"), head(v.grad()).contiguous(), 1e-8, 1e-10);
    // s R is the output, and the state products are what the page says.
    require_close(inspection.at("out"), inspection.at("R") * inspection.at("s").unsqueeze(1), 1e-12, 1e-12);
    if (causal) {
      // The reverse loop's running sums are the suffix sums of section 5.5:
      // κ = suf(du ⊙ (q + ε)), π = suf(dy ⊙ (k + ε)), γ = suf(dE) with dE = −dC C / E.
      const double eps = options.eps;
      const auto suffix = [](const Tensor& x) { return cumsum(x, 0, /*reverse=*/true); };
      require_close(inspection.at("κ"), suffix(inspection.at("du").unsqueeze(1) * (inspection.at("q") + eps)), 1e-10, 1e-12);
      require_close(inspection.at("π"), suffix(inspection.at("dy").unsqueeze(1) * (inspection.at("k") + eps)), 1e-10, 1e-12);
      require_close(inspection.at("γ"), suffix(-inspection.at("dC") * inspection.at("C") / inspection.at("E")), 1e-10, 1e-12);
      // The prefix sums the backward rebuilds chunk by chunk are the
      // forward's running sums, bit for bit: the same additions in order.
      const auto prefix = [](const Tensor& x) { return cumsum(x, 0); };
      require_close(inspection.at("k_sum"), prefix(inspection.at("k")), 0, 0);
      require_close(inspection.at("q_sum"), prefix(inspection.at("q")), 0, 0);
      require_close(inspection.at("k_outgoing"), prefix(inspection.at("O").unsqueeze(1) * inspection.at("k")), 0, 0);
      require_close(inspection.at("q_incoming"), prefix(inspection.at("I").unsqueeze(1) * inspection.at("q")), 0, 0);
      REQUIRE(inspection.at("ρ").shape() == Shape{N, D});
      REQUIRE(inspection.at("τ").shape() == Shape{N, D});
    }
  }
  // A masked head is its unpadded sequence: every quantity over the real keys.
  const Tensor Q = randn({1, 1, 4, 3}, gen, kFloat64), K = randn({1, 1, 5, 3}, gen, kFloat64),
               V = randn({1, 1, 5, 2}, gen, kFloat64), G = randn({1, 1, 4, 2}, gen, kFloat64);
  const Tensor mask = tensor({1, 0, 1, 1, 0}, {1, 5});
  const Tensor real = from_vector<std::int64_t>({0, 2, 3});
  const FlowAttentionInspection masked = flow_attention_inspect(Q, K, V, G, {}, mask);
  for (const Order order : {Order::KeysValuesFirst, Order::ScoresFirst}) {
    const auto options = FlowAttentionOptions{}.set_order(order);
    const FlowAttentionInspection masked_in_order = flow_attention_inspect(Q, K, V, G, options, mask);
    const FlowAttentionInspection unpadded =
        flow_attention_inspect(Q, index_select(K, 2, real), index_select(V, 2, real), G, options);
    REQUIRE(masked_in_order.quantities.size() == unpadded.quantities.size());
    for (std::size_t i = 0; i < unpadded.quantities.size(); ++i) {
      INFO(unpadded.quantities[i].symbol << " order " << static_cast<int>(order));
      REQUIRE(masked_in_order.quantities[i].symbol == unpadded.quantities[i].symbol);
      require_close(masked_in_order.quantities[i].value, unpadded.quantities[i].value, 0, 0);
    }
  }

  // With the scores first the kernel holds P = q kᵀ and dP = dR (C ⊙ V)ᵀ in
  // place of KV and dKV; every other quantity is the same to rounding.
  const FlowAttentionInspection scores =
      flow_attention_inspect(Q, K, V, G, FlowAttentionOptions{}.set_order(Order::ScoresFirst));
  const FlowAttentionInspection kv = flow_attention_inspect(Q, K, V, G);
  REQUIRE(scores.quantities.size() == kv.quantities.size());
  require_close(scores.at("P"), matmul(scores.at("q"), scores.at("k").transpose(0, 1)), 1e-12, 1e-14);
  require_close(scores.at("dP"),
                matmul(scores.at("dR"), (scores.at("C").unsqueeze(1) * V.select(0, 0).select(0, 0)).transpose(0, 1)),
                1e-12, 1e-14);
  for (const FlowAttentionQuantity& quantity : kv.quantities) {
    INFO(quantity.symbol);
    if (quantity.symbol == "KV" || quantity.symbol == "dKV") {
      REQUIRE_THROWS_WITH(scores.at(quantity.symbol), Catch::Contains("the kernel does not hold it"));
      continue;
    }
    require_close(scores.at(quantity.symbol), quantity.value, 1e-12, 1e-14);
  }

  REQUIRE_THROWS_WITH(flow_attention_inspect(Q, K, V, G, {}, Tensor(), 1, 0),
                      Catch::Contains("[flow_attention_inspect] (batch, head) = (1, 0) is outside the 1 x 1 heads"));
  REQUIRE_THROWS_WITH(flow_attention_inspect(Q, K, V, Q),
                      Catch::Contains("grad_out must be float64 [1, 1, 4, 2] like the output, got float64 [1, 1, 4, 3]"));
  REQUIRE_THROWS_WITH(masked.at("u"), Catch::Contains("no quantity \"u\": the kernel does not hold it"));
  REQUIRE_THROWS_WITH(flow_attention_inspect(Q, K, V, G, FlowAttentionOptions{}.set_causal(true)),
                      Catch::Contains("[flow_attention] causal attention needs L == S"));
}

TEST_CASE("flow_inspect prints the kernel's quantities by symbol and section, checked against autograd") {
  TempDir dir;
  const ProgramRun normal = run_program(FLOW_INSPECT_PATH, "--L 3 --S 2 --D 2 --M 1", dir);
  REQUIRE(normal.status == 0);
  for (const char* line : {"§N2   Ô ", "§N2   dÔ ", "§N1   du ", "§N4   KV ", "§N0   dQ "})
    REQUIRE_THAT(normal.output, Catch::Contains(line));
  REQUIRE_THAT(normal.output, Catch::Contains("kernel and autograd agree"));
  // Small tensors are printed whole: q is 3×2.
  const auto q_line = normal.output.substr(normal.output.find("§N0   q "));
  REQUIRE(std::count(q_line.begin(), q_line.begin() + static_cast<std::ptrdiff_t>(q_line.find('\n')), 'e') == 6);

  const ProgramRun causal = run_program(FLOW_INSPECT_PATH, "--causal --L 4 --D 2 --M 2", dir);
  REQUIRE(causal.status == 0);
  for (const char* line : {"§C3   E ", "§C2   k_outgoing    [4, 2]", "§C1   dy "})
    REQUIRE_THAT(causal.output, Catch::Contains(line));
  REQUIRE_THAT(causal.output, Catch::Contains("kernel and autograd agree"));

  const ProgramRun masked = run_program(FLOW_INSPECT_PATH, "--S 4 --mask 1,0,1,1 --L 3", dir);
  REQUIRE(masked.status == 0);
  REQUIRE_THAT(masked.output, Catch::Contains("key padding mask 1 0 1 1") && Catch::Contains("§N1   O             [3]"));

  // The HTML report: self-contained, with the graph, the heat maps and the query selector.
  for (const char* kind : {"", "--causal "}) {
    INFO(kind);
    const std::string page_path = dir.file("report.html");
    const std::string sizes = *kind ? "--L 5 --D 2 --M 2" : "--L 5 --S 4 --D 2 --M 2";
    REQUIRE(run_program(FLOW_INSPECT_PATH, std::string(kind) + sizes + " --html " + page_path, dir).status == 0);
    std::ifstream page_file(page_path);
    const std::string page((std::istreambuf_iterator<char>(page_file)), std::istreambuf_iterator<char>());
    for (const char* id : {"id=\"graph\"", "id=\"attention-matrix\"", "id=\"heat-A\"", "id=\"heat-C\"",
                           "id=\"dq-allocation\"", "id=\"dq-competition\"", "id=\"query\""})
      REQUIRE_THAT(page, Catch::Contains(id));
    for (const char* external : {"http://", "https://", "<link", " src="}) REQUIRE_THAT(page, !Catch::Contains(external));
    std::size_t nodes = 0;
    for (std::size_t at = page.find("data-symbol="); at != std::string::npos; at = page.find("data-symbol=", at + 1)) ++nodes;
    REQUIRE(nodes == (*kind ? 22u : 21u));  // causal: e and E, no KV
    // In a real browser: the page loads, its script runs and the selector fills the row.
    if (std::system("command -v chromium >/dev/null 2>&1") != 0) {
      WARN("chromium is not installed: the report was not loaded in a browser (.ci/run installs it)");
      continue;
    }
    const ProgramRun dom = run_program("chromium", "--headless --no-sandbox --disable-gpu --dump-dom file://" + page_path, dir);
    REQUIRE(dom.status == 0);
    REQUIRE_THAT(dom.output, Catch::Contains("id=\"status\">ready<") && Catch::Contains("id=\"row-values\">row 0: "));
    REQUIRE_THAT(dom.output, Catch::Contains("class=\"selected\""));
  }
  REQUIRE_THAT(run_program(FLOW_INSPECT_PATH, "--L 65 --html " + dir.file("big.html"), dir).output,
               Catch::Contains("--html is for small inputs"));

  REQUIRE_THAT(run_program(FLOW_INSPECT_PATH, "--causal --S 4", dir).output,
               Catch::Contains("--S does not apply to causal attention"));
  REQUIRE_THAT(run_program(FLOW_INSPECT_PATH, "--causal --mask 1,1", dir).output,
               Catch::Contains("--mask applies to normal attention only"));
  REQUIRE_THAT(run_program(FLOW_INSPECT_PATH, "--mask 1,1", dir).output, Catch::Contains("--mask has 2 flags for --S 5 keys"));
  REQUIRE(run_program(FLOW_INSPECT_PATH, "--S 2 --mask 1,2", dir).status != 0);
}

TEST_CASE("incremental causal Flow-Attention equals the full causal forward at every position") {
  const DType dtype = GENERATE(kFloat64, kFloat32);
  Generator gen(41);
  const std::int64_t B = 2, H = 3, L = 150, D = 5, M = 4;  // L crosses a chunk boundary
  TensorList in = random_inputs({B, H, L, L, D, M}, gen, dtype);
  const Tensor full = flow_attention(in[0], in[1], in[2], FlowAttentionOptions{}.set_causal(true));
  CausalFlowAttentionState state(B, H, D, M, dtype);
  TensorList rows;
  for (std::int64_t i = 0; i < L; ++i)
    rows.push_back(state.step(in[0].narrow(2, i, 1), in[1].narrow(2, i, 1), in[2].narrow(2, i, 1)));
  REQUIRE(state.position() == L);
  require_close_to_scale(concat(rows, 2), full, dtype == kFloat64 ? 1e-12 : 2e-5);
  state.reset();
  REQUIRE(state.position() == 0);
  require_close_to_scale(state.step(in[0].narrow(2, 0, 1), in[1].narrow(2, 0, 1), in[2].narrow(2, 0, 1)),
                         full.narrow(2, 0, 1), 1e-5);
  REQUIRE_THROWS_WITH(state.step(in[0], in[1], in[2]), Catch::Contains("[CausalFlowAttentionState::step]"));
  REQUIRE_THROWS_WITH(CausalFlowAttentionState(0, 1, 1, 1), Catch::Contains("[CausalFlowAttentionState]"));
}

TEST_CASE("the materialised attention matrix times V is the fused kernel's output") {
  struct Case {
    Shapes shapes;
    bool causal, masked;
  };
  const Case c = GENERATE(Case{{2, 3, 6, 9, 4, 5}, false, false}, Case{{2, 2, 5, 7, 3, 2}, false, true},
                          Case{{1, 2, 200, 200, 4, 3}, true, false});
  Generator gen(17);
  TensorList in = random_inputs(c.shapes, gen);
  Tensor mask;
  if (c.masked) mask = from_vector(std::vector<double>{1, 0, 1, 1, 0, 1, 1, /**/ 0, 1, 1, 1, 1, 1, 0}, {2, 7});
  const FlowAttentionOptions options = FlowAttentionOptions().set_causal(c.causal);
  FlowAttentionTrace trace = flow_attention_trace(in[0], in[1], in[2], options, mask);
  Tensor matrix = trace.attention_matrix();
  CHECK(matrix.shape() == Shape{c.shapes.B, c.shapes.H, c.shapes.L, c.shapes.S});
  require_close(matmul(matrix, in[2]), flow_attention(in[0], in[1], in[2], options, mask), 1e-11, 1e-12);
  const std::vector<double> w = matrix.to_vector<double>();
  const std::int64_t L = c.shapes.L, S = c.shapes.S;
  for (std::int64_t row = 0; row < c.shapes.B * c.shapes.H * L; ++row)
    for (std::int64_t j = 0; j < S; ++j) {
      const double value = w[static_cast<std::size_t>(row * S + j)];
      if (c.causal && j > row % L) REQUIRE(value == 0.0);  // the future is invisible
      else if (c.masked && mask.to_vector<double>()[static_cast<std::size_t>(row / (c.shapes.H * L) * S + j)] == 0)
        REQUIRE(value == 0.0);  // padded keys take no weight
      else
        REQUIRE(value > 0.0);  // sigmoid features, positive flows: every visible weight is positive
    }
}
