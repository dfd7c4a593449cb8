//===- Engine.cpp - The embedding API: compile cache and layer handles ----===//

#include "moe/Runtime/Engine.h"

#include "moe/Compiler/Compiler.h"
#include "moe/Compiler/LayerModule.h"
#include "moe/Frontend/ModelImport.h"

#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/FormatVariadic.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::runtime;

namespace {

/// Compiled code shared by every handle of one cache entry.
struct Kernel {
  std::unique_ptr<MLIRContext> context;
  std::unique_ptr<compiler::JitModule> jit;
  compiler::ForwardFn forward = nullptr;
  compiler::RouteFn route = nullptr;
};

constexpr const char *kSymbol = "moe_layer";

} // namespace

struct CompiledLayer::Impl {
  std::shared_ptr<Kernel> kernel;
  frontend::LayerSpec spec;
  std::vector<WeightInfo> weights;
  std::shared_ptr<frontend::LayerWeights> modelWeights;
  std::vector<const void *> modelPointers;
};

CompiledLayer::CompiledLayer(std::unique_ptr<Impl> impl)
    : impl(std::move(impl)) {}
CompiledLayer::~CompiledLayer() = default;

const frontend::LayerSpec &CompiledLayer::spec() const { return impl->spec; }

const std::vector<WeightInfo> &CompiledLayer::weights() const {
  return impl->weights;
}

int32_t CompiledLayer::run(const void *const *weights, const moe_batch &batch,
                           float *y) const {
  // moe_batch and compiler::MoEBatch are the same struct (the ABI).
  static_assert(sizeof(moe_batch) == sizeof(compiler::MoEBatch));
  return impl->kernel->forward(
      weights, reinterpret_cast<const compiler::MoEBatch *>(&batch), y);
}

int32_t CompiledLayer::route(const void *const *weights, const moe_batch &batch,
                             void *const *routing) const {
  return impl->kernel->route(
      weights, reinterpret_cast<const compiler::MoEBatch *>(&batch), routing);
}

const void *const *CompiledLayer::modelWeights() const {
  return impl->modelWeights ? impl->modelPointers.data() : nullptr;
}

std::string mlir::moe::runtime::fingerprint(const frontend::LayerSpec &s) {
  const frontend::RouterSpec &r = s.router;
  const frontend::CapacitySpec &c = r.capacity;
  // Every field that changes the generated code (not the name or index).
  return llvm::formatv(
             "d{0} f{1} e{2} a{3} gb{4} sf{5} sg{6} hv{7} sl{8} | r{9} k{10} "
             "s{11} rn{12} sc{13:e} sb{14} ng{15} tg{16} sa{17} p{18:e} "
             "cf{19:e} ne{20} | c{21} {22:e} {23} {24} {25}",
             s.hidden, s.ffn, s.numExperts, int(s.activation), s.gateBias,
             s.sharedFfn, s.sharedGate, s.hashVocab, s.sequenceLength,
             int(r.family), r.k, int(r.scoring), r.renormalize, r.scale,
             r.selectionBias, r.nGroup, r.topkGroup, r.softmaxAfter, r.p,
             r.capacityFactor, r.nullExperts, c.enabled, c.factor, c.absolute,
             int(c.group), int(c.overflow))
      .str();
}

struct Engine::Impl {
  EngineOptions options;
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<Kernel>> cache;
  uint64_t compiles = 0, hits = 0;
  double lastMs = 0;

  /// The kernel for `spec`, compiled or from the cache.
  std::shared_ptr<Kernel> kernelFor(const frontend::LayerSpec &spec,
                                    std::string *error) {
    std::string key = fingerprint(spec) + " @" + options.targetCPU;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      ++hits;
      return it->second;
    }
    auto start = std::chrono::steady_clock::now();
    auto kernel = std::make_shared<Kernel>();
    DialectRegistry registry;
    compiler::registerCompilerDialects(registry);
    // No thread pool per compile: compiles are serialized here anyway, and
    // each context would otherwise start (and keep) its own workers.
    kernel->context = std::make_unique<MLIRContext>(
        registry, MLIRContext::Threading::DISABLED);
    compiler::LayerABI abi = compiler::describeLayer(spec, kSymbol);
    OwningOpRef<ModuleOp> module =
        compiler::buildLayerModule(kernel->context.get(), {abi});
    auto fail = [&](llvm::Error e) {
      if (error)
        *error = llvm::toString(std::move(e));
      return nullptr;
    };
    if (llvm::Error e =
            compiler::lowerToLLVM(*module, {abi}, options.cachingAllocator))
      return fail(std::move(e));
    compiler::CodegenOptions codegen;
    codegen.targetCPU = options.targetCPU;
    auto jit = compiler::JitModule::create(*module, codegen);
    if (!jit)
      return fail(jit.takeError());
    kernel->jit = std::move(*jit);
    auto forward = kernel->jit->lookup(kSymbol);
    if (!forward)
      return fail(forward.takeError());
    kernel->forward = reinterpret_cast<compiler::ForwardFn>(*forward);
    auto route = kernel->jit->lookup(std::string(kSymbol) + "_route");
    if (!route)
      return fail(route.takeError());
    kernel->route = reinterpret_cast<compiler::RouteFn>(*route);
    ++compiles;
    lastMs = std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - start)
                 .count();
    cache[key] = kernel;
    return kernel;
  }
};

Engine::Engine(EngineOptions options) : impl(std::make_unique<Impl>()) {
  impl->options = std::move(options);
  if (const char *plain = std::getenv("MOE_ENGINE_PLAIN_MALLOC"))
    if (*plain && std::string(plain) != "0")
      impl->options.cachingAllocator = false;
  compiler::setNumThreads(impl->options.threads);
}

Engine::~Engine() = default;

namespace {

std::string validate(const frontend::LayerSpec &spec) {
  if (spec.hidden <= 0 || spec.ffn <= 0 || spec.numExperts <= 0)
    return "hidden, ffn and the expert count must be positive";
  const frontend::RouterSpec &r = spec.router;
  if (r.family == frontend::RouterFamily::TopK &&
      (r.k < 1 || r.k > spec.numExperts + r.nullExperts))
    return "top-k needs 1 <= k <= experts";
  if (spec.sharedFfn < 0)
    return "the shared expert width must be 0 or positive";
  return "";
}

std::vector<WeightInfo> weightInfos(const frontend::LayerSpec &spec) {
  compiler::LayerABI abi = compiler::describeLayer(spec, kSymbol);
  std::vector<WeightInfo> infos;
  for (const compiler::EntryArg &w : abi.weights) {
    int64_t n = 1;
    for (const compiler::DimSpec &dim : w.shape)
      n *= dim.extent;
    infos.push_back({w.name, w.ctype, n});
  }
  return infos;
}

} // namespace

std::shared_ptr<CompiledLayer> Engine::compile(const frontend::LayerSpec &spec,
                                               std::string *error) {
  std::string problem = validate(spec);
  if (!problem.empty()) {
    if (error)
      *error = "invalid layer: " + problem;
    return nullptr;
  }
  std::shared_ptr<Kernel> kernel = impl->kernelFor(spec, error);
  if (!kernel)
    return nullptr;
  auto layer = std::make_unique<CompiledLayer::Impl>();
  layer->kernel = std::move(kernel);
  layer->spec = spec;
  layer->weights = weightInfos(spec);
  return std::shared_ptr<CompiledLayer>(new CompiledLayer(std::move(layer)));
}

std::shared_ptr<CompiledLayer>
Engine::compileModel(const std::string &directory, int64_t layerIndex,
                     std::string *error) {
  auto model = frontend::importModel(directory, layerIndex);
  if (!model) {
    if (error)
      *error = llvm::toString(model.takeError());
    return nullptr;
  }
  if (model->layers.empty()) {
    if (error)
      *error = llvm::formatv("the model in '{0}' has no MoE layer {1}",
                             directory, layerIndex)
                   .str();
    return nullptr;
  }
  std::shared_ptr<CompiledLayer> layer = compile(model->layers[0], error);
  if (!layer)
    return nullptr;
  layer->impl->modelWeights =
      std::make_shared<frontend::LayerWeights>(std::move(model->weights[0]));
  compiler::LayerABI abi = compiler::describeLayer(model->layers[0], kSymbol);
  layer->impl->modelPointers =
      compiler::getWeightPointers(abi, *layer->impl->modelWeights);
  return layer;
}

uint64_t Engine::compileCount() const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  return impl->compiles;
}

uint64_t Engine::cacheHits() const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  return impl->hits;
}

double Engine::lastCompileMs() const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  return impl->lastMs;
}
