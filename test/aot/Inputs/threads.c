/* Several threads call one compiled layer concurrently with different token
 * counts; every result must be bitwise equal to the same call made alone.
 * Exercises the entries' statelessness and the shared block cache of the
 * compiled module's allocator. Prints "threads: PASS". */
#include "layers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { D = 64, MAX_T = 96, THREADS = 4, CALLS = 25 };

static float x[MAX_T * D];
static float expected[MAX_T + 1][MAX_T * D];
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int run(int64_t tokens, float *y) {
  moe_batch batch = {0};
  batch.num_tokens = tokens;
  batch.x = x;
  return moe_layer0(moe_layer0_embedded_weights(), &batch, y);
}

static void *worker(void *arg) {
  unsigned seed = (unsigned)(size_t)arg;
  float *y = malloc(sizeof(float) * MAX_T * D);
  for (int call = 0; call < CALLS; ++call) {
    seed = seed * 1103515245u + 12345u;
    int64_t tokens = 1 + (seed >> 8) % MAX_T;
    if (run(tokens, y) != MOE_STATUS_OK ||
        memcmp(y, expected[tokens], sizeof(float) * tokens * D) != 0) {
      pthread_mutex_lock(&lock);
      ++failures;
      pthread_mutex_unlock(&lock);
    }
  }
  free(y);
  return NULL;
}

int main(void) {
  for (int i = 0; i < MAX_T * D; ++i)
    x[i] = (float)((i * 7919) % 2003) / 1001.0f - 1.0f;
  for (int64_t t = 1; t <= MAX_T; ++t)
    if (run(t, expected[t]) != MOE_STATUS_OK) {
      printf("threads: single call failed\n");
      return 1;
    }
  pthread_t threads[THREADS];
  for (size_t i = 0; i < THREADS; ++i)
    pthread_create(&threads[i], NULL, worker, (void *)(i + 1));
  for (size_t i = 0; i < THREADS; ++i)
    pthread_join(threads[i], NULL);
  if (failures) {
    printf("threads: %d calls differed\n", failures);
    return 1;
  }
  printf("threads: PASS (%d threads x %d calls)\n", THREADS, CALLS);
  return 0;
}
