// embedding: a gather of weight rows; its backward is the matching scatter-add.
#include "embedding.h"

#include <algorithm>

#include "../autograd/node.h"
#include "kernels.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// embedding: y[n, :] = W[id_n, :];  dW[v, :] = Σ_{n : id_n = v} dy[n, :]
// Repeated ids add up. Parallel over blocks of columns: each task owns its
// columns of dW for every row and walks the ids in order, so no two threads
// touch the same element and the summation order is fixed.
class EmbeddingBackward final : public Node {
 public:
  std::string_view name() const override { return "embedding"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor ids = indices.get();
    const Shape& weight_shape = next_edges()[0].shape;
    const std::int64_t channels = weight_shape[1];
    const std::int64_t count = ids.numel();
    Tensor dweight = zeros(weight_shape, next_edges()[0].dtype);
    const Tensor grad = dy.reshape({count, channels});
    const std::int64_t* id = ids.data<std::int64_t>();
    dispatch_floating(dweight.dtype(), "embedding", [&]<class T>() {
      const T* pdy = grad.data<T>();
      const std::int64_t sn = grad.strides()[0], sc = grad.strides()[1];
      T* pdw = dweight.data<T>();
      const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(count, 1));
      parallel_for(channels, grain, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t n = 0; n < count; ++n) {
          T* dw_row = pdw + id[n] * channels;
          const T* dy_row = pdy + n * sn;
          for (std::int64_t c = begin; c < end; ++c) dw_row[c] += dy_row[c * sc];
        }
      });
    });
    return {dweight};
  }
  SavedTensor indices{this};  // contiguous int64, already range-checked
};

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  if (!weight.defined() || !indices.defined())
    fail("embedding", "weight and indices must be defined tensors");
  if (weight.dim() != 2)
    fail("embedding", "weight must be 2-D [V, C], got shape ", shape_str(weight.shape()));
  if (indices.dtype() != kInt64)
    fail("embedding", "indices must be int64, got ", dtype_name(indices.dtype()), " of shape ",
         shape_str(indices.shape()));
  const std::int64_t vocab = weight.shape()[0];
  const std::int64_t channels = weight.shape()[1];
  const Tensor ids = indices.detach().contiguous();
  const std::int64_t count = ids.numel();
  const std::int64_t* id = ids.data<std::int64_t>();
  for (std::int64_t n = 0; n < count; ++n)
    if (id[n] < 0 || id[n] >= vocab)
      fail("embedding", "id ", id[n], " at flat position ", n, " is out of range for V = ", vocab,
           " (weight ", shape_str(weight.shape()), ")");

  Shape out_shape = indices.shape();
  out_shape.push_back(channels);
  Tensor out = empty(out_shape, weight.dtype());
  dispatch_floating(weight.dtype(), "embedding", [&]<class T>() {
    const T* pw = weight.data<T>();
    const std::int64_t sv = weight.strides()[0], sc = weight.strides()[1];
    T* po = out.data<T>();
    const std::int64_t grain = std::max<std::int64_t>(1, kParallelGrain / std::max<std::int64_t>(channels, 1));
    parallel_for(count, grain, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t n = begin; n < end; ++n) {
        const T* w_row = pw + id[n] * sv;
        T* o_row = po + n * channels;
        for (std::int64_t c = 0; c < channels; ++c) o_row[c] = w_row[c * sc];
      }
    });
  });
  if (auto node = autograd::make_node<EmbeddingBackward>({weight})) {
    node->indices.save(ids);
    autograd::set_history(out, node);
  }
  return out;
}

}  // namespace flowgrad
