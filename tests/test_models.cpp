#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../models/flowformer.h"
#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;
using namespace flowgrad::models;
using namespace flowgrad::nn;

namespace {

// A causal LM configuration without dropout; the defaults are the tiny model
// most tests use.
FlowformerConfig tiny_config(AttentionKind kind = AttentionKind::Flow, std::int64_t vocab = 11,
                             std::int64_t block = 8, std::int64_t layers = 2, std::int64_t heads = 2,
                             std::int64_t embd = 8) {
  FlowformerConfig config;
  config.vocab_size = vocab;
  config.block_size = block;
  config.n_layer = layers;
  config.n_head = heads;
  config.n_embd = embd;
  config.dropout = 0.0;
  config.attention = kind;
  return config;
}

Tensor random_tokens(std::int64_t B, std::int64_t T, std::int64_t vocab, Generator& gen) {
  return randint(0, vocab, {B, T}, gen);
}

// Rows [.., t, :] of a [B, T, V] tensor as [B, V].
Tensor position_row(const Tensor& logits, std::int64_t t) { return logits.select(1, t); }

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  return worst;
}

double sample_std(const std::vector<double>& values) {
  double mean = 0.0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  double var = 0.0;
  for (double v : values) var += (v - mean) * (v - mean);
  return std::sqrt(var / static_cast<double>(values.size()));
}

Tensor parameter(const nn::Module& module, const std::string& name) {
  for (const auto& [n, t] : module.named_parameters())
    if (n == name) return t;
  FAIL("no parameter " << name);
  return Tensor();
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

TEST_CASE("FlowformerConfig: the mini preset and validation") {
  const FlowformerConfig mini = FlowformerConfig::mini(65);
  REQUIRE(mini.vocab_size == 65);
  REQUIRE(mini.n_layer == 6);
  REQUIRE(mini.n_head == 6);
  REQUIRE(mini.n_embd == 192);
  REQUIRE(mini.block_size == 128);
  REQUIRE(mini.dropout == 0.1);
  REQUIRE(mini.causal);
  REQUIRE(mini.attention == AttentionKind::Flow);
  REQUIRE_NOTHROW(mini.validate());

  FlowformerConfig bad = mini;
  bad.n_head = 5;
  REQUIRE_THROWS_WITH(bad.validate(), Catch::Contains("[FlowformerConfig]") &&
                                          Catch::Contains("n_embd=192") && Catch::Contains("n_head=5"));
  bad = mini;
  bad.n_layer = 0;
  REQUIRE_THROWS_WITH(bad.validate(), Catch::Contains("[FlowformerConfig] n_layer"));
  bad = mini;
  bad.block_size = -1;
  REQUIRE_THROWS_WITH(bad.validate(), Catch::Contains("[FlowformerConfig] block_size"));
  bad = mini;
  bad.dropout = 1.0;
  REQUIRE_THROWS_WITH(bad.validate(), Catch::Contains("[FlowformerConfig] dropout"));
  bad = mini;
  bad.vocab_size = -3;
  REQUIRE_THROWS_WITH(bad.validate(), Catch::Contains("[FlowformerConfig] vocab_size"));

  Generator gen(0);
  bad = mini;
  bad.vocab_size = 0;
  REQUIRE_THROWS_WITH(FlowformerLM(bad, gen), Catch::Contains("[FlowformerLM] vocab_size"));
  bad = tiny_config();
  bad.causal = false;
  REQUIRE_THROWS_WITH(FlowformerLM(bad, gen), Catch::Contains("[FlowformerLM]"));
  REQUIRE_THROWS_WITH(FlowformerEncoder(tiny_config(), 3, Pooling::Mean, gen),
                      Catch::Contains("[FlowformerEncoder]"));
}

TEST_CASE("FlowformerConfig: to_json / from_json round trip and errors") {
  FlowformerConfig config = tiny_config(AttentionKind::Softmax);
  config.dropout = 0.123456789012345;
  config.causal = false;
  const std::string text = config.to_json();
  REQUIRE(text.find("\"n_embd\":8") != std::string::npos);
  REQUIRE(text.find("\"attention\":\"softmax\"") != std::string::npos);
  REQUIRE(FlowformerConfig::from_json(text) == config);  // dropout to the last bit
  REQUIRE(FlowformerConfig::from_json(FlowformerConfig::mini(65).to_json()) == FlowformerConfig::mini(65));
  // Missing keys keep their defaults; whitespace and key order do not matter.
  FlowformerConfig expected;
  expected.vocab_size = 4;
  expected.n_layer = 2;
  REQUIRE(FlowformerConfig::from_json(" { \"n_layer\" : 2 ,\n \"vocab_size\": 4 } ") == expected);

  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"n_layer": 2, "width": 3})"),
                      Catch::Contains("[FlowformerConfig] unknown key \"width\""));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "n_layer": 2, "n_layer": 3})"),
                      Catch::Contains("[FlowformerConfig] the key \"n_layer\" appears twice"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json("vocab_size=4\nn_layer=2\n"),
                      Catch::Contains("[FlowformerConfig] malformed JSON"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json("[1, 2]"),
                      Catch::Contains("[FlowformerConfig] expected a JSON object, got array"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "n_layer": "2"})"),
                      Catch::Contains("[FlowformerConfig] \"n_layer\" must be an integer") &&
                          Catch::Contains("got \"2\""));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "n_layer": 2.5})"),
                      Catch::Contains("\"n_layer\" must be an integer"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 9223372036854775808})"),
                      Catch::Contains("\"vocab_size\" must be an integer within 64 bits"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "causal": "yes"})"),
                      Catch::Contains("[FlowformerConfig] \"causal\" must be true or false"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "dropout": null})"),
                      Catch::Contains("[FlowformerConfig] \"dropout\" must be a number"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "attention": "linear"})"),
                      Catch::Contains("[AttentionKind]"));
  // Untrusted text: nesting is bounded (dump() would recurse per level) and messages stay short.
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"n_layer": )" + std::string(100000, '[')),
                      Catch::Contains("[FlowformerConfig] JSON nested deeper than 32 levels"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"n_layer": [[[1]]]})"),
                      Catch::EndsWith("\"n_layer\" must be an integer within 64 bits, got an array"));
  const std::string long_key(100000, 'x');
  try {
    FlowformerConfig::from_json("{\"" + long_key + "\": 1}");
    FAIL("an unknown key was accepted");
  } catch (const Error& e) {
    REQUIRE_THAT(e.what(), Catch::Contains("unknown key \"xxxx"));
    REQUIRE(std::string(e.what()).size() < 200);
  }
  try {
    FlowformerConfig::from_json("{\"n_layer\": \"" + long_key);  // unterminated
    FAIL("malformed JSON was accepted");
  } catch (const Error& e) {
    REQUIRE_THAT(e.what(), Catch::Contains("malformed JSON"));
    REQUIRE(std::string(e.what()).size() < 400);
  }
  // Parsed values are validated.
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 4, "n_head": 5})"),
                      Catch::Contains("[FlowformerConfig]"));
}

TEST_CASE("CharLMConfig: JSON round trip, byte vocabularies and errors") {
  FlowformerConfig model = tiny_config();
  const std::string text = std::string("b\xff\na\x00\x80", 6);  // not UTF-8: stored as byte values
  CharLMConfig config{model, CharVocabulary(text)};
  config.model.vocab_size = config.vocabulary.size();
  const std::string json = config.to_json();
  REQUIRE(json.find("\"vocabulary\":[0,10,97,98,128,255]") != std::string::npos);
  const CharLMConfig back = CharLMConfig::from_json(json);
  REQUIRE(back.model == config.model);
  REQUIRE(back.vocabulary.chars() == config.vocabulary.chars());
  REQUIRE(back.vocabulary.encode(std::string("\xff", 1)) == std::vector<std::int64_t>{5});

  const std::string model_json = config.model.to_json();
  const auto with = [&](const std::string& vocabulary) {
    return R"({"kind": "char_lm", "model": )" + model_json + R"(, "vocabulary": )" + vocabulary + "}";
  };
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(with("[0, 10, 98, 97, 128, 255]")),
                      Catch::Contains("[CharLMConfig] the vocabulary of 6 bytes is not sorted"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(with("[0, 10, 97]")), Catch::Contains("does not match vocab_size=6"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(with("[0, 10, 97, 98, 128, 256]")),
                      Catch::Contains("holds 256, not a byte value"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(with("\"ab\"")), Catch::Contains("must be an array of byte values"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(R"({"kind": "listops", "model": {}})"),
                      Catch::Contains("not written by charlm"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(R"({"kind": "char_lm", "vocabulary": []})"),
                      Catch::Contains("[CharLMConfig] the object \"model\" is missing"));
  REQUIRE_THROWS_WITH(CharLMConfig::from_json(R"({"kind": "char_lm", "model": )" + model_json + "}"),
                      Catch::Contains("[CharLMConfig] the configuration has no vocabulary"));
  REQUIRE_THROWS_WITH(CharVocabulary("abc").encode("abd"),
                      Catch::Contains("[CharVocabulary::encode] character 'd' (byte 100) at position 2"));
  REQUIRE_THROWS_WITH(CharVocabulary("abc").decode({0, 3}), Catch::Contains("token id 3 is outside the vocabulary of 3"));
  REQUIRE_THROWS_WITH(CharVocabulary().encode("a"), Catch::Contains("character 'a' (byte 97) at position 0"));
}

TEST_CASE("TokenStream: generate() while the context fits, re-primed with the last half block after") {
  Generator gen(21);
  FlowformerConfig config = tiny_config();  // block_size 8
  config.dropout = 0.0;
  FlowformerLM model(config, gen);
  model.eval();
  const SamplingOptions sampling{.temperature = 0.9, .top_k = 0, .greedy = false};
  const std::vector<std::int64_t> prompt{1, 2, 3};
  TokenStream stream(model, prompt, sampling, Generator(5));
  std::vector<std::int64_t> streamed;
  for (int i = 0; i < 20; ++i) streamed.push_back(stream.next());
  // The tokens until the context fills the block are exactly generate()'s.
  Generator rng(5);
  const std::int64_t fitting = config.block_size - 3;
  const std::vector<std::int64_t> generated = model.generate(prompt, fitting, sampling, rng);
  REQUIRE(std::vector<std::int64_t>(streamed.begin(), streamed.begin() + fitting) ==
          std::vector<std::int64_t>(generated.begin() + 3, generated.end()));
  // Then the context (8 tokens) is cut to its last 4 and generation goes on from there.
  std::vector<std::int64_t> context = generated;
  context.erase(context.begin(), context.end() - 4);
  const std::vector<std::int64_t> resumed = model.generate(context, 4, sampling, rng);
  REQUIRE(std::vector<std::int64_t>(streamed.begin() + fitting, streamed.begin() + fitting + 4) ==
          std::vector<std::int64_t>(resumed.begin() + 4, resumed.end()));

  REQUIRE_THROWS_WITH(TokenStream(model, {}, sampling, Generator(1)), Catch::Contains("[TokenStream] the prompt"));
  REQUIRE_THROWS_WITH(TokenStream(model, {1, config.vocab_size}, sampling, Generator(1)),
                      Catch::Contains("[TokenStream] prompt token"));
  REQUIRE_THROWS_WITH(TokenStream(model, {1}, {.temperature = 0.0}, Generator(1)), Catch::Contains("[sample_token]"));
}

// ---------------------------------------------------------------------------
// Parameters and initialisation
// ---------------------------------------------------------------------------

TEST_CASE("parameter_count_for predicts parameter_count without building the model") {
  Generator gen(4);
  for (const FlowformerConfig& config : {tiny_config(), tiny_config(AttentionKind::Softmax, 5, 3, 1, 1, 4),
                                         FlowformerConfig::mini(65)}) {
    REQUIRE(FlowformerLM::parameter_count_for(config) ==
            static_cast<double>(FlowformerLM(config, gen).parameter_count()));
    FlowformerConfig encoder = config;
    encoder.causal = false;
    for (const Pooling pooling : {Pooling::Mean, Pooling::ClassToken})
      REQUIRE(FlowformerEncoder::parameter_count_for(encoder, 7, pooling) ==
              static_cast<double>(FlowformerEncoder(encoder, 7, pooling, gen).parameter_count()));
  }
}

TEST_CASE("sizes that cannot be built are refused before anything is allocated") {
  Generator gen(5);
  // Issue 11: --layers 9223372036854775807 (and a checkpoint with n_layer=1000000) grew memory without end.
  FlowformerConfig deep = tiny_config();
  deep.n_layer = std::numeric_limits<std::int64_t>::max();
  REQUIRE_THROWS_WITH(FlowformerLM(deep, gen),
                      Catch::Contains("[FlowformerLM] the model would have") && Catch::Contains("parameters") &&
                          Catch::Contains("of memory available"));
  FlowformerConfig wide = FlowformerConfig::mini(65);
  wide.n_layer = 1000000;
  wide.causal = false;
  REQUIRE_THROWS_WITH(FlowformerEncoder(wide, 10, Pooling::Mean, gen), Catch::Contains("[FlowformerEncoder] the model"));
  // Weights beyond the maximum tensor size are a configuration error (block_size 2^63-1 once
  // overflowed in the shape arithmetic of the position table).
  FlowformerConfig long_block = tiny_config();
  long_block.block_size = std::numeric_limits<std::int64_t>::max();
  REQUIRE_THROWS_WITH(long_block.validate(),
                      Catch::Contains("[FlowformerConfig]") && Catch::Contains("block_size=9223372036854775807") &&
                          Catch::Contains("2^40"));
  REQUIRE_THROWS_WITH(FlowformerConfig::from_json(R"({"vocab_size": 9223372036854775807})"),
                      Catch::Contains("vocab_size=9223372036854775807"));
  FlowformerConfig huge_width = tiny_config();
  huge_width.n_embd = huge_width.n_head = std::int64_t{1} << 61;
  REQUIRE_THROWS_WITH(huge_width.validate(), Catch::Contains("2^40"));
  REQUIRE(FlowformerLM::parameter_count_for(deep) > 1e18);  // computed without overflow
}

TEST_CASE("FlowformerLM parameter names and shapes match the reference state_dict") {
  Generator gen(1);
  const FlowformerConfig config = tiny_config();  // vocab 11, block 8, 2 layers, n_embd 8
  FlowformerLM model(config, gen);

  std::vector<std::pair<std::string, Shape>> expected = {
      {"transformer.wte.weight", {11, 8}},
      {"transformer.wpe.weight", {8, 8}},
  };
  for (int i = 0; i < 2; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    const std::vector<std::pair<std::string, Shape>> block = {
        {p + "ln_1.weight", {8}},
        {p + "ln_1.bias", {8}},
        {p + "attn.query_projection.weight", {8, 8}},
        {p + "attn.query_projection.bias", {8}},
        {p + "attn.key_projection.weight", {8, 8}},
        {p + "attn.key_projection.bias", {8}},
        {p + "attn.value_projection.weight", {8, 8}},
        {p + "attn.value_projection.bias", {8}},
        {p + "attn.out_projection.weight", {8, 8}},
        {p + "attn.out_projection.bias", {8}},
        {p + "ln_2.weight", {8}},
        {p + "ln_2.bias", {8}},
        {p + "mlp.c_fc.weight", {32, 8}},
        {p + "mlp.c_fc.bias", {32}},
        {p + "mlp.c_proj.weight", {8, 32}},
        {p + "mlp.c_proj.bias", {8}},
    };
    expected.insert(expected.end(), block.begin(), block.end());
  }
  expected.push_back({"transformer.ln_f.weight", {8}});
  expected.push_back({"transformer.ln_f.bias", {8}});
  expected.push_back({"lm_head.weight", {11, 8}});

  const nn::NamedTensors actual = model.named_parameters();
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    INFO("parameter " << i << ": " << actual[i].first);
    REQUIRE(actual[i].first == expected[i].first);
    REQUIRE(actual[i].second.shape() == expected[i].second);
    REQUIRE(actual[i].second.dtype() == kFloat32);
    REQUIRE(actual[i].second.requires_grad());
  }
  // The softmax kind has the very same parameters.
  FlowformerLM softmax_model(tiny_config(AttentionKind::Softmax), gen);
  const auto state = softmax_model.state_dict();
  REQUIRE(state.size() == expected.size());
  for (const auto& [name, shape] : expected) REQUIRE(state.at(name).shape() == shape);
}

TEST_CASE("FlowformerLM parameter count follows 2VC + TC + L(12C² + 13C) + 2C") {
  auto formula = [](const FlowformerConfig& c) {
    const std::int64_t C = c.n_embd;
    return 2 * c.vocab_size * C + c.block_size * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
  };
  Generator gen(2);
  const FlowformerConfig tiny = tiny_config();
  REQUIRE(FlowformerLM(tiny, gen).parameter_count() == formula(tiny));
  REQUIRE(formula(tiny) == 2 * 11 * 8 + 8 * 8 + 2 * (12 * 64 + 13 * 8) + 16);
  const FlowformerConfig mini = FlowformerConfig::mini(65);
  REQUIRE(FlowformerLM(mini, gen).parameter_count() == formula(mini));
  REQUIRE(formula(mini) == 2719104);
}

TEST_CASE("FlowformerLM initialisation statistics follow the spec") {
  Generator gen(3);
  FlowformerConfig config;
  config.vocab_size = 100;
  config.block_size = 64;
  config.n_layer = 4;
  config.n_head = 4;
  config.n_embd = 64;
  FlowformerLM model(config, gen, kFloat64);

  std::vector<double> c_proj, other_matrices;
  for (const auto& [name, p] : model.named_parameters()) {
    INFO(name);
    const std::vector<double> values = p.to_vector<double>();
    const bool is_bias = name.ends_with(".bias");
    const bool is_layer_norm = name.find("ln_") != std::string::npos;
    if (is_layer_norm) {
      const double expected = is_bias ? 0.0 : 1.0;
      for (double v : values) REQUIRE(v == expected);
    } else if (is_bias) {
      for (double v : values) REQUIRE(v == 0.0);
    } else if (name.ends_with("mlp.c_proj.weight")) {
      c_proj.insert(c_proj.end(), values.begin(), values.end());
    } else {
      other_matrices.insert(other_matrices.end(), values.begin(), values.end());
    }
  }
  // 65536 and ~160000 draws: the std estimates are within ~0.3 % (1 sigma).
  REQUIRE(c_proj.size() == 4u * 64 * 256);
  REQUIRE(sample_std(c_proj) == Approx(0.02 / std::sqrt(8.0)).epsilon(0.02));
  REQUIRE(sample_std(other_matrices) == Approx(0.02).epsilon(0.02));
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

TEST_CASE("FlowformerLM forward shapes, loss and errors") {
  Generator gen(4);
  FlowformerLM model(tiny_config(), gen);
  const Tensor tokens = random_tokens(3, 5, 11, gen);
  const Tensor logits = model.forward(tokens);
  REQUIRE(logits.shape() == Shape{3, 5, 11});
  REQUIRE(logits.dtype() == kFloat32);

  const Tensor loss = model.loss(tokens, random_tokens(3, 5, 11, gen));
  REQUIRE(loss.dim() == 0);
  // Near log(vocab) for a freshly initialised model (logits ~ 0).
  REQUIRE(loss.item<double>() == Approx(std::log(11.0)).epsilon(0.05));
  loss.backward();
  for (const auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }

  // Full block_size works; one more position does not.
  REQUIRE(model.forward(random_tokens(1, 8, 11, gen)).shape() == Shape{1, 8, 11});
  REQUIRE_THROWS_WITH(model.forward(random_tokens(1, 9, 11, gen)), Catch::Contains("[FlowformerLM]") &&
                                                                       Catch::Contains("T=9") &&
                                                                       Catch::Contains("block_size=8"));
  REQUIRE_THROWS_WITH(model.forward(from_vector(std::vector<std::int64_t>{1, 11}, {1, 2})),
                      Catch::Contains("[embedding]") && Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(model.forward(from_vector(std::vector<std::int64_t>{1, -1}, {1, 2})),
                      Catch::Contains("[embedding]"));
  REQUIRE_THROWS_WITH(model.forward(zeros({1, 3})), Catch::Contains("[FlowformerLM] expected int64"));
  REQUIRE_THROWS_WITH(model.forward(zeros({3}, kInt64)), Catch::Contains("[FlowformerLM]"));
}

TEST_CASE("FlowformerLM is causal: a later token never changes earlier logits") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(5);
  FlowformerLM model(tiny_config(kind), gen, kFloat64);
  model.eval();
  const Tensor tokens = random_tokens(2, 8, 11, gen);
  const Tensor logits = model.forward(tokens);
  for (std::int64_t t = 0; t < 8; ++t) {
    INFO("changed position " << t);
    std::vector<std::int64_t> changed = tokens.to_vector<std::int64_t>();
    changed[t] = (changed[t] + 1) % 11;          // batch element 0
    changed[8 + t] = (changed[8 + t] + 5) % 11;  // batch element 1
    const Tensor other = model.forward(from_vector(changed, {2, 8}));
    if (t > 0) require_close(other.narrow(1, 0, t), logits.narrow(1, 0, t), 0.0, 1e-12);
    // The change itself is visible from position t on.
    REQUIRE(max_abs_difference(position_row(other, t), position_row(logits, t)) > 1e-6);
  }
}

TEST_CASE("FlowAttention layer: shapes, both kinds, errors") {
  Generator gen(6);
  FlowAttentionLayerOptions options;
  options.d_model = 12;
  options.n_heads = 3;
  FlowAttention flow(options, gen, nullptr, kFloat64);
  REQUIRE(flow.head_dim() == 4);
  const Tensor xq = randn({2, 5, 12}, gen, kFloat64), xk = randn({2, 7, 12}, gen, kFloat64);
  REQUIRE(flow.forward(xq, xk, xk).shape() == Shape{2, 5, 12});
  REQUIRE(flow.forward(xq).shape() == Shape{2, 5, 12});

  options.kind = AttentionKind::Softmax;
  FlowAttention softmax_attention(options, gen, nullptr, kFloat64);
  REQUIRE(softmax_attention.forward(xq, xk, xk).shape() == Shape{2, 5, 12});
  // Equal weights give different outputs for the two kinds: they really differ.
  softmax_attention.load_state_dict(flow.state_dict());
  REQUIRE(max_abs_difference(softmax_attention.forward(xq), flow.forward(xq)) > 1e-6);

  options.n_heads = 5;
  REQUIRE_THROWS_WITH(FlowAttention(options, gen, nullptr),
                      Catch::Contains("[FlowAttention] d_model=12") && Catch::Contains("n_heads=5"));
  REQUIRE_THROWS_WITH(flow.forward(randn({2, 5, 10}, gen, kFloat64)), Catch::Contains("[FlowAttention]"));
  REQUIRE_THROWS_WITH(flow.forward(xq, xk, randn({2, 6, 12}, gen, kFloat64)),
                      Catch::Contains("[FlowAttention]"));
  REQUIRE_THROWS_WITH(flow.forward(xq, zeros({2, 4})),
                      Catch::Contains("mask of shape [2, 4] does not match [B, T] = [2, 5]"));
  REQUIRE_THROWS_WITH(flow.forward(xq, zeros({2, 5})), Catch::Contains("every position of batch element 0"));

  options.n_heads = 3;
  options.causal = true;
  options.kind = AttentionKind::Flow;
  FlowAttention causal(options, gen, nullptr, kFloat64);
  REQUIRE_THROWS_WITH(causal.forward(xq, xk, xk), Catch::Contains("[FlowAttention] causal") &&
                                                      Catch::Contains("L=5") && Catch::Contains("S=7"));
  REQUIRE_THROWS_WITH(causal.forward(xq, ones({2, 5})), Catch::Contains("[FlowAttention] padding masks"));
  // step() needs a causal layer, and a state of the layer's kind.
  AttentionDecodeState flow_state = causal.make_decode_state(2, 4);
  REQUIRE_THROWS_WITH(flow.step(randn({2, 1, 12}, gen, kFloat64), flow_state),
                      Catch::Contains("[FlowAttention] step() is incremental causal decoding"));
  REQUIRE_THROWS_WITH(flow.make_decode_state(2, 4), Catch::Contains("needs causal attention"));
  REQUIRE_THROWS_WITH(
      causal.step(randn({2, 2, 12}, gen, kFloat64), flow_state),
      Catch::Contains("[FlowAttention] step() expects x_t [B, 1, d_model=12], got [2, 2, 12]"));
  options.kind = AttentionKind::Softmax;
  FlowAttention causal_softmax(options, gen, nullptr, kFloat64);
  REQUIRE_THROWS_WITH(causal_softmax.step(randn({2, 1, 12}, gen, kFloat64), flow_state),
                      Catch::Contains("not made for this layer's softmax attention"));
  AttentionDecodeState softmax_state = causal_softmax.make_decode_state(2, 2);
  REQUIRE_THROWS_WITH(causal_softmax.step(randn({3, 1, 12}, gen, kFloat64), softmax_state),
                      Catch::Contains("step() expects x_t [B=2, 1, d_model=12], got [3, 1, 12]"));
  REQUIRE_THROWS_WITH(causal.step(randn({2, 1, 12}, gen, kFloat64), softmax_state),
                      Catch::Contains("not made for this layer's flow attention"));
  // A state holds at most its capacity, for either kind.
  for (AttentionDecodeState* state : {&softmax_state, &flow_state}) {
    FlowAttention& layer = state == &softmax_state ? causal_softmax : causal;
    state->reset();
    for (std::int64_t t = 0; t < state->capacity(); ++t)
      REQUIRE(layer.step(randn({2, 1, 12}, gen, kFloat64), *state).shape() == Shape{2, 1, 12});
    REQUIRE(state->position() == state->capacity());
    REQUIRE_THROWS_WITH(layer.step(randn({2, 1, 12}, gen, kFloat64), *state),
                        Catch::Contains("[FlowAttention] the decode state is full"));
  }
  CausalFlowAttentionState raw_state(2, 3, 4, 4, kFloat64);
  REQUIRE_THROWS_WITH(causal_softmax.step(randn({2, 1, 12}, gen, kFloat64), raw_state),
                      Catch::Contains("needs the flow kind"));
}

TEST_CASE("FlowAttention gradients through the masked and unmasked paths (float64 gradcheck)") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  const bool causal = GENERATE(false, true);
  INFO(attention_kind_name(kind) << (causal ? " causal" : " normal"));
  Generator gen(7);
  FlowAttentionLayerOptions options;
  options.d_model = 4;
  options.n_heads = 2;
  options.kind = kind;
  options.causal = causal;
  FlowAttention attention(options, gen, nullptr, kFloat64);
  // Larger weights than the 0.02 init, so the attention is far from uniform.
  for (const Tensor& p : attention.parameters()) {
    NoGradGuard no_grad;
    copy_(p, randn(p.shape(), gen, kFloat64, 0.0, 0.7));
  }
  const Tensor x = randn({2, 4, 4}, gen, kFloat64);
  require_gradients_match([&](const TensorList& in) { return attention.forward(in[0]); }, {x});
  if (!causal) {
    // The padded rows of element 0 are unspecified: weight only real rows.
    const Tensor mask = tensor({1, 1, 0, 1, 1, 1, 1, 1}, {2, 4});
    const Tensor real_rows = mask.unsqueeze(2).to(kFloat64);
    require_gradients_match([&](const TensorList& in) { return attention.forward(in[0], mask) * real_rows; },
                            {x});
  }
}

TEST_CASE("FlowAttention with padding equals the unpadded sequence alone") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(8);
  FlowAttentionLayerOptions options;
  options.d_model = 6;
  options.n_heads = 2;
  options.kind = kind;
  FlowAttention attention(options, gen, nullptr, kFloat64);
  for (const Tensor& p : attention.parameters()) {
    NoGradGuard no_grad;
    copy_(p, randn(p.shape(), gen, kFloat64, 0.0, 0.5));
  }
  // Element 0 has 3 real tokens at positions 0, 2, 3 (a hole), element 1 all 5.
  const Tensor x = randn({2, 5, 6}, gen, kFloat64);
  const Tensor mask = tensor({1, 0, 1, 1, 0, 1, 1, 1, 1, 1}, {2, 5});
  const Tensor out = attention.forward(x, mask);
  const Tensor x0 = concat({x.select(0, 0).narrow(0, 0, 1), x.select(0, 0).narrow(0, 2, 2)}, 0).unsqueeze(0);
  const Tensor alone = attention.forward(x0);
  const Tensor out0 = out.select(0, 0);
  require_close(concat({out0.narrow(0, 0, 1), out0.narrow(0, 2, 2)}, 0).unsqueeze(0), alone, 1e-10, 1e-12);
  require_close(out.narrow(0, 1, 1), attention.forward(x.narrow(0, 1, 1)), 1e-10, 1e-12);

  // Cross-attention with a key mask only: queries all real, padded keys hidden.
  const Tensor queries = randn({2, 3, 6}, gen, kFloat64);
  const Tensor cross = attention.forward(queries, x, x, mask);
  require_close(cross.narrow(0, 0, 1), attention.forward(queries.narrow(0, 0, 1), x0, x0), 1e-10, 1e-12);
}

TEST_CASE("FlowformerEncoder: shapes, padding mask, pooling, embedded inputs") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  const Pooling pooling = GENERATE(Pooling::Mean, Pooling::ClassToken);
  INFO(attention_kind_name(kind) << (pooling == Pooling::Mean ? " mean" : " class token"));
  Generator gen(9);
  FlowformerConfig config = tiny_config(kind);
  config.causal = false;
  FlowformerEncoder encoder(config, 3, pooling, gen, kFloat64);
  encoder.eval();
  const bool has_cls = pooling == Pooling::ClassToken;
  REQUIRE(encoder.cls_token.defined() == has_cls);
  REQUIRE(parameter(encoder, "head.weight").shape() == Shape{3, 8});
  REQUIRE(parameter(encoder, "transformer.wpe.weight").shape() == Shape{has_cls ? 9 : 8, 8});

  // Element 0: 5 real tokens then 3 padding (arbitrary ids); element 1: 8 real.
  Tensor tokens = random_tokens(2, 8, 11, gen);
  const Tensor mask = tensor({1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 8});
  const Tensor logits = encoder.forward(tokens, mask);
  REQUIRE(logits.shape() == Shape{2, 3});
  const Tensor alone0 = encoder.forward(tokens.narrow(0, 0, 1).narrow(1, 0, 5));
  const Tensor alone1 = encoder.forward(tokens.narrow(0, 1, 1));
  require_close(logits.narrow(0, 0, 1), alone0, 1e-9, 1e-12);
  require_close(logits.narrow(0, 1, 1), alone1, 1e-9, 1e-12);
  // Without the mask the padding changes element 0.
  REQUIRE(max_abs_difference(encoder.forward(tokens).narrow(0, 0, 1), alone0) > 1e-9);

  // forward(tokens) is forward_embedded of the token embeddings.
  const Tensor embedded = encoder.transformer->wte->forward(tokens);
  require_close(encoder.forward_embedded(embedded, mask), logits, 0.0, 0.0);
  REQUIRE(encoder.features_embedded(embedded, mask).shape() == Shape{2, 8});

  REQUIRE_THROWS_WITH(encoder.forward(random_tokens(1, 9, 11, gen)),
                      Catch::Contains("[FlowformerEncoder]") && Catch::Contains("T=9"));
  REQUIRE_THROWS_WITH(encoder.forward(tokens, ones({2, 7})), Catch::Contains("[FlowformerEncoder] mask"));
  REQUIRE_THROWS_WITH(encoder.forward_embedded(randn({2, 4, 5}, gen, kFloat64)),
                      Catch::Contains("[FlowformerEncoder]"));
}

TEST_CASE("FlowformerEncoder on features only (vocab_size 0), gradients reach every parameter") {
  Generator gen(10);
  FlowformerConfig config = tiny_config();
  config.vocab_size = 0;
  config.causal = false;
  config.dropout = 0.1;
  FlowformerEncoder encoder(config, 4, Pooling::ClassToken, gen);
  for (const auto& [name, p] : encoder.named_parameters()) REQUIRE(name.find("wte") == std::string::npos);
  const Tensor x = randn({3, 6, 8}, gen);
  const Tensor logits = encoder.forward_embedded(x);
  REQUIRE(logits.shape() == Shape{3, 4});
  cross_entropy(logits, from_vector(std::vector<std::int64_t>{0, 3, 1})).backward();
  for (const auto& [name, p] : encoder.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
  REQUIRE_THROWS_WITH(encoder.forward(random_tokens(1, 3, 5, gen)), Catch::Contains("vocab_size=0"));
}

TEST_CASE("FlowformerEncoder::attention_traces shows the attention each block computes") {
  const Pooling pooling = GENERATE(Pooling::Mean, Pooling::ClassToken);
  Generator gen(12);
  FlowformerConfig config = tiny_config(AttentionKind::Flow, 0);
  config.causal = false;
  FlowformerEncoder encoder(config, 3, pooling, gen, kFloat64);
  encoder.eval();
  const Tensor x = randn({2, 6, 8}, gen, kFloat64);
  const std::vector<FlowAttentionTrace> traces = encoder.attention_traces(x);
  REQUIRE(traces.size() == 2);

  // Re-run the trunk block by block: each trace, heads merged and projected,
  // is that block's attention output on its normalised input.
  const std::int64_t T = pooling == Pooling::ClassToken ? 7 : 6;
  Tensor hidden = pooling == Pooling::ClassToken ? concat({encoder.cls_token.expand({2, 1, 8}), x}, 1) : x;
  hidden = hidden + encoder.transformer->wpe->weight.narrow(0, 0, T);
  for (std::size_t layer = 0; layer < traces.size(); ++layer) {
    const auto& block = encoder.transformer->h->blocks()[layer];
    const FlowAttentionTrace& trace = traces[layer];
    REQUIRE(trace.out.shape() == Shape{2, 2, T, 4});
    REQUIRE(trace.attention_matrix().shape() == Shape{2, 2, T, T});
    const Tensor merged = trace.out.permute({0, 2, 1, 3}).reshape({2, T, 8});
    require_close(block->attn->out_projection->forward(merged), block->attn->forward(block->ln_1->forward(hidden)),
                  1e-12, 1e-14);
    hidden = block->forward(hidden);
  }

  FlowformerConfig softmax_config = config;
  softmax_config.attention = AttentionKind::Softmax;
  FlowformerEncoder softmax_encoder(softmax_config, 3, pooling, gen, kFloat64);
  REQUIRE_THROWS_WITH(softmax_encoder.attention_traces(x), Catch::Contains("softmax"));
  REQUIRE_THROWS_WITH(encoder.attention_traces(randn({2, 9, 8}, gen, kFloat64)), Catch::Contains("T=9"));
}

// ---------------------------------------------------------------------------
// Incremental decoding: the main test
// ---------------------------------------------------------------------------

namespace {

// Feeds every position of `tokens` [B, T] through an incremental decoder and
// compares each step's logits with row t of the full forward.
void require_incremental_matches_full(const FlowformerLM& model, const Tensor& tokens, double rtol,
                                      double atol) {
  const std::int64_t B = tokens.size(0), T = tokens.size(1);
  const Tensor full = model.forward(tokens);
  IncrementalDecoder decoder = model.start_decoding(B);
  for (std::int64_t t = 0; t < T; ++t) {
    INFO("position " << t);
    const Tensor step = decoder.next_logits(tokens.select(1, t).contiguous());
    REQUIRE(step.shape() == Shape{B, model.config().vocab_size});
    require_close(step, position_row(full, t), rtol, atol);
  }
  REQUIRE(decoder.position() == T);
}

}  // namespace

TEST_CASE("incremental decoding equals the full forward at every position, float64") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(11);
  FlowformerConfig config = tiny_config(kind);
  config.block_size = 150;  // past the causal kernel's 128-row chunks
  config.dropout = 0.1;     // eval() must switch it off in both paths
  config.vocab_size = 13;
  FlowformerLM model(config, gen, kFloat64);
  model.eval();
  require_incremental_matches_full(model, random_tokens(2, 150, 13, gen), 1e-10, 1e-12);
}

TEST_CASE("incremental decoding equals the full forward at every position, float32") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(12);
  const FlowformerConfig config = tiny_config(kind, /*vocab=*/17, /*block=*/140, /*layers=*/3, /*heads=*/4,
                                              /*embd=*/32);
  FlowformerLM model(config, gen, kFloat32);
  model.eval();
  require_incremental_matches_full(model, random_tokens(3, 140, 17, gen), 1e-3, 1e-5);
}

TEST_CASE("incremental decoding also matches a model with larger weights (sharper attention)") {
  Generator gen(13);
  FlowformerConfig config = tiny_config();
  config.block_size = 20;
  FlowformerLM model(config, gen, kFloat64);
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.find("ln_") != std::string::npos) continue;
    NoGradGuard no_grad;
    copy_(p, randn(p.shape(), gen, kFloat64, 0.0, 0.5));
  }
  model.eval();
  require_incremental_matches_full(model, random_tokens(2, 20, 11, gen), 1e-10, 1e-12);
}

TEST_CASE("IncrementalDecoder: reset, context limit and errors") {
  Generator gen(14);
  FlowformerConfig config = tiny_config();
  config.block_size = 4;
  FlowformerLM model(config, gen, kFloat64);
  model.eval();
  IncrementalDecoder decoder = model.start_decoding();
  const Tensor first = decoder.next_logits(3);
  REQUIRE(first.shape() == Shape{11});
  for (int i = 0; i < 3; ++i) decoder.next_logits(1);
  REQUIRE(decoder.position() == 4);
  REQUIRE_THROWS_WITH(decoder.next_logits(1), Catch::Contains("[IncrementalDecoder] the context is full") &&
                                                  Catch::Contains("block_size=4"));
  decoder.reset();
  REQUIRE(decoder.position() == 0);
  require_close(decoder.next_logits(3), first, 0.0, 0.0);
  REQUIRE_THROWS_WITH(decoder.next_logits(11), Catch::Contains("[embedding]"));
  REQUIRE_THROWS_WITH(decoder.next_logits(zeros({2}, kInt64)),
                      Catch::Contains("[IncrementalDecoder] expected int64 tokens [1]"));
  IncrementalDecoder batched = model.start_decoding(2);
  REQUIRE_THROWS_WITH(batched.next_logits(1), Catch::Contains("needs batch 1"));
  REQUIRE_THROWS_WITH(model.start_decoding(0), Catch::Contains("[IncrementalDecoder]"));
}

// ---------------------------------------------------------------------------
// Generation and sampling
// ---------------------------------------------------------------------------

TEST_CASE("greedy generation is reproducible and agrees with the full forward's arg-max") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(15);
  FlowformerConfig config = tiny_config(kind);
  config.block_size = 16;
  FlowformerLM model(config, gen, kFloat64);
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.find("ln_") != std::string::npos) continue;
    NoGradGuard no_grad;
    copy_(p, randn(p.shape(), gen, kFloat64, 0.0, 0.5));  // non-trivial predictions
  }
  model.eval();
  SamplingOptions greedy;
  greedy.greedy = true;
  Generator rng_a(1), rng_b(2);
  const std::vector<std::int64_t> prompt = {4, 2, 9};
  const auto a = model.generate(prompt, 13, greedy, rng_a);
  const auto b = model.generate(prompt, 13, greedy, rng_b);
  REQUIRE(a.size() == 16);
  REQUIRE(a == b);
  REQUIRE(std::vector<std::int64_t>(a.begin(), a.begin() + 3) == prompt);
  // Each new token is the arg-max of the last row of a full forward.
  for (std::size_t n = 3; n < a.size(); ++n) {
    const std::vector<std::int64_t> prefix(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n));
    const Tensor logits = model.forward(from_vector(prefix, {1, static_cast<std::int64_t>(n)}));
    const std::vector<double> last = logits.select(1, static_cast<std::int64_t>(n) - 1).to_vector<double>();
    const auto best = std::max_element(last.begin(), last.end()) - last.begin();
    REQUIRE(a[n] == best);
  }

  // top_k = 1 keeps only the arg-max: the same tokens, whatever the temperature.
  SamplingOptions top1;
  top1.top_k = 1;
  top1.temperature = 3.0;
  Generator rng_c(3);
  REQUIRE(model.generate(prompt, 13, top1, rng_c) == a);

  // Sampling: reproducible from the seed.
  SamplingOptions sample;
  sample.temperature = 1.5;
  Generator rng_d(4), rng_e(4);
  const auto s1 = model.generate(prompt, 13, sample, rng_d);
  REQUIRE(s1 == model.generate(prompt, 13, sample, rng_e));
  for (std::int64_t token : s1) REQUIRE((token >= 0 && token < 11));

  REQUIRE(model.generate(prompt, 0, sample, rng_d) == prompt);
  REQUIRE_THROWS_WITH(model.generate(prompt, 15, greedy, rng_a),
                      Catch::Contains("[FlowformerLM::generate]") && Catch::Contains("block_size=16"));
  REQUIRE_NOTHROW(model.generate(prompt, 14, greedy, rng_a));  // 16 positions exactly
  REQUIRE_THROWS_WITH(model.generate({}, 3, greedy, rng_a), Catch::Contains("at least one token"));
  REQUIRE_THROWS_WITH(model.generate(prompt, -1, greedy, rng_a), Catch::Contains("n_new"));
  REQUIRE_THROWS_WITH(model.generate({1, 11}, 2, greedy, rng_a), Catch::Contains("[embedding]"));
}

TEST_CASE("sample_token: temperature and top-k validation and behaviour") {
  Generator rng(16);
  const Tensor logits = tensor({0.0, std::log(3.0), -1.0, -2.0}, kFloat64);
  SamplingOptions options;
  for (double bad :
       {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    options.temperature = bad;
    INFO("temperature " << bad);
    REQUIRE_THROWS_WITH(sample_token(logits, options, rng), Catch::Contains("[sample_token] temperature"));
  }
  options.greedy = true;  // greedy ignores the temperature
  REQUIRE(sample_token(logits, options, rng) == 1);
  options = SamplingOptions();
  options.top_k = -1;
  REQUIRE_THROWS_WITH(sample_token(logits, options, rng), Catch::Contains("[sample_token] top_k"));
  REQUIRE_THROWS_WITH(sample_token(zeros({2, 2}), SamplingOptions(), rng), Catch::Contains("[sample_token]"));
  REQUIRE_THROWS_WITH(
      sample_token(tensor({0.0, std::numeric_limits<double>::quiet_NaN()}, kFloat64), SamplingOptions(), rng),
      Catch::Contains("[sample_token] logits contain NaN"));
  const double inf = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(sample_token(tensor({-inf, -inf}, kFloat64), SamplingOptions(), rng),
                      Catch::Contains("[sample_token] the largest logit is -inf"));

  // Frequencies follow softmax(logits / temperature) over the top k.
  auto frequencies = [&](const SamplingOptions& o, int draws) {
    std::vector<double> counts(4, 0.0);
    for (int i = 0; i < draws; ++i)
      counts[static_cast<std::size_t>(sample_token(logits, o, rng))] += 1.0 / draws;
    return counts;
  };
  options = SamplingOptions();
  options.top_k = 2;  // p = (1/4, 3/4, 0, 0)
  auto f = frequencies(options, 20000);
  REQUIRE(f[0] == Approx(0.25).margin(0.015));
  REQUIRE(f[1] == Approx(0.75).margin(0.015));
  REQUIRE(f[2] == 0.0);
  REQUIRE(f[3] == 0.0);
  options.temperature = 1e6;  // nearly uniform over the two kept tokens
  f = frequencies(options, 20000);
  REQUIRE(f[0] == Approx(0.5).margin(0.015));
  options.top_k = 100;  // more than the vocabulary: all tokens
  options.temperature = 1.0;
  f = frequencies(options, 20000);
  const double z = 1.0 + 3.0 + std::exp(-1.0) + std::exp(-2.0);
  REQUIRE(f[2] == Approx(std::exp(-1.0) / z).margin(0.015));
  REQUIRE(f[3] == Approx(std::exp(-2.0) / z).margin(0.015));
}

// ---------------------------------------------------------------------------
// Gradients of the whole model
// ---------------------------------------------------------------------------

TEST_CASE("FlowformerLM loss gradients match finite differences for every parameter (float64)") {
  const AttentionKind kind = GENERATE(AttentionKind::Flow, AttentionKind::Softmax);
  INFO(attention_kind_name(kind));
  Generator gen(17);
  const FlowformerConfig config = tiny_config(kind, /*vocab=*/5, /*block=*/4, /*layers=*/1, /*heads=*/2,
                                              /*embd=*/4);
  FlowformerLM model(config, gen, kFloat64);
  // O(1) weights, LayerNorm affine included, so every path carries gradient.
  for (const Tensor& p : model.parameters()) {
    NoGradGuard no_grad;
    copy_(p, randn(p.shape(), gen, kFloat64, 0.0, 0.6));
  }
  const Tensor tokens = from_vector(std::vector<std::int64_t>{1, 4, 0, 2, 2, 3}, {2, 3});
  const Tensor targets = from_vector(std::vector<std::int64_t>{4, 0, 3, 2, 1, 1}, {2, 3});
  model.zero_grad();
  model.loss(tokens, targets).backward();

  // Central differences on the parameters' own storage: the real module path.
  const double h = 1e-6;
  NoGradGuard no_grad;
  for (const auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.is_contiguous());
    const std::vector<double> analytic = p.grad().to_vector<double>();
    double* data = p.data<double>();
    for (std::int64_t k = 0; k < p.numel(); ++k) {
      const double original = data[k];
      data[k] = original + h;
      const double plus = model.loss(tokens, targets).item<double>();
      data[k] = original - h;
      const double minus = model.loss(tokens, targets).item<double>();
      data[k] = original;
      const double numeric = (plus - minus) / (2 * h);
      INFO("element " << k << ": analytic " << analytic[k] << " numeric " << numeric);
      REQUIRE(std::abs(analytic[k] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
    }
  }
}

TEST_CASE("FlowformerLM: dropout is reproducible from the seeds and off in eval mode") {
  Generator gen_a(18), gen_b(18);
  FlowformerConfig config = tiny_config();
  config.dropout = 0.3;
  FlowformerLM a(config, gen_a, kFloat64), b(config, gen_b, kFloat64);
  Generator token_gen(0);
  const Tensor tokens = random_tokens(2, 6, 11, token_gen);
  const Tensor train_a = a.forward(tokens);
  require_close(b.forward(tokens), train_a, 0.0, 0.0);             // same seed, same masks
  REQUIRE(max_abs_difference(a.forward(tokens), train_a) > 1e-9);  // the masks move on
  a.eval();
  const Tensor eval_a = a.forward(tokens);
  require_close(a.forward(tokens), eval_a, 0.0, 0.0);
}

TEST_CASE("FlowformerLM rebuilt from its config string and saved weights gives the same logits") {
  namespace fs = std::filesystem;
  const fs::path path =
      fs::temp_directory_path() / ("flowgrad_models_" + std::to_string(::getpid()) + ".safetensors");
  Generator gen(19);
  FlowformerConfig config = tiny_config(AttentionKind::Softmax);
  FlowformerLM original(config, gen);
  original.eval();
  original.save(path.string());
  const std::string stored = original.config().to_json();

  Generator other_seed(20);
  FlowformerLM restored(FlowformerConfig::from_json(stored), other_seed);
  restored.eval();
  const Tensor tokens = random_tokens(2, 5, 11, gen);
  REQUIRE(max_abs_difference(restored.forward(tokens), original.forward(tokens)) > 0.0);
  restored.load(path.string());
  fs::remove(path);
  require_close(restored.forward(tokens), original.forward(tokens), 0.0, 0.0);
}
