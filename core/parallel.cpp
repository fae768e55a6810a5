#include "parallel.h"

#include <cblas.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include "error.h"

namespace flowgrad {
namespace {

struct ThreadSettings {
  std::mutex mutex;
  std::atomic<int> num_threads{0};
  std::unique_ptr<tbb::global_control> tbb_limit;
};

int threads_from_environment() {
  const char* value = std::getenv("FLOWGRAD_NUM_THREADS");
  if (value != nullptr && *value != '\0') {
    int n = 0;
    const char* end = value + std::strlen(value);
    const auto [stop, error] = std::from_chars(value, end, n);
    if (error != std::errc() || stop != end || n < 1 || n > kMaxThreads)
      fail("FLOWGRAD_NUM_THREADS", "expected an integer from 1 to ", kMaxThreads, ", got \"", value, "\"");
    return n;
  }
  unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

void apply(ThreadSettings& settings, int n) {
  settings.num_threads = n;
  settings.tbb_limit = std::make_unique<tbb::global_control>(
      tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
}

ThreadSettings& settings() {
  static ThreadSettings instance;
  static std::once_flag initialised;
  std::call_once(initialised, [] {
    std::lock_guard lock(instance.mutex);
    openblas_set_num_threads(1);  // blas::gemm parallelises through oneTBB
    apply(instance, threads_from_environment());
  });
  return instance;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads) fail("set_num_threads", "expected n from 1 to ", kMaxThreads, ", got ", n);
  ThreadSettings& s = settings();
  std::lock_guard lock(s.mutex);
  apply(s, n);
}

int get_num_threads() { return settings().num_threads.load(std::memory_order_relaxed); }

void parallel_for_chunks(std::int64_t n, std::int64_t grain, RangeBody body) {
  // simple_partitioner halves the range down to chunks of at most `grain`:
  // the chunks depend on n and grain alone, not on the threads or timing.
  tbb::parallel_for(
      tbb::blocked_range<std::int64_t>(0, n, grain),
      [&](const tbb::blocked_range<std::int64_t>& r) { body(r.begin(), r.end()); },
      tbb::simple_partitioner());
}

}  // namespace flowgrad
