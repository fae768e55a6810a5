#include "checkpoint.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>


#include "../core/json_object.h"
#include "../core/serialize.h"

namespace flowgrad::nn {

namespace {

constexpr const char* kFormat = "flowgrad-checkpoint-1";
const std::string kModelPrefix = "model.";
const std::string kOptimPrefix = "optim.";

std::string metadata_entry(const std::string& path, const SafetensorsFile& file, const char* key) {
  auto found = file.metadata.find(key);
  if (found == file.metadata.end())
    fail("load_checkpoint", path, ": the metadata has no \"", key, "\" entry");
  return found->second;
}

CheckpointInfo parse_info(const std::string& path, const SafetensorsFile& file) {
  const std::string format = metadata_entry(path, file, "format");
  if (format != kFormat)
    fail("load_checkpoint", path, ": format \"", format, "\" is not \"", kFormat, "\"");
  CheckpointInfo info;
  const std::string step = metadata_entry(path, file, "step");
  auto [end, error] = std::from_chars(step.data(), step.data() + step.size(), info.step);
  if (error != std::errc() || end != step.data() + step.size() || info.step < 0)
    fail("load_checkpoint", path, ": step \"", step, "\" is not a non-negative integer");
  info.config = metadata_entry(path, file, "config");
  // Lenient here: load_checkpoint reports a malformed "rng" entry.
  if (const auto rng = file.metadata.find("rng"); rng != file.metadata.end()) {
    const nlohmann::json states = nlohmann::json::parse(rng->second, nullptr, /*allow_exceptions=*/false);
    if (states.is_object())
      for (const auto& [name, state] : states.items()) info.generators.push_back(name);
  }
  return info;
}

}  // namespace

std::map<std::string, Tensor> training_state(const Module& model, const Optimizer& optimizer) {
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, tensor] : model.state_dict()) tensors[kModelPrefix + name] = tensor;
  for (const auto& [name, tensor] : optimizer.state_dict()) tensors[kOptimPrefix + name] = tensor;
  return tensors;
}

namespace {

std::optional<NonFiniteValue> nonfinite_in(const std::string& name, const Tensor& tensor) {
  if (!tensor.defined() || !is_floating(tensor.dtype())) return std::nullopt;
  const Tensor dense = tensor.contiguous();
  return dispatch_floating(dense.dtype(), "find_nonfinite", [&]<class T>() -> std::optional<NonFiniteValue> {
    const T* values = dense.data<T>();
    const T* end = values + dense.numel();
    const T* found = std::find_if(values, end, [](T v) { return !std::isfinite(v); });
    if (found == end) return std::nullopt;
    return NonFiniteValue{name, found - values, static_cast<double>(*found)};
  });
}

}  // namespace

std::optional<NonFiniteValue> find_nonfinite(const std::map<std::string, Tensor>& tensors) {
  for (const auto& [name, tensor] : tensors)
    if (auto found = nonfinite_in(name, tensor)) return found;
  return std::nullopt;
}

std::optional<NonFiniteValue> find_nonfinite(const NamedTensors& tensors) {
  for (const auto& [name, tensor] : tensors)
    if (auto found = nonfinite_in(name, tensor)) return found;
  return std::nullopt;
}

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     std::int64_t step, const std::map<std::string, const Generator*>& rngs,
                     const std::string& config) {
  if (step < 0) fail("save_checkpoint", "step must be >= 0, got ", step);
  const std::map<std::string, Tensor> tensors = training_state(model, optimizer);
  nlohmann::json rng_states = nlohmann::json::object();
  for (const auto& [name, gen] : rngs) {
    if (!gen) fail("save_checkpoint", "generator \"", name, "\" is null");
    rng_states[name] = gen->state();
  }
  std::map<std::string, std::string> metadata{{"format", kFormat},
                                              {"step", std::to_string(step)},
                                              {"rng", rng_states.dump()},
                                              {"config", config}};
  save_safetensors(path, tensors, metadata);
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  return parse_info(path, load_safetensors_file(path));
}

CheckpointInfo read_checkpoint_info(const SafetensorsFile& file, const std::string& name) {
  return parse_info(name, file);
}

CheckpointInfo load_checkpoint(const std::string& path, Module& model, Optimizer& optimizer,
                               const std::map<std::string, Generator*>& rngs) {
  return load_checkpoint(load_safetensors_file(path), path, model, optimizer, rngs);
}

CheckpointInfo load_checkpoint(const SafetensorsFile& file, const std::string& path, Module& model,
                               Optimizer& optimizer, const std::map<std::string, Generator*>& rngs) {
  const CheckpointInfo info = parse_info(path, file);

  std::map<std::string, Tensor> model_state, optim_state;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(kModelPrefix, 0) == 0)
      model_state[name.substr(kModelPrefix.size())] = tensor;
    else if (name.rfind(kOptimPrefix, 0) == 0)
      optim_state[name.substr(kOptimPrefix.size())] = tensor;
    else
      fail("load_checkpoint", path, ": unexpected tensor \"", name,
           "\" (names start with \"model.\" or \"optim.\")");
  }

  // Generator states are parsed into scratch generators first, so a bad
  // entry fails before anything is modified.
  nlohmann::json rng_states;
  try {
    rng_states = parse_json(metadata_entry(path, file, "rng"), "rng");
  } catch (const Error& e) {
    fail("load_checkpoint", path, ": the \"rng\" metadata: ", e.what());
  }
  if (!rng_states.is_object()) fail("load_checkpoint", path, ": the \"rng\" metadata is not a JSON object");
  std::vector<std::pair<Generator*, Generator>> restored;
  for (const auto& [name, gen] : rngs) {
    if (!gen) fail("load_checkpoint", "generator \"", name, "\" is null");
    auto found = rng_states.find(name);
    if (found == rng_states.end() || !found->is_string())
      fail("load_checkpoint", path, ": no state for generator \"", name, "\"");
    Generator scratch;
    try {
      scratch.set_state(found->get<std::string>());
    } catch (const Error& e) {
      fail("load_checkpoint", path, ": generator \"", name, "\": ", e.what());
    }
    restored.emplace_back(gen, scratch);
  }

  // Check the optimizer first: the model's load checks before it copies, so
  // after both checks pass nothing can fail half-way.
  try {
    optimizer.check_state_dict(optim_state);
  } catch (const Error& e) {
    fail("load_checkpoint", path, ": optimizer (tensors \"optim.*\"): ", e.what());
  }
  try {
    model.load_state_dict(model_state);
  } catch (const Error& e) {
    fail("load_checkpoint", path, ": model (tensors \"model.*\"): ", e.what());
  }
  optimizer.load_state_dict(optim_state);
  for (auto& [gen, scratch] : restored) *gen = scratch;
  return info;
}

CheckpointInfo load_model_weights(const std::string& path, Module& model) {
  return load_model_weights(load_safetensors_file(path), path, model);
}

CheckpointInfo load_model_weights(const SafetensorsFile& file, const std::string& path, Module& model) {
  const std::map<std::string, Tensor> current = model.state_dict();
  std::map<std::string, Tensor> weights;
  for (const auto& [name, tensor] : file.tensors)
    if (name.rfind(kModelPrefix, 0) == 0) {
      const std::string key = name.substr(kModelPrefix.size());
      const auto it = current.find(key);
      weights[key] = it == current.end() ? tensor : tensor.to(it->second.dtype());
    }
  const CheckpointInfo info = parse_info(path, file);
  try {
    model.load_state_dict(weights);
  } catch (const Error& e) {
    fail("load_model_weights", path, ": ", e.what());
  }
  return info;
}

}  // namespace flowgrad::nn
