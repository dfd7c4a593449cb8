//===- RunFuzzer.cpp - libFuzzer target: runtime inputs of compiled layers ===//
//
// Compiles, once, four small layers through the embedding engine: top-k
// with capacity per request and reroute (with f32 and with bf16 expert
// weights), top-p with passthrough, and hash routing. Each input picks a layer and becomes a batch: the token count,
// request boundaries, token values (NaN and Inf included) and raw token
// ids. The compiled layer must return a
// status without crashing, and its output must match the reference
// implementation (NaN where the reference has NaN) whenever the batch is
// well-formed; a malformed batch must be rejected with a negative status.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/LayerModule.h"
#include "moe/Reference/Reference.h"
#include "moe/Runtime/Engine.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>

using namespace mlir::moe;

namespace {

constexpr int64_t kHidden = 16, kFfn = 24, kExperts = 4, kMaxTokens = 48;

struct Case {
  frontend::LayerSpec spec;
  frontend::LayerWeights weights;
  std::shared_ptr<runtime::CompiledLayer> layer;
  std::vector<const void *> table;
};

std::vector<float> uniform(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

std::vector<Case> &cases() {
  static std::vector<Case> all = [] {
    // Never destroyed: an engine destroyed during static destruction at
    // exit can crash inside LLVM's JIT teardown (docs/embedding.md).
    static runtime::Engine &engine = *new runtime::Engine();
    std::vector<Case> out(4);
    for (size_t i = 0; i < out.size(); ++i) {
      frontend::LayerSpec &s = out[i].spec;
      s.name = "fuzz";
      s.hidden = kHidden;
      s.ffn = kFfn;
      s.numExperts = kExperts;
      frontend::LayerWeights &w = out[i].weights;
      if (i == 0 || i == 3) {
        s.router.k = 2;
        s.router.renormalize = true;
        s.router.capacity.enabled = true;
        s.router.capacity.factor = 0.75;
        s.router.capacity.group = frontend::CapacityGroupKind::Request;
        s.router.capacity.overflow = frontend::Overflow::Reroute;
      } else if (i == 1) {
        s.router.family = frontend::RouterFamily::TopP;
        s.router.k = 3;
        s.router.p = 0.6;
        s.router.capacity.enabled = true;
        s.router.capacity.absolute = 3;
        s.router.capacity.overflow = frontend::Overflow::Passthrough;
      } else {
        s.router.family = frontend::RouterFamily::Hash;
        s.hashVocab = 11;
        for (int32_t v = 0; v < 11; ++v)
          w.hashTable.push_back(v % kExperts);
      }
      if (i != 2)
        w.gate = uniform(kExperts * kHidden, 10 + i);
      w.w1 = uniform(kExperts * 2 * kFfn * kHidden, 20 + i);
      w.w2 = uniform(kExperts * kHidden * kFfn, 30 + i);
      if (i == 3) {
        s.expertWeights = frontend::WeightType::BF16;
        frontend::convertExpertWeightsToBF16(w);
      }
      bool bf16 = i == 3;
      std::string error;
      out[i].layer = engine.compile(s, &error);
      if (!out[i].layer) {
        fprintf(stderr, "RunFuzzer: compile failed: %s\n", error.c_str());
        abort();
      }
      for (const runtime::WeightInfo &info : out[i].layer->weights()) {
        const void *p = info.name == "gate"         ? w.gate.data()
                        : info.name == "hash_table" ? (const void *)w.hashTable.data()
                        : info.name == "w1"
                            ? (bf16 ? (const void *)w.w1BF16.data() : w.w1.data())
                            : (bf16 ? (const void *)w.w2BF16.data() : w.w2.data());
        out[i].table.push_back(p);
      }
    }
    return out;
  }();
  return all;
}

/// Reads the next `n` bytes of the input, zero past its end.
struct Reader {
  const uint8_t *data;
  size_t size, at = 0;
  void read(void *out, size_t n) {
    std::memset(out, 0, n);
    size_t take = at < size ? std::min(n, size - at) : 0;
    std::memcpy(out, data + at, take);
    at += n;
  }
  uint8_t byte() {
    uint8_t b;
    read(&b, 1);
    return b;
  }
};

/// Whether some token's sorted cumulative softmax mass over its first
/// kMax experts comes within 1e-5 of p.
bool nearTopPThreshold(const std::vector<float> &logits, int64_t T, double p,
                       int64_t kMax) {
  int64_t cols = T ? int64_t(logits.size()) / T : 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> probs(cols);
    double maxv = -INFINITY, sum = 0;
    for (int64_t e = 0; e < cols; ++e) {
      double l = logits[t * cols + e];
      probs[e] = std::isnan(l) ? -INFINITY : l;
      maxv = std::max(maxv, probs[e]);
    }
    if (!std::isfinite(maxv))
      continue;
    for (double &v : probs)
      sum += (v = std::exp(v - maxv));
    std::sort(probs.begin(), probs.end(), std::greater<double>());
    double mass = 0;
    for (int64_t j = 0; j < std::min(kMax, cols); ++j) {
      mass += probs[j] / sum;
      if (std::fabs(mass - p) < 1e-5)
        return true;
    }
  }
  return false;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Reader in{data, size};
  Case &c = cases()[in.byte() % 4];
  int64_t T = in.byte() % (kMaxTokens + 1);
  // Request boundaries: 0 = b0 <= b1 <= ... <= T, from cut points.
  int numGroups = 1 + in.byte() % 4;
  std::vector<int32_t> groups = {0};
  for (int g = 1; g < numGroups; ++g)
    groups.push_back(std::min<int32_t>(
        T, std::max<int32_t>(groups.back(), in.byte() % (T + 1))));
  groups.push_back(int32_t(T));
  bool corruptGroups = in.byte() == 0xff; // rarely: a malformed table
  if (corruptGroups && numGroups > 1)
    groups[1] = int32_t(T) + 5;
  // Token values in [-8, 8) in steps of 1/4096, with NaN and +-Inf mixed
  // in when the high bits ask for them (bounded, so the f32 code and the
  // reference stay comparable).
  std::vector<float> x(T * kHidden);
  for (float &v : x) {
    uint16_t bits;
    in.read(&bits, sizeof bits);
    int16_t value = int16_t(bits & 0xffff);
    v = float(value) / 4096.0f;
    if ((bits & 0xfff0) == 0x7ff0)
      v = (bits & 1) ? NAN : ((bits & 2) ? INFINITY : -INFINITY);
  }
  std::vector<int64_t> ids(T);
  for (int64_t &id : ids) {
    in.read(&id, sizeof id);
    if (in.byte() % 4)
      id = std::abs(id % 13) - 1; // mostly near the table, some outside
  }
  moe_batch batch = {};
  batch.num_tokens = T;
  batch.x = x.data();
  batch.token_ids = ids.data();
  batch.group_offsets = groups.data();
  batch.num_groups = int64_t(groups.size()) - 1;
  std::vector<float> y(T * kHidden, 12345.0f);
  int32_t status = c.layer->run(c.table.data(), batch, y.data());
  bool requestGroups = c.spec.router.capacity.enabled &&
                       c.spec.router.capacity.group ==
                           frontend::CapacityGroupKind::Request;
  if (corruptGroups && requestGroups && numGroups > 1) {
    // Boundaries past T: rejected, or clamped by the generated code; never
    // a crash. Nothing to compare with.
    return 0;
  }
  if (status < 0) {
    fprintf(stderr, "RunFuzzer: well-formed batch rejected (%d)\n", status);
    abort();
  }
  // The reference routes on the compiled logits, so f32 rounding cannot
  // flip near-ties between the two.
  compiler::LayerABI abi = compiler::describeLayer(c.spec, "moe_layer");
  compiler::RoutingBuffers routing(abi, T);
  std::vector<void *> pointers = routing.pointers(abi);
  if (c.layer->route(c.table.data(), batch, pointers.data()) < 0) {
    fprintf(stderr, "RunFuzzer: route entry rejected a well-formed batch\n");
    abort();
  }
  reference::Inputs ref;
  ref.x = x.data();
  if (!routing.logits.empty())
    ref.logits = routing.logits.data();
  ref.numTokens = T;
  ref.tokenIds = ids.data();
  if (requestGroups)
    ref.groups = groups;
  // top_p compares a cumulative probability with p: f32 (compiled) and
  // double (reference) may decide differently when it lands within
  // rounding of p. Such batches are not compared.
  if (c.spec.router.family == frontend::RouterFamily::TopP &&
      nearTopPThreshold(routing.logits, T, c.spec.router.p,
                        c.spec.router.k))
    return 0;
  reference::Result want = reference::run(c.spec, c.weights, ref);
  // Element checks: NaN where the reference has NaN, equal infinities,
  // else within atol + rtol |reference|.
  auto close = [](float a, float b, float atol, float rtol) {
    return std::isnan(b)   ? std::isnan(a)
           : std::isinf(b) ? a == b
                           : std::fabs(a - b) <= atol + rtol * std::fabs(b);
  };
  // bf16: a hidden value can round to the neighbouring bf16 value here and
  // in the reference (moe-difftest.cpp explains), which moves its token's
  // whole row by up to a bf16 step of the hidden values (1/128 of them)
  // times the weights. So with bf16 weights every element is checked
  // within that looser bound only. moe-difftest also checks that nearly all
  // rows agree as closely as in f32; here that does not hold: fuzzed
  // inputs repeat tokens and values, and mutating the inputs that found
  // such a rounding finds more (docs/errors.md, Fuzzing).
  bool bf16 = c.spec.expertWeights == frontend::WeightType::BF16;
  for (int64_t i = 0; i < T * kHidden; ++i) {
    float a = y[i], b = want.output[i];
    if (!close(a, b, bf16 ? 0.1f : 1e-4f, bf16 ? 0.05f : 1e-3f)) {
      fprintf(stderr, "RunFuzzer: element %lld: %g, reference %g\n",
              (long long)i, a, b);
      abort();
    }
  }
  return 0;
}
