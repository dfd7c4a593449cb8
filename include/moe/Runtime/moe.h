/*===- moe.h - moe-mlir's C embedding API --------------------------------===*
 *
 * Compile Mixture-of-Experts layers in process (JIT, this CPU) and run them
 * from any language with a C FFI. Mirrors include/moe/Runtime/Engine.h:
 *
 *   moe_engine *engine;
 *   moe_engine_create(NULL, 0, &engine);
 *   moe_layer *layer;
 *   if (moe_layer_compile_model(engine, "path/to/model", 0, &layer))
 *     fprintf(stderr, "%s\n", moe_last_error());
 *   moe_batch batch = {.num_tokens = T, .x = x};
 *   moe_layer_run(layer, moe_layer_model_weights(layer), &batch, y);
 *   moe_layer_release(layer);
 *   moe_engine_destroy(engine);
 *
 * A compiled layer takes any token count, and compiling a layer that the
 * engine compiled before is a cache hit: a serving loop compiles once.
 * Functions returning int32_t return 0 on success, a negative MOE_ERROR_*
 * code on failure (moe_last_error() says why, per thread), or for
 * moe_layer_run the layer's status (positive: warning bits).
 * Thread safety: every function may be called from several threads; runs
 * of one layer may be concurrent (different outputs).
 *
 *===----------------------------------------------------------------------===*/
#ifndef MOE_RUNTIME_MOE_H
#define MOE_RUNTIME_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef MOE_BATCH_DEFINED
#define MOE_BATCH_DEFINED
/* The tokens of one call (the same struct as moe-compile's headers). */
typedef struct moe_batch {
  int64_t num_tokens;        /* T >= 0 */
  const float *x;            /* [T, hidden] */
  const int64_t *token_ids;  /* [T]: hash-routed layers only */
  int64_t sequence_length;   /* per-sequence capacity: tokens per sequence (0: one sequence) */
  const int32_t *group_offsets; /* per-request capacity: [num_groups + 1] token boundaries */
  int64_t num_groups;
} moe_batch;

enum {
  MOE_STATUS_OK = 0,
  MOE_STATUS_NAN_LOGITS = 1,          /* bit: NaN router logits, treated as -inf */
  MOE_STATUS_TOKEN_ID_OUT_OF_RANGE = 2, /* bit: hash token id outside the table, routed nowhere */
  MOE_ERROR_NULL_POINTER = -1,
  MOE_ERROR_BAD_SHAPE = -2,           /* T < 0, sequence_length not dividing T, num_groups < 1 */
  MOE_ERROR_DEVICE = -3               /* GPU code: a CUDA operation failed (moe_cuda_take_error) */
};
#endif

enum {
  MOE_ERROR_INVALID_ARGUMENT = -10, /* a null handle or bad option */
  MOE_ERROR_COMPILE = -11,          /* import or compilation failed */
  MOE_ERROR_OUT_OF_RANGE = -12      /* an index past the end */
};

typedef struct moe_engine moe_engine;
typedef struct moe_layer moe_layer;

/* A layer described in code: top-k token-choice routing with SwiGLU
 * experts (the Mixtral / OLMoE / Qwen family). Zero-initialize, then set. */
typedef struct moe_layer_desc {
  int64_t hidden;      /* d */
  int64_t ffn;         /* per-expert intermediate width */
  int64_t num_experts; /* E */
  int64_t top_k;       /* k */
  int32_t renormalize; /* renormalize the k selected softmax weights */
  int64_t shared_ffn;  /* width of one shared SwiGLU expert (0: none) */
  int32_t bf16_weights; /* nonzero: the expert weights (w1, w2, shared_w1,
                         * shared_w2) are bf16 bits, uint16_t each */
} moe_layer_desc;

/* target_cpu: NULL or "native", "x86-64-v3", "x86-64-v4", an LLVM CPU name.
 * threads: threads of the parallel loops (0: OMP_NUM_THREADS or one per
 * core); process-wide. */
int32_t moe_engine_create(const char *target_cpu, int threads,
                          moe_engine **engine);
void moe_engine_destroy(moe_engine *engine);
/* Compilations run so far (cache misses), and cache hits. */
uint64_t moe_engine_compile_count(const moe_engine *engine);
uint64_t moe_engine_cache_hits(const moe_engine *engine);

int32_t moe_layer_compile(moe_engine *engine, const moe_layer_desc *desc,
                          moe_layer **layer);
int32_t moe_layer_compile_model(moe_engine *engine, const char *model_dir,
                                int64_t layer_index, moe_layer **layer);
/* MLIR text with one public function on tensors: (tensor<?xDxf32> tokens,
 * static-shaped f32/i32 weight tensors...) -> tensor<?xDxf32>. Its
 * weights are the arguments after the tokens, named "arg1", "arg2", ... */
int32_t moe_layer_compile_mlir(moe_engine *engine, const char *mlir_text,
                               moe_layer **layer);
/* Handles are reference counted by the engine's cache; release each one
 * obtained. A layer stays usable after its engine is destroyed. */
void moe_layer_release(moe_layer *layer);

int64_t moe_layer_hidden(const moe_layer *layer);
/* The weights the layer takes, in argument order: their count, and for
 * each its name ("gate", "w1", "w2", "shared_w1", ...) and element count
 * (float; int32 for "hash_table"; bf16 bits, 2 bytes each, for the expert
 * weights of a layer compiled with bf16_weights). */
int64_t moe_layer_weight_count(const moe_layer *layer);
int32_t moe_layer_weight_info(const moe_layer *layer, int64_t index,
                              const char **name, int64_t *elements);
/* The weights imported with the model (moe_layer_compile_model), or NULL. */
const void *const *moe_layer_model_weights(const moe_layer *layer);

/* y[T, hidden] = the layer on batch->x; returns the layer's status. */
int32_t moe_layer_run(const moe_layer *layer, const void *const *weights,
                      const moe_batch *batch, float *y);

/* Why the calling thread's last failing call failed. */
const char *moe_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_MOE_H */
