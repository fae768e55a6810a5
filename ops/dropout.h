// Dropout with an explicit generator, so masks are reproducible from a seed.
#pragma once

#include "../core/random.h"
#include "../core/tensor.h"

namespace flowgrad {

// Training: each element is kept with probability 1 − p and scaled by
// 1/(1 − p), else zeroed (p == 1 zeroes everything). Not training, or p == 0:
// returns x itself. p must lie in [0, 1]. The mask is drawn from `gen`, one
// uniform per element in row-major order.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace flowgrad
