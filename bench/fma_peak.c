/* The machine's f32 FMA peak: every thread runs 24 independent chains of
 * AVX-512 FMAs (enough to cover the FMA latency on two pipes), no memory.
 *
 *   cc -O2 -march=native -pthread bench/fma_peak.c -o fma_peak
 *   ./fma_peak [threads]            # prints GFLOP/s
 *
 * On a shared host the figure moves with the neighbours; quote it beside
 * figures measured in the same minutes. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kChains = 24 };
static const long kSteps = 8000000; /* per chain and thread */

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *chains(void *out) {
  __m512 acc[kChains];
  const __m512 scale = _mm512_set1_ps(0.999f), shift = _mm512_set1_ps(1e-3f);
  for (int c = 0; c < kChains; ++c)
    acc[c] = _mm512_set1_ps((float)c);
  for (long i = 0; i < kSteps; ++i)
    for (int c = 0; c < kChains; ++c)
      acc[c] = _mm512_fmadd_ps(acc[c], scale, shift);
  float sum = 0;
  for (int c = 0; c < kChains; ++c)
    sum += _mm512_reduce_add_ps(acc[c]);
  *(float *)out = sum; /* keeps the chains live */
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 256) {
    fprintf(stderr, "usage: fma_peak [threads (1-256)]\n");
    return 2;
  }
  pthread_t *ids = malloc(threads * sizeof *ids);
  float *sums = malloc(threads * sizeof *sums);
  double start = seconds();
  for (int t = 0; t < threads; ++t)
    pthread_create(&ids[t], NULL, chains, &sums[t]);
  for (int t = 0; t < threads; ++t)
    pthread_join(ids[t], NULL);
  double elapsed = seconds() - start;
  double flops = 2.0 * 16 * kChains * (double)kSteps * threads;
  printf("{\"baseline\": \"fma_peak\", \"threads\": %d, \"gflops\": %.1f}\n",
         threads, flops / elapsed / 1e9);
  free(ids);
  free(sums);
  return 0;
}
