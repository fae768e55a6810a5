// Module: the base of every layer and model. A module registers its
// parameters and sub-modules once, in its constructor; everything else
// (recursive listing with dotted names, train/eval, zero_grad, state dicts,
// saving and loading) follows from that one registry.
//
// Names match PyTorch's state_dict: a parameter "weight" of a sub-module
// registered as "attn" inside a module registered as "h.0" is
// "h.0.attn.weight", so weights move between flowgrad and PyTorch by name.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace flowgrad::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Throws "[op] ..." when `parameters` elements of `dtype` would not fit in
// available_memory_bytes(): a model that cannot be built is refused before
// its first allocation instead of exhausting the machine. `parameters` is a
// double so that counts computed from any sizes never overflow.
void check_parameters_fit(std::string_view op, double parameters, DType dtype);

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Parameters of this module and all sub-modules, in registration order,
  // named "child.grandchild.name".
  NamedTensors named_parameters() const;
  TensorList parameters() const;
  std::int64_t parameter_count() const;  // total number of elements

  // Direct sub-modules, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }

  // Training mode (dropout active) or evaluation mode, recursively.
  void train(bool training = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Clears every parameter's gradient (sets it undefined, like PyTorch's
  // zero_grad(set_to_none=True)).
  void zero_grad();

  // Name -> detached parameter (sharing storage with the parameter).
  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the parameters. Every parameter must be present with
  // the same shape and dtype, and no other name may appear; otherwise throws
  // naming the tensor (nothing is modified then).
  void load_state_dict(const std::map<std::string, Tensor>& state);
  // state_dict() to / from a safetensors file (written atomically).
  void save(const std::string& path) const;
  void load(const std::string& path);

 protected:
  // Marks `value` as a parameter (requires grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect_parameters(const std::string& prefix, NamedTensors& out) const;

  NamedTensors parameters_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace flowgrad::nn
