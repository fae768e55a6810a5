#include "char_data.h"

#include <algorithm>
#include <optional>
#include <sstream>
#include <string_view>

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

namespace {

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  return hex;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  fg::fail("charlm", "the checkpoint's vocabulary holds '", c, "', not a lower-case hex digit");
}

std::string from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) fg::fail("charlm", "the checkpoint's vocabulary has an odd number of hex digits");
  std::string bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(hex_digit(hex[i]) * 16 + hex_digit(hex[i + 1])));
  return bytes;
}

}  // namespace

std::string checkpoint_config(const fg::models::FlowformerConfig& config, const Vocabulary& vocab) {
  return config.to_string() + "vocabulary=" + to_hex(vocab.chars()) + "\n";
}

CheckpointConfig parse_checkpoint_config(const std::string& text) {
  std::istringstream lines(text);
  std::string line, model_lines;
  std::optional<std::string> chars;
  while (std::getline(lines, line)) {
    if (line.rfind("vocabulary=", 0) == 0) {
      if (chars) fg::fail("charlm", "the checkpoint's configuration holds two vocabularies");
      chars = from_hex(std::string_view(line).substr(11));
    } else {
      model_lines += line + "\n";
    }
  }
  if (!chars) fg::fail("charlm", "the checkpoint has no vocabulary: it was not written by charlm");
  CheckpointConfig config{fg::models::FlowformerConfig::from_string(model_lines), Vocabulary(*chars)};
  // Vocabulary() sorts and removes repeats: what charlm writes is unchanged by that.
  if (config.vocab.chars() != *chars || config.vocab.size() != config.model.vocab_size)
    fg::fail("charlm", "the checkpoint's vocabulary of ", chars->size(), " characters is not sorted and unique, or does "
             "not match its vocab_size=", config.model.vocab_size);
  return config;
}

std::string read_text_file(const std::string& path) {
  std::string text = fg::read_file_contents("charlm --data", path);
  if (text.empty()) fg::fail("charlm --data", "'", path, "' is empty");
  return text;
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

Batch Dataset::sample(bool train, std::int64_t batch, std::int64_t block, fg::Generator& gen, std::int64_t first,
                      std::int64_t rows) const {
  const std::vector<std::int64_t>& ids = train ? train_ : validation_;
  const std::int64_t windows = static_cast<std::int64_t>(ids.size()) - block;
  if (windows < 1)
    fg::fail("charlm", "the ", train ? "training" : "validation", " split has ", ids.size(),
             " characters, too few for a block of ", block);
  if (rows < 0) rows = batch;
  if (first < 0 || first + rows > batch) fg::fail("charlm", "rows [", first, ", ", first + rows, ") of a batch of ", batch);
  Batch out{fg::empty({rows, block}, fg::kInt64), fg::empty({rows, block}, fg::kInt64)};
  std::int64_t* tokens = out.tokens.data<std::int64_t>();
  std::int64_t* targets = out.targets.data<std::int64_t>();
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto start = static_cast<std::ptrdiff_t>(gen.next_u64() % static_cast<std::uint64_t>(windows));
    if (b < first || b >= first + rows) continue;
    std::copy_n(ids.begin() + start, block, tokens + (b - first) * block);
    std::copy_n(ids.begin() + start + 1, block, targets + (b - first) * block);
  }
  return out;
}

}  // namespace charlm
