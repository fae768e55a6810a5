#include "idx.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <numeric>

#include "error.h"

namespace flowgrad {

namespace {

constexpr std::uint8_t kUnsignedByte = 0x08;
constexpr int kMaxDims = 8;

struct GzCloser {
  void operator()(gzFile_s* file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to `size` bytes; returns how many arrived (fewer only at the end).
std::size_t read_some(gzFile file, const std::string& path, std::uint8_t* out, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, 1u << 30));
    const int got = gzread(file, out + done, chunk);
    if (got < 0) {
      int code = 0;
      fail("read_idx", path, ": cannot decompress: ", gzerror(file, &code));
    }
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  return done;
}

std::string type_name(std::uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) fail("read_idx", "cannot open ", path);
  std::uint8_t magic[4];
  if (read_some(file.get(), path, magic, 4) != 4) fail("read_idx", path, ": file too short for the IDX magic number");
  if (magic[0] != 0 || magic[1] != 0)
    fail("read_idx", path, ": not an IDX file (magic number must start with two zero bytes)");
  if (magic[2] != kUnsignedByte)
    fail("read_idx", path, ": element type 0x", std::hex, static_cast<int>(magic[2]), std::dec, " (",
         type_name(magic[2]), ") is not supported; only unsigned bytes (0x08) are");
  const int dims = magic[3];
  if (dims < 1 || dims > kMaxDims) fail("read_idx", path, ": ", dims, " dimensions; expected 1 to ", kMaxDims);

  IdxArray array;
  std::vector<std::uint8_t> header(static_cast<std::size_t>(4 * dims));
  if (read_some(file.get(), path, header.data(), header.size()) != header.size())
    fail("read_idx", path, ": file ends inside the header of ", dims, " dimensions");
  std::uint64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const std::uint8_t* b = &header[static_cast<std::size_t>(4 * d)];
    const std::uint64_t size = (std::uint64_t{b[0]} << 24) | (std::uint64_t{b[1]} << 16) |
                               (std::uint64_t{b[2]} << 8) | std::uint64_t{b[3]};
    count *= size;  // at most 8 factors below 2^32 each: checked against the cap below
    if (count > (std::uint64_t{1} << 40))
      fail("read_idx", path, ": declared dimensions describe more than 2^40 elements");
    array.shape.push_back(static_cast<std::int64_t>(size));
  }

  // Grow with what actually arrives, so a lying header cannot allocate much.
  constexpr std::size_t kChunk = std::size_t{1} << 24;
  while (array.values.size() < count) {
    const std::size_t offset = array.values.size();
    const std::size_t want = std::min<std::size_t>(kChunk, count - offset);
    array.values.resize(offset + want);
    const std::size_t got = read_some(file.get(), path, array.values.data() + offset, want);
    if (got < want) {
      std::string shape;
      for (std::int64_t size : array.shape) shape += (shape.empty() ? "" : " x ") + std::to_string(size);
      fail("read_idx", path, ": truncated: ", offset + got, " of the ", count, " elements declared (", shape,
           ") are present");
    }
  }
  std::uint8_t extra;
  if (read_some(file.get(), path, &extra, 1) != 0)
    fail("read_idx", path, ": trailing bytes after the ", count, " elements declared");
  return array;
}

Tensor IdxArray::gather(const std::vector<std::int64_t>& indices, DType dtype) const {
  const std::int64_t item_size =
      std::accumulate(shape.begin() + 1, shape.end(), std::int64_t{1}, std::multiplies<>());
  Shape out_shape{static_cast<std::int64_t>(indices.size())};
  out_shape.insert(out_shape.end(), shape.begin() + 1, shape.end());
  for (std::int64_t index : indices)
    if (index < 0 || index >= items())
      fail("IdxArray::gather", "index ", index, " is out of range for ", items(), " items");
  Tensor out = empty(out_shape, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* dst = out.data<T>();
    for (std::int64_t index : indices) {
      const std::uint8_t* src = values.data() + index * item_size;
      dst = std::transform(src, src + item_size, dst, [](std::uint8_t v) { return static_cast<T>(v); });
    }
  });
  return out;
}

Tensor IdxArray::to_tensor(DType dtype) const {
  std::vector<std::int64_t> all(static_cast<std::size_t>(items()));
  std::iota(all.begin(), all.end(), 0);
  return gather(all, dtype);
}

}  // namespace flowgrad
