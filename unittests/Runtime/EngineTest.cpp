//===- EngineTest.cpp - The embedding API: cache, results, threads --------===//

#include "moe/Runtime/Engine.h"
#include "moe/Compiler/Compiler.h"
#include "moe/Compiler/LayerModule.h"
#include "moe/Reference/Reference.h"
#include "moe/Runtime/moe.h"

#include <gtest/gtest.h>

#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

using namespace mlir::moe;
using namespace mlir::moe::runtime;

namespace {

frontend::LayerSpec mixtralLike() {
  frontend::LayerSpec spec;
  spec.name = "layer";
  spec.hidden = 64;
  spec.ffn = 96;
  spec.numExperts = 8;
  spec.router.k = 2;
  spec.router.renormalize = true;
  return spec;
}

std::vector<float> uniform(size_t n, float scale, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

frontend::LayerWeights weightsFor(const frontend::LayerSpec &s) {
  frontend::LayerWeights w;
  w.gate = uniform(s.numExperts * s.hidden, 0.5f, 1);
  w.w1 = uniform(s.numExperts * 2 * s.ffn * s.hidden, 0.2f, 2);
  w.w2 = uniform(s.numExperts * s.hidden * s.ffn, 0.2f, 3);
  return w;
}

void expectNear(const std::vector<float> &got, const std::vector<float> &want,
                size_t rows, size_t width) {
  for (size_t i = 0; i < rows * width; ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::fabs(want[i]))
        << "element " << i;
}

/// An engine with the Mixtral-like layer compiled and seeded weights.
class CompiledMixtral : public ::testing::Test {
protected:
  void SetUp() override {
    layer = engine.compile(spec, &error);
    ASSERT_TRUE(layer) << error;
  }
  Engine engine;
  frontend::LayerSpec spec = mixtralLike();
  frontend::LayerWeights w = weightsFor(spec);
  const void *table[3] = {w.gate.data(), w.w1.data(), w.w2.data()};
  std::string error;
  std::shared_ptr<CompiledLayer> layer;
};

TEST_F(CompiledMixtral, CompilesOnceForEveryTokenCount) {
  EXPECT_EQ(engine.compileCount(), 1u);
  EXPECT_GT(engine.lastCompileMs(), 0.0);
  ASSERT_EQ(layer->weights().size(), 3u);
  EXPECT_EQ(layer->weights()[1].name, "w1");
  EXPECT_EQ(layer->weights()[1].elements, 8 * 192 * 64);
  for (int64_t T : {1, 7, 64, 3, 200}) {
    std::vector<float> x = uniform(T * spec.hidden, 1.0f, 10 + T);
    std::vector<float> y(x.size());
    ASSERT_EQ(layer->run(table, T, x.data(), y.data()), 0);
    reference::Inputs in;
    in.x = x.data();
    in.numTokens = T;
    reference::Result ref = reference::run(spec, w, in);
    expectNear(y, ref.output, T, spec.hidden);
  }
  // Still one compile; asking again for the same layer is a cache hit.
  EXPECT_EQ(engine.compileCount(), 1u);
  std::shared_ptr<CompiledLayer> again = engine.compile(spec, &error);
  ASSERT_TRUE(again);
  EXPECT_EQ(engine.compileCount(), 1u);
  EXPECT_EQ(engine.cacheHits(), 1u);
  // A different layer is a new compile.
  spec.router.k = 3;
  ASSERT_TRUE(engine.compile(spec, &error)) << error;
  EXPECT_EQ(engine.compileCount(), 2u);
}

TEST_F(CompiledMixtral, RouteIsCompiledOnFirstUse) {
  const int64_t T = 9;
  std::vector<float> x = uniform(T * spec.hidden, 1.0f, 5);
  moe_batch batch = {};
  batch.num_tokens = T;
  batch.x = x.data();
  compiler::LayerABI abi = compiler::describeLayer(spec, "moe_layer");
  compiler::RoutingBuffers routing(abi, T);
  std::vector<void *> pointers = routing.pointers(abi);
  ASSERT_EQ(layer->route(table, batch, pointers.data()), 0);
  reference::Inputs in;
  in.x = x.data();
  in.numTokens = T;
  reference::Result ref = reference::run(spec, w, in);
  EXPECT_EQ(routing.indices, ref.indices);
  EXPECT_EQ(routing.load, ref.load);
  EXPECT_EQ(engine.compileCount(), 1u);
}

TEST_F(CompiledMixtral, ConcurrentRunsOnOneHandle) {
  // Expected outputs, one call each, before the threads start.
  const int64_t sizes[] = {1, 5, 16, 33, 64, 129};
  std::vector<std::vector<float>> inputs, expected;
  for (int64_t T : sizes) {
    inputs.push_back(uniform(T * spec.hidden, 1.0f, 100 + T));
    expected.emplace_back(inputs.back().size());
    moe_batch batch = {};
    batch.num_tokens = T;
    batch.x = inputs.back().data();
    ASSERT_EQ(layer->run(table, batch, expected.back().data()), 0);
  }
  constexpr int kThreads = 6, kCalls = 20;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        size_t which = (t + c) % std::size(sizes);
        std::vector<float> y(expected[which].size());
        moe_batch batch = {};
        batch.num_tokens = sizes[which];
        batch.x = inputs[which].data();
        if (layer->run(table, batch, y.data()) != 0 ||
            y != expected[which]) // bitwise: the code is deterministic
          ++mismatches[t];
      }
    });
  for (std::thread &t : threads)
    t.join();
  for (int t = 0; t < kThreads; ++t)
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  EXPECT_EQ(engine.compileCount(), 1u);
}

/// NaN-aware comparison: NaN only where the reference has NaN.
void expectSameOrBothNaN(const std::vector<float> &got,
                         const std::vector<float> &want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << "element " << i;
      continue;
    }
    ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::fabs(want[i]))
        << "element " << i;
  }
}

// Bad runtime inputs (docs/errors.md): defined results and status bits,
// the same as the reference implementation's, never a crash.
TEST_F(CompiledMixtral, NaNAndInfTokens) {
  const int64_t T = 6;
  std::vector<float> x = uniform(T * spec.hidden, 1.0f, 21);
  x[1 * spec.hidden + 3] = NAN;      // token 1: NaN logits
  x[3 * spec.hidden + 0] = INFINITY; // token 3: infinite logits
  x[4 * spec.hidden + 5] = -INFINITY;
  std::vector<float> y(x.size());
  int32_t status = layer->run(table, T, x.data(), y.data());
  EXPECT_EQ(status, MOE_STATUS_NAN_LOGITS);
  reference::Inputs in;
  in.x = x.data();
  in.numTokens = T;
  reference::Result ref = reference::run(spec, w, in);
  EXPECT_TRUE(ref.sawNaN);
  expectSameOrBothNaN(y, ref.output);
  // The finite tokens are exact despite their neighbours.
  for (int64_t t : {0, 2, 5})
    for (int64_t c = 0; c < spec.hidden; ++c)
      EXPECT_TRUE(std::isfinite(y[t * spec.hidden + c]));
  // Token 3's logits are +-inf: the softmax splits evenly between the +inf
  // experts, as the reference defines, with no NaN weight (a fuzzer
  // finding: exp(inf - inf) used to make them NaN).
  moe_batch batch = {};
  batch.num_tokens = T;
  batch.x = x.data();
  compiler::LayerABI abi = compiler::describeLayer(spec, "moe_layer");
  compiler::RoutingBuffers routing(abi, T);
  std::vector<void *> pointers = routing.pointers(abi);
  layer->route(table, batch, pointers.data());
  EXPECT_EQ(routing.indices, ref.indices);
  for (size_t i = 0; i < ref.weights.size(); ++i)
    EXPECT_NEAR(routing.weights[i], ref.weights[i], 1e-6) << "slot " << i;
  for (int64_t j = 0; j < 2; ++j)
    EXPECT_TRUE(std::isfinite(routing.weights[3 * 2 + j]));
}

TEST_F(CompiledMixtral, EmptyAndNegativeBatches) {
  std::vector<float> y(4, 7.0f);
  EXPECT_EQ(layer->run(table, 0, nullptr, nullptr), 0);
  EXPECT_EQ(layer->run(table, 0, nullptr, y.data()), 0);
  EXPECT_EQ(y[0], 7.0f); // nothing written
  EXPECT_EQ(layer->run(table, -3, nullptr, y.data()), MOE_ERROR_BAD_SHAPE);
  std::vector<float> x(spec.hidden, 1.0f);
  EXPECT_EQ(layer->run(table, 1, nullptr, y.data()), MOE_ERROR_NULL_POINTER);
  EXPECT_EQ(layer->run(table, 1, x.data(), nullptr), MOE_ERROR_NULL_POINTER);
  EXPECT_EQ(layer->run(nullptr, 1, x.data(), y.data()), MOE_ERROR_NULL_POINTER);
}

TEST(Engine, HashTokenIdsOutOfRange) {
  frontend::LayerSpec spec;
  spec.name = "hash";
  spec.hidden = 32;
  spec.ffn = 48;
  spec.numExperts = 4;
  spec.router.family = frontend::RouterFamily::Hash;
  spec.hashVocab = 10;
  frontend::LayerWeights w;
  w.w1 = uniform(4 * 2 * 48 * 32, 0.2f, 2);
  w.w2 = uniform(4 * 32 * 48, 0.2f, 3);
  for (int32_t i = 0; i < 10; ++i)
    w.hashTable.push_back(i % 4);
  Engine engine;
  std::string error;
  std::shared_ptr<CompiledLayer> layer = engine.compile(spec, &error);
  ASSERT_TRUE(layer) << error;
  ASSERT_EQ(layer->weights().size(), 3u);
  EXPECT_EQ(layer->weights()[0].name, "hash_table");
  const void *table[] = {w.hashTable.data(), w.w1.data(), w.w2.data()};
  const int64_t T = 5;
  std::vector<float> x = uniform(T * 32, 1.0f, 9), y(x.size());
  // Inside the table, past its end, negative, huge.
  std::vector<int64_t> ids = {3, 10, -1, int64_t(1) << 40, 9};
  moe_batch batch = {};
  batch.num_tokens = T;
  batch.x = x.data();
  batch.token_ids = ids.data();
  EXPECT_EQ(layer->run(table, batch, y.data()),
            MOE_STATUS_TOKEN_ID_OUT_OF_RANGE);
  reference::Inputs in;
  in.x = x.data();
  in.numTokens = T;
  in.tokenIds = ids.data();
  reference::Result ref = reference::run(spec, w, in);
  EXPECT_TRUE(ref.sawBadTokenId);
  expectNear(y, ref.output, T, 32);
  // Routed nowhere: the output rows of the bad ids are zero.
  for (int64_t t : {1, 2, 3})
    for (int64_t c = 0; c < 32; ++c)
      EXPECT_EQ(y[t * 32 + c], 0.0f);
  // Without token ids a hash layer is a null-pointer error.
  batch.token_ids = nullptr;
  EXPECT_EQ(layer->run(table, batch, y.data()), MOE_ERROR_NULL_POINTER);
}

TEST_F(CompiledMixtral, BitwiseAcrossRunsAndThreadCounts) {
  // Every output element is computed by one work item in a fixed order, so
  // neither repetition nor the thread count changes a bit.
  for (int64_t T : {3, 64}) {
    std::vector<float> x = uniform(T * spec.hidden, 1.0f, 40 + T);
    std::vector<float> first(x.size());
    compiler::setNumThreads(1);
    ASSERT_EQ(layer->run(table, T, x.data(), first.data()), 0);
    for (int threads : {2, 3, 1, 2}) {
      compiler::setNumThreads(threads);
      std::vector<float> y(x.size());
      ASSERT_EQ(layer->run(table, T, x.data(), y.data()), 0);
      EXPECT_EQ(y, first) << "T " << T << ", " << threads << " threads";
    }
  }
  compiler::setNumThreads(2);
}

// Per-request isolation (docs/errors.md): request B floods expert 0 ahead
// of request A in one batch. Capacity counted per batch lets B push A's
// tokens over capacity; counted per request, A's routing is exactly what it
// is alone.
TEST(Engine, CapacityPerRequestIsolatesRequests) {
  auto specFor = [](frontend::CapacityGroupKind group) {
    frontend::LayerSpec spec;
    spec.name = "isolation";
    spec.hidden = 32;
    spec.ffn = 48;
    spec.numExperts = 4;
    spec.router.k = 1;
    spec.router.capacity.enabled = true;
    spec.router.capacity.factor = 1.0;
    spec.router.capacity.group = group;
    spec.router.capacity.overflow = frontend::Overflow::Drop;
    return spec;
  };
  frontend::LayerSpec perRequest =
      specFor(frontend::CapacityGroupKind::Request);
  frontend::LayerSpec perBatch = specFor(frontend::CapacityGroupKind::Batch);
  frontend::LayerWeights w;
  w.gate = uniform(4 * 32, 0.5f, 31);
  w.w1 = uniform(4 * 2 * 48 * 32, 0.2f, 32);
  w.w2 = uniform(4 * 32 * 48, 0.2f, 33);
  const void *table[] = {w.gate.data(), w.w1.data(), w.w2.data()};
  // A: 8 tokens, each aligned with expert 0's router row; B: 32 more.
  const int64_t A = 8, B = 32, d = 32;
  std::vector<float> a(A * d), batch((A + B) * d);
  for (int64_t t = 0; t < A; ++t)
    for (int64_t c = 0; c < d; ++c)
      a[t * d + c] = 4.0f * w.gate[c] + 0.01f * float(t + c % 3);
  for (int64_t t = 0; t < B; ++t)
    for (int64_t c = 0; c < d; ++c)
      batch[t * d + c] = 4.0f * w.gate[c]; // B first: it takes the slots
  std::copy(a.begin(), a.end(), batch.begin() + B * d);

  // By default the CPU kernels switch from the decode to the panel kernel
  // at 5 rows, and the two add a row's products in different orders;
  // panel-kernel-only.mlir sends every expert to the panel kernel.
  EngineOptions oneKernel;
  oneKernel.schedule = MOE_SOURCE_DIR "/schedules/panel-kernel-only.mlir";
  Engine engine, oneKernelEngine(oneKernel);
  std::string error;
  auto isolated = engine.compile(perRequest, &error);
  ASSERT_TRUE(isolated) << error;
  auto isolatedOneKernel = oneKernelEngine.compile(perRequest, &error);
  ASSERT_TRUE(isolatedOneKernel) << error;
  auto shared = engine.compile(perBatch, &error);
  ASSERT_TRUE(shared) << error;
  compiler::LayerABI abi = compiler::describeLayer(perRequest, "moe_layer");
  auto keptOfA = [&](CompiledLayer &layer, const std::vector<float> &x,
                     std::vector<int32_t> groups, int64_t first) {
    int64_t T = x.size() / d;
    moe_batch b = {};
    b.num_tokens = T;
    b.x = x.data();
    b.group_offsets = groups.data();
    b.num_groups = groups.size() - 1;
    compiler::RoutingBuffers routing(abi, T);
    std::vector<void *> pointers = routing.pointers(abi);
    EXPECT_EQ(layer.route(table, b, pointers.data()), 0);
    std::vector<float> y(x.size());
    EXPECT_EQ(layer.run(table, b, y.data()), 0);
    std::vector<int32_t> kept;
    for (int64_t t = first; t < first + A; ++t)
      kept.push_back(routing.rows[t] >= 0);
    return std::make_pair(
        kept,
        std::vector<float>(y.begin() + first * d, y.begin() + (first + A) * d));
  };
  std::vector<int32_t> groups = {0, int32_t(B), int32_t(A + B)};
  auto alone = keptOfA(*isolated, a, {0, int32_t(A)}, 0);
  auto together = keptOfA(*isolated, batch, groups, B);
  // Per request: A keeps the same tokens as alone, and its output matches
  // up to rounding: expert 0 holds 2 rows alone (the decode kernel) and
  // 8 + 2 together (the panel kernel).
  EXPECT_EQ(together.first, alone.first);
  EXPECT_GT(std::count(alone.first.begin(), alone.first.end(), 1), 0);
  ASSERT_EQ(together.second.size(), alone.second.size());
  for (size_t i = 0; i < alone.second.size(); ++i)
    EXPECT_NEAR(together.second[i], alone.second[i],
                1e-5f * (1.0f + std::fabs(alone.second[i])))
        << "element " << i;
  // With one kernel for every row count it is bitwise the same.
  auto aloneOneKernel = keptOfA(*isolatedOneKernel, a, {0, int32_t(A)}, 0);
  auto togetherOneKernel = keptOfA(*isolatedOneKernel, batch, groups, B);
  EXPECT_EQ(aloneOneKernel.first, alone.first);
  EXPECT_EQ(togetherOneKernel.first, alone.first);
  EXPECT_EQ(togetherOneKernel.second, aloneOneKernel.second);
  // Per batch: B's tokens took expert 0's slots; A's tokens are dropped.
  auto leaked = keptOfA(*shared, batch, {0, int32_t(A + B)}, B);
  EXPECT_NE(leaked.first, alone.first);
  EXPECT_EQ(std::count(leaked.first.begin(), leaked.first.end(), 1), 0);
  EXPECT_NE(leaked.second, alone.second);
}

TEST(Engine, ConcurrentCompilesShareOneEntry) {
  Engine engine;
  frontend::LayerSpec spec = mixtralLike();
  std::vector<std::shared_ptr<CompiledLayer>> layers(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::string error;
      layers[t] = engine.compile(spec, &error);
    });
  for (std::thread &t : threads)
    t.join();
  for (auto &layer : layers)
    EXPECT_TRUE(layer);
  EXPECT_EQ(engine.compileCount(), 1u);
  EXPECT_EQ(engine.cacheHits(), 3u);
}

TEST(Engine, Errors) {
  Engine engine;
  std::string error;
  frontend::LayerSpec spec = mixtralLike();
  spec.router.k = 9;
  EXPECT_FALSE(engine.compile(spec, &error));
  EXPECT_NE(error.find("1 <= k <= experts"), std::string::npos) << error;
  EXPECT_FALSE(engine.compileModel("/nonexistent/model", 0, &error));
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(engine.compileCount(), 0u);
  EngineOptions f16;
  f16.dtype = "f16";
  Engine other(f16);
  EXPECT_FALSE(other.compileModel("/nonexistent/model", 0, &error));
  EXPECT_NE(error.find("expected f32 or bf16"), std::string::npos) << error;
}

TEST(CAPI, CompileModelAndRun) {
  moe_engine *engine = nullptr;
  ASSERT_EQ(moe_engine_create(nullptr, 0, &engine), 0);
  moe_layer *layer = nullptr;
  std::string dir = MOE_SOURCE_DIR "/testdata/golden/mixtral_t33_2layers";
  ASSERT_EQ(moe_layer_compile_model(engine, dir.c_str(), 1, &layer), 0)
      << moe_last_error();
  EXPECT_EQ(moe_layer_hidden(layer), 64);
  ASSERT_EQ(moe_layer_weight_count(layer), 3);
  const char *name = nullptr;
  int64_t elements = 0;
  ASSERT_EQ(moe_layer_weight_info(layer, 0, &name, &elements), 0);
  EXPECT_STREQ(name, "gate");
  EXPECT_EQ(elements, 8 * 64);
  EXPECT_EQ(moe_layer_weight_info(layer, 3, &name, &elements),
            MOE_ERROR_OUT_OF_RANGE);
  ASSERT_NE(moe_layer_model_weights(layer), nullptr);
  // Layer 0 of the same model has other weights but the same shapes and
  // policy: the same code, a cache hit.
  moe_layer *layer0 = nullptr;
  ASSERT_EQ(moe_layer_compile_model(engine, dir.c_str(), 0, &layer0), 0);
  EXPECT_EQ(moe_engine_compile_count(engine), 1u);
  EXPECT_EQ(moe_engine_cache_hits(engine), 1u);
  std::vector<float> x = uniform(5 * 64, 1.0f, 7), y(x.size());
  moe_batch batch = {};
  batch.num_tokens = 5;
  batch.x = x.data();
  EXPECT_EQ(
      moe_layer_run(layer, moe_layer_model_weights(layer), &batch, y.data()),
      0);
  EXPECT_EQ(
      moe_layer_run(layer, moe_layer_model_weights(layer), nullptr, y.data()),
      MOE_ERROR_NULL_POINTER);
  EXPECT_NE(std::string(moe_last_error()).find("batch"), std::string::npos);
  batch.num_tokens = -1;
  EXPECT_EQ(
      moe_layer_run(layer, moe_layer_model_weights(layer), &batch, y.data()),
      MOE_ERROR_BAD_SHAPE);
  moe_layer_release(layer0);
  moe_engine_destroy(engine);
  // A layer outlives its engine.
  batch.num_tokens = 5;
  EXPECT_EQ(
      moe_layer_run(layer, moe_layer_model_weights(layer), &batch, y.data()),
      0);
  moe_layer_release(layer);
}

// bf16 expert weights through the C API: the weights are bf16 bits, the
// layer a separate compile (another fingerprint), and the output the
// reference's with bf16 operands; a model compiled with dtype bf16 gets
// its weights converted at import.
TEST(CAPI, BF16Weights) {
  moe_engine *engine = nullptr;
  ASSERT_EQ(moe_engine_create(nullptr, 0, &engine), 0);
  frontend::LayerSpec spec = mixtralLike();
  moe_layer_desc desc = {};
  desc.hidden = spec.hidden;
  desc.ffn = spec.ffn;
  desc.num_experts = spec.numExperts;
  desc.top_k = spec.router.k;
  desc.renormalize = 1;
  moe_layer *f32 = nullptr, *bf16 = nullptr;
  ASSERT_EQ(moe_layer_compile(engine, &desc, &f32), 0) << moe_last_error();
  desc.bf16_weights = 1;
  ASSERT_EQ(moe_layer_compile(engine, &desc, &bf16), 0) << moe_last_error();
  EXPECT_EQ(moe_engine_compile_count(engine), 2u);

  spec.expertWeights = frontend::WeightType::BF16;
  frontend::LayerWeights w = weightsFor(spec);
  frontend::convertExpertWeightsToBF16(w);
  const void *table[3] = {w.gate.data(), w.w1BF16.data(), w.w2BF16.data()};
  // T = 40 puts experts on the panel kernel, T = 3 on the decode kernel.
  for (int64_t T : {40, 3}) {
    std::vector<float> x = uniform(T * 64, 1.0f, 11), y(x.size());
    moe_batch batch = {};
    batch.num_tokens = T;
    batch.x = x.data();
    ASSERT_EQ(moe_layer_run(bf16, table, &batch, y.data()), 0);
    reference::Inputs inputs;
    inputs.x = x.data();
    inputs.numTokens = T;
    reference::Result ref = reference::run(spec, w, inputs);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], ref.output[i], 1e-4 + 2e-3 * std::fabs(ref.output[i]))
          << "T " << T << ", element " << i;
  }
  moe_layer_release(f32);
  moe_layer_release(bf16);
  moe_engine_destroy(engine);

  EngineOptions options;
  options.dtype = "bf16";
  Engine models(options);
  std::string error;
  auto layer = models.compileModel(
      MOE_SOURCE_DIR "/testdata/golden/mixtral_t33_2layers", 1, &error);
  ASSERT_TRUE(layer) << error;
  EXPECT_EQ(layer->spec().expertWeights, frontend::WeightType::BF16);
  ASSERT_EQ(layer->weights().size(), 3u);
  EXPECT_EQ(layer->weights()[1].ctype, "uint16_t");
  std::vector<float> x = uniform(5 * 64, 1.0f, 7), y(x.size());
  EXPECT_EQ(layer->run(layer->modelWeights(), 5, x.data(), y.data()), 0);
}

TEST(Engine, CompilesMLIRText) {
  // The hand-written Mixtral block of test/aot/Inputs, against the same
  // layer imported from the golden model it was written after.
  std::string path = MOE_SOURCE_DIR "/test/aot/Inputs/mixtral_t1_layer.mlir";
  FILE *f = fopen(path.c_str(), "rb");
  ASSERT_TRUE(f);
  std::string text;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, f)) > 0;)
    text.append(buffer, n);
  fclose(f);
  Engine engine;
  std::string error;
  std::shared_ptr<CompiledLayer> fromText = engine.compileMLIR(text, &error);
  ASSERT_TRUE(fromText) << error;
  ASSERT_EQ(fromText->weights().size(), 3u);
  EXPECT_EQ(fromText->weights()[0].name, "arg1");
  EXPECT_EQ(fromText->weights()[0].elements, 8 * 64);
  std::shared_ptr<CompiledLayer> model = engine.compileModel(
      MOE_SOURCE_DIR "/testdata/golden/mixtral_t1", 0, &error);
  ASSERT_TRUE(model) << error;
  std::vector<float> x = uniform(6 * 64, 1.0f, 3), a(x.size()), b(x.size());
  moe_batch batch = {};
  batch.num_tokens = 6;
  batch.x = x.data();
  ASSERT_EQ(fromText->run(model->modelWeights(), batch, a.data()), 0);
  ASSERT_EQ(model->run(model->modelWeights(), batch, b.data()), 0);
  expectNear(a, b, 6, 64);
  EXPECT_EQ(fromText->route(model->modelWeights(), batch, nullptr),
            MOE_ERROR_COMPILE);
  // The same text again is a cache hit; broken text an error.
  EXPECT_TRUE(engine.compileMLIR(text, &error));
  EXPECT_EQ(engine.compileCount(), 2u);
  EXPECT_EQ(engine.cacheHits(), 1u);
  EXPECT_FALSE(engine.compileMLIR("func.func @f(", &error));
  EXPECT_NE(error.find("cannot parse"), std::string::npos) << error;
  EXPECT_FALSE(engine.compileMLIR(
      "func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : "
      "tensor<4xf32> }",
      &error));
  EXPECT_NE(error.find("tensor<?xDxf32>"), std::string::npos) << error;
}

TEST(CAPI, Errors) {
  moe_engine *engine = nullptr;
  EXPECT_EQ(moe_engine_create(nullptr, -1, &engine),
            MOE_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(moe_engine_create("x86-64-v3", 0, &engine), 0);
  moe_layer *layer = nullptr;
  moe_layer_desc desc = {};
  EXPECT_EQ(moe_layer_compile(engine, &desc, &layer), MOE_ERROR_COMPILE);
  EXPECT_NE(std::string(moe_last_error()).find("must be positive"),
            std::string::npos);
  EXPECT_EQ(moe_layer_compile(nullptr, &desc, &layer),
            MOE_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(moe_layer_compile_model(engine, "/nonexistent", 0, &layer),
            MOE_ERROR_COMPILE);
  desc.hidden = 32;
  desc.ffn = 48;
  desc.num_experts = 4;
  desc.top_k = 2;
  ASSERT_EQ(moe_layer_compile(engine, &desc, &layer), 0) << moe_last_error();
  EXPECT_EQ(moe_layer_model_weights(layer), nullptr);
  moe_layer_release(layer);
  moe_engine_destroy(engine);
}

} // namespace

// The JIT's section mapper keeps consecutive sections next to each other
// even when the process maps other large regions between them (mmapped
// weights, a sanitizer's reservations): where plain mmap puts a mapping
// depends on the holes the address space has, and a module whose code and
// constants end up more than 2 GiB apart breaks the 32-bit RIP-relative
// references of the small code model (docs/errors.md, Sanitizers).
TEST(JITSections, StayTogetherWhateverElseIsMapped) {
  using Purpose = llvm::SectionMemoryManager::AllocationPurpose;
  llvm::SectionMemoryManager::MemoryMapper &mapper =
      compiler::getJITSectionMapper();
  const size_t gib = size_t(1) << 30;
  std::vector<void *> others;
  std::vector<llvm::sys::MemoryBlock> blocks;
  size_t total = 0;
  for (int i = 0; i < 6; ++i) {
    void *other = mmap(nullptr, 3 * gib, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(other, MAP_FAILED);
    others.push_back(other);
    std::error_code ec;
    blocks.push_back(mapper.allocateMappedMemory(
        i % 2 ? Purpose::ROData : Purpose::Code, 5000 + 4096 * i, nullptr,
        llvm::sys::Memory::MF_READ | llvm::sys::Memory::MF_WRITE, ec));
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_GE(blocks.back().allocatedSize(), size_t(5000 + 4096 * i));
    std::memset(blocks.back().base(), i + 1, blocks.back().allocatedSize());
    total += blocks.back().allocatedSize();
  }
  auto begin = [](const llvm::sys::MemoryBlock &b) {
    return reinterpret_cast<uintptr_t>(b.base());
  };
  uintptr_t lo = begin(blocks[0]), hi = lo;
  for (const llvm::sys::MemoryBlock &b : blocks) {
    EXPECT_EQ(static_cast<unsigned char *>(b.base())[b.allocatedSize() - 1],
              static_cast<unsigned char>(&b - blocks.data() + 1));
    lo = std::min(lo, begin(b));
    hi = std::max(hi, begin(b) + b.allocatedSize());
  }
  EXPECT_EQ(hi - lo, total) << "the sections are not one contiguous range";
  for (llvm::sys::MemoryBlock &b : blocks)
    EXPECT_FALSE(mapper.releaseMappedMemory(b));
  for (void *other : others)
    munmap(other, 3 * gib);
}

// The last-level cache size the rule for blocks of k reads: the host's for
// "native" (sysfs; the largest data or unified cache level of CPU 0), the
// 32 MiB default for a named CPU, whose cache the compiler cannot know.
TEST(CPUFeatures, LastLevelCache) {
  auto named = mlir::moe::compiler::getCPUFeatures("x86-64-v3");
  ASSERT_TRUE(bool(named)) << llvm::toString(named.takeError());
  EXPECT_EQ(named->lastLevelCacheBytes, int64_t(32) << 20);
  auto native = mlir::moe::compiler::getCPUFeatures("native");
  ASSERT_TRUE(bool(native)) << llvm::toString(native.takeError());
  // Any real last-level cache is larger than the 48 KiB of an L1 and far
  // below 4 GiB.
  EXPECT_GT(native->lastLevelCacheBytes, int64_t(64) << 10);
  EXPECT_LT(native->lastLevelCacheBytes, int64_t(4) << 30);
  FILE *l3 = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
  if (!l3)
    return;
  long kib = 0;
  char unit = 0;
  int fields = std::fscanf(l3, "%ld%c", &kib, &unit);
  std::fclose(l3);
  if (fields == 2 && unit == 'K')
    EXPECT_EQ(native->lastLevelCacheBytes, int64_t(kib) << 10);
}

// The L2 size the panel blocks take half of: the host's level-2 data or
// unified cache for "native", 1 MiB for a named CPU.
TEST(CPUFeatures, L2Cache) {
  auto named = mlir::moe::compiler::getCPUFeatures("x86-64-v4");
  ASSERT_TRUE(bool(named)) << llvm::toString(named.takeError());
  EXPECT_EQ(named->l2CacheBytes, int64_t(1) << 20);
  auto native = mlir::moe::compiler::getCPUFeatures("native");
  ASSERT_TRUE(bool(native)) << llvm::toString(native.takeError());
  EXPECT_GE(native->l2CacheBytes, int64_t(64) << 10);
  EXPECT_LE(native->l2CacheBytes, native->lastLevelCacheBytes);
  for (int index = 0; index < 16; ++index) {
    std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    auto readLine = [&](const char *name) {
      std::string text;
      if (FILE *f = std::fopen((dir + "/" + name).c_str(), "r")) {
        char line[64] = {0};
        if (std::fgets(line, sizeof line, f))
          text = line;
        std::fclose(f);
      }
      while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
      return text;
    };
    std::string level = readLine("level");
    if (level.empty())
      break;
    if (level != "2" || readLine("type") == "Instruction")
      continue;
    long kib = 0;
    char unit = 0;
    if (std::sscanf(readLine("size").c_str(), "%ld%c", &kib, &unit) == 2 &&
        unit == 'K')
      EXPECT_EQ(native->l2CacheBytes, int64_t(kib) << 10);
  }
}

// The cores the work items of the expert GEMMs follow: for "native" the
// CPUs this process may run on (its affinity mask, as sched_getaffinity
// counts them), 0 (unknown) for a named CPU.
TEST(CPUFeatures, Cores) {
  auto named = mlir::moe::compiler::getCPUFeatures("x86-64-v4");
  ASSERT_TRUE(bool(named)) << llvm::toString(named.takeError());
  EXPECT_EQ(named->cores, 0);
  auto native = mlir::moe::compiler::getCPUFeatures("native");
  ASSERT_TRUE(bool(native)) << llvm::toString(native.takeError());
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(native->cores, CPU_COUNT(&set));
}
