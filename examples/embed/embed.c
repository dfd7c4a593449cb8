/* Embeds moe-mlir in a C program through its C API (moe/Runtime/moe.h):
 * compiles layer 1 of a Mixtral-style Hugging Face model in process, runs
 * a batch of tokens, then each token alone (another token count: no
 * recompile), and checks that every token's output is the same either way.
 * Then compiles a layer described in code and runs it on its own weights.
 *
 *   embed MODEL_DIR
 */
#include <moe/Runtime/moe.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned long long state = 42;
static float uniform(float scale) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return scale * ((float)(state >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
}

static int check(int32_t status, const char *what) {
  if (status != 0) {
    fprintf(stderr, "embed: %s failed (%d): %s\n", what, status,
            moe_last_error());
    exit(1);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  moe_engine *engine;
  check(moe_engine_create(NULL, 0, &engine), "moe_engine_create");

  moe_layer *layer;
  check(moe_layer_compile_model(engine, argv[1], 1, &layer),
        "moe_layer_compile_model");
  int64_t d = moe_layer_hidden(layer), T = 24;
  const void *const *weights = moe_layer_model_weights(layer);
  float *x = malloc(sizeof(float) * T * d), *y = malloc(sizeof(float) * T * d);
  float *one = malloc(sizeof(float) * d);
  for (int64_t i = 0; i < T * d; ++i)
    x[i] = uniform(1.0f);
  moe_batch batch = {0};
  batch.num_tokens = T;
  batch.x = x;
  check(moe_layer_run(layer, weights, &batch, y), "moe_layer_run");
  int64_t mismatches = 0;
  for (int64_t t = 0; t < T; ++t) {
    moe_batch single = {0};
    single.num_tokens = 1;
    single.x = x + t * d;
    check(moe_layer_run(layer, weights, &single, one), "moe_layer_run");
    for (int64_t c = 0; c < d; ++c)
      if (fabsf(one[c] - y[t * d + c]) > 1e-5f + 1e-5f * fabsf(y[t * d + c]))
        ++mismatches;
  }
  printf("model layer: hidden %lld, %lld tokens at once and one by one: %s\n",
         (long long)d, (long long)T, mismatches ? "MISMATCH" : "same");

  /* A layer described in code, with its own weights. */
  moe_layer_desc desc = {0};
  desc.hidden = 128;
  desc.ffn = 256;
  desc.num_experts = 8;
  desc.top_k = 2;
  desc.renormalize = 1;
  moe_layer *custom;
  check(moe_layer_compile(engine, &desc, &custom), "moe_layer_compile");
  int64_t n = moe_layer_weight_count(custom);
  const void **table = malloc(sizeof(void *) * n);
  for (int64_t i = 0; i < n; ++i) {
    const char *name;
    int64_t elements;
    check(moe_layer_weight_info(custom, i, &name, &elements), "weight_info");
    float *w = malloc(sizeof(float) * elements);
    for (int64_t j = 0; j < elements; ++j)
      w[j] = uniform(0.1f);
    table[i] = w;
    printf("  weight %s: %lld floats\n", name, (long long)elements);
  }
  float *cx = malloc(sizeof(float) * 16 * 128), *cy = malloc(sizeof(float) * 16 * 128);
  for (int64_t i = 0; i < 16 * 128; ++i)
    cx[i] = uniform(1.0f);
  int finite = 1;
  for (int64_t tokens = 1; tokens <= 16; tokens *= 4) {
    moe_batch b = {0};
    b.num_tokens = tokens;
    b.x = cx;
    check(moe_layer_run(custom, table, &b, cy), "moe_layer_run");
    for (int64_t i = 0; i < tokens * 128; ++i)
      finite &= isfinite(cy[i]) != 0;
  }
  printf("custom layer: outputs %s\n", finite ? "finite" : "NOT FINITE");
  printf("compiles: %llu, cache hits: %llu\n",
         (unsigned long long)moe_engine_compile_count(engine),
         (unsigned long long)moe_engine_cache_hits(engine));
  moe_layer_release(custom);
  moe_layer_release(layer);
  moe_engine_destroy(engine);
  for (int64_t i = 0; i < n; ++i)
    free((void *)table[i]);
  free(table), free(cx), free(cy), free(x), free(y), free(one);
  return mismatches || !finite;
}
