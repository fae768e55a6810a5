#include "storage.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "sanitizer.h"

namespace flowgrad {
namespace {

std::atomic<std::size_t> g_current_bytes{0};
std::atomic<std::size_t> g_peak_bytes{0};

void record_allocation(std::size_t nbytes) {
  std::size_t now = g_current_bytes.fetch_add(nbytes) + nbytes;
  std::size_t peak = g_peak_bytes.load();
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

// Released large buffers are kept for reuse. glibc hands large blocks back
// to the OS, and touching a freshly mapped page costs a page fault (20-35 µs
// on the VMs this runs on), so without the cache every large temporary of an
// op would pay that again. Sizes are rounded up to one of four classes per
// power of two (at most 25% waste), and the cache holds at most
// FLOWGRAD_CACHE_MB megabytes (default 1024; 0 disables it).
class BufferCache {
 public:
  static constexpr std::size_t kMinCachedBytes = std::size_t{1} << 16;

  static BufferCache& instance() {
    static BufferCache cache;
    return cache;
  }

  // The capacity actually allocated for a request of `nbytes`.
  static std::size_t capacity_for(std::size_t nbytes) {
    std::size_t padded = (nbytes + Storage::kAlignment - 1) / Storage::kAlignment * Storage::kAlignment;
    if (padded == 0) padded = Storage::kAlignment;
    if (padded < kMinCachedBytes) return padded;
    std::size_t step = std::size_t{1} << (std::bit_width(padded) - 3);  // a quarter octave
    return (padded + step - 1) / step * step;
  }

  void* allocate(std::size_t capacity) {
    if (capacity >= kMinCachedBytes && limit_bytes_ > 0) {
      std::lock_guard lock(mutex_);
      auto found = free_blocks_.find(capacity);
      if (found != free_blocks_.end() && !found->second.empty()) {
        void* block = found->second.back();
        found->second.pop_back();
        cached_bytes_ -= capacity;
        return block;
      }
    }
    void* block = std::aligned_alloc(Storage::kAlignment, capacity);
    if (block == nullptr) {
      release_cached();  // give the cached blocks back and try once more
      block = std::aligned_alloc(Storage::kAlignment, capacity);
      if (block == nullptr) throw std::bad_alloc();
    }
    return block;
  }

  void release(void* block, std::size_t capacity) {
    if (capacity >= kMinCachedBytes) {
      std::lock_guard lock(mutex_);
      if (cached_bytes_ + capacity <= limit_bytes_) {
        free_blocks_[capacity].push_back(block);
        cached_bytes_ += capacity;
        return;
      }
    }
    std::free(block);
  }

  void release_cached() {
    std::lock_guard lock(mutex_);
    for (auto& [capacity, blocks] : free_blocks_)
      for (void* block : blocks) std::free(block);
    free_blocks_.clear();
    cached_bytes_ = 0;
  }

  std::size_t cached_bytes() {
    std::lock_guard lock(mutex_);
    return cached_bytes_;
  }

 private:
  BufferCache() : limit_bytes_(limit_from_environment()) {}
  ~BufferCache() { release_cached(); }

  static std::size_t limit_from_environment() {
    const std::size_t requested = requested_limit();  // checked in every build
#if defined(FLOWGRAD_UNDER_ADDRESS_SANITIZER)
    static_cast<void>(requested);
    return 0;  // reuse would hide use-after-free from AddressSanitizer
#else
    return requested;
#endif
  }

  static std::size_t requested_limit() {
    const char* value = std::getenv("FLOWGRAD_CACHE_MB");
    if (value == nullptr || *value == '\0') return std::size_t{1024} << 20;
    // Up to 2^30 MB (1 PiB): larger values are typos, and would overflow the byte count.
    constexpr std::uint64_t kMaxMegabytes = std::uint64_t{1} << 30;
    std::uint64_t megabytes = 0;
    const char* end = value + std::strlen(value);
    const auto [stop, error] = std::from_chars(value, end, megabytes);
    if (error != std::errc() || stop != end || megabytes > kMaxMegabytes)
      fail("FLOWGRAD_CACHE_MB", "expected an integer from 0 to ", kMaxMegabytes, ", got \"", value, "\"");
    return static_cast<std::size_t>(megabytes) << 20;
  }

  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_blocks_;
  std::size_t cached_bytes_ = 0;
  const std::size_t limit_bytes_;
};

}  // namespace

Storage::Storage(std::size_t nbytes)
    : nbytes_(nbytes), capacity_(BufferCache::capacity_for(nbytes)) {
  data_ = BufferCache::instance().allocate(capacity_);
  record_allocation(nbytes_);
}

Storage::Storage(void* data, std::size_t nbytes, std::function<void(void*)> release)
    : data_(data), nbytes_(nbytes), external_(true), release_(std::move(release)) {}

Storage::~Storage() {
  if (external_) {
    if (release_) release_(data_);
    return;
  }
  BufferCache::instance().release(data_, capacity_);
  g_current_bytes.fetch_sub(nbytes_);
}

MemoryStats memory_stats() {
  return {g_current_bytes.load(), g_peak_bytes.load(), BufferCache::instance().cached_bytes()};
}

void reset_peak_memory() { g_peak_bytes.store(g_current_bytes.load()); }

void empty_cache() { BufferCache::instance().release_cached(); }

std::uint64_t available_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
  std::uint64_t bytes = pages > 0 && page_size > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size)
                                                   : std::numeric_limits<std::uint64_t>::max();
  std::ifstream limit_file("/sys/fs/cgroup/memory.max");
  std::uint64_t limit = 0;
  if (limit_file >> limit && limit > 0) bytes = std::min(bytes, limit);  // "max" (no limit) fails to parse
  return bytes;
}

std::string format_bytes(double bytes) {
  char text[48];
  if (bytes >= 1e15) {
    std::snprintf(text, sizeof text, "%.2g bytes", bytes);
  } else {
    const char* units[] = {"bytes", "kB", "MB", "GB", "TB"};
    int unit = 0;
    while (bytes >= 1000 && unit < 4) {
      bytes /= 1000;
      ++unit;
    }
    std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  }
  return text;
}

}  // namespace flowgrad
