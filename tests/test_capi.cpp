// The C interface (capi/flowgrad_c.h): results equal to the C++ library's,
// memory shared or copied as documented, and every error path returning a
// code and a message instead of throwing or aborting.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../capi/flowgrad_c.h"
#include "test_util.h"

using namespace flowgrad;

namespace {

// The tiny charlm checkpoint of tests/golden (tests/golden/make_tiny_charlm.sh).
const std::string kCheckpoint = std::string(FLOWGRAD_SOURCE_DIR) + "/tests/golden/tiny_charlm.safetensors";

// Frees a handle at the end of a scope.
template <class T, void (*Free)(T*)>
struct Owned {
  T* handle = nullptr;
  ~Owned() { Free(handle); }
  T** out() { return &handle; }
  operator T*() const { return handle; }
};
using OwnedTensor = Owned<flowgrad_tensor, flowgrad_tensor_free>;
using OwnedLM = Owned<flowgrad_char_lm, flowgrad_char_lm_free>;
using OwnedDecoder = Owned<flowgrad_decoder, flowgrad_decoder_free>;
using OwnedStream = Owned<flowgrad_text_stream, flowgrad_text_stream_free>;

std::string error() { return flowgrad_last_error(); }

// A C tensor holding a copy of t (float64 or int64).
OwnedTensor* to_c(const Tensor& t, OwnedTensor& owned) {
  const Tensor c = t.contiguous();
  const flowgrad_dtype dtype = c.dtype() == kFloat64 ? FLOWGRAD_FLOAT64 : c.dtype() == kInt64 ? FLOWGRAD_INT64 : FLOWGRAD_FLOAT32;
  const void* data = c.dtype() == kFloat64 ? static_cast<const void*>(c.data<double>())
                    : c.dtype() == kInt64  ? static_cast<const void*>(c.data<std::int64_t>())
                                           : static_cast<const void*>(c.data<float>());
  REQUIRE(flowgrad_tensor_from_data(dtype, c.shape().data(), static_cast<int>(c.dim()), data, owned.out()) ==
          FLOWGRAD_OK);
  return &owned;
}

std::vector<double> values_of(const flowgrad_tensor* t) {
  std::vector<double> values(static_cast<std::size_t>(flowgrad_tensor_numel(t)));
  REQUIRE(flowgrad_tensor_copy_data(t, values.data(), values.size() * sizeof(double)) == FLOWGRAD_OK);
  return values;
}

}  // namespace

TEST_CASE("C API: tensors copy or alias caller memory; shape queries") {
  std::vector<double> data{1, 2, 3, 4, 5, 6};
  const std::int64_t shape[2] = {2, 3};
  OwnedTensor copied, wrapped;
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 2, data.data(), copied.out()) == FLOWGRAD_OK);
  int releases = 0;
  REQUIRE(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, shape, 2, data.data(), [](void* n) { ++*static_cast<int*>(n); },
                               &releases, wrapped.out()) == FLOWGRAD_OK);
  data[4] = 50;  // seen through the wrapped tensor only
  REQUIRE(values_of(copied) == std::vector<double>{1, 2, 3, 4, 5, 6});
  REQUIRE(values_of(wrapped) == std::vector<double>{1, 2, 3, 4, 50, 6});
  REQUIRE(flowgrad_tensor_ndim(wrapped) == 2);
  REQUIRE(flowgrad_tensor_numel(wrapped) == 6);
  REQUIRE(flowgrad_tensor_size(wrapped, 0) == 2);
  REQUIRE(flowgrad_tensor_size(wrapped, -1) == 3);
  REQUIRE(flowgrad_tensor_size(wrapped, 2) == -1);
  REQUIRE(flowgrad_tensor_size(wrapped, -3) == -1);
  flowgrad_dtype dtype = FLOWGRAD_INT64;
  REQUIRE(flowgrad_tensor_dtype(wrapped, &dtype) == FLOWGRAD_OK);
  REQUIRE(dtype == FLOWGRAD_FLOAT64);
  REQUIRE(releases == 0);
  flowgrad_tensor_free(wrapped.handle);
  wrapped.handle = nullptr;
  REQUIRE(releases == 1);  // once, when its last user is gone

  // A result computed from wrapped memory does not keep it: forward runs without history.
  std::vector<double> q(2 * 4 * 3, 0.5);
  const std::int64_t qshape[4] = {1, 2, 4, 3};
  releases = 0;
  {
    OwnedTensor tq, out;
    REQUIRE(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, qshape, 4, q.data(), [](void* n) { ++*static_cast<int*>(n); },
                                 &releases, tq.out()) == FLOWGRAD_OK);
    REQUIRE(flowgrad_flow_attention_forward(tq, tq, tq, nullptr, out.out()) == FLOWGRAD_OK);
    flowgrad_tensor_free(tq.handle);
    tq.handle = nullptr;
    REQUIRE(releases == 1);
    REQUIRE(flowgrad_tensor_numel(out) == 24);
  }
  // Zero elements need no data; scalars need no shape.
  const std::int64_t empty_shape[2] = {0, 3};
  OwnedTensor empty, scalar;
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_INT64, empty_shape, 2, nullptr, empty.out()) == FLOWGRAD_OK);
  REQUIRE(flowgrad_tensor_numel(empty) == 0);
  const float one = 1.0f;
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT32, nullptr, 0, &one, scalar.out()) == FLOWGRAD_OK);
  REQUIRE(flowgrad_tensor_ndim(scalar) == 0);
  REQUIRE(flowgrad_tensor_numel(scalar) == 1);
}

TEST_CASE("C API: tensor errors are codes with messages, outputs untouched") {
  const std::int64_t shape[2] = {2, 3};
  const double data[6] = {};
  flowgrad_tensor* out = nullptr;
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 2, data, nullptr) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(error() == "flowgrad_tensor_from_data: out is NULL");
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, nullptr, 2, data, &out) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE_THAT(error(), Catch::Contains("shape is NULL with ndim 2"));
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 2, nullptr, &out) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE_THAT(error(), Catch::Contains("data is NULL"));
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, -1, data, &out) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("[shape] ndim must not be negative, got -1"));
  const std::int64_t negative[2] = {2, -3};
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, negative, 2, data, &out) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("dimension 1 is negative in [2, -3]"));
  const std::int64_t huge[3] = {1 << 20, 1 << 20, 1 << 20};
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, huge, 3, data, &out) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("exceeds the maximum tensor size"));
  REQUIRE(flowgrad_tensor_from_data(static_cast<flowgrad_dtype>(7), shape, 2, data, &out) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("[flowgrad_dtype] unknown dtype value 7"));
  alignas(8) unsigned char bytes[64] = {};
  int releases = 0;
  const auto count_release = [](void* n) { ++*static_cast<int*>(n); };
  REQUIRE(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, shape, 2, bytes + 1, count_release, &releases, &out) ==
          FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("not aligned to the 8 bytes of float64"));
  REQUIRE(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, negative, 2, bytes, count_release, &releases, &out) ==
          FLOWGRAD_ERROR);
  REQUIRE(releases == 0);  // a failed wrap leaves the memory the caller's
  REQUIRE(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, shape, 2, nullptr, nullptr, nullptr, &out) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(out == nullptr);

  OwnedTensor t;
  REQUIRE(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 2, data, t.out()) == FLOWGRAD_OK);
  double small[5];
  REQUIRE(flowgrad_tensor_copy_data(t, small, sizeof small) == FLOWGRAD_BUFFER_TOO_SMALL);
  REQUIRE_THAT(error(), Catch::Contains("the tensor [2, 3] needs 48 bytes, the buffer holds 40"));
  REQUIRE(flowgrad_tensor_copy_data(nullptr, small, sizeof small) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_tensor_copy_data(t, nullptr, 48) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_tensor_dtype(t, nullptr) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_tensor_ndim(nullptr) == -1);
  REQUIRE(flowgrad_tensor_numel(nullptr) == -1);
  REQUIRE(flowgrad_tensor_size(nullptr, 0) == -1);
  flowgrad_tensor_free(nullptr);

  REQUIRE(flowgrad_set_num_threads(0) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("flowgrad_set_num_threads"));
  REQUIRE(std::string(flowgrad_status_name(FLOWGRAD_BUFFER_TOO_SMALL)) == "FLOWGRAD_BUFFER_TOO_SMALL");
  REQUIRE(std::string(flowgrad_version()) == version());
  // The last error is per thread.
  std::string other_thread_error;
  std::thread([&] { other_thread_error = flowgrad_last_error(); }).join();
  REQUIRE(other_thread_error.empty());
}

TEST_CASE("C API: Flow-Attention forward and backward equal the C++ op and its autograd") {
  Generator gen(3);
  for (const bool causal : {false, true}) {
    const Tensor q = randn({2, 3, 6, 4}, gen, kFloat64), k = randn({2, 3, 6, 4}, gen, kFloat64),
                 v = randn({2, 3, 6, 5}, gen, kFloat64), g = randn({2, 3, 6, 5}, gen, kFloat64);
    OwnedTensor cq, ck, cv, cg, out, dq, dk, dv;
    to_c(q, cq), to_c(k, ck), to_c(v, cv), to_c(g, cg);
    flowgrad_flow_attention_options options = flowgrad_flow_attention_default_options();
    options.causal = causal;
    options.eps = 1e-5;
    REQUIRE(flowgrad_flow_attention_forward(cq, ck, cv, &options, out.out()) == FLOWGRAD_OK);
    REQUIRE(flowgrad_flow_attention_backward(cq, ck, cv, &options, cg, dq.out(), dk.out(), dv.out()) == FLOWGRAD_OK);

    const FlowAttentionOptions cpp_options = FlowAttentionOptions{}.set_causal(causal).set_eps(1e-5);
    Tensor lq = q.detach().requires_grad_(), lk = k.detach().requires_grad_(), lv = v.detach().requires_grad_();
    const Tensor expected = flow_attention(lq, lk, lv, cpp_options);
    expected.backward(g);
    REQUIRE(values_of(out) == expected.to_vector<double>());
    REQUIRE(values_of(dq) == lq.grad().to_vector<double>());
    REQUIRE(values_of(dk) == lk.grad().to_vector<double>());
    REQUIRE(values_of(dv) == lv.grad().to_vector<double>());
    // The default options are the C++ defaults.
    OwnedTensor plain;
    REQUIRE(flowgrad_flow_attention_forward(cq, ck, cv, nullptr, plain.out()) == FLOWGRAD_OK);
    REQUIRE(values_of(plain) == flow_attention(q, k, v).to_vector<double>());
  }

  const Tensor q = randn({1, 2, 5, 3}, gen, kFloat64), v = randn({1, 2, 4, 3}, gen, kFloat64);
  OwnedTensor cq, cv, c32, out, dq, dk, dv;
  to_c(q, cq), to_c(v, cv), to_c(q.to(kFloat32), c32);
  REQUIRE(flowgrad_flow_attention_forward(cq, cq, cv, nullptr, out.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("flowgrad_flow_attention_forward: [flow_attention]") &&
                            Catch::Contains("[1, 2, 4, 3]"));
  REQUIRE(flowgrad_flow_attention_forward(cq, c32, cq, nullptr, out.out()) == FLOWGRAD_ERROR);
  REQUIRE(flowgrad_flow_attention_forward(cq, nullptr, cq, nullptr, out.out()) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(error() == "flowgrad_flow_attention_forward: keys is NULL");
  REQUIRE(out.handle == nullptr);
  REQUIRE(flowgrad_flow_attention_backward(cq, cq, cq, nullptr, cv, dq.out(), dk.out(), dv.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("grad_out must be float64 [1, 2, 5, 3] like the output, got float64 [1, 2, 4, 3]"));
  REQUIRE(flowgrad_flow_attention_backward(cq, cq, cq, nullptr, cq, dq.out(), nullptr, dv.out()) ==
          FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(error() == "flowgrad_flow_attention_backward: grad_keys is NULL");
  REQUIRE((dq.handle == nullptr && dk.handle == nullptr && dv.handle == nullptr));
}

TEST_CASE("C API: a charlm checkpoint's logits, incremental decoding and text equal the C++ model's") {
  OwnedLM lm;
  REQUIRE(flowgrad_char_lm_load(kCheckpoint.c_str(), lm.out()) == FLOWGRAD_OK);
  const models::CharLM cpp = models::load_char_lm(kCheckpoint);
  const std::int64_t vocab = cpp.vocabulary.size();
  REQUIRE(flowgrad_char_lm_vocab_size(lm) == vocab);
  REQUIRE(flowgrad_char_lm_block_size(lm) == cpp.model->config().block_size);

  const std::string prompt = "First Citizen";
  std::vector<std::int64_t> ids(prompt.size());
  REQUIRE(flowgrad_char_lm_encode(lm, prompt.data(), prompt.size(), ids.data()) == FLOWGRAD_OK);
  REQUIRE(ids == cpp.vocabulary.encode(prompt));
  char byte = 0;
  REQUIRE(flowgrad_char_lm_decode(lm, ids[0], &byte) == FLOWGRAD_OK);
  REQUIRE(byte == 'F');

  // Two sequences in one batch.
  std::vector<std::int64_t> batch = ids;
  batch.insert(batch.end(), ids.rbegin(), ids.rend());
  const auto length = static_cast<std::int64_t>(ids.size());
  OwnedTensor logits;
  REQUIRE(flowgrad_char_lm_logits(lm, batch.data(), 2, length, logits.out()) == FLOWGRAD_OK);
  REQUIRE(flowgrad_tensor_size(logits, 0) == 2);
  REQUIRE(flowgrad_tensor_size(logits, 2) == vocab);
  std::vector<float> all(static_cast<std::size_t>(2 * length * vocab));
  REQUIRE(flowgrad_tensor_copy_data(logits, all.data(), all.size() * sizeof(float)) == FLOWGRAD_OK);
  {
    NoGradGuard no_grad;
    REQUIRE(all == cpp.model->forward(from_vector(batch, {2, length})).to_vector<float>());
  }

  OwnedDecoder decoder;
  REQUIRE(flowgrad_decoder_new(lm, decoder.out()) == FLOWGRAD_OK);
  std::vector<float> step(static_cast<std::size_t>(vocab));
  for (std::int64_t t = 0; t < length; ++t) {
    REQUIRE(flowgrad_decoder_step(decoder, ids[static_cast<std::size_t>(t)], step.data(), step.size()) == FLOWGRAD_OK);
    for (std::int64_t j = 0; j < vocab; ++j)
      REQUIRE(step[static_cast<std::size_t>(j)] ==
              Approx(all[static_cast<std::size_t>(t * vocab + j)]).margin(1e-5));
  }
  REQUIRE(flowgrad_decoder_position(decoder) == length);
  REQUIRE(flowgrad_decoder_reset(decoder) == FLOWGRAD_OK);
  REQUIRE(flowgrad_decoder_position(decoder) == 0);

  // Text: as TokenStream with the same seed, over several re-primings of the block.
  const flowgrad_sampling sampling{.temperature = 0.7, .top_k = 5, .greedy = 0, .seed = 9};
  const std::size_t count = static_cast<std::size_t>(3 * cpp.model->config().block_size);
  std::string text(count, '\0');
  {
    OwnedStream stream;
    REQUIRE(flowgrad_text_stream_new(lm, prompt.data(), prompt.size(), &sampling, stream.out()) == FLOWGRAD_OK);
    REQUIRE(flowgrad_text_stream_read(stream, text.data(), 10) == FLOWGRAD_OK);
    REQUIRE(flowgrad_text_stream_read(stream, text.data() + 10, count - 10) == FLOWGRAD_OK);
  }
  models::TokenStream expected(*cpp.model, ids, {.temperature = 0.7, .top_k = 5, .greedy = false}, Generator(9));
  std::vector<std::int64_t> expected_ids;
  for (std::size_t i = 0; i < count; ++i) expected_ids.push_back(expected.next());
  REQUIRE(text == cpp.vocabulary.decode(expected_ids));

  // Handles keep the model alive: the stream outlives the model's handle.
  OwnedStream orphan;
  REQUIRE(flowgrad_text_stream_new(lm, "F", 1, nullptr, orphan.out()) == FLOWGRAD_OK);
  flowgrad_char_lm_free(lm.handle);
  lm.handle = nullptr;
  char more[4];
  REQUIRE(flowgrad_text_stream_read(orphan, more, sizeof more) == FLOWGRAD_OK);
}

TEST_CASE("C API: language-model errors are codes with messages") {
  OwnedLM lm, none;
  REQUIRE(flowgrad_char_lm_load("/nonexistent/x.safetensors", none.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("flowgrad_char_lm_load: ") && Catch::Contains("/nonexistent/x.safetensors"));
  REQUIRE(none.handle == nullptr);
  REQUIRE(flowgrad_char_lm_load(nullptr, none.out()) == FLOWGRAD_NULL_ARGUMENT);
  // A safetensors file that is not a charlm checkpoint.
  const std::string golden = std::string(FLOWGRAD_SOURCE_DIR) + "/tests/golden/half_precision.safetensors";
  REQUIRE(flowgrad_char_lm_load(golden.c_str(), none.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("half_precision.safetensors"));

  REQUIRE(flowgrad_char_lm_load(kCheckpoint.c_str(), lm.out()) == FLOWGRAD_OK);
  const std::int64_t vocab = flowgrad_char_lm_vocab_size(lm), block = flowgrad_char_lm_block_size(lm);
  std::int64_t ids[4];
  REQUIRE(flowgrad_char_lm_encode(lm, "ab\x01", 3, ids) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::EndsWith("[CharVocabulary::encode] (byte 1) at position 2 is not in the model's vocabulary"));
  REQUIRE(flowgrad_char_lm_encode(lm, nullptr, 3, ids) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_char_lm_encode(lm, "ab", 2, nullptr) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_char_lm_encode(nullptr, "ab", 2, ids) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(error() == "flowgrad_char_lm_encode: lm is NULL");
  char byte;
  REQUIRE(flowgrad_char_lm_decode(lm, vocab, &byte) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("token id " + std::to_string(vocab) + " is outside the vocabulary"));
  REQUIRE(flowgrad_char_lm_vocab_size(nullptr) == -1);
  REQUIRE(flowgrad_char_lm_block_size(nullptr) == -1);

  OwnedTensor logits;
  std::vector<std::int64_t> long_ids(static_cast<std::size_t>(block + 1), 0);
  REQUIRE(flowgrad_char_lm_logits(lm, long_ids.data(), 1, block + 1, logits.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("block_size"));
  // A length beyond the block is refused before the ids are read (the buffer holds block + 1).
  REQUIRE(flowgrad_char_lm_logits(lm, long_ids.data(), 1, std::int64_t{1} << 40, logits.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("length 1099511627776 is more than the model's block_size"));
  REQUIRE(flowgrad_char_lm_logits(lm, long_ids.data(), 0, 3, logits.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("batch and length must be positive, got 0 and 3"));
  long_ids[1] = vocab;
  REQUIRE(flowgrad_char_lm_logits(lm, long_ids.data(), 1, 3, logits.out()) == FLOWGRAD_ERROR);
  REQUIRE(flowgrad_char_lm_logits(lm, nullptr, 1, 3, logits.out()) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(logits.handle == nullptr);

  OwnedDecoder decoder;
  REQUIRE(flowgrad_decoder_new(lm, decoder.out()) == FLOWGRAD_OK);
  std::vector<float> step(static_cast<std::size_t>(vocab));
  REQUIRE(flowgrad_decoder_step(decoder, 0, step.data(), step.size() - 1) == FLOWGRAD_BUFFER_TOO_SMALL);
  REQUIRE(flowgrad_decoder_step(decoder, -1, step.data(), step.size()) == FLOWGRAD_ERROR);
  REQUIRE(flowgrad_decoder_step(decoder, 0, nullptr, step.size()) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_decoder_position(decoder) == 0);  // failed steps consumed nothing
  for (std::int64_t t = 0; t < block; ++t)
    REQUIRE(flowgrad_decoder_step(decoder, 0, step.data(), step.size()) == FLOWGRAD_OK);
  REQUIRE(flowgrad_decoder_step(decoder, 0, step.data(), step.size()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("full"));
  REQUIRE(flowgrad_decoder_position(nullptr) == -1);
  REQUIRE(flowgrad_decoder_reset(nullptr) == FLOWGRAD_NULL_ARGUMENT);

  OwnedStream stream;
  flowgrad_sampling cold{.temperature = 0.0, .top_k = 0, .greedy = 0, .seed = 1};
  REQUIRE(flowgrad_text_stream_new(lm, "F", 1, &cold, stream.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("temperature must be positive"));
  REQUIRE(flowgrad_text_stream_new(lm, "F", 0, nullptr, stream.out()) == FLOWGRAD_ERROR);
  REQUIRE_THAT(error(), Catch::Contains("at least one byte"));
  REQUIRE(flowgrad_text_stream_new(lm, "\x01", 1, nullptr, stream.out()) == FLOWGRAD_ERROR);
  REQUIRE(stream.handle == nullptr);
  REQUIRE(flowgrad_text_stream_new(lm, "F", 1, nullptr, stream.out()) == FLOWGRAD_OK);
  REQUIRE(flowgrad_text_stream_read(stream, nullptr, 3) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_text_stream_read(nullptr, &byte, 1) == FLOWGRAD_NULL_ARGUMENT);
  REQUIRE(flowgrad_text_stream_read(stream, nullptr, 0) == FLOWGRAD_OK);  // nothing asked, nothing written
}
