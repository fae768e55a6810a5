// Dropout with an explicit generator, so masks are reproducible from a seed.
#pragma once

#include "../core/random.h"
#include "../core/tensor.h"

namespace flowgrad {

// Training: each element is kept with probability 1 − p and scaled by
// 1/(1 − p), else zeroed (p == 1 zeroes everything). Not training, or p == 0:
// returns x itself. p must lie in [0, 1]. The mask takes one 64-bit draw
// from `gen` as the key of a Philox4x32 stream (core/random.h): element i's
// bit (row-major) depends on the key and i only, not on the thread count.
// Backward recomputes the mask from the key instead of saving it.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace flowgrad
