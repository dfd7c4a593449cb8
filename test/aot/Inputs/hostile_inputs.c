/* Feeds a compiled layer the batches a careless or hostile caller can
 * build, for the AddressSanitizer run of the AOT object (asan.test):
 * empty, large and odd token counts; NaN, +-Inf and huge token values;
 * token ids anywhere in int64; request tables that are well formed,
 * unsorted, negative or past the batch; sequence lengths that do and do
 * not divide T.
 *
 *   cc -fsanitize=address -I<dir of layers.h> -DMOE_LAYER=moe_layer0 \
 *      -DMOE_HIDDEN=64 hostile_inputs.c layers.o -o hostile && ./hostile
 *
 * -DMOE_HASH for a hash layer (no router logits, so no NaN status bit);
 * -DMOE_SEQUENCES for a layer with capacity per sequence (the others
 * ignore sequence_length); -DMOE_REQUESTS for a layer with capacity per
 * request (it needs group_offsets: batches without a table get one
 * request).
 *
 * Every buffer is its own malloc block of exactly the size the call may
 * touch, so ASan's redzones sit right at its ends: any read or write the
 * compiled code makes past them is reported. The program also checks the
 * documented statuses (T = 0 is OK and touches nothing, NaN tokens set
 * MOE_STATUS_NAN_LOGITS, a bad shape is MOE_ERROR_BAD_SHAPE, no
 * well-formed call fails) and that finite inputs give finite outputs where
 * the routing is well defined. Prints "hostile: PASS (N calls)". */
#include "layers.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

static uint64_t state = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}
static float uniform(void) { return (float)(next() >> 40) / (float)(1 << 24); }

static const CAT(MOE_LAYER, _weights) * weights;
static int calls, failures;

static void fail(const char *what, int64_t t, int32_t status) {
  printf("hostile: FAIL: %s (T = %lld, status %d)\n", what, (long long)t,
         status);
  ++failures;
}

enum Values { FINITE, NAN_TOKENS, INF_TOKENS, HUGE_TOKENS, MIXED };

/* Runs one batch of `t` tokens whose values are of kind `values`; the
 * batch's other fields come from `shape`. Returns the status. */
static int32_t run(int64_t t, enum Values values, const moe_batch *shape) {
  size_t n = (size_t)t * MOE_HIDDEN;
  float *x = t ? malloc(n * sizeof(float)) : NULL;
  float *y = t ? malloc(n * sizeof(float)) : NULL;
  int64_t *ids = t ? malloc((size_t)t * sizeof(int64_t)) : NULL;
  for (size_t i = 0; i < n; ++i) {
    float v = 2.0f * uniform() - 1.0f;
    if (values == NAN_TOKENS || (values == MIXED && next() % 7 == 0))
      v = NAN;
    else if (values == INF_TOKENS || (values == MIXED && next() % 11 == 0))
      v = next() & 1 ? INFINITY : -INFINITY;
    else if (values == HUGE_TOKENS)
      v *= 3e38f;
    x[i] = v;
  }
  static const int64_t odd[] = {INT64_MIN, INT64_MAX, -1, 0, 1, 999, 1000,
                                1 << 30};
  for (int64_t i = 0; i < t; ++i)
    ids[i] = next() % 3 ? (int64_t)(next() % 1000)
                        : odd[next() % (sizeof odd / sizeof *odd)];
  moe_batch batch = *shape;
  batch.num_tokens = t;
  batch.x = x;
  batch.token_ids = ids;
  int32_t *one = NULL;
#ifdef MOE_REQUESTS
  if (!batch.group_offsets) {
    one = malloc(2 * sizeof(int32_t));
    one[0] = 0, one[1] = (int32_t)t;
    batch.group_offsets = one;
    batch.num_groups = 1;
  }
#endif
  int32_t status = MOE_LAYER(weights, &batch, y);
  ++calls;
  free(one);
  if (status >= 0 && values == FINITE && batch.num_groups <= 1 &&
      batch.sequence_length == 0)
    for (size_t i = 0; i < n; ++i)
      if (!isfinite(y[i])) {
        fail("a finite batch gave a non-finite output", t, status);
        break;
      }
  free(x), free(y), free(ids);
  return status;
}

int main(void) {
  weights = CAT(MOE_LAYER, _embedded_weights)();
  moe_batch plain = {0};

  /* T = 0: OK, and x and y may be null (a layer with capacity per request
   * still needs its table: one empty request). */
  moe_batch empty = {0};
#ifdef MOE_REQUESTS
  static const int32_t noTokens[2] = {0, 0};
  empty.group_offsets = noTokens;
  empty.num_groups = 1;
#endif
  int32_t status = MOE_LAYER(weights, &empty, NULL);
  ++calls;
  if (status != MOE_STATUS_OK)
    fail("an empty batch", 0, status);

  /* Token counts around the kernels' block sizes, and a large batch. */
  static const int64_t counts[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33,
                                   63, 64, 65, 127, 200, 511, 1000, 4099};
  for (size_t c = 0; c < sizeof counts / sizeof *counts; ++c) {
    status = run(counts[c], FINITE, &plain);
    if (status < 0)
      fail("a well-formed batch", counts[c], status);
  }

  /* Non-finite and huge token values. */
  for (int64_t t = 1; t <= 40; t += 13) {
    status = run(t, NAN_TOKENS, &plain);
#ifdef MOE_HASH
    if (status < 0)
      fail("NaN tokens", t, status);
#else
    if (status < 0 || !(status & MOE_STATUS_NAN_LOGITS))
      fail("NaN tokens did not set MOE_STATUS_NAN_LOGITS", t, status);
#endif
    for (int v = INF_TOKENS; v <= MIXED; ++v)
      if ((status = run(t, (enum Values)v, &plain)) < 0)
        fail("non-finite or huge tokens", t, status);
  }

  /* Sequences: lengths that divide T run, the others are bad shapes where
   * the layer counts capacity per sequence. */
  for (int64_t len = 1; len <= 9; ++len) {
    moe_batch seq = {0};
    seq.sequence_length = len;
    status = run(36, FINITE, &seq);
#ifdef MOE_SEQUENCES
    if (36 % len == 0 ? status < 0 : status != MOE_ERROR_BAD_SHAPE)
#else
    if (status < 0)
#endif
      fail("a sequence length", 36, status);
  }

  /* Request tables: random well-formed ones, then garbage (unsorted,
   * negative, past the batch). Each table is its own exact allocation. */
  for (int round = 0; round < 60; ++round) {
    int64_t t = 1 + (int64_t)(next() % 70);
    int64_t groups = 1 + (int64_t)(next() % 6);
    int32_t *offsets = malloc((size_t)(groups + 1) * sizeof(int32_t));
    int wellFormed = round < 30;
    offsets[0] = 0;
    for (int64_t g = 1; g < groups; ++g)
      offsets[g] = wellFormed ? (int32_t)(next() % (uint64_t)(t + 1))
                              : (int32_t)next();
    offsets[groups] = wellFormed ? (int32_t)t : (int32_t)next();
    if (wellFormed)
      for (int64_t g = 1; g < groups; ++g) /* sort the inner boundaries */
        for (int64_t h = g + 1; h < groups; ++h)
          if (offsets[h] < offsets[g]) {
            int32_t tmp = offsets[g];
            offsets[g] = offsets[h];
            offsets[h] = tmp;
          }
    moe_batch requests = {0};
    requests.group_offsets = offsets;
    requests.num_groups = groups;
    status = run(t, round % 3 ? FINITE : MIXED, &requests);
    if (wellFormed && status < 0)
      fail("a well-formed request table", t, status);
    free(offsets);
  }
  moe_batch noGroups = {0};
  int32_t none = 0;
  noGroups.group_offsets = &none;
  noGroups.num_groups = 0;
  if ((status = run(8, FINITE, &noGroups)) != MOE_ERROR_BAD_SHAPE &&
      status < 0)
    fail("zero request groups", 8, status);

  /* A negative token count is a bad shape and reads nothing. */
  moe_batch negative = empty;
  negative.num_tokens = -5;
  status = MOE_LAYER(weights, &negative, NULL);
  ++calls;
  if (status != MOE_ERROR_BAD_SHAPE)
    fail("a negative token count", -5, status);

  if (failures)
    return 1;
  printf("hostile: PASS (%d calls)\n", calls);
  return 0;
}
