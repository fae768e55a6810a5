#include "test_util.h"

using namespace flowgrad;
using namespace flowgrad::testing;

namespace {

// matmul by its definition, in double, independent of the library's layout
// code: promote 1-D operands, broadcast the batch dims, triple loop.
Tensor reference_matmul(const Tensor& a, const Tensor& b) {
  Shape as = a.shape(), bs = b.shape();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const std::vector<double> av = a.to_vector<double>();  // row-major, same for promoted shapes
  const std::vector<double> bv = b.to_vector<double>();
  const std::int64_t n = as[as.size() - 2], k = as.back(), m = bs.back();
  REQUIRE(bs[bs.size() - 2] == k);
  const Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  const std::size_t nb = std::max(a_batch.size(), b_batch.size());
  // Batch shapes right-aligned and padded with 1s.
  Shape pa(nb - a_batch.size(), 1), pb(nb - b_batch.size(), 1), batch(nb);
  pa.insert(pa.end(), a_batch.begin(), a_batch.end());
  pb.insert(pb.end(), b_batch.begin(), b_batch.end());
  for (std::size_t d = 0; d < nb; ++d) batch[d] = std::max(pa[d], pb[d]);
  const std::int64_t batches = shape_numel(batch);

  std::vector<double> out(static_cast<std::size_t>(batches * n * m), 0.0);
  for (std::int64_t bi = 0; bi < batches; ++bi) {
    // Unravel bi over `batch`, then ravel over each operand's batch (size-1 dims read index 0).
    std::int64_t rest = bi, a_index = 0, b_index = 0, a_scale = 1, b_scale = 1;
    for (std::size_t d = nb; d-- > 0;) {
      const std::int64_t i = rest % batch[d];
      rest /= batch[d];
      a_index += (pa[d] == 1 ? 0 : i) * a_scale;
      b_index += (pb[d] == 1 ? 0 : i) * b_scale;
      a_scale *= pa[d];
      b_scale *= pb[d];
    }
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < m; ++j) {
        double acc = 0.0;
        for (std::int64_t p = 0; p < k; ++p)
          acc += av[(a_index * n + i) * k + p] * bv[(b_index * k + p) * m + j];
        out[(bi * n + i) * m + j] = acc;
      }
  }
  Shape out_shape = batch;
  if (a.dim() > 1) out_shape.push_back(n);
  if (b.dim() > 1) out_shape.push_back(m);
  return from_vector(out, out_shape);
}

void require_matches_reference(const Tensor& a, const Tensor& b) {
  INFO("a " << shape_str(a.shape()) << " b " << shape_str(b.shape()) << " "
            << dtype_name(a.dtype()));
  Tensor y = matmul(a, b);
  REQUIRE(y.dtype() == a.dtype());
  REQUIRE(y.is_contiguous());
  const double rtol = a.dtype() == kFloat32 ? 1e-5 : 1e-12;
  require_close(y, reference_matmul(a, b), rtol, rtol);
}

struct ShapePair {
  Shape a, b;
};

const std::vector<ShapePair> kShapeCombos = {
    {{3}, {3}},                 // dot
    {{3}, {3, 4}},              // vector · matrix
    {{2, 3}, {3}},              // matrix · vector
    {{2, 3}, {3, 4}},           // matrix · matrix
    {{5, 2, 3}, {3}},           // batched · vector
    {{3}, {5, 3, 4}},           // vector · batched
    {{5, 2, 3}, {3, 4}},        // batched · shared matrix
    {{2, 3}, {5, 3, 4}},        // shared matrix · batched
    {{5, 2, 3}, {5, 3, 4}},     // same batches
    {{5, 1, 2, 3}, {4, 3, 2}},  // broadcast both ways
    {{1, 2, 3}, {6, 3, 4}},     // size-1 batch broadcast
    {{2, 1, 2, 3}, {1, 5, 3, 4}},
    {{1, 1}, {1, 1}},
};

}  // namespace

TEST_CASE("matmul of a hand-computed 2x3 · 3x2") {
  for (DType dtype : {kFloat32, kFloat64}) {
    Tensor a = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
    Tensor b = tensor({7, 8, 9, 10, 11, 12}, {3, 2}, dtype);
    Tensor y = matmul(a, b);
    REQUIRE(y.shape() == Shape{2, 2});
    require_values(y, {58, 64, 139, 154});
  }
  Tensor dot = matmul(tensor({1, 2, 3}, kFloat64), tensor({4, 5, 6}, kFloat64));
  REQUIRE(dot.dim() == 0);
  REQUIRE(dot.item<double>() == 32);
  require_values(matmul(tensor({1, 2}, kFloat64), tensor({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64)),
                 {9, 12, 15});
  require_values(matmul(tensor({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64), tensor({1, 0, -1}, kFloat64)),
                 {-2, -2});
}

TEST_CASE("matmul of 1-D, 2-D and N-D combinations matches the reference") {
  Generator gen(10);
  for (DType dtype : {kFloat32, kFloat64})
    for (const ShapePair& p : kShapeCombos) {
      Tensor a = randn(p.a, gen, dtype), b = randn(p.b, gen, dtype);
      require_matches_reference(a, b);
      Tensor y = matmul(a, b);
      Shape expected_shape = reference_matmul(a, b).shape();
      REQUIRE(y.shape() == expected_shape);
    }
}

TEST_CASE("matmul result shapes follow torch.matmul") {
  REQUIRE(matmul(ones({3}), ones({3})).shape() == Shape{});
  REQUIRE(matmul(ones({3}), ones({3, 4})).shape() == Shape{4});
  REQUIRE(matmul(ones({2, 3}), ones({3})).shape() == Shape{2});
  REQUIRE(matmul(ones({5, 2, 3}), ones({3})).shape() == Shape{5, 2});
  REQUIRE(matmul(ones({3}), ones({5, 3, 4})).shape() == Shape{5, 4});
  REQUIRE(matmul(ones({7, 1, 2, 3}), ones({4, 3, 5})).shape() == Shape{7, 4, 2, 5});
}

TEST_CASE("matmul of transposed, narrowed, strided and broadcast operands") {
  Generator gen(11);
  for (DType dtype : {kFloat32, kFloat64}) {
    INFO(dtype_name(dtype));
    // Transposed: reaches BLAS with a transpose flag.
    Tensor at = randn({3, 2}, gen, dtype).transpose(0, 1);
    Tensor bt = randn({4, 3}, gen, dtype).transpose(0, 1);
    require_matches_reference(at, bt);
    require_matches_reference(at, randn({3, 4}, gen, dtype));
    // Narrowed columns (unit column stride, row stride 7 or 9) and a narrowed transpose.
    Tensor an = randn({2, 7}, gen, dtype).narrow(1, 2, 3);
    Tensor bn = randn({3, 9}, gen, dtype).narrow(1, 2, 4);
    Tensor bnt = randn({9, 3}, gen, dtype).narrow(0, 1, 4).transpose(0, 1);  // [3, 4], strides [1, 3]
    require_matches_reference(an, bn);
    require_matches_reference(an, bnt);
    require_matches_reference(bnt.transpose(0, 1), an.transpose(0, 1));
    // Neither stride is 1: a copy is needed and must still be right.
    Tensor strided = make_view(randn({4, 6}, gen, dtype), {2, 3}, {12, 2}, 0);
    require_matches_reference(strided, randn({3, 2}, gen, dtype));
    require_matches_reference(randn({2, 2}, gen, dtype), strided);
    // Strided vectors (stride 3), as a and as b.
    Tensor column = randn({4, 3}, gen, dtype).select(1, 1);
    require_matches_reference(column, randn({4, 2}, gen, dtype));
    require_matches_reference(randn({5, 4}, gen, dtype), column);
    require_matches_reference(column, column);
    // Expanded batches (stride 0) and an expanded matrix (row stride 0).
    Tensor shared = randn({1, 2, 3}, gen, dtype).expand({4, 2, 3});
    require_matches_reference(shared, randn({4, 3, 5}, gen, dtype));
    require_matches_reference(randn({4, 5, 2}, gen, dtype), shared);
    Tensor repeated_row = randn({1, 3}, gen, dtype).expand({2, 3});
    require_matches_reference(repeated_row, randn({3, 4}, gen, dtype));
    // Batch dims that cannot fold into rows, and transposed batch matrices.
    Tensor permuted = randn({2, 4, 3}, gen, dtype).permute({1, 0, 2});  // [4, 2, 3]
    require_matches_reference(permuted, randn({3, 5}, gen, dtype));
    require_matches_reference(permuted, randn({4, 3, 5}, gen, dtype));
    Tensor batch_t = randn({4, 5, 3}, gen, dtype).transpose(1, 2);  // [4, 3, 5]
    require_matches_reference(permuted, batch_t);
    require_matches_reference(batch_t.transpose(1, 2), randn({3, 2}, gen, dtype));
  }
}

TEST_CASE("matmul of many small batches (parallel) and of one large product") {
  Generator gen(12);
  // 64 batches of 8x8: one oneTBB task per batch group, BLAS single-threaded.
  require_matches_reference(randn({64, 8, 8}, gen, kFloat64), randn({64, 8, 8}, gen, kFloat64));
  require_matches_reference(randn({64, 8, 8}, gen, kFloat32), randn({1, 8, 5}, gen, kFloat32));
  // Mid-size products: in parallel with 8 batches, one after another with 3.
  require_matches_reference(randn({8, 70, 70}, gen, kFloat64), randn({8, 70, 70}, gen, kFloat64));
  require_matches_reference(randn({3, 70, 70}, gen, kFloat64), randn({3, 70, 70}, gen, kFloat64));
  // Large products: BLAS threads each one.
  require_matches_reference(randn({130, 140}, gen, kFloat64), randn({140, 150}, gen, kFloat64));
  require_matches_reference(randn({2, 130, 140}, gen, kFloat32),
                            randn({2, 140, 150}, gen, kFloat32).transpose(1, 2).contiguous().transpose(1, 2));
}

TEST_CASE("matmul with empty dims") {
  Tensor zero_k = matmul(ones({2, 0}, kFloat64), ones({0, 3}, kFloat64));
  REQUIRE(zero_k.shape() == Shape{2, 3});
  require_values(zero_k, {0, 0, 0, 0, 0, 0});
  REQUIRE(matmul(ones({0}), ones({0})).item<double>() == 0);
  REQUIRE(matmul(ones({0, 3}), ones({3, 4})).shape() == Shape{0, 4});
  REQUIRE(matmul(ones({2, 3}), ones({3, 0})).shape() == Shape{2, 0});
  REQUIRE(matmul(ones({0, 2, 3}), ones({3, 4})).shape() == Shape{0, 2, 4});
  REQUIRE(matmul(ones({3, 2, 3}), ones({0, 1, 3, 4})).shape() == Shape{0, 3, 2, 4});
  Tensor batched_zero_k = matmul(ones({4, 2, 0}), ones({4, 0, 3}));
  REQUIRE(batched_zero_k.shape() == Shape{4, 2, 3});
  REQUIRE(sum(batched_zero_k).item<double>() == 0);

  // Gradients of empty products have the inputs' shapes (and are zero).
  Tensor a = ones({2, 0}, kFloat64).requires_grad_();
  Tensor b = ones({0, 3}, kFloat64).requires_grad_();
  sum(matmul(a, b)).backward();
  REQUIRE(a.grad().shape() == Shape{2, 0});
  REQUIRE(b.grad().shape() == Shape{0, 3});
  Tensor c = ones({0, 3}, kFloat64).requires_grad_();
  Tensor d = ones({3, 4}, kFloat64).requires_grad_();
  sum(matmul(c, d)).backward();
  REQUIRE(c.grad().shape() == Shape{0, 3});
  require_values(d.grad(), std::vector<double>(12, 0.0));
}

TEST_CASE("matmul gradients on several shapes") {
  Generator gen(13);
  auto product = [](const TensorList& in) { return matmul(in[0], in[1]); };
  for (const ShapePair& p : kShapeCombos) {
    INFO("a " << shape_str(p.a) << " b " << shape_str(p.b));
    require_gradients_match(product, {randn(p.a, gen, kFloat64), randn(p.b, gen, kFloat64)});
  }
  // Transposed and narrowed inputs, batched and not.
  require_gradients_match(product, {transposed_randn({2, 3}, gen), transposed_randn({3, 4}, gen)});
  require_gradients_match(product, {transposed_randn({3, 2, 3}, gen), randn({3, 4}, gen, kFloat64)});
  require_gradients_match(product, {randn({2, 3}, gen, kFloat64), transposed_randn({4, 3, 2}, gen)});
  require_gradients_match(product, {randn({2, 4, 3}, gen, kFloat64).permute({1, 0, 2}),
                                    randn({1, 3, 2}, gen, kFloat64)});
  require_gradients_match(product, {randn({3, 6}, gen, kFloat64).narrow(1, 1, 4),
                                    randn({4, 5}, gen, kFloat64).narrow(1, 0, 2)});
  require_gradients_match(product, {randn({4, 3}, gen, kFloat64).select(1, 2),
                                    transposed_randn({2, 4, 3}, gen)});
  // Only one input requiring grad.
  Tensor a = randn({2, 3}, gen, kFloat64).requires_grad_();
  Tensor b = randn({3, 4}, gen, kFloat64);
  sum(matmul(a, b)).backward();
  REQUIRE_FALSE(b.grad().defined());
  require_close(a.grad(), sum(b, {1}).reshape({1, 3}).expand({2, 3}), 1e-12, 1e-12);
}

TEST_CASE("matmul gradient of a float32 linear layer") {
  // x [B, T, d] · W [d, h]: batch rows fold into one GEMM for y and for dW.
  Generator gen(14);
  Tensor x = randn({3, 5, 4}, gen, kFloat32).requires_grad_();
  Tensor w = randn({4, 2}, gen, kFloat32).requires_grad_();
  Tensor dy = randn({3, 5, 2}, gen, kFloat32);
  matmul(x, w).backward(dy);
  Tensor x64 = x.detach().to(kFloat64), w64 = w.detach().to(kFloat64), dy64 = dy.to(kFloat64);
  require_close(w.grad(), sum(reference_matmul(x64.transpose(1, 2), dy64), {0}), 1e-5, 1e-5);
  require_close(x.grad(), reference_matmul(dy64, w64.transpose(0, 1)), 1e-5, 1e-5);
}

TEST_CASE("matmul errors name the op and both shapes") {
  REQUIRE_THROWS_WITH(matmul(ones({2, 3}), ones({4, 5})),
                      Catch::Contains("[matmul]") && Catch::Contains("inner") &&
                          Catch::Contains("[2, 3]") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(matmul(ones({3}), ones({4})), Catch::Contains("[matmul]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(matmul(ones({2, 2, 3}), ones({3, 3, 4})),
                      Catch::Contains("[matmul]") && Catch::Contains("batch") &&
                          Catch::Contains("[2, 2, 3]") && Catch::Contains("[3, 3, 4]"));
  REQUIRE_THROWS_WITH(matmul(ones({2, 3}), ones({3, 2}, kFloat64)),
                      Catch::Contains("[matmul]") && Catch::Contains("float32") &&
                          Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(matmul(scalar_tensor(2.0), ones({3})),
                      Catch::Contains("[matmul]") && Catch::Contains("[]") && Catch::Contains("[3]"));
  REQUIRE_THROWS_WITH(matmul(ones({3}), scalar_tensor(2.0)), Catch::Contains("[matmul]"));
  REQUIRE_THROWS_WITH(matmul(arange(4).reshape({2, 2}), arange(4).reshape({2, 2})),
                      Catch::Contains("[matmul]") && Catch::Contains("int64"));
}

TEST_CASE("linear equals x Wᵀ + b and differentiates by hand") {
  Generator gen(17);
  Tensor x = randn({2, 3, 4}, gen, kFloat64), w = randn({5, 4}, gen, kFloat64), b = randn({5}, gen, kFloat64);
  require_close(linear(x, w, b), matmul(x, w.transpose(0, 1)) + b, 1e-14, 1e-14);
  require_close(linear(x, w), matmul(x, w.transpose(0, 1)), 1e-14, 1e-14);
  require_gradients_match([](const TensorList& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  require_gradients_match([](const TensorList& in) { return linear(in[0], in[1]); },
                          {transposed_randn({4, 3}, gen), transposed_randn({5, 3}, gen)});
  // One input without a gradient, a 1-D input, and an empty batch.
  Tensor wl = w.detach().requires_grad_();
  sum(linear(randn({4}, gen, kFloat64), wl, b)).backward();
  REQUIRE(wl.grad().shape() == Shape{5, 4});
  REQUIRE(linear(zeros({0, 4}, kFloat64), w, b).shape() == Shape{0, 5});
  REQUIRE_THROWS_WITH(linear(x, randn({5, 3}, gen, kFloat64)), Catch::Contains("[linear]") && Catch::Contains("[5, 3]"));
  REQUIRE_THROWS_WITH(linear(x, w, zeros({4}, kFloat64)), Catch::Contains("[linear]") && Catch::Contains("bias"));
  REQUIRE_THROWS_WITH(linear(x, w.to(kFloat32)), Catch::Contains("dtype"));
}

TEST_CASE("blas::gemm rejects leading dimensions below the rows' lengths, naming them") {
  // OpenBLAS itself would print a message and leave C unwritten.
  std::vector<float> a(12, 1.0f), b(12, 1.0f), c(9, 0.0f);
  auto call = [&](bool ta, std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
    blas::gemm<float>(ta, false, 3, 3, 4, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), ldc);
  };
  REQUIRE_NOTHROW(call(false, 4, 3, 3));
  REQUIRE(c[0] == 4.0f);
  REQUIRE_THROWS_WITH(call(false, 3, 3, 3), Catch::Contains("blas::gemm") && Catch::Contains("lda=3"));
  REQUIRE_THROWS_WITH(call(true, 2, 3, 3), Catch::Contains("lda=2") && Catch::Contains("(transposed)"));
  REQUIRE_THROWS_WITH(call(false, 4, 0, 3), Catch::Contains("ldb=0"));
  REQUIRE_THROWS_WITH(call(false, 4, 3, 2), Catch::Contains("ldc=2"));
}

TEST_CASE("blas::gemm split over threads: the product, the same bits on every run at a thread count") {
  // Row blocks (m >= n) and column blocks (m < n), every transpose
  // combination, sizes that leave ragged last blocks; 1 thread is the
  // reference, other thread counts agree to float rounding.
  Generator gen(31);
  const int original = get_num_threads();
  struct Case {
    std::int64_t m, n, k;
  };
  for (const Case size : {Case{701, 300, 257}, Case{65, 900, 301}, Case{512, 384, 520}}) {
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        const Tensor a = randn(ta ? Shape{size.k, size.m} : Shape{size.m, size.k}, gen);
        const Tensor b = randn(tb ? Shape{size.n, size.k} : Shape{size.k, size.n}, gen);
        const Tensor start = randn({size.m, size.n}, gen);
        std::vector<float> reference;
        for (int threads : {1, 2, 3}) {
          set_num_threads(threads);
          Tensor c = start.clone();
          blas::gemm<float>(ta, tb, size.m, size.n, size.k, 0.5f, a.data<float>(), ta ? size.m : size.k,
                            b.data<float>(), tb ? size.k : size.n, 2.0f, c.data<float>(), size.n);
          if (threads == 1) {
            reference = c.to_vector<float>();
            // And it is the product: one entry against a double-precision dot product.
            const std::vector<float> av = a.to_vector<float>(), bv = b.to_vector<float>();
            double expected = 2.0 * start.to_vector<float>()[5 * size.n + 7];
            for (std::int64_t p = 0; p < size.k; ++p)
              expected += 0.5 * av[ta ? p * size.m + 5 : 5 * size.k + p] * bv[tb ? 7 * size.k + p : p * size.n + 7];
            REQUIRE(reference[5 * size.n + 7] == Approx(expected).epsilon(1e-4));
          } else {
            const std::vector<float> result = c.to_vector<float>();
            for (std::size_t i = 0; i < result.size(); ++i)
              if (std::abs(result[i] - reference[i]) > 1e-4f * (1.0f + std::abs(reference[i])))
                FAIL("entry " << i << " at " << threads << " threads: " << result[i] << " vs " << reference[i]);
            Tensor again = start.clone();
            blas::gemm<float>(ta, tb, size.m, size.n, size.k, 0.5f, a.data<float>(), ta ? size.m : size.k,
                              b.data<float>(), tb ? size.k : size.n, 2.0f, again.data<float>(), size.n);
            REQUIRE(again.to_vector<float>() == result);
          }
        }
      }
  }
  set_num_threads(original);
}
