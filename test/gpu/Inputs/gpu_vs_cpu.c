/* Runs one layer compiled twice, for the CPU (prefix cpu, header
 * cpu_layers.h) and for the GPU (prefix gpu, gpu_layers.h), both with
 * --embed-weights from the same model, on seeded random tokens, and
 * compares the GPU's output with the CPU's (which moe-difftest checks
 * against the reference):
 *
 *   ./gpu_vs_cpu 1,7,300,1536 [RTOL ATOL]
 *
 * An output matches when |y - want| <= ATOL * rms(want) + RTOL * |want|
 * (default 2e-2 and 3e-2, for bf16 weights on CUDA cores, which do not round
 * the tokens to bf16 as the CPU does: up to 1.5% of the rms apart). Prints one
 * line per token count, "T tokens: PASS, max |error| E (rms of the output R)"
 * or the first mismatch, then exits 1 on any failure, 77 (SKIP) without a CUDA
 * device. Built by scripts/gpu-bundle.sh. */
#include "cpu_layers.h"
#include "gpu_layers.h"
#include "moe/Runtime/moe_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long state = 0x9e3779b97f4a7c15ull;
static float uniform(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (float)(state >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static void *upload(const void *host, size_t bytes) {
  void *device = moe_cuda_malloc(bytes);
  if (bytes && (!device || moe_cuda_copy_to_device(device, host, bytes))) {
    printf("upload of %zu bytes failed: %s\n", bytes,
           moe_cuda_error_string(moe_cuda_take_error()));
    exit(1);
  }
  return device;
}

int main(int argc, char **argv) {
  const char *list = argc > 1 ? argv[1] : "1,7,300,1536";
  double rtol = argc > 3 ? strtod(argv[2], NULL) : 2e-2;
  double atol = argc > 3 ? strtod(argv[3], NULL) : 3e-2;
  if (moe_cuda_device_count() == 0) {
    printf("SKIP: no CUDA device (%s)\n",
           moe_cuda_error_string(moe_cuda_take_error()));
    return 77;
  }
  const long long d = CPU_LAYER0_HIDDEN;
  if (d != GPU_LAYER0_HIDDEN || sizeof(cpu_layer0_weight_elements) !=
                                    sizeof(gpu_layer0_weight_elements)) {
    printf("the two objects are not the same layer\n");
    return 2;
  }
  /* The GPU layer's weights: its embedded host copy, uploaded. */
  const gpu_layer0_weights *host = gpu_layer0_embedded_weights();
  gpu_layer0_weights device;
  const void *const *src = (const void *const *)host;
  const void **dst = (const void **)&device;
  size_t fields = sizeof(gpu_layer0_weight_elements) / sizeof(int64_t);
  for (size_t i = 0; i < fields; ++i)
    dst[i] = upload(src[i], gpu_layer0_weight_elements[i] *
                                gpu_layer0_weight_element_bytes[i]);
  int failed = 0;
  char copy[256];
  strncpy(copy, list, sizeof copy - 1);
  copy[sizeof copy - 1] = 0;
  for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
    long long T = atoll(tok);
    size_t n = (size_t)(T * d);
    float *x = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    float *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; ++i)
      x[i] = uniform();
    moe_batch batch = {0};
    batch.num_tokens = T;
    batch.x = x;
    if (cpu_layer0(cpu_layer0_embedded_weights(), &batch, want) < 0) {
      printf("%lld tokens: the CPU layer failed\n", T);
      return 1;
    }
    batch.x = upload(x, n * sizeof(float));
    float *dy = moe_cuda_malloc(n * sizeof(float));
    int32_t status = gpu_layer0(&device, &batch, dy);
    if (status < 0 || moe_cuda_copy_to_host(y, dy, n * sizeof(float))) {
      printf("%lld tokens: status %d (%s)\n", T, status,
             moe_cuda_error_string(moe_cuda_take_error()));
      return 1;
    }
    double sumSq = 0, maxError = 0;
    for (size_t i = 0; i < n; ++i)
      sumSq += (double)want[i] * want[i];
    double rms = n ? sqrt(sumSq / n) : 0;
    long long bad = -1;
    for (size_t i = 0; i < n; ++i) {
      double error = fabs((double)y[i] - want[i]);
      if (error > maxError || error != error)
        maxError = error;
      if (bad < 0 && !(error <= atol * rms + rtol * fabs(want[i])))
        bad = (long long)i;
    }
    if (bad >= 0) {
      printf("%lld tokens: FAIL at %lld (token %lld, column %lld): %g vs "
             "%g; max |error| %.3g, rms of the output %.3g\n",
             T, bad, bad / d, bad % d, y[bad], want[bad], maxError, rms);
      failed = 1;
    } else {
      printf("%lld tokens: PASS, max |error| %.3g (rms of the output %.3g)\n",
             T, maxError, rms);
    }
    moe_cuda_free((void *)batch.x);
    moe_cuda_free(dy);
    free(x);
    free(want);
    free(y);
  }
  return failed;
}
