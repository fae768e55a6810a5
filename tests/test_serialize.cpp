#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;
namespace fs = std::filesystem;

namespace {


std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string le_bytes(std::uint64_t value, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

template <class T>
std::string raw_bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A safetensors file as the reference writer lays it out: u64 LE length,
// header padded with spaces to a multiple of 8, data buffer.
std::string safetensors_bytes(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return le_bytes(header.size(), 8) + header + data;
}

// A .npy file as NumPy lays it out: magic, version, header length, the dict
// padded with spaces and ended by '\n' so the data starts at a multiple of 64.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string header = dict;
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  return out + le_bytes(header.size(), major == 1 ? 2 : 4) + header + data;
}

void require_same_tensor(const Tensor& actual, const Tensor& expected) {
  REQUIRE(actual.dtype() == expected.dtype());
  REQUIRE(actual.shape() == expected.shape());
  REQUIRE(actual.is_contiguous());
  if (expected.dtype() == kInt64) {
    REQUIRE(actual.to_vector<std::int64_t>() == expected.to_vector<std::int64_t>());
  } else {
    REQUIRE(actual.to_vector<double>() == expected.to_vector<double>());  // bit-exact round trip
  }
}

// Runs `action` and returns the message of the flowgrad::Error it throws
// ("" when it throws none).
std::string error_message(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ======================= safetensors =======================

TEST_CASE("safetensors round-trips float32, float64 and int64 tensors with metadata") {
  TempDir dir;
  Generator gen(7);
  std::map<std::string, Tensor> tensors = {
      {"weight", randn({3, 4}, gen, kFloat32)},
      {"bias", randn({4}, gen, kFloat64)},
      {"step", scalar_tensor(42, kInt64)},                       // 0-d
      {"indices", from_vector<std::int64_t>({-3, 0, 9007199254740993})},  // not a double
      {"empty", zeros({0, 5}, kFloat32)},                        // 0 elements
      {"also_empty", zeros({2, 0}, kInt64)},
      {"transposed", transposed_randn({3, 5}, gen)},             // non-contiguous
      {"narrowed", randn({4, 6}, gen, kFloat64).narrow(1, 1, 3)},
      {"expanded", tensor({1, 2}, {2, 1}, kFloat32).expand({2, 3})},
  };
  REQUIRE_FALSE(tensors["narrowed"].is_contiguous());
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo ✓"}};
  const std::string path = dir.file("model.safetensors");
  save_safetensors(path, tensors, metadata);

  SafetensorsFile file = load_safetensors_file(path);
  REQUIRE(file.metadata == metadata);
  REQUIRE(file.tensors.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO("tensor " << name);
    REQUIRE(file.tensors.count(name) == 1);
    require_same_tensor(file.tensors.at(name), t);
  }
  std::map<std::string, Tensor> plain = load_safetensors(path);
  REQUIRE(plain.size() == tensors.size());
  require_same_tensor(plain.at("transposed"), tensors.at("transposed"));

  // No metadata and no tensors at all are both valid files.
  save_safetensors(path, {});
  SafetensorsFile nothing = load_safetensors_file(path);
  REQUIRE(nothing.tensors.empty());
  REQUIRE(nothing.metadata.empty());
}

TEST_CASE("safetensors files we write have the documented byte layout") {
  TempDir dir;
  const std::string path = dir.file("layout.safetensors");
  // "b" comes before "z" by name, so its data comes first although given second.
  save_safetensors(path, {{"z", tensor({1.5, -2}, kFloat32)}, {"b", tensor({7, 8, 9}, kInt64)}},
                   {{"format", "pt"}});
  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i)
    header_length = (header_length << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  REQUIRE(header_length % 8 == 0);
  REQUIRE(bytes.size() == 8 + header_length + 3 * 8 + 2 * 4);
  const std::string header_text = bytes.substr(8, header_length);
  REQUIRE(header_text.front() == '{');
  const std::size_t last_brace = header_text.rfind('}');
  REQUIRE(header_text.find_first_not_of(' ', last_brace + 1) == std::string::npos);  // space padding

  const auto header = nlohmann::json::parse(header_text);
  REQUIRE(header.size() == 3);
  REQUIRE(header["b"]["dtype"] == "I64");
  REQUIRE(header["b"]["shape"] == nlohmann::json::array({3}));
  REQUIRE(header["b"]["data_offsets"] == nlohmann::json::array({0, 24}));
  REQUIRE(header["z"]["dtype"] == "F32");
  REQUIRE(header["z"]["shape"] == nlohmann::json::array({2}));
  REQUIRE(header["z"]["data_offsets"] == nlohmann::json::array({24, 32}));
  REQUIRE(header["__metadata__"] == nlohmann::json({{"format", "pt"}}));

  const std::string data = bytes.substr(8 + header_length);
  REQUIRE(data.substr(0, 24) == raw_bytes<std::int64_t>({7, 8, 9}));
  REQUIRE(data.substr(24) == raw_bytes<float>({1.5f, -2.0f}));
}

TEST_CASE("safetensors files laid out by other writers load") {
  TempDir dir;
  const std::string path = dir.file("external.safetensors");
  // As Python's safetensors writes it: compact JSON, metadata first, entries
  // not in data order, a 0-element tensor, header padded with spaces.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("layer.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},)"
      R"("layer.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("count":{"dtype":"I64","shape":[],"data_offsets":[24,32]},)"
      R"("nothing":{"dtype":"F64","shape":[0,3],"data_offsets":[32,32]},)"
      R"("scale":{"dtype":"F64","shape":[1],"data_offsets":[32,40]}})";
  const std::string data = raw_bytes<float>({0.5f, -0.5f}) + raw_bytes<float>({1, 2, 3, 4}) +
                           raw_bytes<std::int64_t>({-12}) + raw_bytes<double>({0.125});
  for (bool pad : {true, false}) {  // readers must not rely on the padding
    INFO("padded header: " << pad);
    write_bytes(path, safetensors_bytes(header, data, pad));
    SafetensorsFile file = load_safetensors_file(path);
    REQUIRE(file.metadata == std::map<std::string, std::string>{{"format", "pt"}});
    REQUIRE(file.tensors.size() == 5);
    require_same_tensor(file.tensors.at("layer.bias"), tensor({0.5, -0.5}, kFloat32));
    require_same_tensor(file.tensors.at("layer.weight"), tensor({1, 2, 3, 4}, {2, 2}, kFloat32));
    require_same_tensor(file.tensors.at("count"), scalar_tensor(-12, kInt64));
    require_same_tensor(file.tensors.at("nothing"), zeros({0, 3}, kFloat64));
    require_same_tensor(file.tensors.at("scale"), tensor({0.125}, kFloat64));
  }
}

TEST_CASE("broken safetensors files are rejected with a message naming op, path and defect") {
  TempDir dir;
  const std::string path = dir.file("broken.safetensors");
  auto require_rejected = [&](const std::string& bytes, const std::string& defect) {
    write_bytes(path, bytes);
    REQUIRE_THROWS_WITH(load_safetensors(path), Catch::Contains("[load_safetensors]") &&
                                                    Catch::Contains(path) &&
                                                    Catch::Contains(defect));
  };
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}";
  };
  const std::string eight = std::string(8, '\x01');
  const std::string good = safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,8]") + "}", eight);
  write_bytes(path, good);
  REQUIRE(load_safetensors_file(path).tensors.size() == 1);  // the mutations below break a valid file

  SECTION("missing, not a file, or too short") {
    REQUIRE_THROWS_WITH(load_safetensors(dir.file("absent.safetensors")),
                        Catch::Contains("[load_safetensors]") && Catch::Contains("absent.safetensors") &&
                            Catch::Contains("No such file"));
    fs::create_directory(dir.file("a_directory"));
    REQUIRE_THROWS_WITH(load_safetensors(dir.file("a_directory")),
                        Catch::Contains("[load_safetensors]") && Catch::Contains("is a directory"));
    require_rejected("", "too few");
    require_rejected(std::string("\x10\0\0", 3), "too few");
  }
  SECTION("header length beyond the file") {
    require_rejected(le_bytes(1000, 8) + "{}", "header length 1000 exceeds");
    require_rejected(le_bytes(~0ull, 8) + "{}      ", "exceeds");
    require_rejected(good.substr(0, 20), "exceeds");  // cut inside the header
  }
  SECTION("header that is not the expected JSON") {
    require_rejected(safetensors_bytes("{\"a\":", ""), "not valid JSON");
    require_rejected(safetensors_bytes("not json", ""), "not valid JSON");
    require_rejected(safetensors_bytes("{\"\xff\xfe\":{}}", ""), "not valid JSON");  // bad UTF-8
    require_rejected(safetensors_bytes("[1, 2]", ""), "must be a JSON object");
    // Deep nesting must neither recurse nor crash.
    require_rejected(safetensors_bytes(std::string(200000, '[') + std::string(200000, ']'), ""),
                     "must be a JSON object");
    require_rejected(safetensors_bytes("{\"a\":[1,2]}", ""), "expected an object");
  }
  SECTION("a key given twice (nlohmann would keep the last one silently)") {
    // Issue 11: a duplicate tensor name was reported as "a gap" in the data buffer.
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[1]", "[0,4]") + "," +
                                           entry("a", "\"F32\"", "[1]", "[4,8]") + "}",
                                       eight),
                     "the header names tensor 'a' twice");
    require_rejected(safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[2],"
                                       "\"data_offsets\":[0,8]}}",
                                       eight),
                     "key 'dtype' twice in one object");
    require_rejected(safetensors_bytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," +
                                           entry("a", "\"F32\"", "[2]", "[0,8]") + "}",
                                       eight),
                     "key 'k' twice");
    require_rejected(safetensors_bytes("{" + entry("", "\"F32\"", "[1]", "[0,4]") + "," +
                                           entry("", "\"F32\"", "[1]", "[4,8]") + "}",
                                       eight),
                     "names tensor '' twice");
  }
  SECTION("missing keys and wrongly typed values") {
    require_rejected(safetensors_bytes("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight),
                     "has no \"dtype\"");
    require_rejected(safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight),
                     "has no \"shape\"");
    require_rejected(safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight),
                     "has no \"data_offsets\"");
    require_rejected(safetensors_bytes("{" + entry("a", "32", "[2]", "[0,8]") + "}", eight),
                     "\"dtype\" must be a string");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "2", "[0,8]") + "}", eight),
                     "\"shape\" must be an array");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[\"2\"]", "[0,8]") + "}", eight),
                     "must be non-negative integers");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "{}") + "}", eight),
                     "\"data_offsets\" must be an array [begin, end]");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0]") + "}", eight),
                     "\"data_offsets\" must be an array [begin, end]");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,8.0]") + "}", eight),
                     "is not an integer");
    require_rejected(safetensors_bytes("{\"__metadata__\":[]}", ""), "\"__metadata__\" must be an object");
    require_rejected(safetensors_bytes("{\"__metadata__\":{\"k\":1}}", ""),
                     "\"__metadata__\" entry 'k' must be a string");
  }
  SECTION("unknown dtype and bad shapes") {
    require_rejected(safetensors_bytes("{" + entry("a", "\"U8\"", "[4]", "[0,8]") + "}", eight),
                     "unsupported dtype \"U8\"");
    // Half precision takes 2 bytes an element: 4 of them fill 8 bytes, not 16.
    require_rejected(safetensors_bytes("{" + entry("a", "\"BF16\"", "[2]", "[0,8]") + "}", eight),
                     "hold 8 bytes but shape [2] of BF16 needs 4");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[-2]", "[0,8]") + "}", eight),
                     "entry -2 is negative");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2.5]", "[0,8]") + "}", eight),
                     "entry 2.5 is not an integer");
    require_rejected(
        safetensors_bytes("{" + entry("a", "\"F32\"", "[9223372036854775808]", "[0,8]") + "}", eight),
        "is larger than");
    require_rejected(
        safetensors_bytes("{" + entry("a", "\"F32\"", "[4294967296,4294967296]", "[0,8]") + "}", eight),
        "exceeds the maximum tensor size of 2^40 elements");
    // Zero elements, but strides of the other dims would overflow.
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"",
                                                   "[4611686018427387904,4611686018427387904,0]",
                                                   "[0,0]") + "}", ""),
                     "exceeds the maximum tensor size of 2^40 elements");
    // numel fits int64 but numel * 8 bytes does not fit 64 bits.
    require_rejected(
        safetensors_bytes("{" + entry("a", "\"F64\"", "[4611686018427387904]", "[0,8]") + "}", eight),
        "exceeds the maximum tensor size of 2^40 elements");
  }
  SECTION("data offsets that do not tile the data buffer") {
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[8,0]") + "}", eight),
                     "are reversed");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[8,16]") + "}", eight),
                     "outside the data buffer of 8 bytes");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,18446744073709551615]") +
                                       "}", eight),
                     "outside the data buffer");
    require_rejected(good.substr(0, good.size() - 1), "outside the data buffer");  // truncated data
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[3]", "[0,8]") + "}", eight),
                     "hold 8 bytes but shape [3] of F32 needs 12");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[1]", "[0,4]") + "," +
                                       entry("b", "\"F32\"", "[1]", "[8,12]") + "}",
                                       std::string(12, '\0')),
                     "gap: bytes [4, 8)");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,8]") + "," +
                                       entry("b", "\"F32\"", "[2]", "[4,12]") + "}",
                                       std::string(12, '\0')),
                     "'a' and 'b' overlap");
    require_rejected(safetensors_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,8]") + "}",
                                       std::string(12, '\0')),
                     "has 12 bytes but the tensors cover only 8");
  }
}

TEST_CASE("save_safetensors rejects what it cannot write") {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"__metadata__", zeros({1})}}),
                      Catch::Contains("[save_safetensors]") && Catch::Contains("__metadata__"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"w", Tensor()}}),
                      Catch::Contains("[save_safetensors]") && Catch::Contains("'w' is undefined"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"bad\xff", zeros({1})}}),
                      Catch::Contains("[save_safetensors]") && Catch::Contains("cannot encode"));
  REQUIRE_THROWS_WITH(save_safetensors(dir.file("no/such/dir/x.safetensors"), {{"w", zeros({1})}}),
                      Catch::Contains("[save_safetensors]") && Catch::Contains("no/such/dir") &&
                          Catch::Contains("does not exist"));
  REQUIRE_THROWS_WITH(save_safetensors("", {}), Catch::Contains("[save_safetensors]") &&
                                                    Catch::Contains("the path is empty"));
  REQUIRE(dir.entries().empty());  // nothing written, no temporary left
}

// ======================= NumPy .npy =======================

TEST_CASE("npy round-trips float32, float64 and int64 tensors of any rank") {
  TempDir dir;
  Generator gen(11);
  const std::vector<Tensor> cases = {
      randn({2, 3}, gen, kFloat32),
      randn({5}, gen, kFloat64),
      scalar_tensor(2.5, kFloat64),
      scalar_tensor(-7, kInt64),
      tensor({1, -2, 3}, kInt64),
      zeros({0}, kFloat32),
      zeros({2, 0, 3}, kFloat64),
      randn({2, 3, 4}, gen, kFloat32),
      transposed_randn({4, 3}, gen),
      randn({5, 4}, gen, kFloat32).narrow(0, 1, 3).transpose(0, 1),
  };
  const std::string path = dir.file("array.npy");
  for (const Tensor& t : cases) {
    INFO("shape " << shape_str(t.shape()) << " " << dtype_name(t.dtype()));
    save_npy(path, t);
    const std::size_t data_bytes = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
    REQUIRE(read_bytes(path).size() % 64 == data_bytes % 64);  // header padded to 64
    require_same_tensor(load_npy(path), t);
  }
  REQUIRE(dir.entries() == std::vector<std::string>{"array.npy"});
}

TEST_CASE("npy files we write match NumPy's layout byte for byte") {
  TempDir dir;
  const std::string path = dir.file("layout.npy");
  // What np.save(path, np.arange(6, dtype='<f8').reshape(2, 3)) produces.
  save_npy(path, tensor({0, 1, 2, 3, 4, 5}, {2, 3}, kFloat64));
  const std::string expected_header =
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
  std::string expected = std::string("\x93NUMPY\x01\x00", 8) + le_bytes(118, 2) + expected_header;
  expected += std::string(128 - 1 - expected.size(), ' ') + "\n";
  expected += raw_bytes<double>({0, 1, 2, 3, 4, 5});
  REQUIRE(read_bytes(path) == expected);

  save_npy(path, tensor({4, 5, 6}, kInt64));  // 1-d tuples keep their comma
  REQUIRE(read_bytes(path) ==
          npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                    raw_bytes<std::int64_t>({4, 5, 6})));
  save_npy(path, scalar_tensor(1.5, kFloat32));  // 0-d: empty tuple
  REQUIRE(read_bytes(path) ==
          npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", raw_bytes<float>({1.5f})));
}

TEST_CASE("npy files in every header version and spelling NumPy produces load") {
  TempDir dir;
  const std::string path = dir.file("external.npy");
  auto load = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    return load_npy(path);
  };
  require_same_tensor(
      load(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                     raw_bytes<float>({1, 2, 3}))),
      tensor({1, 2, 3}, kFloat32));
  // Version 2.0 and 3.0 have a 4-byte header length.
  require_same_tensor(
      load(npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
                     raw_bytes<std::int64_t>({1, 2, 3, 4}), 2)),
      tensor({1, 2, 3, 4}, {2, 2}, kInt64));
  require_same_tensor(
      load(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                     raw_bytes<double>({-0.25}), 3)),
      tensor({-0.25}, kFloat64));
  // Python 2 longs, double quotes, other key order, no trailing comma, no padding.
  require_same_tensor(
      load(npy_bytes("{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<f8\"}",
                     raw_bytes<double>({3, 4}))),
      tensor({3, 4}, {2, 1}, kFloat64));
  std::string unpadded = "{'descr':'<f4','fortran_order':False,'shape':()}\n";
  require_same_tensor(load(std::string("\x93NUMPY\x01\x00", 8) + le_bytes(unpadded.size(), 2) +
                           unpadded + raw_bytes<float>({9})),
                      scalar_tensor(9, kFloat32));
  // A 0-element array has no data bytes.
  require_same_tensor(load(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4), }", "")),
                      zeros({0, 4}, kFloat64));
}

TEST_CASE("npy bool arrays ('|b1', as D4RL stores terminals) load as int64 0 and 1") {
  TempDir dir;
  const std::string path = dir.file("flags.npy");
  write_bytes(path, npy_bytes("{'descr': '|b1', 'fortran_order': False, 'shape': (2, 2), }", std::string("\x00\x01\x01\x00", 4)));
  require_same_tensor(load_npy(path), tensor({0, 1, 1, 0}, {2, 2}, kInt64));
  // Each bool is one byte: the data must hold numel bytes, each 0 or 1.
  write_bytes(path, npy_bytes("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\x00\x01", 2)));
  REQUIRE_THROWS_WITH(load_npy(path), Catch::Contains("the data holds 2 bytes but shape [3] of '|b1' needs 3"));
  write_bytes(path, npy_bytes("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\x00\x01\x02", 3)));
  REQUIRE_THROWS_WITH(load_npy(path), Catch::Contains("bool element 2 is the byte 2, not 0 or 1"));
}

TEST_CASE("broken npy files are rejected with a message naming op, path and defect") {
  TempDir dir;
  const std::string path = dir.file("broken.npy");
  auto require_rejected = [&](const std::string& bytes, const std::string& defect) {
    write_bytes(path, bytes);
    REQUIRE_THROWS_WITH(load_npy(path), Catch::Contains("[load_npy]") && Catch::Contains(path) &&
                                            Catch::Contains(defect));
  };
  // A header dict with `shape` and `descr` spliced in, plus matching data.
  auto with = [](const std::string& descr, const std::string& shape, const std::string& data) {
    return npy_bytes("{'descr': " + descr + ", 'fortran_order': False, 'shape': " + shape + ", }",
                     data);
  };
  const std::string eight(8, '\0');

  REQUIRE_THROWS_WITH(load_npy(dir.file("absent.npy")),
                      Catch::Contains("[load_npy]") && Catch::Contains("absent.npy") &&
                          Catch::Contains("No such file"));
  SECTION("preamble") {
    require_rejected("", "too few");
    require_rejected("\x93NUMPY\x01", "too few");
    require_rejected(std::string("PK\x03\x04 zip file, not npy"), "not a .npy file");
    require_rejected(std::string("\x93NUMPY\x04\x00", 8) + le_bytes(0, 4), "unsupported .npy format version 4.0");
    require_rejected(std::string("\x93NUMPY\x01\x01", 8) + le_bytes(0, 2), "unsupported .npy format version 1.1");
    require_rejected(std::string("\x93NUMPY\x02\x00\x01\x00", 10), "too few for a version 2 preamble");
    require_rejected(std::string("\x93NUMPY\x01\x00", 8) + le_bytes(500, 2) + "{}", "header length 500 exceeds");
    require_rejected(std::string("\x93NUMPY\x02\x00", 8) + le_bytes(0xffffffff, 4) + "{}", "exceeds");
  }
  SECTION("header syntax") {
    require_rejected(std::string("\x93NUMPY\x01\x00", 8) + le_bytes(0, 2), "expected '{' but the header ended");
    require_rejected(npy_bytes("['descr', '<f8']", ""), "expected '{'");
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } x", eight),
                     "unexpected text after the closing '}'");
    require_rejected(npy_bytes("{'descr': '<f8' 'fortran_order': False, 'shape': (1,)}", eight),
                     "expected ','");
    require_rejected(npy_bytes("{'descr: '<f8', 'fortran_order': False, 'shape': (1,)}", eight),
                     "expected ':'");
    require_rejected(npy_bytes("{'descr': '<f8}", eight),
                     "unterminated string");
    require_rejected(npy_bytes("{'descr': '\\x3cf8', 'fortran_order': False, 'shape': (1,)}", eight),
                     "escape sequences");
    require_rejected(npy_bytes("{'descr': 8, 'fortran_order': False, 'shape': (1,)}", eight),
                     "expected a quoted string");
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': 'False', 'shape': (1,)}", eight),
                     "expected True or False");
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': [1]}", eight),
                     "expected '('");
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", eight),
                     "unexpected key 'x'");
    require_rejected(npy_bytes("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", eight),
                     "duplicate key 'descr'");
    require_rejected(npy_bytes("{'descr': '<f8', 'shape': (1,)}", eight), "no 'fortran_order'");
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': False}", eight), "no 'shape'");
    require_rejected(npy_bytes("{'fortran_order': False, 'shape': (1,)}", eight), "no 'descr'");
  }
  SECTION("dtype, order and shape") {
    require_rejected(npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (1,), }", eight),
                     "fortran_order is True");
    require_rejected(with("'>f8'", "(1,)", eight), "big-endian dtype '>f8'");
    require_rejected(with("'<f2'", "(4,)", eight), "unsupported dtype '<f2'");
    require_rejected(with("'|u1'", "(8,)", eight), "unsupported dtype '|u1'");
    require_rejected(with("'<f8'", "(-1,)", eight), "negative size");
    require_rejected(with("'<f8'", "(1.5,)", eight), "expected ','");
    require_rejected(with("'<f8'", "(x,)", eight), "expected a non-negative integer");
    require_rejected(with("'<f8'", "(1)", eight), "a 1-d shape must be written (n,)");
    require_rejected(with("'<f8'", "(99999999999999999999,)", eight), "does not fit in int64");
    require_rejected(with("'<f8'", "(4294967296, 4294967296)", eight), "exceeds the maximum tensor size of 2^40 elements");
    require_rejected(with("'<f8'", "(2305843009213693952,)", eight), "exceeds the maximum tensor size of 2^40 elements");
  }
  SECTION("data size") {
    require_rejected(with("'<f8'", "(2,)", eight), "the data holds 8 bytes but shape [2] of '<f8' needs 16");
    require_rejected(with("'<f4'", "(1,)", eight), "the data holds 8 bytes but shape [1] of '<f4' needs 4");
    require_rejected(with("'<i8'", "()", ""), "needs 8");
  }
}

TEST_CASE("save_npy rejects what it cannot write") {
  TempDir dir;
  REQUIRE_THROWS_WITH(save_npy(dir.file("x.npy"), Tensor()),
                      Catch::Contains("[save_npy]") && Catch::Contains("undefined"));
  REQUIRE_THROWS_WITH(save_npy(dir.file("missing/x.npy"), zeros({2})),
                      Catch::Contains("[save_npy]") && Catch::Contains("missing") &&
                          Catch::Contains("does not exist"));
  REQUIRE(dir.entries().empty());
}

// ======================= atomic writes =======================

TEST_CASE("saves replace the file atomically and a failed save keeps the old file") {
  TempDir dir;
  const std::string st_path = dir.file("model.safetensors");
  const std::string npy_path = dir.file("array.npy");
  save_safetensors(st_path, {{"w", tensor({1, 2, 3})}});
  save_npy(npy_path, tensor({1, 2, 3}, kInt64));
  const std::string st_before = read_bytes(st_path);
  const std::string npy_before = read_bytes(npy_path);
  const std::vector<std::string> just_the_files = {"array.npy", "model.safetensors"};

  SECTION("a successful save replaces the content") {
    save_safetensors(st_path, {{"w", tensor({4, 5})}});
    require_same_tensor(load_safetensors(st_path).at("w"), tensor({4, 5}));
    save_npy(npy_path, tensor({6.0}, kFloat64));
    require_same_tensor(load_npy(npy_path), tensor({6.0}, kFloat64));
    REQUIRE(dir.entries() == just_the_files);
  }
  SECTION("a write failing halfway (file size limit) leaves the old file and no temporary") {
    Tensor big = zeros({1 << 18}, kFloat32);  // 1 MiB, the limit allows 64 KiB
    const std::string st_error =
        error_message([&] {
          FileSizeLimit limit(64 * 1024);
          save_safetensors(st_path, {{"w", big}});
        });
    const std::string npy_error =
        error_message([&] {
          FileSizeLimit limit(64 * 1024);
          save_npy(npy_path, big);
        });
    REQUIRE_THAT(st_error, Catch::Contains("[save_safetensors]") && Catch::Contains(st_path) &&
                               Catch::Contains("writing the temporary file") &&
                               Catch::Contains("File too large"));
    REQUIRE_THAT(npy_error, Catch::Contains("[save_npy]") && Catch::Contains("File too large"));
    REQUIRE(read_bytes(st_path) == st_before);
    REQUIRE(read_bytes(npy_path) == npy_before);
    REQUIRE(dir.entries() == just_the_files);
  }
  SECTION("invalid input fails before anything is written") {
    REQUIRE_THROWS_WITH(save_safetensors(st_path, {{"a", zeros({1})}, {"b", Tensor()}}),
                        Catch::Contains("[save_safetensors]"));
    REQUIRE_THROWS_WITH(save_npy(npy_path, Tensor()), Catch::Contains("[save_npy]"));
    REQUIRE(read_bytes(st_path) == st_before);
    REQUIRE(read_bytes(npy_path) == npy_before);
    REQUIRE(dir.entries() == just_the_files);
  }
  SECTION("a rename that fails (target is a non-empty directory) removes the temporary") {
    const std::string occupied = dir.file("occupied");
    fs::create_directory(occupied);
    write_bytes(occupied + "/keep", "x");
    REQUIRE_THROWS_WITH(save_safetensors(occupied, {{"w", zeros({2})}}),
                        Catch::Contains("[save_safetensors]") && Catch::Contains("cannot rename"));
    REQUIRE(dir.entries() == std::vector<std::string>{"array.npy", "model.safetensors", "occupied"});
    REQUIRE(read_bytes(occupied + "/keep") == "x");
  }
}

TEST_CASE("parse_safetensors and parse_npy read bytes in memory as the loaders read files") {
  TempDir dir;
  Generator gen(3);
  const std::map<std::string, Tensor> tensors{{"w", randn({2, 3}, gen)}, {"i", arange(4)}};
  save_safetensors(dir.file("a.safetensors"), tensors, {{"note", "x"}});
  save_npy(dir.file("a.npy"), tensors.at("w"));
  const SafetensorsFile parsed = parse_safetensors(read_bytes(dir.file("a.safetensors")));
  REQUIRE(parsed.metadata == std::map<std::string, std::string>{{"note", "x"}});
  for (const auto& [name, t] : tensors) require_same_tensor(parsed.tensors.at(name), t);
  require_same_tensor(parse_npy(read_bytes(dir.file("a.npy"))), tensors.at("w"));
  // The name given stands for the path in messages.
  REQUIRE_THROWS_WITH(parse_safetensors("short", "upload #3"),
                      Catch::Contains("[parse_safetensors]") && Catch::Contains("'upload #3'") &&
                          Catch::Contains("too few"));
  REQUIRE_THROWS_WITH(parse_npy(read_bytes(dir.file("a.npy")).substr(0, 100)),
                      Catch::Contains("[parse_npy]") && Catch::Contains("<memory>"));
}

TEST_CASE("a save deletes the temporaries that killed processes left behind, and only those") {
  TempDir dir;
  const std::string path = dir.file("checkpoint.safetensors");
  // No process has pid_max + 1; our parent (the test runner's shell or meson) runs.
  const std::string stale = save_temporary(path, unused_pid());
  const std::string alive = save_temporary(path, ::getppid());
  const std::string other = save_temporary(dir.file("other.safetensors"), unused_pid());
  // On a file system shared between hosts, another host's pid says nothing here.
  const std::string other_host = save_temporary(path, unused_pid(), "another-host");
  for (const std::string& file : {stale, alive, other, other_host}) write_bytes(file, "partial");
  save_safetensors(path, {{"w", zeros({2})}});
  REQUIRE_FALSE(fs::exists(stale));
  REQUIRE(fs::exists(alive));       // a save in progress elsewhere
  REQUIRE(fs::exists(other));       // another file's temporary
  REQUIRE(fs::exists(other_host));  // another host's
  REQUIRE(load_safetensors(path).at("w").numel() == 2);
}

TEST_CASE("append_to_file and replace_file_contents check every write through close") {
  TempDir dir;
  const std::string path = dir.file("log.csv");
  append_to_file("test", path, "a\n");
  append_to_file("test", path, "b\n");
  REQUIRE(read_bytes(path) == "a\nb\n");
  replace_file_contents("test", path, "c\n");
  REQUIRE(read_bytes(path) == "c\n");
  REQUIRE(read_file_contents("test", path) == "c\n");
  // A full disk: /dev/full fails every write with ENOSPC.
  REQUIRE_THROWS_WITH(append_to_file("charlm", "/dev/full", "row\n"),
                      Catch::Contains("[charlm] '/dev/full': appending failed: No space left on device"));
  {
    FileSizeLimit limit(4);
    REQUIRE_THROWS_WITH(append_to_file("test", path, "too long\n"), Catch::Contains("File too large"));
  }
  REQUIRE_THROWS_WITH(read_file_contents("test", "/dev/full"), Catch::Contains("not a regular file"));
  REQUIRE_THROWS_WITH(read_file_contents("test", dir.path().string()), Catch::Contains("is a directory"));
}

TEST_CASE("F16 and BF16 safetensors tensors are read as float32, exactly as PyTorch converts them") {
  // Written by tests/golden/make_half_golden.py with PyTorch: each half tensor
  // next to PyTorch's .float() of it (zeros, subnormals, the largest finite
  // values, infinities, NaN and random values).
  const SafetensorsFile file =
      load_safetensors_file(std::string(FLOWGRAD_SOURCE_DIR) + "/tests/golden/half_precision.safetensors");
  for (const char* name : {"half", "bfloat16"}) {
    INFO(name);
    const Tensor read = file.tensors.at(name);
    const Tensor expected = file.tensors.at(std::string(name) + "_as_f32");
    REQUIRE(read.dtype() == kFloat32);
    REQUIRE(read.shape() == expected.shape());
    CHECK(std::memcmp(read.data<float>(), expected.data<float>(), sizeof(float) * read.numel()) == 0);
  }
  CHECK(file.tensors.at("half").to_vector<float>()[5] == 0x1p-24f);  // 6e-8 becomes the smallest subnormal
}
