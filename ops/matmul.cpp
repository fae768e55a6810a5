// matmul: batched, broadcast matrix products on top of blas::gemm, and the
// backward that reuses them on transposed views.
#include "matmul.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "../autograd/node.h"
#include "../core/blas.h"
#include "../core/parallel.h"
#include "kernels.h"
#include "reduce.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// Threading rule for a batch of GEMMs, each of n·m·k multiply-adds: tiny
// products (which blas::gemm would not split) run one per oneTBB task; so do
// small ones when there are two or more per thread to balance the cores;
// otherwise they run one after another and blas::gemm splits each one.
constexpr std::int64_t kTinyGemmWork = 128 * 128 * 128;
constexpr std::int64_t kSmallGemmWork = 256 * 256 * 256;
// Minimum multiply-adds per oneTBB task when batches run in parallel.
constexpr std::int64_t kGemmTaskWork = 1 << 16;

bool run_batches_in_parallel(std::int64_t batches, std::int64_t work) {
  const int threads = get_num_threads();
  if (threads == 1 || batches < 2) return false;
  if (work < kTinyGemmWork) return true;
  return work < kSmallGemmWork && batches >= 2 * threads;
}

// How a rows×cols matrix reaches GEMM without a copy: as stored, row-major
// (NoTrans, ld = row stride), or as the transpose of a row-major cols×rows
// matrix (Trans, ld = column stride).
struct GemmLayout {
  bool transpose = false;
  std::int64_t ld = 1;
};

// The layout for given strides, or nullopt when neither fits. The stride of
// a size-1 dim never matters, and BLAS needs 1 <= ld, and ld >= the length
// of a stored row, even for empty or single-row matrices.
std::optional<GemmLayout> gemm_layout(std::int64_t rows, std::int64_t cols,
                                      std::int64_t row_stride, std::int64_t col_stride) {
  std::optional<GemmLayout> layout;
  if ((col_stride == 1 || cols <= 1) && (rows <= 1 || row_stride >= std::max<std::int64_t>(cols, 1)))
    layout = GemmLayout{false, rows <= 1 ? std::max<std::int64_t>(cols, 1) : row_stride};
  else if ((row_stride == 1 || rows <= 1) &&
           (cols <= 1 || col_stride >= std::max<std::int64_t>(rows, 1)))
    layout = GemmLayout{true, cols <= 1 ? std::max<std::int64_t>(rows, 1) : col_stride};
  if (layout && layout->ld > INT_MAX) return std::nullopt;
  return layout;
}

// A contiguous copy made without autograd (the forward's node already
// covers the original operand).
Tensor dense_copy(const Tensor& t) {
  Tensor copy = empty(t.shape(), t.dtype());
  copy_elements(t, copy);
  return copy;
}

// Strides of the batch dims of `t` (all but its last two) read as
// `batch_shape`: 0 along broadcast dims.
Strides batch_strides(const Tensor& t, const Shape& batch_shape) {
  Strides strides(batch_shape.size(), 0);
  const std::size_t t_batch = static_cast<std::size_t>(t.dim() - 2);
  const std::size_t lead = batch_shape.size() - t_batch;
  for (std::size_t d = 0; d < t_batch; ++d)
    if (t.shape()[d] != 1) strides[lead + d] = t.strides()[d];
  return strides;
}

// out[batch..., n, m] = a[..., n, k] · b[..., k, m]: a and b have >= 2 dims
// and batch dims that broadcast to batch_shape; `out` is contiguous with
// batch_shape·n·m elements (its own shape may lack the 1-D dims).
void gemm_batched(Tensor a, Tensor b, const Shape& batch_shape, const Tensor& out) {
  const std::int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  const std::int64_t batches = shape_numel(batch_shape);
  if (out.numel() == 0) return;
  if (k == 0) {  // empty sums; BLAS is not asked about k = 0
    copy_elements(zeros({}, out.dtype()).expand(out.shape()), out);
    return;
  }
  if (std::max({n, k, m}) > INT_MAX)
    fail("matmul", "matrix dims n=", n, " k=", k, " m=", m, " exceed the BLAS index range");
  std::optional<GemmLayout> a_layout = gemm_layout(n, k, a.stride(-2), a.stride(-1));
  if (!a_layout) {
    a = dense_copy(a);
    a_layout = gemm_layout(n, k, a.stride(-2), a.stride(-1));
  }
  std::optional<GemmLayout> b_layout = gemm_layout(k, m, b.stride(-2), b.stride(-1));
  if (!b_layout) {
    b = dense_copy(b);
    b_layout = gemm_layout(k, m, b.stride(-2), b.stride(-1));
  }
  const Strides a_batch = batch_strides(a, batch_shape);
  const Strides b_batch = batch_strides(b, batch_shape);
  dispatch_floating(a.dtype(), "matmul", [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = out.data<T>();
    auto multiply = [&](std::int64_t begin, std::int64_t end) {
      std::int64_t i = begin;
      kernels::strided_range<2>(batch_shape, {&a_batch, &b_batch}, begin, end,
                                [&](const std::array<std::int64_t, 2>& off) {
                                  blas::gemm<T>(a_layout->transpose, b_layout->transpose, n, m, k,
                                                T(1), pa + off[0], a_layout->ld, pb + off[1],
                                                b_layout->ld, T(0), pc + i * n * m,
                                                std::max<std::int64_t>(m, 1));
                                  ++i;
                                });
    };
    const std::int64_t work = n * m * k;
    if (run_batches_in_parallel(batches, work)) {
      parallel_for(batches, std::max<std::int64_t>(1, kGemmTaskWork / work), multiply);
    } else {
      multiply(0, batches);
    }
  });
}

// `t` as the matrix operand matmul uses: 1-D a becomes [1, k], 1-D b [k, 1].
Tensor as_matrix(const Tensor& t, bool is_left) {
  if (t.dim() != 1) return t;
  return is_left ? t.unsqueeze(0) : t.unsqueeze(1);
}

// The number of elements of all dims but the last.
std::int64_t leading_numel(const Shape& shape) {
  return shape_numel(Shape(shape.begin(), shape.end() - 1));
}

// [rows, cols] from [..., rows', cols] when strides allow a view, else nullopt.
std::optional<Tensor> fold_batch_into_rows(const Tensor& t) {
  const Shape folded{leading_numel(t.shape()), t.size(-1)};
  std::optional<Strides> strides = view_strides(t.shape(), t.strides(), folded);
  if (!strides) return std::nullopt;
  return make_view(t, folded, *strides, t.offset());
}

// matmul: y = a · b (per batch, broadcast);  da = dy · bᵀ,  db = aᵀ · dy,
// each summed over the batch dims its operand was broadcast along. 1-D
// operands are the [1, k] / [k, 1] matrices of the forward. Transposes are
// views, so the products below reach BLAS as flags, not copies.
class MatmulBackward final : public Node {
 public:
  std::string_view name() const override { return "matmul"; }
  TensorList backward(const Tensor& dy) override {
    const Shape& a_shape = next_edges()[0].shape;
    const Shape& b_shape = next_edges()[1].shape;
    const Tensor dy_matrix = dy.reshape(out_matrix_shape);  // [batch..., n, m]
    Tensor da, db;
    if (next_edges()[0].node) {
      const Tensor b_matrix = as_matrix(b.get(), false);
      const Shape a_matrix_shape = a_shape.size() == 1 ? Shape{1, a_shape[0]} : a_shape;
      da = sum_to(matmul(dy_matrix, b_matrix.transpose(-1, -2)), a_matrix_shape).reshape(a_shape);
    }
    if (next_edges()[1].node) {
      const Tensor a_matrix = as_matrix(a.get(), true);
      const Shape b_matrix_shape = b_shape.size() == 1 ? Shape{b_shape[0], 1} : b_shape;
      // A shared 2-D b (a linear layer's weight): one GEMM over all batch
      // rows instead of a product per batch and a sum.
      if (b_matrix_shape.size() == 2 && a_matrix.dim() > 2) {
        const std::int64_t rows = leading_numel(a_matrix.shape());
        db = matmul(a_matrix.reshape({rows, a_matrix.size(-1)}).transpose(0, 1),
                    dy_matrix.reshape({rows, dy_matrix.size(-1)}));
      } else {
        db = sum_to(matmul(a_matrix.transpose(-1, -2), dy_matrix), b_matrix_shape);
      }
      db = db.reshape(b_shape);
    }
    return {da, db};
  }
  SavedTensor a{this}, b{this};
  Shape out_matrix_shape;
};

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const std::string shapes = "a " + shape_str(a.shape()) + " vs b " + shape_str(b.shape());
  if (a.dim() == 0 || b.dim() == 0)
    fail("matmul", "both arguments need at least 1 dim, got ", shapes);
  if (a.dtype() != b.dtype())
    fail("matmul", "dtype mismatch: ", dtype_name(a.dtype()), " ", shapes, " ",
         dtype_name(b.dtype()));
  if (!is_floating(a.dtype()))
    fail("matmul", "expected float32 or float64 tensors, got ", dtype_name(a.dtype()), " ", shapes);

  // The matrices as BLAS sees them: views without autograd (the node below
  // records the product on a and b themselves).
  const Tensor a_matrix = a.dim() == 1 ? make_view(a, {1, a.size(0)}, {0, a.stride(0)}, a.offset()) : a;
  const Tensor b_matrix = b.dim() == 1 ? make_view(b, {b.size(0), 1}, {b.stride(0), 0}, b.offset()) : b;
  const std::int64_t n = a_matrix.size(-2), k = a_matrix.size(-1), m = b_matrix.size(-1);
  if (k != b_matrix.size(-2)) fail("matmul", "inner dimensions differ: ", shapes);

  const Shape a_batch(a_matrix.shape().begin(), a_matrix.shape().end() - 2);
  const Shape b_batch(b_matrix.shape().begin(), b_matrix.shape().end() - 2);
  Shape batch_shape(std::max(a_batch.size(), b_batch.size()), 1);
  for (std::size_t i = 1; i <= batch_shape.size(); ++i) {
    const std::int64_t sa = i <= a_batch.size() ? a_batch[a_batch.size() - i] : 1;
    const std::int64_t sb = i <= b_batch.size() ? b_batch[b_batch.size() - i] : 1;
    if (sa != sb && sa != 1 && sb != 1)
      fail("matmul", "batch dimensions do not broadcast: ", shapes);
    batch_shape[batch_shape.size() - i] = sa == 1 ? sb : sa;
  }

  Shape out_shape = batch_shape;
  if (a.dim() > 1) out_shape.push_back(n);
  if (b.dim() > 1) out_shape.push_back(m);
  Tensor y = empty(out_shape, a.dtype());

  // A batched a times a shared matrix b: fold a's batch dims into its rows
  // when its strides allow, for one large GEMM instead of many small ones.
  std::optional<Tensor> a_folded;
  if (!a_batch.empty() && b_batch.empty()) a_folded = fold_batch_into_rows(a_matrix);
  if (a_folded)
    gemm_batched(*a_folded, b_matrix, {}, y);
  else
    gemm_batched(a_matrix, b_matrix, batch_shape, y);

  if (auto node = autograd::make_node<MatmulBackward>({a, b})) {
    if (b.requires_grad()) node->a.save(a);  // db needs a, da needs b
    if (a.requires_grad()) node->b.save(b);
    node->out_matrix_shape = batch_shape;
    node->out_matrix_shape.push_back(n);
    node->out_matrix_shape.push_back(m);
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
