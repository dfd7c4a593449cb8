//===- moe-difftest.cpp - Compiled layers vs the naive reference ----------===//
//
//   moe-difftest [--configs N] [--seed S] [--family NAME] [--verbose]
//
// Draws N random MoE layers (every routing family,
// E 1..64, k 1..E, T including 0 and 1, widths that are not multiples of
// the vector width, capacities that drop, pass through and reroute, null
// and shared experts), compiles each through the JIT and compares output,
// routing, dispatch rows, expert load and losses with the reference
// implementation (lib/Reference), which shares no code with the compiler.
//
// Routing is compared on identical logits: the reference is given the
// compiled router logits (themselves checked against the reference's within
// tolerance), so f32-vs-double dot-product rounding cannot flip a near-tie.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/Compiler.h"
#include "moe/Reference/Reference.h"

#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <map>
#include <random>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;
using namespace mlir::moe::frontend;
namespace cl = llvm::cl;

static cl::opt<unsigned>
    numConfigs("configs", cl::desc("Number of random layers"), cl::init(200));
static cl::opt<unsigned> seed("seed", cl::desc("Base random seed"),
                              cl::init(2026));
static cl::opt<bool> verbose("verbose", cl::desc("Print every config"));
static cl::opt<std::string>
    dtype("dtype",
          cl::desc("Expert weight type of every layer: f32 (default) or bf16"),
          cl::init("f32"));
static cl::opt<std::string> &schedule =
    addScheduleOption(cl::getGeneralCategory());
static cl::opt<std::string>
    targetCPU("target-cpu",
              cl::desc("CPU the layers are compiled for (native, x86-64-v3, "
                       "x86-64-v4, ...)"),
              cl::init("native"));

/// The routing families a config is drawn from, config i from family
/// i % 10 unless --family names one.
static constexpr const char *kFamilies[] = {
    "topk-softmax",       "topk-sigmoid-bias-groups",
    "topk-softmax-after", "topk-null-experts",
    "topk-capacity",      "top-p",
    "expert-choice",      "hash",
    "topk-sigmoid",       "balanced"};
static cl::opt<bool> wide(
    "wide",
    cl::desc("Draw wider layers with fewer experts and more tokens (hidden "
             "and ffn mostly multiples of 32 up to 160, 1 to 8 experts, up "
             "to 200 tokens), so that the expert GEMMs take the panel "
             "kernels, AMX tiles included where the CPU has them"));
static cl::opt<bool> askAtRunTime(
    "amx-at-run-time",
    cl::desc("Compile as for another process: the code asks the operating "
             "system for AMX tiles at every call and keeps the AVX-512 "
             "kernel for a refusal (as moe-compile's objects do)"));
static cl::opt<std::string>
    family("family",
           cl::desc("Draw every config from this routing family (a name of "
                    "the summary without its capacity suffix: topk-softmax, "
                    "topk-capacity, hash, ...); default: all, in turn"));

/// --dtype.
static WeightType weightType = WeightType::F32;
/// --family, or -1.
static int familyIndex = -1;

namespace {

struct Case {
  std::string policy; ///< a short name for the summary
  LayerSpec spec;
  LayerWeights weights;
  int64_t tokens = 0;
  std::vector<float> x;
  std::vector<int64_t> tokenIds;
  std::vector<int32_t> groups; ///< request groups
};

class Generator {
public:
  explicit Generator(unsigned s) : rng(s) {}

  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  }
  double real(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  }
  bool coin(double p = 0.5) { return real(0, 1) < p; }
  std::vector<float> normal(size_t n, double stddev) {
    std::normal_distribution<float> dist(0.0f, float(stddev));
    std::vector<float> v(n);
    for (float &x : v)
      x = dist(rng);
    return v;
  }

  Case draw(unsigned index) {
    Case c;
    LayerSpec &s = c.spec;
    RouterSpec &r = s.router;
    s.name = "case" + std::to_string(index);
    s.hidden = uniform(1, 40);
    s.ffn = uniform(1, 40);
    s.numExperts = uniform(1, 64);
    if (wide) {
      // Multiples of 32 are the depths the AMX kernel takes; the others
      // (and widths that are no multiple of its tiles) test its fallback
      // and its shifted last tile.
      auto dim = [&] {
        return coin(0.75) ? 32 * uniform(1, 5) : uniform(16, 160);
      };
      s.hidden = dim();
      s.ffn = dim();
      s.numExperts = uniform(1, 8);
    }
    s.activation = static_cast<ExpertActivation>(uniform(0, 2));
    int64_t E = s.numExperts;
    switch (familyIndex >= 0 ? unsigned(familyIndex) : index % 10) {
    case 0:
      c.policy = "topk-softmax";
      r.k = uniform(1, E);
      r.renormalize = coin();
      break;
    case 1: {
      c.policy = "topk-sigmoid-bias-groups";
      r.scoring = Scoring::Sigmoid;
      r.selectionBias = true;
      r.renormalize = coin(0.7);
      r.scale = coin() ? real(0.5, 3.0) : 1.0;
      std::vector<int64_t> divisors;
      for (int64_t g = 1; g <= E; ++g)
        if (E % g == 0)
          divisors.push_back(g);
      r.nGroup = divisors[uniform(0, divisors.size() - 1)];
      r.topkGroup = uniform(1, r.nGroup);
      r.k = uniform(1, r.topkGroup * (E / r.nGroup));
      if (r.nGroup == 1)
        r.nGroup = r.topkGroup = 0;
      break;
    }
    case 2:
      c.policy = "topk-softmax-after";
      r.k = uniform(1, E);
      r.softmaxAfter = true;
      break;
    case 3:
      c.policy = "topk-null-experts";
      r.nullExperts = uniform(1, 8);
      r.k = uniform(1, E + r.nullExperts);
      r.renormalize = coin();
      break;
    case 4:
      c.policy = "topk-capacity";
      r.k = uniform(1, std::min<int64_t>(E, 4));
      r.scoring = coin(0.3) ? Scoring::Sigmoid : Scoring::Softmax;
      drawCapacity(r.capacity, /*allowReroute=*/true);
      break;
    case 5:
      c.policy = "top-p";
      r.family = RouterFamily::TopP;
      r.k = uniform(1, E);
      r.p = real(0.05, 1.0);
      if (coin(0.3))
        drawCapacity(r.capacity, /*allowReroute=*/true);
      break;
    case 6:
      c.policy = "expert-choice";
      r.family = RouterFamily::ExpertChoice;
      r.capacityFactor = real(0.2, 3.0);
      break;
    case 7:
      c.policy = "hash";
      r.family = RouterFamily::Hash;
      s.hashVocab = uniform(1, 100);
      if (coin(0.3))
        drawCapacity(r.capacity, /*allowReroute=*/false);
      break;
    case 9:
      c.policy = "balanced";
      r.family = RouterFamily::Balanced;
      r.nullExperts = coin(0.2) ? uniform(1, 2) : 0;
      break;
    case 8:
      c.policy = "topk-sigmoid";
      r.scoring = Scoring::Sigmoid;
      r.k = uniform(1, E);
      r.renormalize = coin();
      break;
    }
    if (r.capacity.enabled)
      c.policy += r.capacity.overflow == Overflow::Drop ? "-drop"
                  : r.capacity.overflow == Overflow::Passthrough
                      ? "-passthrough"
                      : "-reroute";
    s.gateBias = r.family != RouterFamily::Hash && coin(0.3);
    if (coin(0.3)) {
      s.sharedFfn = uniform(1, 24);
      s.sharedGate = coin();
    }

    // Tokens: 0 and 1 appear regularly, and batches large enough that
    // experts fill several 32-row panels of the GEMM kernel (and partial
    // ones); sequences divide T.
    int64_t t = index % 7 == 0   ? 0
                : index % 7 == 1 ? 1
                : index % 7 == 2 ? uniform(41, 96)
                : wide           ? uniform(16, 200)
                                 : uniform(2, 40);
    if (r.capacity.enabled && r.capacity.group == CapacityGroupKind::Sequence) {
      s.sequenceLength = uniform(1, 8);
      t = s.sequenceLength * uniform(index % 7 == 0 ? 0 : 1, 5);
    }
    c.tokens = t;
    if (r.capacity.enabled && r.capacity.group == CapacityGroupKind::Request) {
      c.groups = {0};
      int64_t parts = uniform(1, 4);
      for (int64_t i = 1; i < parts; ++i)
        c.groups.push_back(int32_t(uniform(c.groups.back(), t)));
      c.groups.push_back(int32_t(t));
    }

    LayerWeights &w = c.weights;
    double d = double(s.hidden);
    if (r.family != RouterFamily::Hash)
      w.gate = normal(s.routerRows() * s.hidden, 2.5 / std::sqrt(d));
    if (s.gateBias)
      w.gateBias = normal(s.routerRows(), 0.5);
    if (r.selectionBias)
      w.selectionBias = normal(E, 0.5);
    if (r.family == RouterFamily::Hash) {
      for (int64_t i = 0; i < s.hashVocab; ++i)
        w.hashTable.push_back(int32_t(uniform(0, E - 1)));
    }
    w.w1 = normal(E * s.firstRows() * s.hidden, 1.0 / std::sqrt(d));
    w.w2 = normal(E * s.hidden * s.ffn, 1.0 / std::sqrt(double(s.ffn)));
    if (s.sharedFfn) {
      int64_t rows = s.activation == ExpertActivation::SiluGlu ? 2 * s.sharedFfn
                                                               : s.sharedFfn;
      w.sharedW1 = normal(rows * s.hidden, 1.0 / std::sqrt(d));
      w.sharedW2 =
          normal(s.hidden * s.sharedFfn, 1.0 / std::sqrt(double(s.sharedFfn)));
      if (s.sharedGate)
        w.sharedGate = normal(s.hidden, 1.0 / std::sqrt(d));
    }
    if (weightType == WeightType::BF16) {
      s.expertWeights = WeightType::BF16;
      convertExpertWeightsToBF16(w);
    }
    c.x = normal(t * s.hidden, 1.0);
    for (int64_t i = 0; i < t; ++i)
      c.tokenIds.push_back(s.hashVocab ? uniform(0, s.hashVocab - 1) : 0);
    return c;
  }

private:
  void drawCapacity(CapacitySpec &capacity, bool allowReroute) {
    capacity.enabled = true;
    if (coin())
      capacity.absolute = uniform(1, 4);
    else
      capacity.factor = real(0.3, 2.0);
    capacity.group = static_cast<CapacityGroupKind>(uniform(0, 2));
    capacity.overflow = static_cast<Overflow>(uniform(0, allowReroute ? 2 : 1));
  }

  std::mt19937_64 rng;
};

std::string describe(const Case &c) {
  const LayerSpec &s = c.spec;
  const RouterSpec &r = s.router;
  return llvm::formatv(
             "{0} [{1}]: T={2} d={3} ffn={4} E={5} k={6} null={7} "
             "groups={8}/{9} scale={10} renorm={11} act={12} "
             "shared={13}{14} cap={15}",
             s.name, c.policy, c.tokens, s.hidden, s.ffn, s.numExperts, r.k,
             r.nullExperts, r.nGroup, r.topkGroup, r.scale, r.renormalize,
             int(s.activation), s.sharedFfn, s.sharedGate ? "(gated)" : "",
             r.capacity.enabled
                 ? llvm::formatv("f={0} abs={1} group={2} over={3}",
                                 r.capacity.factor, r.capacity.absolute,
                                 int(r.capacity.group),
                                 int(r.capacity.overflow))
                       .str()
                 : std::string("none"))
      .str();
}

/// Collects the first mismatch of a comparison.
struct Mismatch {
  std::string message;
  bool any() const { return !message.empty(); }

  void close(llvm::StringRef what, llvm::ArrayRef<float> got,
             llvm::ArrayRef<float> want, double rtol = 1e-4,
             double atol = 1e-5) {
    if (any())
      return;
    if (got.size() != want.size()) {
      message = (what + ": size differs").str();
      return;
    }
    for (size_t i = 0; i < got.size(); ++i)
      if (!(std::fabs(double(got[i]) - want[i]) <=
            atol + rtol * std::fabs(want[i]))) {
        message = llvm::formatv("{0}[{1}]: {2:e6} vs reference {3:e6}", what, i,
                                got[i], want[i]);
        return;
      }
  }
  /// Every row of `width` elements within the default tolerances but at
  /// most max(1, `fraction` of the rows).
  void mostlyClose(llvm::StringRef what, llvm::ArrayRef<float> got,
                   llvm::ArrayRef<float> want, size_t width, double fraction) {
    if (any() || got.size() != want.size() || width == 0)
      return;
    size_t rows = got.size() / width, far = 0;
    for (size_t r = 0; r < rows; ++r) {
      bool rowFar = false;
      for (size_t i = r * width; i < (r + 1) * width; ++i)
        rowFar |= !(std::fabs(double(got[i]) - want[i]) <=
                    1e-5 + 1e-4 * std::fabs(want[i]));
      far += rowFar;
    }
    if (far > std::max<size_t>(1, size_t(fraction * rows)))
      message = llvm::formatv("{0}: {1} of {2} rows differ by more than "
                              "rtol 1e-4, atol 1e-5",
                              what, far, rows);
  }
  void equal(llvm::StringRef what, llvm::ArrayRef<int32_t> got,
             llvm::ArrayRef<int32_t> want) {
    if (any())
      return;
    if (got.size() != want.size()) {
      message = (what + ": size differs").str();
      return;
    }
    for (size_t i = 0; i < got.size(); ++i)
      if (got[i] != want[i]) {
        message = llvm::formatv("{0}[{1}]: {2} vs reference {3}", what, i,
                                got[i], want[i]);
        return;
      }
  }
};

/// Compiles and checks one case; returns the first mismatch (empty if none).
std::string runCase(MLIRContext &context, const Case &c) {
  const LayerSpec &spec = c.spec;
  LayerABI abi = describeLayer(spec, "diff_" + spec.name);
  OwningOpRef<ModuleOp> module = buildLayerModule(&context, {abi});
  if (llvm::Error error = lowerToLLVM(*module, {abi}, /*cachingAllocator=*/true,
                                      /*openmp=*/true, targetCPU, schedule,
                                      /*runsInThisProcess=*/!askAtRunTime))
    return "compile: " + llvm::toString(std::move(error));
  CodegenOptions codegen;
  codegen.targetCPU = targetCPU;
  auto jit = JitModule::create(*module, codegen);
  if (!jit)
    return "jit: " + llvm::toString(jit.takeError());
  auto forwardAddr = (*jit)->lookup(abi.symbol);
  auto routeAddr = (*jit)->lookup(abi.symbol + "_route");
  if (!forwardAddr)
    return "entry point: " + llvm::toString(forwardAddr.takeError());
  if (!routeAddr)
    return "route entry point: " + llvm::toString(routeAddr.takeError());
  auto forward = reinterpret_cast<ForwardFn>(*forwardAddr);
  auto route = reinterpret_cast<RouteFn>(*routeAddr);

  int64_t T = c.tokens;
  MoEBatch batch{T,
                 c.x.data(),
                 c.tokenIds.data(),
                 spec.sequenceLength,
                 c.groups.data(),
                 int64_t(c.groups.size()) - 1};
  std::vector<const void *> weights = getWeightPointers(abi, c.weights);
  std::vector<float> y(T * spec.hidden, NAN);
  int32_t status = forward(weights.data(), &batch, y.data());
  RoutingBuffers out(abi, T);
  out.auxLoss = out.zLoss = NAN;
  std::vector<void *> routing = out.pointers(abi);
  int32_t routeStatus = route(weights.data(), &batch, routing.data());
  if (status != 0 || routeStatus != 0)
    return llvm::formatv("status {0} / {1}", status, routeStatus).str();

  reference::Inputs inputs;
  inputs.x = c.x.data();
  inputs.numTokens = T;
  inputs.tokenIds = c.tokenIds.data();
  inputs.groups = c.groups;
  // First the reference's own logits (checks the gate), then routing on the
  // compiled logits.
  reference::Result own = reference::run(spec, c.weights, inputs);
  Mismatch m;
  m.close("logits", out.logits, own.logits);
  if (spec.router.family != RouterFamily::Hash)
    inputs.logits = out.logits.data();
  reference::Result ref = reference::run(spec, c.weights, inputs);
  m.equal("indices", out.indices, ref.routeIndices);
  m.close("weights", out.weights, ref.weights);
  m.equal("rows", out.rows, ref.rows);
  m.equal("expert_load", out.load, ref.load);
  // bf16: the hidden activations are rounded to bf16 from f32 here and
  // from double in the reference. They round alike except near a midpoint
  // between two bf16 values, where one step (2^-8 relative) moves every
  // output of that token by the step times a weight. So the rows of nearly
  // all tokens agree as closely as in f32, and the rest within 1e-2.
  if (spec.expertWeights == WeightType::BF16) {
    m.close("output", y, ref.output, 1e-2, 1e-2);
    m.mostlyClose("output", y, ref.output, spec.hidden, 0.05);
  } else {
    m.close("output", y, ref.output);
  }
  if (spec.router.family != RouterFamily::Hash) {
    m.close("aux_loss", {out.auxLoss}, {ref.auxLoss});
    m.close("z_loss", {out.zLoss}, {ref.zLoss});
  }
  return m.message;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::opt<int> &numThreads = addThreadsOption(cl::getGeneralCategory());
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-mlir differential test: compiled layers "
                              "vs the reference implementation\n");
  if (numThreads < 0) {
    llvm::errs() << "moe-difftest: error: --threads must be 0 or more\n";
    return 2;
  }
  setNumThreads(numThreads);
  if (!parseWeightType(dtype, weightType)) {
    llvm::errs() << "moe-difftest: error: --dtype must be f32 or bf16, not '"
                 << dtype << "'\n";
    return 2;
  }
  if (!family.empty()) {
    auto it = llvm::find(kFamilies, family);
    if (it == std::end(kFamilies)) {
      llvm::errs() << "moe-difftest: error: unknown --family '" << family
                   << "' (one of";
      for (const char *name : kFamilies)
        llvm::errs() << " " << name;
      llvm::errs() << ")\n";
      return 2;
    }
    familyIndex = int(it - std::begin(kFamilies));
  }
  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext context(registry);
  Generator generator(seed);
  std::map<std::string, std::pair<unsigned, unsigned>> byPolicy;
  unsigned failures = 0;
  auto start = std::chrono::steady_clock::now();
  for (unsigned i = 0; i < numConfigs; ++i) {
    Case c = generator.draw(i);
    std::string error = runCase(context, c);
    auto &[passed, total] = byPolicy[c.policy];
    ++total;
    if (error.empty()) {
      ++passed;
      if (verbose)
        llvm::outs() << "ok   " << describe(c) << "\n";
      continue;
    }
    ++failures;
    llvm::outs() << "FAIL " << describe(c) << "\n     " << error << "\n";
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  for (auto &[policy, counts] : byPolicy)
    llvm::outs() << llvm::formatv("  {0,-36} {1}/{2}\n", policy, counts.first,
                                  counts.second);
  llvm::outs() << llvm::formatv(
      "difftest: {0} of {1} configs passed (seed {2}, {3:f1} s)\n",
      numConfigs - failures, numConfigs, seed, seconds);
  return failures ? 1 : 0;
}
