/* Runs a layer that moe-compile built with --target nvptx --embed-weights
 * on the GPU and compares its output with a golden io.safetensors file.
 *
 *   cc -I<dir of layers.h> -I<repo>/include -DMOE_LAYER=moe_layer0 \
 *      -DMOE_LAYER_INDEX=0 golden_check_cuda.c layers.o \
 *      libmoe_cuda_runtime.a -ldl -lm -o check
 *   ./check io.safetensors [timed-calls | --expect-no-device]
 *
 * Prints "layer L: PASS (T tokens)", the first mismatch, or "SKIP" with
 * exit status 77 when no CUDA device can be used. With timed-calls, also
 * the median time of that many calls; with --expect-no-device and no
 * device, checks that the entry fails with MOE_ERROR_DEVICE. An output
 * matches when |y - want| <= MOE_ATOL + MOE_RTOL * |want| (f32 defaults;
 * gpu-golden.sh --dtype bf16 passes bf16 ones). */
#define _POSIX_C_SOURCE 199309L
#include "layers.h"
#include "moe/Runtime/moe_cuda.h"
#include "../../aot/Inputs/safetensors_lite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void *upload(const void *host, size_t bytes) {
  void *device = moe_cuda_malloc(bytes);
  if (bytes && (!device || moe_cuda_copy_to_device(device, host, bytes))) {
    int32_t error = moe_cuda_take_error();
    printf("upload of %zu bytes failed: %s\n", bytes,
           moe_cuda_error_string(error));
    exit(1);
  }
  return device;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s io.safetensors [timed-calls]\n", argv[0]);
    return 2;
  }
  if (moe_cuda_device_count() == 0) {
    int32_t error = moe_cuda_take_error();
    printf("SKIP: no CUDA device (%s)\n",
           moe_cuda_error_string(error ? error : MOE_CUDA_ERROR_NO_DEVICE));
    if (argc > 2 && strcmp(argv[2], "--expect-no-device") == 0) {
      /* The entry must fail cleanly: host pointers stand in for device
       * ones, as nothing may be dereferenced. */
      static float x[64], y[64];
      moe_batch batch = {0};
      batch.num_tokens = 1;
      batch.x = x;
      int32_t status =
          MOE_LAYER(CAT(MOE_LAYER, _embedded_weights)(), &batch, y);
      printf("entry without a device: status %d\n", status);
      return status == MOE_ERROR_DEVICE ? 77 : 1;
    }
    return 77;
  }
  size_t size = 0;
  unsigned char *file = st_read(argv[1], &size);
  if (!file)
    return 2;

  const char *prefix = "layers." STR(MOE_LAYER_INDEX) ".";
  char name[128];
  st_tensor in, out, ids;
  snprintf(name, sizeof name, "%sinput", prefix);
  int ok = st_find(file, size, name, &in);
  snprintf(name, sizeof name, "%soutput", prefix);
  ok = ok && st_find(file, size, name, &out);
  if (!ok || in.bytes != out.bytes || in.rank < 2) {
    fprintf(stderr, "missing %sinput/output\n", prefix);
    return 2;
  }
  long long hidden = in.shape[in.rank - 1];
  moe_batch batch = {0};
  batch.num_tokens = (int64_t)(in.bytes / sizeof(float) / hidden);
  if (in.rank == 3)
    batch.sequence_length = in.shape[1];
  float *want = malloc(out.bytes), *y = malloc(out.bytes);
  memcpy(want, out.data, out.bytes);
  batch.x = upload(in.data, in.bytes);
  snprintf(name, sizeof name, "%stoken_ids", prefix);
  if (st_find(file, size, name, &ids))
    batch.token_ids = upload(ids.data, ids.bytes);

  /* The embedded (host) weights, copied to the device. */
  const CAT(MOE_LAYER, _weights) *host = CAT(MOE_LAYER, _embedded_weights)();
  CAT(MOE_LAYER, _weights) device;
  const void *const *src = (const void *const *)host;
  const void **dst = (const void **)&device;
  size_t fields = sizeof(CAT(MOE_LAYER, _weight_elements)) / sizeof(int64_t);
  for (size_t i = 0; i < fields; ++i)
    dst[i] = upload(src[i], CAT(MOE_LAYER, _weight_elements)[i] *
                                CAT(MOE_LAYER, _weight_element_bytes)[i]);
  float *dy = moe_cuda_malloc(out.bytes);

  int32_t status = MOE_LAYER(&device, &batch, dy);
  if (status != MOE_STATUS_OK) {
    int32_t error = moe_cuda_take_error();
    printf("layer %d: status %d (%s)\n", MOE_LAYER_INDEX, status,
           moe_cuda_error_string(error));
    return 1;
  }
  if (moe_cuda_copy_to_host(y, dy, out.bytes)) {
    printf("layer %d: copying the output back failed\n", MOE_LAYER_INDEX);
    return 1;
  }
  size_t n = out.bytes / sizeof(float);
  for (size_t i = 0; i < n; ++i) {
    if (!(fabsf(y[i] - want[i]) <= MOE_ATOL + MOE_RTOL * fabsf(want[i]))) {
      printf("layer %d: FAIL at %zu: %g vs %g\n", MOE_LAYER_INDEX, i, y[i],
             want[i]);
      return 1;
    }
  }
  /* Argument checks happen on the host, before any GPU work. */
  if (MOE_LAYER(&device, NULL, dy) != MOE_ERROR_NULL_POINTER) {
    printf("layer %d: a null batch was not rejected\n", MOE_LAYER_INDEX);
    return 1;
  }
  printf("layer %d: PASS (%lld tokens)\n", MOE_LAYER_INDEX,
         (long long)batch.num_tokens);
  int calls = argc > 2 ? atoi(argv[2]) : 0;
  if (calls > 0) {
    double *times = malloc(sizeof(double) * calls);
    for (int i = 0; i < calls; ++i) {
      double start = now_ms();
      status = MOE_LAYER(&device, &batch, dy);
      times[i] = now_ms() - start;
      if (status != MOE_STATUS_OK)
        return 1;
    }
    qsort(times, calls, sizeof(double), cmp_double);
    printf("layer %d: median %.3f ms, min %.3f ms over %d calls\n",
           MOE_LAYER_INDEX, times[calls / 2], times[0], calls);
    free(times);
  }
  free(want);
  free(y);
  free(file);
  return 0;
}
