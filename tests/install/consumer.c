/* A C program using flowgrad through its C interface only: built with a C
 * compiler against the installed library (scripts/check-install, through
 * pkg-config) and in the test suite. Usage: consumer_c CHECKPOINT (a charlm
 * checkpoint). Prints what it checked; exits 1 at the first failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <flowgrad/flowgrad_c.h>

static int failures = 0;

#define CHECK(condition)                                                                   \
  do {                                                                                     \
    if (!(condition)) {                                                                    \
      fprintf(stderr, "consumer_c: check failed at line %d: %s (last error: %s)\n", __LINE__, \
              #condition, flowgrad_last_error());                                          \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)

static int released = 0;
static void count_release(void* context) { released += *(int*)context; }

/* Flow-Attention on caller memory: forward, backward, and a finite
 * difference of sum(out * g) along one query element. */
static void check_flow_attention(void) {
  enum { B = 1, H = 2, L = 5, D = 3 };
  const int64_t shape[4] = {B, H, L, D};
  double q[B * H * L * D], k[B * H * L * D], v[B * H * L * D], g[B * H * L * D], out[B * H * L * D];
  for (int i = 0; i < B * H * L * D; ++i) {
    q[i] = sin(0.7 * i);
    k[i] = cos(0.3 * i);
    v[i] = sin(1.1 * i + 0.5);
    g[i] = cos(0.9 * i);
  }
  int weight = 1;
  flowgrad_tensor *tq, *tk, *tv, *tg, *result, *dq, *dk, *dv;
  CHECK(flowgrad_tensor_wrap(FLOWGRAD_FLOAT64, shape, 4, q, count_release, &weight, &tq) == FLOWGRAD_OK);
  CHECK(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 4, k, &tk) == FLOWGRAD_OK);
  CHECK(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 4, v, &tv) == FLOWGRAD_OK);
  CHECK(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, shape, 4, g, &tg) == FLOWGRAD_OK);
  flowgrad_flow_attention_options options = flowgrad_flow_attention_default_options();
  options.causal = 1;
  CHECK(flowgrad_flow_attention_forward(tq, tk, tv, &options, &result) == FLOWGRAD_OK);
  CHECK(flowgrad_tensor_ndim(result) == 4 && flowgrad_tensor_size(result, -1) == D);
  CHECK(flowgrad_flow_attention_backward(tq, tk, tv, &options, tg, &dq, &dk, &dv) == FLOWGRAD_OK);
  double grad_q[B * H * L * D];
  CHECK(flowgrad_tensor_copy_data(dq, grad_q, sizeof grad_q) == FLOWGRAD_OK);

  /* Central difference through the wrapped memory: q is used in place. */
  const int element = 7;
  const double h = 1e-6, saved = q[element];
  double loss[2];
  for (int side = 0; side < 2; ++side) {
    flowgrad_tensor* moved;
    q[element] = saved + (side ? -h : h);
    CHECK(flowgrad_flow_attention_forward(tq, tk, tv, &options, &moved) == FLOWGRAD_OK);
    CHECK(flowgrad_tensor_copy_data(moved, out, sizeof out) == FLOWGRAD_OK);
    loss[side] = 0;
    for (int i = 0; i < B * H * L * D; ++i) loss[side] += out[i] * g[i];
    flowgrad_tensor_free(moved);
  }
  q[element] = saved;
  const double numeric = (loss[0] - loss[1]) / (2 * h);
  printf("Flow-Attention (causal, float64): dL/dq[%d] = %.9f, finite difference %.9f\n", element, grad_q[element],
         numeric);
  CHECK(fabs(numeric - grad_q[element]) < 1e-6 * (1 + fabs(numeric)));

  /* Errors come back as codes with a message. */
  flowgrad_tensor* none = NULL;
  CHECK(flowgrad_flow_attention_forward(tq, tk, NULL, NULL, &none) == FLOWGRAD_NULL_ARGUMENT && none == NULL);
  CHECK(flowgrad_flow_attention_forward(tq, tk, tq, NULL, NULL) == FLOWGRAD_NULL_ARGUMENT);
  const int64_t other_shape[4] = {B, H, L + 1, D};
  flowgrad_tensor* wrong;
  CHECK(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, other_shape, 4, NULL, &wrong) == FLOWGRAD_NULL_ARGUMENT);
  double longer[B * H * (L + 1) * D];
  memset(longer, 0, sizeof longer);
  CHECK(flowgrad_tensor_from_data(FLOWGRAD_FLOAT64, other_shape, 4, longer, &wrong) == FLOWGRAD_OK);
  CHECK(flowgrad_flow_attention_forward(tq, tk, wrong, &options, &none) == FLOWGRAD_ERROR);
  printf("refused as expected: %s\n", flowgrad_last_error());
  CHECK(strstr(flowgrad_last_error(), "[1, 2, 6, 3]") != NULL);
  CHECK(flowgrad_tensor_copy_data(dq, grad_q, 8) == FLOWGRAD_BUFFER_TOO_SMALL);

  flowgrad_tensor_free(wrong);
  flowgrad_tensor_free(tk);
  flowgrad_tensor_free(tv);
  flowgrad_tensor_free(tg);
  flowgrad_tensor_free(result);
  flowgrad_tensor_free(dq);
  flowgrad_tensor_free(dk);
  flowgrad_tensor_free(dv);
  CHECK(released == 0);
  flowgrad_tensor_free(tq); /* the last user of q's memory */
  CHECK(released == 1);
}

/* The language model: logits of a prompt, the same logits step by step, and
 * text that depends only on the seed. */
static void check_char_lm(const char* path) {
  flowgrad_char_lm* lm;
  CHECK(flowgrad_char_lm_load(path, &lm) == FLOWGRAD_OK);
  const int64_t vocab = flowgrad_char_lm_vocab_size(lm);
  printf("loaded %s: vocabulary of %lld bytes, block of %lld\n", path, (long long)vocab,
         (long long)flowgrad_char_lm_block_size(lm));

  const char prompt[] = "the ";
  const size_t length = strlen(prompt);
  int64_t ids[8];
  CHECK(flowgrad_char_lm_encode(lm, prompt, length, ids) == FLOWGRAD_OK);
  flowgrad_tensor* logits;
  CHECK(flowgrad_char_lm_logits(lm, ids, 1, (int64_t)length, &logits) == FLOWGRAD_OK);
  CHECK(flowgrad_tensor_numel(logits) == (int64_t)length * vocab);
  float* all = malloc(sizeof(float) * (size_t)(length * vocab));
  float* step = malloc(sizeof(float) * (size_t)vocab);
  CHECK(all && step);
  CHECK(flowgrad_tensor_copy_data(logits, all, sizeof(float) * (size_t)(length * vocab)) == FLOWGRAD_OK);

  flowgrad_decoder* decoder;
  CHECK(flowgrad_decoder_new(lm, &decoder) == FLOWGRAD_OK);
  float largest_difference = 0;
  for (size_t t = 0; t < length; ++t) {
    CHECK(flowgrad_decoder_step(decoder, ids[t], step, (size_t)vocab) == FLOWGRAD_OK);
    for (int64_t j = 0; j < vocab; ++j) {
      const float difference = fabsf(step[j] - all[t * (size_t)vocab + (size_t)j]);
      if (difference > largest_difference) largest_difference = difference;
    }
  }
  printf("incremental logits match the full forward within %g\n", largest_difference);
  CHECK(largest_difference < 1e-4f);
  CHECK(flowgrad_decoder_position(decoder) == (int64_t)length);
  CHECK(flowgrad_decoder_step(decoder, vocab, step, (size_t)vocab) == FLOWGRAD_ERROR);
  CHECK(flowgrad_decoder_step(decoder, 0, step, 1) == FLOWGRAD_BUFFER_TOO_SMALL);

  /* More text than one block holds, twice from the same seed. */
  flowgrad_sampling sampling = {0.8, 0, 0, 42};
  char text[2][301];
  for (int run = 0; run < 2; ++run) {
    flowgrad_text_stream* stream;
    CHECK(flowgrad_text_stream_new(lm, prompt, length, &sampling, &stream) == FLOWGRAD_OK);
    CHECK(flowgrad_text_stream_read(stream, text[run], 200) == FLOWGRAD_OK);
    CHECK(flowgrad_text_stream_read(stream, text[run] + 200, 100) == FLOWGRAD_OK);
    text[run][300] = '\0';
    flowgrad_text_stream_free(stream);
  }
  printf("generated: %.60s...\n", text[0]);
  CHECK(strcmp(text[0], text[1]) == 0);

  flowgrad_char_lm* missing = NULL;
  CHECK(flowgrad_char_lm_load("/nonexistent/model.safetensors", &missing) == FLOWGRAD_ERROR && missing == NULL);
  CHECK(strstr(flowgrad_last_error(), "/nonexistent/model.safetensors") != NULL);
  printf("refused as expected: %s\n", flowgrad_last_error());

  flowgrad_decoder_free(decoder);
  flowgrad_tensor_free(logits);
  flowgrad_char_lm_free(lm);
  free(all);
  free(step);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CHARLM_CHECKPOINT\n", argv[0]);
    return 2;
  }
  printf("flowgrad %s through its C interface\n", flowgrad_version());
  CHECK(flowgrad_set_num_threads(2) == FLOWGRAD_OK);
  check_flow_attention();
  check_char_lm(argv[1]);
  printf("consumer_c: all checks passed\n");
  return failures;
}
