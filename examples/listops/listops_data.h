// ListOps, the long-sequence task of the Long Range Arena (Nangia & Bowman
// 2018; Tay et al. 2021): a nested expression over the digits 0-9,
//   [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5
// with the operators MAX, MIN, MED (median; for an even count the floor of
// the mean of the middle two) and SM (sum modulo 10). The answer is a digit,
// so the task is a 10-class classification of the token sequence.
//
// Written from that description: each argument of an operator is a digit
// with probability value_probability (always at max_depth), otherwise a
// nested operator with 2..max_args arguments; expressions longer than
// max_length are abandoned and shorter than min_length rejected. A seed
// gives a fixed data set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../flowgrad.h"
#include "../common/classifier_training.h"

namespace listops {

namespace fg = flowgrad;

// Token ids: 0 is padding, so a mask is tokens != 0.
enum Token : std::int64_t { kPad = 0, kDigit0 = 1, kMax = 11, kMin = 12, kMed = 13, kSumMod = 14, kClose = 15 };
inline constexpr std::int64_t kVocabSize = 16;

struct GeneratorOptions {
  std::int64_t min_length = 100, max_length = 500;  // in tokens
  std::int64_t max_depth = 10, max_args = 10;
  double value_probability = 0.75;
};

struct Example {
  std::vector<std::int64_t> tokens;
  std::int64_t answer;
};

// One random expression within the length bounds, and its value.
Example generate_example(const GeneratorOptions& options, fg::Generator& gen);
// The value of an expression (throws "[listops] ..." on a malformed one).
std::int64_t evaluate(const std::vector<std::int64_t>& tokens);
std::string to_text(const std::vector<std::int64_t>& tokens);  // "[MAX 4 3 ]"

// The configuration listops stores in its checkpoints, as JSON:
//   {"kind": "listops", "data": "<the data set's description>",
//    "pooling": "mean" | "cls", "encoder": {FlowformerConfig}}
struct CheckpointConfig {
  std::string data, pooling;
  fg::models::FlowformerConfig encoder;
};
std::string checkpoint_config(const std::string& data, const std::string& pooling,
                              const fg::models::FlowformerConfig& encoder);
CheckpointConfig parse_checkpoint_config(const std::string& text);  // throws "[listops] ..." when malformed

class ListOpsData {
 public:
  ListOpsData(std::int64_t train_size, std::int64_t test_size, const GeneratorOptions& options, std::uint64_t seed);
  // Tokens int64 [B, T] padded with kPad to the longest in the batch, mask [B, T], labels [B].
  examples::LabelledBatch batch(bool train, const std::vector<std::int64_t>& indices) const;
  examples::ClassificationData as_classification_data() const;
  const std::vector<Example>& split(bool train) const { return train ? train_ : test_; }

 private:
  std::vector<Example> train_, test_;
};

}  // namespace listops
