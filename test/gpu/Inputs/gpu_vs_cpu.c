/* Runs one layer compiled twice, for the CPU (prefix cpu, header
 * cpu_layers.h) and for the GPU (prefix gpu, gpu_layers.h), both with
 * --embed-weights from the same model, on seeded random tokens, and
 * compares the GPU's output with the CPU's (which moe-difftest checks
 * against the reference):
 *
 *   ./gpu_vs_cpu 1,7,300,1536 [RTOL ATOL]
 *
 * A count followed by `!` (e.g. 33!) makes the batch hostile: token 1 all
 * NaN, token 2 with an infinite feature and, for hash layers (built with
 * -DMOE_HASH_VOCAB=V), token ids -1, V and 2^40 among valid ones; both
 * layers must then return the same status bits and outputs (NaN where the
 * CPU has NaN). A count of 0 checks the empty batch.
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
    int hostile = strchr(tok, '!') != NULL;
    size_t n = (size_t)(T * d);
    float *x = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    float *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; ++i)
      x[i] = uniform();
    if (hostile && T > 2) {
      for (long long j = 0; j < d; ++j)
        x[d + j] = NAN;
      x[2 * d] = INFINITY;
    }
    moe_batch batch = {0};
    batch.num_tokens = T;
    batch.x = x;
#ifdef MOE_HASH_VOCAB
    int64_t *ids = malloc((size_t)(T > 0 ? T : 1) * sizeof(int64_t));
    for (long long t = 0; t < T; ++t)
      ids[t] = (int64_t)((uniform() + 1.0f) * 0.5f * (MOE_HASH_VOCAB - 1));
    if (hostile && T > 3) {
      ids[0] = -1;
      ids[1] = MOE_HASH_VOCAB;
      ids[T - 1] = (int64_t)1 << 40;
    }
    batch.token_ids = ids;
#endif
    int32_t cpuStatus = cpu_layer0(cpu_layer0_embedded_weights(), &batch, want);
    if (cpuStatus < 0) {
      printf("%lld tokens: the CPU layer failed\n", T);
      return 1;
    }
    batch.x = upload(x, n * sizeof(float));
#ifdef MOE_HASH_VOCAB
    batch.token_ids = upload(ids, (size_t)T * sizeof(int64_t));
#endif
    float *dy = moe_cuda_malloc(n * sizeof(float));
    int32_t status = gpu_layer0(&device, &batch, dy);
    if (status < 0 || moe_cuda_copy_to_host(y, dy, n * sizeof(float))) {
      printf("%lld tokens: status %d (%s)\n", T, status,
             moe_cuda_error_string(moe_cuda_take_error()));
      return 1;
    }
    if (status != cpuStatus) {
      printf("%lld tokens: FAIL, status %d on the GPU, %d on the CPU\n", T,
             status, cpuStatus);
      failed = 1;
    }
    double sumSq = 0, maxError = 0;
    size_t finite = 0;
    for (size_t i = 0; i < n; ++i)
      if (isfinite(want[i])) {
        sumSq += (double)want[i] * want[i];
        ++finite;
      }
    double rms = finite ? sqrt(sumSq / finite) : 0;
    long long bad = -1;
    for (size_t i = 0; i < n; ++i) {
      /* NaN where the CPU has NaN, the same infinity where it has one. */
      if (!isfinite(want[i])) {
        if (!(isnan(want[i]) ? isnan(y[i]) : y[i] == want[i]) && bad < 0)
          bad = (long long)i;
        continue;
      }
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
      printf("%lld tokens%s: PASS, max |error| %.3g (rms of the output "
             "%.3g), status %d\n",
             T, hostile ? " (hostile)" : "", maxError, rms, status);
    }
    moe_cuda_free((void *)batch.x);
#ifdef MOE_HASH_VOCAB
    moe_cuda_free((void *)batch.token_ids);
    free(ids);
#endif
    moe_cuda_free(dy);
    free(x);
    free(want);
    free(y);
  }
  return failed;
}
