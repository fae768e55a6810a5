// Optimizers with PyTorch's semantics (torch.optim.SGD, Adam, AdamW), global
// gradient-norm clipping, and the weight-decay grouping used to train GPTs.
//
// Parameters are organised in groups, each with its own lr and weight decay;
// the other hyper-parameters (momentum, betas, eps) are shared by all groups.
// Parameters are numbered across groups in order (group 0's first parameter
// is 0): that index names their state in state_dict(), as in PyTorch.
//
// A step updates each parameter with one fused elementwise loop (parallel
// over elements), under NoGradGuard, bumping the parameter's version.
// Parameters without a gradient are skipped and their state is untouched.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "module.h"

namespace flowgrad::nn {

// What the caller passes in: unset hyper-parameters take the optimizer's.
struct ParamGroup {
  TensorList params;
  std::optional<double> lr;
  std::optional<double> weight_decay;
};

class Optimizer {
 public:
  // A group as the optimizer holds it, every hyper-parameter resolved.
  struct Group {
    TensorList params;
    double lr = 0.0;
    double weight_decay = 0.0;
    double initial_lr = 0.0;  // lr at construction; set_lr() scales from it
  };

  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  void step();
  // Clears every parameter's gradient (set to undefined, like PyTorch's
  // zero_grad(set_to_none=True)).
  void zero_grad();

  // Sets the learning rate, e.g. from a schedule each step: every group's lr
  // becomes lr · initial_lr / (the optimizer's lr at construction). Groups
  // that took the optimizer's lr therefore get exactly `lr`; groups given
  // their own lr keep their ratio to it. (If the optimizer's lr was 0, every
  // group gets `lr`.)
  void set_lr(double lr);
  double lr() const { return lr_; }  // the last value set (or the initial lr)

  std::vector<Group>& param_groups() { return groups_; }
  const std::vector<Group>& param_groups() const { return groups_; }
  std::int64_t num_params() const { return static_cast<std::int64_t>(state_.size()); }
  std::int64_t step_count() const { return step_count_; }  // calls of step()
  const std::string& name() const { return name_; }

  // The optimizer's state: "step" (int64 0-dim, the number of step() calls)
  // and "state.{i}.{name}" for each parameter i that has been updated:
  //   SGD with momentum: momentum_buffer;
  //   Adam, AdamW:       step (int64 0-dim, updates of this parameter),
  //                      exp_avg, exp_avg_sq.
  // Tensors are detached and share storage with the state. Hyper-parameters
  // are not included: the caller rebuilds the optimizer from its config.
  std::map<std::string, Tensor> state_dict() const;
  // Throws naming the offending tensor when `state` does not fit this
  // optimizer (unknown or incomplete names, wrong shapes or dtypes).
  void check_state_dict(const std::map<std::string, Tensor>& state) const;
  // check_state_dict(), then copies `state` in; nothing changes on error.
  // Parameters absent from `state` start from fresh state.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 protected:
  // `state_names`: the per-parameter state tensors the subclass keeps
  // (all present, or none before the first update).
  Optimizer(std::string name, std::vector<ParamGroup> groups, double lr, double weight_decay,
            std::vector<std::string> state_names);

  using State = std::map<std::string, Tensor>;
  // Updates `param` (contiguous) from `grad` (contiguous, same shape and
  // dtype); `state` is empty before the parameter's first update.
  virtual void update(const Group& group, const Tensor& param, const Tensor& grad, State& state) = 0;

  // Fails with "[name] message" when !(ok).
  void check_hyper(bool ok, const char* what, double value, const char* rule) const;

 private:
  std::string name_;
  std::vector<Group> groups_;
  std::vector<std::string> state_names_;
  std::vector<State> state_;  // by parameter index
  double initial_lr_ = 0.0;
  double lr_ = 0.0;
  std::int64_t step_count_ = 0;
};

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  // L2 penalty added to the gradient
  bool nesterov = false;
};

// p -= lr · d, where g = grad + weight_decay · p and, with momentum,
// b = g on the first update, then b = momentum · b + (1 − dampening) · g;
// d = b (or g + momentum · b with nesterov), else d = g.
class SGD final : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions options = {});
  SGD(const TensorList& params, SGDOptions options = {});
  const SGDOptions options;

 private:
  void update(const Group& group, const Tensor& param, const Tensor& grad, State& state) override;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: L2 penalty added to the gradient
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // AdamW: decoupled, p -= lr · weight_decay · p
};

// Adam (Kingma & Ba) exactly as torch.optim.Adam / AdamW (amsgrad off):
//   t += 1
//   Adam:  g = grad + wd · p          AdamW: p = p · (1 − lr · wd), g = grad
//   m = lerp(m, g, 1 − β1)            v = β2 · v + (1 − β2) · g²
//   p = p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
// Each parameter counts its own t (a parameter skipped for lack of a
// gradient does not advance), as in PyTorch.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  Adam(const TensorList& params, AdamOptions options = {});
  const AdamOptions options;

 protected:
  Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);

 private:
  void update(const Group& group, const Tensor& param, const Tensor& grad, State& state) override;
  bool decoupled_;
};

class AdamW final : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});
  AdamW(const TensorList& params, AdamWOptions options = {});
};

// Scales all gradients of `params` together so that their global L2 norm is
// at most max_norm, as torch.nn.utils.clip_grad_norm_: with total norm N
// (accumulated in float64), grads are multiplied by max_norm / (N + 1e-6)
// when that is below 1. Parameters without a gradient are ignored. Returns
// N. A non-finite N throws when error_if_nonfinite, else is applied as is.
double clip_grad_norm_(const TensorList& params, double max_norm, bool error_if_nonfinite = false);

// Whether a GPT-style training run decays this parameter. Decayed: matrix
// weights (at least 2 dims) of linear layers. Not decayed: anything with
// fewer than 2 dims, any name whose last component is "bias", LayerNorm
// parameters (a name component starting with "ln_" or containing "norm"),
// and embeddings (a component equal to "wte" or "wpe" or containing "embed").
bool is_decayed_parameter(const std::string& name, const Tensor& param);

// Two groups for an optimizer, in this order: the decayed parameters with
// `weight_decay`, then the rest with weight decay 0 (either may be empty).
// lr is left to the optimizer.
std::vector<ParamGroup> param_groups_for_decay(const NamedTensors& named_parameters,
                                               double weight_decay);

}  // namespace flowgrad::nn
