// Storage: one 64-byte aligned, reference-counted buffer that tensors view.
// It also carries the version counter that autograd uses to detect in-place
// changes of data saved for backward (all views of a buffer share it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace flowgrad {

class Storage {
 public:
  static constexpr std::size_t kAlignment = 64;

  explicit Storage(std::size_t nbytes);  // contents uninitialised
  // The caller's memory, not copied and not counted in memory_stats():
  // `release` (if any) is called with `data` when the last tensor viewing it
  // is gone. See from_blob.
  Storage(void* data, std::size_t nbytes, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }

  std::uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  std::size_t capacity_ = 0;  // bytes actually reserved (see the buffer cache)
  bool external_ = false;     // the caller's memory (from_blob)
  std::function<void(void*)> release_;
  std::atomic<std::uint64_t> version_{0};
};

// Bytes held by all live storages of the process, and the high-water mark
// since the last reset: lets tests and benchmarks state what an op allocates.
// Released large buffers are cached for reuse (FLOWGRAD_CACHE_MB, default
// 1024); cached bytes are not live and are reported separately.
struct MemoryStats {
  std::size_t current_bytes;
  std::size_t peak_bytes;
  std::size_t cached_bytes;
};
MemoryStats memory_stats();
void reset_peak_memory();
// Returns the cached buffers to the system allocator.
void empty_cache();

// Memory this process may use: the machine's physical memory, or the
// container's limit (cgroup v2 memory.max) when that is lower. Models refuse
// configurations whose parameters alone would not fit.
std::uint64_t available_memory_bytes();
// "1.5 GB", "312 MB", "4.2e+22 bytes": sizes in messages.
std::string format_bytes(double bytes);

}  // namespace flowgrad
