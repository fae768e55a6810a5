// libFuzzer entry point of one target (targets.h), chosen at compile time:
// meson builds fuzz_<name> with -DFUZZ_TARGET="<name>" (-Dfuzzing=true).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "targets.h"

namespace {

fuzz::Target target() {
  static const fuzz::Target chosen = [] {
    const auto found = fuzz::targets().find(FUZZ_TARGET);
    if (found == fuzz::targets().end()) {
      std::fprintf(stderr, "no fuzz target named %s\n", FUZZ_TARGET);
      std::abort();
    }
    return found->second;
  }();
  return chosen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  target()(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
