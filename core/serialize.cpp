#include "serialize.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "file_io.h"

namespace flowgrad {
namespace {

// Both formats store little-endian values, and tensor bytes are written and
// read exactly as they lie in memory.
static_assert(std::endian::native == std::endian::little,
              "serialize.cpp assumes a little-endian host");

using Json = nlohmann::json;

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

std::uint64_t decode_le(const unsigned char* bytes, std::size_t count) {
  std::uint64_t value = 0;
  for (std::size_t i = count; i-- > 0;) value = (value << 8) | bytes[i];
  return value;
}

void encode_le(std::uint64_t value, std::size_t count, std::string& out) {
  for (std::size_t i = 0; i < count; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

// numel * element size of a shape read from a file, or fails when the shape
// is beyond the maximum tensor size (zeros do not excuse huge other dims:
// the strides of [0, 2^40, 2^40] would still be out of range).
std::uint64_t checked_nbytes(const FileContext& ctx, const Shape& shape, DType dtype) {
  if (!is_valid_tensor_shape(shape))
    ctx.fail("shape ", shape_str(shape), " exceeds the maximum tensor size of 2^40 elements");
  return static_cast<std::uint64_t>(shape_numel(shape)) * dtype_size(dtype);
}

// Parses JSON text, refusing an object that holds a key twice (nlohmann
// keeps the last one silently; the safetensors reference refuses it).
Json parse_json_strict(const FileContext& ctx, const std::string& text) {
  std::vector<std::set<std::string>> keys;  // of each open object
  std::optional<std::string> duplicate;
  int duplicate_depth = 0;
  const Json::parser_callback_t record_keys = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (event == Json::parse_event_t::key && !duplicate) {
      std::string key = parsed.get<std::string>();
      if (!keys.back().insert(key).second) {
        duplicate = std::move(key);
        duplicate_depth = depth;
      }
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, record_keys);
  } catch (const Json::exception& e) {
    ctx.fail("header is not valid JSON: ", e.what());
  }
  if (duplicate) {
    if (duplicate_depth == 1) ctx.fail("the header names tensor '", excerpt(*duplicate), "' twice");
    ctx.fail("the header holds key '", excerpt(*duplicate), "' twice in one object");
  }
  return header;
}

// Writes the elements of `t` in row-major order, copying only when `t` is not
// contiguous.
void write_elements(AtomicFileWriter& out, const Tensor& t) {
  if (t.numel() == 0) return;
  Tensor dense = t;
  if (!t.is_contiguous()) {
    dense = empty(t.shape(), t.dtype());
    copy_elements(t, dense);
  }
  const std::size_t element = dtype_size(dense.dtype());
  const char* bytes = static_cast<const char*>(dense.storage()->data()) +
                      static_cast<std::size_t>(dense.offset()) * element;
  out.write(bytes, static_cast<std::uint64_t>(dense.numel()) * element);
}

// ======================= safetensors =======================

// The reference implementation refuses larger headers too.
constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

std::string_view safetensors_dtype_code(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::Int64: return "I64";
  }
  return "?";
}

// How a tensor's elements are stored in the file. F16 and BF16 (common in
// shared PyTorch checkpoints) are read into float32, exactly.
enum class StoredAs { Native, Float16, BFloat16 };

// IEEE binary16 -> float32, exactly (subnormals, infinities and NaN payloads).
float float_from_half(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exponent = (half >> 10) & 0x1Fu;
  const std::uint32_t mantissa = half & 0x3FFu;
  std::uint32_t bits = 0;
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^−24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // infinity or NaN
  } else {
    bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

// bfloat16 is the upper half of a float32.
float float_from_bfloat16(std::uint16_t value) { return std::bit_cast<float>(static_cast<std::uint32_t>(value) << 16); }

struct SafetensorsEntry {
  std::string name;
  DType dtype = kFloat32;   // of the tensor made from it
  StoredAs stored = StoredAs::Native;
  Shape shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// A JSON value that must be a non-negative integer no larger than `max`.
std::uint64_t json_count(const FileContext& ctx, const std::string& name, std::string_view field,
                         const Json& value, std::uint64_t max) {
  if (value.is_number_unsigned()) {
    auto count = value.get<std::uint64_t>();
    if (count > max)
      ctx.fail("tensor '", name, "': \"", field, "\" entry ", count, " is larger than ", max);
    return count;
  }
  if (value.is_number_integer())
    ctx.fail("tensor '", name, "': \"", field, "\" entry ", value.get<std::int64_t>(),
             " is negative");
  if (value.is_number_float())
    ctx.fail("tensor '", name, "': \"", field, "\" entry ", value.get<double>(),
             " is not an integer");
  ctx.fail("tensor '", name, "': \"", field, "\" entries must be non-negative integers, got a ",
           value.type_name());
}

SafetensorsEntry parse_safetensors_entry(const FileContext& ctx, const std::string& name,
                                         const Json& info, std::uint64_t buffer_size) {
  if (!info.is_object())
    ctx.fail("tensor '", name, "': expected an object with dtype, shape and data_offsets, got a ",
             info.type_name());
  auto field = [&](const char* key) -> const Json& {
    auto it = info.find(key);
    if (it == info.end()) ctx.fail("tensor '", name, "' has no \"", key, "\"");
    return *it;
  };

  SafetensorsEntry entry;
  entry.name = name;

  const Json& dtype = field("dtype");
  if (!dtype.is_string())
    ctx.fail("tensor '", name, "': \"dtype\" must be a string, got a ", dtype.type_name());
  const auto& code = dtype.get_ref<const std::string&>();
  if (code == "F32") {
    entry.dtype = kFloat32;
  } else if (code == "F64") {
    entry.dtype = kFloat64;
  } else if (code == "I64") {
    entry.dtype = kInt64;
  } else if (code == "F16" || code == "BF16") {
    entry.dtype = kFloat32;
    entry.stored = code == "F16" ? StoredAs::Float16 : StoredAs::BFloat16;
  } else {
    ctx.fail("tensor '", name, "' has unsupported dtype \"", excerpt(code),
             "\" (supported: F32, F64, I64; F16 and BF16 are read as F32)");
  }

  const Json& shape = field("shape");
  if (!shape.is_array())
    ctx.fail("tensor '", name, "': \"shape\" must be an array, got a ", shape.type_name());
  for (const Json& size : shape)
    entry.shape.push_back(
        static_cast<std::int64_t>(json_count(ctx, name, "shape", size, kInt64Max)));
  // Half-precision elements take half the bytes of the float32 they become.
  const std::uint64_t nbytes = checked_nbytes(ctx, entry.shape, entry.dtype) / (entry.stored == StoredAs::Native ? 1 : 2);

  const Json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2)
    ctx.fail("tensor '", name, "': \"data_offsets\" must be an array [begin, end], got a ",
             offsets.type_name(), offsets.is_array() ? " of size " + std::to_string(offsets.size()) : "");
  const auto no_limit = std::numeric_limits<std::uint64_t>::max();
  entry.begin = json_count(ctx, name, "data_offsets", offsets[0], no_limit);
  entry.end = json_count(ctx, name, "data_offsets", offsets[1], no_limit);
  if (entry.begin > entry.end)
    ctx.fail("tensor '", name, "': data_offsets [", entry.begin, ", ", entry.end,
             "] are reversed");
  if (entry.end > buffer_size)
    ctx.fail("tensor '", name, "': data_offsets [", entry.begin, ", ", entry.end,
             "] lie outside the data buffer of ", buffer_size, " bytes");
  if (entry.end - entry.begin != nbytes)
    ctx.fail("tensor '", name, "': data_offsets [", entry.begin, ", ", entry.end, "] hold ",
             entry.end - entry.begin, " bytes but shape ", shape_str(entry.shape), " of ",
             code, " needs ", nbytes);
  return entry;
}

// The tensors must tile the data buffer exactly, as the format requires.
void check_buffer_coverage(const FileContext& ctx, std::vector<SafetensorsEntry>& entries,
                           std::uint64_t buffer_size) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& entry : entries) {
    if (entry.begin > covered)
      ctx.fail("the data buffer has a gap: bytes [", covered, ", ", entry.begin,
               ") belong to no tensor (next is '", entry.name, "')");
    if (entry.begin < covered)
      ctx.fail("tensors '", previous->name, "' and '", entry.name, "' overlap in the data buffer (",
               "[", previous->begin, ", ", previous->end, "] and [", entry.begin, ", ", entry.end,
               "])");
    covered = entry.end;
    previous = &entry;
  }
  if (covered != buffer_size)
    ctx.fail("the data buffer has ", buffer_size, " bytes but the tensors cover only ", covered,
             " (trailing bytes or a missing tensor)");
}

std::map<std::string, std::string> parse_metadata(const FileContext& ctx, const Json& metadata) {
  if (!metadata.is_object())
    ctx.fail("\"__metadata__\" must be an object of strings, got a ", metadata.type_name());
  std::map<std::string, std::string> result;
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string())
      ctx.fail("\"__metadata__\" entry '", key, "' must be a string, got a ", value.type_name());
    result.emplace(key, value.get<std::string>());
  }
  return result;
}

// ======================= NumPy .npy =======================

constexpr std::string_view kNpyMagic = "\x93NUMPY";
// Real headers are well under 1 KiB (NumPy itself refuses more than 10000
// bytes by default); this bounds what a corrupt length can make us read.
constexpr std::uint64_t kMaxNpyHeader = 1 << 20;

std::string_view npy_descr(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Int64: return "<i8";
  }
  return "?";
}

struct NpyHeader {
  DType dtype = kFloat32;  // what the tensor holds
  Shape shape;
  bool bools = false;  // '|b1' in the file: one byte 0 or 1 each, read into int64
};

// Parses the header dict NumPy writes, a Python literal such as
//   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
// The grammar accepted is exactly: a dict of string keys 'descr' (a string),
// 'fortran_order' (True/False) and 'shape' (a tuple of non-negative ints),
// each present once, optional trailing comma, whitespace anywhere between
// tokens (the header ends with spaces and '\n').
class NpyHeaderParser {
 public:
  NpyHeaderParser(const FileContext& ctx, std::string_view text) : ctx_(ctx), text_(text) {}

  NpyHeader parse() {
    skip_space();
    expect('{');
    skip_space();
    if (!consume('}')) {
      while (true) {
        parse_item();
        skip_space();
        if (consume('}')) break;
        expect(',');
        skip_space();
        if (consume('}')) break;  // trailing comma
      }
    }
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the closing '}'");

    if (!descr_) ctx_.fail("the .npy header has no 'descr': ", quoted());
    if (!fortran_order_) ctx_.fail("the .npy header has no 'fortran_order': ", quoted());
    if (!shape_) ctx_.fail("the .npy header has no 'shape': ", quoted());
    if (*fortran_order_)
      ctx_.fail("fortran_order is True: Fortran-ordered arrays are not supported (save a C-ordered "
                "array, e.g. with np.ascontiguousarray)");

    NpyHeader header;
    header.shape = *shape_;
    if (*descr_ == "<f4") {
      header.dtype = kFloat32;
    } else if (*descr_ == "<f8") {
      header.dtype = kFloat64;
    } else if (*descr_ == "<i8") {
      header.dtype = kInt64;
    } else if (*descr_ == "|b1") {  // NumPy's bool (e.g. D4RL's terminals)
      header.dtype = kInt64;
      header.bools = true;
    } else if (!descr_->empty() && descr_->front() == '>') {
      ctx_.fail("big-endian dtype '", excerpt(*descr_), "' is not supported");
    } else {
      ctx_.fail("unsupported dtype '", excerpt(*descr_), "' (supported: '<f4', '<f8', '<i8', '|b1')");
    }
    return header;
  }

 private:
  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    ctx_.fail("malformed .npy header at byte ", pos_, ": ", parts..., " in ", quoted());
  }

  std::string quoted() const {
    std::string out(1, '"');  // appended piecewise: "x" + string trips GCC 12's -Wrestrict
    out += excerpt(text_);
    out += '"';
    return out;
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
      ++pos_;
  }

  bool consume(char c) {
    if (at_end() || peek() != c) return false;
    ++pos_;
    return true;
  }

  void expect(char c) {
    if (at_end()) error("expected '", c, "' but the header ended");
    if (!consume(c)) error("expected '", c, "', found '", excerpt(text_.substr(pos_, 1)), "'");
  }

  void parse_item() {
    const std::string key = parse_string();
    skip_space();
    expect(':');
    skip_space();
    auto once = [&](auto& slot) {
      if (slot) error("duplicate key '", key, "'");
    };
    if (key == "descr") {
      once(descr_);
      descr_ = parse_string();
    } else if (key == "fortran_order") {
      once(fortran_order_);
      fortran_order_ = parse_bool();
    } else if (key == "shape") {
      once(shape_);
      shape_ = parse_shape();
    } else {
      error("unexpected key '", excerpt(key), "' (expected 'descr', 'fortran_order', 'shape')");
    }
  }

  // A '...' or "..." literal without escape sequences (none occur in headers).
  std::string parse_string() {
    if (at_end()) error("expected a quoted string but the header ended");
    const char quote = peek();
    if (quote != '\'' && quote != '"') error("expected a quoted string");
    ++pos_;
    const std::size_t start = pos_;
    while (!at_end() && peek() != quote) {
      if (peek() == '\\') error("escape sequences in strings are not supported");
      ++pos_;
    }
    if (at_end()) error("unterminated string");
    std::string value(text_.substr(start, pos_ - start));
    ++pos_;  // closing quote
    return value;
  }

  bool parse_bool() {
    for (std::string_view word : {"True", "False"}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return word == "True";
      }
    }
    error("expected True or False");
  }

  Shape parse_shape() {
    expect('(');
    skip_space();
    Shape shape;
    if (consume(')')) return shape;
    while (true) {
      shape.push_back(parse_size());
      skip_space();
      if (consume(')')) {
        // In Python "(3)" is the int 3, not a tuple; NumPy rejects it too.
        if (shape.size() == 1) error("a 1-d shape must be written (n,)");
        return shape;
      }
      expect(',');
      skip_space();
      if (consume(')')) return shape;
    }
  }

  std::int64_t parse_size() {
    if (peek() == '-') error("negative size in the shape");
    if (peek() < '0' || peek() > '9') error("expected a non-negative integer in the shape");
    std::int64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, peek() - '0', &value))
        error("shape size does not fit in int64");
      ++pos_;
    }
    consume('L');  // Python 2 wrote longs as "3L"
    return value;
  }

  const FileContext& ctx_;
  std::string_view text_;
  std::size_t pos_ = 0;
  std::optional<std::string> descr_;
  std::optional<bool> fortran_order_;
  std::optional<Shape> shape_;
};

}  // namespace

// ---- safetensors ----

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const FileContext ctx{"save_safetensors", path};
  // std::map iterates in name order: that is the order of the data too.
  Json header = Json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey)
      ctx.fail("a tensor cannot be named \"__metadata__\", the key reserved for metadata");
    if (!t.defined()) ctx.fail("tensor '", name, "' is undefined");
    const std::uint64_t nbytes = static_cast<std::uint64_t>(t.numel()) * dtype_size(t.dtype());
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype_code(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = Json::array({offset, offset + nbytes});
    header[name] = std::move(entry);
    offset += nbytes;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {  // names or metadata that are not valid UTF-8
    ctx.fail("cannot encode the header: ", e.what());
  }
  // Padding keeps the data buffer 8-byte aligned within the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string length;
  encode_le(text.size(), 8, length);
  AtomicFileWriter out(ctx.op, path);
  out.write(length);
  out.write(text);
  for (const auto& [name, t] : tensors) write_elements(out, t);
  out.commit();
}

namespace {

SafetensorsFile read_safetensors(ByteSource& file) {
  const FileContext& ctx = file.context();
  if (file.size() < 8)
    ctx.fail("file has ", file.size(), " bytes, too few for the 8-byte header length");
  unsigned char length_bytes[8];
  file.read(0, length_bytes, 8, "the header length");
  const std::uint64_t header_length = decode_le(length_bytes, 8);
  if (header_length > file.size() - 8)
    ctx.fail("header length ", header_length, " exceeds the ", file.size() - 8,
             " bytes that follow it");
  if (header_length > kMaxSafetensorsHeader)
    ctx.fail("header length ", header_length, " exceeds the limit of ", kMaxSafetensorsHeader,
             " bytes");
  std::string text(header_length, '\0');
  file.read(8, text.data(), header_length, "the header");
  const std::uint64_t buffer_start = 8 + header_length;
  const std::uint64_t buffer_size = file.size() - buffer_start;

  const Json header = parse_json_strict(ctx, text);
  if (!header.is_object()) ctx.fail("header must be a JSON object, got a ", header.type_name());

  SafetensorsFile result;
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      result.metadata = parse_metadata(ctx, info);
    } else {
      entries.push_back(parse_safetensors_entry(ctx, name, info, buffer_size));
    }
  }
  // Every entry now fits the buffer and they tile it, so the allocations
  // below add up to at most twice the file size (half precision widened).
  check_buffer_coverage(ctx, entries, buffer_size);
  for (const SafetensorsEntry& entry : entries) {
    Tensor t = empty(entry.shape, entry.dtype);
    const std::string what = "the data of tensor '" + entry.name + "'";
    if (entry.stored == StoredAs::Native) {
      file.read(buffer_start + entry.begin, t.storage()->data(), entry.end - entry.begin, what);
    } else {
      std::vector<std::uint16_t> halves(static_cast<std::size_t>(t.numel()));
      file.read(buffer_start + entry.begin, halves.data(), entry.end - entry.begin, what);
      float* out = t.data<float>();
      for (std::size_t i = 0; i < halves.size(); ++i)
        out[i] = entry.stored == StoredAs::Float16 ? float_from_half(halves[i]) : float_from_bfloat16(halves[i]);
    }
    result.tensors.emplace(entry.name, std::move(t));
  }
  return result;
}

}  // namespace

SafetensorsFile load_safetensors_file(const std::string& path) {
  FileSource file("load_safetensors", path);
  return read_safetensors(file);
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& name) {
  MemorySource source("parse_safetensors", bytes, name);
  return read_safetensors(source);
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  return load_safetensors_file(path).tensors;
}

// ---- NumPy .npy ----

namespace {

// save_npy and save_npy_bools: the tensor's own dtype, or int64 0/1 as '|b1'.
void write_npy(const FileContext& ctx, const std::string& path, const Tensor& t, bool as_bools) {
  if (!t.defined()) ctx.fail("the tensor is undefined");
  // The dict exactly as NumPy writes it (Python's repr of the header dict).
  std::string dict = "{'descr': '" + std::string(as_bools ? "|b1" : npy_descr(t.dtype())) +
                     "', 'fortran_order': False, 'shape': (";
  for (std::size_t d = 0; d < t.shape().size(); ++d)
    dict += (d ? ", " : "") + std::to_string(t.shape()[d]);
  if (t.dim() == 1) dict += ',';
  dict += "), }";

  // magic, version and header length; the header is padded with spaces and
  // ends with '\n' so that the data starts at a multiple of 64 bytes.
  constexpr std::size_t kAlign = 64;
  auto padded_length = [&](std::size_t preamble) {
    std::size_t unpadded = preamble + dict.size() + 1;
    return dict.size() + 1 + (kAlign - unpadded % kAlign) % kAlign;
  };
  std::size_t header_length = padded_length(10);
  const bool version1 = header_length <= 0xffff;
  if (!version1) header_length = padded_length(12);
  if (header_length > kMaxNpyHeader)
    ctx.fail("a tensor with ", t.dim(), " dims needs a header over ", kMaxNpyHeader, " bytes");

  std::string preamble(kNpyMagic);
  preamble += static_cast<char>(version1 ? 1 : 2);
  preamble += '\0';
  encode_le(header_length, version1 ? 2 : 4, preamble);
  dict.append(header_length - dict.size() - 1, ' ');
  dict += '\n';

  AtomicFileWriter out(ctx.op, path);
  out.write(preamble);
  out.write(dict);
  if (as_bools) {
    std::string bytes;
    bytes.reserve(static_cast<std::size_t>(t.numel()));
    for (const std::int64_t value : t.contiguous().to_vector<std::int64_t>()) bytes += static_cast<char>(value);
    out.write(bytes);
  } else {
    write_elements(out, t);
  }
  out.commit();
}

}  // namespace

void save_npy(const std::string& path, const Tensor& t) { write_npy({"save_npy", path}, path, t, false); }

void save_npy_bools(const std::string& path, const Tensor& t) {
  const FileContext ctx{"save_npy_bools", path};
  if (t.defined() && t.dtype() != kInt64) ctx.fail("expected an int64 tensor of 0 and 1, got ", dtype_name(t.dtype()));
  if (t.defined())
    for (const std::int64_t value : t.contiguous().to_vector<std::int64_t>())
      if (value != 0 && value != 1) ctx.fail("expected only 0 and 1, got ", value);
  write_npy(ctx, path, t, true);
}

namespace {

Tensor read_npy(ByteSource& file) {
  const FileContext& ctx = file.context();
  if (file.size() < 10)
    ctx.fail("file has ", file.size(), " bytes, too few for a .npy preamble (10)");
  unsigned char preamble[12];
  file.read(0, preamble, 8, "the magic string");
  if (std::string_view(reinterpret_cast<const char*>(preamble), kNpyMagic.size()) != kNpyMagic)
    ctx.fail("not a .npy file: it does not start with \"\\x93NUMPY\"");
  const int major = preamble[6];
  const int minor = preamble[7];
  if (minor != 0 || major < 1 || major > 3)
    ctx.fail("unsupported .npy format version ", major, ".", minor, " (supported: 1.0, 2.0, 3.0)");
  // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
  const std::size_t length_size = major == 1 ? 2 : 4;
  const std::uint64_t preamble_size = 8 + length_size;
  if (file.size() < preamble_size)
    ctx.fail("file has ", file.size(), " bytes, too few for a version ", major, " preamble (",
             preamble_size, ")");
  file.read(8, preamble + 8, length_size, "the header length");
  const std::uint64_t header_length = decode_le(preamble + 8, length_size);
  if (header_length > file.size() - preamble_size)
    ctx.fail("header length ", header_length, " exceeds the ", file.size() - preamble_size,
             " bytes that follow it");
  if (header_length > kMaxNpyHeader)
    ctx.fail("header length ", header_length, " exceeds the limit of ", kMaxNpyHeader, " bytes");
  std::string text(header_length, '\0');
  file.read(preamble_size, text.data(), header_length, "the header");

  const NpyHeader header = NpyHeaderParser(ctx, text).parse();
  // A bool takes one byte in the file, eight in the int64 tensor.
  const std::uint64_t nbytes = checked_nbytes(ctx, header.shape, header.dtype) / (header.bools ? dtype_size(kInt64) : 1);
  const std::uint64_t data_start = preamble_size + header_length;
  const std::uint64_t available = file.size() - data_start;
  if (available != nbytes)
    ctx.fail("the data holds ", available, " bytes but shape ", shape_str(header.shape), " of '",
             header.bools ? "|b1" : npy_descr(header.dtype), "' needs ", nbytes);
  Tensor t = empty(header.shape, header.dtype);
  if (!header.bools) {
    file.read(data_start, t.storage()->data(), nbytes, "the data");
    return t;
  }
  std::vector<unsigned char> bytes(nbytes);
  file.read(data_start, bytes.data(), nbytes, "the data");
  std::int64_t* out = t.data<std::int64_t>();
  for (std::uint64_t i = 0; i < nbytes; ++i) {
    if (bytes[i] > 1) ctx.fail("bool element ", i, " is the byte ", static_cast<int>(bytes[i]), ", not 0 or 1");
    out[i] = bytes[i];
  }
  return t;
}

}  // namespace

Tensor load_npy(const std::string& path) {
  FileSource file("load_npy", path);
  return read_npy(file);
}

Tensor parse_npy(std::string_view bytes, const std::string& name) {
  MemorySource source("parse_npy", bytes, name);
  return read_npy(source);
}

}  // namespace flowgrad
