// Flow-Attention, normal and causal: fused forward and hand-derived backward.
//
// Section marks (§N1, §C4, ...) point into docs/flow-attention-gradients.md,
// which derives every gradient line below. Names follow the paper and the
// reference code: sink_incoming I, source_outgoing O, conserved_sink Ĩ,
// conserved_source Õ (Ô before the clamp), sink_allocation A,
// source_competition C. Dims are the document's: N queries (the public
// API's L), S keys, widths D and M; the loss is ℓ.
//
// Layout: every head is processed on its own, on row-major matrices (Q:
// N×D, K: S×D, V: S×M). The backward gets V, the output and the features
// σ(Q), σ(K) the forward computed (in place of Q and K). The normal
// backward also gets the forward's flows and KV (O(N + S + D·M) values, or
// N·S in place of D·M for the scores P where those go first);
// the causal one rebuilds its flows from the features, as its prefix sums
// would take O(N·D) values each.
#include "flow_attention.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.h"
#include "../autograd/node.h"
#include "../core/blas.h"
#include "../core/parallel.h"
#include "../core/profile.h"
#include "vector_math.h"

namespace flowgrad {
namespace {

// Rows per causal chunk: a chunk's forward is four GEMMs (two for its masked
// c×c block, two through the prefix state H), its backward fourteen.
// Per position a chunk of c rows costs about 2c(D + M) FLOPs inside
// the chunk (its masked c×c block) and 4DM through the state: they balance
// at c = 2DM/(D + M), which is D for the square heads of Flowformer
// (D = M). max(D, M) is that, and for D ≠ M errs towards larger GEMMs.
// The first chunk needs no state GEMM (the state is still zero), so a
// sequence of up to twice that is one chunk: for short heads the GEMM
// calls (about half a microsecond each), not their multiply-adds, cost most.
std::int64_t causal_chunk(std::int64_t N, std::int64_t D, std::int64_t M) {
  const std::int64_t balance = std::clamp<std::int64_t>(std::max(D, M), 16, 128);
  return N <= 2 * balance ? std::max<std::int64_t>(N, 1) : balance;
}

// A scratch buffer. It is a Tensor so that memory_stats() counts it.
struct Zeroed {};  // for a Buffer that accumulates; others are written before they are read

// Scratch memory for the buffers of one head, per thread: the first buffer
// takes one block (as large as the largest head this thread has seen), the
// others are carved from it, and the block starts over when the last buffer
// of the head is gone. A head of a short sequence would otherwise spend more
// on its ~15-30 allocations than on its arithmetic. A Hold keeps the block
// from one head to the next (a loop over heads), so that even the block is
// allocated once. Buffers that do not fit get their own memory and make the
// next block larger.
class ScratchArena {
 public:
  static ScratchArena& of_this_thread() {
    thread_local ScratchArena arena;
    return arena;
  }

  // Memory for `bytes` (a multiple of kAlign), or null when the block is full.
  std::byte* take(std::int64_t bytes) {
    if (buffers_ == 0) {
      wanted_ = std::max(wanted_, bytes);
      if (block_bytes_ < wanted_) {
        block_ = empty({wanted_ / 8}, kFloat64);  // bytes, in 8-byte elements
        block_start_ = reinterpret_cast<std::byte*>(block_.data<double>());
        block_bytes_ = wanted_;
      }
      used_ = 0;
    }
    ++buffers_;
    if (used_ + bytes > block_bytes_) {
      wanted_ = std::max(wanted_, used_ + bytes);
      return nullptr;
    }
    std::byte* memory = block_start_ + used_;
    used_ += bytes;
    return memory;
  }

  void give_back() {
    if (--buffers_ == 0 && holds_ == 0) release_block();
  }

  // Keeps the block while it lives (on the thread that made it).
  class Hold {
   public:
    Hold() : arena_(of_this_thread()) { ++arena_.holds_; }
    ~Hold() {
      if (--arena_.holds_ == 0 && arena_.buffers_ == 0) arena_.release_block();
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    ScratchArena& arena_;
  };

  static constexpr std::int64_t kAlign = 64;

 private:
  void release_block() {
    block_ = Tensor();
    block_start_ = nullptr;
    block_bytes_ = 0;
  }

  Tensor block_;  // counted by memory_stats() like any tensor
  std::byte* block_start_ = nullptr;
  std::int64_t block_bytes_ = 0, used_ = 0, wanted_ = 0;
  int buffers_ = 0;  // buffers alive on this thread
  int holds_ = 0;
};

// A scratch buffer of `size` values (uninitialised unless Zeroed), from the
// thread's ScratchArena. Lives on the stack of the code that uses it.
template <class T>
class Buffer {
 public:
  Buffer(std::int64_t size, Zeroed) : Buffer(size) { std::fill_n(data_, size, T(0)); }
  explicit Buffer(std::int64_t size) {
    const std::int64_t bytes =
        std::max<std::int64_t>(1, (size * static_cast<std::int64_t>(sizeof(T)) + ScratchArena::kAlign - 1) /
                                      ScratchArena::kAlign) *
        ScratchArena::kAlign;
    std::byte* memory = arena_.take(bytes);
    if (memory == nullptr) {
      try {
        own_ = empty({size}, dtype_of<T>);
      } catch (...) {  // no destructor runs for a constructor that throws
        arena_.give_back();
        throw;
      }
      data_ = own_.data<T>();
    } else {
      data_ = reinterpret_cast<T*>(memory);
    }
  }
  ~Buffer() { arena_.give_back(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* data() { return data_; }
  T& operator[](std::int64_t i) { return data_[i]; }
  T* row(std::int64_t i, std::int64_t width) { return data_ + i * width; }

 private:
  ScratchArena& arena_ = ScratchArena::of_this_thread();  // one thread-local lookup per buffer
  Tensor own_;  // when the arena's block was full
  T* data_ = nullptr;
};

// Inlined, so that the cloned normal kernels run them in their own vectors.
template <class T>
[[gnu::always_inline]] inline T dot(const T* a, const T* b, std::int64_t n) {
  return lane_sum<T>(n, [&](std::int64_t d) { return a[d] * b[d]; });
}

// (a + ε)·(b + ε), the flow dot product.
template <class T>
[[gnu::always_inline]] inline T dot_eps(const T* a, const T* b, std::int64_t n, T eps) {
  return lane_sum<T>(n, [&](std::int64_t d) { return (a[d] + eps) * (b[d] + eps); });
}

// y += alpha · x
template <class T>
[[gnu::always_inline]] inline void axpy(T alpha, const T* x, T* y, std::int64_t n) {
  for (std::int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

// e^x and σ(x) for the flows' exponentials (§N3's softmax and A, §C3's e and
// A). Float goes through exp_vectorisable, so that a loop of them
// vectorises: a libm call per element cost more than the rest of those
// loops. Unfused, so a value has the same bits in a vector loop and alone
// (the causal step). Double goes through std::exp.
template <class T>
[[gnu::always_inline]] inline T flow_exp(T x) {
  if constexpr (std::is_same_v<T, float>) return exp_vectorisable</*kFused=*/false>(x);
  else return std::exp(x);
}

template <class T>
[[gnu::always_inline]] inline T flow_sigmoid(T x) {
  return T(1) / (T(1) + flow_exp(-x));
}

// Products of at most this many multiply-adds run in small_gemm: below it
// OpenBLAS's cost per call (argument checks, a buffer taken under a lock,
// packing) outweighs the arithmetic, as for heads of 16 rows of 32. Their
// op(B), padded to whole vectors, must also fit small_gemm's stack buffer.
constexpr std::int64_t kSmallGemmMultiplyAdds = 16384, kSmallGemmPacked = 4096;

// n rounded up to whole 64-byte vectors of T (small_gemm's rows of op(B)).
template <class T>
constexpr std::int64_t padded_to_vectors(std::int64_t n) {
  constexpr std::int64_t lanes = 64 / sizeof(T);
  return (n + lanes - 1) / lanes * lanes;
}

// C (m×n) = op(A) op(B) + beta·C for small products, with blocks of C in
// registers: op(B) is read as k rows of whole vectors (packed first, zero-
// padded, when it is transposed or n is not a multiple of them), then kRows
// rows × one vector of columns of C at a time sum their k products in
// order, the kRows sums hiding each other's latency. beta = 0 never reads C.
// The vectors are GCC's vector extension (64 bytes: one AVX-512 register,
// two AVX2 or four SSE ones in the other clones).
template <class T>
FLOWGRAD_PER_CPU void small_gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                 const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
                                 std::int64_t ldc) {
  using Vector [[gnu::vector_size(64)]] = T;
  constexpr std::int64_t kLanes = sizeof(Vector) / sizeof(T), kRows = 4;
  // op(B)'s rows as whole vectors: B itself when it is not transposed and n
  // is a multiple of the lanes, else packed on the stack (a Buffer would
  // hold the head's scratch block until the head ends)
  const bool pack = transpose_b || n % kLanes != 0;
  const std::int64_t padded = padded_to_vectors<T>(n);
  assert(!pack || k * padded <= kSmallGemmPacked);
  alignas(64) T packed[kSmallGemmPacked];  // uninitialised: costs nothing unpacked
  for (std::int64_t p = 0; pack && p < k; ++p) {
    T* row = packed + p * padded;
    for (std::int64_t j = 0; j < n; ++j) row[j] = transpose_b ? b[j * ldb + p] : b[p * ldb + j];
    std::fill(row + n, row + padded, T(0));
  }
  const T* b_rows = pack ? packed : b;
  const std::int64_t b_stride = pack ? padded : ldb;
  // A's elements are row_step apart down a column of op(A), column_step along a row.
  const std::int64_t row_step = transpose_a ? 1 : lda, column_step = transpose_a ? lda : 1;
  auto tile = [&]<std::int64_t kTileRows>(std::int64_t i, std::int64_t j0) {
    Vector sums[kTileRows] = {};
    for (std::int64_t p = 0; p < k; ++p) {
      Vector b_lanes;
      std::memcpy(&b_lanes, b_rows + p * b_stride + j0, sizeof b_lanes);
      const T* a_column = a + i * row_step + p * column_step;
      for (std::int64_t r = 0; r < kTileRows; ++r) sums[r] += a_column[r * row_step] * b_lanes;
    }
    const std::int64_t columns = std::min(kLanes, n - j0);
    for (std::int64_t r = 0; r < kTileRows; ++r) {
      T* c_row = c + (i + r) * ldc + j0;
      for (std::int64_t jj = 0; jj < columns; ++jj)
        c_row[jj] = beta == T(0) ? sums[r][jj] : sums[r][jj] + beta * c_row[jj];
    }
  };
  for (std::int64_t j0 = 0; j0 < n; j0 += kLanes) {
    std::int64_t i = 0;
    for (; i + kRows <= m; i += kRows) tile.template operator()<kRows>(i, j0);
    for (; i < m; ++i) tile.template operator()<1>(i, j0);
  }
}

// C (m×n) = op(A) op(B) + beta·C on row-major matrices, where op(A) is m×k
// and op(B) is k×n, with rows lda, ldb and ldc apart (0: contiguous).
template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (lda == 0) lda = transpose_a ? m : k;
  if (ldb == 0) ldb = transpose_b ? k : n;
  if (ldc == 0) ldc = n;
  if (m == 0 || n == 0) return;
  if (k == 0) {  // beta = 0 never reads C, as in BLAS
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : c[i * ldc + j] * beta;
    return;
  }
  if (m * n * k > kSmallGemmMultiplyAdds || k * padded_to_vectors<T>(n) > kSmallGemmPacked) {
    blas::gemm<T>(transpose_a, transpose_b, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Timed while profiling as OpenBLAS's calls are (blas::kGemmRegion): the
  // benchmarks' GEMM floor counts every product.
  const std::int64_t start = profile::enabled() ? profile::now_ns() : 0;
  small_gemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
  if (start != 0) profile::record(blas::kGemmRegion, static_cast<double>(profile::now_ns() - start) * 1e-9);
}

// The same with A and B contiguous.
template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a, const T* b,
          T beta, T* c, std::int64_t ldc = 0) {
  gemm(transpose_a, transpose_b, m, n, k, a, 0, b, 0, beta, c, ldc);
}

// Keeps block[a][b] where keep(a, b), zeroes the rest (a c×c row-major block).
template <class T, class Keep>
void mask_block(T* block, std::int64_t c, Keep keep) {
  for (std::int64_t a = 0; a < c; ++a)
    for (std::int64_t b = 0; b < c; ++b)
      if (!keep(a, b)) block[a * c + b] = 0;
}

// N queries, S keys, widths D (of q and k) and M (of v), as in the document.
struct Dims {
  std::int64_t N, S, D, M;
};

// The rows of one head's matrix, `stride` values apart. A head of a
// [B, L, H, D] tensor viewed as [B, H, L, D] (split heads, no copy) has its
// rows H·D apart; a contiguous head has them D apart.
template <class T>
struct Rows {
  T* data;
  std::int64_t stride;
  T* row(std::int64_t i) const { return data + i * stride; }
};

// The rows of a head split from a projection are H·D apart: a few per page,
// which the hardware prefetcher does not follow, so a loop over them would
// wait on memory at every row. Loops over such rows call this at row i to
// fetch row i + 8 (to write it, when the rows are not const), which costs
// nothing when the rows are in cache.
template <bool kWrite = false, class T>
[[gnu::always_inline]] inline void prefetch_row_ahead(const T* data, std::int64_t stride, std::int64_t i,
                                                      std::int64_t count, std::int64_t width) {
  constexpr std::int64_t kAhead = 8, kLine = 64 / sizeof(T);
  if (i + kAhead >= count) return;
  for (std::int64_t d = 0; d < width; d += kLine) __builtin_prefetch(data + (i + kAhead) * stride + d, kWrite);
}

template <class T>
[[gnu::always_inline]] inline void prefetch_row_ahead(Rows<T> x, std::int64_t i, std::int64_t count,
                                                      std::int64_t width) {
  prefetch_row_ahead<!std::is_const_v<T>>(x.data, x.stride, i, count, width);
}

template <class T>
struct Settings {
  T eps, clamp_min, clamp_max;
  bool scores_first = false;  // normal attention's product order, resolved (FlowAttentionOptions::order)
};

// Collects a kernel's own intermediates for flow_attention_inspect. The
// kernels take a null recorder otherwise: one branch per stage.
struct KernelRecorder {
  std::vector<FlowAttentionQuantity> quantities;

  template <class T>
  void add(const char* symbol, const char* section, const T* data, Shape shape) {
    Tensor value = empty(shape, kFloat64);
    const std::int64_t count = value.numel();
    for (std::int64_t e = 0; e < count; ++e) value.data<double>()[e] = static_cast<double>(data[e]);
    quantities.push_back({symbol, section, std::move(value)});
  }

  template <class T>
  void add(const char* symbol, const char* section, Rows<T> rows, std::int64_t count, std::int64_t width) {
    std::vector<std::remove_const_t<T>> dense(static_cast<std::size_t>(count * width));
    for (std::int64_t i = 0; i < count; ++i) std::copy_n(rows.row(i), width, dense.data() + i * width);
    add(symbol, section, dense.data(), {count, width});
  }
};

// The feature map: q = σ(Q), k = σ(K) (§N0 / §C0), of `count` rows of
// `width` values, `stride` apart, into a contiguous buffer; with a
// column_sum, each output row is also added to it in row order (§N1's Σ_i
// q_i while the row is in cache). Float goes through an exponential that
// vectorises, in fused multiply-adds on a CPU that has them.
template <class T, bool kFused>
[[gnu::always_inline]] inline void feature_map_rows(const T* x, std::int64_t stride, std::int64_t count,
                                                    std::int64_t width, T* out, T* column_sum) {
  for (std::int64_t i = 0; i < count; ++i) {
    prefetch_row_ahead(x, stride, i, count, width);
    T* row = out + i * width;
    for (std::int64_t d = 0; d < width; ++d) {
      if constexpr (std::is_same_v<T, float>) row[d] = sigmoid_vectorisable<kFused>(x[i * stride + d]);
      else row[d] = flow_sigmoid(x[i * stride + d]);
    }
    if (column_sum != nullptr)
      for (std::int64_t d = 0; d < width; ++d) column_sum[d] += row[d];
  }
}

template <class T>
FLOWGRAD_PER_CPU void feature_map(const T* x, std::int64_t stride, std::int64_t count, std::int64_t width, T* out,
                                  std::type_identity_t<T>* column_sum) {
  if (std::is_same_v<T, float> && per_cpu_clone_has_fma())
    feature_map_rows<T, true>(x, stride, count, width, out, column_sum);
  else
    feature_map_rows<T, false>(x, stride, count, width, out, column_sum);
}

template <class T>
void feature_map(Rows<const T> x, std::int64_t count, std::int64_t width, T* out, T* column_sum = nullptr) {
  feature_map(x.data, x.stride, count, width, out, column_sum);
}

// Adds `count` rows of `width` values (contiguous) to column_sum in row
// order: the causal stream's running sums, the same additions in its forward
// and in the backward's rebuild, so the same sums to the bit.
template <class T>
[[gnu::always_inline]] inline void add_rows(const T* x, std::int64_t count, std::int64_t width, T* column_sum) {
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t d = 0; d < width; ++d) column_sum[d] += x[i * width + d];
}

// Back through the feature map: dX = dx ⊙ x(1 − x), x = σ(X) (count × width).
template <class T>
[[gnu::always_inline]] inline void feature_map_backward(const T* dx, const T* x, std::int64_t count,
                                                        std::int64_t width, Rows<T> dX) {
  for (std::int64_t i = 0; i < count; ++i) {
    prefetch_row_ahead(dX, i, count, width);
    for (std::int64_t d = 0; d < width; ++d) {
      const std::int64_t e = i * width + d;
      dX.row(i)[d] = dx[e] * x[e] * (T(1) - x[e]);
    }
  }
}

// ---------------------------------------------------------------------------
// Normal Flow-Attention
// ---------------------------------------------------------------------------
//
// The normal kernels below and the flows they build are FLOWGRAD_PER_CPU:
// their own loops, everything but the GEMMs, run the CPU's widest vectors.
// So do the causal stream and backward. The helpers they call are inlined
// (always_inline): a call would run the helper's baseline copy.

// §N4 / §C4: W_j = C_j v_j, the weighted values (rows × M, contiguous).
template <class T>
[[gnu::always_inline]] inline void weighted_values(Rows<const T> V, const T* competition, std::int64_t rows,
                                                   std::int64_t M, T* W) {
  for (std::int64_t j = 0; j < rows; ++j) {
    prefetch_row_ahead(V, j, rows, M);
    for (std::int64_t m = 0; m < M; ++m) W[j * M + m] = competition[j] * V.row(j)[m];
  }
}

// Whether normal attention's §N4 forms the N×S scores q kᵀ first (N·S·(D+M)
// multiply-adds per pass, forward and backward) rather than KV = kᵀW
// ((N+S)·D·M). Causal attention streams KV.
bool scores_first(const FlowAttentionOptions& o, Dims dims) {
  using Order = FlowAttentionOptions::Order;
  if (o.causal) return false;
  if (o.order != Order::Cheaper) return o.order == Order::ScoresFirst;
  return dims.N * dims.S * (dims.D + dims.M) < (dims.N + dims.S) * dims.D * dims.M;
}

// The product state of §N4: KV (D×M), or the scores P = q kᵀ (N×S).
std::int64_t product_size(Dims dims, bool scores_first) { return scores_first ? dims.N * dims.S : dims.D * dims.M; }

// What the normal forward computes of one head besides the features and the
// output: the flows (§N1–§N3) and the product state (§N4). The forward
// keeps them for the backward, which so recomputes nothing; they are views
// into one block of normal_flows_size values, 3(N+S) + 4D + D·M with KV (6 %
// of the features q, k at N = S = 4096, D = M = 64; 23 % at N = S = 128,
// D = M = 32). T is const in the backward's view.
std::int64_t normal_flows_size(Dims dims, bool scores_first) {
  return 4 * dims.D + 3 * dims.N + 3 * dims.S + product_size(dims, scores_first);
}

template <class T>
struct NormalFlows {
  T *k_sum, *q_sum, *k_outgoing, *q_incoming;                      // D
  T *sink_incoming, *conserved_sink, *sink_allocation;             // N
  T *source_outgoing, *conserved_source_raw, *source_competition;  // S
  T* product;  // KV = kᵀW (D×M), or P = q kᵀ (N×S) when the scores go first

  NormalFlows(T* block, Dims dims, bool scores_first) {
    auto carve = [&block](std::int64_t count) { return std::exchange(block, block + count); };
    k_sum = carve(dims.D), q_sum = carve(dims.D), k_outgoing = carve(dims.D), q_incoming = carve(dims.D);
    sink_incoming = carve(dims.N), conserved_sink = carve(dims.N), sink_allocation = carve(dims.N);
    source_outgoing = carve(dims.S), conserved_source_raw = carve(dims.S), source_competition = carve(dims.S);
    product = carve(product_size(dims, scores_first));
  }
};

// out[r] = (x_r + ε)·(v + ε) for the `rows` rows of x (rows × width), as one
// matrix-vector product: x_r·w + ε Σ_d w_d with w = v + ε.
template <class T>
void dots_eps(const T* x, std::int64_t rows, std::int64_t width, const T* v, T eps, T* out) {
  Buffer<T> w(width);
  T w_total = 0;
  for (std::int64_t d = 0; d < width; ++d) w_total += (w[d] = v[d] + eps);
  blas::gemv<T>(rows, width, x, width, w.data(), out);
  for (std::int64_t r = 0; r < rows; ++r) out[r] += eps * w_total;
}

// §N0–§N3 for one head: q = σ(Q), k = σ(K) into q, k (N×D, S×D), and the
// flows into f.
template <class T>
FLOWGRAD_PER_CPU void normal_flows(Rows<const T> Q, Rows<const T> K, T* q, T* k, NormalFlows<T> f, Dims dims,
                                   Settings<T> cfg) {
  const std::int64_t N = dims.N, S = dims.S, D = dims.D;
  // §N0, with §N1's sums Σ_j k_j and Σ_i q_i in the same pass
  std::fill_n(f.q_sum, D, T(0));
  std::fill_n(f.k_sum, D, T(0));
  feature_map(Q, N, D, q, f.q_sum);
  feature_map(K, S, D, k, f.k_sum);
  // §N1: I_i = 1 / ((q_i+ε)·(Σ_j k_j + ε)),  O_j = 1 / ((k_j+ε)·(Σ_i q_i + ε))
  dots_eps(q, N, D, f.k_sum, cfg.eps, f.sink_incoming);
  for (std::int64_t i = 0; i < N; ++i) f.sink_incoming[i] = T(1) / f.sink_incoming[i];
  dots_eps(k, S, D, f.q_sum, cfg.eps, f.source_outgoing);
  for (std::int64_t j = 0; j < S; ++j) f.source_outgoing[j] = T(1) / f.source_outgoing[j];
  // §N2: Ĩ_i = (q_i+ε)·(Σ_j O_j k_j + ε),  Ô_j = (k_j+ε)·(Σ_i I_i q_i + ε)
  std::fill_n(f.k_outgoing, D, T(0));
  std::fill_n(f.q_incoming, D, T(0));
  for (std::int64_t j = 0; j < S; ++j) axpy(f.source_outgoing[j], k + j * D, f.k_outgoing, D);
  for (std::int64_t i = 0; i < N; ++i) axpy(f.sink_incoming[i], q + i * D, f.q_incoming, D);
  dots_eps(q, N, D, f.k_outgoing, cfg.eps, f.conserved_sink);
  dots_eps(k, S, D, f.q_incoming, cfg.eps, f.conserved_source_raw);
  // §N3: A_i = σ(Ĩ_i · N/S),  C = S · softmax(Õ)
  const T n_over_s = static_cast<T>(static_cast<double>(N) / static_cast<double>(S));
  for (std::int64_t i = 0; i < N; ++i) f.sink_allocation[i] = flow_sigmoid(f.conserved_sink[i] * n_over_s);
  T max_source = -std::numeric_limits<T>::infinity();
  for (std::int64_t j = 0; j < S; ++j) {
    // §N2 clamp: Õ_j = clamp(Ô_j, lo, hi), held in C's buffer until the softmax
    f.source_competition[j] = std::clamp(f.conserved_source_raw[j], cfg.clamp_min, cfg.clamp_max);
    max_source = std::max(max_source, f.source_competition[j]);
  }
  for (std::int64_t j = 0; j < S; ++j) f.source_competition[j] = flow_exp(f.source_competition[j] - max_source);
  T total = 0;  // in its own loop: the exponentials' loop vectorises, an ordered sum does not
  for (std::int64_t j = 0; j < S; ++j) total += f.source_competition[j];
  for (std::int64_t j = 0; j < S; ++j) f.source_competition[j] = f.source_competition[j] / total * static_cast<T>(S);
}

// The normal forward goes through W and out a block of rows at a time when
// it can, so that a block is still in the core's cache for its next step
// (256 rows of 64 floats are 64 KB; a whole head's are 1 MB at N = 4096).
constexpr std::int64_t kBlockRows = 256;

// out_i *= s_i = A_i I_i for the rows [begin, end) (§N4).
template <class T>
[[gnu::always_inline]] inline void scale_rows(const NormalFlows<T>& f, std::int64_t begin, std::int64_t end,
                                              std::int64_t M, Rows<T> out) {
  for (std::int64_t i = begin; i < end; ++i) {
    const T row_scale = f.sink_allocation[i] * f.sink_incoming[i];
    for (std::int64_t m = 0; m < M; ++m) out.row(i)[m] *= row_scale;
  }
}

// §N4: W_j = C_j v_j, R = q kᵀ W as q (kᵀW) = q KV or as (q kᵀ) W = P W,
// out_i = A_i I_i R_i. The features q = σ(Q), k = σ(K) go to q_features
// (N×D) and k_features (S×D), the flows and KV or P to `flows`
// (normal_flows_size values), for the backward.
template <class T>
FLOWGRAD_PER_CPU
void normal_forward(Rows<const T> Q, Rows<const T> K, Rows<const T> V, Rows<T> out, Dims dims, Settings<T> cfg,
                    T* q_features, T* k_features, T* flows) {
  const std::int64_t N = dims.N, S = dims.S, M = dims.M;
  const NormalFlows<T> f(flows, dims, cfg.scores_first);
  normal_flows(Q, K, q_features, k_features, f, dims, cfg);
  if (cfg.scores_first) {
    Buffer<T> W(S * M);
    weighted_values(V, f.source_competition, S, M, W.data());
    gemm<T>(false, true, N, S, dims.D, q_features, k_features, T(0), f.product);  // P = q kᵀ
    gemm<T>(false, false, N, M, S, f.product, W.data(), T(0), out.data, out.stride);
    scale_rows(f, 0, N, M, out);
    return;
  }
  // KV = kᵀW = Σ over blocks of rows, each block of W made just before its GEMM
  Buffer<T> W(std::min(S, kBlockRows) * M);
  for (std::int64_t j0 = 0; j0 < S; j0 += kBlockRows) {
    const std::int64_t rows = std::min(kBlockRows, S - j0);
    weighted_values(Rows<const T>{V.row(j0), V.stride}, f.source_competition + j0, rows, M, W.data());
    gemm<T>(true, false, dims.D, M, rows, k_features + j0 * dims.D, W.data(), T(j0 == 0 ? 0 : 1), f.product);
  }
  for (std::int64_t i0 = 0; i0 < N; i0 += kBlockRows) {  // out = q KV, scaled while in cache
    const std::int64_t rows = std::min(kBlockRows, N - i0);
    gemm<T>(false, false, rows, M, dims.D, q_features + i0 * dims.D, f.product, T(0), out.row(i0), out.stride);
    scale_rows(f, i0, i0 + rows, M, out);
  }
}

// Gradients of one head (every element of dQ, dK, dV is written), given what
// the forward kept: the features q, k, the flows and KV or P, and the output `out`
// (for R_i = out_i / s_i: see §N4 below). Besides four GEMMs and two GEMVs
// it makes three passes over the rows of q and of k: two for §N2–§N1's
// vector sums, one that adds every term of dq (dk) and applies §N0 (and,
// with the scores first, one over dP to scale it by C).
template <class T>
FLOWGRAD_PER_CPU
void normal_backward(const T* q, const T* k, const T* kept_flows, Rows<const T> V, Rows<const T> out,
                     Rows<const T> G, Rows<T> dQ, Rows<T> dK, Rows<T> dV, Dims dims, Settings<T> cfg,
                     KernelRecorder* rec = nullptr) {
  const std::int64_t N = dims.N, S = dims.S, D = dims.D, M = dims.M;
  const NormalFlows<const T> f(kept_flows, dims, cfg.scores_first);
  if (rec) {
    std::vector<T> W(static_cast<std::size_t>(S * M));
    weighted_values(V, f.source_competition, S, M, W.data());
    rec->add("q", "§N0", q, {N, D});
    rec->add("k", "§N0", k, {S, D});
    rec->add("k_sum", "§N1", f.k_sum, {D});
    rec->add("q_sum", "§N1", f.q_sum, {D});
    rec->add("I", "§N1", f.sink_incoming, {N});
    rec->add("O", "§N1", f.source_outgoing, {S});
    rec->add("k_outgoing", "§N2", f.k_outgoing, {D});
    rec->add("q_incoming", "§N2", f.q_incoming, {D});
    rec->add("Ĩ", "§N2", f.conserved_sink, {N});
    rec->add("Ô", "§N2", f.conserved_source_raw, {S});
    rec->add("A", "§N3", f.sink_allocation, {N});
    rec->add("C", "§N3", f.source_competition, {S});
    rec->add("W", "§N4", W.data(), {S, M});
    if (cfg.scores_first) rec->add("P", "§N4", f.product, {N, S});
    else rec->add("KV", "§N4", f.product, {D, M});
  }

  // §N4 backward: out_i = s_i R_i, R = q KV (or P W), s_i = A_i I_i. R is not
  // recomputed: R_i = out_i / s_i, as s_i >= 1/(2 D (1+ε)(S+ε)) is never near
  // 0 (docs/flow-attention-gradients.md, section 7, fact 11).
  Buffer<T> dR(N * M), dA(N), dI(N);
  std::vector<T> recorded_R, recorded_s, recorded_ds;
  for (std::int64_t i = 0; i < N; ++i) {
    const T row_scale = f.sink_allocation[i] * f.sink_incoming[i];
    prefetch_row_ahead(G, i, N, M);
    prefetch_row_ahead(out, i, N, M);
    const T ds = dot(G.row(i), out.row(i), M) / row_scale;  // ds_i = G_i · R_i
    dA[i] = ds * f.sink_incoming[i];
    dI[i] = ds * f.sink_allocation[i];
    for (std::int64_t m = 0; m < M; ++m) dR[i * M + m] = row_scale * G.row(i)[m];
    if (rec) {
      for (std::int64_t m = 0; m < M; ++m) recorded_R.push_back(out.row(i)[m] / row_scale);
      recorded_s.push_back(row_scale), recorded_ds.push_back(ds);
    }
  }
  // dq and dk, the gradients of the features, start as the §N4 terms; the
  // last pass adds §N2–§N1's and turns them into dQ and dK (§N0).
  // dk's §N4 term is C_j times the row j computed here: the last pass
  // scales it. V's rows are at least M apart (with_contiguous_rows).
  Buffer<T> dq(N * D), dk(S * D), dW(S * M), d_product(product_size(dims, cfg.scores_first));
  if (cfg.scores_first) {
    // R = P W, P = q kᵀ, W = diag(C) V: with Z = dR Vᵀ (N×S), dP = Z diag(C),
    // dq = dP k, dk = dPᵀ q = diag(C) Zᵀq, dW = Pᵀ dR.
    T* const dP = d_product.data();
    gemm<T>(false, true, N, S, M, dR.data(), M, V.data, V.stride, T(0), dP, S);  // Z
    gemm<T>(true, false, S, D, N, dP, q, T(0), dk.data());  // Zᵀq
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t j = 0; j < S; ++j) dP[i * S + j] *= f.source_competition[j];
    gemm<T>(false, false, N, D, S, dP, k, T(0), dq.data());                 // dq = dP k
    gemm<T>(true, false, S, M, N, f.product, dR.data(), T(0), dW.data());  // dW = Pᵀ dR
  } else {
    // R = q KV, KV = kᵀW: dq = dR KVᵀ, dKV = qᵀ dR, dW = k dKV, dk = W dKVᵀ = diag(C) V dKVᵀ.
    T* const dKV = d_product.data();
    gemm<T>(false, true, N, D, M, dR.data(), f.product, T(0), dq.data());
    gemm<T>(true, false, D, M, N, q, dR.data(), T(0), dKV);
    gemm<T>(false, false, S, M, D, k, dKV, T(0), dW.data());
    gemm<T>(false, true, S, D, M, V.data, V.stride, dKV, M, T(0), dk.data(), D);  // V dKVᵀ
  }
  Buffer<T> dC(S);
  for (std::int64_t j = 0; j < S; ++j) {  // W_j = C_j v_j
    prefetch_row_ahead(V, j, S, M);
    prefetch_row_ahead(dV, j, S, M);
    dC[j] = dot(V.row(j), dW.row(j, M), M);
    for (std::int64_t m = 0; m < M; ++m) dV.row(j)[m] = f.source_competition[j] * dW[j * M + m];
  }
  if (rec) {
    rec->add("R", "§N4", recorded_R.data(), {N, M});
    rec->add("s", "§N4", recorded_s.data(), {N});
    rec->add("dR", "§N4", dR.data(), {N, M});
    rec->add("ds", "§N4", recorded_ds.data(), {N});
    rec->add("dA", "§N4", dA.data(), {N});
    if (cfg.scores_first) rec->add("dP", "§N4", d_product.data(), {N, S});
    else rec->add("dKV", "§N4", d_product.data(), {D, M});
    rec->add("dW", "§N4", dW.data(), {S, M});
    rec->add("dC", "§N4", dC.data(), {S});
    rec->add("dV", "§N4", dV, S, M);
  }

  // §N3 backward: A_i = σ(Ĩ_i N/S);  C = S softmax(Õ)
  const T n_over_s = static_cast<T>(static_cast<double>(N) / static_cast<double>(S));
  Buffer<T> d_conserved_sink(N), d_conserved_source_raw(S);
  for (std::int64_t i = 0; i < N; ++i) {
    const T a = f.sink_allocation[i];
    d_conserved_sink[i] = dA[i] * a * (T(1) - a) * n_over_s;
  }
  T weighted_dC = 0;  // Σ_l p_l dC_l with p_l = C_l / S
  for (std::int64_t l = 0; l < S; ++l) weighted_dC += f.source_competition[l] / static_cast<T>(S) * dC[l];
  for (std::int64_t j = 0; j < S; ++j) {
    const T raw = f.conserved_source_raw[j];
    const bool clamp_inactive = raw >= cfg.clamp_min && raw <= cfg.clamp_max;  // §N2 clamp
    d_conserved_source_raw[j] = clamp_inactive ? f.source_competition[j] * (dC[j] - weighted_dC) : T(0);
  }
  if (rec) {
    rec->add("dĨ", "§N3", d_conserved_sink.data(), {N});
    rec->add("dÔ", "§N2", d_conserved_source_raw.data(), {S});
  }

  // §N2 backward: Ĩ_i = (q_i+ε)·(k_outgoing+ε), k_outgoing = Σ_j O_j k_j;
  //               Ô_j = (k_j+ε)·(q_incoming+ε), q_incoming = Σ_i I_i q_i.
  // First pass: dk_outgoing = Σ_i dĨ_i (q_i+ε),  dq_incoming = Σ_j dÔ_j (k_j+ε).
  Buffer<T> d_k_outgoing(D, Zeroed{}), d_q_incoming(D, Zeroed{});
  for (std::int64_t i = 0; i < N; ++i) {
    const T d_sink = d_conserved_sink[i];
    for (std::int64_t d = 0; d < D; ++d) d_k_outgoing[d] += d_sink * (q[i * D + d] + cfg.eps);
  }
  for (std::int64_t j = 0; j < S; ++j) {
    const T d_source = d_conserved_source_raw[j];
    for (std::int64_t d = 0; d < D; ++d) d_q_incoming[d] += d_source * (k[j * D + d] + cfg.eps);
  }
  // Then dO_j = k_j·dk_outgoing and dI_i += q_i·dq_incoming as two GEMVs
  // (one vector against every row: faster in BLAS than a dot per row), and a
  // second pass: §N1 backward, I_i = 1/u_i with u_i = (q_i+ε)·(k_sum+ε), O_j = 1/y_j with
  // y_j = (k_j+ε)·(q_sum+ε):  du_i = −I_i² dI_i,  dy_j = −O_j² dO_j, and the
  // sums' gradients dk_sum = Σ_i du_i (q_i+ε),  dq_sum = Σ_j dy_j (k_j+ε).
  Buffer<T> dO(S), du(N), dy(S), d_k_sum(D, Zeroed{}), d_q_sum(D, Zeroed{}), dI_incoming(N);
  blas::gemv<T>(N, D, q, D, d_q_incoming.data(), dI_incoming.data());
  blas::gemv<T>(S, D, k, D, d_k_outgoing.data(), dO.data());
  for (std::int64_t i = 0; i < N; ++i) {
    const T* qi = q + i * D;
    dI[i] += dI_incoming[i];
    const T du_i = du[i] = -f.sink_incoming[i] * f.sink_incoming[i] * dI[i];
    for (std::int64_t d = 0; d < D; ++d) d_k_sum[d] += du_i * (qi[d] + cfg.eps);
  }
  for (std::int64_t j = 0; j < S; ++j) {
    const T* kj = k + j * D;
    const T dy_j = dy[j] = -f.source_outgoing[j] * f.source_outgoing[j] * dO[j];
    for (std::int64_t d = 0; d < D; ++d) d_q_sum[d] += dy_j * (kj[d] + cfg.eps);
  }
  if (rec) {
    rec->add("dk_outgoing", "§N2", d_k_outgoing.data(), {D});
    rec->add("dq_incoming", "§N2", d_q_incoming.data(), {D});
    rec->add("dO", "§N2", dO.data(), {S});
    rec->add("dI", "§N2", dI.data(), {N});
    rec->add("du", "§N1", du.data(), {N});
    rec->add("dy", "§N1", dy.data(), {S});
    rec->add("dk_sum", "§N1", d_k_sum.data(), {D});
    rec->add("dq_sum", "§N1", d_q_sum.data(), {D});
  }

  // §N0 backward, in a last pass that first adds up every term of dq_i and
  // dk_j:  dQ = dq ⊙ q(1−q),  dK = dk ⊙ k(1−k), with
  //   dq_i = dR_i KVᵀ + dĨ_i (k_outgoing+ε) + I_i dq_incoming + du_i (k_sum+ε) + dq_sum
  //   dk_j = C_j (V dKVᵀ)_j + O_j dk_outgoing + dÔ_j (q_incoming+ε) + dy_j (q_sum+ε) + dk_sum
  // (with the scores first, (dP k)_i and C_j (Zᵀq)_j are the §N4 terms)
  // No row written overlaps a vector read (all are the kernel's own
  // buffers). Told so, GCC vectorises the loops; it would otherwise check
  // the eleven pairs at run time, past its limit of ten, and leave them scalar.
  const T *k_outgoing = f.k_outgoing, *k_sum = f.k_sum, *dq_incoming = d_q_incoming.data(), *dq_sum = d_q_sum.data();
  const T *q_incoming = f.q_incoming, *q_sum = f.q_sum, *dk_outgoing = d_k_outgoing.data(), *dk_sum = d_k_sum.data();
  for (std::int64_t i = 0; i < N; ++i) {
    const T* qi = q + i * D;
    T* dqi = dq.row(i, D);
    T* dQi = dQ.row(i);
    prefetch_row_ahead(dQ, i, N, D);
    const T incoming = f.sink_incoming[i], d_sink = d_conserved_sink[i], du_i = du[i];
    FLOWGRAD_NO_OVERLAP
    for (std::int64_t d = 0; d < D; ++d) {
      dqi[d] += d_sink * (k_outgoing[d] + cfg.eps) + incoming * dq_incoming[d] + du_i * (k_sum[d] + cfg.eps) +
                dq_sum[d];
      dQi[d] = dqi[d] * qi[d] * (T(1) - qi[d]);
    }
  }
  for (std::int64_t j = 0; j < S; ++j) {
    const T* kj = k + j * D;
    T* dkj = dk.row(j, D);
    T* dKj = dK.row(j);
    prefetch_row_ahead(dK, j, S, D);
    const T competition = f.source_competition[j], outgoing = f.source_outgoing[j],
            d_source = d_conserved_source_raw[j], dy_j = dy[j];
    FLOWGRAD_NO_OVERLAP
    for (std::int64_t d = 0; d < D; ++d) {
      dkj[d] = competition * dkj[d] + outgoing * dk_outgoing[d] + d_source * (q_incoming[d] + cfg.eps) +
               dy_j * (q_sum[d] + cfg.eps) + dk_sum[d];
      dKj[d] = dkj[d] * kj[d] * (T(1) - kj[d]);
    }
  }
  if (rec) {
    rec->add("dq", "§N1", dq.data(), {N, D});
    rec->add("dk", "§N1", dk.data(), {S, D});
    rec->add("dQ", "§N0", dQ, N, D);
    rec->add("dK", "§N0", dK, S, D);
  }
}

// ---------------------------------------------------------------------------
// Causal Flow-Attention (N = S)
// ---------------------------------------------------------------------------

// §C0–§C3 for one head: a streaming pass with running D-vectors, then
// §C3's per-row exponentials. The backward needs the four prefix sums
// cumsum(k), cumsum(q), cumsum(O k), cumsum(I q) at every row; rather
// than N×D of each (read back from memory), a nonzero checkpoint_every
// keeps them just before rows 0, c, 2c, ... and prefix_sums() rebuilds one
// chunk of c rows, in cache, when it is needed.
template <class T>
struct CausalFlows {
  Dims dims;
  const T* q;  // N×D
  const T* k;  // N×D
  Buffer<T> sink_incoming, source_outgoing, conserved_sink, conserved_source_raw;  // N
  Buffer<T> sink_allocation, exp_source, exp_source_cumsum, source_competition;    // N
  std::int64_t checkpoint_every;
  Buffer<T> checkpoints;  // per chunk: the four running sums before its first row, D each

  // The forward's: q = σ(Q), k = σ(K) into q_out, k_out.
  CausalFlows(Rows<const T> Q, Rows<const T> K, T* q_out, T* k_out, Dims sizes, Settings<T> cfg,
              std::int64_t checkpoint_every_rows)
      : CausalFlows(q_out, k_out, sizes, checkpoint_every_rows) {
    stream(Q, K, q_out, k_out, cfg);
  }
  // The backward's: from the features the forward kept.
  CausalFlows(const T* q_features, const T* k_features, Dims sizes, Settings<T> cfg,
              std::int64_t checkpoint_every_rows)
      : CausalFlows(q_features, k_features, sizes, checkpoint_every_rows) {
    stream({nullptr, 0}, {nullptr, 0}, nullptr, nullptr, cfg);
  }

 private:
  CausalFlows(const T* q_features, const T* k_features, Dims sizes, std::int64_t checkpoint_every_rows)
      : dims(sizes), q(q_features), k(k_features), sink_incoming(dims.N), source_outgoing(dims.N),
        conserved_sink(dims.N), conserved_source_raw(dims.N), sink_allocation(dims.N), exp_source(dims.N),
        exp_source_cumsum(dims.N), source_competition(dims.N), checkpoint_every(checkpoint_every_rows),
        checkpoints(checkpoint_every > 0 ? (dims.N + checkpoint_every - 1) / checkpoint_every * 4 * dims.D : 0) {}

  // The streaming pass; Q.data is null when q, k already hold the features.
  FLOWGRAD_PER_CPU void stream(Rows<const T> Q, Rows<const T> K, T* q_out, T* k_out, Settings<T> cfg) {
    const std::int64_t N = dims.N, D = dims.D;
    // §C0: q = σ(Q), k = σ(K), every row in one call before the stream: a
    // call per row left each row's strided load of Q and K waiting on memory.
    if (Q.data != nullptr) {
      feature_map(Q, N, D, q_out);
      feature_map(K, N, D, k_out);
    }
    Buffer<T> k_run(D, Zeroed{}), q_run(D, Zeroed{}), k_outgoing_run(D, Zeroed{}), q_incoming_run(D, Zeroed{});
    for (std::int64_t i = 0; i < N; ++i) {
      const T count = static_cast<T>(i + 1);  // n_i
      const T* qi = q + i * D;
      const T* ki = k + i * D;
      if (checkpoint_every > 0 && i % checkpoint_every == 0) {
        T* saved = checkpoints.data() + i / checkpoint_every * 4 * D;
        std::copy_n(k_run.data(), D, saved);
        std::copy_n(q_run.data(), D, saved + D);
        std::copy_n(k_outgoing_run.data(), D, saved + 2 * D);
        std::copy_n(q_incoming_run.data(), D, saved + 3 * D);
      }
      // the prefix sums cumsum(q)_i, cumsum(k)_i
      add_rows(qi, 1, D, q_run.data());
      add_rows(ki, 1, D, k_run.data());
      // §C1: I_i = n_i / ((q_i+ε)·(cumsum(k)_i+ε)),  O_i = n_i / ((k_i+ε)·(cumsum(q)_i+ε))
      sink_incoming[i] = T(1) / dot_eps(qi, k_run.data(), D, cfg.eps) * count;
      source_outgoing[i] = T(1) / dot_eps(ki, q_run.data(), D, cfg.eps) * count;
      // §C2: Ĩ_i = (q_i+ε)·(cumsum(O k)_i+ε) / n_i,  Ô_i = (k_i+ε)·(cumsum(I q)_i+ε) / n_i
      axpy(source_outgoing[i], ki, k_outgoing_run.data(), D);
      axpy(sink_incoming[i], qi, q_incoming_run.data(), D);
      conserved_sink[i] = dot_eps(qi, k_outgoing_run.data(), D, cfg.eps) / count;
      conserved_source_raw[i] = dot_eps(ki, q_incoming_run.data(), D, cfg.eps) / count;
    }
    // §C3: A_i = σ(Ĩ_i),  C_i = n_i e_i / E_i with e = exp(Õ), E = pre(e), after
    // the §C2 clamp Õ_i = clamp(Ô_i, lo, hi); the exponentials in loops of
    // their own, which vectorise in float
    for (std::int64_t i = 0; i < N; ++i) sink_allocation[i] = flow_sigmoid(conserved_sink[i]);
    for (std::int64_t i = 0; i < N; ++i)
      exp_source[i] = flow_exp(std::clamp(conserved_source_raw[i], cfg.clamp_min, cfg.clamp_max));
    T exp_run = 0;
    for (std::int64_t i = 0; i < N; ++i) {
      exp_run += exp_source[i];
      exp_source_cumsum[i] = exp_run;
      source_competition[i] = exp_source[i] / exp_run * static_cast<T>(i + 1);
    }
  }

 public:
  // Rows [t, t+c) of cumsum(k), cumsum(q), cumsum(O k), cumsum(I q) (c×D
  // each), t a multiple of checkpoint_every: the streaming pass's own
  // additions from the checkpoint, so exactly its values.
  void prefix_sums(std::int64_t t, std::int64_t c, T* k_sums, T* q_sums, T* k_outgoing_sums, T* q_incoming_sums) {
    assert(checkpoint_every > 0 && t % checkpoint_every == 0 && c <= checkpoint_every);
    const std::int64_t D = dims.D;
    const T* saved = checkpoints.data() + t / checkpoint_every * 4 * D;
    for (std::int64_t a = 0; a < c; ++a) {
      const T* ki = k + (t + a) * D;
      const T* qi = q + (t + a) * D;
      const T O_i = source_outgoing[t + a], I_i = sink_incoming[t + a];
      const bool first = a == 0;
      const T* k_before = first ? saved : k_sums + (a - 1) * D;
      const T* q_before = first ? saved + D : q_sums + (a - 1) * D;
      const T* k_outgoing_before = first ? saved + 2 * D : k_outgoing_sums + (a - 1) * D;
      const T* q_incoming_before = first ? saved + 3 * D : q_incoming_sums + (a - 1) * D;
      for (std::int64_t d = 0; d < D; ++d) {
        k_sums[a * D + d] = k_before[d] + ki[d];
        k_outgoing_sums[a * D + d] = k_outgoing_before[d] + O_i * ki[d];
      }
      for (std::int64_t d = 0; d < D; ++d) {
        q_sums[a * D + d] = q_before[d] + qi[d];
        q_incoming_sums[a * D + d] = q_incoming_before[d] + I_i * qi[d];
      }
    }
  }

  T row_scale(std::int64_t i) {  // s_i = A_i · I_i / n_i
    return sink_allocation[i] * (sink_incoming[i] / static_cast<T>(i + 1));
  }

};

// §C4 on one chunk [t, t+c): R_c = q_c H + (q_c k_cᵀ ⊙ Lower) W_c, where
// H = H_{t−1} is the prefix state of the rows before the chunk. For the
// first chunk (t = 0) H is zero and its GEMM is skipped.
template <class T>
void causal_chunk_aggregate(const T* q_c, const T* k_c, const T* W_c, const T* prefix_state, std::int64_t t,
                            std::int64_t c, Dims dims, T* block, Rows<T> R_c) {
  gemm<T>(false, true, c, c, dims.D, q_c, k_c, T(0), block);
  mask_block(block, c, [](std::int64_t a, std::int64_t b) { return b <= a; });
  gemm<T>(false, false, c, dims.M, c, block, W_c, T(0), R_c.data, R_c.stride);
  if (t > 0) gemm<T>(false, false, c, dims.M, dims.D, q_c, prefix_state, T(1), R_c.data, R_c.stride);
}

// The features q = σ(Q), k = σ(K) go to q_features and k_features (N×D), for the backward.
template <class T>
void causal_forward(Rows<const T> Q, Rows<const T> K, Rows<const T> V, Rows<T> out, Dims dims, Settings<T> cfg,
                    T* q_features, T* k_features) {
  CausalFlows<T> f(Q, K, q_features, k_features, dims, cfg, /*checkpoint_every_rows=*/0);
  const std::int64_t chunk = causal_chunk(dims.N, dims.D, dims.M);
  Buffer<T> W(dims.N * dims.M), prefix_state(dims.D * dims.M, Zeroed{}), block(chunk * chunk);
  weighted_values(V, f.source_competition.data(), dims.N, dims.M, W.data());
  for (std::int64_t t = 0; t < dims.N; t += chunk) {
    const std::int64_t c = std::min(chunk, dims.N - t);
    const Rows<T> out_c{out.row(t), out.stride};
    causal_chunk_aggregate(f.q + t * dims.D, f.k + t * dims.D, W.row(t, dims.M), prefix_state.data(), t, c,
                           dims, block.data(), out_c);
    if (t + c < dims.N)  // H += k_cᵀ W_c; the state after the last chunk is not read
      gemm<T>(true, false, dims.D, dims.M, c, f.k + t * dims.D, W.row(t, dims.M), T(1), prefix_state.data());
    for (std::int64_t a = 0; a < c; ++a) {
      const T row_scale = f.row_scale(t + a);
      for (std::int64_t m = 0; m < dims.M; ++m) out_c.row(a)[m] *= row_scale;
    }
  }
}

// Gradients of one head (every element of dQ, dK, dV is written), given the
// forward's features q, k and output `out` (for R_i = out_i / s_i: see §C4
// below).
template <class T>
FLOWGRAD_PER_CPU void causal_backward(const T* q_features, const T* k_features, Rows<const T> V, Rows<const T> out,
                                      Rows<const T> G, Rows<T> dQ, Rows<T> dK, Rows<T> dV, Dims dims, Settings<T> cfg,
                                      KernelRecorder* rec = nullptr) {
  const std::int64_t N = dims.N, D = dims.D, M = dims.M;
  const std::int64_t chunk = causal_chunk(N, D, M);
  CausalFlows<T> f(q_features, k_features, dims, cfg, /*checkpoint_every_rows=*/chunk);
  // One D×M buffer serves as the prefix state H (forward sweep), then as the suffix state U.
  Buffer<T> W(N * M), dR(N * M), dW(N * M), ds(N), state_buffer(D * M, Zeroed{});
  T* const prefix_state = state_buffer.data();
  // Each chunk's (dR_c W_cᵀ ⊙ Lower), chunk² apart: the backward sweep's
  // (W_c dR_cᵀ ⊙ Upper) is its transpose.
  const std::int64_t chunks = (N + chunk - 1) / chunk;
  Buffer<T> block(chunk * chunk), dR_W_blocks(chunks * chunk * chunk);
  weighted_values(V, f.source_competition.data(), N, M, W.data());
  Buffer<T> dq_buffer(N * D, Zeroed{}), dk_buffer(N * D, Zeroed{});
  T* dq = dq_buffer.data();  // ∂ℓ/∂q and ∂ℓ/∂k until §C0 turns them into ∂ℓ/∂Q and ∂ℓ/∂K
  T* dk = dk_buffer.data();
  std::vector<T> recorded_R(rec ? N * M : 0), recorded_s(rec ? N : 0);
  if (rec) {
    rec->add("q", "§C0", f.q, {N, D});
    rec->add("k", "§C0", f.k, {N, D});
    std::vector<T> sums(static_cast<std::size_t>(4 * N * D));  // cumsum(k), cumsum(q), cumsum(O k), cumsum(I q)
    for (std::int64_t t = 0; t < N; t += chunk)
      f.prefix_sums(t, std::min(chunk, N - t), sums.data() + t * D, sums.data() + (N + t) * D,
                    sums.data() + (2 * N + t) * D, sums.data() + (3 * N + t) * D);
    rec->add("k_sum", "§C1", sums.data(), {N, D});
    rec->add("q_sum", "§C1", sums.data() + N * D, {N, D});
    rec->add("I", "§C1", f.sink_incoming.data(), {N});
    rec->add("O", "§C1", f.source_outgoing.data(), {N});
    rec->add("k_outgoing", "§C2", sums.data() + 2 * N * D, {N, D});
    rec->add("q_incoming", "§C2", sums.data() + 3 * N * D, {N, D});
    rec->add("Ĩ", "§C2", f.conserved_sink.data(), {N});
    rec->add("Ô", "§C2", f.conserved_source_raw.data(), {N});
    rec->add("A", "§C3", f.sink_allocation.data(), {N});
    rec->add("e", "§C3", f.exp_source.data(), {N});
    rec->add("E", "§C3", f.exp_source_cumsum.data(), {N});
    rec->add("C", "§C3", f.source_competition.data(), {N});
    rec->add("W", "§C4", W.data(), {N, M});
  }

  // §C4 backward, forward sweep: ds_i = G_i·R_i, dR_i = s_i G_i and
  // dq_c = dR_c Hᵀ + (dR_c W_cᵀ ⊙ Lower) k_c. R is not recomputed: R_i =
  // out_i / s_i, as s_i >= 1/(2 D (1+ε)(n_i+ε)) is never near 0 (fact 11).
  for (std::int64_t t = 0; t < N; t += chunk) {
    const std::int64_t c = std::min(chunk, N - t);
    const T* k_c = f.k + t * D;
    const T* W_c = W.row(t, M);
    for (std::int64_t a = 0; a < c; ++a) {
      const std::int64_t i = t + a;
      const T row_scale = f.row_scale(i);
      prefetch_row_ahead(G, i, N, M);
      prefetch_row_ahead(out, i, N, M);
      ds[i] = dot(G.row(i), out.row(i), M) / row_scale;
      for (std::int64_t m = 0; m < M; ++m) dR[i * M + m] = row_scale * G.row(i)[m];
      if (rec) {
        for (std::int64_t m = 0; m < M; ++m) recorded_R[i * M + m] = out.row(i)[m] / row_scale;
        recorded_s[static_cast<std::size_t>(i)] = row_scale;
      }
    }
    T* dR_c = dR.row(t, M);
    T* dR_W = dR_W_blocks.data() + t * chunk;  // block number t / chunk, at (t / chunk) · chunk²
    if (t > 0) gemm<T>(false, true, c, D, M, dR_c, prefix_state, T(1), dq + t * D);
    gemm<T>(false, true, c, c, M, dR_c, W_c, T(0), dR_W);
    mask_block(dR_W, c, [](std::int64_t a, std::int64_t b) { return b <= a; });
    gemm<T>(false, false, c, D, c, dR_W, k_c, T(1), dq + t * D);
    if (t + c < N) gemm<T>(true, false, D, M, c, k_c, W_c, T(1), prefix_state);  // H += k_cᵀ W_c
  }

  // §C4 backward, backward sweep with the suffix state U = Σ_{i after the chunk} q_i ⊗ dR_i:
  // dk_c = W_c Uᵀ + (W_c dR_cᵀ ⊙ Upper) q_c,  dW_c = k_c U + (k_c q_cᵀ ⊙ Upper) dR_c
  T* const suffix_state = state_buffer.data();  // H is no longer needed
  std::fill_n(suffix_state, D * M, T(0));
  const std::int64_t last_chunk = (N - 1) / chunk * chunk;
  for (std::int64_t t = last_chunk; t >= 0; t -= chunk) {
    const std::int64_t c = std::min(chunk, N - t);
    const T* q_c = f.q + t * D;
    const T* k_c = f.k + t * D;
    const T* W_c = W.row(t, M);
    const T* dR_c = dR.row(t, M);
    auto upper = [](std::int64_t a, std::int64_t b) { return b >= a; };
    const bool after = t + c < N;  // U is zero for the last chunk
    if (after) gemm<T>(false, true, c, D, M, W_c, suffix_state, T(1), dk + t * D);
    gemm<T>(true, false, c, D, c, dR_W_blocks.data() + t * chunk, q_c, T(1), dk + t * D);
    gemm<T>(false, true, c, c, D, k_c, q_c, T(0), block.data());
    mask_block(block.data(), c, upper);
    gemm<T>(false, false, c, M, c, block.data(), dR_c, T(0), dW.row(t, M));
    if (after) gemm<T>(false, false, c, M, D, k_c, suffix_state, T(1), dW.row(t, M));
    if (t > 0) gemm<T>(true, false, D, M, c, q_c, dR_c, T(1), suffix_state);  // U += q_cᵀ dR_c
  }

  // W_i = C_i v_i;  s_i = A_i I_i / n_i
  Buffer<T> dC(N), dA(N), dI(N);
  for (std::int64_t i = 0; i < N; ++i) {
    prefetch_row_ahead(V, i, N, M);
    prefetch_row_ahead(dV, i, N, M);
    dC[i] = dot(V.row(i), dW.row(i, M), M);
    for (std::int64_t m = 0; m < M; ++m) dV.row(i)[m] = f.source_competition[i] * dW[i * M + m];
    const T count = static_cast<T>(i + 1);
    dA[i] = ds[i] * f.sink_incoming[i] / count;
    dI[i] = ds[i] * f.sink_allocation[i] / count;
  }
  if (rec) {
    rec->add("R", "§C4", recorded_R.data(), {N, M});
    rec->add("s", "§C4", recorded_s.data(), {N});
    rec->add("dR", "§C4", dR.data(), {N, M});
    rec->add("ds", "§C4", ds.data(), {N});
    rec->add("dW", "§C4", dW.data(), {N, M});
    rec->add("dC", "§C4", dC.data(), {N});
    rec->add("dV", "§C4", dV, N, M);
    rec->add("dA", "§C4", dA.data(), {N});
  }
  // Per-position gradients the reverse loop keeps as scalars, for a recorder.
  std::vector<T> recorded_dconserved_sink(rec ? N : 0), recorded_dconserved_source(rec ? N : 0),
      recorded_dO(rec ? N : 0), recorded_du(rec ? N : 0), recorded_dy(rec ? N : 0), recorded_gamma(rec ? N : 0),
      recorded_rho(rec ? N * D : 0), recorded_tau(rec ? N * D : 0), recorded_kappa(rec ? N * D : 0),
      recorded_pi(rec ? N * D : 0);

  // §C3–§C1 backward in one reverse pass (the document's section 5.5). The
  // suffix sums suf(·) are running sums, complete at position i once i is
  // added: γ = d_exp_cumsum_suffix, ρ = d_k_outgoing_suffix, τ =
  // d_q_incoming_suffix, κ = d_k_cumsum_suffix, π = d_q_cumsum_suffix.
  Buffer<T> d_k_outgoing_suffix(D, Zeroed{}), d_q_incoming_suffix(D, Zeroed{}),
      d_k_cumsum_suffix(D, Zeroed{}), d_q_cumsum_suffix(D, Zeroed{});
  T d_exp_cumsum_suffix = 0;
  // The prefix sums of the current chunk (chunk×D each), rebuilt on entering it.
  Buffer<T> chunk_sums(4 * chunk * D);
  T* const k_sums = chunk_sums.data();
  T* const q_sums = k_sums + chunk * D;
  T* const k_outgoing_sums = q_sums + chunk * D;
  T* const q_incoming_sums = k_outgoing_sums + chunk * D;
  for (std::int64_t i = N - 1; i >= 0; --i) {
    const std::int64_t t = i / chunk * chunk;
    const std::int64_t row_in_chunk = i - t;
    if (i == N - 1 || row_in_chunk == chunk - 1)  // the first row of its chunk that this pass reaches
      f.prefix_sums(t, row_in_chunk + 1, k_sums, q_sums, k_outgoing_sums, q_incoming_sums);
    const T count = static_cast<T>(i + 1);
    const T* qi = f.q + i * D;
    const T* ki = f.k + i * D;
    T* dqi = dq + i * D;
    T* dki = dk + i * D;
    // §C3: A_i = σ(Ĩ_i);  C_i = n_i e_i / E_i, E = pre(e), e = exp(Õ)
    const T a = f.sink_allocation[i];
    const T d_conserved_sink = dA[i] * a * (T(1) - a);
    const T E = f.exp_source_cumsum[i];
    d_exp_cumsum_suffix += -dC[i] * f.source_competition[i] / E;  // dE_i = −dC_i C_i / E_i
    const T d_exp = dC[i] * count / E + d_exp_cumsum_suffix;
    const T raw = f.conserved_source_raw[i];
    const bool clamp_inactive = raw >= cfg.clamp_min && raw <= cfg.clamp_max;  // §C2 clamp
    const T d_conserved_source_raw = clamp_inactive ? d_exp * f.exp_source[i] : T(0);
    if (rec) {
      recorded_dconserved_sink[static_cast<std::size_t>(i)] = d_conserved_sink;
      recorded_dconserved_source[static_cast<std::size_t>(i)] = d_conserved_source_raw;
    }

    // §C2: Ĩ_i = (q_i+ε)·(k_outgoing_i+ε)/n_i with k_outgoing = pre(O k)
    // (the 1/n_i is applied to the scalar once, not to every element)
    const T* k_outgoing = k_outgoing_sums + row_in_chunk * D;
    const T* q_incoming = q_incoming_sums + row_in_chunk * D;
    const T d_sink_per_count = d_conserved_sink / count;
    for (std::int64_t d = 0; d < D; ++d) {
      dqi[d] += d_sink_per_count * (k_outgoing[d] + cfg.eps);
      d_k_outgoing_suffix[d] += d_sink_per_count * (qi[d] + cfg.eps);  // ρ += dk_outgoing_i
    }
    const T dO = dot(d_k_outgoing_suffix.data(), ki, D);
    axpy(f.source_outgoing[i], d_k_outgoing_suffix.data(), dki, D);
    //       Ô_i = (k_i+ε)·(q_incoming_i+ε)/n_i with q_incoming = pre(I q)
    const T d_source_per_count = d_conserved_source_raw / count;
    for (std::int64_t d = 0; d < D; ++d) {
      dki[d] += d_source_per_count * (q_incoming[d] + cfg.eps);
      d_q_incoming_suffix[d] += d_source_per_count * (ki[d] + cfg.eps);  // τ += dq_incoming_i
    }
    dI[i] += dot(d_q_incoming_suffix.data(), qi, D);
    axpy(f.sink_incoming[i], d_q_incoming_suffix.data(), dqi, D);

    // §C1: I_i = n_i/u_i, u_i = (q_i+ε)·(k_sum_i+ε);  O_i = n_i/y_i, y_i = (k_i+ε)·(q_sum_i+ε)
    const T du = -dI[i] * f.sink_incoming[i] * f.sink_incoming[i] / count;
    const T dy = -dO * f.source_outgoing[i] * f.source_outgoing[i] / count;
    if (rec) {
      recorded_dO[static_cast<std::size_t>(i)] = dO;
      recorded_du[static_cast<std::size_t>(i)] = du;
      recorded_dy[static_cast<std::size_t>(i)] = dy;
    }
    const T* k_sum_i = k_sums + row_in_chunk * D;
    const T* q_sum_i = q_sums + row_in_chunk * D;
    for (std::int64_t d = 0; d < D; ++d) {  // two loops of two updates each vectorise; one of four did not
      dqi[d] += du * (k_sum_i[d] + cfg.eps);
      d_k_cumsum_suffix[d] += du * (qi[d] + cfg.eps);
    }
    for (std::int64_t d = 0; d < D; ++d) {
      dki[d] += dy * (q_sum_i[d] + cfg.eps);
      d_q_cumsum_suffix[d] += dy * (ki[d] + cfg.eps);
    }
    axpy(T(1), d_k_cumsum_suffix.data(), dki, D);
    axpy(T(1), d_q_cumsum_suffix.data(), dqi, D);
    if (rec) {  // the running suffix sums, complete at position i
      recorded_gamma[static_cast<std::size_t>(i)] = d_exp_cumsum_suffix;
      std::copy_n(d_k_outgoing_suffix.data(), D, recorded_rho.data() + i * D);
      std::copy_n(d_q_incoming_suffix.data(), D, recorded_tau.data() + i * D);
      std::copy_n(d_k_cumsum_suffix.data(), D, recorded_kappa.data() + i * D);
      std::copy_n(d_q_cumsum_suffix.data(), D, recorded_pi.data() + i * D);
    }
  }

  if (rec) {
    rec->add("γ", "§C3", recorded_gamma.data(), {N});
    rec->add("dĨ", "§C3", recorded_dconserved_sink.data(), {N});
    rec->add("dÔ", "§C2", recorded_dconserved_source.data(), {N});
    rec->add("dO", "§C2", recorded_dO.data(), {N});
    rec->add("dI", "§C2", dI.data(), {N});
    rec->add("du", "§C1", recorded_du.data(), {N});
    rec->add("dy", "§C1", recorded_dy.data(), {N});
    rec->add("ρ", "§C2", recorded_rho.data(), {N, D});
    rec->add("τ", "§C2", recorded_tau.data(), {N, D});
    rec->add("κ", "§C1", recorded_kappa.data(), {N, D});
    rec->add("π", "§C1", recorded_pi.data(), {N, D});
    rec->add("dq", "§C1", dq, {N, D});
    rec->add("dk", "§C1", dk, {N, D});
  }

  // §C0 backward
  feature_map_backward(dq, f.q, N, D, dQ);
  feature_map_backward(dk, f.k, N, D, dK);
  if (rec) {
    rec->add("dQ", "§C0", dQ, N, D);
    rec->add("dK", "§C0", dK, N, D);
  }
}

// ---------------------------------------------------------------------------
// Batching over (batch, head), key padding masks, autograd
// ---------------------------------------------------------------------------

struct Problem {
  std::int64_t batch, heads;  // B and the heads per batch element (H of the shapes, not the prefix state H)
  Dims dims;
  std::vector<std::vector<std::int64_t>> real_keys;  // per batch element; empty = no mask
};

Problem check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const FlowAttentionOptions& o,
                     const Tensor& mask) {
  const char* op = "flow_attention";
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail(op, "expected queries [B, H, L, D], keys [B, H, S, D], values [B, H, S, M]; got ",
         shape_str(q.shape()), ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  if (q.dtype() != k.dtype() || q.dtype() != v.dtype() || !is_floating(q.dtype()))
    fail(op, "queries, keys and values must share a float dtype; got ", dtype_name(q.dtype()), ", ",
         dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  const std::int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  const std::int64_t S = k.size(2), M = v.size(3);
  if (k.size(0) != B || v.size(0) != B || k.size(1) != H || v.size(1) != H)
    fail(op, "batch and head dims differ: queries ", shape_str(q.shape()), ", keys ",
         shape_str(k.shape()), ", values ", shape_str(v.shape()));
  if (k.size(3) != D)
    fail(op, "queries ", shape_str(q.shape()), " and keys ", shape_str(k.shape()),
         " differ in the feature dim D");
  if (v.size(2) != S)
    fail(op, "keys ", shape_str(k.shape()), " and values ", shape_str(v.shape()),
         " differ in the sequence length S");
  if (S == 0) fail(op, "keys ", shape_str(k.shape()), " hold no key (S = 0)");
  // Flows are sums over the D features: with none every flow is 0 and the
  // normalisations divide 0 by 0. M = 0 leaves nothing to aggregate.
  if (D == 0) fail(op, "queries ", shape_str(q.shape()), " and keys ", shape_str(k.shape()), " have no feature (D = 0)");
  if (M == 0) fail(op, "values ", shape_str(v.shape()), " have no feature (M = 0)");
  if (o.causal && L != S)
    fail(op, "causal attention needs L == S; got queries ", shape_str(q.shape()), " and keys ",
         shape_str(k.shape()));
  if (!(o.eps >= 0) || !(o.clamp_min <= o.clamp_max))
    fail(op, "invalid options eps=", o.eps, " clamp=[", o.clamp_min, ", ", o.clamp_max, "]");

  Problem p{B, H, {L, S, D, M}, {}};
  if (!mask.defined()) return p;
  if (o.causal)
    fail(op, "key_padding_mask is supported for normal attention only (a causal sequence is "
             "padded at its end, which no earlier position sees)");
  if (mask.shape() != Shape{B, S})
    fail(op, "key_padding_mask of shape ", shape_str(mask.shape()), " does not match [B, S] = ",
         shape_str({B, S}), " of keys ", shape_str(k.shape()));
  std::vector<double> flags = mask.to_vector<double>();
  p.real_keys.resize(B);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t j = 0; j < S; ++j)
      if (flags[b * S + j] != 0) p.real_keys[b].push_back(j);
    if (p.real_keys[b].empty())
      fail(op, "key_padding_mask marks every key of batch element ", b, " as padding");
  }
  return p;
}

// `t` itself, history-free, when its rows (last dim) are contiguous and do
// not overlap: the kernels take any such row stride and any order of the
// batch and head dims, so heads split from a [B, L, H·D] projection by a view
// need no copy. Other layouts are copied, among them rows closer than their
// width (an expand along the sequence), which BLAS cannot take as a matrix.
Tensor with_contiguous_rows(const Tensor& t) {
  NoGradGuard no_grad;
  const bool contiguous_rows = t.size(3) <= 1 || t.stride(3) == 1;
  const bool rows_apart = t.size(2) <= 1 || t.stride(2) >= t.size(3);
  return (contiguous_rows && rows_apart ? t : t.contiguous()).detach();
}

// The heads of a [B, H, rows, width] tensor: heads(head) are the rows of
// head `head` (batch-major: batch · H + h). Read from the tensor once, not
// per head: the heads of short sequences are many and quick.
template <class T>
class HeadRows {
 public:
  explicit HeadRows(const Tensor& t)
      : data_(t.data<std::remove_const_t<T>>()), heads_(t.size(1)), batch_stride_(t.stride(0)),
        head_stride_(t.stride(1)), row_stride_(t.stride(2)) {}
  Rows<T> operator()(std::int64_t head) const {
    return {data_ + head / heads_ * batch_stride_ + head % heads_ * head_stride_, row_stride_};
  }

 private:
  T* data_;
  std::int64_t heads_, batch_stride_, head_stride_, row_stride_;
};

// Whether a [B, H, rows, width] tensor has the heads of a position side by
// side ([B, rows, H, width] in memory), as heads split from a projection by
// a view have.
bool heads_side_by_side(const Tensor& t) { return t.stride(1) < t.stride(2); }

// A [B, H, rows, width] result, with the heads of a position side by side
// when `side_by_side` (like the input it belongs to), which makes merging
// the heads back a view.
Tensor new_heads(const Problem& p, std::int64_t rows, std::int64_t width, DType dtype, bool side_by_side,
                 bool zeroed) {
  const std::int64_t B = p.batch, H = p.heads;
  const Shape shape = side_by_side ? Shape{B, rows, H, width} : Shape{B, H, rows, width};
  const Tensor memory = zeroed ? zeros(shape, dtype) : empty(shape, dtype);
  return side_by_side ? memory.permute({0, 2, 1, 3}) : memory;
}

// Runs body(head, Q, K, V, sizes, real) for every (batch, head) in parallel.
// With a mask, K and V are compact copies of the real keys of that batch
// element and `real` lists their positions.
template <class T, class Body>
void for_each_head(const Problem& p, const Tensor& q, const Tensor& k, const Tensor& v, Body body) {
  const Dims dims = p.dims;
  const HeadRows<const T> q_heads(q), k_heads(k), v_heads(v);
  auto run_head = [&](std::int64_t head) {
    const Rows<const T> Qh = q_heads(head), Kh = k_heads(head), Vh = v_heads(head);
    if (p.real_keys.empty()) {
      body(head, Qh, Kh, Vh, dims, nullptr);
      return;
    }
    const std::vector<std::int64_t>& real = p.real_keys[head / p.heads];
    Dims compact = dims;
    compact.S = static_cast<std::int64_t>(real.size());
    Buffer<T> K_real(compact.S * dims.D), V_real(compact.S * dims.M);
    for (std::int64_t r = 0; r < compact.S; ++r) {
      std::copy_n(Kh.row(real[r]), dims.D, K_real.row(r, dims.D));
      std::copy_n(Vh.row(real[r]), dims.M, V_real.row(r, dims.M));
    }
    body(head, Qh, Rows<const T>{K_real.data(), dims.D}, Rows<const T>{V_real.data(), dims.M}, compact, &real);
  };
  const std::int64_t all_heads = p.batch * p.heads;
  const int threads = get_num_threads();
  if (all_heads > 1 && threads > 1) {
    // About eight chunks per thread balance the cores; larger ones would
    // share less of each task's set-up. Each head is computed whole by one
    // task, so the chunking (unlike a sum's) cannot change the results.
    const std::int64_t heads_per_chunk = std::max<std::int64_t>(1, all_heads / (8 * threads));
    parallel_for(all_heads, heads_per_chunk, [&](std::int64_t begin, std::int64_t end) {
      const ScratchArena::Hold scratch;
      for (std::int64_t h = begin; h < end; ++h) run_head(h);
    });
  } else {
    const ScratchArena::Hold scratch;
    for (std::int64_t h = 0; h < all_heads; ++h) run_head(h);
  }
}

// The settings of a call whose heads have `dims` (the product order is
// chosen once per call, so heads compacted by a mask keep it).
template <class T>
Settings<T> settings_of(const FlowAttentionOptions& o, Dims dims) {
  return {static_cast<T>(o.eps), static_cast<T>(o.clamp_min), static_cast<T>(o.clamp_max),
          scores_first(o, dims)};
}

// What the forward keeps for the backward besides V and its output: every
// head's features q = σ(Q) and k = σ(K) ([B, H, N, D] and [B, H, S, D],
// contiguous), so the backward reads them instead of mapping Q and K again,
// and for normal attention every head's flows and KV or P ([B·H,
// normal_flows_size]). The node holds the features in place of Q and
// K, which are as large. With a mask, k's rows of padded keys are never
// written nor read, and a head's flows fill the first normal_flows_size of
// its compact dims.
struct KeptFeatures {
  Tensor queries, keys, flows;
};

// The forward of every head; with `kept`, the features go there.
Tensor forward_all(const Problem& p, const Tensor& q, const Tensor& k, const Tensor& v,
                   const FlowAttentionOptions& o, KeptFeatures* kept) {
  const Dims dims = p.dims;
  Tensor out = new_heads(p, dims.N, dims.M, q.dtype(), heads_side_by_side(q), /*zeroed=*/false);
  if (kept != nullptr) {
    kept->queries = empty({p.batch, p.heads, dims.N, dims.D}, q.dtype());
    kept->keys = empty({p.batch, p.heads, dims.S, dims.D}, q.dtype());
    if (!o.causal)
      kept->flows = empty({p.batch * p.heads, normal_flows_size(dims, scores_first(o, dims))}, q.dtype());
  }
  dispatch_floating(q.dtype(), "flow_attention", [&]<class T>() {
    const Settings<T> cfg = settings_of<T>(o, dims);
    const HeadRows<T> out_heads(out);
    for_each_head<T>(p, q, k, v, [&](std::int64_t head, Rows<const T> Qh, Rows<const T> Kh, Rows<const T> Vh,
                                     Dims hn, const std::vector<std::int64_t>* real) {
      // The head's features go to the kept tensors, or to scratch when
      // nothing keeps them; a mask's compact keys go through scratch to
      // their rows.
      T* const q_kept = kept != nullptr ? kept->queries.data<T>() + head * dims.N * dims.D : nullptr;
      T* const k_kept = kept != nullptr ? kept->keys.data<T>() + head * dims.S * dims.D : nullptr;
      const bool keys_in_place = k_kept != nullptr && real == nullptr;
      Buffer<T> q_scratch(q_kept != nullptr ? 0 : hn.N * hn.D), k_scratch(keys_in_place ? 0 : hn.S * hn.D);
      T* const q_features = q_kept != nullptr ? q_kept : q_scratch.data();
      T* const k_features = keys_in_place ? k_kept : k_scratch.data();
      if (o.causal) {
        causal_forward(Qh, Kh, Vh, out_heads(head), hn, cfg, q_features, k_features);
      } else {
        Buffer<T> flows_scratch(kept != nullptr ? 0 : normal_flows_size(hn, cfg.scores_first));
        T* const flows = kept != nullptr ? kept->flows.data<T>() + head * kept->flows.size(1) : flows_scratch.data();
        normal_forward(Qh, Kh, Vh, out_heads(head), hn, cfg, q_features, k_features, flows);
      }
      if (k_kept != nullptr && !keys_in_place)
        for (std::int64_t r = 0; r < hn.S; ++r)
          std::copy_n(k_scratch.row(r, dims.D), dims.D, k_kept + (*real)[r] * dims.D);
    });
  });
  return out;
}

// The gradients of the whole batch: dQ, dK, dV (zero for padded keys), each
// laid out like its input (`side_by_side`: queries, keys, values).
TensorList backward_all(const Problem& p, const KeptFeatures& features, const Tensor& v, const Tensor& out,
                        const Tensor& grad_out, const FlowAttentionOptions& o, std::array<bool, 3> side_by_side) {
  const Dims dims = p.dims;
  const bool masked = !p.real_keys.empty();
  const DType dtype = v.dtype();
  Tensor dq = new_heads(p, dims.N, dims.D, dtype, side_by_side[0], false),
         dk = new_heads(p, dims.S, dims.D, dtype, side_by_side[1], masked),
         dv = new_heads(p, dims.S, dims.M, dtype, side_by_side[2], masked);
  dispatch_floating(dtype, "flow_attention", [&]<class T>() {
    const Settings<T> cfg = settings_of<T>(o, dims);
    const HeadRows<const T> grad_heads(grad_out), out_heads(out);
    const HeadRows<T> dq_heads(dq), dk_heads(dk), dv_heads(dv);
    // for_each_head compacts the kept key features like keys: rows D apart either way.
    for_each_head<T>(p, features.queries, features.keys, v, [&](std::int64_t head, Rows<const T> q, Rows<const T> k,
                                                                Rows<const T> Vh, Dims hn,
                                                                const std::vector<std::int64_t>* real) {
      assert(q.stride == dims.D && k.stride == dims.D);
      const Rows<const T> G = grad_heads(head), out_h = out_heads(head);
      const Rows<T> dQh = dq_heads(head), dKh = dk_heads(head), dVh = dv_heads(head);
      if (o.causal) {
        causal_backward(q.data, k.data, Vh, out_h, G, dQh, dKh, dVh, hn, cfg);
        return;
      }
      const T* flows = features.flows.data<T>() + head * features.flows.size(1);
      if (real == nullptr) {
        normal_backward(q.data, k.data, flows, Vh, out_h, G, dQh, dKh, dVh, hn, cfg);
        return;
      }
      Buffer<T> dK_real(hn.S * dims.D), dV_real(hn.S * dims.M);
      normal_backward(q.data, k.data, flows, Vh, out_h, G, dQh, Rows<T>{dK_real.data(), dims.D},
                      Rows<T>{dV_real.data(), dims.M}, hn, cfg);
      for (std::int64_t r = 0; r < hn.S; ++r) {  // padded rows stay zero
        std::copy_n(dK_real.row(r, dims.D), dims.D, dKh.row((*real)[r]));
        std::copy_n(dV_real.row(r, dims.M), dims.M, dVh.row((*real)[r]));
      }
    });
  });
  return {dq, dk, dv};
}

class FlowAttentionBackward final : public autograd::Node {
 public:
  std::string_view name() const override { return "flow_attention"; }
  TensorList backward(const Tensor& grad_out) override {
    return backward_all(problem, {query_features.get(), key_features.get(), flows.get()}, values.get(), output.get(),
                        with_contiguous_rows(grad_out), options, side_by_side);
  }
  autograd::SavedTensor query_features{this}, key_features{this}, flows{this}, values{this}, output{this};
  Problem problem;
  FlowAttentionOptions options;
  std::array<bool, 3> side_by_side{};  // heads_side_by_side of queries, keys, values: their gradients' layouts
};

}  // namespace

CausalFlowAttentionState::CausalFlowAttentionState(std::int64_t batch, std::int64_t heads,
                                                   std::int64_t dim, std::int64_t value_dim,
                                                   DType dtype, const FlowAttentionOptions& options)
    : batch_(batch), heads_(heads), dim_(dim), value_dim_(value_dim), dtype_(dtype), options_(options) {
  if (batch < 1 || heads < 1 || dim < 1 || value_dim < 1 || !is_floating(dtype))
    fail("CausalFlowAttentionState", "expected positive sizes and a float dtype, got batch=", batch,
         " heads=", heads, " dim=", dim, " value_dim=", value_dim, " dtype=", dtype_name(dtype));
  if (!(options.eps >= 0) || !(options.clamp_min <= options.clamp_max))
    fail("CausalFlowAttentionState", "invalid options eps=", options.eps, " clamp=[", options.clamp_min,
         ", ", options.clamp_max, "]");
  reset();
}

void CausalFlowAttentionState::reset() {
  const std::int64_t heads = batch_ * heads_;
  k_sum_ = zeros({heads, dim_}, dtype_);
  q_sum_ = zeros({heads, dim_}, dtype_);
  k_outgoing_ = zeros({heads, dim_}, dtype_);
  q_incoming_ = zeros({heads, dim_}, dtype_);
  exp_sum_ = zeros({heads}, dtype_);
  kv_state_ = zeros({heads, dim_, value_dim_}, dtype_);
  position_ = 0;
}

// One position of §C1–§C4, with every prefix sum kept as a running sum.
Tensor CausalFlowAttentionState::step(const Tensor& q, const Tensor& k, const Tensor& v) {
  const Shape q_shape{batch_, heads_, 1, dim_}, v_shape{batch_, heads_, 1, value_dim_};
  if (q.shape() != q_shape || k.shape() != q_shape || v.shape() != v_shape)
    fail("CausalFlowAttentionState::step", "expected q, k ", shape_str(q_shape), " and v ",
         shape_str(v_shape), "; got ", shape_str(q.shape()), ", ", shape_str(k.shape()), ", ",
         shape_str(v.shape()));
  if (q.dtype() != dtype_ || k.dtype() != dtype_ || v.dtype() != dtype_)
    fail("CausalFlowAttentionState::step", "expected ", dtype_name(dtype_), " inputs");
  NoGradGuard no_grad;
  const Tensor qd = q.contiguous(), kd = k.contiguous(), vd = v.contiguous();
  Tensor out = empty(v_shape, dtype_);
  const std::int64_t D = dim_, M = value_dim_;
  dispatch_floating(dtype_, "CausalFlowAttentionState::step", [&]<class T>() {
    const Settings<T> cfg = settings_of<T>(FlowAttentionOptions(options_).set_causal(true), Dims{1, 1, D, M});
    const T count = static_cast<T>(position_ + 1);
    Buffer<T> qi(D), ki(D), weighted(M);
    for (std::int64_t h = 0; h < batch_ * heads_; ++h) {
      feature_map(qd.data<T>() + h * D, D, 1, D, qi.data(), nullptr);
      feature_map(kd.data<T>() + h * D, D, 1, D, ki.data(), nullptr);
      T* k_sum = k_sum_.data<T>() + h * D;
      T* q_sum = q_sum_.data<T>() + h * D;
      T* k_outgoing = k_outgoing_.data<T>() + h * D;
      T* q_incoming = q_incoming_.data<T>() + h * D;
      T* kv = kv_state_.data<T>() + h * D * M;
      T& exp_sum = exp_sum_.data<T>()[h];
      axpy(T(1), ki.data(), k_sum, D);  // §C1
      axpy(T(1), qi.data(), q_sum, D);
      const T sink_incoming = T(1) / dot_eps(qi.data(), k_sum, D, cfg.eps) * count;
      const T source_outgoing = T(1) / dot_eps(ki.data(), q_sum, D, cfg.eps) * count;
      axpy(source_outgoing, ki.data(), k_outgoing, D);  // §C2
      axpy(sink_incoming, qi.data(), q_incoming, D);
      const T conserved_sink = dot_eps(qi.data(), k_outgoing, D, cfg.eps) / count;
      const T conserved_source_raw = dot_eps(ki.data(), q_incoming, D, cfg.eps) / count;
      const T sink_allocation = flow_sigmoid(conserved_sink);  // §C3
      const T exp_source = flow_exp(std::clamp(conserved_source_raw, cfg.clamp_min, cfg.clamp_max));
      exp_sum += exp_source;
      const T source_competition = exp_source / exp_sum * count;
      const T* vi = vd.data<T>() + h * M;  // §C4: H += k ⊗ C v;  out = A (I/n) q H
      for (std::int64_t m = 0; m < M; ++m) weighted[m] = source_competition * vi[m];
      for (std::int64_t d = 0; d < D; ++d) axpy(ki[d], weighted.data(), kv + d * M, M);
      T* out_h = out.data<T>() + h * M;
      std::fill_n(out_h, M, T(0));
      for (std::int64_t d = 0; d < D; ++d) axpy(qi[d], kv + d * M, out_h, M);
      const T row_scale = sink_allocation * (sink_incoming / count);
      for (std::int64_t m = 0; m < M; ++m) out_h[m] *= row_scale;
    }
  });
  ++position_;
  return out;
}

void check_flow_attention_arguments(const Tensor& queries, const Tensor& keys, const Tensor& values,
                                    const FlowAttentionOptions& options,
                                    const Tensor& key_padding_mask) {
  check_inputs(queries, keys, values, options, key_padding_mask);
}

Tensor flow_attention(const Tensor& queries, const Tensor& keys, const Tensor& values,
                      const FlowAttentionOptions& options, const Tensor& key_padding_mask) {
  Problem problem = check_inputs(queries, keys, values, options, key_padding_mask);
  Tensor q = with_contiguous_rows(queries), k = with_contiguous_rows(keys), v = with_contiguous_rows(values);
  auto node = autograd::make_node<FlowAttentionBackward>({queries, keys, values});
  KeptFeatures features;
  Tensor out = forward_all(problem, q, k, v, options, node ? &features : nullptr);
  if (node) {
    node->query_features.save(features.queries);
    node->key_features.save(features.keys);
    node->flows.save(features.flows);  // undefined for causal attention
    node->values.save(v);
    node->output.save(out);
    node->problem = std::move(problem);
    node->options = options;
    node->side_by_side = {heads_side_by_side(q), heads_side_by_side(k), heads_side_by_side(v)};
    autograd::set_history(out, node);
  }
  return out;
}

const Tensor& FlowAttentionInspection::at(std::string_view symbol) const {
  for (const FlowAttentionQuantity& quantity : quantities)
    if (quantity.symbol == symbol) return quantity.value;
  fail("FlowAttentionInspection", "no quantity \"", symbol.substr(0, 40), "\": the kernel does not hold it");
}

FlowAttentionInspection flow_attention_inspect(const Tensor& queries, const Tensor& keys, const Tensor& values,
                                               const Tensor& grad_out, const FlowAttentionOptions& options,
                                               const Tensor& key_padding_mask, std::int64_t batch,
                                               std::int64_t head) {
  const char* op = "flow_attention_inspect";
  const Problem p = check_inputs(queries, keys, values, options, key_padding_mask);
  if (batch < 0 || batch >= p.batch || head < 0 || head >= p.heads)
    fail(op, "(batch, head) = (", batch, ", ", head, ") is outside the ", p.batch, " x ", p.heads, " heads of queries ",
         shape_str(queries.shape()));
  const Shape out_shape{p.batch, p.heads, p.dims.N, p.dims.M};
  if (!grad_out.defined() || grad_out.shape() != out_shape || grad_out.dtype() != queries.dtype())
    fail(op, "grad_out must be ", dtype_name(queries.dtype()), " ", shape_str(out_shape), " like the output, got ",
         grad_out.defined() ? std::string(dtype_name(grad_out.dtype())) + " " + shape_str(grad_out.shape())
                            : std::string("an undefined tensor"));
  const Tensor q = with_contiguous_rows(queries), k = with_contiguous_rows(keys), v = with_contiguous_rows(values),
               g = with_contiguous_rows(grad_out);
  KernelRecorder rec;
  // The kernel's own quantities in the order it would run: KV unless the
  // options ask for the scores first (Cheaper shows KV, the general case).
  FlowAttentionOptions shown = options;
  if (shown.order == FlowAttentionOptions::Order::Cheaper) shown.order = FlowAttentionOptions::Order::KeysValuesFirst;
  dispatch_floating(q.dtype(), op, [&]<class T>() {
    const Settings<T> cfg = settings_of<T>(shown, p.dims);
    const std::int64_t index = batch * p.heads + head;
    Dims dims = p.dims;
    const Rows<const T> Qh = HeadRows<const T>(q)(index), G = HeadRows<const T>(g)(index);
    Rows<const T> Kh = HeadRows<const T>(k)(index), Vh = HeadRows<const T>(v)(index);
    // With a mask, the real keys only (as the kernels see them).
    std::vector<T> K_real, V_real;
    if (!p.real_keys.empty()) {
      for (std::int64_t j : p.real_keys[static_cast<std::size_t>(batch)]) {
        K_real.insert(K_real.end(), Kh.row(j), Kh.row(j) + dims.D);
        V_real.insert(V_real.end(), Vh.row(j), Vh.row(j) + dims.M);
      }
      dims.S = static_cast<std::int64_t>(p.real_keys[static_cast<std::size_t>(batch)].size());
      Kh = {K_real.data(), dims.D};
      Vh = {V_real.data(), dims.M};
    }
    std::vector<T> out(static_cast<std::size_t>(dims.N * dims.M)), dQ(static_cast<std::size_t>(dims.N * dims.D)),
        dK(static_cast<std::size_t>(dims.S * dims.D)), dV(static_cast<std::size_t>(dims.S * dims.M)),
        q_features(dQ.size()), k_features(dK.size());
    const Rows<T> out_rows{out.data(), dims.M}, dQ_rows{dQ.data(), dims.D}, dK_rows{dK.data(), dims.D},
        dV_rows{dV.data(), dims.M};
    if (options.causal) {
      causal_forward(Qh, Kh, Vh, out_rows, dims, cfg, q_features.data(), k_features.data());
      causal_backward<T>(q_features.data(), k_features.data(), Vh, Rows<const T>{out.data(), dims.M}, G, dQ_rows,
                         dK_rows, dV_rows, dims, cfg, &rec);
    } else {
      std::vector<T> flows(static_cast<std::size_t>(normal_flows_size(dims, cfg.scores_first)));
      normal_forward(Qh, Kh, Vh, out_rows, dims, cfg, q_features.data(), k_features.data(), flows.data());
      normal_backward<T>(q_features.data(), k_features.data(), flows.data(), Vh, Rows<const T>{out.data(), dims.M},
                         G, dQ_rows, dK_rows, dV_rows, dims, cfg, &rec);
    }
    // out (from the forward kernel) goes after s, the last forward quantity.
    KernelRecorder out_rec;
    out_rec.add("out", options.causal ? "§C4" : "§N4", out.data(), {dims.N, dims.M});
    const auto after_s = std::find_if(rec.quantities.begin(), rec.quantities.end(),
                                      [](const FlowAttentionQuantity& x) { return x.symbol == "s"; });
    rec.quantities.insert(after_s + 1, std::move(out_rec.quantities.front()));
  });
  return {std::move(rec.quantities)};
}

}  // namespace flowgrad
