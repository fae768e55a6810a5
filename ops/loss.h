// Losses.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// Mean over the non-ignored rows of −log_softmax(logits)[row, target[row]]
// (PyTorch's cross_entropy with reduction='mean'). logits [N, C], or [..., C]
// whose leading dims are flattened into N; targets int64 of shape [N] or the
// leading shape [...]. Rows whose target equals ignore_index contribute
// nothing and are not counted; when every row is ignored the result is NaN
// (0/0), as in PyTorch. Returns a 0-dim tensor of logits' dtype.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index = -100);

// Mean over the non-ignored rows of −log_probs[row, target[row]] (PyTorch's
// nll_loss with reduction='mean'): cross_entropy for inputs that already are
// log-probabilities. Same shapes, targets and ignore_index rules.
Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, std::int64_t ignore_index = -100);

// Mean of (input − target)² over all elements (reduction='mean'); input and
// target of the same shape and float dtype, both differentiable.
Tensor mse_loss(const Tensor& input, const Tensor& target);

}  // namespace flowgrad
