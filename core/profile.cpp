#include "profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>

namespace flowgrad::profile {
namespace {

std::atomic<bool> profiling{false};
thread_local const char* innermost = nullptr;

struct Table {
  std::mutex mutex;
  std::map<std::string, Entry, std::less<>> entries;
};

Table& table() {
  static Table instance;
  return instance;
}

}  // namespace

void set_enabled(bool enabled) { profiling.store(enabled, std::memory_order_relaxed); }
bool enabled() { return profiling.load(std::memory_order_relaxed); }

void reset() {
  Table& t = table();
  std::lock_guard lock(t.mutex);
  t.entries.clear();
}

std::vector<Entry> entries() {
  Table& t = table();
  std::vector<Entry> result;
  {
    std::lock_guard lock(t.mutex);
    for (const auto& [name, entry] : t.entries) result.push_back(entry);
  }
  std::stable_sort(result.begin(), result.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return result;
}

void record(std::string_view name, double seconds) {
  Table& t = table();
  std::lock_guard lock(t.mutex);
  auto it = t.entries.find(name);
  if (it == t.entries.end()) it = t.entries.emplace(std::string(name), Entry{std::string(name)}).first;
  it->second.seconds += seconds;
  ++it->second.calls;
}

const char* current_region() { return enabled() ? innermost : nullptr; }

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Scope::Scope(const char* name) {
  if (!enabled()) return;
  name_ = name;
  outer_ = innermost;
  innermost = name;
  start_ns_ = now_ns();
}

Scope::~Scope() {
  if (name_ == nullptr) return;
  record(name_, static_cast<double>(now_ns() - start_ns_) * 1e-9);
  innermost = outer_;
}

}  // namespace flowgrad::profile
