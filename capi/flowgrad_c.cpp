// The C interface over the C++ library: handles own shared_ptrs to C++
// objects, and every entry point runs its body through `guarded`, which turns
// exceptions into a status and the thread's last-error message.
#include "flowgrad_c.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "../autograd/grad_mode.h"
#include "../core/parallel.h"
#include "../core/version.h"
#include "../models/char_lm.h"
#include "../ops/flow_attention.h"

namespace fg = flowgrad;

struct flowgrad_tensor {
  fg::Tensor tensor;
};

struct flowgrad_char_lm {
  std::shared_ptr<const fg::models::CharLM> lm;
};

struct flowgrad_decoder {
  std::shared_ptr<const fg::models::CharLM> lm;  // keeps the model alive
  fg::models::IncrementalDecoder decoder;
};

struct flowgrad_text_stream {
  std::shared_ptr<const fg::models::CharLM> lm;  // keeps the model alive
  fg::models::TokenStream stream;
};

namespace {

// Fixed storage: recording an error never allocates, so it cannot fail.
constexpr std::size_t kMaxErrorLength = 4096;
thread_local char last_error[kMaxErrorLength] = "";

void set_last_error(const char* function, const char* message) noexcept {
  std::snprintf(last_error, sizeof last_error, "%s: %s", function, message);  // cut at the buffer's end
}

// A failure this interface detects itself (rather than the library).
struct CallError {
  flowgrad_status status;
  std::string message;
};

template <class Body>
flowgrad_status guarded(const char* function, Body&& body) noexcept {
  try {
    body();
    return FLOWGRAD_OK;
  } catch (const CallError& e) {
    set_last_error(function, e.message.c_str());
    return e.status;
  } catch (const fg::Error& e) {
    set_last_error(function, e.what());
    return FLOWGRAD_ERROR;
  } catch (const std::bad_alloc&) {
    set_last_error(function, "out of memory");
    return FLOWGRAD_OUT_OF_MEMORY;
  } catch (const std::length_error&) {  // a size from the caller beyond what a container holds
    set_last_error(function, "a size is too large");
    return FLOWGRAD_ERROR;
  } catch (const std::exception& e) {
    std::snprintf(last_error, sizeof last_error, "%s: internal error (please report it): %s", function, e.what());
    return FLOWGRAD_INTERNAL_ERROR;
  } catch (...) {
    set_last_error(function, "internal error (unknown exception)");
    return FLOWGRAD_INTERNAL_ERROR;
  }
}

template <class T>
T& require(T* pointer, const char* name) {
  if (!pointer) throw CallError{FLOWGRAD_NULL_ARGUMENT, std::string(name) + " is NULL"};
  return *pointer;
}

// Checks that the output slot is usable before any work is done.
template <class T>
void require_out(T** out, const char* name) {
  if (!out) throw CallError{FLOWGRAD_NULL_ARGUMENT, std::string(name) + " is NULL"};
}

fg::DType to_dtype(flowgrad_dtype dtype) {
  switch (dtype) {
    case FLOWGRAD_FLOAT32: return fg::kFloat32;
    case FLOWGRAD_FLOAT64: return fg::kFloat64;
    case FLOWGRAD_INT64: return fg::kInt64;
    case FLOWGRAD_DTYPE_FORCE_32BIT: break;
  }
  fg::fail("flowgrad_dtype", "unknown dtype value ", static_cast<int>(dtype));
}

fg::Shape to_shape(const std::int64_t* shape, int ndim) {
  if (ndim < 0) fg::fail("shape", "ndim must not be negative, got ", ndim);
  if (ndim > 0 && !shape) throw CallError{FLOWGRAD_NULL_ARGUMENT, "shape is NULL with ndim " + std::to_string(ndim)};
  fg::Shape result(shape, shape + ndim);
  for (int i = 0; i < ndim; ++i)
    if (result[static_cast<std::size_t>(i)] < 0)
      fg::fail("shape", "dimension ", i, " is negative in ", fg::shape_str(result));
  if (!fg::is_valid_tensor_shape(result))
    fg::fail("shape", fg::shape_str(result), " exceeds the maximum tensor size of 2^40 elements");
  return result;
}

// The first byte of a contiguous tensor's elements.
void* bytes_of(const fg::Tensor& tensor) {
  switch (tensor.dtype()) {
    case fg::DType::Float32: return tensor.data<float>();
    case fg::DType::Float64: return tensor.data<double>();
    case fg::DType::Int64: return tensor.data<std::int64_t>();
  }
  fg::fail("flowgrad_tensor", "unknown dtype");
}

flowgrad_tensor* new_tensor(fg::Tensor tensor) { return new flowgrad_tensor{std::move(tensor)}; }

const fg::models::CharLM& char_lm(const flowgrad_char_lm* lm) { return *require(lm, "lm").lm; }

fg::FlowAttentionOptions to_options(const flowgrad_flow_attention_options* options) {
  fg::FlowAttentionOptions result;
  if (options) {
    result.causal = options->causal != 0;
    result.eps = options->eps;
    result.clamp_min = options->clamp_min;
    result.clamp_max = options->clamp_max;
  }
  return result;
}

}  // namespace

extern "C" {

const char* flowgrad_last_error(void) noexcept { return last_error; }

const char* flowgrad_status_name(flowgrad_status status) noexcept {
  switch (status) {
    case FLOWGRAD_OK: return "FLOWGRAD_OK";
    case FLOWGRAD_ERROR: return "FLOWGRAD_ERROR";
    case FLOWGRAD_NULL_ARGUMENT: return "FLOWGRAD_NULL_ARGUMENT";
    case FLOWGRAD_BUFFER_TOO_SMALL: return "FLOWGRAD_BUFFER_TOO_SMALL";
    case FLOWGRAD_OUT_OF_MEMORY: return "FLOWGRAD_OUT_OF_MEMORY";
    case FLOWGRAD_INTERNAL_ERROR: return "FLOWGRAD_INTERNAL_ERROR";
    case FLOWGRAD_STATUS_FORCE_32BIT: break;
  }
  return "unknown status";
}

const char* flowgrad_version(void) noexcept { return fg::version(); }

flowgrad_status flowgrad_set_num_threads(int threads) noexcept {
  return guarded(__func__, [&] { fg::set_num_threads(threads); });
}

// ---- tensors ----

flowgrad_status flowgrad_tensor_from_data(flowgrad_dtype dtype, const int64_t* shape, int ndim, const void* data,
                                          flowgrad_tensor** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    fg::Tensor tensor = fg::empty(to_shape(shape, ndim), to_dtype(dtype));
    const std::size_t bytes = static_cast<std::size_t>(tensor.numel()) * fg::dtype_size(tensor.dtype());
    if (bytes > 0) std::memcpy(bytes_of(tensor), &require(static_cast<const char*>(data), "data"), bytes);
    *out = new_tensor(std::move(tensor));
  });
}

flowgrad_status flowgrad_tensor_wrap(flowgrad_dtype dtype, const int64_t* shape, int ndim, void* data,
                                     void (*release)(void*), void* release_context, flowgrad_tensor** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    const fg::DType type = to_dtype(dtype);
    const fg::Shape dims = to_shape(shape, ndim);
    if (!data && fg::shape_numel(dims) > 0) throw CallError{FLOWGRAD_NULL_ARGUMENT, "data is NULL"};
    if (reinterpret_cast<std::uintptr_t>(data) % fg::dtype_size(type) != 0)
      fg::fail("flowgrad_tensor_wrap", "data is not aligned to the ", fg::dtype_size(type), " bytes of ",
               fg::dtype_name(type));
    // Armed only once the call has succeeded: a failure leaves the memory the caller's.
    auto armed = std::make_shared<bool>(false);
    std::function<void(void*)> on_release;
    if (release)
      on_release = [release, release_context, armed](void*) {
        if (*armed) release(release_context);
      };
    auto handle = std::make_unique<flowgrad_tensor>();
    handle->tensor = fg::from_blob(data, dims, type, std::move(on_release));
    *armed = true;
    *out = handle.release();
  });
}

void flowgrad_tensor_free(flowgrad_tensor* tensor) noexcept { delete tensor; }

int flowgrad_tensor_ndim(const flowgrad_tensor* tensor) noexcept {
  return tensor ? static_cast<int>(tensor->tensor.dim()) : -1;
}

int64_t flowgrad_tensor_numel(const flowgrad_tensor* tensor) noexcept { return tensor ? tensor->tensor.numel() : -1; }

int64_t flowgrad_tensor_size(const flowgrad_tensor* tensor, int dim) noexcept {
  if (!tensor) return -1;
  const std::int64_t ndim = tensor->tensor.dim();
  const std::int64_t index = dim < 0 ? dim + ndim : dim;
  return index >= 0 && index < ndim ? tensor->tensor.shape()[static_cast<std::size_t>(index)] : -1;
}

flowgrad_status flowgrad_tensor_dtype(const flowgrad_tensor* tensor, flowgrad_dtype* out) noexcept {
  return guarded(__func__, [&] {
    flowgrad_dtype& result = require(out, "out");
    switch (require(tensor, "tensor").tensor.dtype()) {
      case fg::DType::Float32: result = FLOWGRAD_FLOAT32; return;
      case fg::DType::Float64: result = FLOWGRAD_FLOAT64; return;
      case fg::DType::Int64: result = FLOWGRAD_INT64; return;
    }
    fg::fail("flowgrad_tensor_dtype", "the tensor's dtype has no C name");
  });
}

flowgrad_status flowgrad_tensor_copy_data(const flowgrad_tensor* tensor, void* out, size_t out_bytes) noexcept {
  return guarded(__func__, [&] {
    const fg::Tensor contiguous = require(tensor, "tensor").tensor.contiguous();
    const std::size_t bytes = static_cast<std::size_t>(contiguous.numel()) * fg::dtype_size(contiguous.dtype());
    if (out_bytes < bytes)
      throw CallError{FLOWGRAD_BUFFER_TOO_SMALL, "the tensor " + fg::shape_str(contiguous.shape()) + " needs " +
                                                     std::to_string(bytes) + " bytes, the buffer holds " +
                                                     std::to_string(out_bytes)};
    if (bytes > 0) std::memcpy(&require(static_cast<char*>(out), "out"), bytes_of(contiguous), bytes);
  });
}

// ---- Flow-Attention ----

flowgrad_flow_attention_options flowgrad_flow_attention_default_options(void) noexcept {
  const fg::FlowAttentionOptions defaults;
  return {0, defaults.eps, defaults.clamp_min, defaults.clamp_max};
}

flowgrad_status flowgrad_flow_attention_forward(const flowgrad_tensor* queries, const flowgrad_tensor* keys,
                                                const flowgrad_tensor* values,
                                                const flowgrad_flow_attention_options* options,
                                                flowgrad_tensor** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    fg::NoGradGuard no_grad;
    *out = new_tensor(fg::flow_attention(require(queries, "queries").tensor, require(keys, "keys").tensor,
                                         require(values, "values").tensor, to_options(options)));
  });
}

flowgrad_status flowgrad_flow_attention_backward(const flowgrad_tensor* queries, const flowgrad_tensor* keys,
                                                 const flowgrad_tensor* values,
                                                 const flowgrad_flow_attention_options* options,
                                                 const flowgrad_tensor* grad_out, flowgrad_tensor** grad_queries,
                                                 flowgrad_tensor** grad_keys, flowgrad_tensor** grad_values) noexcept {
  return guarded(__func__, [&] {
    require_out(grad_queries, "grad_queries");
    require_out(grad_keys, "grad_keys");
    require_out(grad_values, "grad_values");
    // Fresh leaves over the same data: the caller's tensors are not touched.
    // (Grad mode is per thread and never disabled by this interface.)
    fg::Tensor q = require(queries, "queries").tensor.detach().requires_grad_();
    fg::Tensor k = require(keys, "keys").tensor.detach().requires_grad_();
    fg::Tensor v = require(values, "values").tensor.detach().requires_grad_();
    const fg::Tensor& gradient = require(grad_out, "grad_out").tensor;
    const fg::Tensor out = fg::flow_attention(q, k, v, to_options(options));
    if (gradient.shape() != out.shape() || gradient.dtype() != out.dtype())
      fg::fail("flowgrad_flow_attention_backward", "grad_out must be ", fg::dtype_name(out.dtype()), " ",
               fg::shape_str(out.shape()), " like the output, got ", fg::dtype_name(gradient.dtype()), " ",
               fg::shape_str(gradient.shape()));
    out.backward(gradient);
    auto dq = std::make_unique<flowgrad_tensor>(flowgrad_tensor{q.grad()});
    auto dk = std::make_unique<flowgrad_tensor>(flowgrad_tensor{k.grad()});
    auto dv = std::make_unique<flowgrad_tensor>(flowgrad_tensor{v.grad()});
    *grad_queries = dq.release();
    *grad_keys = dk.release();
    *grad_values = dv.release();
  });
}

// ---- character language models ----

flowgrad_status flowgrad_char_lm_load(const char* path, flowgrad_char_lm** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    auto lm = std::make_shared<fg::models::CharLM>(fg::models::load_char_lm(&require(path, "path")));
    *out = new flowgrad_char_lm{std::move(lm)};
  });
}

void flowgrad_char_lm_free(flowgrad_char_lm* lm) noexcept { delete lm; }

int64_t flowgrad_char_lm_vocab_size(const flowgrad_char_lm* lm) noexcept { return lm ? lm->lm->vocabulary.size() : -1; }

int64_t flowgrad_char_lm_block_size(const flowgrad_char_lm* lm) noexcept {
  return lm ? lm->lm->model->config().block_size : -1;
}

flowgrad_status flowgrad_char_lm_encode(const flowgrad_char_lm* lm, const char* text, size_t length, int64_t* ids) noexcept {
  return guarded(__func__, [&] {
    const fg::models::CharLM& model = char_lm(lm);
    if (length == 0) return;
    const std::vector<std::int64_t> encoded = model.vocabulary.encode(std::string(&require(text, "text"), length));
    std::memcpy(&require(ids, "ids"), encoded.data(), encoded.size() * sizeof(std::int64_t));
  });
}

flowgrad_status flowgrad_char_lm_decode(const flowgrad_char_lm* lm, int64_t id, char* out) noexcept {
  return guarded(__func__, [&] {
    const fg::models::CharLM& model = char_lm(lm);
    require(out, "out") = model.vocabulary.decode({id})[0];
  });
}

flowgrad_status flowgrad_char_lm_logits(const flowgrad_char_lm* lm, const int64_t* ids, int64_t batch,
                                        int64_t length, flowgrad_tensor** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    const fg::models::CharLM& model = char_lm(lm);
    if (batch < 1 || length < 1)
      fg::fail("flowgrad_char_lm_logits", "batch and length must be positive, got ", batch, " and ", length);
    // Before the ids are read: a wrong length must not read far past the caller's buffer.
    if (length > model.model->config().block_size)
      fg::fail("flowgrad_char_lm_logits", "length ", length, " is more than the model's block_size=",
               model.model->config().block_size);
    const fg::Shape shape{batch, length};
    if (!fg::is_valid_tensor_shape(shape))
      fg::fail("flowgrad_char_lm_logits", "batch ", batch, " x length ", length, " is too large");
    const std::int64_t* first = &require(ids, "ids");
    const fg::Tensor tokens = fg::from_vector(std::vector<std::int64_t>(first, first + batch * length), shape);
    fg::NoGradGuard no_grad;
    *out = new_tensor(model.model->forward(tokens));
  });
}

flowgrad_status flowgrad_decoder_new(const flowgrad_char_lm* lm, flowgrad_decoder** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    const fg::models::CharLM& model = char_lm(lm);
    *out = new flowgrad_decoder{lm->lm, model.model->start_decoding(1)};
  });
}

void flowgrad_decoder_free(flowgrad_decoder* decoder) noexcept { delete decoder; }

flowgrad_status flowgrad_decoder_step(flowgrad_decoder* decoder, int64_t id, float* logits, size_t capacity) noexcept {
  return guarded(__func__, [&] {
    flowgrad_decoder& d = require(decoder, "decoder");
    const std::int64_t vocab = d.lm->vocabulary.size();
    float& first = require(logits, "logits");
    if (capacity < static_cast<std::size_t>(vocab))
      throw CallError{FLOWGRAD_BUFFER_TOO_SMALL, "the logits need " + std::to_string(vocab) +
                                                     " floats, the buffer holds " + std::to_string(capacity)};
    if (id < 0 || id >= vocab)
      fg::fail("flowgrad_decoder_step", "token id ", id, " is outside the vocabulary of ", vocab);
    const fg::Tensor next = d.decoder.next_logits(id).contiguous();
    std::memcpy(&first, next.data<float>(), static_cast<std::size_t>(vocab) * sizeof(float));
  });
}

flowgrad_status flowgrad_decoder_reset(flowgrad_decoder* decoder) noexcept {
  return guarded(__func__, [&] { require(decoder, "decoder").decoder.reset(); });
}

int64_t flowgrad_decoder_position(const flowgrad_decoder* decoder) noexcept {
  return decoder ? decoder->decoder.position() : -1;
}

flowgrad_status flowgrad_text_stream_new(const flowgrad_char_lm* lm, const char* prompt, size_t prompt_length,
                                         const flowgrad_sampling* sampling, flowgrad_text_stream** out) noexcept {
  return guarded(__func__, [&] {
    require_out(out, "out");
    const fg::models::CharLM& model = char_lm(lm);
    if (prompt_length == 0) fg::fail("flowgrad_text_stream_new", "the prompt must hold at least one byte");
    const std::vector<std::int64_t> ids = model.vocabulary.encode(std::string(&require(prompt, "prompt"), prompt_length));
    fg::models::SamplingOptions options;
    std::uint64_t seed = 0;
    if (sampling) {
      options = {.temperature = sampling->temperature, .top_k = sampling->top_k, .greedy = sampling->greedy != 0};
      seed = sampling->seed;
    }
    *out = new flowgrad_text_stream{lm->lm, fg::models::TokenStream(*model.model, ids, options, fg::Generator(seed))};
  });
}

void flowgrad_text_stream_free(flowgrad_text_stream* stream) noexcept { delete stream; }

flowgrad_status flowgrad_text_stream_read(flowgrad_text_stream* stream, char* out, size_t count) noexcept {
  return guarded(__func__, [&] {
    flowgrad_text_stream& s = require(stream, "stream");
    if (count == 0) return;
    char* text = &require(out, "out");
    // Decoded into a scratch buffer first: on failure `out` is untouched.
    std::string generated;
    generated.reserve(count);
    for (std::size_t i = 0; i < count; ++i) generated += s.lm->vocabulary.decode({s.stream.next()});
    std::memcpy(text, generated.data(), count);
  });
}

}  // extern "C"
