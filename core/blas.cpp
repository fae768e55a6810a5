#include "blas.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "error.h"

#include "parallel.h"
#include "profile.h"

namespace flowgrad::blas {

namespace {

CBLAS_TRANSPOSE flag(bool transpose) { return transpose ? CblasTrans : CblasNoTrans; }

void cblas_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, flag(ta), flag(tb), static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

void cblas_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  cblas_dgemm(CblasRowMajor, flag(ta), flag(tb), static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

// One OpenBLAS call. While profiling, its time goes to the region "gemm
// (thread-seconds)": summed over the threads that ran GEMMs, so divided by
// the thread count it is the time the GEMMs alone would take (a floor).
template <class T>
void call_blas(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
               std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (!profile::enabled()) {
    cblas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const std::int64_t start = profile::now_ns();
  cblas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  profile::record(kGemmRegion, static_cast<double>(profile::now_ns() - start) * 1e-9);
}

// Below this many multiply-adds a GEMM runs on the calling thread: a task
// switch costs more than the split saves.
constexpr std::int64_t kSplitWork = std::int64_t{1} << 21;
// Blocks of C start at multiples of this, so every task runs OpenBLAS's full
// register tiles except at the matrix's own edge (its Haswell kernels tile
// C by 16 × 4 in float and 4 × 8 in double). No coarser: with 64, a width
// of 192 split in two became 128 + 64 rows, and the weight gradients of a
// 192-wide model ran at two thirds of the machine's rate on two threads.
constexpr std::int64_t kBlockAlign = 16;

}  // namespace

// OpenBLAS itself always runs one thread (see parallel.cpp); a large GEMM is
// cut into blocks of rows (or, when C is short and wide, of columns) of C,
// one oneTBB task each, so no second thread pool spins between GEMMs. The
// blocks depend only on the sizes and the thread count: a run is
// reproducible at a given thread count. Across thread counts the last bits
// may differ (OpenBLAS's k blocking follows the block's size), as they did
// with OpenBLAS's own threads.
template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  // OpenBLAS answers a leading dimension below a stored row's length with a
  // message and no product, leaving C as it was: an error here instead.
  const std::int64_t a_row = transpose_a ? m : k, b_row = transpose_b ? k : n;
  if (m > 0 && n > 0 && k > 0 && (lda < a_row || ldb < b_row || ldc < n))
    fail("blas::gemm", "leading dimensions lda=", lda, ", ldb=", ldb, ", ldc=", ldc, " are below the rows' lengths ",
         a_row, ", ", b_row, ", ", n, " of op(A) [", m, ", ", k, "]", transpose_a ? " (transposed)" : "", " and op(B) [",
         k, ", ", n, "]", transpose_b ? " (transposed)" : "");
  const std::int64_t threads = get_num_threads();
  const bool split_rows = m >= n;
  const std::int64_t extent = split_rows ? m : n;
  const std::int64_t blocks =
      std::min(threads, (extent + kBlockAlign - 1) / kBlockAlign);
  if (blocks <= 1 || m * n * k < kSplitWork) {
    call_blas(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Block i covers [i·step, min((i+1)·step, extent)), step a multiple of kBlockAlign.
  const std::int64_t step = ((extent + blocks - 1) / blocks + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  parallel_for(blocks, 1, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t block = first; block < last; ++block) {
      const std::int64_t begin = block * step, size = std::min(extent, begin + step) - begin;
      if (size <= 0) continue;
      if (split_rows) {  // rows [begin, begin+size) of op(A) and C
        const T* a_rows = transpose_a ? a + begin : a + begin * lda;
        call_blas(transpose_a, transpose_b, size, n, k, alpha, a_rows, lda, b, ldb, beta, c + begin * ldc, ldc);
      } else {  // columns [begin, begin+size) of op(B) and C
        const T* b_cols = transpose_b ? b + begin * ldb : b + begin;
        call_blas(transpose_a, transpose_b, m, size, k, alpha, a, lda, b_cols, ldb, beta, c + begin, ldc);
      }
    }
  });
}

double measure_sgemm_gflops(std::int64_t n, int repeats) {
  if (n <= 0 || repeats <= 0)
    fail("measure_sgemm_gflops", "n and repeats must be positive, got n=", n, " repeats=", repeats);
  std::vector<float> a(static_cast<std::size_t>(n * n), 0.5f), b(a.size(), 0.25f), c(a.size());
  std::vector<double> seconds;
  for (int r = 0; r <= repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    if (r > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / seconds[seconds.size() / 2] * 1e-9;
}

template <>
void gemv<float>(std::int64_t m, std::int64_t n, const float* a, std::int64_t lda, const float* x, float* y) {
  get_num_threads();  // the thread settings (OpenBLAS single-threaded) are applied on first use
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n), 1.0f, a,
              static_cast<blasint>(lda), x, 1, 0.0f, y, 1);
}

template <>
void gemv<double>(std::int64_t m, std::int64_t n, const double* a, std::int64_t lda, const double* x, double* y) {
  get_num_threads();
  cblas_dgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n), 1.0, a,
              static_cast<blasint>(lda), x, 1, 0.0, y, 1);
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                          const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*,
                           std::int64_t, const double*, std::int64_t, double, double*, std::int64_t);

}  // namespace flowgrad::blas
