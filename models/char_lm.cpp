#include "char_lm.h"

#include <algorithm>

#include "../core/json_object.h"
#include "../core/serialize.h"
#include "../nn/checkpoint.h"

namespace flowgrad::models {

CharVocabulary::CharVocabulary(const std::string& text) {
  bool seen[256] = {};
  for (unsigned char c : text) seen[c] = true;
  std::fill(std::begin(index_), std::end(index_), -1);
  for (int c = 0; c < 256; ++c) {
    if (!seen[c]) continue;
    index_[c] = static_cast<int>(chars_.size());
    chars_.push_back(static_cast<char>(c));
  }
}

std::vector<std::int64_t> CharVocabulary::encode(const std::string& text) const {
  std::vector<std::int64_t> ids;
  ids.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int id = index_[static_cast<unsigned char>(text[i])];
    if (id < 0) {
      // The byte itself is shown only when printable: messages end up in logs and C strings.
      const int byte = static_cast<unsigned char>(text[i]);
      const std::string shown = byte >= 32 && byte < 127 ? std::string("character '") + text[i] + "' (byte " : "(byte ";
      fail("CharVocabulary::encode", shown, byte, ") at position ", i, " is not in the model's vocabulary");
    }
    ids.push_back(id);
  }
  return ids;
}

std::string CharVocabulary::decode(const std::vector<std::int64_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (std::int64_t id : ids) {
    if (id < 0 || id >= size())
      fail("CharVocabulary::decode", "token id ", id, " is outside the vocabulary of ", size());
    text.push_back(chars_[static_cast<std::size_t>(id)]);
  }
  return text;
}

// ---------------------------------------------------------------------------
// The checkpoint's configuration
// ---------------------------------------------------------------------------

namespace {
constexpr const char* kCharLMOp = "CharLMConfig";
constexpr const char* kCharLMKind = "char_lm";
}  // namespace

std::string CharLMConfig::to_json() const {
  nlohmann::json bytes = nlohmann::json::array();
  for (unsigned char c : vocabulary.chars()) bytes.push_back(static_cast<int>(c));
  const nlohmann::json config{
      {"kind", kCharLMKind}, {"model", nlohmann::json::parse(model.to_json())}, {"vocabulary", bytes}};
  return config.dump();
}

CharLMConfig CharLMConfig::from_json(const std::string& text) {
  const nlohmann::json json = parse_json(text, kCharLMOp);
  JsonObjectReader reader(json, kCharLMOp);
  reader.expect_kind(kCharLMKind, "charlm");
  CharLMConfig config;
  config.model = FlowformerConfig::from_json(reader.object("model").dump());
  if (!reader.has("vocabulary")) fail(kCharLMOp, "the configuration has no vocabulary");
  const nlohmann::json& bytes = json.at("vocabulary");
  if (!bytes.is_array()) fail(kCharLMOp, "\"vocabulary\" must be an array of byte values");
  std::string chars;
  for (const nlohmann::json& byte : bytes) {
    if (!byte.is_number_unsigned() || byte.get<std::uint64_t>() > 255)
      fail(kCharLMOp, "\"vocabulary\" holds ", byte.is_structured() ? std::string("a container") : byte.dump().substr(0, 40),
           ", not a byte value in [0, 255]");
    chars.push_back(static_cast<char>(byte.get<std::uint64_t>()));
  }
  reader.finish();
  config.vocabulary = CharVocabulary(chars);
  // CharVocabulary() sorts and removes repeats: what charlm writes is unchanged by that.
  if (config.vocabulary.chars() != chars || config.vocabulary.size() != config.model.vocab_size)
    fail(kCharLMOp, "the vocabulary of ", chars.size(), " bytes is not sorted and unique, or does not match ",
         "vocab_size=", config.model.vocab_size);
  return config;
}

CharLM load_char_lm(const std::string& path, DType dtype) {
  const SafetensorsFile file = load_safetensors_file(path);  // read once: configuration and weights agree
  CharLMConfig config;
  try {
    config = CharLMConfig::from_json(nn::read_checkpoint_info(file, path).config);
  } catch (const Error& e) {
    fail("load_char_lm", "'", path, "': ", e.what());
  }
  Generator init_gen(0);  // every weight is then overwritten by the checkpoint's
  CharLM loaded{std::make_unique<FlowformerLM>(config.model, init_gen, dtype), config.vocabulary};
  nn::load_model_weights(file, path, *loaded.model);
  loaded.model->eval();
  return loaded;
}

// ---------------------------------------------------------------------------
// Unbounded generation
// ---------------------------------------------------------------------------

TokenStream::TokenStream(const FlowformerLM& model, std::vector<std::int64_t> prompt, const SamplingOptions& sampling,
                         Generator rng)
    : model_(&model), sampling_(sampling), rng_(std::move(rng)), decoder_(model.start_decoding(1)), context_(std::move(prompt)) {
  if (context_.empty()) fail("TokenStream", "the prompt must hold at least one token");
  for (std::int64_t token : context_)
    if (token < 0 || token >= model.config().vocab_size)
      fail("TokenStream", "prompt token ", token, " is outside the vocabulary of ", model.config().vocab_size);
  sampling_.validate();
}

std::int64_t TokenStream::next() {
  const auto block = static_cast<std::size_t>(model_->config().block_size);
  if (context_.size() >= block) {
    // Keep the last half block (at least one token) and decode it afresh.
    context_.erase(context_.begin(), context_.end() - static_cast<std::ptrdiff_t>(std::max<std::size_t>(block / 2, 1)));
    decoder_.reset();
    fed_ = 0;
  }
  while (fed_ < context_.size()) {
    logits_ = decoder_.next_logits(context_[fed_]);
    ++fed_;  // only once fed: a failed step is retried
  }
  Generator rng = rng_;  // drawn from a copy, so a failure leaves the stream as it was
  const std::int64_t token = sample_token(logits_, sampling_, rng);
  context_.push_back(token);
  rng_ = rng;
  return token;
}

}  // namespace flowgrad::models
