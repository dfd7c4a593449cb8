/* Calls a layer that moe-compile built from a .mlir file through its C
 * interface (memref descriptors) and compares it with the same layer
 * imported from the Hugging Face checkpoint (plain C entry, embedded
 * weights). Prints "same: PASS" or the first difference. */
#include "layer.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static moe_memref_float_2d matrix(const float *data, int64_t rows,
                                  int64_t cols) {
  moe_memref_float_2d m = {(float *)data, (float *)data, 0, {rows, cols},
                           {cols, 1}};
  return m;
}

static moe_memref_float_3d stack(const float *data, int64_t n, int64_t rows,
                                 int64_t cols) {
  moe_memref_float_3d m = {(float *)data, (float *)data, 0, {n, rows, cols},
                           {rows * cols, cols, 1}};
  return m;
}

int main(void) {
  enum { T = 37, D = 64 };
  static float x[T * D], y[T * D];
  for (int i = 0; i < T * D; ++i)
    x[i] = (float)sin(0.37 * i) * 1.5f;

  const m_layer0_weights *w = m_layer0_embedded_weights();
  moe_batch batch = {0};
  batch.num_tokens = T;
  batch.x = x;
  if (m_layer0(w, &batch, y) != MOE_STATUS_OK) {
    printf("model entry failed\n");
    return 1;
  }

  moe_memref_float_2d input = matrix(x, T, D), router = matrix(w->gate, 8, D);
  moe_memref_float_3d w1 = stack(w->w1, 8, 192, D), w2 = stack(w->w2, 8, D, 96);
  moe_memref_float_2d result;
  _mlir_ciface_mixtral_t1(&result, &input, &router, &w1, &w2);
  if (result.sizes[0] != T || result.sizes[1] != D) {
    printf("result is %lldx%lld\n", (long long)result.sizes[0],
           (long long)result.sizes[1]);
    return 1;
  }
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < D; ++c) {
      float a = result.aligned[result.offset + t * result.strides[0] +
                               c * result.strides[1]];
      float b = y[t * D + c];
      if (!(fabsf(a - b) <= 1e-5f + 1e-4f * fabsf(b))) {
        printf("differs at [%d, %d]: %g vs %g\n", t, c, a, b);
        return 1;
      }
    }
  free(result.allocated);
  printf("same: PASS (%d tokens)\n", T);
  return 0;
}
