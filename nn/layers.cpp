#include "layers.h"

#include "../core/profile.h"
#include "../ops/linear.h"
#include "../ops/dropout.h"
#include "../ops/elementwise.h"
#include "../ops/embedding.h"
#include "../ops/matmul.h"
#include "../ops/normalization.h"

namespace flowgrad::nn {

namespace {

void check_positive(const char* layer, const char* what, std::int64_t value) {
  if (value <= 0) fail(layer, what, " must be positive, got ", value);
}

void check_input(const char* layer, const Tensor& x) {
  if (!x.defined()) fail(layer, "input is an undefined tensor");
}

}  // namespace

Linear::Linear(std::int64_t in_features_, std::int64_t out_features_, Generator& gen, const LinearOptions& options)
    : in_features(in_features_), out_features(out_features_) {
  check_positive("Linear", "in_features", in_features);
  check_positive("Linear", "out_features", out_features);
  if (!is_floating(options.dtype))
    fail("Linear", "dtype must be float32 or float64, got ", dtype_name(options.dtype));
  weight = register_parameter("weight", randn({out_features, in_features}, gen, options.dtype, 0.0, options.init_std));
  if (options.bias) bias = register_parameter("bias", zeros({out_features}, options.dtype));
}

Tensor Linear::forward(const Tensor& x) const {
  check_input("Linear", x);
  if (x.dim() == 0 || x.size(-1) != in_features)
    fail("Linear", "input of shape ", shape_str(x.shape()), " does not end in in_features = ",
         in_features);
  return linear(x, weight, bias);  // one GEMM onto the broadcast bias
}

LayerNorm::LayerNorm(std::int64_t dim, double eps_, DType dtype) : eps(eps_) {
  check_positive("LayerNorm", "dim", dim);
  if (!(eps > 0.0)) fail("LayerNorm", "eps must be positive, got ", eps);
  if (!is_floating(dtype)) fail("LayerNorm", "dtype must be float32 or float64, got ", dtype_name(dtype));
  weight = register_parameter("weight", ones({dim}, dtype));
  bias = register_parameter("bias", zeros({dim}, dtype));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  check_input("LayerNorm", x);
  if (x.dim() == 0 || x.size(-1) != weight.size(0))
    fail("LayerNorm", "input of shape ", shape_str(x.shape()), " does not end in dim = ",
         weight.size(0));
  profile::Scope region("layernorm");
  return layer_norm(x, weight, bias, eps);
}

Embedding::Embedding(std::int64_t num_embeddings_, std::int64_t dim_, Generator& gen, const EmbeddingOptions& options)
    : num_embeddings(num_embeddings_), dim(dim_) {
  check_positive("Embedding", "num_embeddings", num_embeddings);
  check_positive("Embedding", "dim", dim);
  if (!is_floating(options.dtype))
    fail("Embedding", "dtype must be float32 or float64, got ", dtype_name(options.dtype));
  weight = register_parameter("weight", randn({num_embeddings, dim}, gen, options.dtype, 0.0, options.init_std));
}

Tensor Embedding::forward(const Tensor& indices) const {
  check_input("Embedding", indices);
  return embedding(weight, indices);
}

Dropout::Dropout(double p_, std::shared_ptr<Generator> gen) : p(p_), gen_(std::move(gen)) {
  if (!(p >= 0.0 && p <= 1.0)) fail("Dropout", "probability p must be in [0, 1], got ", p);
  if (!gen_) fail("Dropout", "the generator is null");
}

Tensor Dropout::forward(const Tensor& x) const {
  check_input("Dropout", x);
  return dropout(x, p, is_training(), *gen_);
}

Tensor GELU::forward(const Tensor& x) const {
  check_input("GELU", x);
  return gelu(x);
}

MLP::MLP(std::int64_t dim, std::int64_t hidden, Generator& init_gen, std::shared_ptr<Generator> dropout_gen,
         const MLPOptions& options) {
  c_fc = register_module("c_fc", std::make_shared<Linear>(dim, hidden, init_gen, LinearOptions{.dtype = options.dtype}));
  c_proj = register_module(
      "c_proj", std::make_shared<Linear>(hidden, dim, init_gen,
                                         LinearOptions{.init_std = options.proj_init_std, .dtype = options.dtype}));
  // Registered (it has no parameters) so train()/eval() reach it.
  dropout = register_module("dropout", std::make_shared<Dropout>(options.dropout, std::move(dropout_gen)));
}

Tensor MLP::forward(const Tensor& x) const {
  profile::Scope region("mlp");
  return dropout->forward(c_proj->forward(gelu(c_fc->forward(x))));
}

Tensor Sequential::forward(const Tensor& x) const {
  Tensor y = x;
  for (const Step& step : steps_) y = step(y);
  return y;
}

}  // namespace flowgrad::nn
