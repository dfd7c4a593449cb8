//===- moe-run.cpp - Compile and run MoE layers of a model ----------------===//
//
//   moe-run --model DIR --check IO.safetensors [--mode jit|aot] [--layer N]
//   moe-run --model DIR [--tokens T] [--seed S] [--repeat N] [--threads N]
//   moe-run ... --device cuda [--chip sm_80|sm_90]
//
// Imports a Hugging Face MoE model, compiles its MoE layers for this CPU
// (in process, or ahead of time into an object file linked into a shared
// object and loaded), and either checks them against expected tensors or
// runs them on seeded random tokens and reports time and expert load.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/Compiler.h"
#include "moe/Frontend/ModelImport.h"
#include "moe/Frontend/SafeTensors.h"
#include "moe/Runtime/moe_cuda.h"

#include "../common/CUDADevice.h"

#include "mlir/IR/MLIRContext.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <dlfcn.h>
#include <functional>
#include <map>
#include <random>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;
using namespace mlir::moe::frontend;
namespace cl = llvm::cl;
using namespace moe_tools;

static cl::OptionCategory category("moe-run options");
static cl::opt<std::string> modelDir("model", cl::desc("Model directory"),
                                     cl::value_desc("dir"), cl::Required,
                                     cl::cat(category));
static cl::opt<std::string>
    checkFile("check",
              cl::desc("safetensors file with layers.L.input / "
                       "layers.L.output (and routing tensors) to compare"),
              cl::value_desc("io.safetensors"), cl::cat(category));
static cl::opt<std::string> mode("mode", cl::desc("jit (default) or aot"),
                                 cl::init("jit"), cl::cat(category));
static cl::opt<int64_t> onlyLayer("layer",
                                  cl::desc("Only this model layer index"),
                                  cl::init(-1), cl::cat(category));
static cl::opt<int64_t> numTokens("tokens",
                                  cl::desc("Random tokens without --check"),
                                  cl::init(64), cl::cat(category));
static cl::opt<unsigned> seed("seed", cl::desc("Random seed"), cl::init(1),
                              cl::cat(category));
static cl::opt<unsigned> repeat("repeat",
                                cl::desc("Timed runs without --check"),
                                cl::init(10), cl::cat(category));
static cl::opt<std::string>
    dtype("dtype", cl::desc("Expert weight type: f32 (default) or bf16"),
          cl::init("f32"), cl::cat(category));
static cl::opt<std::string> targetCPU("target-cpu",
                                      cl::desc("native, x86-64-v3, x86-64-v4"),
                                      cl::init("native"), cl::cat(category));
static cl::opt<std::string> &schedule = addScheduleOption(category);
static cl::opt<std::string>
    device("device",
           cl::desc("cpu (default), or cuda: compile the layers for the GPU "
                    "(--target nvptx) and run them on CUDA device 0"),
           cl::init("cpu"), cl::cat(category));
static cl::opt<std::string> &chipOpt = addChipOption(category);
static cl::opt<bool> &mma = addMmaOption(category);
static cl::opt<std::string> &deviceCode = addDeviceCodeOption(category);
static cl::opt<double> relTol("rtol", cl::desc("Relative tolerance"),
                              cl::init(1e-4), cl::cat(category));
static cl::opt<double> absTol("atol", cl::desc("Absolute tolerance"),
                              cl::init(1e-5), cl::cat(category));

namespace {

[[noreturn]] void fail(const llvm::Twine &message) {
  llvm::errs() << "moe-run: error: " << message << "\n";
  exit(2);
}

} // namespace

void moe_tools::toolFail(const llvm::Twine &message) { fail(message); }

namespace {

template <typename T> T check(llvm::Expected<T> value) {
  if (!value)
    fail(llvm::toString(value.takeError()));
  return std::move(*value);
}

/// The compiled entries of every layer, from the JIT or a loaded library.
struct Entries {
  std::vector<ForwardFn> forward;
  std::vector<RouteFn> route;
  std::unique_ptr<JitModule> jit;
  void *library = nullptr;
};

/// How one layer's entries are called on host buffers: directly, or
/// through device copies (--device cuda).
struct LayerCalls {
  std::function<int32_t(const MoEBatch &, float *y)> forward;
  std::function<int32_t(const MoEBatch &, RoutingBuffers &)> route;
};

bool onGPU() { return device == "cuda"; }

LayerCalls makeCalls(const LayerABI &abi, const LayerWeights &w,
                     ForwardFn forward, RouteFn route) {
  std::vector<const void *> host = getWeightPointers(abi, w);
  if (!onGPU())
    return {[=](const MoEBatch &batch, float *y) {
              return forward(host.data(), &batch, y);
            },
            [=, &abi](const MoEBatch &batch, RoutingBuffers &out) {
              std::vector<void *> pointers = out.pointers(abi);
              return route(host.data(), &batch, pointers.data());
            }};
  // Weights are copied to the device once (the lambdas own the copies);
  // the batch arrays and outputs per call.
  struct DeviceWeights {
    std::vector<const void *> table;
    std::vector<DeviceBuffer> buffers;
  };
  auto weights = std::make_shared<DeviceWeights>();
  weights->buffers = copyWeightsToDevice(abi, w, weights->table);
  int64_t hidden = abi.spec.hidden;
  std::string symbol = abi.symbol;
  return {[=](const MoEBatch &batch, float *y) {
            std::vector<DeviceBuffer> keep;
            MoEBatch d = copyBatchToDevice(batch, hidden, keep);
            DeviceBuffer out(nullptr, std::max<int64_t>(batch.num_tokens, 0) *
                                          hidden * sizeof(float));
            int32_t status = checkDeviceStatus(
                forward(weights->table.data(), &d, (float *)out.get()), symbol);
            if (status >= 0)
              out.copyTo(y);
            return status;
          },
          [=, &abi](const MoEBatch &batch, RoutingBuffers &routing) {
            std::vector<DeviceBuffer> keep;
            MoEBatch d = copyBatchToDevice(batch, hidden, keep);
            return routeOnDevice(abi, route, weights->table.data(), d, routing);
          }};
}

std::string findCCompiler() {
  for (const char *name : {"cc", "clang-22", "clang", "gcc"})
    if (auto path = llvm::sys::findProgramByName(name))
      return *path;
  fail("--mode aot needs a C compiler driver (cc, clang or gcc) to link the "
       "object file into a shared object");
}

Entries compile(ModuleOp module, ArrayRef<LayerABI> abis) {
  CodegenOptions options;
  options.targetCPU = targetCPU;
  Entries entries;
  auto resolve = [&](auto lookup) {
    for (const LayerABI &abi : abis) {
      entries.forward.push_back(
          reinterpret_cast<ForwardFn>(lookup(abi.symbol)));
      entries.route.push_back(
          reinterpret_cast<RouteFn>(lookup(abi.symbol + "_route")));
    }
  };
  if (onGPU())
    options.sharedLibraries.push_back(getCUDARuntimeLibrary().str());
  if (mode == "jit") {
    entries.jit = check(JitModule::create(module, options));
    resolve([&](const std::string &name) {
      return check(entries.jit->lookup(name));
    });
    return entries;
  }
  if (mode != "aot")
    fail("--mode must be jit or aot, not '" + mode + "'");
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("moe-run", dir))
    fail("cannot create a temporary directory: " + ec.message());
  std::string object = (dir + "/layers.o").str();
  std::string library = (dir + "/liblayers.so").str();
  if (llvm::Error error = emitObjectFile(module, object, options))
    fail(llvm::toString(std::move(error)));
  std::string cc = findCCompiler();
  std::string rpath = ("-Wl,-rpath," + getOpenMPLibraryDir()).str();
  std::string cudaRpath = ("-Wl,-rpath," + getCUDARuntimeLibraryDir()).str();
  llvm::SmallVector<llvm::StringRef> args = {
      cc, "-shared", "-o", library, object, "-lm", getOpenMPLibrary(), rpath};
  if (onGPU())
    args = {cc,       "-shared", "-o", library, object, getCUDARuntimeLibrary(),
            cudaRpath};
  std::string message;
  if (llvm::sys::ExecuteAndWait(cc, args, std::nullopt, {}, 0, 0, &message))
    fail("linking " + object + " failed: " + message);
  entries.library = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!entries.library)
    fail(llvm::Twine("cannot load ") + library + ": " + dlerror());
  resolve([&](const std::string &name) {
    void *symbol = dlsym(entries.library, name.c_str());
    if (!symbol)
      fail("the shared object has no symbol " + name);
    return symbol;
  });
  llvm::sys::fs::remove(object);
  llvm::sys::fs::remove(library);
  llvm::sys::fs::remove(dir);
  return entries;
}

/// Tallies one comparison and prints a line for it.
struct Checker {
  bool ok = true;

  void values(llvm::StringRef what, llvm::ArrayRef<float> got,
              llvm::ArrayRef<float> want) {
    if (got.size() != want.size()) {
      llvm::outs() << llvm::formatv("  {0,-14} FAIL size {1} vs {2}\n", what,
                                    got.size(), want.size());
      ok = false;
      return;
    }
    double maxAbs = 0, maxRel = 0;
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      double diff = std::fabs(double(got[i]) - want[i]);
      maxAbs = std::max(maxAbs, diff);
      if (want[i] != 0)
        maxRel = std::max(maxRel, diff / std::fabs(want[i]));
      if (!(diff <= absTol + relTol * std::fabs(want[i])))
        ++bad;
    }
    ok &= bad == 0;
    llvm::outs() << llvm::formatv(
        "  {0,-14} {1}  max abs {2:e2}  max rel {3:e2}{4}\n", what,
        bad ? "FAIL" : "ok  ", maxAbs, maxRel,
        bad ? llvm::formatv("  ({0} of {1} outside tolerance)", bad, got.size())
                  .str()
            : std::string());
  }

  /// Whether a golden tensor has the element count the layer's result
  /// needs; a FAIL line otherwise (a file that does not belong to the model
  /// must not make the comparison read past a buffer).
  bool sized(llvm::StringRef what, size_t size, size_t expected) {
    if (size == expected)
      return true;
    llvm::outs() << llvm::formatv("  {0,-14} FAIL {1} elements, the layer "
                                  "gives {2}\n",
                                  what, size, expected);
    ok = false;
    return false;
  }

  void agreement(llvm::StringRef what, size_t agree, size_t total) {
    ok &= agree == total;
    llvm::outs() << llvm::formatv("  {0,-14} {1}  {2}/{3} agree ({4:f1}%)\n",
                                  what, agree == total ? "ok  " : "FAIL", agree,
                                  total, total ? 100.0 * agree / total : 100.0);
  }
};

std::vector<float> asF32(const TensorView &t) { return check(t.toF32()); }
std::vector<int64_t> asI64(const TensorView &t) { return check(t.toI64()); }

void printLoad(ArrayRef<int32_t> load) {
  int64_t maxLoad = 1;
  for (int32_t l : load)
    maxLoad = std::max<int64_t>(maxLoad, l);
  llvm::outs() << "  expert load:\n";
  for (auto [e, l] : llvm::enumerate(load))
    llvm::outs() << llvm::formatv(
        "    {0,4} {1,6} {2}\n", e, l,
        std::string((l * 40 + maxLoad - 1) / maxLoad, '#'));
}

bool checkLayer(const LayerABI &abi, const LayerCalls &calls,
                const SafeTensorsFile &io) {
  const LayerSpec &spec = abi.spec;
  std::string prefix = "layers." + std::to_string(spec.layerIndex) + ".";
  const TensorView *input = io.lookup(prefix + "input");
  const TensorView *output = io.lookup(prefix + "output");
  if (!input || !output)
    return true;
  std::vector<float> x = asF32(*input);
  int64_t tokens = input->getNumElements() / spec.hidden;
  MoEBatch batch{tokens, x.data(), nullptr, 0, nullptr, 0};
  if (input->shape.size() == 3)
    batch.sequence_length = input->shape[1];
  std::vector<int64_t> ids;
  if (const TensorView *t = io.lookup(prefix + "token_ids")) {
    ids = asI64(*t);
    batch.token_ids = ids.data();
  }
  std::vector<float> y(tokens * spec.hidden);
  llvm::outs() << llvm::formatv("layer {0} ({1}): {2} tokens\n",
                                spec.layerIndex, abi.symbol, tokens);
  int32_t status = calls.forward(batch, y.data());
  RoutingBuffers routing(abi, tokens);
  int32_t routeStatus = calls.route(batch, routing);
  Checker checker;
  if (status < 0 || routeStatus < 0) {
    llvm::outs() << "  FAIL status " << status << " / " << routeStatus << "\n";
    return false;
  }
  checker.values("output", y, asF32(*output));
  if (const TensorView *t = io.lookup(prefix + "router_logits"))
    checker.values("router_logits", routing.logits, asF32(*t));
  int64_t K = routing.slots;
  if (const TensorView *t = io.lookup(prefix + "topk_indices")) {
    std::vector<int64_t> want = asI64(*t);
    std::vector<float> wantW;
    if (const TensorView *tw = io.lookup(prefix + "topk_weights"))
      wantW = asF32(*tw);
    // At most K choices per token: the layer has K slots.
    int64_t k = std::min<int64_t>(tokens ? want.size() / tokens : 0, K);
    if (checker.sized("topk_indices", want.size(), tokens * k) &&
        (wantW.empty() ||
         checker.sized("topk_weights", wantW.size(), want.size()))) {
      size_t agree = 0;
      std::vector<float> gotW, refW;
      for (int64_t i = 0; i < tokens; ++i) {
        std::vector<int64_t> a(want.begin() + i * k, want.begin() + i * k + k);
        std::vector<int64_t> b(routing.indices.begin() + i * K,
                               routing.indices.begin() + i * K + k);
        std::vector<int64_t> as = a, bs = b;
        llvm::sort(as);
        llvm::sort(bs);
        agree += as == bs;
        // Weights matched by expert, so the slot order does not matter.
        for (int64_t j = 0; j < k && !wantW.empty(); ++j)
          for (int64_t jj = 0; jj < k; ++jj)
            if (b[jj] == a[j]) {
              gotW.push_back(routing.weights[i * K + jj]);
              refW.push_back(wantW[i * k + j]);
            }
      }
      checker.agreement("topk_indices", agree, tokens);
      if (!wantW.empty())
        checker.values("topk_weights", gotW, refW);
    }
  }
  if (const TensorView *t = io.lookup(prefix + "experts")) {
    std::vector<int64_t> want = asI64(*t);
    size_t agree = 0;
    if (checker.sized("experts", want.size(), tokens))
      for (int64_t i = 0; i < tokens; ++i)
        agree += routing.indices[i * K] == want[i];
    checker.agreement("experts", agree, tokens);
  }
  if (const TensorView *t = io.lookup(prefix + "num_experts")) {
    std::vector<int64_t> want = asI64(*t);
    size_t agree = 0;
    if (checker.sized("num_experts", want.size(), tokens))
      for (int64_t i = 0; i < tokens; ++i) {
        int64_t n = 0;
        for (int64_t j = 0; j < K; ++j)
          n += routing.indices[i * K + j] >= 0;
        agree += n == want[i];
      }
    checker.agreement("num_experts", agree, tokens);
  }
  if (const TensorView *t = io.lookup(prefix + "kept")) {
    std::vector<int64_t> want = asI64(*t);
    size_t agree = 0;
    if (checker.sized("kept", want.size(), tokens))
      for (int64_t i = 0; i < tokens; ++i)
        agree += (routing.rows[i * K] >= 0) == (want[i] != 0);
    checker.agreement("kept", agree, tokens);
  }
  if (const TensorView *t = io.lookup(prefix + "expert_tokens")) {
    std::vector<int64_t> want = asI64(*t);
    std::vector<float> wantGates;
    if (const TensorView *g = io.lookup(prefix + "expert_gates"))
      wantGates = asF32(*g);
    int64_t E = spec.numExperts, C = want.size() / E;
    // Expert choice: one slot per expert; C tokens per expert.
    if (!checker.sized("expert_tokens", want.size(), K == E ? E * C : 0) ||
        (!wantGates.empty() &&
         !checker.sized("expert_gates", wantGates.size(), want.size())))
      E = 0;
    size_t agree = 0;
    std::vector<float> gotGates, refGates;
    for (int64_t e = 0; e < E; ++e) {
      std::vector<int64_t> wantTokens(want.begin() + e * C,
                                      want.begin() + e * C + C);
      std::vector<int64_t> gotTokens;
      for (int64_t i = 0; i < tokens; ++i)
        if (routing.indices[i * K + e] == e)
          gotTokens.push_back(i);
      std::vector<int64_t> sortedWant = wantTokens;
      llvm::sort(sortedWant);
      agree += sortedWant == gotTokens;
      for (int64_t c = 0; c < C && !wantGates.empty(); ++c) {
        int64_t tok = wantTokens[c];
        if (tok >= 0 && tok < tokens && routing.indices[tok * K + e] == e) {
          gotGates.push_back(routing.weights[tok * K + e]);
          refGates.push_back(wantGates[e * C + c]);
        }
      }
    }
    checker.agreement("expert_tokens", agree, E);
    if (!wantGates.empty())
      checker.values("expert_gates", gotGates, refGates);
  }
  if (const TensorView *t = io.lookup(prefix + "aux_loss"))
    checker.values("aux_loss", {routing.auxLoss}, asF32(*t));
  if (const TensorView *t = io.lookup(prefix + "z_loss"))
    checker.values("z_loss", {routing.zLoss}, asF32(*t));
  if (status != 0)
    llvm::outs() << "  status " << status << " (warning bits)\n";
  printLoad(routing.load);
  return checker.ok;
}

void runRandom(const LayerABI &abi, const LayerCalls &calls) {
  const LayerSpec &spec = abi.spec;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(numTokens * spec.hidden);
  for (float &v : x)
    v = normal(rng);
  std::vector<int64_t> ids(numTokens);
  std::uniform_int_distribution<int64_t> vocab(
      0, std::max<int64_t>(spec.hashVocab - 1, 0));
  for (int64_t &id : ids)
    id = vocab(rng);
  MoEBatch batch{numTokens, x.data(), ids.data(), 0, nullptr, 0};
  std::vector<int32_t> groups = {0, int32_t(numTokens)};
  batch.group_offsets = groups.data();
  batch.num_groups = 1;
  std::vector<float> y(x.size());
  std::vector<double> times;
  for (unsigned i = 0; i < std::max(1u, unsigned(repeat)); ++i) {
    auto start = std::chrono::steady_clock::now();
    int32_t status = calls.forward(batch, y.data());
    auto end = std::chrono::steady_clock::now();
    if (status < 0)
      fail("layer " + abi.symbol + " returned status " +
           std::to_string(status));
    times.push_back(
        std::chrono::duration<double, std::milli>(end - start).count());
  }
  llvm::sort(times);
  RoutingBuffers routing(abi, numTokens);
  calls.route(batch, routing);
  llvm::outs() << llvm::formatv(
      "layer {0} ({1}): {2} tokens, median {3:f3} ms, min {4:f3} ms over {5} "
      "runs{6}\n",
      spec.layerIndex, abi.symbol, numTokens, times[times.size() / 2],
      times.front(), times.size(),
      onGPU() ? " (with the copies of x and y)" : "");
  printLoad(routing.load);
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::opt<int> &numThreads = addThreadsOption(category);
  cl::ParseCommandLineOptions(argc, argv, "moe-mlir model runner\n");
  if (numThreads < 0)
    fail("--threads must be 0 or more");
  setNumThreads(numThreads);

  if (device != "cpu" && device != "cuda")
    fail("--device must be cpu or cuda, not '" + device + "'");
  WeightType weightType;
  if (!parseWeightType(dtype, weightType))
    fail("--dtype must be f32 or bf16, not '" + dtype + "'");
  if (onGPU() && !schedule.empty())
    fail("--schedule applies to --device cpu only");
  std::string chip = chipOpt;
  checkChipOption(chip);
  if (mma && !onGPU())
    fail("--mma applies to --device cuda only");
  if (deviceCode.getNumOccurrences() && !onGPU())
    fail("--device-code applies to --device cuda only");
  deviceCodeFormat(deviceCode);
  if (onGPU())
    chip = selectCUDAChip(chip);

  std::optional<int64_t> layer;
  if (onlyLayer >= 0)
    layer = onlyLayer;
  ImportedModel model = check(importModel(modelDir, layer));
  if (model.layers.empty())
    fail("the model in '" + modelDir + "' has no MoE layer");
  setExpertWeights(model, weightType, /*keepF32=*/false);

  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext context(registry);
  std::vector<LayerABI> abis;
  for (const LayerSpec &spec : model.layers)
    abis.push_back(describeLayer(spec, "moe_" + spec.name));
  OwningOpRef<ModuleOp> module = buildLayerModule(&context, abis);
  auto compileStart = std::chrono::steady_clock::now();
  if (onGPU()) {
    if (llvm::Error error = lowerToLLVMForNVPTX(
            *module, abis, chip, deviceCodeFormat(deviceCode), mma))
      fail(llvm::toString(std::move(error)));
  } else if (llvm::Error error =
                 lowerToLLVM(*module, abis,
                             /*cachingAllocator=*/true,
                             /*openmp=*/true, targetCPU, schedule,
                             /*runsInThisProcess=*/true)) {
    fail(llvm::toString(std::move(error)));
  }
  Entries entries = compile(*module, abis);
  double compileMs = std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - compileStart)
                         .count();
  llvm::outs() << llvm::formatv(
      "model {0} ({1}): {2} MoE layer(s), compiled ({3}) in {4:f0} ms\n",
      modelDir, model.modelType, model.layers.size(), mode, compileMs);

  if (checkFile.empty()) {
    for (auto [i, abi] : llvm::enumerate(abis))
      runRandom(abi, makeCalls(abi, model.weights[i], entries.forward[i],
                               entries.route[i]));
    return 0;
  }
  SafeTensorsFile io = check(SafeTensorsFile::open(checkFile));
  bool ok = true;
  size_t checked = 0;
  for (auto [i, abi] : llvm::enumerate(abis)) {
    std::string prefix = "layers." + std::to_string(abi.spec.layerIndex) + ".";
    if (!io.lookup(prefix + "input"))
      continue;
    ++checked;
    ok &= checkLayer(
        abi,
        makeCalls(abi, model.weights[i], entries.forward[i], entries.route[i]),
        io);
  }
  if (!checked)
    fail("'" + checkFile + "' has no layers.L.input for any MoE layer");
  llvm::outs() << llvm::formatv("check: {0} (rtol {1}, atol {2}, mode {3})\n",
                                ok ? "PASS" : "FAIL", relTol, absTol, mode);
  return ok ? 0 : 1;
}
