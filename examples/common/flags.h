// Validators for the numeric flags of the programs. CLI11 converts with
// strtoll/strtod, which clamp overflow to the type's limit, read "010" as
// octal, take "-1" as 2^64-1 for unsigned values and accept "nan"; these
// run on the text first, so a bad value is refused with a message naming the
// flag ("--steps: 99999999999999999999 is not an integer from 1 to 2^40")
// and every value in range converts exactly. The integer validators rewrite
// the value in plain decimal, so they go in ->transform() (CLI11's ->check()
// may not change the value); the real-number one goes in ->check().
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>

#include "../../flowgrad.h"
#include "training_run.h"

namespace examples {

// Sizes and counts the programs take are at most the maximum tensor size:
// anything larger cannot be held, and every product of two of them that the
// programs form is checked (flowgrad::checked_mul).
inline constexpr std::int64_t kMaxCount = flowgrad::kMaxTensorElements;

// Decimal integers (an optional '-', then digits) from min to max; leading
// zeros are decimal too ("010" is 10).
CLI::Validator integer_in(std::int64_t min, std::int64_t max);
// Decimal digits only: a seed or other unsigned 64-bit value ("-1" is not one).
CLI::Validator unsigned_value();
// Finite numbers from min to max (max itself excluded when max_open).
CLI::Validator real_in(double min, double max, bool max_open = false);
// --threads: 0 (FLOWGRAD_NUM_THREADS, or all cores) to flowgrad::kMaxThreads.
CLI::Validator thread_count();

// --out, --resume, --overwrite and --allow-nonfinite of a training command.
void add_run_flags(CLI::App* command, RunOptions& options);

}  // namespace examples
