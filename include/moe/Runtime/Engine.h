//===- Engine.h - Embedding moe-mlir: compile layers, run them --*- C++ -*-===//
//
// The C++ embedding API (include/moe/Runtime/moe.h is the C one). An Engine
// JIT-compiles MoE layers for this CPU and keeps them in a cache keyed by
// (layer description, target CPU): compiling a layer that was compiled
// before returns the cached code. A compiled layer takes any token count
// (the generated code is shape-polymorphic in T), so a serving loop
// compiles each layer once and never again, whatever its batch sizes.
//
// Thread safety: Engine methods may be called from any number of threads
// (compiles are serialized); CompiledLayer::run may be called concurrently
// on one layer with different outputs.
//
// Only standard C++ types appear here: no MLIR or LLVM header is needed to
// use the API (link libmoe_runtime).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_ENGINE_H
#define MOE_RUNTIME_ENGINE_H

#include "moe/Frontend/LayerSpec.h"
#include "moe/Runtime/moe.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlir::moe::runtime {

struct EngineOptions {
  /// "native", "x86-64-v3", "x86-64-v4" or an LLVM CPU name.
  std::string targetCPU = "native";
  /// Threads of the generated code's parallel loops (0: OMP_NUM_THREADS,
  /// else one per core). Process-wide: the OpenMP runtime has one setting.
  int threads = 0;
  /// Temporaries of the generated code come from a per-module cache of
  /// freed blocks (lock-free, atomics in the generated code) instead of
  /// malloc/free for every buffer. Off: plain malloc/free, for running
  /// under ThreadSanitizer, which cannot see uninstrumented atomics. The
  /// environment variable MOE_ENGINE_PLAIN_MALLOC=1 turns it off too.
  bool cachingAllocator = true;
  /// Expert weight type of the layers compileModel imports: "f32" or
  /// "bf16" (the weights are converted once at import; anything else makes
  /// compileModel fail with a message). compile() follows the spec's
  /// expertWeights.
  std::string dtype = "f32";
  /// A transform-dialect schedule file for the CPU lowering (empty: none;
  /// see getMoECPUPipeline). It is read when a layer is compiled; the
  /// compile cache tells schedules apart by path only.
  std::string schedule;
};

/// One weight the layer takes, in argument order.
struct WeightInfo {
  std::string name;  ///< "gate", "w1", "w2", ...
  std::string ctype; ///< "float", "int32_t" or "uint16_t" (bf16 bits)
  int64_t elements = 0;
};

class CompiledLayer {
public:
  ~CompiledLayer();
  const frontend::LayerSpec &spec() const;
  const std::vector<WeightInfo> &weights() const;
  /// y[T, hidden] = the layer on `batch` (see moe.h for the fields and the
  /// returned status). `weights` points to one array per WeightInfo.
  int32_t run(const void *const *weights, const moe_batch &batch,
              float *y) const;
  /// The same for a plain batch of `numTokens` rows of x.
  int32_t run(const void *const *weights, int64_t numTokens, const float *x,
              float *y) const;
  /// The routing decision of `batch` into the arrays of `routing`, in the
  /// field order of the NAME_routing struct of moe-compile's header
  /// (indices, weights, rows, expert_load, then logits, aux_loss, z_loss
  /// for routed layers). The route entry is compiled on the first call
  /// (MOE_ERROR_COMPILE if that fails, or for layers compiled from MLIR
  /// text, which have none); serving loops need only run().
  int32_t route(const void *const *weights, const moe_batch &batch,
                void *const *routing) const;
  /// The weights loaded with the model, for layers compiled by
  /// Engine::compileModel (nullptr otherwise).
  const void *const *modelWeights() const;

private:
  friend class Engine;
  struct Impl;
  explicit CompiledLayer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

class Engine {
public:
  explicit Engine(EngineOptions options = {});
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  /// Compiles (or finds in the cache) the layer `spec` describes. On
  /// failure returns null and sets `*error`.
  std::shared_ptr<CompiledLayer> compile(const frontend::LayerSpec &spec,
                                         std::string *error);
  /// Imports MoE layer `layerIndex` of a Hugging Face model directory
  /// (config.json + safetensors) and compiles it; the layer keeps the
  /// imported weights (CompiledLayer::modelWeights).
  std::shared_ptr<CompiledLayer> compileModel(const std::string &directory,
                                              int64_t layerIndex,
                                              std::string *error);

  /// Compiles MLIR text holding one public function on tensors (moe ops,
  /// e.g. a `moe.layer`, and upstream ops) that takes the tokens as
  /// `tensor<?xDxf32>`, then static-shaped f32/i32 weight tensors, and
  /// returns `tensor<?xDxf32>` (examples/mixtral_layer.mlir). The layer's
  /// weights are the remaining arguments, named arg1, arg2, ...; it has no
  /// route entry (route() returns MOE_ERROR_COMPILE).
  std::shared_ptr<CompiledLayer> compileMLIR(const std::string &text,
                                             std::string *error);

  /// Compilations run (cache misses) and cache hits so far.
  uint64_t compileCount() const;
  uint64_t cacheHits() const;
  /// Milliseconds the last compilation took.
  double lastCompileMs() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// A key that is equal for layers that compile to the same code.
std::string fingerprint(const frontend::LayerSpec &spec);

} // namespace mlir::moe::runtime

#endif // MOE_RUNTIME_ENGINE_H
