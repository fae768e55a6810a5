// flow_inspect --html: one self-contained page (no network) for a small
// input: the computation graph with each node's value and gradient, heat maps
// of the attention matrix, of A and C, and of dℓ/dQ split by path, and a
// selector for the query position.
#pragma once

#include <string>
#include <vector>

#include "../../flowgrad.h"

namespace flow_inspect {

struct ReportInput {
  bool causal = false;
  std::vector<int> mask;                    // empty: no key padding mask
  fg::Tensor queries, keys, values;         // one head: [N, D], [S, D], [S, M]
  const fg::FlowAttentionInspection* kernel = nullptr;
  fg::Tensor attention_matrix;              // [N, S]
  fg::Tensor dq_via_allocation, dq_via_competition, dq_other;  // [N, D]
};

// The page, as text.
std::string html_report(const ReportInput& input);

}  // namespace flow_inspect
