//===- Engine.cpp - The embedding API: compile cache and layer handles ----===//

#include "moe/Runtime/Engine.h"

#include "moe/Compiler/Compiler.h"
#include "moe/Compiler/LayerModule.h"
#include "moe/Frontend/ModelImport.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/FormatVariadic.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::runtime;

namespace {

constexpr const char *kSymbol = "moe_layer";

/// Compiled code shared by every handle of one cache entry. The forward
/// entry is compiled up front; the route entry, which serving loops rarely
/// call, on its first use.
struct Kernel {
  frontend::LayerSpec spec;
  std::vector<WeightInfo> weights;
  /// Compiled from MLIR text: no route entry.
  bool fromText = false;
  std::string targetCPU, schedule;
  bool cachingAllocator = true;
  std::unique_ptr<compiler::JitModule> forwardJit, routeJit;
  compiler::ForwardFn forward = nullptr;
  compiler::RouteFn route = nullptr;
  std::mutex routeMutex;
};

/// The part of a cache key that the engine's options add to the layer's.
std::string cacheSuffix(const EngineOptions &options) {
  return " @" + options.targetCPU + " schedule:" + options.schedule;
}

/// A context for one compile. No thread pool: compiles are serialized by
/// the engine, and each context would otherwise start its own workers.
std::unique_ptr<MLIRContext> compileContext() {
  DialectRegistry registry;
  compiler::registerCompilerDialects(registry);
  return std::make_unique<MLIRContext>(registry,
                                       MLIRContext::Threading::DISABLED);
}

/// Lowers `module` (layer `abi`'s entries) for `kernel`'s target,
/// JIT-compiles it into `jit` and returns the address of `symbol`.
llvm::Expected<void *> jitCompile(ModuleOp module,
                                  const compiler::LayerABI &abi,
                                  const Kernel &kernel, StringRef symbol,
                                  std::unique_ptr<compiler::JitModule> &jit) {
  if (llvm::Error e = compiler::lowerToLLVM(
          module, {abi}, kernel.cachingAllocator,
          /*openmp=*/true, kernel.targetCPU, kernel.schedule,
          /*runsInThisProcess=*/true))
    return std::move(e);
  compiler::CodegenOptions codegen;
  codegen.targetCPU = kernel.targetCPU;
  auto created = compiler::JitModule::create(module, codegen);
  if (!created)
    return created.takeError();
  jit = std::move(*created);
  return jit->lookup(symbol);
}

/// JIT-compiles one entry of `kernel`'s layer into `jit`; returns its
/// address.
llvm::Expected<void *> compileEntry(Kernel &kernel,
                                    compiler::LayerEntries entry,
                                    std::unique_ptr<compiler::JitModule> &jit) {
  std::unique_ptr<MLIRContext> context = compileContext();
  compiler::LayerABI abi = compiler::describeLayer(kernel.spec, kSymbol);
  OwningOpRef<ModuleOp> module =
      compiler::buildLayerModule(context.get(), {abi}, entry);
  std::string symbol = kSymbol;
  if (entry == compiler::LayerEntries::Route)
    symbol += "_route";
  return jitCompile(*module, abi, kernel, symbol, jit);
}

/// The weights layer `abi` takes.
std::vector<WeightInfo> weightInfos(const compiler::LayerABI &abi) {
  std::vector<WeightInfo> infos;
  for (const compiler::EntryArg &w : abi.weights)
    infos.push_back({w.name, w.ctype, compiler::numElements(w)});
  return infos;
}

} // namespace

struct CompiledLayer::Impl {
  std::shared_ptr<Kernel> kernel;
  frontend::LayerSpec spec; ///< as asked for (name and index included)
  std::shared_ptr<frontend::LayerWeights> modelWeights;
  std::vector<const void *> modelPointers;
};

CompiledLayer::CompiledLayer(std::unique_ptr<Impl> impl)
    : impl(std::move(impl)) {}
CompiledLayer::~CompiledLayer() = default;

const frontend::LayerSpec &CompiledLayer::spec() const { return impl->spec; }

const std::vector<WeightInfo> &CompiledLayer::weights() const {
  return impl->kernel->weights;
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
  Kernel &kernel = *impl->kernel;
  {
    std::lock_guard<std::mutex> lock(kernel.routeMutex);
    if (kernel.fromText)
      return MOE_ERROR_COMPILE;
    if (!kernel.route) {
      auto address =
          compileEntry(kernel, compiler::LayerEntries::Route, kernel.routeJit);
      if (!address) {
        llvm::consumeError(address.takeError());
        return MOE_ERROR_COMPILE;
      }
      kernel.route = reinterpret_cast<compiler::RouteFn>(*address);
    }
  }
  return kernel.route(
      weights, reinterpret_cast<const compiler::MoEBatch *>(&batch), routing);
}

int32_t CompiledLayer::run(const void *const *weights, int64_t numTokens,
                           const float *x, float *y) const {
  moe_batch batch = {};
  batch.num_tokens = numTokens;
  batch.x = x;
  return run(weights, batch, y);
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
             "cf{19:e} ne{20} | c{21} {22:e} {23} {24} {25} | w{26}",
             s.hidden, s.ffn, s.numExperts, int(s.activation), s.gateBias,
             s.sharedFfn, s.sharedGate, s.hashVocab, s.sequenceLength,
             int(r.family), r.k, int(r.scoring), r.renormalize, r.scale,
             r.selectionBias, r.nGroup, r.topkGroup, r.softmaxAfter, r.p,
             r.capacityFactor, r.nullExperts, c.enabled, c.factor, c.absolute,
             int(c.group), int(c.overflow), int(s.expertWeights))
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
    std::string key = fingerprint(spec) + cacheSuffix(options);
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      ++hits;
      return it->second;
    }
    auto start = std::chrono::steady_clock::now();
    auto kernel = std::make_shared<Kernel>();
    kernel->spec = spec;
    kernel->weights = weightInfos(compiler::describeLayer(spec, kSymbol));
    kernel->targetCPU = options.targetCPU;
    kernel->schedule = options.schedule;
    kernel->cachingAllocator = options.cachingAllocator;
    auto forward = compileEntry(*kernel, compiler::LayerEntries::Forward,
                                kernel->forwardJit);
    if (!forward) {
      if (error)
        *error = llvm::toString(forward.takeError());
      return nullptr;
    }
    kernel->forward = reinterpret_cast<compiler::ForwardFn>(*forward);
    ++compiles;
    lastMs = std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - start)
                 .count();
    cache[key] = kernel;
    return kernel;
  }
};

std::shared_ptr<CompiledLayer> Engine::compileMLIR(const std::string &text,
                                                   std::string *error) {
  auto fail = [&](const std::string &message) {
    if (error)
      *error = message;
    return nullptr;
  };
  std::string key = "mlir:" + text + cacheSuffix(impl->options);
  std::lock_guard<std::mutex> lock(impl->mutex);
  std::shared_ptr<Kernel> kernel;
  auto it = impl->cache.find(key);
  if (it != impl->cache.end()) {
    ++impl->hits;
    kernel = it->second;
  } else {
    auto start = std::chrono::steady_clock::now();
    std::unique_ptr<MLIRContext> context = compileContext();
    compiler::DiagnosticCollector diagnostics(context.get());
    OwningOpRef<ModuleOp> module =
        parseSourceString<ModuleOp>(text, context.get());
    if (!module)
      return fail("cannot parse the MLIR text:\n" + diagnostics.text);
    auto abi = compiler::wrapLayerFunction(*module, kSymbol);
    if (!abi)
      return fail(llvm::toString(abi.takeError()));
    kernel = std::make_shared<Kernel>();
    kernel->spec = abi->spec;
    kernel->weights = weightInfos(*abi);
    kernel->fromText = true;
    kernel->targetCPU = impl->options.targetCPU;
    kernel->schedule = impl->options.schedule;
    kernel->cachingAllocator = impl->options.cachingAllocator;
    auto forward =
        jitCompile(*module, *abi, *kernel, kSymbol, kernel->forwardJit);
    if (!forward)
      return fail(llvm::toString(forward.takeError()));
    kernel->forward = reinterpret_cast<compiler::ForwardFn>(*forward);
    ++impl->compiles;
    impl->lastMs = std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - start)
                       .count();
    impl->cache[key] = kernel;
  }
  auto layer = std::make_unique<CompiledLayer::Impl>();
  layer->spec = kernel->spec;
  layer->kernel = std::move(kernel);
  return std::shared_ptr<CompiledLayer>(new CompiledLayer(std::move(layer)));
}

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
  return std::shared_ptr<CompiledLayer>(new CompiledLayer(std::move(layer)));
}

std::shared_ptr<CompiledLayer>
Engine::compileModel(const std::string &directory, int64_t layerIndex,
                     std::string *error) {
  frontend::WeightType weightType;
  if (!frontend::parseWeightType(impl->options.dtype, weightType)) {
    if (error)
      *error = "dtype '" + impl->options.dtype + "': expected f32 or bf16";
    return nullptr;
  }
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
  frontend::setExpertWeights(*model, weightType, /*keepF32=*/false);
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
