/* Destroys an engine and its layer from an exit handler registered before
 * the first compile: at exit it then runs after the objects LLVM created
 * lazily during that compile are gone, the order a function-local static
 * C++ engine is destroyed in. Prints "run: STATUS", then "destroyed at
 * exit" from the handler; a crash at exit fails the test. */
#include "moe/Runtime/moe.h"

#include <stdio.h>
#include <stdlib.h>

static moe_engine *engine;
static moe_layer *layer;

static void teardown(void) {
  moe_layer_release(layer);
  moe_engine_destroy(engine);
  printf("destroyed at exit\n");
}

int main(int argc, char **argv) {
  if (argc != 2 || moe_engine_create(NULL, 0, &engine) != MOE_STATUS_OK)
    return 2;
  atexit(teardown);
  if (moe_layer_compile_model(engine, argv[1], 0, &layer) != MOE_STATUS_OK) {
    printf("compile: %s\n", moe_last_error());
    return 1;
  }
  int64_t d = moe_layer_hidden(layer);
  float *x = calloc((size_t)(4 * d), sizeof(float));
  float *y = calloc((size_t)(4 * d), sizeof(float));
  moe_batch batch = {0};
  batch.num_tokens = 4;
  batch.x = x;
  printf("run: %d\n",
         moe_layer_run(layer, moe_layer_model_weights(layer), &batch, y));
  free(x);
  free(y);
  return 0;
}
