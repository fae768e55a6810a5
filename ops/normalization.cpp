// layer_norm: the forward saves each row's mean and rstd = 1/sqrt(var + eps)
// (as llm.c does), so the backward recomputes x̂ without a second reduction.
#include "normalization.h"

#include <cmath>

#include "../autograd/node.h"
#include "rows.h"
#include "vector_math.h"

namespace flowgrad {

using autograd::Node;
using autograd::SavedTensor;

namespace {

// Rows summed together for dweight/dbias before the blocks' sums are added.
constexpr std::int64_t kRowsPerBlock = 64;

// The per-row work, strides in elements. Each caller inlines it twice: with
// unit strides for contiguous rows (the usual case: loops that vectorise)
// and with the tensors' strides. Same arithmetic, same bits.

// y = x̂ ⊙ w + b with x̂ = (x − μ)·rstd; μ and rstd to *mean, *rstd.
template <class T>
[[gnu::always_inline]] inline void layer_norm_row(const T* x, std::int64_t sx, const T* w, std::int64_t sw,
                                                  const T* b, std::int64_t sb, std::int64_t channels, double eps,
                                                  T* y, T* mean, T* rstd) {
  // Two passes (mean, then squared deviations): stable for large means.
  const double sum = lane_sum<double>(channels, [&](std::int64_t c) { return double(x[c * sx]); });
  const double mu = sum / static_cast<double>(channels);
  const double squares = lane_sum<double>(channels, [&](std::int64_t c) {
    const double d = x[c * sx] - mu;
    return d * d;
  });
  const T m = static_cast<T>(mu);
  const T r = static_cast<T>(1.0 / std::sqrt(squares / static_cast<double>(channels) + eps));
  *mean = m;
  *rstd = r;
  for (std::int64_t c = 0; c < channels; ++c) {
    T v = (x[c * sx] - m) * r;
    if (w) v *= w[c * sw];
    if (b) v += b[c * sb];
    y[c] = v;
  }
}

// dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)), g = dy ⊙ w (dx contiguous).
template <class T>
[[gnu::always_inline]] inline void layer_norm_dx_row(const T* x, std::int64_t sx, const T* dy, std::int64_t sdy,
                                                     const T* w, std::int64_t sw, T m, T r, std::int64_t channels,
                                                     T* dx) {
  auto g_at = [&](std::int64_t c) -> T { return w ? dy[c * sdy] * w[c * sw] : dy[c * sdy]; };
  const double g_sum = lane_sum<double>(channels, [&](std::int64_t c) { return double(g_at(c)); });
  const double g_xhat_sum = lane_sum<double>(
      channels, [&](std::int64_t c) { return static_cast<double>(g_at(c)) * ((x[c * sx] - m) * r); });
  const T g_mean = static_cast<T>(g_sum / channels);
  const T g_xhat_mean = static_cast<T>(g_xhat_sum / channels);
  for (std::int64_t c = 0; c < channels; ++c) {
    const T xhat = (x[c * sx] - m) * r;
    dx[c] = r * (g_at(c) - g_mean - xhat * g_xhat_mean);
  }
}

// layer_norm, per row of C elements (x̂ = (x − μ)·rstd, g = dy ⊙ w):
//   dx     = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))
//   dweight = Σ_rows dy ⊙ x̂
//   dbias   = Σ_rows dy
// dx is parallel over rows; dweight/dbias over columns, each column summed by
// one task in row order (deterministic, no shared accumulators).
class LayerNormBackward final : public Node {
 public:
  std::string_view name() const override { return "layer_norm"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor x = input.get();
    const Tensor w = weight.get();
    const Tensor mu = mean.get();
    const Tensor rs = rstd.get();
    const bool need_dx = next_edges()[0].node != nullptr;
    const bool need_dw = next_edges()[1].node != nullptr;
    const bool need_db = next_edges()[2].node != nullptr;
    if (dy.dtype() != x.dtype())
      fail("layer_norm", "gradient dtype ", dtype_name(dy.dtype()), " differs from input dtype ",
           dtype_name(x.dtype()));
    const std::int64_t last = x.dim() - 1;
    const std::int64_t channels = x.shape()[last];
    Tensor dx = need_dx ? empty(x.shape(), x.dtype()) : Tensor();
    Tensor dw = need_dw ? empty({channels}, x.dtype()) : Tensor();
    Tensor db = need_db ? empty({channels}, x.dtype()) : Tensor();
    dispatch_floating(x.dtype(), "layer_norm", [&]<class T>() {
      const T* px = x.data<T>();
      const T* pdy = dy.data<T>();
      const T* pw = w.defined() ? w.data<T>() : nullptr;
      const std::int64_t sw = w.defined() ? w.strides()[0] : 0;
      const T* pmu = mu.data<T>();
      const T* prs = rs.data<T>();
      const std::int64_t sx = x.strides()[last];
      const std::int64_t sdy = dy.strides()[last];
      const bool unit_strides = sx == 1 && sdy == 1 && (pw == nullptr || sw == 1);
      if (need_dx) {
        T* pdx = dx.data<T>();
        kernels::parallel_rows<3>(
            x.shape(), last, {&x.strides(), &dy.strides(), &dx.strides()},
            [&](std::int64_t row, const std::array<std::int64_t, 3>& base) {
              const T* x_row = px + base[0];
              const T* dy_row = pdy + base[1];
              T* dx_row = pdx + base[2];  // contiguous: unit stride along the row
              if (unit_strides)
                layer_norm_dx_row<T>(x_row, 1, dy_row, 1, pw, 1, pmu[row], prs[row], channels, dx_row);
              else
                layer_norm_dx_row(x_row, sx, dy_row, sdy, pw, sw, pmu[row], prs[row], channels, dx_row);
            });
      }
      if (!need_dw && !need_db) return;
      Shape outer_shape = x.shape();
      outer_shape.pop_back();
      const Strides outer_x = kernels::outer_strides(x.strides(), last);
      const Strides outer_dy = kernels::outer_strides(dy.strides(), last);
      const std::int64_t rows = shape_numel(outer_shape);
      // dw_c = Σ_rows dy·x̂, db_c = Σ_rows dy. Fixed blocks of rows sum their
      // whole rows (streaming through memory, the blocks in parallel), then
      // the blocks' sums are added in block order: the same bits at any
      // thread count.
      const std::int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
      std::vector<double> block_sums(static_cast<std::size_t>(blocks * 2 * channels), 0.0);
      parallel_for(blocks, 1, [&](std::int64_t first_block, std::int64_t end_block) {
        for (std::int64_t block = first_block; block < end_block; ++block) {
          double* w_acc = block_sums.data() + block * 2 * channels;
          double* b_acc = w_acc + channels;
          const std::int64_t first_row = block * kRowsPerBlock;
          std::int64_t row = first_row;
          kernels::strided_range<2>(
              outer_shape, {&outer_x, &outer_dy}, first_row, std::min(rows, first_row + kRowsPerBlock),
              [&](const std::array<std::int64_t, 2>& base) {
                const T m = pmu[row], r = prs[row];
                ++row;
                for (std::int64_t c = 0; c < channels; ++c) {
                  const T g = pdy[base[1] + c * sdy];
                  w_acc[c] += static_cast<double>(g) * ((px[base[0] + c * sx] - m) * r);
                  b_acc[c] += g;
                }
              });
        }
      });
      T* pdw = need_dw ? dw.data<T>() : nullptr;
      T* pdb = need_db ? db.data<T>() : nullptr;
      for (std::int64_t c = 0; c < channels; ++c) {
        double w_total = 0.0, b_total = 0.0;
        for (std::int64_t block = 0; block < blocks; ++block) {
          w_total += block_sums[static_cast<std::size_t>(block * 2 * channels + c)];
          b_total += block_sums[static_cast<std::size_t>((block * 2 + 1) * channels + c)];
        }
        if (pdw) pdw[c] = static_cast<T>(w_total);
        if (pdb) pdb[c] = static_cast<T>(b_total);
      }
    });
    return {dx, dw, db};
  }
  SavedTensor input{this}, weight{this}, mean{this}, rstd{this};
};

void check_affine(const char* role, const Tensor& param, const Tensor& x) {
  if (!param.defined()) return;
  const std::int64_t channels = x.shape().back();
  if (param.dim() != 1 || param.shape()[0] != channels)
    fail("layer_norm", role, " of shape ", shape_str(param.shape()), " does not match the last dim (",
         channels, ") of input ", shape_str(x.shape()), "; expected [", channels, "]");
  if (param.dtype() != x.dtype())
    fail("layer_norm", role, " dtype ", dtype_name(param.dtype()), " differs from input dtype ",
         dtype_name(x.dtype()));
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  if (!x.defined()) fail("layer_norm", "input is an undefined tensor");
  if (x.dim() == 0) fail("layer_norm", "input must have at least one dim, got a 0-dim tensor");
  if (!(eps >= 0)) fail("layer_norm", "eps must be >= 0, got ", eps);
  check_affine("weight", weight, x);
  check_affine("bias", bias, x);
  const std::int64_t last = x.dim() - 1;
  const std::int64_t channels = x.shape()[last];
  Shape stats_shape = x.shape();
  stats_shape.pop_back();
  Tensor y = empty(x.shape(), x.dtype());
  Tensor mean = empty(stats_shape, x.dtype());
  Tensor rstd = empty(stats_shape, x.dtype());
  dispatch_floating(x.dtype(), "layer_norm", [&]<class T>() {
    const T* px = x.data<T>();
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    const std::int64_t sw = weight.defined() ? weight.strides()[0] : 0;
    const std::int64_t sb = bias.defined() ? bias.strides()[0] : 0;
    const std::int64_t sx = x.strides()[last];
    T* py = y.data<T>();
    T* pmean = mean.data<T>();
    T* prstd = rstd.data<T>();
    const bool unit_strides = sx == 1 && (pw == nullptr || sw == 1) && (pb == nullptr || sb == 1);
    kernels::parallel_rows<2>(
        x.shape(), last, {&x.strides(), &y.strides()},
        [&](std::int64_t row, const std::array<std::int64_t, 2>& base) {
          const T* x_row = px + base[0];
          T* y_row = py + base[1];
          if (unit_strides)
            layer_norm_row<T>(x_row, 1, pw, 1, pb, 1, channels, eps, y_row, pmean + row, prstd + row);
          else
            layer_norm_row(x_row, sx, pw, sw, pb, sb, channels, eps, y_row, pmean + row, prstd + row);
        });
  });
  if (auto node = autograd::make_node<LayerNormBackward>({x, weight, bias})) {
    node->input.save(x);
    node->weight.save(weight);
    node->mean.save(mean);
    node->rstd.save(rstd);
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
