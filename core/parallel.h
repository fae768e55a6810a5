// Threads: one setting bounds oneTBB and OpenBLAS together.
//
// set_num_threads(n) (or FLOWGRAD_NUM_THREADS=n in the environment, read on
// first use) caps oneTBB's worker count through tbb::global_control. OpenBLAS
// always runs single-threaded: blas::gemm splits a large product into oneTBB
// tasks itself, so there is one thread pool, never n*n threads on n cores,
// and no second pool spinning while the first one works.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace flowgrad {

// The most threads one setting allows (set_num_threads, FLOWGRAD_NUM_THREADS,
// the programs' --threads): more is a typo, not a machine.
constexpr int kMaxThreads = 1024;

void set_num_threads(int n);  // 1 <= n <= kMaxThreads
int get_num_threads();

// Below this many elements an elementwise loop runs on the calling thread.
constexpr std::int64_t kParallelGrain = 32768;

// A non-owning reference to a callable body(begin, end): what parallel_for
// hands to oneTBB, so that oneTBB's headers stay out of this one (and out of
// every program that includes flowgrad.h). One indirect call per chunk.
class RangeBody {
 public:
  template <class Body>
    requires std::is_invocable_v<Body&, std::int64_t, std::int64_t>
  RangeBody(Body& body)  // NOLINT: converts implicitly, like a function_ref
      : object_(static_cast<void*>(&body)), call_([](void* object, std::int64_t begin, std::int64_t end) {
          (*static_cast<Body*>(object))(begin, end);
        }) {}
  void operator()(std::int64_t begin, std::int64_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, std::int64_t, std::int64_t);
};

// The oneTBB loop behind parallel_for (core/parallel.cpp).
void parallel_for_chunks(std::int64_t n, std::int64_t grain, RangeBody body);

// Calls body(begin, end) on disjoint chunks covering [0, n). Runs inline when
// n <= grain or only one thread is allowed. Chunk boundaries depend only on n
// and grain, so per-chunk work is reproducible.
template <class Body>
void parallel_for(std::int64_t n, std::int64_t grain, Body&& body) {
  if (n <= 0) return;
  if (n <= grain || get_num_threads() == 1) {
    body(std::int64_t{0}, n);
    return;
  }
  parallel_for_chunks(n, grain, RangeBody(body));
}

}  // namespace flowgrad
