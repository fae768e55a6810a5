// Layers. Parameter names and layouts follow PyTorch (a Linear weight is
// [out_features, in_features]), so state dicts move between the two.
#pragma once

#include <functional>
#include <memory>

#include "../core/random.h"
#include "module.h"

namespace flowgrad::nn {

// The standard deviation of GPT-2's (and the reference Flowformer's) weight
// initialisation, the default of every layer here.
inline constexpr double kDefaultInitStd = 0.02;

struct LinearOptions {
  bool bias = true;
  double init_std = kDefaultInitStd;  // weight ~ N(0, init_std); bias 0
  DType dtype = kFloat32;
};

// y = x Wᵀ + b over the last dim of x.
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, Generator& gen, const LinearOptions& options = {});
  Tensor forward(const Tensor& x) const;

  const std::int64_t in_features, out_features;
  Tensor weight;  // [out_features, in_features]
  Tensor bias;    // [out_features], undefined when bias = false
};

// Normalises the last dim; weight 1, bias 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t dim, double eps = 1e-5, DType dtype = kFloat32);
  Tensor forward(const Tensor& x) const;

  const double eps;
  Tensor weight, bias;  // [dim]
};

struct EmbeddingOptions {
  double init_std = kDefaultInitStd;  // weight ~ N(0, init_std)
  DType dtype = kFloat32;
};

// Rows of a [num_embeddings, dim] table.
class Embedding : public Module {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t dim, Generator& gen, const EmbeddingOptions& options = {});
  Tensor forward(const Tensor& indices) const;  // int64 [...] -> [..., dim]

  const std::int64_t num_embeddings, dim;
  Tensor weight;
};

// Zeroes elements with probability p in training mode (scaling the rest by
// 1/(1-p)); the identity in eval mode. Masks come from a shared generator,
// so a whole model's dropout is reproducible from one seed.
class Dropout : public Module {
 public:
  Dropout(double p, std::shared_ptr<Generator> gen);
  Tensor forward(const Tensor& x) const;

  const double p;

 private:
  std::shared_ptr<Generator> gen_;
};

// gelu in its tanh form.
class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) const;
};

struct MLPOptions {
  double dropout = 0.0;                    // on the output
  double proj_init_std = kDefaultInitStd;  // of c_proj's weight (c_fc's is kDefaultInitStd)
  DType dtype = kFloat32;
};

// The transformer MLP: dropout(c_proj(gelu(c_fc(x)))), hidden width given.
// Dropout masks come from dropout_gen.
class MLP : public Module {
 public:
  MLP(std::int64_t dim, std::int64_t hidden, Generator& init_gen, std::shared_ptr<Generator> dropout_gen,
      const MLPOptions& options = {});
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<Linear> c_fc, c_proj;
  std::shared_ptr<Dropout> dropout;
};

// Runs its modules in order; each must be callable as Tensor -> Tensor.
class Sequential : public Module {
 public:
  using Step = std::function<Tensor(const Tensor&)>;
  // Registers `module` under the name "0", "1", ... and calls `step` in forward.
  template <class M>
  Sequential& add(std::shared_ptr<M> module) {
    auto registered = register_module(std::to_string(steps_.size()), module);
    steps_.push_back([registered](const Tensor& x) { return registered->forward(x); });
    return *this;
  }
  Tensor forward(const Tensor& x) const;

 private:
  std::vector<Step> steps_;
};

}  // namespace flowgrad::nn
