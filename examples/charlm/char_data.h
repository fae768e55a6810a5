// Character-level data for the language model: the 90/10 train/validation
// split and random batches of (tokens, next tokens).
#pragma once

#include <string>
#include <vector>

#include "../../flowgrad.h"

namespace charlm {

// The vocabulary and the checkpoint's configuration are the library's
// (models/char_lm.h), shared with the C API.
using Vocabulary = fg::models::CharVocabulary;

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
