// The IDX reader (MNIST / Fashion-MNIST files): plain and gzip files, item
// gathering, and every defect of an untrusted file as a clear error.
#include <filesystem>
#include <fstream>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

std::vector<std::uint8_t> iota_bytes(std::size_t n) {
  std::vector<std::uint8_t> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<std::uint8_t>((i * 7 + 3) % 256);
  return values;
}

}  // namespace

TEST_CASE("read_idx reads plain and gzip IDX files into their shape and bytes") {
  TempDir dir;
  const auto values = iota_bytes(3 * 4 * 5);
  const std::string bytes = idx_file_bytes({3, 4, 5}, values);
  write_bytes(dir.file("a.idx"), bytes);
  write_gzip_file(dir.file("a.idx.gz"), bytes);
  for (const std::string name : {"a.idx", "a.idx.gz"}) {
    IdxArray array = read_idx(dir.file(name));
    CHECK(array.shape == std::vector<std::int64_t>{3, 4, 5});
    CHECK(array.values == values);
    CHECK(array.items() == 3);
  }
  write_gzip_file(dir.file("labels.gz"), idx_file_bytes({4}, {9, 0, 255, 1}));
  Tensor labels = read_idx(dir.file("labels.gz")).to_tensor(kInt64);
  CHECK(labels.shape() == Shape{4});
  CHECK(labels.to_vector<std::int64_t>() == std::vector<std::int64_t>{9, 0, 255, 1});
}

TEST_CASE("IdxArray::gather returns the listed items in the listed order") {
  IdxArray array{{3, 2, 2}, iota_bytes(12)};
  Tensor picked = array.gather({2, 0, 2}, kFloat32);
  CHECK(picked.shape() == Shape{3, 2, 2});
  std::vector<float> expected;
  for (int item : {2, 0, 2})
    for (int k = 0; k < 4; ++k) expected.push_back(static_cast<float>(array.values[static_cast<std::size_t>(item * 4 + k)]));
  CHECK(picked.to_vector<float>() == expected);
  CHECK_THROWS_WITH(array.gather({3}, kFloat32), Catch::Contains("IdxArray::gather") && Catch::Contains("index 3") &&
                                                      Catch::Contains("3 items"));
  CHECK_THROWS_WITH(array.gather({-1}, kFloat32), Catch::Contains("index -1"));
}

TEST_CASE("read_idx rejects broken files with a message naming the path and the defect") {
  TempDir dir;
  const auto values = iota_bytes(2 * 3);
  const std::string good = idx_file_bytes({2, 3}, values);
  auto expect_error = [&](const std::string& name, const std::string& bytes, const std::string& defect,
                          bool gzip = false) {
    INFO(name);
    const std::string path = dir.file(name);
    gzip ? write_gzip_file(path, bytes) : write_bytes(path, bytes);
    CHECK_THROWS_WITH(read_idx(path), Catch::Contains("[read_idx]") && Catch::Contains(path) &&
                                          Catch::Contains(defect));
  };
  expect_error("empty", "", "too short");
  expect_error("magic", "\x01" + good.substr(1), "not an IDX file");
  expect_error("int32", idx_file_bytes({2, 3}, values, 0x0C), "int32");
  expect_error("float", idx_file_bytes({2, 3}, values, 0x0D), "only unsigned bytes");
  expect_error("no-dims", idx_file_bytes({}, {}), "0 dimensions");
  expect_error("header", good.substr(0, 9), "ends inside the header");
  expect_error("truncated", good.substr(0, good.size() - 1), "truncated: 5 of the 6 elements");
  expect_error("truncated.gz", good.substr(0, good.size() - 2), "truncated: 4 of the 6", true);
  expect_error("trailing", good + "x", "trailing bytes");
  expect_error("huge", idx_file_bytes({1u << 31, 1u << 31}, {}), "more than 2^40");
  // A gzip stream cut short: zlib reports it, or the data stops early.
  std::string compressed_path = dir.file("cut.gz");
  write_gzip_file(compressed_path, idx_file_bytes({200, 50}, iota_bytes(10000)));
  std::string compressed;
  {
    std::ifstream in(compressed_path, std::ios::binary);
    compressed.assign(std::istreambuf_iterator<char>(in), {});
  }
  write_bytes(compressed_path, compressed.substr(0, compressed.size() / 2));
  CHECK_THROWS_WITH(read_idx(compressed_path), Catch::Contains("[read_idx]") && Catch::Contains(compressed_path));
  CHECK_THROWS_WITH(read_idx(dir.file("missing.gz")), Catch::Contains("cannot open") && Catch::Contains("missing.gz"));
}

TEST_CASE("the Fashion-MNIST files of dataset-fashion-mnist read with their documented shapes") {
  const std::string root = "/usr/share/datasets/fashion-mnist/";
  INFO("installed by `apt-get install dataset-fashion-mnist` (scripts/common.sh lists it)");
  REQUIRE(std::filesystem::exists(root + "t10k-labels-idx1-ubyte.gz"));
  IdxArray images = read_idx(root + "t10k-images-idx3-ubyte.gz");
  IdxArray labels = read_idx(root + "t10k-labels-idx1-ubyte.gz");
  CHECK(images.shape == std::vector<std::int64_t>{10000, 28, 28});
  CHECK(labels.shape == std::vector<std::int64_t>{10000});
  std::vector<int> per_class(10, 0);
  for (std::uint8_t label : labels.values) {
    REQUIRE(label < 10);
    ++per_class[label];
  }
  CHECK(per_class == std::vector<int>(10, 1000));  // the test set is balanced
}

namespace {

std::string gzip_bytes(const std::string& bytes, TempDir& dir) {
  const std::string path = dir.file("scratch.gz");
  write_gzip_file(path, bytes);
  return read_text_file(path);
}

}  // namespace

TEST_CASE("read_idx: dimensions that overflow or exceed the maximum size are refused before any allocation") {
  // Issue 11: [2^20, 2^20, 2^24] wrapped to 0 elements and loaded without data; gather then read
  // through a null pointer.
  REQUIRE_THROWS_WITH(parse_idx(idx_file_bytes({1u << 20, 1u << 20, 1u << 24}, {}), "wraps.idx"),
                      Catch::Contains("[read_idx]") && Catch::Contains("wraps.idx") &&
                          Catch::Contains("[1048576, 1048576, 16777216]") && Catch::Contains("more than 2^40"));
  // A zero dimension does not excuse huge other ones.
  REQUIRE_THROWS_WITH(parse_idx(idx_file_bytes({0, 0xFFFFFFFFu, 0xFFFFFFFFu}, {})),
                      Catch::Contains("more than 2^40"));
  // A 12-byte file of dims [1023410192, 0] is a valid empty array. (to_tensor once built an
  // index list of all items, 8 GB here; the fuzzers' malloc limit would report that again.)
  const IdxArray empty_items = parse_idx(idx_file_bytes({1023410192u, 0}, {}));
  CHECK(empty_items.items() == 1023410192);
  CHECK(empty_items.item_size() == 0);
  const Tensor all = empty_items.to_tensor(kFloat32);
  CHECK(all.shape() == Shape{1023410192, 0});
  CHECK(empty_items.gather({5, 1023410191}, kInt64).shape() == Shape{2, 0});
  // An array whose shape and values disagree (built by hand) is refused, not read out of bounds.
  const IdxArray inconsistent{{4, 2}, {1, 2, 3}};
  CHECK_THROWS_WITH(inconsistent.gather({0}, kFloat32), Catch::Contains("[IdxArray]") && Catch::Contains("[4, 2]"));
  CHECK_THROWS_WITH(IdxArray{}.to_tensor(kFloat32), Catch::Contains("[IdxArray]"));
}

TEST_CASE("read_idx: gzip data must end with its checked trailer and nothing but gzip members may follow") {
  TempDir dir;
  const std::string idx = idx_file_bytes({2, 3}, iota_bytes(6));
  const std::string gz = gzip_bytes(idx, dir);
  REQUIRE(parse_idx(gz).values == iota_bytes(6));
  // No CRC-32/length trailer (its 8 bytes cut off): the data is complete but the stream unfinished.
  CHECK_THROWS_WITH(parse_idx(gz.substr(0, gz.size() - 8), "cut.gz"),
                    Catch::Contains("cut.gz") && Catch::Contains("truncated gzip data") &&
                        Catch::Contains("trailer"));
  // A wrong CRC-32.
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 0x01);
  CHECK_THROWS_WITH(parse_idx(bad_crc), Catch::Contains("corrupt gzip data") && Catch::Contains("incorrect data check"));
  // Garbage after the stream.
  CHECK_THROWS_WITH(parse_idx(gz + "garbage"),
                    Catch::Contains("bytes after the first gzip member are not gzip data"));
  // Two members, as `cat a.gz b.gz` makes, are one valid gzip file (here: header and data split).
  const std::string two_members = gzip_bytes(idx.substr(0, 7), dir) + gzip_bytes(idx.substr(7), dir);
  CHECK(parse_idx(two_members).values == iota_bytes(6));
  // A second member that holds more elements than declared is trailing data.
  CHECK_THROWS_WITH(parse_idx(gz + gzip_bytes("xy", dir)), Catch::Contains("trailing bytes"));
}

TEST_CASE("parse_idx reads the same arrays from memory as read_idx from files") {
  TempDir dir;
  const std::string bytes = idx_file_bytes({3, 4}, iota_bytes(12));
  write_bytes(dir.file("a.idx"), bytes);
  for (const std::string& data : {bytes, gzip_bytes(bytes, dir)}) {
    const IdxArray from_memory = parse_idx(data);
    CHECK(from_memory.shape == read_idx(dir.file("a.idx")).shape);
    CHECK(from_memory.values == read_idx(dir.file("a.idx")).values);
  }
  CHECK_THROWS_WITH(read_idx(dir.path().string()), Catch::Contains("[read_idx]") && Catch::Contains("is a directory"));
}
