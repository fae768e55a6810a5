// Saving and loading named tensors: the safetensors format (what PyTorch and
// Hugging Face use for weights) and NumPy's .npy format (one array per file).
//
// Loaders treat the file as untrusted: every size is checked against the file
// before anything is allocated or read, and any defect throws a flowgrad::Error
// naming the operation, the path and the problem.
// Savers write a temporary file next to `path`, fsync it and rename it into
// place, so a failed save leaves the previous file at `path` untouched
// (core/file_io.h; temporaries left by a killed process are deleted by the
// next save to the same path). Tensors are limited to kMaxTensorElements.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "tensor.h"

namespace flowgrad {

// ---- safetensors ----
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data buffer, which the tensors must cover exactly (no gaps, no
// overlaps). Supported dtypes: F32, F64, I64; F16 and BF16 are read into
// float32 exactly (written files use F32, F64 and I64 only).

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// Writes the tensors sorted by name, tightly packed; non-contiguous tensors
// are written in row-major order.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
std::map<std::string, Tensor> load_safetensors(const std::string& path);
SafetensorsFile load_safetensors_file(const std::string& path);  // tensors and metadata
// The same from bytes in memory; `name` stands for the path in messages.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& name = "<memory>");

// ---- NumPy .npy ----
// Writes format 1.0 (2.0 if the header is too long for it), C order, dtype
// '<f4', '<f8' or '<i8'. Reads versions 1.0, 2.0 and 3.0 of those dtypes,
// and NumPy's bool '|b1' into int64 0 and 1 (other bytes are refused).
void save_npy(const std::string& path, const Tensor& t);
// An int64 tensor of 0 and 1 as NumPy bools ('|b1'), e.g. D4RL's terminals.
void save_npy_bools(const std::string& path, const Tensor& t);
Tensor load_npy(const std::string& path);
Tensor parse_npy(std::string_view bytes, const std::string& name = "<memory>");

}  // namespace flowgrad
