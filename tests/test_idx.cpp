// The IDX reader (MNIST / Fashion-MNIST files): plain and gzip files, item
// gathering, and every defect of an untrusted file as a clear error.
#include <filesystem>
#include <fstream>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

void write_plain(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

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
  write_plain(dir.file("a.idx"), bytes);
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
    gzip ? write_gzip_file(path, bytes) : write_plain(path, bytes);
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
  write_plain(compressed_path, compressed.substr(0, compressed.size() / 2));
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
