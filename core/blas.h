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

}  // namespace flowgrad::blas
