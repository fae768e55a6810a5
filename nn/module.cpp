#include "module.h"

#include <set>

#include "../autograd/grad_mode.h"
#include "../core/serialize.h"

namespace flowgrad::nn {

namespace {

void check_name(const std::string& name, const char* what) {
  if (name.empty() || name.find('.') != std::string::npos)
    fail("Module", what, " name \"", name, "\" must be non-empty and contain no '.'");
}

}  // namespace

void check_parameters_fit(std::string_view op, double parameters, DType dtype) {
  const double bytes = parameters * static_cast<double>(dtype_size(dtype));
  const auto available = static_cast<double>(available_memory_bytes());
  if (!(bytes <= available))
    fail(op, "the model would have ", parameters, " parameters, ", format_bytes(bytes), " in ", dtype_name(dtype),
         ", more than the ", format_bytes(available), " of memory available");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_name(name, "parameter");
  for (const auto& [existing, tensor] : parameters_)
    if (existing == name) fail("Module", "parameter \"", name, "\" is registered twice");
  if (!value.defined() || !is_floating(value.dtype()))
    fail("Module", "parameter \"", name, "\" must be a defined float tensor");
  value.requires_grad_(true);
  parameters_.emplace_back(name, value);
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_name(name, "module");
  if (!module) fail("Module", "sub-module \"", name, "\" is null");
  for (const auto& [existing, child] : children_)
    if (existing == name) fail("Module", "sub-module \"", name, "\" is registered twice");
  children_.emplace_back(name, std::move(module));
}

void Module::collect_parameters(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, tensor] : parameters_) out.emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_) child->collect_parameters(prefix + name + ".", out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect_parameters("", out);
  return out;
}

TensorList Module::parameters() const {
  TensorList out;
  for (auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

std::int64_t Module::parameter_count() const {
  std::int64_t total = 0;
  for (const Tensor& p : parameters()) total += p.numel();
  return total;
}

void Module::train(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->train(training);
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) p.set_grad(Tensor());
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> state;
  for (auto& [name, tensor] : named_parameters()) state[name] = tensor.detach();
  return state;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state) {
  const NamedTensors params = named_parameters();
  std::set<std::string> expected;
  // Check everything first, so a mismatch leaves the module unchanged.
  for (const auto& [name, param] : params) {
    expected.insert(name);
    auto found = state.find(name);
    if (found == state.end()) fail("load_state_dict", "missing tensor \"", name, "\"");
    const Tensor& value = found->second;
    if (value.shape() != param.shape() || value.dtype() != param.dtype())
      fail("load_state_dict", "tensor \"", name, "\" has shape ", shape_str(value.shape()), " and dtype ",
           dtype_name(value.dtype()), "; the model expects ", shape_str(param.shape()), " and ",
           dtype_name(param.dtype()));
  }
  for (const auto& [name, value] : state)
    if (!expected.count(name)) fail("load_state_dict", "unexpected tensor \"", name, "\" (not in this model)");
  NoGradGuard no_grad;
  for (const auto& [name, param] : params) copy_elements(state.at(name), param);
}

void Module::save(const std::string& path) const { save_safetensors(path, state_dict()); }

void Module::load(const std::string& path) {
  const std::map<std::string, Tensor> state = load_safetensors(path);  // its errors name the file
  try {
    load_state_dict(state);
  } catch (const Error& e) {
    fail("Module::load", path, ": ", e.what());
  }
}

}  // namespace flowgrad::nn
