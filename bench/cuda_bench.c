/* Times a layer compiled with moe-compile --target nvptx on the GPU.
 *
 *   python3 bench/make_model.py mixtral-small M
 *   moe-compile --model M --target nvptx [--dtype bf16 [--mma]] \
 *      -o layer.o --header layers.h
 *   cc -O2 -I. -Iinclude -DPRESET=\"mixtral-small\" -DTOPK=2 \
 *      [-DKERNEL=\"mma\"] bench/cuda_bench.c layer.o \
 *      libmoe_cuda_runtime.a -ldl -lm -o bench
 *   ./bench 1,16,128,1536 [runs]
 *
 * (bench/cuda.sh builds the f32, bf16 and bf16 + mma variants.)
 * Weights and tokens are seeded uniform random numbers (scaled so the
 * activations stay finite); one JSON object per token count, in the fields
 * of moe-bench: ms_median, ms_min (wall clock of the entry, which returns
 * after its GPU work is done), gflops (2*T*k*3*d*ffn + router), and
 * weight_gbps (the bytes of the experts the batch touches / time). */
#define _POSIX_C_SOURCE 199309L
#include "layers.h"
#include "moe/Runtime/moe_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PRESET
#define PRESET "custom"
#endif
#ifndef TOPK
#define TOPK 2
#endif
/* How the object multiplies: "fma" (CUDA cores) or "mma" (tensor cores). */
#ifndef KERNEL
#define KERNEL "fma"
#endif

static unsigned long long state = 88172645463325252ull;
static float uniform(float scale) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return scale * ((float)(state >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
}

/* `count` random values of `bytes` each: f32, or bf16 bits (rounded to
 * nearest even). */
static void *device_random(size_t count, float scale, int64_t bytes) {
  float *host = malloc(count * sizeof(float));
  for (size_t i = 0; i < count; ++i)
    host[i] = uniform(scale);
  if (bytes == 2) {
    uint16_t *bits = (uint16_t *)host;
    for (size_t i = 0; i < count; ++i) {
      uint32_t u;
      memcpy(&u, &host[i], 4);
      bits[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
  void *device = moe_cuda_malloc(count * bytes);
  if (!device || moe_cuda_copy_to_device(device, host, count * bytes)) {
    fprintf(stderr, "cuda_bench: %s\n",
            moe_cuda_error_string(moe_cuda_take_error()));
    exit(1);
  }
  free(host);
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
  const char *list = argc > 1 ? argv[1] : "1,16,128,1536";
  int runs = argc > 2 ? atoi(argv[2]) : 20;
  if (moe_cuda_device_count() == 0) {
    printf("SKIP: no CUDA device\n");
    return 77;
  }
  const long long d = MOE_LAYER0_HIDDEN;
  const int64_t *elements = moe_layer0_weight_elements;
  /* gate [E, d], w1 [E, 2 ffn, d], w2 [E, d, ffn] */
  long long E = elements[0] / d, ffn = elements[2] / (E * d);
  moe_layer0_weights w;
  const int64_t *bytes = moe_layer0_weight_element_bytes;
  w.gate = device_random(elements[0], 0.5f, bytes[0]);
  w.w1 = device_random(elements[1], 0.05f, bytes[1]);
  w.w2 = device_random(elements[2], 0.05f, bytes[2]);
  char copy[256];
  strncpy(copy, list, sizeof copy - 1);
  copy[sizeof copy - 1] = 0;
  for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
    long long T = atoll(tok);
    moe_batch batch = {0};
    batch.num_tokens = T;
    batch.x = device_random(T * d, 1.0f, 4);
    float *y = moe_cuda_malloc(T * d * sizeof(float));
    double *times = malloc(sizeof(double) * runs);
    for (int i = -3; i < runs; ++i) {
      double start = now_ms();
      int32_t status = moe_layer0(&w, &batch, y);
      double ms = now_ms() - start;
      if (status < 0) {
        fprintf(stderr, "cuda_bench: status %d: %s\n", status,
                moe_cuda_error_string(moe_cuda_take_error()));
        return 1;
      }
      if (i >= 0)
        times[i] = ms;
    }
    qsort(times, runs, sizeof(double), cmp_double);
    double med = times[runs / 2];
    double flops = 2.0 * T * TOPK * 3.0 * d * ffn + 2.0 * T * d * E;
    long long touched = T * TOPK < E ? T * TOPK : E;
    double weightBytes = (double)touched * 3.0 * d * ffn * bytes[1];
    printf("{\"preset\": \"%s\", \"device\": \"cuda\", \"tokens\": %lld, "
           "\"dtype\": \"%s\", \"kernel\": \"%s\", \"ms_median\": %.4f, "
           "\"ms_min\": %.4f, \"gflops\": %.1f, \"weight_gbps\": %.1f, "
           "\"runs\": %d}\n",
           PRESET, T, bytes[1] == 2 ? "bf16" : "f32", KERNEL, med, times[0],
           flops / med / 1e6, weightBytes / med / 1e6, runs);
    moe_cuda_free((void *)batch.x);
    moe_cuda_free(y);
    free(times);
  }
  return 0;
}
