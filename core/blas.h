// Thin typed wrapper over CBLAS GEMM (row-major). Transposed operands are
// passed as a transpose flag, never copied.
#pragma once

#include <cstdint>

namespace flowgrad::blas {

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, with op(X) = X or X^T.
template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
          T alpha, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
          std::int64_t ldc);

// y[m] = A[m,n] x[n], A row-major with rows lda apart (one thread).
template <class T>
void gemv(std::int64_t m, std::int64_t n, const T* a, std::int64_t lda, const T* x, T* y);

// While profiling (core/profile.h), every GEMM's time is added to this
// region, summed over the threads that ran GEMMs.
inline constexpr const char* kGemmRegion = "gemm (thread-seconds)";

// The float32 GEMM rate of this machine at the current thread count, in
// GFLOP/s: the median of `repeats` square n×n products (2·n³ FLOPs each)
// after one warm-up. The denominator of model FLOPs utilisation.
double measure_sgemm_gflops(std::int64_t n = 1024, int repeats = 5);

}  // namespace flowgrad::blas
