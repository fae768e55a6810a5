// flowgrad: tensors, reverse-mode autograd and Flow-Attention in C++.
// Include this one header to get the whole public API.
#pragma once

#include "core/blas.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/idx.h"
#include "core/ts_file.h"
#include "core/offline_data.h"
#include "core/parallel.h"
#include "core/profile.h"
#include "core/random.h"
#include "core/serialize.h"
#include "core/shape.h"
#include "core/storage.h"
#include "core/tensor.h"
#include "core/version.h"

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/dropout.h"
#include "ops/embedding.h"
#include "ops/flow_attention.h"
#include "ops/flow_attention_trace.h"
#include "ops/linear.h"
#include "ops/loss.h"
#include "ops/normalization.h"
#include "ops/select.h"
#include "ops/shape_ops.h"
#include "ops/softmax.h"

#include "nn/module.h"
#include "nn/layers.h"
#include "nn/attention.h"
#include "nn/init.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "nn/checkpoint.h"

#include "dist/communicator.h"
#include "dist/data_parallel.h"

#include "models/char_lm.h"
#include "models/decision.h"
#include "models/flowformer.h"
#include "models/timeseries.h"
#include "models/vision.h"

namespace fg = flowgrad;
