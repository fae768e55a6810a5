#include "parallel.h"

#include <cblas.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <tbb/global_control.h>

#include "error.h"

namespace flowgrad {
namespace {

struct ThreadSettings {
  std::mutex mutex;
  std::atomic<int> num_threads{0};
  int single_thread_depth = 0;  // open BlasSingleThreadScope count
  std::unique_ptr<tbb::global_control> tbb_limit;
};

int threads_from_environment() {
  const char* value = std::getenv("FLOWGRAD_NUM_THREADS");
  if (value != nullptr && *value != '\0') {
    char* end = nullptr;
    long n = std::strtol(value, &end, 10);
    if (*end != '\0' || n < 1 || n > 1024)
      fail("FLOWGRAD_NUM_THREADS", "expected a positive integer, got \"", value, "\"");
    return static_cast<int>(n);
  }
  unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

void apply(ThreadSettings& settings, int n) {
  settings.num_threads = n;
  settings.tbb_limit = std::make_unique<tbb::global_control>(
      tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
  if (settings.single_thread_depth == 0) openblas_set_num_threads(n);
}

ThreadSettings& settings() {
  static ThreadSettings instance;
  static std::once_flag initialised;
  std::call_once(initialised, [] {
    std::lock_guard lock(instance.mutex);
    apply(instance, threads_from_environment());
  });
  return instance;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) fail("set_num_threads", "expected n >= 1, got ", n);
  ThreadSettings& s = settings();
  std::lock_guard lock(s.mutex);
  apply(s, n);
}

int get_num_threads() { return settings().num_threads.load(std::memory_order_relaxed); }

BlasSingleThreadScope::BlasSingleThreadScope() {
  ThreadSettings& s = settings();
  std::lock_guard lock(s.mutex);
  if (s.single_thread_depth++ == 0 && s.num_threads > 1) openblas_set_num_threads(1);
}

BlasSingleThreadScope::~BlasSingleThreadScope() {
  ThreadSettings& s = settings();
  std::lock_guard lock(s.mutex);
  if (--s.single_thread_depth == 0 && s.num_threads > 1) openblas_set_num_threads(s.num_threads);
}

}  // namespace flowgrad
