//===- ReferenceTest.cpp - the naive reference MoE block ------------------===//
//
// Two kinds of tests:
//  - golden vectors (testdata/golden): each layer is packed by hand here from
//    the checkpoint tensors (independently of the model importer) and the
//    reference must reproduce the outputs, routing and losses that an
//    independent PyTorch implementation produced;
//  - small hand-checkable cases for each routing rule (ties, NaN, groups,
//    capacity and overflow, null experts, top-p, expert choice, hash,
//    balanced assignment, losses, empty batches).
//
//===----------------------------------------------------------------------===//

#include "moe/Reference/Reference.h"

#include "moe/Frontend/SafeTensors.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>

using namespace mlir::moe::frontend;
namespace ref = mlir::moe::reference;

namespace {

//===----------------------------------------------------------------------===//
// Shared helpers
//===----------------------------------------------------------------------===//

/// |actual - expected| <= atol + rtol * |expected|, elementwise.
bool isClose(double actual, double expected, double rtol = 1e-4,
             double atol = 1e-5) {
  return std::fabs(actual - expected) <= atol + rtol * std::fabs(expected);
}

void expectAllClose(const std::vector<float> &actual,
                    const std::vector<float> &expected, const std::string &what,
                    double rtol = 1e-4, double atol = 1e-5) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (isClose(actual[i], expected[i], rtol, atol))
      continue;
    if (++mismatches <= 5)
      ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", expected "
                    << expected[i];
  }
  EXPECT_EQ(mismatches, 0) << what << ": elements out of tolerance";
}

double sigmoidOf(double z) { return 1.0 / (1.0 + std::exp(-z)); }

/// Slot (t, j) of a [T, K] result array.
template <typename T>
T slot(const std::vector<T> &values, int64_t numSlots, int64_t t, int64_t j) {
  return values[t * numSlots + j];
}

//===----------------------------------------------------------------------===//
// Golden vectors
//===----------------------------------------------------------------------===//

std::string goldenPath(const std::string &folder, const std::string &file) {
  return std::string(MOE_SOURCE_DIR) + "/testdata/golden/" + folder + "/" +
         file;
}

std::optional<SafeTensorsFile> openFile(const std::string &path) {
  llvm::Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  if (!file) {
    ADD_FAILURE() << llvm::toString(file.takeError());
    return std::nullopt;
  }
  return std::move(*file);
}

/// The model and io files of one golden folder (a test failure if either
/// cannot be opened).
struct GoldenFiles {
  std::optional<SafeTensorsFile> model, io;
};

GoldenFiles openGolden(const std::string &folder) {
  return {openFile(goldenPath(folder, "model.safetensors")),
          openFile(goldenPath(folder, "io.safetensors"))};
}

/// The f32 values of tensor `name`; a test failure and {} if it is missing.
std::vector<float> floatsOf(const SafeTensorsFile &file,
                            const std::string &name) {
  const TensorView *tensor = file.lookup(name);
  if (!tensor) {
    ADD_FAILURE() << "missing tensor " << name << " in "
                  << file.getPath().str();
    return {};
  }
  llvm::Expected<std::vector<float>> values = tensor->toF32();
  if (!values) {
    ADD_FAILURE() << llvm::toString(values.takeError());
    return {};
  }
  return std::move(*values);
}

std::vector<int64_t> intsOf(const SafeTensorsFile &file,
                            const std::string &name) {
  const TensorView *tensor = file.lookup(name);
  if (!tensor) {
    ADD_FAILURE() << "missing tensor " << name;
    return {};
  }
  llvm::Expected<std::vector<int64_t>> values = tensor->toI64();
  if (!values) {
    ADD_FAILURE() << llvm::toString(values.takeError());
    return {};
  }
  return std::move(*values);
}

void append(std::vector<float> &dst, const std::vector<float> &src) {
  dst.insert(dst.end(), src.begin(), src.end());
}

/// Packs per-expert checkpoint tensors `<expertPrefix><e>.<part>.weight`:
/// w1[e] = cat(gate rows, up rows) (just `gate` when `up` is null) and
/// w2[e] = down.
void packExperts(const SafeTensorsFile &model, const std::string &expertPrefix,
                 int64_t numExperts, const char *gate, const char *up,
                 const char *down, LayerWeights &w) {
  for (int64_t e = 0; e < numExperts; ++e) {
    std::string base = expertPrefix + std::to_string(e) + ".";
    append(w.w1, floatsOf(model, base + gate + ".weight"));
    if (up)
      append(w.w1, floatsOf(model, base + up + ".weight"));
    append(w.w2, floatsOf(model, base + down + ".weight"));
  }
}

/// A SwiGLU shared expert `<prefix>.{gate,up,down}_proj.weight`.
void packSharedExpert(const SafeTensorsFile &model, const std::string &prefix,
                      LayerWeights &w) {
  append(w.sharedW1, floatsOf(model, prefix + ".gate_proj.weight"));
  append(w.sharedW1, floatsOf(model, prefix + ".up_proj.weight"));
  append(w.sharedW2, floatsOf(model, prefix + ".down_proj.weight"));
}

LayerSpec baseSpec(int64_t hidden, int64_t ffn, int64_t numExperts,
                   ExpertActivation activation) {
  LayerSpec spec;
  spec.name = "layer0";
  spec.hidden = hidden;
  spec.ffn = ffn;
  spec.numExperts = numExperts;
  spec.activation = activation;
  return spec;
}

/// How the golden top-k indices compare with the reference's.
enum class IndexOrder { Exact, AsSets };

/// Runs `spec`/`w` on `layers.<layer>.input` of `io` and checks every
/// expected tensor that the file holds for that layer.
void checkGoldenLayer(const SafeTensorsFile &io, int64_t layer,
                      const LayerSpec &spec, const LayerWeights &w,
                      IndexOrder order = IndexOrder::Exact) {
  SCOPED_TRACE("layer " + std::to_string(layer));
  std::string prefix = "layers." + std::to_string(layer) + ".";
  std::vector<float> input = floatsOf(io, prefix + "input");
  ASSERT_FALSE(input.empty());
  int64_t numTokens = input.size() / spec.hidden;
  int64_t numSlots = spec.numSlots();
  int64_t numExperts = spec.numExperts;

  ref::Inputs inputs;
  inputs.x = input.data();
  inputs.numTokens = numTokens;
  std::vector<int64_t> tokenIds;
  if (io.lookup(prefix + "token_ids")) {
    tokenIds = intsOf(io, prefix + "token_ids");
    ASSERT_EQ(static_cast<int64_t>(tokenIds.size()), numTokens);
    inputs.tokenIds = tokenIds.data();
  }
  ref::Result result = ref::run(spec, w, inputs);
  EXPECT_FALSE(result.sawNaN);
  EXPECT_FALSE(result.sawBadTokenId);

  expectAllClose(result.output, floatsOf(io, prefix + "output"), "output");

  if (io.lookup(prefix + "router_logits"))
    expectAllClose(result.logits, floatsOf(io, prefix + "router_logits"),
                   "router_logits");

  if (io.lookup(prefix + "topk_indices")) {
    std::vector<int64_t> indices = intsOf(io, prefix + "topk_indices");
    std::vector<float> weights = floatsOf(io, prefix + "topk_weights");
    ASSERT_EQ(static_cast<int64_t>(indices.size()), numTokens * numSlots);
    ASSERT_EQ(weights.size(), indices.size());
    for (int64_t t = 0; t < numTokens; ++t) {
      // expert -> weight, per token, on both sides.
      std::map<int64_t, float> expected, actual;
      for (int64_t j = 0; j < numSlots; ++j) {
        expected[slot(indices, numSlots, t, j)] = slot(weights, numSlots, t, j);
        actual[slot(result.indices, numSlots, t, j)] =
            slot(result.weights, numSlots, t, j);
        if (order == IndexOrder::Exact) {
          EXPECT_EQ(slot(result.indices, numSlots, t, j),
                    slot(indices, numSlots, t, j))
              << "token " << t << " slot " << j;
          EXPECT_TRUE(isClose(slot(result.weights, numSlots, t, j),
                              slot(weights, numSlots, t, j)))
              << "token " << t << " slot " << j << ": "
              << slot(result.weights, numSlots, t, j) << " vs "
              << slot(weights, numSlots, t, j);
        }
      }
      if (order == IndexOrder::AsSets) {
        ASSERT_EQ(actual.size(), expected.size()) << "token " << t;
        for (auto [expert, weight] : expected) {
          ASSERT_TRUE(actual.count(expert))
              << "token " << t << " misses expert " << expert;
          EXPECT_TRUE(isClose(actual[expert], weight))
              << "token " << t << " expert " << expert << ": " << actual[expert]
              << " vs " << weight;
        }
      }
    }
  }

  if (io.lookup(prefix + "aux_loss")) {
    std::vector<float> aux = floatsOf(io, prefix + "aux_loss");
    ASSERT_EQ(aux.size(), 1u);
    EXPECT_TRUE(isClose(result.auxLoss, aux[0]))
        << "aux_loss " << result.auxLoss << " vs " << aux[0];
  }
  if (io.lookup(prefix + "z_loss")) {
    std::vector<float> z = floatsOf(io, prefix + "z_loss");
    ASSERT_EQ(z.size(), 1u);
    EXPECT_TRUE(isClose(result.zLoss, z[0]))
        << "z_loss " << result.zLoss << " vs " << z[0];
  }

  // Switch: kept[t] == 1 iff the token's slot was computed.
  if (io.lookup(prefix + "kept")) {
    std::vector<int64_t> kept = intsOf(io, prefix + "kept");
    ASSERT_EQ(static_cast<int64_t>(kept.size()), numTokens);
    int64_t numDropped = 0;
    for (int64_t t = 0; t < numTokens; ++t) {
      EXPECT_EQ(kept[t] == 1, result.rows[t * numSlots] >= 0) << "token " << t;
      numDropped += kept[t] == 0;
    }
    EXPECT_GT(numDropped, 0) << "the golden case should exercise capacity";
  }

  // Hash: the expert of each token.
  if (io.lookup(prefix + "experts")) {
    std::vector<int64_t> experts = intsOf(io, prefix + "experts");
    ASSERT_EQ(static_cast<int64_t>(experts.size()), numTokens);
    for (int64_t t = 0; t < numTokens; ++t) {
      EXPECT_EQ(result.indices[t], experts[t]) << "token " << t;
      EXPECT_EQ(result.weights[t], 1.0f) << "token " << t;
    }
  }

  // Top-p: how many slots each token used.
  if (io.lookup(prefix + "num_experts")) {
    std::vector<int64_t> counts = intsOf(io, prefix + "num_experts");
    ASSERT_EQ(static_cast<int64_t>(counts.size()), numTokens);
    std::set<int64_t> distinctCounts;
    for (int64_t t = 0; t < numTokens; ++t) {
      int64_t used = 0;
      for (int64_t j = 0; j < numSlots; ++j)
        used += slot(result.indices, numSlots, t, j) != -1;
      EXPECT_EQ(used, counts[t]) << "token " << t;
      distinctCounts.insert(counts[t]);
    }
    EXPECT_GT(distinctCounts.size(), 1u) << "top-p should vary per token";
  }

  // Expert choice: the set of tokens each expert took, and their gates.
  if (io.lookup(prefix + "expert_tokens")) {
    std::vector<int64_t> tokens = intsOf(io, prefix + "expert_tokens");
    std::vector<float> gates = floatsOf(io, prefix + "expert_gates");
    ASSERT_EQ(tokens.size(), gates.size());
    ASSERT_EQ(tokens.size() % numExperts, 0u);
    int64_t capacity = tokens.size() / numExperts;
    for (int64_t e = 0; e < numExperts; ++e) {
      std::map<int64_t, float> expected, actual;
      for (int64_t i = 0; i < capacity; ++i)
        expected[tokens[e * capacity + i]] = gates[e * capacity + i];
      for (int64_t t = 0; t < numTokens; ++t)
        if (slot(result.indices, numSlots, t, e) == e)
          actual[t] = slot(result.weights, numSlots, t, e);
      ASSERT_EQ(actual.size(), expected.size()) << "expert " << e;
      for (auto [token, gate] : expected) {
        ASSERT_TRUE(actual.count(token))
            << "expert " << e << " misses token " << token;
        EXPECT_TRUE(isClose(actual[token], gate))
            << "expert " << e << " token " << token;
      }
      EXPECT_EQ(result.load[e], capacity);
    }
  }
}

/// Mixtral: softmax, top-2, renormalized, SwiGLU w1/w3/w2.
void checkMixtral(const std::string &folder, int64_t numLayers) {
  GoldenFiles golden = openGolden(folder);
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  for (int64_t layer = 0; layer < numLayers; ++layer) {
    LayerSpec spec = baseSpec(64, 96, 8, ExpertActivation::SiluGlu);
    spec.layerIndex = layer;
    spec.router.k = 2;
    spec.router.renormalize = true;
    std::string prefix =
        "model.layers." + std::to_string(layer) + ".block_sparse_moe.";
    LayerWeights w;
    w.gate = floatsOf(*model, prefix + "gate.weight");
    packExperts(*model, prefix + "experts.", 8, "w1", "w3", "w2", w);
    checkGoldenLayer(*io, layer, spec, w);
  }
}

TEST(ReferenceGolden, MixtralOneToken) { checkMixtral("mixtral_t1", 1); }

TEST(ReferenceGolden, MixtralTwoLayers) {
  checkMixtral("mixtral_t33_2layers", 2);
}

TEST(ReferenceGolden, Qwen2Moe) {
  GoldenFiles golden = openGolden("qwen2_moe_t40");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 48, 16, ExpertActivation::SiluGlu);
  spec.router.k = 4;
  spec.router.renormalize = false; // norm_topk_prob = false
  spec.sharedFfn = 128;
  spec.sharedGate = true;
  std::string prefix = "model.layers.0.mlp.";
  LayerWeights w;
  w.gate = floatsOf(*model, prefix + "gate.weight");
  packExperts(*model, prefix + "experts.", 16, "gate_proj", "up_proj",
              "down_proj", w);
  packSharedExpert(*model, prefix + "shared_expert", w);
  w.sharedGate = floatsOf(*model, prefix + "shared_expert_gate.weight");
  checkGoldenLayer(*io, 0, spec, w);
}

TEST(ReferenceGolden, DeepSeekV3) {
  GoldenFiles golden = openGolden("deepseek_v3_t29");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 32, 32, ExpertActivation::SiluGlu);
  spec.router.k = 4;
  spec.router.scoring = Scoring::Sigmoid;
  spec.router.renormalize = true;
  spec.router.scale = 2.5;
  spec.router.selectionBias = true;
  spec.router.nGroup = 4;
  spec.router.topkGroup = 2;
  spec.sharedFfn = 1 * 32; // n_shared_experts * moe_intermediate_size
  std::string prefix = "model.layers.0.mlp.";
  LayerWeights w;
  w.gate = floatsOf(*model, prefix + "gate.weight");
  w.selectionBias = floatsOf(*model, prefix + "gate.e_score_correction_bias");
  packExperts(*model, prefix + "experts.", 32, "gate_proj", "up_proj",
              "down_proj", w);
  packSharedExpert(*model, prefix + "shared_experts", w);
  checkGoldenLayer(*io, 0, spec, w, IndexOrder::AsSets);
}

TEST(ReferenceGolden, OLMoE) {
  GoldenFiles golden = openGolden("olmoe_t17");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 32, 16, ExpertActivation::SiluGlu);
  spec.router.k = 8;
  std::string prefix = "model.layers.0.mlp.";
  LayerWeights w;
  w.gate = floatsOf(*model, prefix + "gate.weight");
  packExperts(*model, prefix + "experts.", 16, "gate_proj", "up_proj",
              "down_proj", w);
  checkGoldenLayer(*io, 0, spec, w);
}

TEST(ReferenceGolden, SwitchPerSequenceCapacity) {
  GoldenFiles golden = openGolden("switch_b2s24");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 96, 4, ExpertActivation::Relu);
  spec.router.k = 1;
  spec.router.capacity.enabled = true;
  spec.router.capacity.absolute = 5; // expert_capacity
  spec.router.capacity.group = CapacityGroupKind::Sequence;
  spec.router.capacity.overflow = Overflow::Drop;
  spec.sequenceLength = 24;
  std::string prefix = "encoder.block.0.layer.1.mlp.";
  LayerWeights w;
  w.gate = floatsOf(*model, prefix + "router.classifier.weight");
  packExperts(*model, prefix + "experts.expert_", 4, "wi", nullptr, "wo", w);
  checkGoldenLayer(*io, 0, spec, w);
}

TEST(ReferenceGolden, ExpertChoice) {
  GoldenFiles golden = openGolden("expert_choice_t32");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 96, 8, ExpertActivation::Gelu);
  spec.router.family = RouterFamily::ExpertChoice;
  spec.router.k = 0;
  spec.router.capacityFactor = 2.0;
  LayerWeights w;
  w.gate = floatsOf(*model, "layers.0.gate.weight");
  packExperts(*model, "layers.0.experts.", 8, "wi", nullptr, "wo", w);
  checkGoldenLayer(*io, 0, spec, w);
}

TEST(ReferenceGolden, Hash) {
  GoldenFiles golden = openGolden("hash_t50");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 96, 8, ExpertActivation::Relu);
  spec.router.family = RouterFamily::Hash;
  spec.router.k = 0;
  spec.hashVocab = 1000;
  LayerWeights w;
  for (int64_t entry : intsOf(*model, "layers.0.hash_table"))
    w.hashTable.push_back(static_cast<int32_t>(entry));
  ASSERT_EQ(static_cast<int64_t>(w.hashTable.size()), spec.hashVocab);
  packExperts(*model, "layers.0.experts.", 8, "wi", nullptr, "wo", w);
  checkGoldenLayer(*io, 0, spec, w);
}

TEST(ReferenceGolden, TopP) {
  GoldenFiles golden = openGolden("top_p_t25");
  ASSERT_TRUE(golden.model && golden.io);
  std::optional<SafeTensorsFile> &model = golden.model, &io = golden.io;
  LayerSpec spec = baseSpec(64, 96, 8, ExpertActivation::SiluGlu);
  spec.router.family = RouterFamily::TopP;
  spec.router.p = 0.4;
  spec.router.k = 4; // max_experts_per_tok
  LayerWeights w;
  w.gate = floatsOf(*model, "layers.0.gate.weight");
  packExperts(*model, "layers.0.experts.", 8, "gate_proj", "up_proj",
              "down_proj", w);
  checkGoldenLayer(*io, 0, spec, w);
}

//===----------------------------------------------------------------------===//
// Hand-checkable cases
//===----------------------------------------------------------------------===//

/// A layer whose router logits equal the token (the gate is the identity on
/// d = E + null features) and whose expert e computes (e + 1) * relu(x)
/// (ReLU, F = d, w1[e] = I, w2[e] = (e + 1) I).
struct IdentityLayer {
  LayerSpec spec;
  LayerWeights w;

  IdentityLayer(int64_t numExperts, int64_t nullExperts, RouterSpec router) {
    int64_t d = numExperts + nullExperts;
    router.nullExperts = nullExperts;
    spec = baseSpec(d, d, numExperts, ExpertActivation::Relu);
    spec.router = router;
    if (router.family != RouterFamily::Hash)
      w.gate = identity(d, 1.0f);
    for (int64_t e = 0; e < numExperts; ++e) {
      append(w.w1, identity(d, 1.0f));
      append(w.w2, identity(d, static_cast<float>(e + 1)));
    }
  }

  static std::vector<float> identity(int64_t n, float diagonal) {
    std::vector<float> matrix(n * n, 0.0f);
    for (int64_t i = 0; i < n; ++i)
      matrix[i * n + i] = diagonal;
    return matrix;
  }

  ref::Result run(const std::vector<float> &x, std::vector<int32_t> groups = {},
                  const std::vector<int64_t> *tokenIds = nullptr) const {
    ref::Inputs inputs;
    inputs.x = x.data();
    inputs.numTokens = x.size() / spec.hidden;
    inputs.groups = std::move(groups);
    if (tokenIds)
      inputs.tokenIds = tokenIds->data();
    return ref::run(spec, w, inputs);
  }
};

RouterSpec topK(int64_t k) {
  RouterSpec router;
  router.k = k;
  return router;
}

RouterSpec withCapacity(RouterSpec router, int64_t absolute, Overflow overflow,
                        CapacityGroupKind group = CapacityGroupKind::Batch) {
  router.capacity.enabled = true;
  router.capacity.absolute = absolute;
  router.capacity.overflow = overflow;
  router.capacity.group = group;
  return router;
}

TEST(ReferenceTopK, SoftmaxRenormalizeAndScale) {
  // Token 0: logits [1, 3, 2, 0] -> experts 1, 2. Token 1: [0.5, 0.25, 4, 1]
  // -> experts 2, 3.
  std::vector<float> x = {1, 3, 2, 0, 0.5f, 0.25f, 4, 1};
  double z0 = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
  double z1 = std::exp(0.5) + std::exp(0.25) + std::exp(4.0) + std::exp(1.0);

  ref::Result plain = IdentityLayer(4, 0, topK(2)).run(x);
  EXPECT_EQ(plain.indices, (std::vector<int32_t>{1, 2, 2, 3}));
  EXPECT_NEAR(plain.weights[0], std::exp(3.0) / z0, 1e-6);
  EXPECT_NEAR(plain.weights[1], std::exp(2.0) / z0, 1e-6);
  EXPECT_NEAR(plain.weights[2], std::exp(4.0) / z1, 1e-6);
  EXPECT_NEAR(plain.weights[3], std::exp(1.0) / z1, 1e-6);
  expectAllClose(plain.logits, x, "logits");
  EXPECT_EQ(plain.load, (std::vector<int32_t>{0, 1, 2, 1}));
  EXPECT_EQ(plain.rows, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_FALSE(plain.sawNaN);
  // out = w0 * 2 * x + w1 * 3 * x (experts 1 and 2), token 0.
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(plain.output[i],
                (2 * plain.weights[0] + 3 * plain.weights[1]) * x[i], 1e-5);

  RouterSpec router = topK(2);
  router.renormalize = true;
  router.scale = 2.0;
  ref::Result scaled = IdentityLayer(4, 0, router).run(x);
  EXPECT_EQ(scaled.indices, plain.indices);
  EXPECT_NEAR(scaled.weights[0], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(scaled.weights[1], 2.0 / (1.0 + std::exp(1.0)), 1e-6);
  EXPECT_NEAR(scaled.weights[2], 2.0 / (1.0 + std::exp(-3.0)), 1e-6);
  EXPECT_NEAR(scaled.weights[3], 2.0 / (1.0 + std::exp(3.0)), 1e-6);
}

TEST(ReferenceTopK, TiesPreferLowerIndex) {
  std::vector<float> x = {1, 1, 1, 1, 0, 2, 2, 1, 2, 0, 0, 2};
  for (Scoring scoring : {Scoring::Softmax, Scoring::Sigmoid}) {
    RouterSpec router = topK(2);
    router.scoring = scoring;
    ref::Result result = IdentityLayer(4, 0, router).run(x);
    EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 1, 1, 2, 0, 3}));
    for (int64_t t = 0; t < 3; ++t)
      EXPECT_EQ(result.weights[2 * t], result.weights[2 * t + 1]);
  }
  // Expert choice breaks ties by lower token index: all four tokens tie.
  RouterSpec choice;
  choice.family = RouterFamily::ExpertChoice;
  choice.k = 0;
  choice.capacityFactor = 1.0; // C = 4 * 1 / 2 = 2
  ref::Result result =
      IdentityLayer(2, 0, choice).run({0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 1, 0, 1, -1, -1, -1, -1}));
}

TEST(ReferenceTopK, NaNLogitIsNeverSelected) {
  // A NaN gate bias makes column 0 NaN for every token.
  IdentityLayer layer(4, 0, topK(2));
  layer.spec.gateBias = true;
  float nan = std::numeric_limits<float>::quiet_NaN();
  layer.w.gateBias = {nan, 0, 0, 0};
  std::vector<float> x = {5, 1, 0.5f, 2};
  ref::Result result = layer.run(x);
  EXPECT_TRUE(result.sawNaN);
  EXPECT_TRUE(std::isnan(result.logits[0]));
  EXPECT_EQ(result.indices, (std::vector<int32_t>{3, 1}));
  // The NaN column has probability 0 (it counts as -inf).
  double z = std::exp(1.0) + std::exp(0.5) + std::exp(2.0);
  EXPECT_NEAR(result.weights[0], std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(result.weights[1], std::exp(1.0) / z, 1e-6);
  for (float value : result.output)
    EXPECT_FALSE(std::isnan(value));

  // An all-NaN row still selects deterministically, by index.
  layer.w.gateBias = {nan, nan, nan, nan};
  result = layer.run(x);
  EXPECT_TRUE(result.sawNaN);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(result.weights, (std::vector<float>{0, 0}));

  // No NaN, no flag.
  layer.w.gateBias = {0, 0, 0, 0};
  EXPECT_FALSE(layer.run(x).sawNaN);
}

TEST(ReferenceTopK, SelectionBiasAndGroupLimit) {
  // Eight sigmoid-scored experts in four groups of two; the two best groups
  // are kept. Group scores (sum of both members): g0 = s(3) + s(-3) = 1.0,
  // g1 = s(2.5) + s(2.4) = 1.84, g2 = s(0) + s(0.1) = 1.02,
  // g3 = s(1) + s(1.2) = 1.50. Expert 0 has the best score but its group
  // is dropped (a best-single-score rule would keep g0 instead of g3).
  std::vector<float> x = {3, -3, 2.5f, 2.4f, 0, 0.1f, 1, 1.2f};
  RouterSpec router = topK(2);
  router.scoring = Scoring::Sigmoid;
  router.renormalize = true;
  router.scale = 2.5;
  router.nGroup = 4;
  router.topkGroup = 2;
  router.selectionBias = true;
  IdentityLayer layer(8, 0, router);
  layer.w.selectionBias.assign(8, 0.0f);
  ref::Result result = layer.run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{2, 3}));
  double s2 = sigmoidOf(2.5), s3 = sigmoidOf(2.4);
  EXPECT_NEAR(result.weights[0], 2.5 * s2 / (s2 + s3), 1e-6);
  EXPECT_NEAR(result.weights[1], 2.5 * s3 / (s2 + s3), 1e-6);

  // A bias of 0.5 on expert 6 makes it the first choice; its weight uses
  // the unbiased score.
  layer.w.selectionBias[6] = 0.5f;
  result = layer.run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{6, 2}));
  double s6 = sigmoidOf(1.0);
  EXPECT_NEAR(result.weights[0], 2.5 * s6 / (s6 + s2), 1e-6);
  EXPECT_NEAR(result.weights[1], 2.5 * s2 / (s6 + s2), 1e-6);

  // Without the group limit expert 0 wins.
  layer.spec.router.nGroup = layer.spec.router.topkGroup = 0;
  layer.w.selectionBias[6] = 0.0f;
  EXPECT_EQ(layer.run(x).indices, (std::vector<int32_t>{0, 2}));
}

TEST(ReferenceTopK, SoftmaxAfterEqualsRenormalizedSoftmax) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> x(6 * 9);
  for (float &value : x)
    value = normal(rng);
  RouterSpec after = topK(3);
  after.softmaxAfter = true;
  RouterSpec renormalized = topK(3);
  renormalized.renormalize = true;
  ref::Result a = IdentityLayer(6, 0, after).run(x);
  ref::Result b = IdentityLayer(6, 0, renormalized).run(x);
  EXPECT_EQ(a.indices, b.indices);
  expectAllClose(a.weights, b.weights, "weights", 1e-6, 1e-7);
  for (int64_t t = 0; t < 9; ++t)
    EXPECT_NEAR(a.weights[3 * t] + a.weights[3 * t + 1] + a.weights[3 * t + 2],
                1.0, 1e-6);
}

TEST(ReferenceTopK, NullExpertsComputeNothing) {
  // Two routed experts and two null experts. Logits [1, 0.5, 3, 0.2]: slot 0
  // picks null expert 2, slot 1 routed expert 0.
  std::vector<float> x = {1, 0.5f, 3, 0.2f};
  double z = std::exp(1.0) + std::exp(0.5) + std::exp(3.0) + std::exp(0.2);
  RouterSpec router = withCapacity(topK(2), /*absolute=*/1, Overflow::Drop);
  ref::Result result = IdentityLayer(2, 2, router).run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{2, 0}));
  EXPECT_NEAR(result.weights[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(result.weights[1], std::exp(1.0) / z, 1e-6);
  // The null slot has no row and does not count against capacity 1.
  EXPECT_EQ(result.rows, (std::vector<int32_t>{-1, 0}));
  EXPECT_EQ(result.load, (std::vector<int32_t>{1, 0}));
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(result.output[i], result.weights[1] * 1 * x[i], 1e-6);

  // Renormalization includes the null slot's weight.
  RouterSpec renormalized = topK(2);
  renormalized.renormalize = true;
  result = IdentityLayer(2, 2, renormalized).run(x);
  EXPECT_NEAR(result.weights[0] + result.weights[1], 1.0, 1e-6);
  EXPECT_NEAR(result.weights[1], 1.0 / (1.0 + std::exp(2.0)), 1e-6);
}

TEST(ReferenceTopP, StopsAtTheFirstPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logarithms).
  std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  std::vector<float> x;
  for (double prob : probs)
    x.push_back(static_cast<float>(std::log(prob)));
  auto route = [&](double p, int64_t kMax) {
    RouterSpec router;
    router.family = RouterFamily::TopP;
    router.p = p;
    router.k = kMax;
    return IdentityLayer(4, 0, router).run(x);
  };
  EXPECT_EQ(route(0.4, 4).indices, (std::vector<int32_t>{0, -1, -1, -1}));
  EXPECT_EQ(route(0.7, 4).indices, (std::vector<int32_t>{0, 1, -1, -1}));
  ref::Result three = route(0.9, 4);
  EXPECT_EQ(three.indices, (std::vector<int32_t>{0, 1, 2, -1}));
  for (int64_t j = 0; j < 3; ++j)
    EXPECT_NEAR(three.weights[j], probs[j], 1e-6) << "raw probabilities";
  EXPECT_EQ(three.weights[3], 0.0f);
  EXPECT_EQ(three.rows[3], -1);
  // The prefix stops as soon as the mass reaches p (>=, not >): with four
  // equal logits each probability is exactly 0.25.
  RouterSpec router;
  router.family = RouterFamily::TopP;
  router.p = 0.5;
  router.k = 4;
  EXPECT_EQ(IdentityLayer(4, 0, router).run({0, 0, 0, 0}).indices,
            (std::vector<int32_t>{0, 1, -1, -1}));
  // k_max caps the count.
  EXPECT_EQ(route(0.9, 2).indices, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(route(1.0, 4).indices, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(ReferenceExpertChoice, ExpertsTakeTheirBestTokens) {
  // P = softmax per token: t0 (0.88, 0.12), t1 (0.12, 0.88), t2 and t3
  // (0.5, 0.5). C = 4 * 1 / 2 = 2: expert 0 takes t0 and t2 (t2 beats t3
  // on the tie), expert 1 takes t1 and t2; nobody takes t3.
  RouterSpec router;
  router.family = RouterFamily::ExpertChoice;
  router.k = 0;
  router.capacityFactor = 1.0;
  std::vector<float> x = {2, 0, 0, 2, 1, 1, 1, 1};
  ref::Result result = IdentityLayer(2, 0, router).run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, -1, -1, 1, 0, 1, -1, -1}));
  EXPECT_NEAR(result.weights[0], sigmoidOf(2.0), 1e-6);
  EXPECT_EQ(result.weights[1], 0.0f);
  EXPECT_NEAR(result.weights[4], 0.5, 1e-6);
  EXPECT_NEAR(result.weights[5], 0.5, 1e-6);
  EXPECT_EQ(result.load, (std::vector<int32_t>{2, 2}));
  // t2: 0.5 * 1 * x + 0.5 * 2 * x; t3: nothing.
  EXPECT_NEAR(result.output[4], 1.5, 1e-6);
  EXPECT_EQ(result.output[6], 0.0f);
  EXPECT_EQ(result.output[7], 0.0f);

  // C = ceil(25 * 2.2 / 11) is 5, although 25 * 2.2 / 11 rounds to
  // 5.000000000000001 in double (ceil(v - 1e-9)).
  router.capacityFactor = 2.2;
  std::vector<float> many(25 * 11, 0.0f);
  result = IdentityLayer(11, 0, router).run(many);
  EXPECT_EQ(result.load, std::vector<int32_t>(11, 5));
}

TEST(ReferenceHash, TableLookup) {
  RouterSpec router;
  router.family = RouterFamily::Hash;
  router.k = 0;
  IdentityLayer layer(3, 0, router);
  layer.spec.hashVocab = 4;
  layer.w.hashTable = {2, 0, 1, 0};
  std::vector<int64_t> ids = {0, 3, 7, -1, 2};
  std::vector<float> x(5 * 3, 1.0f);
  ref::Result result = layer.run(x, {}, &ids);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{2, 0, -1, -1, 1}));
  EXPECT_EQ(result.weights, (std::vector<float>{1, 1, 0, 0, 1}));
  EXPECT_EQ(result.rows, (std::vector<int32_t>{2, 0, -1, -1, 1}));
  EXPECT_TRUE(result.sawBadTokenId);
  EXPECT_FALSE(result.sawNaN);
  EXPECT_TRUE(result.logits.empty());
  EXPECT_EQ(result.auxLoss, 0.0f);
  EXPECT_EQ(result.zLoss, 0.0f);
  EXPECT_EQ(result.output[0], 3.0f);  // expert 2: 3 * x
  EXPECT_EQ(result.output[3], 1.0f);  // expert 0
  EXPECT_EQ(result.output[6], 0.0f);  // id 7: routed nowhere
  EXPECT_EQ(result.output[12], 2.0f); // expert 1

  std::vector<int64_t> good = {0, 1, 2, 3, 0};
  EXPECT_FALSE(layer.run(x, {}, &good).sawBadTokenId);
}

/// Sum of logits of the balanced assignment in `result`.
double assignedSum(const std::vector<float> &x, int64_t numColumns,
                   const ref::Result &result) {
  double sum = 0.0;
  for (size_t t = 0; t < result.indices.size(); ++t)
    sum += x[t * numColumns + result.indices[t]];
  return sum;
}

RouterSpec balancedRouter() {
  RouterSpec router;
  router.family = RouterFamily::Balanced;
  router.k = 0;
  return router;
}

TEST(ReferenceBalanced, BeatsGreedyAssignment) {
  // Both tokens prefer expert 0 and each expert takes ceil(2 / 2) = 1 token.
  // Greedy in token order gives t0 -> 0, t1 -> 1 (5 + 0); the optimum is
  // t0 -> 1, t1 -> 0 (4 + 5).
  std::vector<float> x = {5, 4, 5, 0};
  ref::Result result = IdentityLayer(2, 0, balancedRouter()).run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{1, 0}));
  EXPECT_NEAR(result.weights[0], sigmoidOf(4.0), 1e-6);
  EXPECT_NEAR(result.weights[1], sigmoidOf(5.0), 1e-6);
  EXPECT_EQ(result.load, (std::vector<int32_t>{1, 1}));
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(result.output[i], result.weights[0] * 2 * x[i], 1e-5);
    EXPECT_NEAR(result.output[2 + i], result.weights[1] * 1 * x[2 + i], 1e-5);
  }
}

TEST(ReferenceBalanced, MatchesBruteForce) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
  for (int trial = 0; trial < 60; ++trial) {
    int64_t numExperts = 2 + trial % 2, nullExperts = trial % 3 == 0;
    int64_t numTokens = 1 + trial % 7, numColumns = numExperts + nullExperts;
    int64_t cap = (numTokens + numExperts - 1) / numExperts;
    std::vector<float> x(numTokens * numColumns);
    for (float &value : x)
      value = uniform(rng);

    // Every assignment of tokens to columns within the capacity.
    double best = -1e300;
    std::vector<int64_t> a(numTokens, 0);
    while (true) {
      std::vector<int64_t> count(numColumns, 0);
      bool fits = true;
      double sum = 0.0;
      for (int64_t t = 0; t < numTokens; ++t) {
        fits &= ++count[a[t]] <= cap;
        sum += x[t * numColumns + a[t]];
      }
      if (fits)
        best = std::max(best, sum);
      int64_t t = 0;
      while (t < numTokens && ++a[t] == numColumns)
        a[t++] = 0;
      if (t == numTokens)
        break;
    }

    ref::Result result =
        IdentityLayer(numExperts, nullExperts, balancedRouter()).run(x);
    EXPECT_NEAR(assignedSum(x, numColumns, result), best, 1e-5)
        << "trial " << trial;
    std::vector<int64_t> count(numColumns, 0);
    for (int32_t index : result.indices) {
      ASSERT_GE(index, 0);
      ASSERT_LT(index, numColumns);
      EXPECT_LE(++count[index], cap) << "trial " << trial;
    }
  }
}

// Capacity cases: two experts, k = 1, capacity 2, one batch group. Tokens
// choose e0, e0, e1, e0, e1; token 3 finds e0 full.
std::vector<float> capacityTokens() { return {2, 0, 2, 0, 0, 2, 2, 1, 1, 2}; }

TEST(ReferenceCapacity, DropGivesNoRow) {
  ref::Result result =
      IdentityLayer(2, 0, withCapacity(topK(1), 2, Overflow::Drop))
          .run(capacityTokens());
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 0, 1, 0, 1}));
  // Rows grouped by expert, in token order: e0 {t0, t1}, e1 {t2, t4}.
  EXPECT_EQ(result.rows, (std::vector<int32_t>{0, 1, 2, -1, 3}));
  EXPECT_EQ(result.load, (std::vector<int32_t>{3, 2})) << "before capacity";
  EXPECT_EQ(result.output[6], 0.0f);
  EXPECT_EQ(result.output[7], 0.0f);
  EXPECT_NEAR(result.output[0], result.weights[0] * 2.0, 1e-6);
}

TEST(ReferenceCapacity, PassthroughScalesTheInput) {
  ref::Result result =
      IdentityLayer(2, 0, withCapacity(topK(1), 2, Overflow::Passthrough))
          .run(capacityTokens());
  EXPECT_EQ(result.rows, (std::vector<int32_t>{0, 1, 2, -2, 3}));
  double w3 = sigmoidOf(1.0); // softmax([2, 1])[0]
  EXPECT_NEAR(result.weights[3], w3, 1e-6);
  EXPECT_NEAR(result.output[6], w3 * 2.0, 1e-6);
  EXPECT_NEAR(result.output[7], w3 * 1.0, 1e-6);
}

TEST(ReferenceCapacity, RerouteMovesToTheNextBestExpertWithRoom) {
  // Token 3 moves to e1 (room: 1 of 2 used) with its original weight; then
  // token 4 finds e1 full and e0 full and is dropped.
  ref::Result result =
      IdentityLayer(2, 0, withCapacity(topK(1), 2, Overflow::Reroute))
          .run(capacityTokens());
  EXPECT_EQ(result.routeIndices, (std::vector<int32_t>{0, 0, 1, 0, 1}));
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 0, 1, 1, 1}));
  EXPECT_EQ(result.rows, (std::vector<int32_t>{0, 1, 2, 3, -1}));
  EXPECT_EQ(result.load, (std::vector<int32_t>{3, 2}));
  double w3 = sigmoidOf(1.0);
  EXPECT_NEAR(result.weights[3], w3, 1e-6);
  EXPECT_NEAR(result.output[6], w3 * 2 * 2.0, 1e-6); // expert 1 doubles
  EXPECT_EQ(result.output[8], 0.0f);
  // The aux loss counts the choices before capacity: f = (3/5, 2/5).
  std::vector<float> x = capacityTokens();
  double meanP0 = 0.0;
  for (int64_t t = 0; t < 5; ++t)
    meanP0 += sigmoidOf(x[2 * t] - x[2 * t + 1]) / 5;
  EXPECT_NEAR(result.auxLoss, 2 * (0.6 * meanP0 + 0.4 * (1 - meanP0)), 1e-6);

  // With k = 2 the token's own choices are never targets. Three experts,
  // capacity 1; both tokens choose (0, 1). Token 1's slot 0 moves to e2;
  // its slot 1 (e1 full) has nowhere to go: e0 and e1 are its own choices
  // and e2 now holds its other slot.
  x = {3, 2, 1, 3, 2, 1};
  result =
      IdentityLayer(3, 0, withCapacity(topK(2), 1, Overflow::Reroute)).run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 1, 2, 1}));
  EXPECT_EQ(result.rows, (std::vector<int32_t>{0, 1, 2, -1}));

  // Targets rank by logit, not by index: three experts, capacity 1; t1
  // overflows e0 and moves to e2 (logit 2) rather than e1 (logit 1).
  x = {3, 0, 1, 3, 1, 2};
  result =
      IdentityLayer(3, 0, withCapacity(topK(1), 1, Overflow::Reroute)).run(x);
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 2}));

  // A target is never one of the token's own later choices, even with room.
  // Four experts, capacity 1; t0 chooses (0, 1), t1 chooses (0, 2). t1's
  // slot 0 overflows; e2 ranks next by logit and still has room, but it is
  // t1's own slot-1 choice, so the slot goes to e3.
  x = {4, 3, 0, 0, 3, 0, 2, 1};
  result =
      IdentityLayer(4, 0, withCapacity(topK(2), 1, Overflow::Reroute)).run(x);
  EXPECT_EQ(result.routeIndices, (std::vector<int32_t>{0, 1, 0, 2}));
  EXPECT_EQ(result.indices, (std::vector<int32_t>{0, 1, 3, 2}));
  EXPECT_EQ(result.rows, (std::vector<int32_t>{0, 1, 3, 2}));
}

TEST(ReferenceCapacity, FactorRoundsNearIntegersDown) {
  // factor 1.25 * 8 tokens * 1 slot / 2 experts = 5 exactly: 5 served.
  RouterSpec router = withCapacity(topK(1), 0, Overflow::Drop);
  router.capacity.factor = 1.25;
  std::vector<float> x(8 * 2, 0.0f);
  for (int64_t t = 0; t < 8; ++t)
    x[2 * t] = 1.0f; // everyone picks e0
  auto served = [](const ref::Result &result) {
    return std::count_if(result.rows.begin(), result.rows.end(),
                         [](int32_t row) { return row >= 0; });
  };
  EXPECT_EQ(served(IdentityLayer(2, 0, router).run(x)), 5);
  router.capacity.factor = 1.3; // 5.2 -> 6
  EXPECT_EQ(served(IdentityLayer(2, 0, router).run(x)), 6);
  // 2.2 * (25 * 1 / 11) is 5.000000000000001 in double; C is still 5.
  router.capacity.factor = 2.2;
  std::vector<float> many(25 * 11, 0.0f);
  for (int64_t t = 0; t < 25; ++t)
    many[11 * t] = 1.0f;
  EXPECT_EQ(served(IdentityLayer(11, 0, router).run(many)), 5);
}

TEST(ReferenceCapacity, SequenceGroupsCountSeparately) {
  // Six tokens all choosing e0, sequences of 3, capacity 2 per sequence.
  RouterSpec router =
      withCapacity(topK(1), 2, Overflow::Drop, CapacityGroupKind::Sequence);
  IdentityLayer layer(2, 0, router);
  layer.spec.sequenceLength = 3;
  std::vector<float> x(6 * 2, 0.0f);
  for (int64_t t = 0; t < 6; ++t)
    x[2 * t] = 1.0f;
  EXPECT_EQ(layer.run(x).rows, (std::vector<int32_t>{0, 1, -1, 2, 3, -1}));
  // The same boundaries given at run time.
  layer.spec.sequenceLength = 0;
  EXPECT_EQ(layer.run(x, {0, 3, 6}).rows,
            (std::vector<int32_t>{0, 1, -1, 2, 3, -1}));
}

TEST(ReferenceCapacity, RequestGroupsIsolateRequests) {
  // Request B (3 tokens, first in the batch) floods e0; request A (2 tokens)
  // also wants e0. Capacity 2.
  std::vector<float> requestB = {3, 0, 2, 0, 1, 0};
  std::vector<float> requestA = {1, 0.5f, 2, -1};
  std::vector<float> batch = requestB;
  append(batch, requestA);

  RouterSpec perRequest =
      withCapacity(topK(1), 2, Overflow::Drop, CapacityGroupKind::Request);
  ref::Result alone = IdentityLayer(2, 0, perRequest).run(requestA, {0, 2});
  ref::Result together = IdentityLayer(2, 0, perRequest).run(batch, {0, 3, 5});
  std::vector<float> aTogether(together.output.begin() + 6,
                               together.output.end());
  EXPECT_EQ(aTogether, alone.output) << "A's output must not depend on B";
  EXPECT_EQ(together.rows, (std::vector<int32_t>{0, 1, -1, 2, 3}));

  // With one batch-wide group, B pushes A over capacity.
  ref::Result shared =
      IdentityLayer(2, 0, withCapacity(topK(1), 2, Overflow::Drop)).run(batch);
  EXPECT_EQ(shared.rows, (std::vector<int32_t>{0, 1, -1, -1, -1}));
  std::vector<float> aShared(shared.output.begin() + 6, shared.output.end());
  EXPECT_NE(aShared, alone.output);
}

TEST(ReferenceLosses, AuxAndZLossByHand) {
  // Two tokens, logits [1, 0] and [0, 2]: top-1 picks e0 then e1.
  std::vector<float> x = {1, 0, 0, 2};
  ref::Result batch = IdentityLayer(2, 0, topK(1)).run(x);
  // f = (1/2, 1/2); P sums to 1, so aux = 2 * (P0 + P1) / 2 = 1.
  EXPECT_NEAR(batch.auxLoss, 1.0, 1e-6);
  double lse0 = std::log(std::exp(1.0) + 1.0);
  double lse1 = std::log(1.0 + std::exp(2.0));
  EXPECT_NEAR(batch.zLoss, (lse0 * lse0 + lse1 * lse1) / 2, 1e-5);

  // Per sequence (one token each): 2 * s(1) and 2 * s(2), averaged.
  RouterSpec router =
      withCapacity(topK(1), 10, Overflow::Drop, CapacityGroupKind::Sequence);
  IdentityLayer layer(2, 0, router);
  layer.spec.sequenceLength = 1;
  ref::Result perSequence = layer.run(x);
  EXPECT_NEAR(perSequence.auxLoss, sigmoidOf(1.0) + sigmoidOf(2.0), 1e-6);
  EXPECT_NEAR(perSequence.zLoss, batch.zLoss, 1e-6);

  // Null-expert columns share the softmax but are not counted.
  ref::Result withNull = IdentityLayer(1, 1, topK(1)).run(x);
  // Token 0 picks e0 (p = s(1)), token 1 the null expert: f0 = 1/2,
  // P0 = (s(1) + s(-2)) / 2, aux = 1 * f0 * P0.
  EXPECT_EQ(withNull.load, (std::vector<int32_t>{1}));
  EXPECT_NEAR(withNull.auxLoss, 0.5 * (sigmoidOf(1.0) + sigmoidOf(-2.0)) / 2,
              1e-6);
}

TEST(ReferenceExperts, ActivationsAndGatedSharedExpert) {
  // One routed expert (weight 1), d = 2.
  std::vector<float> x = {0.7f, -1.3f};
  double x0 = x[0], x1 = x[1];
  auto silu = [](double z) { return z * sigmoidOf(z); };
  auto gelu = [](double z) {
    return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
  };
  auto runOne = [&](LayerSpec spec, LayerWeights w) {
    w.gate = {1, 1};
    ref::Inputs inputs;
    inputs.x = x.data();
    inputs.numTokens = 1;
    return ref::run(spec, w, inputs);
  };

  // SwiGLU, F = 1: gate row picks x0, up row x1; w2 = [1, 2].
  LayerSpec glu = baseSpec(2, 1, 1, ExpertActivation::SiluGlu);
  LayerWeights w;
  w.w1 = {1, 0, 0, 1};
  w.w2 = {1, 2};
  ref::Result result = runOne(glu, w);
  double h = silu(x0) * x1;
  EXPECT_NEAR(result.output[0], h, 1e-6);
  EXPECT_NEAR(result.output[1], 2 * h, 1e-6);

  // Exact GELU and ReLU, F = 1: h = act(x0 - x1) (= act(2)); w2 = [1, -1].
  for (ExpertActivation activation :
       {ExpertActivation::Gelu, ExpertActivation::Relu}) {
    LayerSpec spec = baseSpec(2, 1, 1, activation);
    LayerWeights single;
    single.w1 = {1, -1};
    single.w2 = {1, -1};
    double z = x0 - x1;
    double expected =
        activation == ExpertActivation::Gelu ? gelu(z) : std::max(z, 0.0);
    result = runOne(spec, single);
    EXPECT_NEAR(result.output[0], expected, 1e-6);
    EXPECT_NEAR(result.output[1], -expected, 1e-6);
  }

  // GELU is the exact (erf) form, not the tanh approximation (they differ
  // by far more than 1e-7 at z = -1.3). ReLU of a negative input is 0.
  {
    LayerSpec spec = baseSpec(2, 1, 1, ExpertActivation::Gelu);
    LayerWeights single;
    single.w1 = {0, 1};
    single.w2 = {1, 0};
    EXPECT_NEAR(runOne(spec, single).output[0], gelu(x1), 1e-7);
    spec.activation = ExpertActivation::Relu;
    EXPECT_EQ(runOne(spec, single).output[0], 0.0f);
  }

  // A shared SwiGLU expert (Fs = 1) gated by sigmoid(x . [0.5, -1]).
  glu.sharedFfn = 1;
  glu.sharedGate = true;
  w.sharedW1 = {0, 1, 1, 0}; // gate row picks x1, up row x0
  w.sharedW2 = {3, 1};
  w.sharedGate = {0.5f, -1.0f};
  result = runOne(glu, w);
  double shared = sigmoidOf(0.5 * x0 - x1) * silu(x1) * x0;
  EXPECT_NEAR(result.output[0], h + 3 * shared, 1e-6);
  EXPECT_NEAR(result.output[1], 2 * h + shared, 1e-6);
  // Ungated (DeepSeek).
  glu.sharedGate = false;
  w.sharedGate.clear();
  result = runOne(glu, w);
  EXPECT_NEAR(result.output[0], h + 3 * silu(x1) * x0, 1e-6);
}

TEST(ReferenceEmpty, ZeroTokens) {
  RouterSpec topP;
  topP.family = RouterFamily::TopP;
  topP.p = 0.5;
  topP.k = 2;
  RouterSpec choice;
  choice.family = RouterFamily::ExpertChoice;
  choice.k = 0;
  choice.capacityFactor = 2.0;
  RouterSpec hash;
  hash.family = RouterFamily::Hash;
  hash.k = 0;
  RouterSpec perRequest =
      withCapacity(topK(2), 1, Overflow::Reroute, CapacityGroupKind::Request);
  for (const RouterSpec &router :
       {topK(2), perRequest, topP, choice, hash, balancedRouter()}) {
    IdentityLayer layer(3, 0, router);
    layer.w.hashTable = {0, 1, 2};
    std::vector<int64_t> ids;
    ref::Result result = layer.run({}, {}, &ids);
    EXPECT_TRUE(result.output.empty());
    EXPECT_TRUE(result.logits.empty());
    EXPECT_TRUE(result.indices.empty());
    EXPECT_TRUE(result.weights.empty());
    EXPECT_TRUE(result.rows.empty());
    EXPECT_EQ(result.load, (std::vector<int32_t>{0, 0, 0}));
    EXPECT_EQ(result.auxLoss, 0.0f);
    EXPECT_EQ(result.zLoss, 0.0f);
    EXPECT_FALSE(result.sawNaN);
  }
}

} // namespace
