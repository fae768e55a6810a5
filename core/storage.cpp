#include "storage.h"

#include <cstdlib>
#include <new>

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

}  // namespace

Storage::Storage(std::size_t nbytes) : nbytes_(nbytes) {
  // aligned_alloc needs a size that is a multiple of the alignment.
  std::size_t padded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  if (padded == 0) padded = kAlignment;
  data_ = std::aligned_alloc(kAlignment, padded);
  if (data_ == nullptr) throw std::bad_alloc();
  record_allocation(nbytes_);
}

Storage::~Storage() {
  std::free(data_);
  g_current_bytes.fetch_sub(nbytes_);
}

MemoryStats memory_stats() { return {g_current_bytes.load(), g_peak_bytes.load()}; }

void reset_peak_memory() { g_peak_bytes.store(g_current_bytes.load()); }

}  // namespace flowgrad
