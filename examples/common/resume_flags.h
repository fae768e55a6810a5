// Resuming takes the model from the checkpoint; a model flag the user typed
// with another value than the checkpoint's is a mistake, reported by name.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "../../flowgrad.h"

namespace examples {

struct ResumedFlag {
  std::string name;            // e.g. "--embd"
  std::string given, stored;   // the typed value and the checkpoint's
};

inline void check_resumed_flags(const char* program, const std::set<std::string>& typed,
                                const std::vector<ResumedFlag>& flags, const std::string& checkpoint) {
  for (const ResumedFlag& flag : flags)
    if (typed.count(flag.name) && flag.given != flag.stored)
      flowgrad::fail(program, flag.name, " ", flag.given, " does not match the checkpoint's ", flag.stored, " (",
                     checkpoint, "); drop the flag to continue with that model");
}

}  // namespace examples
