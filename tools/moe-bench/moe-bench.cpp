//===- moe-bench.cpp - Time compiled MoE layers on preset shapes ----------===//
//
//   moe-bench --preset mixtral-small --tokens 1,16,128,1024 --threads 2 --json
//   moe-bench --preset mixtral-small --tokens 1,16,128,1536 --device cuda
//
// Compiles one MoE layer of a preset shape (seeded random weights) in
// process, for this CPU or (--device cuda) for CUDA device 0, and times its
// forward entry at each token count. With --json it prints one JSON object
// per line:
//
//   {"preset", "tokens", "dtype", "threads", "ms_median", "ms_min",
//    "gflops", "weight_gbps", "instances", "runs", "compile_ms", ...,
//    "device"}
//
// On the GPU the weights, batches and output stay in device memory; a time
// is the wall clock of one entry call, which returns once its GPU work is
// done.
//
// gflops counts active FLOPs: 2*T*k*3*d*ffn for SwiGLU experts, plus
// 2*T*3*d*ffn_shared for a shared expert, plus the router's 2*T*d*E.
// weight_gbps is the bytes of the expert weights a call touches (the
// distinct routed experts, plus the shared expert) over its time.
//
// Small token counts are bandwidth-bound, and this machine's last-level
// cache holds hundreds of MB: for T <= 16 the benchmark cycles through
// enough independent copies of the layer's weights ("instances") that the
// weights touched between two uses of one copy exceed 1 GiB, and each call
// takes a fresh random batch, so weights come from DRAM as in serving.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/Compiler.h"
#include "moe/Compiler/LayerModule.h"
#include "moe/Frontend/LayerSpec.h"
#include "moe/Runtime/Engine.h"

#include "../common/CUDADevice.h"

#include "mlir/IR/MLIRContext.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;
using namespace mlir::moe::frontend;
namespace cl = llvm::cl;
using namespace moe_tools;

static cl::OptionCategory category("moe-bench options");
static cl::opt<std::string>
    presetName("preset",
               cl::desc("mixtral-small, olmoe-like, deepseek-like, "
                        "switch-like, all, or custom (--hidden, --ffn, "
                        "--experts, --top-k, --shared-ffn)"),
               cl::init("mixtral-small"), cl::cat(category));
static cl::opt<std::string> tokenList("tokens",
                                      cl::desc("Comma-separated token counts"),
                                      cl::init("1,16,128,1024"),
                                      cl::cat(category));
static cl::opt<std::string> dtype("dtype",
                                  cl::desc("Expert weight type: f32 or bf16"),
                                  cl::init("f32"), cl::cat(category));
static cl::opt<bool> json("json", cl::desc("One JSON object per line"),
                          cl::cat(category));
static cl::opt<double> minSeconds("min-time",
                                  cl::desc("Seconds of timed calls per point"),
                                  cl::init(1.0), cl::cat(category));
static cl::opt<unsigned> minRuns("min-runs",
                                 cl::desc("Timed calls per point, at least"),
                                 cl::init(7), cl::cat(category));
static cl::opt<double> workingSetGiB(
    "working-set",
    cl::desc("GiB of weights touched between reuses of one copy (T <= 16)"),
    cl::init(1.0), cl::cat(category));
static cl::opt<double>
    memoryCapGiB("memory-cap",
                 cl::desc("Most GiB of weight copies to allocate"),
                 cl::init(8.0), cl::cat(category));
static cl::opt<int64_t> customHidden("hidden", cl::desc("--preset custom: d"),
                                     cl::init(1024), cl::cat(category));
static cl::opt<int64_t> customFfn("ffn", cl::desc("--preset custom: ffn"),
                                  cl::init(1024), cl::cat(category));
static cl::opt<int64_t> customExperts("experts", cl::desc("--preset custom: E"),
                                      cl::init(8), cl::cat(category));
static cl::opt<int64_t> customK("top-k", cl::desc("--preset custom: k"),
                                cl::init(2), cl::cat(category));
static cl::opt<int64_t>
    customShared("shared-ffn",
                 cl::desc("--preset custom: shared expert width (0: none)"),
                 cl::init(0), cl::cat(category));
static cl::opt<unsigned> seed("seed", cl::desc("Random seed"), cl::init(1),
                              cl::cat(category));
static cl::opt<std::string> targetCPU("target-cpu",
                                      cl::desc("native, x86-64-v3, x86-64-v4"),
                                      cl::init("native"), cl::cat(category));
static cl::opt<std::string> &schedule = addScheduleOption(category);
static cl::opt<std::string>
    device("device",
           cl::desc("cpu (default), or cuda: compile the layer for the GPU "
                    "(--target nvptx) and time it on CUDA device 0"),
           cl::init("cpu"), cl::cat(category));
static cl::opt<std::string> &chipOpt = addChipOption(category);
static cl::opt<bool> &mma = addMmaOption(category);
static cl::opt<std::string> &deviceCode = addDeviceCodeOption(category);

namespace {

[[noreturn]] void fail(const llvm::Twine &message) {
  llvm::errs() << "moe-bench: error: " << message << "\n";
  exit(2);
}

} // namespace

void moe_tools::toolFail(const llvm::Twine &message) { fail(message); }

namespace {

bool onGPU() { return device == "cuda"; }

struct Preset {
  const char *name;
  int64_t d, ffn, E, k, sharedFfn;
  bool renormalize;
  double capacityFactor; ///< 0: no capacity limit
};

// The shapes named in issue 4, all SwiGLU experts with softmax top-k.
const Preset kPresets[] = {
    {"mixtral-small", 1024, 3584, 8, 2, 0, true, 0.0},
    {"olmoe-like", 2048, 1024, 64, 8, 0, false, 0.0},
    {"deepseek-like", 2048, 1408, 64, 6, 2816, false, 0.0},
    {"switch-like", 768, 3072, 128, 1, 0, false, 1.25},
};

LayerSpec makeSpec(const Preset &p) {
  LayerSpec spec;
  spec.name = "bench";
  spec.hidden = p.d;
  spec.ffn = p.ffn;
  spec.numExperts = p.E;
  spec.router.k = p.k;
  spec.router.renormalize = p.renormalize;
  if (p.capacityFactor > 0) {
    spec.router.capacity.enabled = true;
    spec.router.capacity.factor = p.capacityFactor;
  }
  spec.sharedFfn = p.sharedFfn;
  return spec;
}

/// A fast deterministic fill: uniform in [-scale, scale).
void fillUniform(std::vector<float> &v, size_t n, float scale, uint64_t s) {
  v.resize(n);
  uint64_t x = s * 0x9E3779B97F4A7C15ull + 1;
  for (float &f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = scale * (float((x >> 40) & 0xFFFFFF) / float(1 << 23) - 1.0f);
  }
}

LayerWeights makeWeights(const LayerSpec &spec, uint64_t s) {
  LayerWeights w;
  int64_t d = spec.hidden, E = spec.numExperts, F = spec.ffn;
  float inScale = 1.0f / std::sqrt(float(d));
  fillUniform(w.gate, E * d, inScale, s + 1);
  fillUniform(w.w1, E * 2 * F * d, inScale, s + 2);
  fillUniform(w.w2, E * d * F, 1.0f / std::sqrt(float(F)), s + 3);
  if (spec.sharedFfn) {
    fillUniform(w.sharedW1, 2 * spec.sharedFfn * d, inScale, s + 4);
    fillUniform(w.sharedW2, d * spec.sharedFfn,
                1.0f / std::sqrt(float(spec.sharedFfn)), s + 5);
  }
  return w;
}

double median(std::vector<double> v) {
  llvm::sort(v);
  return v[v.size() / 2];
}

/// A compiled layer's entries: from the embedding engine's cache on the CPU,
/// or from a JIT module of the NVPTX pipeline's host code for CUDA.
struct BenchLayer {
  ForwardFn forward = nullptr;
  RouteFn route = nullptr;
  std::shared_ptr<runtime::CompiledLayer> cached;
  std::unique_ptr<JitModule> jit;
  std::unique_ptr<MLIRContext> context;
  double compileMs = 0;
};

BenchLayer compileForGPU(const LayerABI &abi, llvm::StringRef chip, bool mma) {
  BenchLayer layer;
  auto start = std::chrono::steady_clock::now();
  DialectRegistry registry;
  registerCompilerDialects(registry);
  layer.context = std::make_unique<MLIRContext>(registry);
  OwningOpRef<ModuleOp> module = buildLayerModule(layer.context.get(), {abi});
  if (llvm::Error error = lowerToLLVMForNVPTX(
          *module, {abi}, chip, deviceCodeFormat(deviceCode), mma))
    fail(llvm::toString(std::move(error)));
  CodegenOptions options;
  options.sharedLibraries.push_back(getCUDARuntimeLibrary().str());
  auto jit = JitModule::create(*module, options);
  if (!jit)
    fail(llvm::toString(jit.takeError()));
  layer.jit = std::move(*jit);
  auto lookup = [&](const std::string &name) {
    auto symbol = layer.jit->lookup(name);
    if (!symbol)
      fail(llvm::toString(symbol.takeError()));
    return *symbol;
  };
  layer.forward = reinterpret_cast<ForwardFn>(lookup(abi.symbol));
  layer.route = reinterpret_cast<RouteFn>(lookup(abi.symbol + "_route"));
  layer.compileMs = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  return layer;
}

/// Copies of a layer's weights ("instances") and their weight tables: host
/// copies on the CPU, device copies of one host copy for CUDA.
class WeightCopies {
public:
  WeightCopies(const LayerABI &abi, LayerWeights first) : abi(abi) {
    host.push_back(std::move(first));
    resize(1);
  }

  void resize(size_t count) {
    if (onGPU()) {
      while (device.size() < count) {
        tables.emplace_back();
        device.push_back(copyWeightsToDevice(abi, host[0], tables.back()));
      }
      device.resize(count);
      tables.resize(count);
      return;
    }
    while (host.size() < count)
      host.push_back(host.front());
    host.resize(count);
    tables.clear();
    for (const LayerWeights &w : host)
      tables.push_back(getWeightPointers(abi, w));
  }

  const void *const *table(size_t i) const { return tables[i].data(); }

private:
  const LayerABI &abi;
  std::vector<LayerWeights> host;
  std::vector<std::vector<DeviceBuffer>> device;
  std::vector<std::vector<const void *>> tables;
};

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::opt<int> &numThreads = addThreadsOption(category);
  cl::ParseCommandLineOptions(argc, argv, "moe-mlir layer benchmark\n");
  if (numThreads < 0)
    fail("--threads must be 0 or more");
  setNumThreads(numThreads);
  WeightType weightType;
  if (!parseWeightType(dtype, weightType))
    fail("--dtype must be f32 or bf16, not '" + dtype + "'");
  if (device != "cpu" && device != "cuda")
    fail("--device must be cpu or cuda, not '" + device + "'");
  if (onGPU() && !schedule.empty())
    fail("--schedule applies to --device cpu only");
  checkChipOption(chipOpt);
  if (mma && !onGPU())
    fail("--mma applies to --device cuda only");
  if (deviceCode.getNumOccurrences() && !onGPU())
    fail("--device-code applies to --device cuda only");
  deviceCodeFormat(deviceCode);

  std::vector<const Preset *> presets;
  Preset custom{"custom", customHidden, customFfn, customExperts,
                customK,  customShared, true,      0.0};
  if (presetName == "custom") {
    if (custom.d < 1 || custom.ffn < 1 || custom.E < 1 || custom.k < 1 ||
        custom.k > custom.E || custom.sharedFfn < 0)
      fail("--preset custom needs --hidden, --ffn, --experts >= 1 and "
           "1 <= --top-k <= --experts");
    presets.push_back(&custom);
  }
  for (const Preset &p : kPresets)
    if (presetName == "all" || presetName == p.name)
      presets.push_back(&p);
  if (presets.empty())
    fail("unknown --preset '" + presetName +
         "' (mixtral-small, olmoe-like, deepseek-like, switch-like, all)");
  std::vector<int64_t> tokenCounts;
  llvm::SmallVector<llvm::StringRef> parts;
  llvm::StringRef(tokenList).split(parts, ',', -1, false);
  for (llvm::StringRef part : parts) {
    int64_t t;
    if (part.trim().getAsInteger(10, t) || t < 1)
      fail("--tokens: '" + part + "' is not a positive integer");
    tokenCounts.push_back(t);
  }
  if (tokenCounts.empty())
    fail("--tokens is empty");

  std::string chip = onGPU() ? selectCUDAChip(chipOpt) : std::string();

  // CPU layers are compiled through the embedding API's engine, as a
  // serving engine would: once per layer, then every token count is a cache
  // hit.
  runtime::EngineOptions engineOptions;
  engineOptions.targetCPU = targetCPU;
  engineOptions.schedule = schedule;
  runtime::Engine engine(engineOptions);

  for (const Preset *p : presets) {
    LayerSpec spec = makeSpec(*p);
    spec.expertWeights = weightType;
    LayerABI abi = describeLayer(spec, "bench");
    std::string error;
    BenchLayer layer;
    if (onGPU()) {
      layer = compileForGPU(abi, chip, mma);
    } else {
      layer.cached = engine.compile(spec, &error);
      if (!layer.cached)
        fail(error);
      layer.compileMs = engine.lastCompileMs();
    }
    const double compileMs = layer.compileMs;
    // Entries on weight tables and batches in the layer's memory (host or
    // device).
    auto forward = [&](const void *const *w, const MoEBatch *batch, float *y) {
      if (onGPU())
        return layer.forward(w, batch, y);
      return layer.cached->run(w, *reinterpret_cast<const moe_batch *>(batch),
                               y);
    };
    // The router on a host batch, its outputs in host memory.
    auto route = [&](const void *const *w, const MoEBatch &batch,
                     RoutingBuffers &routing) {
      if (onGPU()) {
        std::vector<DeviceBuffer> keep;
        MoEBatch deviceBatch = copyBatchToDevice(batch, p->d, keep);
        return routeOnDevice(abi, layer.route, w, deviceBatch, routing);
      }
      std::vector<void *> pointers = routing.pointers(abi);
      return layer.cached->route(
          w, *reinterpret_cast<const moe_batch *>(&batch), pointers.data());
    };

    const int64_t d = p->d;
    const double weightBytes = weightType == WeightType::BF16 ? 2 : 4;
    const double expertBytes = 3.0 * d * p->ffn * weightBytes;
    const double sharedBytes = 3.0 * d * p->sharedFfn * weightBytes;
    const double layerBytes = p->E * expertBytes + sharedBytes;
    LayerWeights weights = makeWeights(spec, seed);
    if (weightType == WeightType::BF16)
      convertExpertWeightsToBF16(weights, /*keepF32=*/false);
    WeightCopies copies(abi, std::move(weights));
    if (!json)
      llvm::outs() << llvm::formatv(
          "{0}: d {1}, ffn {2}, E {3}, k {4}{5}; {6:f2} GiB of weights, "
          "JIT-compiled{8} in {7:f0} ms\n",
          p->name, d, p->ffn, p->E, p->k,
          p->sharedFfn ? llvm::formatv(", shared {0}", p->sharedFfn).str()
                       : std::string(),
          layerBytes / (1 << 30), compileMs,
          onGPU() ? " for " + chip : std::string());

    for (int64_t T : tokenCounts) {
      // What a serving loop does per batch: ask for the layer (a hit).
      if (!onGPU() && !engine.compile(spec, &error))
        fail(error);
      // Random batches, one per call in a cycle.
      const int batches = 8;
      std::mt19937 rng(seed + T);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<std::vector<float>> xs(batches);
      for (auto &x : xs) {
        x.resize(T * d);
        for (float &v : x)
          v = normal(rng);
      }
      // Active experts per batch, from the compiled router.
      double activeBytes = 0;
      for (auto &x : xs) {
        MoEBatch batch{T, x.data(), nullptr, 0, nullptr, 0};
        RoutingBuffers routing(abi, T);
        if (route(copies.table(0), batch, routing) < 0)
          fail("routing failed");
        int64_t used =
            llvm::count_if(routing.load, [](int32_t l) { return l > 0; });
        activeBytes += used * expertBytes + sharedBytes;
      }
      activeBytes /= batches;

      // Enough weight copies that the bytes touched between two uses of
      // one copy exceed the working set (T <= 16 only).
      size_t instances = 1;
      if (T <= 16) {
        double ws = workingSetGiB * double(1 << 30);
        size_t byActive = size_t(std::ceil(ws / activeBytes)) + 1;
        size_t cap = std::max<size_t>(
            1, size_t(memoryCapGiB * double(1 << 30) / layerBytes));
        instances = std::max<size_t>(size_t(std::ceil(ws / layerBytes)),
                                     std::min(byActive, cap));
      }
      copies.resize(instances);

      // The batches and the output where the layer runs.
      std::vector<const float *> xIn;
      std::vector<DeviceBuffer> xDevice;
      for (auto &x : xs) {
        if (onGPU())
          xDevice.emplace_back(x.data(), x.size() * sizeof(float));
        xIn.push_back(onGPU() ? static_cast<const float *>(xDevice.back().get())
                              : x.data());
      }
      std::vector<float> yHost(onGPU() ? 0 : T * d);
      std::optional<DeviceBuffer> yDevice;
      if (onGPU())
        yDevice.emplace(nullptr, T * d * sizeof(float));
      float *y = onGPU() ? static_cast<float *>(yDevice->get()) : yHost.data();
      auto call = [&](size_t i) {
        MoEBatch batch{T, xIn[i % batches], nullptr, 0, nullptr, 0};
        int32_t status = forward(copies.table(i % instances), &batch, y);
        if (onGPU())
          checkDeviceStatus(status, "the layer");
        if (status < 0)
          fail("forward returned status " + llvm::Twine(status));
      };
      // Warm up: every copy once (page faults, caches of the allocator).
      for (size_t i = 0; i < std::max<size_t>(instances, 2); ++i)
        call(i);
      std::vector<double> times;
      double total = 0;
      for (size_t i = 0; times.size() < minRuns || total < minSeconds; ++i) {
        auto start = std::chrono::steady_clock::now();
        call(i);
        double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count();
        times.push_back(ms);
        total += ms / 1000;
        if (times.size() >= 2000)
          break;
      }
      double med = median(times);
      double minMs = *llvm::min_element(times);
      double flops = 2.0 * T * p->k * 3 * d * p->ffn +
                     2.0 * T * 3 * d * p->sharedFfn + 2.0 * T * d * p->E;
      double gflops = flops / (med * 1e6);
      double gbps = activeBytes / (med * 1e6);
      // The engine's counters on the CPU; the GPU layer is compiled once,
      // outside it.
      std::string where =
          onGPU() ? "\"compiles\": 1, \"cache_hits\": 0, \"device\": \"cuda\", "
                    "\"chip\": \"" +
                        chip + "\", \"mma\": " + (mma ? "true" : "false")
                  : llvm::formatv("\"compiles\": {0}, \"cache_hits\": {1}, "
                                  "\"device\": \"cpu\"",
                                  engine.compileCount(), engine.cacheHits())
                        .str();
      if (json)
        llvm::outs() << llvm::formatv(
            "{{\"preset\": \"{0}\", \"tokens\": {1}, \"dtype\": \"{2}\", "
            "\"threads\": {3}, \"ms_median\": {4:f4}, \"ms_min\": {5:f4}, "
            "\"gflops\": {6:f1}, \"weight_gbps\": {7:f2}, \"instances\": {8}, "
            "\"runs\": {9}, \"compile_ms\": {10:f1}, {11}}\n",
            p->name, T, std::string(dtype), int(numThreads), med, minMs, gflops,
            gbps, instances, times.size(), compileMs, where);
      else
        llvm::outs() << llvm::formatv(
            "  T {0,5}: median {1,9:f3} ms  min {2,9:f3} ms  {3,7:f1} GFLOP/s "
            " {4,6:f1} GB/s of weights  ({5} copies, {6} runs)\n",
            T, med, minMs, gflops, gbps, instances, times.size());
      llvm::outs().flush();
    }
  }
  return 0;
}
