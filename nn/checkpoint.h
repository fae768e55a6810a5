// Training checkpoints: everything needed to resume a run bit for bit, in
// one safetensors file (written atomically):
//   tensors   "model.<name>"  the module's state_dict()
//             "optim.<name>"  the optimizer's state_dict()
//   metadata  "format"  "flowgrad-checkpoint-1"
//             "step"    the training step, in decimal
//             "rng"     a JSON object {name: Generator::state()}
//             "config"  free-form text from the caller (e.g. the run's JSON config)
// Hyper-parameters are not stored as tensors: the caller rebuilds the model
// and optimizer from "config", then loads the checkpoint into them.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "../core/random.h"
#include "module.h"
#include "optim.h"

namespace flowgrad::nn {

struct CheckpointInfo {
  std::int64_t step = 0;
  std::string config;
};

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     std::int64_t step, const std::map<std::string, const Generator*>& rngs,
                     const std::string& config);

// Reads the config only, e.g. to build the model before loading into it.
CheckpointInfo read_checkpoint_info(const std::string& path);

// Restores model, optimizer and every generator named in `rngs` (each must
// be in the file; others in the file are ignored). Everything is checked
// before anything changes: on error (a missing, unexpected or mis-shaped
// tensor, named in the message) the objects are left as they were.
CheckpointInfo load_checkpoint(const std::string& path, Module& model, Optimizer& optimizer,
                               const std::map<std::string, Generator*>& rngs);

// Loads only the model's weights ("model.*") of a training checkpoint, e.g.
// for evaluation or sampling, converted to the model's dtype. Names and
// shapes are checked as by load_state_dict.
CheckpointInfo load_model_weights(const std::string& path, Module& model);

}  // namespace flowgrad::nn
