#include "char_data.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace charlm {

Vocabulary::Vocabulary(const std::string& text) {
  bool seen[256] = {};
  for (unsigned char c : text) seen[c] = true;
  std::fill(std::begin(index_), std::end(index_), -1);
  for (int c = 0; c < 256; ++c) {
    if (!seen[c]) continue;
    index_[c] = static_cast<int>(chars_.size());
    chars_.push_back(static_cast<char>(c));
  }
}

std::vector<std::int64_t> Vocabulary::encode(const std::string& text) const {
  std::vector<std::int64_t> ids;
  ids.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int id = index_[static_cast<unsigned char>(text[i])];
    if (id < 0)
      fg::fail("charlm", "character '", text[i], "' (byte ", static_cast<int>(static_cast<unsigned char>(text[i])),
               ") at position ", i, " is not in the model's vocabulary");
    ids.push_back(id);
  }
  return ids;
}

std::string Vocabulary::decode(const std::vector<std::int64_t>& ids) const {
  std::string text;
  for (std::int64_t id : ids) {
    if (id < 0 || id >= size()) fg::fail("charlm", "token id ", id, " is outside the vocabulary of ", size());
    text.push_back(chars_[static_cast<std::size_t>(id)]);
  }
  return text;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fg::fail("charlm", "cannot read the data file '", path, "'");
  std::ostringstream contents;
  contents << in.rdbuf();
  if (!in.good() && !in.eof()) fg::fail("charlm", "error while reading '", path, "'");
  return contents.str();
}

Dataset::Dataset(const std::string& text, const Vocabulary& vocab) {
  std::vector<std::int64_t> ids = vocab.encode(text);
  const std::size_t split = ids.size() * 9 / 10;
  train_.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(split));
  validation_.assign(ids.begin() + static_cast<std::ptrdiff_t>(split), ids.end());
}

std::int64_t Dataset::size(bool train) const {
  return static_cast<std::int64_t>((train ? train_ : validation_).size());
}

Batch Dataset::sample(bool train, std::int64_t batch, std::int64_t block, fg::Generator& gen) const {
  const std::vector<std::int64_t>& ids = train ? train_ : validation_;
  const std::int64_t windows = static_cast<std::int64_t>(ids.size()) - block;
  if (windows < 1)
    fg::fail("charlm", "the ", train ? "training" : "validation", " split has ", ids.size(),
             " characters, too few for a block of ", block);
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(batch * block)), targets(tokens.size());
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto start = static_cast<std::size_t>(gen.next_u64() % static_cast<std::uint64_t>(windows));
    std::copy_n(ids.begin() + static_cast<std::ptrdiff_t>(start), block, tokens.begin() + b * block);
    std::copy_n(ids.begin() + static_cast<std::ptrdiff_t>(start) + 1, block, targets.begin() + b * block);
  }
  return {fg::from_vector(tokens, {batch, block}), fg::from_vector(targets, {batch, block})};
}

}  // namespace charlm
