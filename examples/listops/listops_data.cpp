#include "listops_data.h"

#include "../../core/json_object.h"

#include <algorithm>
#include <numeric>
#include <optional>

namespace listops {

namespace {

std::int64_t apply(std::int64_t op, std::vector<std::int64_t> args) {
  switch (op) {
    case kMax: return *std::max_element(args.begin(), args.end());
    case kMin: return *std::min_element(args.begin(), args.end());
    case kSumMod: return std::accumulate(args.begin(), args.end(), std::int64_t{0}) % 10;
    case kMed: {
      std::sort(args.begin(), args.end());
      const std::size_t n = args.size();
      return n % 2 == 1 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
    }
    default: fg::fail("listops", "token ", op, " is not an operator");
  }
}

double uniform(fg::Generator& gen) { return static_cast<double>(gen.next_u64() >> 11) * 0x1.0p-53; }

// Appends one operator expression at `depth`; false once it exceeds max_length.
bool append_expression(const GeneratorOptions& o, fg::Generator& gen, std::int64_t depth,
                       std::vector<std::int64_t>& tokens) {
  tokens.push_back(kMax + static_cast<std::int64_t>(gen.next_u64() % 4));
  const std::int64_t args = 2 + static_cast<std::int64_t>(gen.next_u64() % static_cast<std::uint64_t>(o.max_args - 1));
  for (std::int64_t a = 0; a < args; ++a) {
    if (depth + 1 >= o.max_depth || uniform(gen) < o.value_probability) {
      tokens.push_back(kDigit0 + static_cast<std::int64_t>(gen.next_u64() % 10));
    } else if (!append_expression(o, gen, depth + 1, tokens)) {
      return false;
    }
    if (static_cast<std::int64_t>(tokens.size()) >= o.max_length) return false;
  }
  tokens.push_back(kClose);
  return static_cast<std::int64_t>(tokens.size()) <= o.max_length;
}

}  // namespace

std::int64_t evaluate(const std::vector<std::int64_t>& tokens) {
  std::vector<std::pair<std::int64_t, std::vector<std::int64_t>>> open;  // operator, arguments so far
  std::optional<std::int64_t> result;
  for (std::int64_t token : tokens) {
    if (result) fg::fail("listops", "tokens after the end of the expression");
    if (token >= kDigit0 && token < kDigit0 + 10) {
      if (open.empty()) fg::fail("listops", "a digit outside any list");
      open.back().second.push_back(token - kDigit0);
    } else if (token >= kMax && token <= kSumMod) {
      open.push_back({token, {}});
    } else if (token == kClose) {
      if (open.empty() || open.back().second.empty()) fg::fail("listops", "\"]\" closes no non-empty list");
      const std::int64_t value = apply(open.back().first, open.back().second);
      open.pop_back();
      if (open.empty()) result = value; else open.back().second.push_back(value);
    } else {
      fg::fail("listops", "unknown token ", token);
    }
  }
  if (!result) fg::fail("listops", "the expression is not closed");
  return *result;
}

std::string to_text(const std::vector<std::int64_t>& tokens) {
  static const char* const names[] = {"<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
                                      "[MAX", "[MIN", "[MED", "[SM", "]"};
  std::string text;
  for (std::int64_t token : tokens) {
    if (token < 0 || token >= kVocabSize) fg::fail("listops", "unknown token ", token);
    if (!text.empty()) text += ' ';
    text += names[token];
  }
  return text;
}

Example generate_example(const GeneratorOptions& o, fg::Generator& gen) {
  if (o.min_length < 3 || o.max_length < o.min_length || o.max_depth < 1 || o.max_args < 2 ||
      !(o.value_probability > 0.0 && o.value_probability < 1.0))
    fg::fail("listops", "bad generator options: lengths ", o.min_length, "..", o.max_length, ", depth ", o.max_depth,
             ", args ", o.max_args, ", value probability ", o.value_probability);
  std::vector<std::int64_t> tokens;
  for (std::int64_t attempt = 0; attempt < 1'000'000; ++attempt) {
    tokens.clear();
    if (append_expression(o, gen, 0, tokens) && static_cast<std::int64_t>(tokens.size()) >= o.min_length)
      return {tokens, evaluate(tokens)};
  }
  fg::fail("listops", "no expression of ", o.min_length, "..", o.max_length,
           " tokens in a million attempts; widen the length range");
}

std::string checkpoint_config(const std::string& data, const std::string& pooling,
                              const fg::models::FlowformerConfig& encoder) {
  const nlohmann::json config{{"kind", "listops"},
                              {"data", data},
                              {"pooling", pooling},
                              {"encoder", nlohmann::json::parse(encoder.to_json())}};
  return config.dump();
}

CheckpointConfig parse_checkpoint_config(const std::string& text) {
  const nlohmann::json json = fg::parse_json(text, "listops");
  fg::JsonObjectReader reader(json, "listops");
  CheckpointConfig config;
  reader.expect_kind("listops", "listops train");
  reader.read("data", config.data);
  reader.read("pooling", config.pooling);
  if (config.pooling != "mean" && config.pooling != "cls")
    fg::fail("listops", "the checkpoint's pooling is \"", config.pooling.substr(0, 20), "\", not mean or cls");
  config.encoder = fg::models::FlowformerConfig::from_json(reader.object("encoder").dump());
  reader.finish();
  return config;
}

ListOpsData::ListOpsData(std::int64_t train_size, std::int64_t test_size, const GeneratorOptions& options,
                         std::uint64_t seed) {
  if (train_size < 1 || test_size < 1)
    fg::fail("listops", "--train-size and --test-size must be positive, got ", train_size, " and ", test_size);
  fg::Generator gen(seed);
  for (std::int64_t i = 0; i < train_size; ++i) train_.push_back(generate_example(options, gen));
  for (std::int64_t i = 0; i < test_size; ++i) test_.push_back(generate_example(options, gen));
}

examples::LabelledBatch ListOpsData::batch(bool train, const std::vector<std::int64_t>& indices) const {
  const std::vector<Example>& examples = split(train);
  std::size_t longest = 0;
  for (std::int64_t i : indices) longest = std::max(longest, examples.at(static_cast<std::size_t>(i)).tokens.size());
  const auto B = static_cast<std::int64_t>(indices.size()), T = static_cast<std::int64_t>(longest);
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(B * T), kPad), labels;
  std::vector<float> mask(tokens.size(), 0.0f);
  for (std::int64_t b = 0; b < B; ++b) {
    const Example& example = examples[static_cast<std::size_t>(indices[static_cast<std::size_t>(b)])];
    std::copy(example.tokens.begin(), example.tokens.end(), tokens.begin() + b * T);
    std::fill_n(mask.begin() + b * T, example.tokens.size(), 1.0f);
    labels.push_back(example.answer);
  }
  return {fg::from_vector(tokens, {B, T}), fg::from_vector(mask, {B, T}), fg::from_vector(labels)};
}

examples::ClassificationData ListOpsData::as_classification_data() const {
  return {static_cast<std::int64_t>(train_.size()), static_cast<std::int64_t>(test_.size()),
          [this](bool train, const std::vector<std::int64_t>& indices) { return batch(train, indices); }};
}

}  // namespace listops
