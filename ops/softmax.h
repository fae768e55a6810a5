// softmax and log_softmax along one dim (negative dims count from the end),
// numerically stable (the row max is subtracted before exponentiating).
#pragma once

#include "../core/tensor.h"

namespace flowgrad {

// y_i = e^(x_i − m) / Σ_j e^(x_j − m), m = max_j x_j, over the slices along `dim`.
Tensor softmax(const Tensor& x, std::int64_t dim);
// y_i = x_i − m − log Σ_j e^(x_j − m): log(softmax(x)) without underflow to −inf.
Tensor log_softmax(const Tensor& x, std::int64_t dim);

}  // namespace flowgrad
