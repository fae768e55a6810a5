#include "idx.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <numeric>

#include "error.h"
#include "file_io.h"

namespace flowgrad {

namespace {

constexpr std::uint8_t kUnsignedByte = 0x08;
constexpr int kMaxDims = 8;
constexpr const char* kOp = "read_idx";

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

// "0x0d": a type code as the IDX format writes it.
std::string hex_byte(std::uint8_t byte) {
  constexpr char kDigits[] = "0123456789abcdef";
  return {'0', 'x', kDigits[byte >> 4], kDigits[byte & 0xF]};
}

bool is_gzip(ByteSource& source) {
  if (source.size() < 2) return false;
  std::uint8_t magic[2];
  source.read(0, magic, 2, "the first two bytes");
  return magic[0] == 0x1f && magic[1] == 0x8b;
}

// The bytes of an IDX file in order: read as they are, or inflated from
// gzip. Gzip input is checked as strictly as `gzip -t` does: the stream must
// end with its CRC-32 and length trailer (zlib checks both), and anything
// after it must be another gzip member, never garbage.
class IdxStream {
 public:
  explicit IdxStream(ByteSource& source) : source_(source), gzip_(is_gzip(source)) {
    if (gzip_ && inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK)
      source_.context().fail("cannot start zlib: out of memory");
  }
  ~IdxStream() {
    if (gzip_) inflateEnd(&stream_);
  }
  IdxStream(const IdxStream&) = delete;
  IdxStream& operator=(const IdxStream&) = delete;

  bool compressed() const { return gzip_; }

  // Up to `size` bytes; fewer only when the data has ended.
  std::size_t read(std::uint8_t* out, std::size_t size) {
    if (!gzip_) {
      const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(size, source_.size() - offset_));
      source_.read(offset_, out, count, "the data");
      offset_ += count;
      return count;
    }
    std::size_t done = 0;
    while (done < size && !ended_) {
      if (stream_.avail_in == 0) refill();
      if (stream_.avail_in == 0) {
        if (!between_members_)
          source_.context().fail("truncated gzip data: the file ends before the end of the compressed stream "
                                 "(its CRC-32 and length trailer are missing)");
        ended_ = true;
        break;
      }
      between_members_ = false;
      const auto chunk = static_cast<uInt>(std::min<std::size_t>(size - done, 1u << 30));
      stream_.next_out = out + done;
      stream_.avail_out = chunk;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      done += chunk - stream_.avail_out;
      if (status == Z_STREAM_END) {
        // One member ended and zlib checked its trailer; what follows must
        // be another member (inflate rejects anything else as a bad header).
        inflateReset(&stream_);
        between_members_ = true;
      } else if (status != Z_OK) {
        const char* reason = stream_.msg != nullptr ? stream_.msg : zError(status);
        if (after_first_member_)
          source_.context().fail("the bytes after the first gzip member are not gzip data: ", reason);
        source_.context().fail("corrupt gzip data: ", reason);
      }
      if (between_members_) after_first_member_ = true;
    }
    return done;
  }

 private:
  void refill() {
    const std::uint64_t count = std::min<std::uint64_t>(input_.size(), source_.size() - offset_);
    source_.read(offset_, input_.data(), count, "the compressed data");
    offset_ += count;
    stream_.next_in = input_.data();
    stream_.avail_in = static_cast<uInt>(count);
  }

  ByteSource& source_;
  bool gzip_;
  z_stream stream_{};
  std::vector<std::uint8_t> input_ = std::vector<std::uint8_t>(std::size_t{1} << 16);
  std::uint64_t offset_ = 0;
  bool between_members_ = false;  // the last inflate ended a member
  bool after_first_member_ = false;
  bool ended_ = false;
};

IdxArray read_idx_from(ByteSource& source) {
  const FileContext& ctx = source.context();
  IdxStream stream(source);
  std::uint8_t magic[4];
  if (stream.read(magic, 4) != 4) ctx.fail("file too short for the IDX magic number");
  if (magic[0] != 0 || magic[1] != 0) ctx.fail("not an IDX file (magic number must start with two zero bytes)");
  if (magic[2] != kUnsignedByte)
    ctx.fail("element type ", hex_byte(magic[2]), " (", type_name(magic[2]),
             ") is not supported; only unsigned bytes (0x08) are");
  const int dims = magic[3];
  if (dims < 1 || dims > kMaxDims) ctx.fail(dims, " dimensions; expected 1 to ", kMaxDims);

  IdxArray array;
  std::uint8_t header[4 * kMaxDims];
  const auto header_size = static_cast<std::size_t>(4 * dims);
  if (stream.read(header, header_size) != header_size) ctx.fail("file ends inside the header of ", dims, " dimensions");
  for (int d = 0; d < dims; ++d) {
    const std::uint8_t* b = &header[4 * d];
    array.shape.push_back((std::int64_t{b[0]} << 24) | (std::int64_t{b[1]} << 16) | (std::int64_t{b[2]} << 8) |
                          std::int64_t{b[3]});
  }
  // Zero dimensions do not excuse huge other ones: [0, 2^32-1, 2^32-1]
  // would still overflow whatever indexes an item.
  if (!is_valid_tensor_shape(array.shape))
    ctx.fail("declared dimensions ", shape_str(array.shape), " describe more than 2^40 elements (the maximum tensor size)");
  const auto count = static_cast<std::uint64_t>(shape_numel(array.shape));
  auto truncated = [&](std::uint64_t present) {
    ctx.fail("truncated: ", present, " of the ", count, " elements declared (", shape_str(array.shape), ") are present");
  };

  if (!stream.compressed()) {
    // The size is known: check it before allocating anything.
    const std::uint64_t available = source.size() - 4 - header_size;
    if (available < count) truncated(available);
    if (available > count) ctx.fail("trailing bytes after the ", count, " elements declared: ", available - count, " more");
    array.values.resize(count);
    stream.read(array.values.data(), count);
    return array;
  }
  // Gzip: grow with what actually arrives, so a lying header cannot allocate much.
  std::vector<std::uint8_t> chunk(std::size_t{1} << 16);
  while (array.values.size() < count) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), count - array.values.size()));
    const std::size_t got = stream.read(chunk.data(), want);
    array.values.insert(array.values.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(got));
    if (got < want) truncated(array.values.size());
  }
  std::uint8_t extra;
  if (stream.read(&extra, 1) != 0) ctx.fail("trailing bytes after the ", count, " elements declared");
  return array;
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  FileSource source(kOp, path);
  return read_idx_from(source);
}

IdxArray parse_idx(std::string_view bytes, const std::string& name) {
  MemorySource source(kOp, bytes, name);
  return read_idx_from(source);
}

std::int64_t IdxArray::items() const {
  item_size();  // checks that shape and values agree
  return shape[0];
}

std::int64_t IdxArray::item_size() const {
  if (shape.empty() || !is_valid_tensor_shape(shape) ||
      static_cast<std::uint64_t>(shape_numel(shape)) != values.size())
    fail("IdxArray", "shape ", shape_str(shape), " does not describe its ", values.size(), " values");
  std::int64_t size = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) size *= shape[d];
  return size;
}

Tensor IdxArray::gather(const std::vector<std::int64_t>& indices, DType dtype) const {
  const std::int64_t size = item_size();
  for (std::int64_t index : indices)
    if (index < 0 || index >= items())
      fail("IdxArray::gather", "index ", index, " is out of range for ", items(), " items");
  Shape out_shape{static_cast<std::int64_t>(indices.size())};
  out_shape.insert(out_shape.end(), shape.begin() + 1, shape.end());
  Tensor out = empty(out_shape, dtype);
  dispatch_all(dtype, [&]<class T>() {
    T* dst = out.data<T>();
    for (std::int64_t index : indices) {
      const std::uint8_t* src = values.data() + index * size;
      dst = std::transform(src, src + size, dst, [](std::uint8_t v) { return static_cast<T>(v); });
    }
  });
  return out;
}

Tensor IdxArray::to_tensor(DType dtype) const {
  item_size();  // checks that shape and values agree
  Tensor out = empty(shape, dtype);
  dispatch_all(dtype, [&]<class T>() {
    std::transform(values.begin(), values.end(), out.data<T>(), [](std::uint8_t v) { return static_cast<T>(v); });
  });
  return out;
}

}  // namespace flowgrad
