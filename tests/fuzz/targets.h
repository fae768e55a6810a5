// The fuzz targets: one per reader of untrusted input. Each takes the bytes
// of a file, reads them as the library or a program would, and returns
// normally when they are read or refused with the reader's own error
// (flowgrad::Error, or plot's "[plot]" std::runtime_error). Anything else,
// a crash, a sanitizer report, another exception, a huge allocation, is a
// defect.
//
// libFuzzer drives them (tests/fuzz/fuzz_main.cpp, `scripts/fuzz`); the
// Catch2 test fuzz_corpus runs every file of tests/fuzz/corpus/<name>/ (must
// be read) and tests/fuzz/regressions/<name>/ (must be refused; those in its
// read/ folder must be read) through them in the release and the sanitizer
// builds. A reader added later gets a target here, a seed
// corpus and a dictionary.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace fuzz {

// True when the bytes were read (for a checkpoint: loaded into a model of
// one of the programs, with finite values, as the programs would resume
// it), false when the reader refused them with its error.
using Target = bool (*)(std::string_view bytes);

// name -> target: "safetensors", "npy", "idx", "checkpoint", "csv".
const std::map<std::string, Target>& targets();

}  // namespace fuzz
