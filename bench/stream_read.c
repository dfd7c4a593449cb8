/* stream_read: the read bandwidth a decode step can hope for.
 *
 *   stream_read [--threads N] [--gib G] [--json]
 *
 * Each of N threads sums its share of a G GiB buffer (default 2 GiB, far
 * beyond the last-level cache) with 8 independent AVX-512-friendly integer
 * accumulators and software prefetch 2 KB ahead, the way the decode kernel
 * reads weights; the figure is
 * the median over repeated passes of bytes read / seconds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  const uint64_t *data;
  size_t n;
  uint64_t sum;
  pthread_barrier_t *start;
} Job;

static void *reader(void *arg) {
  Job *job = arg;
  pthread_barrier_wait(job->start);
  uint64_t acc[8] = {0};
  for (size_t i = 0; i + 8 <= job->n; i += 8) {
    /* Software prefetch 2 KB ahead, as the decode kernel does. */
    __builtin_prefetch(job->data + i + 256, 0, 3);
    for (int j = 0; j < 8; ++j)
      acc[j] += job->data[i + j];
  }
  uint64_t s = 0;
  for (int j = 0; j < 8; ++j)
    s += acc[j];
  job->sum = s;
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int threads = 2, json = 0, reps = 9;
  double gib = 2.0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--gib") && i + 1 < argc)
      gib = atof(argv[++i]);
    else if (!strcmp(argv[i], "--json"))
      json = 1;
    else {
      fprintf(stderr, "usage: stream_read [--threads N] [--gib G] [--json]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > 256 || gib <= 0) {
    fprintf(stderr, "stream_read: bad --threads or --gib\n");
    return 2;
  }
  size_t words = (size_t)(gib * (1u << 30)) / 8;
  uint64_t *data = malloc(words * 8);
  if (!data) {
    fprintf(stderr, "stream_read: cannot allocate %.1f GiB\n", gib);
    return 1;
  }
  for (size_t i = 0; i < words; ++i)
    data[i] = i;
  double times[64];
  uint64_t check = 0;
  for (int r = 0; r < reps; ++r) {
    pthread_t tid[256];
    Job jobs[256];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads + 1);
    size_t per = words / threads;
    for (int t = 0; t < threads; ++t) {
      jobs[t] = (Job){data + t * per, per, 0, &start};
      pthread_create(&tid[t], NULL, reader, &jobs[t]);
    }
    double t0 = now();
    pthread_barrier_wait(&start);
    for (int t = 0; t < threads; ++t) {
      pthread_join(tid[t], NULL);
      check += jobs[t].sum;
    }
    times[r] = now() - t0;
    pthread_barrier_destroy(&start);
  }
  qsort(times, reps, sizeof(double), cmp);
  double bytes = (double)(words / threads) * threads * 8;
  double gbps = bytes / times[reps / 2] / 1e9;
  double best = bytes / times[0] / 1e9;
  if (json)
    printf("{\"baseline\": \"stream_read\", \"threads\": %d, \"gib\": %.2f, "
           "\"gbps_median\": %.2f, \"gbps_max\": %.2f, \"check\": %llu}\n",
           threads, gib, gbps, best, (unsigned long long)(check & 0xff));
  else
    printf("stream_read: %d thread(s), %.2f GiB: median %.2f GB/s, max %.2f "
           "GB/s\n",
           threads, gib, gbps, best);
  free(data);
  return 0;
}
