// Character-level data for the language model: the vocabulary (every
// distinct byte of the text, sorted), the 90/10 train/validation split and
// random batches of (tokens, next tokens).
#pragma once

#include <string>
#include <vector>

#include "../../flowgrad.h"

namespace charlm {

class Vocabulary {
 public:
  Vocabulary() = default;
  explicit Vocabulary(const std::string& text);  // all distinct characters, sorted

  std::int64_t size() const { return static_cast<std::int64_t>(chars_.size()); }
  // Throws naming the first character that is not in the vocabulary.
  std::vector<std::int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<std::int64_t>& ids) const;
  const std::string& chars() const { return chars_; }

 private:
  std::string chars_;
  int index_[256];
};

// The configuration charlm stores in its checkpoints: the model's lines
// (FlowformerConfig::to_string), then "vocabulary=<hex>", the characters in
// id order. parse_checkpoint_config checks that the vocabulary is sorted,
// without repeats, and as large as vocab_size.
std::string checkpoint_config(const fg::models::FlowformerConfig& config, const Vocabulary& vocab);
struct CheckpointConfig {
  fg::models::FlowformerConfig model;
  Vocabulary vocab;
};
CheckpointConfig parse_checkpoint_config(const std::string& text);

// The whole file; a missing, unreadable or empty file is an error naming it.
std::string read_text_file(const std::string& path);

struct Batch {
  fg::Tensor tokens;   // int64 [batch, block]
  fg::Tensor targets;  // int64 [batch, block]: tokens shifted by one
};

class Dataset {
 public:
  // Encodes `text` and splits it: the first 90% for training, the rest for validation.
  Dataset(const std::string& text, const Vocabulary& vocab);

  // `batch` random windows of `block` + 1 characters from the split; with
  // `rows`, only the windows [first, first + rows) of them are returned (a
  // rank's share; the generator advances over the whole batch either way).
  Batch sample(bool train, std::int64_t batch, std::int64_t block, fg::Generator& gen, std::int64_t first = 0,
               std::int64_t rows = -1) const;
  std::int64_t size(bool train) const;
  const std::vector<std::int64_t>& ids(bool train) const { return train ? train_ : validation_; }

 private:
  std::vector<std::int64_t> train_, validation_;
};

}  // namespace charlm
