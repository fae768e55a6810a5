#include "optim.h"

#include <cmath>
#include <set>
#include <unordered_set>

#include "../autograd/grad_mode.h"
#include "../core/parallel.h"

namespace flowgrad::nn {

namespace {

// "state.12.exp_avg" -> (12, "exp_avg"); nullopt for anything else.
std::optional<std::pair<std::int64_t, std::string>> parse_state_key(const std::string& key) {
  const std::string prefix = "state.";
  if (key.rfind(prefix, 0) != 0) return std::nullopt;
  const std::size_t dot = key.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size() || dot + 1 == key.size()) return std::nullopt;
  const std::string digits = key.substr(prefix.size(), dot - prefix.size());
  if (digits.size() > 18 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  std::int64_t index = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return std::make_pair(index, key.substr(dot + 1));
}

std::string state_key(std::size_t index, const std::string& name) {
  return "state." + std::to_string(index) + "." + name;
}

Tensor int64_scalar(std::int64_t value) {
  Tensor t = empty({}, kInt64);
  *t.data<std::int64_t>() = value;
  return t;
}

bool is_int64_scalar(const Tensor& t) { return t.dtype() == kInt64 && t.dim() == 0; }

// A private contiguous copy, so loaded state never aliases the caller's.
Tensor private_copy(const Tensor& t) {
  Tensor out = empty(t.shape(), t.dtype());
  copy_elements(t, out);
  return out;
}

// torch.lerp's formula (exact at both ends).
template <class T>
T lerp(T start, T end, T weight) {
  return weight < T(0.5) ? start + weight * (end - start) : end - (end - start) * (T(1) - weight);
}

}  // namespace

// ---------------------------------------------------------------- Optimizer

Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, double lr, double weight_decay,
                     std::vector<std::string> state_names)
    : name_(std::move(name)), state_names_(std::move(state_names)), initial_lr_(lr), lr_(lr) {
  check_hyper(lr >= 0.0 && std::isfinite(lr), "learning rate", lr, "must be finite and >= 0");
  check_hyper(weight_decay >= 0.0 && std::isfinite(weight_decay), "weight_decay", weight_decay,
              "must be finite and >= 0");
  std::unordered_set<const TensorImpl*> seen;
  std::size_t count = 0;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    ParamGroup& input = groups[g];
    Group group;
    group.lr = input.lr.value_or(lr);
    group.weight_decay = input.weight_decay.value_or(weight_decay);
    group.initial_lr = group.lr;
    check_hyper(group.lr >= 0.0 && std::isfinite(group.lr), "learning rate of a group", group.lr,
                "must be finite and >= 0");
    check_hyper(group.weight_decay >= 0.0 && std::isfinite(group.weight_decay),
                "weight_decay of a group", group.weight_decay, "must be finite and >= 0");
    for (std::size_t i = 0; i < input.params.size(); ++i) {
      const Tensor& p = input.params[i];
      if (!p.defined()) fail(name_, "parameter ", i, " of group ", g, " is undefined");
      if (!is_floating(p.dtype()))
        fail(name_, "parameter ", i, " of group ", g, " has dtype ", dtype_name(p.dtype()),
             "; parameters must be float32 or float64");
      if (!p.is_leaf())
        fail(name_, "parameter ", i, " of group ", g, " of shape ", shape_str(p.shape()),
             " is not a leaf tensor (it has a grad_fn); optimize the leaf instead");
      if (!seen.insert(p.unsafe_impl()).second)
        fail(name_, "parameter ", i, " of group ", g, " of shape ", shape_str(p.shape()),
             " appears more than once in the parameter groups");
    }
    count += input.params.size();
    group.params = std::move(input.params);
    groups_.push_back(std::move(group));
  }
  if (count == 0) fail(name_, "got an empty parameter list");
  state_.resize(count);
}

void Optimizer::check_hyper(bool ok, const char* what, double value, const char* rule) const {
  if (!ok) fail(name_, "invalid ", what, " ", value, ": ", rule);
}

void Optimizer::step() {
  NoGradGuard no_grad;
  std::size_t index = 0;
  for (const Group& group : groups_) {
    for (const Tensor& param : group.params) {
      State& state = state_[index++];
      Tensor grad = param.grad();
      if (!grad.defined()) continue;
      if (grad.shape() != param.shape() || grad.dtype() != param.dtype())
        fail(name_, "gradient of shape ", shape_str(grad.shape()), " and dtype ",
             dtype_name(grad.dtype()), " does not match its parameter ", index - 1, " of shape ",
             shape_str(param.shape()), " and dtype ", dtype_name(param.dtype()));
      // The kernels read flat arrays; a strided parameter is updated through
      // a contiguous copy and written back.
      const Tensor work = param.is_contiguous() ? param : private_copy(param);
      update(group, work, grad.contiguous(), state);
      if (work.unsafe_impl() != param.unsafe_impl())
        copy_elements(work, param);
      else
        param.bump_version();
    }
  }
  ++step_count_;
}

void Optimizer::zero_grad() {
  for (const Group& group : groups_)
    for (const Tensor& p : group.params) p.set_grad(Tensor());
}

void Optimizer::set_lr(double lr) {
  check_hyper(lr >= 0.0 && std::isfinite(lr), "learning rate", lr, "must be finite and >= 0");
  for (Group& group : groups_)
    group.lr = initial_lr_ > 0.0 ? lr * (group.initial_lr / initial_lr_) : lr;
  lr_ = lr;
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  out["step"] = int64_scalar(step_count_);
  for (std::size_t i = 0; i < state_.size(); ++i)
    for (const auto& [name, tensor] : state_[i]) out[state_key(i, name)] = tensor.detach();
  return out;
}

void Optimizer::check_state_dict(const std::map<std::string, Tensor>& state) const {
  const char* op = "load_state_dict";
  // The parameters in index order.
  std::vector<const Tensor*> params;
  for (const Group& group : groups_)
    for (const Tensor& p : group.params) params.push_back(&p);

  auto found_step = state.find("step");
  if (found_step == state.end()) fail(op, name_, ": missing tensor \"step\"");
  if (!is_int64_scalar(found_step->second) || found_step->second.item<std::int64_t>() < 0)
    fail(op, name_, ": tensor \"step\" must be a non-negative int64 scalar (0-dim), got shape ",
         shape_str(found_step->second.shape()), " and dtype ", dtype_name(found_step->second.dtype()));

  std::map<std::int64_t, std::set<std::string>> present;
  for (const auto& [key, value] : state) {
    if (key == "step") continue;
    auto parsed = parse_state_key(key);
    if (!parsed)
      fail(op, name_, ": unexpected tensor \"", key, "\" (expected \"step\" or \"state.<index>.<name>\")");
    const auto& [index, entry] = *parsed;
    if (index >= static_cast<std::int64_t>(params.size()))
      fail(op, name_, ": tensor \"", key, "\" refers to parameter ", index, " but the optimizer has ",
           params.size(), " parameters");
    if (std::find(state_names_.begin(), state_names_.end(), entry) == state_names_.end()) {
      std::string known;
      for (const std::string& n : state_names_) known += (known.empty() ? "" : ", ") + n;
      fail(op, name_, ": unexpected tensor \"", key, "\" (", name_, " keeps ",
           known.empty() ? std::string("no per-parameter state") : known, ")");
    }
    const Tensor& param = *params[static_cast<std::size_t>(index)];
    if (entry == "step") {
      if (!is_int64_scalar(value) || value.item<std::int64_t>() < 0)
        fail(op, name_, ": tensor \"", key, "\" must be a non-negative int64 scalar (0-dim), got shape ",
             shape_str(value.shape()), " and dtype ", dtype_name(value.dtype()));
    } else if (value.shape() != param.shape() || value.dtype() != param.dtype()) {
      fail(op, name_, ": tensor \"", key, "\" has shape ", shape_str(value.shape()), " and dtype ",
           dtype_name(value.dtype()), "; parameter ", index, " has shape ", shape_str(param.shape()),
           " and dtype ", dtype_name(param.dtype()));
    }
    present[index].insert(entry);
  }
  for (const auto& [index, entries] : present)
    for (const std::string& needed : state_names_)
      if (!entries.count(needed))
        fail(op, name_, ": missing tensor \"", state_key(static_cast<std::size_t>(index), needed),
             "\" (the state of parameter ", index, " is incomplete)");
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  check_state_dict(state);
  std::vector<State> loaded(state_.size());
  for (const auto& [key, value] : state) {
    if (key == "step") continue;
    auto [index, entry] = *parse_state_key(key);
    loaded[static_cast<std::size_t>(index)][entry] = private_copy(value);
  }
  state_ = std::move(loaded);
  step_count_ = state.at("step").item<std::int64_t>();
}

// ---------------------------------------------------------------- SGD

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options_)
    : Optimizer("SGD", std::move(groups), options_.lr, options_.weight_decay,
                options_.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"}
                                         : std::vector<std::string>{}),
      options(options_) {
  check_hyper(options.momentum >= 0.0 && std::isfinite(options.momentum), "momentum",
              options.momentum, "must be finite and >= 0");
  check_hyper(std::isfinite(options.dampening), "dampening", options.dampening, "must be finite");
  if (options.nesterov && (options.momentum <= 0.0 || options.dampening != 0.0))
    fail("SGD", "nesterov momentum requires momentum > 0 and dampening 0, got momentum ",
         options.momentum, " and dampening ", options.dampening);
}

SGD::SGD(const TensorList& params, SGDOptions options_)
    : SGD(std::vector<ParamGroup>{ParamGroup{params, std::nullopt, std::nullopt}}, options_) {}

void SGD::update(const Group& group, const Tensor& param, const Tensor& grad, State& state) {
  const bool first = state.empty();
  const bool use_momentum = options.momentum != 0.0;
  if (use_momentum && first) state["momentum_buffer"] = empty(param.shape(), param.dtype());
  dispatch_floating(param.dtype(), "SGD", [&]<class T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* buffer = use_momentum ? state.at("momentum_buffer").data<T>() : nullptr;
    const T lr = static_cast<T>(group.lr);
    const T decay = static_cast<T>(group.weight_decay);
    const T momentum = static_cast<T>(options.momentum);
    const T keep = static_cast<T>(1.0 - options.dampening);
    const bool nesterov = options.nesterov;
    // By value, as in Adam::update: the loop vectorises.
    parallel_for(param.numel(), kParallelGrain, [=](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        T d = decay != T(0) ? g[i] + p[i] * decay : g[i];
        if (buffer) {
          buffer[i] = first ? d : buffer[i] * momentum + d * keep;
          d = nesterov ? d + buffer[i] * momentum : buffer[i];
        }
        p[i] = p[i] + d * -lr;
      }
    });
  });
}

// ---------------------------------------------------------------- Adam, AdamW

Adam::Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options_, bool decoupled)
    : Optimizer(name, std::move(groups), options_.lr, options_.weight_decay,
                {"step", "exp_avg", "exp_avg_sq"}),
      options(options_),
      decoupled_(decoupled) {
  check_hyper(options.beta1 >= 0.0 && options.beta1 < 1.0, "beta1", options.beta1, "must be in [0, 1)");
  check_hyper(options.beta2 >= 0.0 && options.beta2 < 1.0, "beta2", options.beta2, "must be in [0, 1)");
  check_hyper(options.eps > 0.0 && std::isfinite(options.eps), "eps", options.eps,
              "must be finite and > 0");
}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options_)
    : Adam("Adam", std::move(groups), options_, false) {}

Adam::Adam(const TensorList& params, AdamOptions options_)
    : Adam("Adam", std::vector<ParamGroup>{ParamGroup{params, std::nullopt, std::nullopt}}, options_,
           false) {}

namespace {

AdamOptions as_adam(const AdamWOptions& o) {
  return AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay};
}

}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options_)
    : Adam("AdamW", std::move(groups), as_adam(options_), true) {}

AdamW::AdamW(const TensorList& params, AdamWOptions options_)
    : Adam("AdamW", std::vector<ParamGroup>{ParamGroup{params, std::nullopt, std::nullopt}},
           as_adam(options_), true) {}

void Adam::update(const Group& group, const Tensor& param, const Tensor& grad, State& state) {
  if (state.empty()) {
    state["step"] = int64_scalar(0);
    state["exp_avg"] = zeros(param.shape(), param.dtype());
    state["exp_avg_sq"] = zeros(param.shape(), param.dtype());
  }
  std::int64_t& t = *state.at("step").data<std::int64_t>();
  ++t;
  // Scalars in float64, as PyTorch computes them in Python.
  const double bias_correction1 = 1.0 - std::pow(options.beta1, static_cast<double>(t));
  const double bias_correction2 = 1.0 - std::pow(options.beta2, static_cast<double>(t));
  const double step_size = group.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const double decay_factor = 1.0 - group.lr * group.weight_decay;

  dispatch_floating(param.dtype(), name(), [&]<class T>() {
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = state.at("exp_avg").data<T>();
    T* v = state.at("exp_avg_sq").data<T>();
    const bool decoupled = decoupled_;
    const T decay = static_cast<T>(group.weight_decay);
    const T shrink = static_cast<T>(decay_factor);
    const T one_minus_beta1 = static_cast<T>(1.0 - options.beta1);
    const T beta2 = static_cast<T>(options.beta2);
    const T one_minus_beta2 = static_cast<T>(1.0 - options.beta2);
    const T eps = static_cast<T>(options.eps);
    const T neg_step_size = static_cast<T>(-step_size);
    const T bc2_sqrt = static_cast<T>(bias_correction2_sqrt);
    // By value: captured by reference, the constants were reloaded after
    // every store (which might have changed them), and the loop stayed scalar.
    parallel_for(param.numel(), kParallelGrain, [=](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        T gi = g[i];
        if (decoupled) {
          if (decay != T(0)) p[i] = p[i] * shrink;
        } else if (decay != T(0)) {
          gi = gi + p[i] * decay;
        }
        m[i] = lerp(m[i], gi, one_minus_beta1);
        v[i] = v[i] * beta2 + gi * gi * one_minus_beta2;
        const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step_size * m[i] / denom;
      }
    });
  });
}

// ---------------------------------------------------------------- clipping

double clip_grad_norm_(const TensorList& params, double max_norm, bool error_if_nonfinite) {
  if (!(max_norm >= 0.0)) fail("clip_grad_norm_", "max_norm must be >= 0, got ", max_norm);
  NoGradGuard no_grad;
  TensorList grads;
  for (const Tensor& p : params)
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());

  // Sum of squares in float64, in fixed chunks summed in order, so the result
  // does not depend on the thread count.
  double total = 0.0;
  for (const Tensor& g : grads) {
    const Tensor flat = g.contiguous();
    const std::int64_t n = flat.numel();
    const std::int64_t chunks = (n + kParallelGrain - 1) / kParallelGrain;
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    dispatch_floating(flat.dtype(), "clip_grad_norm_", [&]<class T>() {
      const T* data = flat.data<T>();
      parallel_for(chunks, 1, [&](std::int64_t first, std::int64_t last) {
        for (std::int64_t c = first; c < last; ++c) {
          double sum = 0.0;
          const std::int64_t end = std::min(n, (c + 1) * kParallelGrain);
          for (std::int64_t i = c * kParallelGrain; i < end; ++i) {
            const double v = static_cast<double>(data[i]);
            sum += v * v;
          }
          partial[static_cast<std::size_t>(c)] = sum;
        }
      });
    });
    for (double s : partial) total += s;
  }
  const double norm = std::sqrt(total);
  if (!std::isfinite(norm) && error_if_nonfinite)
    fail("clip_grad_norm_", "the total gradient norm is ", norm,
         "; the gradients contain inf or NaN");
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1.0 || std::isnan(coefficient)) {
    for (const Tensor& g : grads) {
      if (g.is_contiguous()) {
        dispatch_floating(g.dtype(), "clip_grad_norm_", [&]<class T>() {
          T* data = g.data<T>();
          const T c = static_cast<T>(coefficient);
          parallel_for(g.numel(), kParallelGrain, [&](std::int64_t begin, std::int64_t end) {
            for (std::int64_t i = begin; i < end; ++i) data[i] = data[i] * c;
          });
        });
        g.bump_version();
      } else {
        // A strided (perhaps broadcast) gradient cannot be scaled in place.
        Tensor scaled = private_copy(g);
        dispatch_floating(g.dtype(), "clip_grad_norm_", [&]<class T>() {
          T* data = scaled.data<T>();
          for (std::int64_t i = 0; i < scaled.numel(); ++i) data[i] = data[i] * static_cast<T>(coefficient);
        });
        for (const Tensor& p : params)
          if (p.defined() && p.grad().defined() && p.grad().unsafe_impl() == g.unsafe_impl())
            p.set_grad(scaled);
      }
    }
  }
  return norm;
}

// ---------------------------------------------------------------- decay groups

bool is_decayed_parameter(const std::string& name, const Tensor& param) {
  if (!param.defined() || param.dim() < 2) return false;
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.back() == "bias") return false;
  for (const std::string& part : parts) {
    if (part.rfind("ln_", 0) == 0 || part.find("norm") != std::string::npos) return false;
    if (part == "wte" || part == "wpe" || part.find("embed") != std::string::npos) return false;
  }
  return true;
}

std::vector<ParamGroup> param_groups_for_decay(const NamedTensors& named_parameters,
                                               double weight_decay) {
  if (!(weight_decay >= 0.0) || !std::isfinite(weight_decay))
    fail("param_groups_for_decay", "weight_decay must be finite and >= 0, got ", weight_decay);
  ParamGroup decayed{{}, std::nullopt, weight_decay};
  ParamGroup not_decayed{{}, std::nullopt, 0.0};
  for (const auto& [name, param] : named_parameters)
    (is_decayed_parameter(name, param) ? decayed : not_decayed).params.push_back(param);
  return {std::move(decayed), std::move(not_decayed)};
}

}  // namespace flowgrad::nn
