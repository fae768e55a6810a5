// Embedding lookup: rows of a weight table picked by integer ids.
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// out[..., :] = weight[indices[...], :] for weight [V, C] and int64 indices of
// any shape; out has shape indices.shape + [C]. Ids must lie in [0, V).
// Differentiable w.r.t. weight only.
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace flowgrad
