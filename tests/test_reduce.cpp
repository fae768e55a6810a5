#include "test_util.h"

#include <limits>

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

// [[1, 2, 3], [4, 5, 6]]
Tensor two_by_three(DType dtype = kFloat64) { return tensor({1, 2, 3, 4, 5, 6}, {2, 3}, dtype); }

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

// ---- sum / mean ----

TEST_CASE("sum over all, one, several and negative dims, with keepdim") {
  Tensor x = two_by_three();
  require_values(sum(x), {21});
  REQUIRE(sum(x).dim() == 0);
  require_values(sum(x, {0}), {5, 7, 9});
  require_values(sum(x, {1}), {6, 15});
  require_values(sum(x, {-1}), {6, 15});
  require_values(sum(x, {-1, 0}), {21});
  Tensor kept = sum(x, {1}, true);
  REQUIRE(kept.shape() == Shape{2, 1});
  require_values(kept, {6, 15});
  REQUIRE(sum(x, {}, true).shape() == Shape{1, 1});

  Tensor cube = arange(0.0, 24.0, 1.0, kFloat64).reshape({2, 3, 4});
  Tensor s = sum(cube, {0, 2});  // Σ over i, k of 12 i + 4 j + k = 8·4 j + 60
  require_values(s, {60, 92, 124});
  REQUIRE(sum(cube, {2, 0}, true).shape() == Shape{1, 3, 1});
}

TEST_CASE("sum of float32 and of non-contiguous inputs") {
  require_values(sum(two_by_three(kFloat32), {0}), {5, 7, 9});
  Tensor xt = two_by_three().transpose(0, 1);  // [[1, 4], [2, 5], [3, 6]]
  require_values(sum(xt, {1}), {5, 7, 9});
  require_values(sum(two_by_three().narrow(1, 1, 2), {0}), {7, 9});
}

TEST_CASE("sum over a zero-size dim gives zeros; over a large tensor stays accurate") {
  Tensor empty_rows = zeros({3, 0}, kFloat64);
  require_values(sum(empty_rows, {1}), {0, 0, 0});
  REQUIRE(sum(zeros({0, 4}), {1}).shape() == Shape{0});
  REQUIRE(sum(zeros({0, 100000}), {1}).shape() == Shape{0});
  // One output from many elements takes the split (parallel) path.
  Tensor big = full({1000, 300}, 0.1, kFloat32);
  REQUIRE(sum(big).item<double>() == Approx(30000.0).epsilon(1e-6));
}

TEST_CASE("sum of unit-stride runs of any length, split or not") {
  for (std::int64_t n : {1, 3, 4, 7, 100003}) {
    INFO("n = " << n);
    Tensor x = arange(0.0, static_cast<double>(n), 1.0, kFloat64);
    REQUIRE(sum(x).item<double>() == static_cast<double>(n * (n - 1) / 2));
    Tensor rows = x.reshape({1, n}).expand({2, n});  // stride-0 rows, unit-stride runs
    require_values(sum(rows, {1}), {static_cast<double>(n * (n - 1) / 2), static_cast<double>(n * (n - 1) / 2)});
  }
  Tensor cube = arange(0.0, 30.0, 1.0, kFloat32).reshape({2, 3, 5});
  require_values(sum(cube, {1, 2}), {105, 330});  // reduced dims form one run per output
}

TEST_CASE("sum and mean gradients") {
  Generator gen(1);
  require_gradients_match([](const TensorList& in) { return sum(in[0]); }, {randn({3, 4}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return sum(in[0], {0, 2}, true); },
                          {randn({2, 3, 4}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return sum(in[0], {-1}); },
                          {transposed_randn({3, 5}, gen)});
  require_gradients_match([](const TensorList& in) { return mean(in[0], {1}); },
                          {randn({4, 6}, gen, kFloat64).narrow(1, 1, 3)});
  require_gradients_match([](const TensorList& in) { return mean(in[0]); },
                          {transposed_randn({2, 3}, gen)});
}

TEST_CASE("mean values") {
  require_values(mean(two_by_three()), {3.5});
  require_values(mean(two_by_three(), {1}), {2, 5});
  require_values(mean(two_by_three(), {0}, true), {2.5, 3.5, 4.5});
}

TEST_CASE("sum and mean errors") {
  Tensor x = two_by_three();
  REQUIRE_THROWS_WITH(sum(x, {2}), Catch::Contains("[sum]"));
  REQUIRE_THROWS_WITH(sum(x, {0, -2}), Catch::Contains("[sum]") && Catch::Contains("twice"));
  REQUIRE_THROWS_WITH(mean(zeros({2, 0}), {1}), Catch::Contains("[mean]") && Catch::Contains("[2, 0]"));
  REQUIRE_THROWS_WITH(sum(arange(4)), Catch::Contains("[sum]") && Catch::Contains("int64"));
}

// ---- sum_to ----

TEST_CASE("sum_to reverses broadcasting") {
  Tensor x = two_by_three();
  require_values(sum_to(x, {3}), {5, 7, 9});
  REQUIRE(sum_to(x, {1, 3}).shape() == Shape{1, 3});
  require_values(sum_to(x, {1, 3}), {5, 7, 9});
  REQUIRE(sum_to(x, {2, 1}).shape() == Shape{2, 1});
  require_values(sum_to(x, {2, 1}), {6, 15});
  REQUIRE(sum_to(x, {}).dim() == 0);
  require_values(sum_to(x, {}), {21});
  require_values(sum_to(x, {2, 3}), {1, 2, 3, 4, 5, 6});
  Tensor cube = ones({4, 2, 3}, kFloat64);
  REQUIRE(sum_to(cube, {2, 1}).shape() == Shape{2, 1});
  require_values(sum_to(cube, {2, 1}), {12, 12});
}

TEST_CASE("sum_to gradient and errors") {
  Generator gen(2);
  require_gradients_match([](const TensorList& in) { return sum_to(in[0], {1, 3}); },
                          {randn({2, 4, 3}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return sum_to(in[0], {3, 1}); },
                          {transposed_randn({3, 4}, gen)});
  Tensor x = two_by_three();
  REQUIRE_THROWS_WITH(sum_to(x, {2}), Catch::Contains("[sum_to]") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(sum_to(x, {1, 2, 3, 4}), Catch::Contains("[sum_to]"));
}

// ---- max ----

TEST_CASE("max values over all, one, several and negative dims") {
  Tensor x = tensor({3, -1, 8, 0, 5, 2}, {2, 3}, kFloat64);
  require_values(max(x), {8});
  REQUIRE(max(x).dim() == 0);
  require_values(max(x, {0}), {3, 5, 8});
  require_values(max(x, {-1}), {8, 5});
  REQUIRE(max(x, {1}, true).shape() == Shape{2, 1});
  require_values(max(x, {1}, true), {8, 5});
  require_values(max(x, {0, 1}), {8});
  REQUIRE(max(x, {}, true).shape() == Shape{1, 1});
  Tensor cube = arange(0.0, 24.0, 1.0, kFloat32).reshape({2, 3, 4});
  require_values(max(cube, {0, 2}), {15, 19, 23});
  require_values(max(cube, {-3, -2}), {20, 21, 22, 23});
  require_values(max(full({3}, -std::numeric_limits<double>::infinity(), kFloat64)),
                 {-std::numeric_limits<double>::infinity()});
}

TEST_CASE("max of non-contiguous inputs") {
  Tensor x = tensor({3, -1, 8, 0, 5, 2}, {2, 3}, kFloat64);
  require_values(max(x.transpose(0, 1), {1}), {3, 5, 8});
  require_values(max(x.narrow(1, 0, 2), {1}), {3, 5});
}

TEST_CASE("max propagates NaN and sends its gradient there") {
  Tensor x = tensor({1, kNaN, 3, 4, 2, 9}, {2, 3}, kFloat64).requires_grad_();
  Tensor y = max(x, {1});
  std::vector<double> values = y.to_vector<double>();
  REQUIRE(std::isnan(values[0]));
  REQUIRE(values[1] == 9);
  REQUIRE(std::isnan(max(x).item<double>()));
  // A NaN that comes first is not replaced by a later larger value.
  REQUIRE(std::isnan(max(tensor({kNaN, 5.0}, kFloat64)).item<double>()));
  sum(y * tensor({2.0, 3.0}, {2}, kFloat64)).backward();
  require_values(x.grad(), {0, 2, 0, 0, 0, 3});
}

TEST_CASE("max gradient goes to the first arg-max of each slice") {
  Tensor x = tensor({1, 5, 5, 2, 2, 0}, {2, 3}, kFloat64).requires_grad_();
  sum(max(x, {1})).backward();
  require_values(x.grad(), {0, 1, 0, 1, 0, 0});

  Tensor y = tensor({4, 4, 1, 4}, {2, 2}, kFloat64).requires_grad_();
  sum(max(y, {0})).backward();  // columns [4, 1] and [4, 4]
  require_values(y.grad(), {1, 1, 0, 0});

  Tensor z = tensor({7, 7, 7, 7}, {2, 2}, kFloat64).requires_grad_();
  max(z).backward();
  require_values(z.grad(), {1, 0, 0, 0});
}

TEST_CASE("'first' arg-max follows the logical order of a non-contiguous input") {
  // b = [[0, 9, 0], [9, 0, 0]]; x = bᵀ = [[0, 9], [9, 0], [0, 0]]. The first
  // 9 of x in row-major order is x(0, 1) = b(1, 0), although b(0, 1) comes
  // first in memory.
  Tensor b = tensor({0, 9, 0, 9, 0, 0}, {2, 3}, kFloat64).requires_grad_();
  Tensor x = b.transpose(0, 1);
  max(x).backward();
  require_values(b.grad(), {0, 0, 0, 1, 0, 0});
}

TEST_CASE("max over many elements splits the work and keeps the first arg-max") {
  const std::int64_t n = 200000;  // above the parallel grain: the split path
  std::vector<double> values(n);
  for (std::int64_t i = 0; i < n; ++i) values[i] = static_cast<double>(i % 1000);
  values[150001] = 5000;
  values[190000] = 5000;
  Tensor x = from_vector(values).requires_grad_();
  Tensor y = max(x);
  REQUIRE(y.item<double>() == 5000);
  y.backward();
  std::vector<double> grad = x.grad().to_vector<double>();
  REQUIRE(grad[150001] == 1);
  REQUIRE(grad[190000] == 0);
  REQUIRE(sum(x.grad()).item<double>() == 1);

  values[170000] = kNaN;
  REQUIRE(std::isnan(max(from_vector(values)).item<double>()));

  // Many slices: the parallel-over-outputs path.
  Tensor rows = from_vector(values, {2000, 100});
  Tensor row_max = max(rows, {1});
  REQUIRE(row_max.at<double>({0}) == 99);
  REQUIRE(row_max.at<double>({1500}) == 5000);
  REQUIRE(std::isnan(row_max.at<double>({1700})));
}

TEST_CASE("max gradient on random shapes") {
  Generator gen(3);
  require_gradients_match([](const TensorList& in) { return max(in[0]); }, {randn({3, 4}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return max(in[0], {1}); },
                          {randn({4, 5}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return max(in[0], {0, 2}, true); },
                          {randn({3, 2, 4}, gen, kFloat64)});
  require_gradients_match([](const TensorList& in) { return max(in[0], {-1}); },
                          {transposed_randn({3, 5}, gen)});
  require_gradients_match([](const TensorList& in) { return max(in[0], {0}); },
                          {randn({4, 7}, gen, kFloat64).narrow(1, 2, 4)});
}

TEST_CASE("max errors") {
  Tensor x = two_by_three();
  REQUIRE_THROWS_WITH(max(zeros({2, 0}), {1}), Catch::Contains("[max]") && Catch::Contains("[2, 0]"));
  REQUIRE_THROWS_WITH(max(zeros({0})), Catch::Contains("[max]"));
  REQUIRE_THROWS_WITH(max(x, {2}), Catch::Contains("[max]"));
  REQUIRE_THROWS_WITH(max(x, {1, -1}), Catch::Contains("[max]") && Catch::Contains("twice"));
  REQUIRE_THROWS_WITH(max(arange(3)), Catch::Contains("[max]") && Catch::Contains("int64"));
  // Reducing a non-empty dim of an empty tensor is fine (no slices).
  REQUIRE(max(zeros({0, 3}), {1}).shape() == Shape{0});
}

// ---- cumsum ----

TEST_CASE("cumsum forward and reverse") {
  Tensor x = tensor({1, 2, 3, 4}, kFloat64);
  require_values(cumsum(x, 0), {1, 3, 6, 10});
  require_values(cumsum(x, 0, true), {10, 9, 7, 4});
  require_values(cumsum(x, -1), {1, 3, 6, 10});

  Tensor m = two_by_three();
  require_values(cumsum(m, 0), {1, 2, 3, 5, 7, 9});
  require_values(cumsum(m, 1), {1, 3, 6, 4, 9, 15});
  require_values(cumsum(m, -1, true), {6, 5, 3, 15, 11, 6});
  require_values(cumsum(m, 0, true), {5, 7, 9, 4, 5, 6});
  REQUIRE(cumsum(m, 1).is_contiguous());
}

TEST_CASE("cumsum of non-contiguous, float32, empty and 0-dim inputs") {
  Tensor mt = two_by_three().transpose(0, 1);  // [[1, 4], [2, 5], [3, 6]]
  require_values(cumsum(mt, 0), {1, 4, 3, 9, 6, 15});
  require_values(cumsum(mt, 1), {1, 5, 2, 7, 3, 9});
  require_values(cumsum(two_by_three(kFloat32).narrow(1, 1, 2), 1), {2, 5, 5, 11});
  REQUIRE(cumsum(zeros({0, 3}), 1).shape() == Shape{0, 3});
  REQUIRE(cumsum(zeros({3, 0}), 1).shape() == Shape{3, 0});
  Tensor s = cumsum(scalar_tensor(2.5, kFloat64), 0);
  REQUIRE(s.dim() == 0);
  REQUIRE(s.item<double>() == 2.5);
}

TEST_CASE("cumsum accumulates float32 in double") {
  // A float accumulator drifts by about 1.5 over this line; a double one
  // gives 100000 · float(0.1) = 10000.00015.
  Tensor x = full({100000}, 0.1, kFloat32);
  std::vector<float> y = cumsum(x, 0).to_vector<float>();
  REQUIRE(std::abs(y.back() - 10000.00015) < 0.01);
  // Many independent lines (the parallel path) give the same per line.
  Tensor lines = ones({5000, 40}, kFloat64);
  Tensor c = cumsum(lines, 1);
  REQUIRE(c.at<double>({4999, 39}) == 40);
  REQUIRE(c.at<double>({2500, 9}) == 10);
  Tensor r = cumsum(lines, 0, true);
  REQUIRE(r.at<double>({0, 7}) == 5000);
  REQUIRE(r.at<double>({4999, 7}) == 1);
}

TEST_CASE("cumsum gradient") {
  Generator gen(4);
  for (bool reverse : {false, true}) {
    INFO("reverse " << reverse);
    require_gradients_match([reverse](const TensorList& in) { return cumsum(in[0], 0, reverse); },
                            {randn({5}, gen, kFloat64)});
    require_gradients_match([reverse](const TensorList& in) { return cumsum(in[0], 1, reverse); },
                            {randn({3, 4, 2}, gen, kFloat64)});
    require_gradients_match([reverse](const TensorList& in) { return cumsum(in[0], -1, reverse); },
                            {transposed_randn({4, 3}, gen)});
    require_gradients_match([reverse](const TensorList& in) { return cumsum(in[0], 0, reverse); },
                            {randn({5, 6}, gen, kFloat64).narrow(1, 1, 3)});
  }
  // Hand case: y = cumsum(x), L = Σ w ⊙ y  ->  dx = reverse cumsum of w.
  Tensor x = tensor({1, 2, 3}, kFloat64).requires_grad_();
  sum(cumsum(x, 0) * tensor({1, 10, 100}, kFloat64)).backward();
  require_values(x.grad(), {111, 110, 100});
}

TEST_CASE("cumsum errors") {
  REQUIRE_THROWS_WITH(cumsum(two_by_three(), 2), Catch::Contains("[cumsum]"));
  REQUIRE_THROWS_WITH(cumsum(two_by_three(), -3), Catch::Contains("[cumsum]"));
  REQUIRE_THROWS_WITH(cumsum(scalar_tensor(1.0), 1), Catch::Contains("[cumsum]"));
  REQUIRE_THROWS_WITH(cumsum(arange(3), 0), Catch::Contains("[cumsum]") && Catch::Contains("int64"));
}
