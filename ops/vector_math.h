// Float math written so that GCC vectorises the loops that call it (no libm
// calls, selects as ternaries). Internal to the library's kernels.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

// Compiles a function for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and the
// baseline, and picks one when the library loads, so its loops run 16 or 8
// float lanes where the baseline build runs SSE's 4, without building for
// the build machine. The compiler fuses no multiply-add (-ffp-contract=off,
// meson.build) and reassociates no sum, so all clones give the same bits;
// only code that asks per_cpu_clone_has_fma() (the feature map's σ and
// float GELU) differs, in the last bits, between the v3/v4 clones and the
// baseline.
// Elsewhere the baseline build alone: on other CPUs, and with clang 14,
// which cannot clone templates (its builds, for sanitizers and fuzzing,
// lose only speed).
#if defined(__x86_64__) && !defined(__clang__)
#define FLOWGRAD_PER_CPU [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define FLOWGRAD_PER_CPU
#endif

namespace flowgrad {

// Whether the FLOWGRAD_PER_CPU clone that runs here has fused multiply-add
// instructions: this CPU is x86-64-v3 or v4 (asked once; a CPU with FMA
// below that level runs the baseline clone, where std::fma would be a call
// per element). A kernel that branches on it before its loop runs the fused
// loop as FMA instructions; where it is false (and with clang, whose builds
// do not clone, and off x86) products and sums round apart.
inline bool per_cpu_clone_has_fma() {
#if defined(__x86_64__) && !defined(__clang__)
  static const bool has_fma = __builtin_cpu_supports("x86-64-v3");
  return has_fma;
#else
  return false;
#endif
}

// a·b + c, rounded once when kFused (std::fma, an instruction where the
// code is compiled for FMA), else twice.
template <bool kFused>
[[gnu::always_inline]] inline float multiply_add(float a, float b, float c) {
  if constexpr (kFused) return std::fma(a, b, c);
  else return a * b + c;
}

// e^x in float without a libm call, so that loops calling it vectorise: x =
// k·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact k·ln2_hi), e^r
// by its Taylor series to r^7 (truncation < 1e-8 relative, under float's
// 6e-8), and 2^k written into the exponent bits. Rounding x·log2(e) with the
// 1.5·2^23 shift leaves k in the low mantissa bits of `shifted`, so no
// float-to-int conversion is needed. x is clamped to [-87, 88]: e^x stays a
// normal float. kFused does every multiply-add of it in one rounding (a
// third faster with FMA instructions, and no less accurate).
template <bool kFused = false>
[[gnu::always_inline]] inline float exp_vectorisable(float x) {
  x = x < -87.0f ? -87.0f : x;  // ternaries (not std::min/max references) are if-converted
  x = x > 88.0f ? 88.0f : x;
  constexpr float kShift = 12582912.0f;  // 1.5·2^23
  const float shifted = multiply_add<kFused>(x, 1.44269504f, kShift);
  const float k = shifted - kShift;
  const float r = multiply_add<kFused>(-k, -2.12194440e-4f, multiply_add<kFused>(-k, 0.693359375f, x));
  float p = 1.0f / 5040;  // Horner, from r^7's coefficient down
  p = multiply_add<kFused>(r, p, 1.0f / 720);
  p = multiply_add<kFused>(r, p, 1.0f / 120);
  p = multiply_add<kFused>(r, p, 1.0f / 24);
  p = multiply_add<kFused>(r, p, 1.0f / 6);
  p = multiply_add<kFused>(r, p, 0.5f);
  p = multiply_add<kFused>(r, p, 1.0f);
  p = multiply_add<kFused>(r, p, 1.0f);
  const std::uint32_t k_bits = std::bit_cast<std::uint32_t>(shifted) - 0x4B400000u;  // k mod 2^32
  return p * std::bit_cast<float>((k_bits + 127u) << 23);
}

// σ(x) = 1 / (1 + e^-x) through exp_vectorisable.
template <bool kFused = false>
[[gnu::always_inline]] inline float sigmoid_vectorisable(float x) {
  return 1.0f / (1.0f + exp_vectorisable<kFused>(-x));
}

// Before a loop whose stores overlap none of its loads: vectorise it without
// run-time overlap checks (GCC gives up on a loop past ten pointer pairs).
// Only for GCC, which builds the release: clang's forced hint warns where it
// cannot vectorise, as in the sanitizer build.
#if defined(__GNUC__) && !defined(__clang__)
#define FLOWGRAD_NO_OVERLAP _Pragma("GCC ivdep")
#else
#define FLOWGRAD_NO_OVERLAP
#endif

// Σ_d term(d) for d in [0, n), in kLanes independent partial sums (lane
// d mod kLanes) added in lane order at the end. The lanes hide the adds'
// latency and vectorise without reassociating any one sum, so the result is
// the same on every machine and thread count.
constexpr std::int64_t kLanes = 8;

template <class Sum, class Term>
[[gnu::always_inline]] inline Sum lane_sum(std::int64_t n, Term term) {
  Sum lanes[kLanes] = {};
  std::int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (std::int64_t j = 0; j < kLanes; ++j) lanes[j] += term(d + j);
  for (; d < n; ++d) lanes[d % kLanes] += term(d);
  Sum total = 0;
  for (const Sum lane : lanes) total += lane;
  return total;
}

}  // namespace flowgrad
