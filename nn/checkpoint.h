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
#include <optional>
#include <string>
#include <vector>

#include "../core/random.h"
#include "../core/serialize.h"
#include "module.h"
#include "optim.h"

namespace flowgrad::nn {

struct CheckpointInfo {
  std::int64_t step = 0;
  std::string config;
  std::vector<std::string> generators;  // names of the generator states it holds
};

// The tensors a checkpoint holds, under their names in the file:
// "model.<name>" and "optim.<name>" (sharing storage with the objects).
std::map<std::string, Tensor> training_state(const Module& model, const Optimizer& optimizer);

// The first element that is a NaN or an infinity among float tensors
// (by name, then in row-major order), or nothing when all are finite.
struct NonFiniteValue {
  std::string name;
  std::int64_t index = 0;  // row-major element index
  double value = 0.0;
};
std::optional<NonFiniteValue> find_nonfinite(const std::map<std::string, Tensor>& tensors);
std::optional<NonFiniteValue> find_nonfinite(const NamedTensors& tensors);

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     std::int64_t step, const std::map<std::string, const Generator*>& rngs,
                     const std::string& config);

// Reads the config only, e.g. to build the model before loading into it.
CheckpointInfo read_checkpoint_info(const std::string& path);
// The same for a file already read (e.g. parse_safetensors of bytes in
// memory); `name` stands for the path in messages.
CheckpointInfo read_checkpoint_info(const SafetensorsFile& file, const std::string& name);

// Restores model, optimizer and every generator named in `rngs` (each must
// be in the file; others in the file are ignored). Everything is checked
// before anything changes: on error (a missing, unexpected or mis-shaped
// tensor, named in the message) the objects are left as they were.
CheckpointInfo load_checkpoint(const std::string& path, Module& model, Optimizer& optimizer,
                               const std::map<std::string, Generator*>& rngs);
CheckpointInfo load_checkpoint(const SafetensorsFile& file, const std::string& name, Module& model,
                               Optimizer& optimizer, const std::map<std::string, Generator*>& rngs);

// Loads only the model's weights ("model.*") of a training checkpoint, e.g.
// for evaluation or sampling, converted to the model's dtype. Names and
// shapes are checked as by load_state_dict.
CheckpointInfo load_model_weights(const std::string& path, Module& model);
// The same from a file already read (`name` is the path errors show).
CheckpointInfo load_model_weights(const SafetensorsFile& file, const std::string& name, Module& model);

}  // namespace flowgrad::nn
