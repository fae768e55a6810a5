// Reading IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic
// number (two zero bytes, an element-type code, the number of dimensions),
// the dimensions as big-endian uint32, then the elements in row-major order.
// Files may be gzip-compressed (read through zlib; plain files work too).
//
// Only unsigned bytes (type code 0x08) are supported: every public data set
// in this format uses them. The file is untrusted: the header is checked,
// the element count must fit the declared dimensions, and a file that ends
// early or carries trailing bytes throws a flowgrad::Error "[read_idx] ..."
// naming the path and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dtype.h"
#include "tensor.h"

namespace flowgrad {

struct IdxArray {
  std::vector<std::int64_t> shape;  // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<std::uint8_t> values;  // row-major, shape's product elements

  std::int64_t items() const { return shape[0]; }  // length of dimension 0
  // The listed items (indices into dimension 0, in that order, repeats
  // allowed) as a tensor [indices.size(), shape[1], ...] of `dtype` holding
  // the byte values 0..255 unchanged: a mini-batch in its own order.
  Tensor gather(const std::vector<std::int64_t>& indices, DType dtype) const;
  Tensor to_tensor(DType dtype) const;  // everything
};

IdxArray read_idx(const std::string& path);

}  // namespace flowgrad
