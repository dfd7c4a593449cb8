//===- CAPI.cpp - The C embedding API over Engine
//--------------------------===//

#include "moe/Runtime/moe.h"

#include "moe/Runtime/Engine.h"

#include <string>

using namespace mlir::moe;
using namespace mlir::moe::runtime;

struct moe_engine {
  Engine engine;
  explicit moe_engine(EngineOptions options) : engine(std::move(options)) {}
};

struct moe_layer {
  std::shared_ptr<CompiledLayer> layer;
};

namespace {

thread_local std::string lastError;

int32_t failWith(int32_t code, std::string message) {
  lastError = std::move(message);
  return code;
}

int32_t finish(std::shared_ptr<CompiledLayer> layer, const std::string &error,
               moe_layer **out) {
  if (!layer)
    return failWith(MOE_ERROR_COMPILE, error);
  *out = new moe_layer{std::move(layer)};
  return 0;
}

} // namespace

extern "C" {

int32_t moe_engine_create(const char *target_cpu, int threads,
                          moe_engine **engine) {
  if (!engine)
    return failWith(MOE_ERROR_INVALID_ARGUMENT, "engine is null");
  if (threads < 0)
    return failWith(MOE_ERROR_INVALID_ARGUMENT, "threads must be 0 or more");
  EngineOptions options;
  if (target_cpu)
    options.targetCPU = target_cpu;
  options.threads = threads;
  *engine = new moe_engine(std::move(options));
  return 0;
}

void moe_engine_destroy(moe_engine *engine) { delete engine; }

uint64_t moe_engine_compile_count(const moe_engine *engine) {
  return engine ? engine->engine.compileCount() : 0;
}

uint64_t moe_engine_cache_hits(const moe_engine *engine) {
  return engine ? engine->engine.cacheHits() : 0;
}

int32_t moe_layer_compile(moe_engine *engine, const moe_layer_desc *desc,
                          moe_layer **layer) {
  if (!engine || !desc || !layer)
    return failWith(MOE_ERROR_INVALID_ARGUMENT,
                    "engine, desc and layer must not be null");
  frontend::LayerSpec spec;
  spec.name = "layer";
  spec.hidden = desc->hidden;
  spec.ffn = desc->ffn;
  spec.numExperts = desc->num_experts;
  spec.router.k = desc->top_k;
  spec.router.renormalize = desc->renormalize != 0;
  spec.sharedFfn = desc->shared_ffn;
  if (desc->bf16_weights)
    spec.expertWeights = frontend::WeightType::BF16;
  std::string error;
  return finish(engine->engine.compile(spec, &error), error, layer);
}

int32_t moe_layer_compile_model(moe_engine *engine, const char *model_dir,
                                int64_t layer_index, moe_layer **layer) {
  if (!engine || !model_dir || !layer)
    return failWith(MOE_ERROR_INVALID_ARGUMENT,
                    "engine, model_dir and layer must not be null");
  std::string error;
  return finish(engine->engine.compileModel(model_dir, layer_index, &error),
                error, layer);
}

int32_t moe_layer_compile_mlir(moe_engine *engine, const char *mlir_text,
                               moe_layer **layer) {
  if (!engine || !mlir_text || !layer)
    return failWith(MOE_ERROR_INVALID_ARGUMENT,
                    "engine, mlir_text and layer must not be null");
  std::string error;
  return finish(engine->engine.compileMLIR(mlir_text, &error), error, layer);
}

void moe_layer_release(moe_layer *layer) { delete layer; }

int64_t moe_layer_hidden(const moe_layer *layer) {
  return layer ? layer->layer->spec().hidden : 0;
}

int64_t moe_layer_weight_count(const moe_layer *layer) {
  return layer ? int64_t(layer->layer->weights().size()) : 0;
}

int32_t moe_layer_weight_info(const moe_layer *layer, int64_t index,
                              const char **name, int64_t *elements) {
  if (!layer)
    return failWith(MOE_ERROR_INVALID_ARGUMENT, "layer is null");
  const std::vector<WeightInfo> &weights = layer->layer->weights();
  if (index < 0 || index >= int64_t(weights.size()))
    return failWith(MOE_ERROR_OUT_OF_RANGE, "weight index " +
                                                std::to_string(index) + " of " +
                                                std::to_string(weights.size()));
  if (name)
    *name = weights[index].name.c_str();
  if (elements)
    *elements = weights[index].elements;
  return 0;
}

const void *const *moe_layer_model_weights(const moe_layer *layer) {
  return layer ? layer->layer->modelWeights() : nullptr;
}

int32_t moe_layer_run(const moe_layer *layer, const void *const *weights,
                      const moe_batch *batch, float *y) {
  if (!layer)
    return failWith(MOE_ERROR_NULL_POINTER, "layer is null");
  if (!batch)
    return failWith(MOE_ERROR_NULL_POINTER, "batch is null");
  int32_t status = layer->layer->run(weights, *batch, y);
  if (status < 0)
    lastError = status == MOE_ERROR_NULL_POINTER
                    ? "a null weight, input or output pointer"
                    : "bad batch shape (negative T, or sequence_length or "
                      "group offsets that do not fit T)";
  return status;
}

const char *moe_last_error(void) { return lastError.c_str(); }

} // extern "C"
