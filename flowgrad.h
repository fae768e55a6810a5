// flowgrad: tensors, reverse-mode autograd and Flow-Attention in C++.
// Include this one header to get the whole public API.
#pragma once

#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/shape.h"
#include "core/storage.h"
#include "core/tensor.h"

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"

#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace fg = flowgrad;
