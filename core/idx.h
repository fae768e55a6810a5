// Reading IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic
// number (two zero bytes, an element-type code, the number of dimensions),
// the dimensions as big-endian uint32, then the elements in row-major order.
// Files may be gzip-compressed (read through zlib; plain files work too).
//
// Only unsigned bytes (type code 0x08) are supported: every public data set
// in this format uses them. The file is untrusted: the header is checked,
// the dimensions must stay within kMaxTensorElements (zeros included) and
// match the data exactly: a plain file's size is checked before anything is
// allocated, a gzip stream grows its buffer only with data that arrives and
// must end with its checked CRC-32/length trailer. A file that ends early,
// carries trailing bytes or garbage after the gzip data throws a
// flowgrad::Error "[read_idx] ..." naming the path and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dtype.h"
#include "tensor.h"

namespace flowgrad {

struct IdxArray {
  std::vector<std::int64_t> shape;  // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<std::uint8_t> values;  // row-major, shape's product elements

  // Length of dimension 0, and bytes per item (the product of the other
  // dims); both throw when shape and values disagree.
  std::int64_t items() const;
  std::int64_t item_size() const;
  // The listed items (indices into dimension 0, in that order, repeats
  // allowed) as a tensor [indices.size(), shape[1], ...] of `dtype` holding
  // the byte values 0..255 unchanged: a mini-batch in its own order.
  Tensor gather(const std::vector<std::int64_t>& indices, DType dtype) const;
  Tensor to_tensor(DType dtype) const;  // everything
};

IdxArray read_idx(const std::string& path);
// The same from the bytes of a file in memory; `name` stands for the path in messages.
IdxArray parse_idx(std::string_view bytes, const std::string& name = "<memory>");

}  // namespace flowgrad
