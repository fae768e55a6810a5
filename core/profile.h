// Wall-clock time per named region, to see where a training step goes.
//
//   profile::set_enabled(true);
//   { profile::Scope scope("attention"); ... }     // forward work
//   loss.backward();  // each node's time goes to the region that created it
//   for (const auto& e : profile::entries()) ...
//
// Off by default: a disabled Scope costs one relaxed atomic load. Regions
// nest; each one's time includes the regions inside it. Autograd nodes
// remember the innermost region open when they were created, and the engine
// adds their backward time under "backward:<region>" (or
// "backward:<node name>" when no region was open), so the backward pass is
// attributed to the forward code that built it. Record from the thread that
// runs forward and backward; tasks inside ops are not timed separately.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flowgrad::profile {

void set_enabled(bool enabled);
bool enabled();
void reset();  // forget every recorded time

struct Entry {
  std::string name;
  double seconds = 0.0;
  std::int64_t calls = 0;
};
// Every region recorded since the last reset, longest first.
std::vector<Entry> entries();
// Adds `seconds` to region `name` (what Scope does when it closes).
void record(std::string_view name, double seconds);

// The innermost open region, or null (null also whenever disabled).
const char* current_region();

class Scope {
 public:
  explicit Scope(const char* name);  // name must outlive the program (a literal)
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_ = nullptr;  // null when profiling was off at construction
  const char* outer_ = nullptr;
  std::int64_t start_ns_ = 0;
};

// Monotonic time in nanoseconds, for callers that time spans themselves.
std::int64_t now_ns();

}  // namespace flowgrad::profile
