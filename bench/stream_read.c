/* stream_read: the read bandwidth a decode step can hope for.
 *
 *   stream_read [--threads N] [--gib G] [--json]
 *
 * Each of N threads sums its share of a G GiB buffer (default 2 GiB, far
 * beyond the last-level cache) with 8 independent integer accumulators and
 * software prefetch 2 KB ahead. A thread's share is read as S sequential
 * streams in lockstep (one cache line of each in turn), as the decode
 * kernel reads 6 weight rows at once: one stream per thread leaves DRAM
 * idle (a single stream's prefetching covers too little latency), so S = 1
 * measured 48 GB/s here where the decode kernel streamed 60. The figure is
 * the best, over S = 1, 2, 4, 8 and 16, of the median over repeated passes
 * of bytes read / seconds. */
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
  int streams;
  uint64_t sum;
  pthread_barrier_t *start;
} Job;

static void *reader(void *arg) {
  Job *job = arg;
  pthread_barrier_wait(job->start);
  uint64_t acc[8] = {0};
  /* Stream s reads words [s * len, (s + 1) * len), 8 words (a line) per
   * turn. */
  size_t len = job->n / job->streams / 8 * 8;
  for (size_t i = 0; i < len; i += 8)
    for (int s = 0; s < job->streams; ++s) {
      const uint64_t *p = job->data + s * len + i;
      __builtin_prefetch(p + 256, 0, 3);
      for (int j = 0; j < 8; ++j)
        acc[j] += p[j];
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
  static const int kStreams[] = {1, 2, 4, 8, 16};
  enum { kCounts = sizeof(kStreams) / sizeof(kStreams[0]) };
  double medians[kCounts], bests[kCounts];
  uint64_t check = 0;
  size_t per = words / threads;
  for (int c = 0; c < kCounts; ++c) {
    double times[64];
    for (int r = 0; r < reps; ++r) {
      pthread_t tid[256];
      Job jobs[256];
      pthread_barrier_t start;
      pthread_barrier_init(&start, NULL, threads + 1);
      for (int t = 0; t < threads; ++t) {
        jobs[t] = (Job){data + t * per, per, kStreams[c], 0, &start};
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
    /* Bytes the readers touched: whole lines of every stream. */
    double bytes =
        (double)(per / kStreams[c] / 8 * 8) * kStreams[c] * threads * 8;
    medians[c] = bytes / times[reps / 2] / 1e9;
    bests[c] = bytes / times[0] / 1e9;
  }
  int top = 0;
  for (int c = 1; c < kCounts; ++c)
    if (medians[c] > medians[top])
      top = c;
  if (json) {
    printf("{\"baseline\": \"stream_read\", \"threads\": %d, \"gib\": %.2f, "
           "\"streams\": %d, \"gbps_median\": %.2f, \"gbps_max\": %.2f, "
           "\"gbps_median_by_streams\": {",
           threads, gib, kStreams[top], medians[top], bests[top]);
    for (int c = 0; c < kCounts; ++c)
      printf("%s\"%d\": %.2f", c ? ", " : "", kStreams[c], medians[c]);
    printf("}, \"check\": %llu}\n", (unsigned long long)(check & 0xff));
  } else {
    for (int c = 0; c < kCounts; ++c)
      printf("stream_read: %d thread(s), %d stream(s) each, %.2f GiB: median "
             "%.2f GB/s, max %.2f GB/s\n",
             threads, kStreams[c], gib, medians[c], bests[c]);
  }
  free(data);
  return 0;
}
