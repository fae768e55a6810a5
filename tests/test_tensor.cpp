#include <cmath>
#include <limits>
#include <random>

#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

TEST_CASE("tensors are contiguous, 64-byte aligned views of shared storage") {
  Tensor t = zeros({2, 3}, kFloat64);
  REQUIRE(t.shape() == Shape{2, 3});
  REQUIRE(t.strides() == Strides{3, 1});
  REQUIRE(t.is_contiguous());
  REQUIRE(reinterpret_cast<std::uintptr_t>(t.storage()->data()) % 64 == 0);
  Tensor u = t;  // a handle copy shares everything
  REQUIRE(u.shares_storage_with(t));
}

TEST_CASE("factories fill the values they promise") {
  require_values(full({2, 2}, 1.5), {1.5, 1.5, 1.5, 1.5});
  require_values(arange(0.0, 1.0, 0.25, kFloat64), {0.0, 0.25, 0.5, 0.75});
  require_values(arange(4), {0, 1, 2, 3});
  REQUIRE(arange(4).dtype() == kInt64);
  Tensor t = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64);
  REQUIRE(t.at<double>({1, 2}) == 6.0);
  REQUIRE_THROWS_WITH(tensor({1, 2, 3}, {2, 2}), Catch::Contains("[tensor]") && Catch::Contains("[2, 2]"));
}

TEST_CASE("views share storage and index correctly") {
  Tensor t = tensor({0, 1, 2, 3, 4, 5}, {2, 3}, kFloat64);
  Tensor tt = t.transpose(0, 1);
  REQUIRE(tt.shape() == Shape{3, 2});
  REQUIRE_FALSE(tt.is_contiguous());
  REQUIRE(tt.shares_storage_with(t));
  require_values(tt, {0, 3, 1, 4, 2, 5});
  require_values(t.narrow(1, 1, 2), {1, 2, 4, 5});
  require_values(t.select(0, 1), {3, 4, 5});
  REQUIRE(t.unsqueeze(0).shape() == Shape{1, 2, 3});
  REQUIRE(t.unsqueeze(-1).shape() == Shape{2, 3, 1});
  REQUIRE(t.unsqueeze(1).squeeze(1).shape() == Shape{2, 3});
  require_values(t.narrow(1, 0, 1).expand({2, 4}), {0, 0, 0, 0, 3, 3, 3, 3});
  Tensor c = tt.contiguous();
  REQUIRE(c.is_contiguous());
  REQUIRE_FALSE(c.shares_storage_with(t));
  require_values(c, {0, 3, 1, 4, 2, 5});
  REQUIRE(t.reshape({3, 2}).shares_storage_with(t));
  REQUIRE(t.reshape({-1}).shape() == Shape{6});
  // A transposed tensor cannot be flattened without a copy.
  REQUIRE_THROWS_WITH(tt.view({6}), Catch::Contains("[view]"));
  REQUIRE_FALSE(tt.reshape({6}).shares_storage_with(t));
  require_values(tt.reshape({6}), {0, 3, 1, 4, 2, 5});
}

TEST_CASE("bad view arguments name the op and the shape") {
  Tensor t = zeros({2, 3});
  REQUIRE_THROWS_WITH(t.reshape({4, 2}), Catch::Contains("[reshape]") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(t.permute({0, 0}), Catch::Contains("[permute]"));
  REQUIRE_THROWS_WITH(t.narrow(1, 2, 2), Catch::Contains("[narrow]") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(t.squeeze(0), Catch::Contains("[squeeze]"));
  REQUIRE_THROWS_WITH(t.expand({3, 3}), Catch::Contains("[expand]"));
  REQUIRE_THROWS_WITH(t.transpose(0, 2), Catch::Contains("[transpose]") && Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(t.at<float>({0, 3}), Catch::Contains("[at]"));
}

TEST_CASE("to() converts dtypes and clone() copies") {
  Tensor t = tensor({1.5, -2.25}, kFloat64);
  Tensor f = t.to(kFloat32);
  REQUIRE(f.dtype() == kFloat32);
  require_values(f, {1.5, -2.25});
  require_values(t.to(kInt64), {1, -2});
  Tensor c = t.clone();
  REQUIRE_FALSE(c.shares_storage_with(t));
}

TEST_CASE("random tensors are reproducible from the seed") {
  Generator a(42), b(42), c(7);
  Tensor x = randn({100}, a, kFloat64);
  Tensor y = randn({100}, b, kFloat64);
  Tensor z = randn({100}, c, kFloat64);
  REQUIRE(x.to_vector<double>() == y.to_vector<double>());
  REQUIRE(x.to_vector<double>() != z.to_vector<double>());
  // The state round-trips.
  Generator d(3);
  d.normal();
  std::string state = d.state();
  double next = d.normal();
  Generator e(99);
  e.set_state(state);
  REQUIRE(e.normal() == next);
  // Moments are right for a large sample.
  Generator g(1);
  std::vector<double> v = randn({200000}, g, kFloat64, 2.0, 3.0).to_vector<double>();
  double m = 0, s = 0;
  for (double x_ : v) m += x_;
  m /= v.size();
  for (double x_ : v) s += (x_ - m) * (x_ - m);
  s = std::sqrt(s / v.size());
  REQUIRE(m == Approx(2.0).margin(0.03));
  REQUIRE(s == Approx(3.0).margin(0.03));
  std::vector<double> u = rand({100000}, g, kFloat32, -1.0, 1.0).to_vector<double>();
  for (double x_ : u) REQUIRE((x_ >= -1.0 && x_ < 1.0));
}

TEST_CASE("printing shows values, shape and dtype") {
  std::ostringstream out;
  out << tensor({1, 2, 3, 4}, {2, 2});
  REQUIRE(out.str() == "tensor([[1, 2],\n        [3, 4]], shape=[2, 2], dtype=float32)");
}

TEST_CASE("memory stats count live storages; released large buffers are cached for reuse") {
  empty_cache();
  const std::size_t before = memory_stats().current_bytes;
  reset_peak_memory();
  [[maybe_unused]] const void* first_address = nullptr;  // read only where the cache is on
  {
    Tensor big = empty({1 << 20}, kFloat32);  // 4 MiB
    first_address = big.storage()->data();
    REQUIRE(memory_stats().current_bytes == before + (std::size_t{4} << 20));
  }
  REQUIRE(memory_stats().current_bytes == before);
  REQUIRE(memory_stats().peak_bytes >= before + (std::size_t{4} << 20));
#if !defined(FLOWGRAD_UNDER_ADDRESS_SANITIZER)  // the cache is off under ASan
  REQUIRE(memory_stats().cached_bytes >= (std::size_t{4} << 20));
  Tensor again = empty({1 << 20}, kFloat32);  // same size class: the cached block
  REQUIRE(again.storage()->data() == first_address);
  again = Tensor();
#endif
  empty_cache();
  REQUIRE(memory_stats().cached_bytes == 0);
}

TEST_CASE("one thread setting; our kernels' results do not depend on the thread count") {
  const int original = get_num_threads();
  REQUIRE(original == 2);  // FLOWGRAD_NUM_THREADS=2 in the test environment
  Generator gen(12);
  Tensor a = randn({300, 700}, gen), b = randn({700, 200}, gen), x = randn({4 * kParallelGrain}, gen);
  const Tensor rows = randn({300, 70}, gen), rows_grad = randn({300, 70}, gen);  // several row blocks
  auto own_kernels = [&] {
    Tensor input = rows.detach().requires_grad_(), weight = ones({70}).requires_grad_(),
           bias = zeros({70}).requires_grad_();
    layer_norm(input, weight, bias).backward(rows_grad);
    return std::vector<std::vector<float>>{sum(x).to_vector<float>(), sum(a, {0}).to_vector<float>(),
                                           softmax(a, -1).to_vector<float>(), (x * 3.0).to_vector<float>(),
                                           input.grad().to_vector<float>(), weight.grad().to_vector<float>(),
                                           bias.grad().to_vector<float>()};
  };
  const auto with_two = own_kernels();
  const auto product = matmul(a, b).to_vector<float>();
  REQUIRE(matmul(a, b).to_vector<float>() == product);  // repeatable at a fixed thread count
  set_num_threads(1);
  REQUIRE(get_num_threads() == 1);
  const auto with_one = own_kernels();
  set_num_threads(original);
  // Bitwise equal. (OpenBLAS's GEMM may differ in the last bits between
  // thread counts, so matmul is only compared at a fixed count above.)
  REQUIRE(with_one == with_two);
  REQUIRE_THROWS_WITH(set_num_threads(0), Catch::Contains("[set_num_threads]"));
}

TEST_CASE("sizes beyond the maximum tensor size are errors that name the op and the shape, never overflow") {
  // 2^40 elements with zeros counted as ones: [0, 2^40, 2^40] has no element but impossible strides.
  const std::int64_t big = std::int64_t{1} << 40;
  REQUIRE(is_valid_tensor_shape({big}));
  REQUIRE_FALSE(is_valid_tensor_shape({big + 1}));
  REQUIRE_FALSE(is_valid_tensor_shape({0, big, big}));
  REQUIRE_FALSE(is_valid_tensor_shape({std::int64_t{1} << 62, 4}));  // the product wraps in int64
  REQUIRE_FALSE(is_valid_tensor_shape({2, -1}));
  REQUIRE_THROWS_WITH(empty({std::int64_t{1} << 62, 4}),
                      Catch::Contains("[empty]") && Catch::Contains("[4611686018427387904, 4]") &&
                          Catch::Contains("maximum tensor size of 2^40"));
  REQUIRE_THROWS_WITH(zeros({0, big, big}), Catch::Contains("[empty]"));
  REQUIRE_THROWS_WITH(empty({3, -2}), Catch::Contains("[empty]") && Catch::Contains("negative size"));
  REQUIRE_THROWS_WITH(arange(0.0, 1e300), Catch::Contains("[arange]") && Catch::Contains("2^40"));
  REQUIRE_THROWS_WITH(arange(0.0, std::nan(""), 1.0), Catch::Contains("[arange]"));
  // Within the bound, but more memory than any machine here has: a clear error, not std::bad_alloc.
  REQUIRE_THROWS_WITH(empty({big}, kFloat64),
                      Catch::Contains("[empty] out of memory") && Catch::Contains("8796093022208 bytes") &&
                          Catch::Contains("[1099511627776]"));
  // Views: element counts and reach are checked too.
  Tensor one = zeros({1});
  REQUIRE_THROWS_WITH(one.expand({big, big}), Catch::Contains("maximum tensor size"));
  REQUIRE_THROWS_WITH(make_view(one, {2, 2}, {std::int64_t{1} << 62, std::int64_t{1} << 62}, 0),
                      Catch::Contains("[make_view]") && Catch::Contains("overflows"));
  REQUIRE_THROWS_WITH(one.reshape({std::int64_t{1} << 40, std::int64_t{1} << 40, 0}), Catch::Contains("[reshape]"));
  REQUIRE_THROWS_WITH(zeros({6}).reshape({std::int64_t{1} << 62, 8, -1}),
                      Catch::Contains("[reshape]") && Catch::Contains("overflows"));
  // Programs multiply sizes from flags through these.
  REQUIRE(checked_mul(3, 4, "op", "a x b") == 12);
  REQUIRE_THROWS_WITH(checked_mul(std::int64_t{1} << 62, 4, "charlm", "--batch x --block"),
                      Catch::Contains("[charlm] --batch x --block: 4611686018427387904 x 4 overflows int64"));
  REQUIRE_THROWS_WITH(checked_add(std::numeric_limits<std::int64_t>::max(), 1, "op", "sum"), Catch::Contains("overflows"));
}

TEST_CASE("thread counts above kMaxThreads are refused") {
  REQUIRE_THROWS_WITH(set_num_threads(kMaxThreads + 1),
                      Catch::Contains("[set_num_threads]") && Catch::Contains("1 to 1024") && Catch::Contains("1025"));
  REQUIRE(get_num_threads() == 2);  // unchanged
}

TEST_CASE("the version macros and the library's version() agree") {
  const std::string expected = std::to_string(FLOWGRAD_VERSION_MAJOR) + "." + std::to_string(FLOWGRAD_VERSION_MINOR) +
                               "." + std::to_string(FLOWGRAD_VERSION_PATCH);
  CHECK(expected == FLOWGRAD_VERSION_STRING);
  CHECK(std::string(version()) == FLOWGRAD_VERSION_STRING);
  CHECK(FLOWGRAD_VERSION ==
        FLOWGRAD_VERSION_MAJOR * 10000 + FLOWGRAD_VERSION_MINOR * 100 + FLOWGRAD_VERSION_PATCH);
}

TEST_CASE("fail() writes numbers, characters and strings as a stream would") {
  auto message_of = [](auto... parts) {
    try {
      fail("op", parts...);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message_of("n=", -3, " u=", std::size_t{7}, " b=", true) == "[op] n=-3 u=7 b=1");
  CHECK(message_of(1e-6, ' ', 0.5, ' ', 2.0f, ' ', 123456789.0) == "[op] 1e-06 0.5 2 1.23457e+08");
  CHECK(message_of(std::numeric_limits<double>::infinity(), std::string(" s"), std::string_view(" v")) ==
        "[op] inf s v");
}

TEST_CASE("a Generator is the 64-bit Mersenne Twister, and its copies continue alike") {
  Generator gen(42);
  std::mt19937_64 reference(42);
  for (int i = 0; i < 1000; ++i) REQUIRE(gen.next_u64() == reference());
  Generator copy = gen;
  Generator moved = std::move(copy);
  Generator assigned(7);
  assigned = gen;
  for (int i = 0; i < 10; ++i) {
    const std::uint64_t expected = reference();
    CHECK(gen.next_u64() == expected);
    CHECK(moved.next_u64() == expected);
    CHECK(assigned.next_u64() == expected);
  }
}

TEST_CASE("from_blob wraps the caller's memory without a copy, and releases it after the last view") {
  std::vector<double> memory = {1, 2, 3, 4, 5, 6};
  int released = 0;
  {
    Tensor t = from_blob(memory.data(), {2, 3}, kFloat64, [&](void* data) {
      CHECK(data == memory.data());
      ++released;
    });
    CHECK(t.data<double>() == memory.data());
    memory[4] = 50;  // the caller's writes are the tensor's
    CHECK(t.at<double>({1, 1}) == 50);
    Tensor column = t.select(1, 2);  // a view keeps the memory in use
    fill_(column, -1.0);             // and the tensor's writes are the caller's
    CHECK(memory[2] == -1);
    CHECK(memory[5] == -1);
    t = Tensor();
    CHECK(released == 0);
    // Autograd works on it; the saved input keeps it alive too.
    Tensor leaf = from_blob(memory.data(), {6}, kFloat64).requires_grad_();
    Tensor y = sum(leaf * leaf);
    y.backward();
    CHECK(leaf.grad().to_vector<double>() == std::vector<double>{2, 4, -2, 8, 100, -2});
  }
  CHECK(released == 1);
  const std::size_t before = memory_stats().current_bytes;
  Tensor counted_nowhere = from_blob(memory.data(), {6}, kFloat64);
  CHECK(memory_stats().current_bytes == before);  // the caller's memory, not ours

  float floats[4] = {};
  REQUIRE_THROWS_WITH(from_blob(reinterpret_cast<char*>(floats) + 2, {1}, kFloat32),
                      Catch::Contains("[from_blob]") && Catch::Contains("aligned"));
  REQUIRE_THROWS_WITH(from_blob(nullptr, {2}, kFloat32), Catch::Contains("[from_blob]") && Catch::Contains("null"));
  REQUIRE_THROWS_WITH(from_blob(floats, {-1}, kFloat32), Catch::Contains("[from_blob]"));
  CHECK(from_blob(nullptr, {0, 3}, kFloat32).numel() == 0);
}
