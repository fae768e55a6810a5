#include "shape_ops.h"

#include <sstream>

#include "../autograd/node.h"

namespace flowgrad {

using autograd::Node;

namespace {

// "[2, 3] float32, [2, 4] float32": the inputs, for error messages.
std::string describe(const TensorList& tensors) {
  std::ostringstream out;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (i > 0) out << ", ";
    if (!tensors[i].defined()) {
      out << "undefined";
      continue;
    }
    out << shape_str(tensors[i].shape()) << ' ' << dtype_name(tensors[i].dtype());
  }
  return out.str();
}

// Checks that `tensors` can be joined along `dim` (of the first tensor's
// dims); returns the normalised dim.
std::int64_t check_joinable(const TensorList& tensors, std::int64_t dim, const char* op) {
  if (tensors.empty()) fail(op, "expected a non-empty list of tensors");
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (!tensors[i].defined()) fail(op, "tensor ", i, " is undefined in (", describe(tensors), ")");
  const Tensor& first = tensors[0];
  if (first.dim() == 0)
    fail(op, "zero-dim tensors cannot be concatenated (", describe(tensors), ")");
  const std::int64_t d = normalize_dim(dim, first.dim(), op);
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (t.dtype() != first.dtype())
      fail(op, "tensor ", i, " has dtype ", dtype_name(t.dtype()), " but tensor 0 has ",
           dtype_name(first.dtype()), " (", describe(tensors), ")");
    bool same = t.dim() == first.dim();
    for (std::int64_t k = 0; same && k < first.dim(); ++k)
      same = k == d || t.shape()[k] == first.shape()[k];
    if (!same)
      fail(op, "tensor ", i, " of shape ", shape_str(t.shape()), " does not match tensor 0 of shape ",
           shape_str(first.shape()), " outside dim ", dim, " (", describe(tensors), ")");
  }
  return d;
}

// concat: y = [x_0; x_1; ...] along dim;  dx_i = dy narrowed to x_i's range
class ConcatBackward final : public Node {
 public:
  std::string_view name() const override { return "concat"; }
  TensorList backward(const Tensor& dy) override {
    TensorList grads;
    std::int64_t start = 0;
    for (const auto& edge : next_edges()) {
      const std::int64_t length = edge.shape[dim];
      grads.push_back(edge.node ? dy.narrow(dim, start, length) : Tensor());
      start += length;
    }
    return grads;
  }
  std::int64_t dim = 0;
};

}  // namespace

Tensor concat(const TensorList& tensors, std::int64_t dim) {
  const std::int64_t d = check_joinable(tensors, dim, "concat");
  Shape out_shape = tensors[0].shape();
  out_shape[d] = 0;
  for (const Tensor& t : tensors) out_shape[d] += t.shape()[d];
  Tensor out = empty(out_shape, tensors[0].dtype());
  std::int64_t start = 0;
  for (const Tensor& t : tensors) {
    // make_view, not narrow: a plain destination with no autograd involved.
    Shape piece_shape = out_shape;
    piece_shape[d] = t.shape()[d];
    copy_elements(t, make_view(out, piece_shape, out.strides(), out.offset() + start * out.strides()[d]));
    start += t.shape()[d];
  }
  if (auto node = autograd::make_node<ConcatBackward>(tensors)) {
    node->dim = d;
    autograd::set_history(out, node);
  }
  return out;
}

Tensor cat(const TensorList& tensors, std::int64_t dim) { return concat(tensors, dim); }

Tensor stack(const TensorList& tensors, std::int64_t dim) {
  if (tensors.empty()) fail("stack", "expected a non-empty list of tensors");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) fail("stack", "tensor ", i, " is undefined in (", describe(tensors), ")");
    if (tensors[i].shape() != tensors[0].shape() || tensors[i].dtype() != tensors[0].dtype())
      fail("stack", "tensor ", i, " (", shape_str(tensors[i].shape()), " ",
           dtype_name(tensors[i].dtype()), ") differs from tensor 0 (", shape_str(tensors[0].shape()),
           " ", dtype_name(tensors[0].dtype()), "); stack needs equal shapes and dtypes");
  }
  const std::int64_t d = normalize_dim(dim, tensors[0].dim() + 1, "stack");
  TensorList expanded;
  expanded.reserve(tensors.size());
  for (const Tensor& t : tensors) expanded.push_back(t.unsqueeze(d));
  return concat(expanded, d);
}

TensorList split_with_sizes(const Tensor& x, const std::vector<std::int64_t>& sizes,
                            std::int64_t dim) {
  if (!x.defined()) fail("split", "input is an undefined tensor");
  if (x.dim() == 0) fail("split", "cannot split a 0-dim tensor");
  const std::int64_t d = normalize_dim(dim, x.dim(), "split");
  std::int64_t total = 0;
  for (std::int64_t size : sizes) {
    if (size < 0) fail("split", "negative piece size ", size, " in ", shape_str(sizes));
    total += size;
  }
  if (total != x.shape()[d])
    fail("split", "piece sizes ", shape_str(sizes), " add up to ", total, ", but dim ", dim,
         " of shape ", shape_str(x.shape()), " has size ", x.shape()[d]);
  TensorList pieces;
  std::int64_t start = 0;
  for (std::int64_t size : sizes) {
    pieces.push_back(x.narrow(d, start, size));
    start += size;
  }
  return pieces;
}

TensorList split(const Tensor& x, std::int64_t split_size, std::int64_t dim) {
  if (!x.defined()) fail("split", "input is an undefined tensor");
  if (x.dim() == 0) fail("split", "cannot split a 0-dim tensor");
  const std::int64_t size = x.shape()[normalize_dim(dim, x.dim(), "split")];
  if (split_size < 0 || (split_size == 0 && size != 0))
    fail("split", "split_size must be positive, got ", split_size, " for dim ", dim, " of shape ",
         shape_str(x.shape()));
  std::vector<std::int64_t> sizes;
  if (size == 0) sizes.push_back(0);  // one empty piece, like PyTorch
  for (std::int64_t start = 0; start < size; start += split_size)
    sizes.push_back(std::min(split_size, size - start));
  return split_with_sizes(x, sizes, dim);
}

TensorList chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim) {
  if (!x.defined()) fail("chunk", "input is an undefined tensor");
  if (chunks <= 0) fail("chunk", "chunks must be positive, got ", chunks);
  if (x.dim() == 0) fail("chunk", "cannot chunk a 0-dim tensor");
  const std::int64_t size = x.shape()[normalize_dim(dim, x.dim(), "chunk")];
  return split(x, (size + chunks - 1) / chunks, dim);
}

}  // namespace flowgrad
