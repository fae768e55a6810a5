#include "char_data.h"

#include <algorithm>

namespace charlm {

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
