#include "dropout.h"

#include <algorithm>
#include <cmath>

#include "../autograd/grad_mode.h"
#include "../autograd/node.h"
#include "../core/parallel.h"
#include "vector_math.h"

namespace flowgrad {

using autograd::Node;

namespace {

// The mask of one dropout call: element i (row-major) is kept iff word i mod
// 4 of philox4x32(key, i / 4) is >= ceil(p · 2^32), i.e. with probability
// 1 − p up to 2^-32; kept elements are scaled by 1/(1 − p).
struct DropoutMask {
  std::uint64_t key = 0;
  std::uint32_t threshold = 0;  // ceil(p · 2^32); when that is 2^32, 2^32 − 1 and scale 0: nothing is kept
  double scale = 0.0;

  DropoutMask() = default;
  DropoutMask(std::uint64_t mask_key, double p) : key(mask_key) {
    const double words_below = std::ceil(p * 0x1.0p32);
    const bool keeps_any = words_below < 0x1.0p32;
    threshold = keeps_any ? static_cast<std::uint32_t>(words_below) : ~std::uint32_t{0};
    scale = keeps_any ? 1.0 / (1.0 - p) : 0.0;
  }

  // out[i] = in[i] · mask[i] for i in [0, n).
  template <class T>
  void apply(const T* in, T* out, std::int64_t n) const {
    const std::int64_t groups = (n + 3) / 4;
    parallel_for((groups + kGroupsPerBlock - 1) / kGroupsPerBlock, kParallelGrain / (4 * kGroupsPerBlock),
                 [&](std::int64_t first, std::int64_t last) {
                   for (std::int64_t block = first; block < last; ++block) {
                     const std::int64_t begin = block * kGroupsPerBlock * 4;
                     apply_block(in + begin, out + begin, std::min(4 * kGroupsPerBlock, n - begin),
                                 static_cast<std::uint64_t>(block * kGroupsPerBlock), key, threshold,
                                 static_cast<T>(scale));
                   }
                 });
  }

 private:
  static constexpr std::int64_t kGroupsPerBlock = 64;

  // Elements [0, count) of a block whose first Philox counter is `counter`,
  // their words put in element order first so the loop vectorises.
  template <class T>
  FLOWGRAD_PER_CPU static void apply_block(const T* in, T* out, std::int64_t count, std::uint64_t counter,
                                           std::uint64_t key, std::uint32_t threshold, T keep) {
    std::uint32_t words[4][kGroupsPerBlock];
    philox_block(key, counter, words);
    std::uint32_t element_words[4 * kGroupsPerBlock];
    for (std::int64_t g = 0; g < kGroupsPerBlock; ++g)
      for (std::int64_t w = 0; w < 4; ++w) element_words[4 * g + w] = words[w][g];
    for (std::int64_t i = 0; i < count; ++i)
      out[i] = in[i] * (element_words[i] >= threshold ? keep : T(0));  // NaN stays NaN, as in PyTorch
  }

  // philox4x32(key, counter + g) for g in [0, kGroupsPerBlock), word w in
  // words[w][g], so the rounds vectorise across the counters. Kept out of
  // apply_block's clones: GCC 12's AVX2 code for the 32x32->64 products
  // shuffles across lanes and runs slower than the baseline build's SSE2.
  [[gnu::noinline]] static void philox_block(std::uint64_t key, std::uint64_t counter,
                                             std::uint32_t (&words)[4][kGroupsPerBlock]) {
    for (std::int64_t g = 0; g < kGroupsPerBlock; ++g) {
      const std::uint64_t c = counter + static_cast<std::uint64_t>(g);
      words[0][g] = static_cast<std::uint32_t>(c);
      words[1][g] = static_cast<std::uint32_t>(c >> 32);
      words[2][g] = words[3][g] = 0;
    }
    std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      for (std::int64_t g = 0; g < kGroupsPerBlock; ++g)
        philox_round(words[0][g], words[1][g], words[2][g], words[3][g], k0, k1);
      k0 += kPhiloxWeyl0;
      k1 += kPhiloxWeyl1;
    }
  }
};

// dropout: y = x ⊙ m,  dx = dy ⊙ m, the mask m recomputed from its key
// (nothing of the size of x is saved).
class DropoutBackward final : public Node {
 public:
  std::string_view name() const override { return "dropout"; }
  TensorList backward(const Tensor& dy) override {
    const Tensor g = dy.contiguous();
    Tensor dx = empty(g.shape(), g.dtype());
    dispatch_floating(g.dtype(), "dropout", [&]<class T>() { mask.apply(g.data<T>(), dx.data<T>(), g.numel()); });
    return {dx};
  }
  DropoutMask mask;
};

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  if (!x.defined()) fail("dropout", "input is an undefined tensor");
  if (!(p >= 0.0 && p <= 1.0)) fail("dropout", "probability p must be in [0, 1], got ", p);
  if (!is_floating(x.dtype()))
    fail("dropout", "expected a float32 or float64 tensor, got ", dtype_name(x.dtype()));
  if (!training || p == 0.0) return x;

  // One draw from the generator per call; the mask follows from it alone,
  // whatever the thread count.
  const DropoutMask mask(gen.next_u64(), p);
  Tensor input;
  {
    NoGradGuard no_grad;
    input = x.contiguous();
  }
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), "dropout", [&]<class T>() { mask.apply(input.data<T>(), y.data<T>(), x.numel()); });
  if (auto node = autograd::make_node<DropoutBackward>({x})) {
    node->mask = mask;
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace flowgrad
