/* flowgrad's C interface: tensors from caller memory, Flow-Attention forward
 * and backward, and character language models loaded from charlm checkpoints
 * (logits, incremental decoding, text generation). For C programs and for
 * other languages' foreign-function interfaces (Rust, Go, Julia, ...).
 *
 * Conventions:
 * - Every object is an opaque handle, created by a function ending in _new,
 *   _load, _from_data or _wrap, released by the matching _free (which
 *   accepts NULL). Handles keep what they use alive: freeing a model while a
 *   decoder of it is still in use is safe.
 * - Functions that can fail return a flowgrad_status; on failure
 *   flowgrad_last_error() describes it ("[op] what, with the shapes"), and
 *   outputs are left untouched. No C++ exception ever crosses this interface.
 * - A handle may be used by one thread at a time; different handles may be
 *   used from different threads. The last error is per thread.
 * - Sizes are int64_t; shapes are arrays of ndim int64_t, row-major.
 * C99 or later (stdint.h). */
#ifndef FLOWGRAD_C_H
#define FLOWGRAD_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* Seen from C++, nothing here throws. */
#define FLOWGRAD_NOEXCEPT noexcept
extern "C" {
#else
#define FLOWGRAD_NOEXCEPT
#endif

typedef enum flowgrad_status {
  FLOWGRAD_OK = 0,
  FLOWGRAD_ERROR = 1,            /* refused: bad shapes or values, unreadable or malformed file, ... */
  FLOWGRAD_NULL_ARGUMENT = 2,    /* a required pointer was NULL */
  FLOWGRAD_BUFFER_TOO_SMALL = 3, /* a caller's output buffer cannot hold the result */
  FLOWGRAD_OUT_OF_MEMORY = 4,
  FLOWGRAD_INTERNAL_ERROR = 5, /* anything else: a defect, please report it */
  FLOWGRAD_STATUS_FORCE_32BIT = 0x7FFFFFFF /* keeps the enum's size fixed; never returned */
} flowgrad_status;

/* The message of the last failed call in this thread ("" when none failed). */
const char* flowgrad_last_error(void) FLOWGRAD_NOEXCEPT;
/* A status's name, e.g. "FLOWGRAD_BUFFER_TOO_SMALL". */
const char* flowgrad_status_name(flowgrad_status status) FLOWGRAD_NOEXCEPT;
/* "major.minor.patch" of the library linked at run time. */
const char* flowgrad_version(void) FLOWGRAD_NOEXCEPT;
/* The one thread count of oneTBB and OpenBLAS, 1 ... 1024. */
flowgrad_status flowgrad_set_num_threads(int threads) FLOWGRAD_NOEXCEPT;

/* ---- tensors ---- */

typedef enum flowgrad_dtype {
  FLOWGRAD_FLOAT32 = 0,
  FLOWGRAD_FLOAT64 = 1,
  FLOWGRAD_INT64 = 2,
  FLOWGRAD_DTYPE_FORCE_32BIT = 0x7FFFFFFF /* keeps the enum's size fixed; not a dtype */
} flowgrad_dtype;

typedef struct flowgrad_tensor flowgrad_tensor;

/* A tensor holding a copy of `data` (numel elements of dtype, row-major);
 * data may be NULL only when the shape has no elements. */
flowgrad_status flowgrad_tensor_from_data(flowgrad_dtype dtype, const int64_t* shape, int ndim, const void* data,
                                          flowgrad_tensor** out) FLOWGRAD_NOEXCEPT;
/* A tensor that uses `data` in place, without a copy: writes through either
 * side are seen by the other. `release` (may be NULL) is called once with
 * `release_context` when the last tensor using the memory is freed, and
 * never when this call fails (the memory stays the caller's). data must be
 * aligned for dtype. */
flowgrad_status flowgrad_tensor_wrap(flowgrad_dtype dtype, const int64_t* shape, int ndim, void* data,
                                     void (*release)(void* release_context), void* release_context,
                                     flowgrad_tensor** out) FLOWGRAD_NOEXCEPT;
void flowgrad_tensor_free(flowgrad_tensor* tensor) FLOWGRAD_NOEXCEPT;

/* Shape queries; they fail only on NULL (returning -1). */
int flowgrad_tensor_ndim(const flowgrad_tensor* tensor) FLOWGRAD_NOEXCEPT;
int64_t flowgrad_tensor_numel(const flowgrad_tensor* tensor) FLOWGRAD_NOEXCEPT;
/* The size of dimension `dim` (negative counts from the end); -1 when out of range. */
int64_t flowgrad_tensor_size(const flowgrad_tensor* tensor, int dim) FLOWGRAD_NOEXCEPT;
flowgrad_status flowgrad_tensor_dtype(const flowgrad_tensor* tensor, flowgrad_dtype* out) FLOWGRAD_NOEXCEPT;
/* Copies the elements, row-major, into `out` of `out_bytes` bytes. */
flowgrad_status flowgrad_tensor_copy_data(const flowgrad_tensor* tensor, void* out, size_t out_bytes) FLOWGRAD_NOEXCEPT;

/* ---- Flow-Attention ---- */

typedef struct flowgrad_flow_attention_options {
  int causal;       /* nonzero: position i sees keys j <= i (needs L == S) */
  double eps;       /* added inside every flow dot product; 1e-6 in the paper */
  double clamp_min; /* bounds of the conserved source flow; -1 and 1 in the paper */
  double clamp_max;
} flowgrad_flow_attention_options;

/* The paper's values (non-causal). */
flowgrad_flow_attention_options flowgrad_flow_attention_default_options(void) FLOWGRAD_NOEXCEPT;

/* queries [B, H, L, D], keys [B, H, S, D], values [B, H, S, M], all float32 or
 * all float64 -> out [B, H, L, M]. options may be NULL (the defaults). */
flowgrad_status flowgrad_flow_attention_forward(const flowgrad_tensor* queries, const flowgrad_tensor* keys,
                                                const flowgrad_tensor* values,
                                                const flowgrad_flow_attention_options* options, flowgrad_tensor** out) FLOWGRAD_NOEXCEPT;
/* The gradients of sum(forward(...) * grad_out) with respect to the three
 * inputs (the hand-derived backward), grad_out [B, H, L, M]. */
flowgrad_status flowgrad_flow_attention_backward(const flowgrad_tensor* queries, const flowgrad_tensor* keys,
                                                 const flowgrad_tensor* values,
                                                 const flowgrad_flow_attention_options* options,
                                                 const flowgrad_tensor* grad_out, flowgrad_tensor** grad_queries,
                                                 flowgrad_tensor** grad_keys, flowgrad_tensor** grad_values) FLOWGRAD_NOEXCEPT;

/* ---- character language models (charlm checkpoints) ---- */

typedef struct flowgrad_char_lm flowgrad_char_lm;

/* Loads the model and its vocabulary from a checkpoint written by charlm train. */
flowgrad_status flowgrad_char_lm_load(const char* path, flowgrad_char_lm** out) FLOWGRAD_NOEXCEPT;
void flowgrad_char_lm_free(flowgrad_char_lm* lm) FLOWGRAD_NOEXCEPT;

int64_t flowgrad_char_lm_vocab_size(const flowgrad_char_lm* lm) FLOWGRAD_NOEXCEPT; /* -1 on NULL */
int64_t flowgrad_char_lm_block_size(const flowgrad_char_lm* lm) FLOWGRAD_NOEXCEPT; /* longest context; -1 on NULL */
/* Token ids of `length` bytes of text, written to ids[0 .. length). Fails
 * naming the first byte that is not in the vocabulary. */
flowgrad_status flowgrad_char_lm_encode(const flowgrad_char_lm* lm, const char* text, size_t length, int64_t* ids) FLOWGRAD_NOEXCEPT;
/* The byte of a token id. */
flowgrad_status flowgrad_char_lm_decode(const flowgrad_char_lm* lm, int64_t id, char* out) FLOWGRAD_NOEXCEPT;

/* Logits float32 [batch, length, vocab_size] of token ids [batch, length]
 * (row-major), length <= block_size. */
flowgrad_status flowgrad_char_lm_logits(const flowgrad_char_lm* lm, const int64_t* ids, int64_t batch,
                                        int64_t length, flowgrad_tensor** out) FLOWGRAD_NOEXCEPT;

/* Incremental decoding: each step feeds one token and gives the logits of
 * the next one, equal to that row of flowgrad_char_lm_logits on the whole
 * prefix, at a cost that does not grow with the position. */
typedef struct flowgrad_decoder flowgrad_decoder;
flowgrad_status flowgrad_decoder_new(const flowgrad_char_lm* lm, flowgrad_decoder** out) FLOWGRAD_NOEXCEPT;
void flowgrad_decoder_free(flowgrad_decoder* decoder) FLOWGRAD_NOEXCEPT;
/* Feeds `id`; writes vocab_size float logits to `logits` (capacity in
 * floats). Fails once block_size tokens have been fed; reset to start over.
 * Bad arguments leave the decoder as it was; after any other failure, reset
 * it before the next step. */
flowgrad_status flowgrad_decoder_step(flowgrad_decoder* decoder, int64_t id, float* logits, size_t capacity) FLOWGRAD_NOEXCEPT;
flowgrad_status flowgrad_decoder_reset(flowgrad_decoder* decoder) FLOWGRAD_NOEXCEPT;
int64_t flowgrad_decoder_position(const flowgrad_decoder* decoder) FLOWGRAD_NOEXCEPT; /* tokens fed; -1 on NULL */

/* Text generation without a length limit: when the context fills block_size,
 * the model goes on from the last half block (as charlm sample does). */
typedef struct flowgrad_sampling {
  double temperature; /* > 0; logits are divided by it */
  int64_t top_k;      /* keep the k most likely bytes; 0 = all */
  int greedy;         /* nonzero: always the most likely byte (ignores the rest) */
  uint64_t seed;      /* the same seed gives the same text */
} flowgrad_sampling;

typedef struct flowgrad_text_stream flowgrad_text_stream;
/* A stream of the bytes that follow `prompt` (at least one byte). sampling
 * may be NULL: temperature 1, all bytes, seed 0. */
flowgrad_status flowgrad_text_stream_new(const flowgrad_char_lm* lm, const char* prompt, size_t prompt_length,
                                         const flowgrad_sampling* sampling, flowgrad_text_stream** out) FLOWGRAD_NOEXCEPT;
void flowgrad_text_stream_free(flowgrad_text_stream* stream) FLOWGRAD_NOEXCEPT;
/* Writes the next `count` generated bytes to `out` (no terminating NUL).
 * On failure `out` is untouched, and the bytes generated before the failure
 * are skipped: the stream goes on after them. */
flowgrad_status flowgrad_text_stream_read(flowgrad_text_stream* stream, char* out, size_t count) FLOWGRAD_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* FLOWGRAD_C_H */
