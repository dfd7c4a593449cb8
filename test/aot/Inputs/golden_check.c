/* Calls moe-compile's generated entries from plain C and compares the
 * result with a golden io.safetensors file.
 *
 *   cc -I<dir of layers.h> -DMOE_LAYER=moe_layer0 -DMOE_LAYER_INDEX=0 \
 *      golden_check.c layers.o -lm -o check && ./check io.safetensors
 *
 * The object was built with --embed-weights, so the only inputs are the
 * hidden states (and, where the file has them, the token ids of a hash
 * layer; a [B, S, d] input is B sequences of S tokens). Prints "layer L:
 * PASS" or the first mismatch. Frees what it allocates, so it also runs
 * under LeakSanitizer. */
#include "layers.h"
#include "safetensors_lite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances (a layer compiled with bf16 expert weights needs looser
 * ones against f32 golden outputs). */
#ifndef MOE_RTOL
#define MOE_RTOL 1e-4f
#endif
#ifndef MOE_ATOL
#define MOE_ATOL 1e-5f
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(a) #a
#define STR(a) STR2(a)

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s io.safetensors\n", argv[0]);
    return 2;
  }
  size_t size = 0;
  unsigned char *file = st_read(argv[1], &size);
  if (!file)
    return 2;

  const char *prefix = "layers." STR(MOE_LAYER_INDEX) ".";
  char name[128];
  st_tensor in, out;
  snprintf(name, sizeof name, "%sinput", prefix);
  int ok = st_find(file, size, name, &in);
  snprintf(name, sizeof name, "%soutput", prefix);
  ok = ok && st_find(file, size, name, &out);
  if (!ok || in.bytes != out.bytes) {
    fprintf(stderr, "missing %sinput/output\n", prefix);
    return 2;
  }
  size_t nx = in.bytes / sizeof(float), ny = out.bytes / sizeof(float);
  /* Copies: the data in the file need not be 4-byte aligned. */
  const unsigned char *xin = in.data, *yref = out.data;
  float *x = malloc(nx * sizeof(float)), *want = malloc(ny * sizeof(float));
  float *y = malloc(ny * sizeof(float));
  memcpy(x, xin, nx * sizeof(float));
  memcpy(want, yref, ny * sizeof(float));

  const CAT(MOE_LAYER, _weights) *w = CAT(MOE_LAYER, _embedded_weights)();
  moe_batch batch = {0};
  batch.num_tokens = (int64_t)(nx / MOE_HIDDEN);
  batch.x = x;
  if (in.rank == 3)
    batch.sequence_length = in.shape[1];
  int64_t *ids = NULL;
  st_tensor idt;
  snprintf(name, sizeof name, "%stoken_ids", prefix);
  if (st_find(file, size, name, &idt)) {
    ids = malloc(idt.bytes);
    memcpy(ids, idt.data, idt.bytes);
    batch.token_ids = ids;
  }
  int32_t status = MOE_LAYER(w, &batch, y);
  int failed = status != MOE_STATUS_OK;
  if (failed)
    printf("layer %d: status %d\n", MOE_LAYER_INDEX, status);
  for (size_t i = 0; i < ny && !failed; ++i) {
    if (!(fabsf(y[i] - want[i]) <= MOE_ATOL + MOE_RTOL * fabsf(want[i]))) {
      printf("layer %d: FAIL at %zu: %g vs %g\n", MOE_LAYER_INDEX, i, y[i],
             want[i]);
      failed = 1;
    }
  }
  free(ids);
  free(file);
  if (failed) {
    free(x), free(want), free(y);
    return 1;
  }
  /* Argument checks: a null batch is an error, not a crash. */
  if (MOE_LAYER(w, NULL, y) != MOE_ERROR_NULL_POINTER) {
    printf("layer %d: a null batch was not rejected\n", MOE_LAYER_INDEX);
    return 1;
  }
  batch.num_tokens = -1;
  if (MOE_LAYER(w, &batch, y) != MOE_ERROR_BAD_SHAPE) {
    printf("layer %d: a negative token count was not rejected\n",
           MOE_LAYER_INDEX);
    return 1;
  }
  printf("layer %d: PASS (%lld tokens)\n", MOE_LAYER_INDEX,
         (long long)(nx / MOE_HIDDEN));
  free(x), free(want), free(y);
  return 0;
}
