// A character-level language model as the charlm program trains it: a
// FlowformerLM over the distinct bytes of a text. What a checkpoint needs
// besides the weights (the vocabulary), loading one, and unbounded
// generation. The C API and the charlm program share all of it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flowformer.h"

namespace flowgrad::models {

// The distinct bytes of a text, sorted; a byte's id is its rank.
class CharVocabulary {
 public:
  CharVocabulary() : CharVocabulary(std::string()) {}  // empty: encode refuses every byte
  explicit CharVocabulary(const std::string& text);

  std::int64_t size() const { return static_cast<std::int64_t>(chars_.size()); }
  // Throws naming the first character that is not in the vocabulary.
  std::vector<std::int64_t> encode(const std::string& text) const;
  // Throws naming the first id outside [0, size()).
  std::string decode(const std::vector<std::int64_t>& ids) const;
  const std::string& chars() const { return chars_; }

 private:
  std::string chars_;
  int index_[256];
};

// The configuration a character-model checkpoint stores, as JSON:
//   {"kind": "char_lm", "model": {FlowformerConfig}, "vocabulary": [byte, ...]}
// The vocabulary is a list of byte values (a text need not be UTF-8);
// from_json checks that it is sorted, without repeats and as large as
// vocab_size.
struct CharLMConfig {
  FlowformerConfig model;
  CharVocabulary vocabulary;

  std::string to_json() const;
  static CharLMConfig from_json(const std::string& text);
};

// A trained character model rebuilt from a checkpoint, in eval mode.
struct CharLM {
  std::unique_ptr<FlowformerLM> model;
  CharVocabulary vocabulary;
};

// Builds the model the checkpoint's configuration describes and loads its
// weights (stored in float32; a float64 model gets them converted). Errors
// name the file.
CharLM load_char_lm(const std::string& path, DType dtype = kFloat32);

// Samples an unbounded stream of tokens after a prompt, one decoding step
// per token. The position table holds block_size positions: when the context
// holds block_size tokens (the last position is left unused, as charlm
// sample always did), the decoder is re-primed with the last half block and
// goes on. The model must outlive the stream. After a failed next() the
// stream is unchanged and next() may be called again.
class TokenStream {
 public:
  // Draws from its own copy of `rng`.
  TokenStream(const FlowformerLM& model, std::vector<std::int64_t> prompt, const SamplingOptions& sampling,
              Generator rng);
  // Samples the next token (and feeds it back as context for the one after).
  std::int64_t next();

 private:
  const FlowformerLM* model_;
  SamplingOptions sampling_;
  Generator rng_;
  IncrementalDecoder decoder_;
  std::vector<std::int64_t> context_;  // the tokens since decoder_ last started; [0, fed_) are fed
  std::size_t fed_ = 0;
  Tensor logits_;  // after context_[fed_ - 1]
};

}  // namespace flowgrad::models
