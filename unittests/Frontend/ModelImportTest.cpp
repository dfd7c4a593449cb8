//===- ModelImportTest.cpp - config.json + safetensors -> LayerSpec --------===//
//
// Imports every golden model and checks the layer description and the packed
// weights against the raw checkpoint tensors; builds sharded, BF16 and fused
// checkpoints on the fly; and checks that bad configs and checkpoints give
// errors that name the key, tensor or file at fault.
//
//===----------------------------------------------------------------------===//

#include "moe/Frontend/ModelImport.h"
#include "moe/Frontend/SafeTensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>

using namespace mlir::moe::frontend;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

std::string goldenDir(llvm::StringRef name) {
  return (MOE_SOURCE_DIR "/testdata/golden/" + name).str();
}

/// One tensor to write: dtype name, shape and raw little-endian bytes.
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

/// Every tensor of a safetensors file, in data order.
std::vector<RawTensor> readAllTensors(const std::string &path) {
  llvm::Expected<SafeTensorsFile> file = SafeTensorsFile::open(path);
  if (!file) {
    ADD_FAILURE() << llvm::toString(file.takeError());
    return {};
  }
  std::vector<RawTensor> tensors;
  for (const TensorView &view : file->getTensors())
    tensors.push_back({view.name, getDTypeName(view.dtype).str(), view.shape,
                       std::vector<uint8_t>(view.bytes.begin(),
                                            view.bytes.end())});
  return tensors;
}

RawTensor *findTensor(std::vector<RawTensor> &tensors, llvm::StringRef name) {
  for (RawTensor &tensor : tensors)
    if (tensor.name == name)
      return &tensor;
  ADD_FAILURE() << "test setup: no tensor " << name.str();
  return nullptr;
}

/// Writes `tensors` as a safetensors file (header length, JSON header,
/// data), the way the format specifies it.
void writeSafeTensors(const std::string &path,
                      const std::vector<RawTensor> &tensors) {
  llvm::json::Object header;
  std::vector<uint8_t> data;
  for (const RawTensor &tensor : tensors) {
    llvm::json::Array shape;
    for (int64_t dim : tensor.shape)
      shape.push_back(dim);
    int64_t begin = data.size();
    data.insert(data.end(), tensor.bytes.begin(), tensor.bytes.end());
    header[tensor.name] = llvm::json::Object{
        {"dtype", tensor.dtype},
        {"shape", std::move(shape)},
        {"data_offsets", llvm::json::Array{begin, int64_t(data.size())}}};
  }
  header["__metadata__"] = llvm::json::Object{{"format", "pt"}};
  std::string headerText =
      llvm::formatv("{0}", llvm::json::Value(std::move(header))).str();
  while (headerText.size() % 8)
    headerText += ' ';
  std::string bytes(8, '\0');
  llvm::support::endian::write64le(bytes.data(), headerText.size());
  bytes += headerText;
  bytes.append(data.begin(), data.end());

  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec);
  ASSERT_FALSE(ec) << path << ": " << ec.message();
  out << bytes;
}

void writeText(const std::string &path, llvm::StringRef text) {
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec);
  ASSERT_FALSE(ec) << path << ": " << ec.message();
  out << text;
}

std::string readText(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer) {
    ADD_FAILURE() << path << ": " << buffer.getError().message();
    return "";
  }
  return (*buffer)->getBuffer().str();
}

/// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  llvm::SmallString<128> path;
  TempDir() {
    std::error_code ec =
        llvm::sys::fs::createUniqueDirectory("moe-model-import", path);
    EXPECT_FALSE(ec) << ec.message();
  }
  ~TempDir() { llvm::sys::fs::remove_directories(path); }
  std::string file(llvm::StringRef name) const {
    llvm::SmallString<128> result(path);
    llvm::sys::path::append(result, name);
    return std::string(result);
  }
};

/// The f32 values of one tensor of a golden model.safetensors.
std::vector<float> goldenFloats(llvm::StringRef folder,
                                llvm::StringRef tensor) {
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::open(goldenDir(folder) + "/model.safetensors");
  if (!file) {
    ADD_FAILURE() << llvm::toString(file.takeError());
    return {};
  }
  const TensorView *view = file->lookup(tensor);
  if (!view) {
    ADD_FAILURE() << "golden tensor missing: " << tensor.str();
    return {};
  }
  llvm::Expected<std::vector<float>> values = view->toF32();
  if (!values) {
    ADD_FAILURE() << llvm::toString(values.takeError());
    return {};
  }
  return *values;
}

ImportedModel importOrFail(const std::string &dir,
                           std::optional<int64_t> onlyLayer = std::nullopt) {
  llvm::Expected<ImportedModel> model = importModel(dir, onlyLayer);
  if (!model) {
    ADD_FAILURE() << llvm::toString(model.takeError());
    return {};
  }
  return std::move(*model);
}

/// The message of a failed import, or "" if it succeeded.
std::string importError(const std::string &dir,
                        std::optional<int64_t> onlyLayer = std::nullopt) {
  llvm::Expected<ImportedModel> model = importModel(dir, onlyLayer);
  if (model)
    return "";
  return llvm::toString(model.takeError());
}

std::vector<LayerSpec> parseOrFail(llvm::StringRef json) {
  llvm::Expected<std::vector<LayerSpec>> layers =
      parseModelConfig(json, "test-config.json");
  if (!layers) {
    ADD_FAILURE() << llvm::toString(layers.takeError());
    return {};
  }
  return std::move(*layers);
}

std::string configError(llvm::StringRef json) {
  llvm::Expected<std::vector<LayerSpec>> layers =
      parseModelConfig(json, "test-config.json");
  if (layers)
    return "";
  return llvm::toString(layers.takeError());
}

std::vector<int64_t> layerIndices(const std::vector<LayerSpec> &layers) {
  std::vector<int64_t> indices;
  for (const LayerSpec &spec : layers)
    indices.push_back(spec.layerIndex);
  return indices;
}

/// Expects packed[offset, offset + raw.size()) == raw, element for element.
void expectSlice(const std::vector<float> &packed, size_t offset,
                 const std::vector<float> &raw, const std::string &what) {
  ASSERT_FALSE(raw.empty()) << what;
  ASSERT_LE(offset + raw.size(), packed.size()) << what;
  for (size_t i = 0; i < raw.size(); ++i)
    ASSERT_EQ(packed[offset + i], raw[i]) << what << ", element " << i;
}

/// Checks expert `e` of a SwiGLU layer: its gate rows, then its up rows in
/// w1, and its down matrix in w2, against the checkpoint tensors.
void expectSwiGluExpert(const LayerSpec &spec, const LayerWeights &weights,
                        int64_t e, llvm::StringRef folder,
                        const std::string &gateName,
                        const std::string &upName,
                        const std::string &downName) {
  const int64_t d = spec.hidden, f = spec.ffn;
  std::vector<float> gate = goldenFloats(folder, gateName);
  std::vector<float> up = goldenFloats(folder, upName);
  std::vector<float> down = goldenFloats(folder, downName);
  ASSERT_EQ(weights.w1.size(), size_t(spec.numExperts * 2 * f * d));
  ASSERT_EQ(weights.w2.size(), size_t(spec.numExperts * d * f));
  expectSlice(weights.w1, e * 2 * f * d, gate, "w1 gate rows of " + gateName);
  // Row F of the expert is row 0 of its up projection.
  expectSlice(weights.w1, (e * 2 * f + f) * d, up, "w1 up rows of " + upName);
  expectSlice(weights.w2, e * d * f, down, "w2 of " + downName);
}

/// Checks expert `e` of a GELU/ReLU layer (wi in w1, wo in w2).
void expectPlainExpert(const LayerSpec &spec, const LayerWeights &weights,
                       int64_t e, llvm::StringRef folder,
                       const std::string &wiName, const std::string &woName) {
  const int64_t d = spec.hidden, f = spec.ffn;
  ASSERT_EQ(weights.w1.size(), size_t(spec.numExperts * f * d));
  ASSERT_EQ(weights.w2.size(), size_t(spec.numExperts * d * f));
  expectSlice(weights.w1, e * f * d, goldenFloats(folder, wiName),
              "w1 of " + wiName);
  expectSlice(weights.w2, e * d * f, goldenFloats(folder, woName),
              "w2 of " + woName);
}

//===----------------------------------------------------------------------===//
// Golden models
//===----------------------------------------------------------------------===//

TEST(ModelImport, Mixtral) {
  ImportedModel model = importOrFail(goldenDir("mixtral_t1"));
  EXPECT_EQ(model.modelType, "mixtral");
  ASSERT_EQ(model.layers.size(), 1u);
  ASSERT_EQ(model.weights.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.name, "layer0");
  EXPECT_EQ(spec.layerIndex, 0);
  EXPECT_EQ(spec.hidden, 64);
  EXPECT_EQ(spec.ffn, 96);
  EXPECT_EQ(spec.numExperts, 8);
  EXPECT_EQ(spec.router.family, RouterFamily::TopK);
  EXPECT_EQ(spec.router.k, 2);
  EXPECT_EQ(spec.router.scoring, Scoring::Softmax);
  EXPECT_TRUE(spec.router.renormalize);
  EXPECT_EQ(spec.router.scale, 1.0);
  EXPECT_FALSE(spec.router.selectionBias);
  EXPECT_EQ(spec.router.nGroup, 0);
  EXPECT_FALSE(spec.router.capacity.enabled);
  EXPECT_EQ(spec.activation, ExpertActivation::SiluGlu);
  EXPECT_EQ(spec.sharedFfn, 0);

  const LayerWeights &weights = model.weights[0];
  EXPECT_EQ(weights.gate,
            goldenFloats("mixtral_t1",
                         "model.layers.0.block_sparse_moe.gate.weight"));
  EXPECT_TRUE(weights.selectionBias.empty());
  EXPECT_TRUE(weights.sharedW1.empty());
  std::string expert = "model.layers.0.block_sparse_moe.experts.";
  for (int64_t e : {0, 3, 5, 7})
    expectSwiGluExpert(spec, weights, e, "mixtral_t1",
                       expert + std::to_string(e) + ".w1.weight",
                       expert + std::to_string(e) + ".w3.weight",
                       expert + std::to_string(e) + ".w2.weight");
}

TEST(ModelImport, MixtralTwoLayersAndOnlyLayer) {
  ImportedModel model = importOrFail(goldenDir("mixtral_t33_2layers"));
  ASSERT_EQ(model.layers.size(), 2u);
  EXPECT_EQ(model.layers[0].name, "layer0");
  EXPECT_EQ(model.layers[1].name, "layer1");
  EXPECT_EQ(model.layers[1].layerIndex, 1);
  std::string expert = "model.layers.1.block_sparse_moe.experts.6.";
  expectSwiGluExpert(model.layers[1], model.weights[1], 6,
                     "mixtral_t33_2layers", expert + "w1.weight",
                     expert + "w3.weight", expert + "w2.weight");
  EXPECT_EQ(model.weights[1].gate,
            goldenFloats("mixtral_t33_2layers",
                         "model.layers.1.block_sparse_moe.gate.weight"));
  EXPECT_NE(model.weights[0].gate, model.weights[1].gate);

  ImportedModel only = importOrFail(goldenDir("mixtral_t33_2layers"), 1);
  ASSERT_EQ(only.layers.size(), 1u);
  EXPECT_EQ(only.layers[0].layerIndex, 1);
  EXPECT_EQ(only.layers[0].name, "layer1");
  EXPECT_EQ(only.weights[0].w1, model.weights[1].w1);
  EXPECT_EQ(only.weights[0].w2, model.weights[1].w2);
  EXPECT_EQ(only.weights[0].gate, model.weights[1].gate);
}

TEST(BF16, RoundsToNearestEven) {
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  auto fromBits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  EXPECT_EQ(toBF16(1.0f), 0x3F80);
  EXPECT_EQ(toBF16(-2.5f), 0xC020);
  // Halfway cases go to the even neighbour; past halfway rounds up.
  EXPECT_EQ(toBF16(fromBits(0x3F808000)), 0x3F80);
  EXPECT_EQ(toBF16(fromBits(0x3F818000)), 0x3F82);
  EXPECT_EQ(toBF16(fromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(toBF16(fromBits(0x3F807FFF)), 0x3F80);
  // Overflow rounds to infinity; infinities and NaNs stay (NaN quiet).
  EXPECT_EQ(toBF16(fromBits(0x7F7FFFFF)), 0x7F80);
  EXPECT_EQ(toBF16(INFINITY), 0x7F80);
  EXPECT_EQ(toBF16(-INFINITY), 0xFF80);
  EXPECT_TRUE(std::isnan(fromBF16(toBF16(fromBits(0x7F800001)))));
  EXPECT_TRUE(std::isnan(fromBF16(toBF16(NAN))));
  // bf16 values come back exactly.
  for (uint32_t b : {0x0000u, 0x8000u, 0x0001u, 0x3F80u, 0x4049u, 0xC2F7u})
    EXPECT_EQ(toBF16(fromBF16(b)), b);
  EXPECT_EQ(bits(fromBF16(0x4049)), 0x40490000u);
}

TEST(ModelImport, ConvertsExpertWeightsToBF16) {
  ImportedModel model = importOrFail(goldenDir("qwen2_moe_t40"));
  ImportedModel f32 = model;
  setExpertWeights(model, WeightType::BF16, /*keepF32=*/false);
  ASSERT_EQ(model.layers.size(), 1u);
  EXPECT_EQ(model.layers[0].expertWeights, WeightType::BF16);
  const LayerWeights &w = model.weights[0], &ref = f32.weights[0];
  // The f32 expert arrays are released, the router's kept.
  EXPECT_TRUE(w.w1.empty() && w.w2.empty() && w.sharedW1.empty());
  EXPECT_EQ(w.gate, ref.gate);
  EXPECT_EQ(w.sharedGate, ref.sharedGate);
  ASSERT_EQ(w.w1BF16.size(), ref.w1.size());
  ASSERT_EQ(w.sharedW2BF16.size(), ref.sharedW2.size());
  for (size_t i = 0; i < ref.w1.size(); i += 97)
    EXPECT_EQ(w.w1BF16[i], toBF16(ref.w1[i]));
  for (size_t i = 0; i < ref.sharedW2.size(); i += 31)
    EXPECT_NEAR(fromBF16(w.sharedW2BF16[i]), ref.sharedW2[i],
                std::fabs(ref.sharedW2[i]) / 256);
}

TEST(ModelImport, Qwen2MoeWithGatedSharedExpert) {
  ImportedModel model = importOrFail(goldenDir("qwen2_moe_t40"));
  EXPECT_EQ(model.modelType, "qwen2_moe");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.hidden, 64);
  EXPECT_EQ(spec.ffn, 48);
  EXPECT_EQ(spec.numExperts, 16);
  EXPECT_EQ(spec.router.k, 4);
  EXPECT_EQ(spec.router.scoring, Scoring::Softmax);
  EXPECT_FALSE(spec.router.renormalize); // norm_topk_prob: false
  EXPECT_EQ(spec.sharedFfn, 128);
  EXPECT_TRUE(spec.sharedGate);
  EXPECT_EQ(spec.activation, ExpertActivation::SiluGlu);

  const LayerWeights &weights = model.weights[0];
  const std::string block = "model.layers.0.mlp.";
  EXPECT_EQ(weights.gate, goldenFloats("qwen2_moe_t40", block + "gate.weight"));
  for (int64_t e : {3, 15}) {
    std::string expert = block + "experts." + std::to_string(e) + ".";
    expectSwiGluExpert(spec, weights, e, "qwen2_moe_t40",
                       expert + "gate_proj.weight", expert + "up_proj.weight",
                       expert + "down_proj.weight");
  }
  ASSERT_EQ(weights.sharedW1.size(), size_t(2 * 128 * 64));
  expectSlice(weights.sharedW1, 0,
              goldenFloats("qwen2_moe_t40",
                           block + "shared_expert.gate_proj.weight"),
              "shared gate rows");
  expectSlice(weights.sharedW1, 128 * 64,
              goldenFloats("qwen2_moe_t40",
                           block + "shared_expert.up_proj.weight"),
              "shared up rows");
  EXPECT_EQ(weights.sharedW2,
            goldenFloats("qwen2_moe_t40",
                         block + "shared_expert.down_proj.weight"));
  EXPECT_EQ(weights.sharedGate,
            goldenFloats("qwen2_moe_t40", block + "shared_expert_gate.weight"));
}

TEST(ModelImport, DeepSeekV3) {
  ImportedModel model = importOrFail(goldenDir("deepseek_v3_t29"));
  EXPECT_EQ(model.modelType, "deepseek_v3");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.hidden, 64);
  EXPECT_EQ(spec.ffn, 32);
  EXPECT_EQ(spec.numExperts, 32);
  EXPECT_EQ(spec.router.k, 4);
  EXPECT_EQ(spec.router.scoring, Scoring::Sigmoid);
  EXPECT_TRUE(spec.router.renormalize);
  EXPECT_DOUBLE_EQ(spec.router.scale, 2.5);
  EXPECT_TRUE(spec.router.selectionBias);
  EXPECT_EQ(spec.router.nGroup, 4);
  EXPECT_EQ(spec.router.topkGroup, 2);
  EXPECT_EQ(spec.sharedFfn, 32); // n_shared_experts * moe_intermediate_size
  EXPECT_FALSE(spec.sharedGate);

  const LayerWeights &weights = model.weights[0];
  const std::string block = "model.layers.0.mlp.";
  EXPECT_EQ(weights.selectionBias,
            goldenFloats("deepseek_v3_t29",
                         block + "gate.e_score_correction_bias"));
  EXPECT_EQ(weights.gate,
            goldenFloats("deepseek_v3_t29", block + "gate.weight"));
  std::string expert = block + "experts.17.";
  expectSwiGluExpert(spec, weights, 17, "deepseek_v3_t29",
                     expert + "gate_proj.weight", expert + "up_proj.weight",
                     expert + "down_proj.weight");
  expectSlice(weights.sharedW1, 32 * 64,
              goldenFloats("deepseek_v3_t29",
                           block + "shared_experts.up_proj.weight"),
              "shared up rows");
  EXPECT_EQ(weights.sharedW2,
            goldenFloats("deepseek_v3_t29",
                         block + "shared_experts.down_proj.weight"));
  EXPECT_TRUE(weights.sharedGate.empty());
}

TEST(ModelImport, Olmoe) {
  ImportedModel model = importOrFail(goldenDir("olmoe_t17"));
  EXPECT_EQ(model.modelType, "olmoe");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.ffn, 32);
  EXPECT_EQ(spec.numExperts, 16);
  EXPECT_EQ(spec.router.k, 8);
  EXPECT_FALSE(spec.router.renormalize);
  EXPECT_EQ(spec.router.scoring, Scoring::Softmax);
  EXPECT_EQ(spec.sharedFfn, 0);
  std::string expert = "model.layers.0.mlp.experts.9.";
  expectSwiGluExpert(spec, model.weights[0], 9, "olmoe_t17",
                     expert + "gate_proj.weight", expert + "up_proj.weight",
                     expert + "down_proj.weight");
}

TEST(ModelImport, SwitchTransformers) {
  ImportedModel model = importOrFail(goldenDir("switch_b2s24"));
  EXPECT_EQ(model.modelType, "switch_transformers");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.layerIndex, 0);
  EXPECT_EQ(spec.hidden, 64);
  EXPECT_EQ(spec.ffn, 96);
  EXPECT_EQ(spec.numExperts, 4);
  EXPECT_EQ(spec.router.family, RouterFamily::TopK);
  EXPECT_EQ(spec.router.k, 1);
  EXPECT_EQ(spec.router.scoring, Scoring::Softmax);
  EXPECT_FALSE(spec.router.renormalize);
  EXPECT_EQ(spec.activation, ExpertActivation::Relu);
  EXPECT_TRUE(spec.router.capacity.enabled);
  EXPECT_EQ(spec.router.capacity.absolute, 5);
  EXPECT_EQ(spec.router.capacity.factor, 0.0);
  EXPECT_EQ(spec.router.capacity.group, CapacityGroupKind::Sequence);
  EXPECT_EQ(spec.router.capacity.overflow, Overflow::Drop);

  const std::string block = "encoder.block.0.layer.1.mlp.";
  EXPECT_EQ(model.weights[0].gate,
            goldenFloats("switch_b2s24", block + "router.classifier.weight"));
  for (int64_t e : {2, 3})
    expectPlainExpert(
        spec, model.weights[0], e, "switch_b2s24",
        block + "experts.expert_" + std::to_string(e) + ".wi.weight",
        block + "experts.expert_" + std::to_string(e) + ".wo.weight");
}

TEST(ModelImport, ExpertChoice) {
  ImportedModel model = importOrFail(goldenDir("expert_choice_t32"));
  EXPECT_EQ(model.modelType, "moe_expert_choice");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.router.family, RouterFamily::ExpertChoice);
  EXPECT_DOUBLE_EQ(spec.router.capacityFactor, 2.0);
  EXPECT_EQ(spec.activation, ExpertActivation::Gelu);
  EXPECT_EQ(spec.numExperts, 8);
  EXPECT_EQ(spec.ffn, 96);
  EXPECT_EQ(spec.numSlots(), 8);
  EXPECT_EQ(model.weights[0].gate,
            goldenFloats("expert_choice_t32", "layers.0.gate.weight"));
  expectPlainExpert(spec, model.weights[0], 5, "expert_choice_t32",
                    "layers.0.experts.5.wi.weight",
                    "layers.0.experts.5.wo.weight");
}

TEST(ModelImport, Hash) {
  ImportedModel model = importOrFail(goldenDir("hash_t50"));
  EXPECT_EQ(model.modelType, "moe_hash");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.router.family, RouterFamily::Hash);
  EXPECT_EQ(spec.hashVocab, 1000);
  EXPECT_EQ(spec.routerRows(), 0);
  EXPECT_EQ(spec.activation, ExpertActivation::Relu);
  EXPECT_FALSE(spec.router.capacity.enabled);
  const LayerWeights &weights = model.weights[0];
  EXPECT_TRUE(weights.gate.empty());
  // The golden table is I64; compare through the reader's integer path.
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::open(goldenDir("hash_t50") + "/model.safetensors");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  llvm::Expected<std::vector<int64_t>> raw =
      file->lookup("layers.0.hash_table")->toI64();
  ASSERT_TRUE(static_cast<bool>(raw));
  ASSERT_EQ(weights.hashTable.size(), raw->size());
  for (size_t i = 0; i < raw->size(); ++i)
    ASSERT_EQ(weights.hashTable[i], (*raw)[i]) << "entry " << i;
  expectPlainExpert(spec, weights, 7, "hash_t50",
                    "layers.0.experts.7.wi.weight",
                    "layers.0.experts.7.wo.weight");
}

TEST(ModelImport, TopP) {
  ImportedModel model = importOrFail(goldenDir("top_p_t25"));
  EXPECT_EQ(model.modelType, "moe_top_p");
  ASSERT_EQ(model.layers.size(), 1u);
  const LayerSpec &spec = model.layers[0];
  EXPECT_EQ(spec.router.family, RouterFamily::TopP);
  EXPECT_DOUBLE_EQ(spec.router.p, 0.4);
  EXPECT_EQ(spec.router.k, 4);
  EXPECT_EQ(spec.router.nullExperts, 0);
  EXPECT_FALSE(spec.router.capacity.enabled);
  EXPECT_EQ(spec.activation, ExpertActivation::SiluGlu);
  expectSwiGluExpert(spec, model.weights[0], 3, "top_p_t25",
                     "layers.0.experts.3.gate_proj.weight",
                     "layers.0.experts.3.up_proj.weight",
                     "layers.0.experts.3.down_proj.weight");
}

//===----------------------------------------------------------------------===//
// Checkpoint layouts built on the fly
//===----------------------------------------------------------------------===//

/// Writes mixtral_t1 as two shards plus an index; `toBF16` converts the
/// second shard to BF16 by truncation.
void writeShardedMixtral(const TempDir &dir, bool toBF16) {
  writeText(dir.file("config.json"),
            readText(goldenDir("mixtral_t1") + "/config.json"));
  std::vector<RawTensor> tensors =
      readAllTensors(goldenDir("mixtral_t1") + "/model.safetensors");
  ASSERT_GT(tensors.size(), 2u);
  std::vector<RawTensor> shards[2];
  llvm::json::Object weightMap;
  const char *names[2] = {"model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors"};
  for (auto [i, tensor] : llvm::enumerate(tensors)) {
    int shard = i % 2;
    if (shard == 1 && toBF16) {
      ASSERT_EQ(tensor.dtype, "F32");
      std::vector<uint8_t> bf16(tensor.bytes.size() / 2);
      for (size_t j = 0; j < bf16.size() / 2; ++j) {
        // Little-endian f32: the top half is bytes 2 and 3.
        bf16[2 * j] = tensor.bytes[4 * j + 2];
        bf16[2 * j + 1] = tensor.bytes[4 * j + 3];
      }
      tensor.dtype = "BF16";
      tensor.bytes = std::move(bf16);
    }
    weightMap[tensor.name] = names[shard];
    shards[shard].push_back(tensor);
  }
  writeSafeTensors(dir.file(names[0]), shards[0]);
  writeSafeTensors(dir.file(names[1]), shards[1]);
  llvm::json::Object index{
      {"metadata", llvm::json::Object{{"total_size", 0}}},
      {"weight_map", std::move(weightMap)}};
  writeText(dir.file("model.safetensors.index.json"),
            llvm::formatv("{0:2}", llvm::json::Value(std::move(index))).str());
}

TEST(ModelImport, ShardedCheckpointMatchesSingleFile) {
  TempDir dir;
  writeShardedMixtral(dir, /*toBF16=*/false);
  ImportedModel sharded = importOrFail(std::string(dir.path));
  ImportedModel single = importOrFail(goldenDir("mixtral_t1"));
  ASSERT_EQ(sharded.layers.size(), 1u);
  ASSERT_EQ(single.layers.size(), 1u);
  EXPECT_EQ(sharded.directory, std::string(dir.path));
  EXPECT_EQ(sharded.weights[0].gate, single.weights[0].gate);
  EXPECT_EQ(sharded.weights[0].w1, single.weights[0].w1);
  EXPECT_EQ(sharded.weights[0].w2, single.weights[0].w2);
}

TEST(ModelImport, BF16ShardImportsWithinRounding) {
  TempDir dir;
  writeShardedMixtral(dir, /*toBF16=*/true);
  ImportedModel bf16 = importOrFail(std::string(dir.path));
  ImportedModel single = importOrFail(goldenDir("mixtral_t1"));
  ASSERT_EQ(bf16.weights.size(), 1u);
  ASSERT_EQ(single.weights.size(), 1u);
  const std::vector<float> &got = bf16.weights[0].w1;
  const std::vector<float> &want = single.weights[0].w1;
  ASSERT_EQ(got.size(), want.size());
  size_t changed = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    // Truncation keeps 8 significant bits: relative error below 2^-7.
    ASSERT_LE(std::fabs(got[i] - want[i]), std::ldexp(std::fabs(want[i]), -7))
        << "w1 element " << i;
    ASSERT_LE(std::fabs(got[i]), std::fabs(want[i])) << "w1 element " << i;
    changed += got[i] != want[i];
  }
  // Half of the tensors went through BF16, so many values moved.
  EXPECT_GT(changed, got.size() / 8);
}

TEST(ModelImport, AcceptsFusedExperts) {
  // Hugging Face 5.x names: mlp.experts.gate_up_proj [E, 2F, d] and
  // mlp.experts.down_proj [E, d, F], router mlp.gate.weight.
  TempDir dir;
  writeText(dir.file("config.json"),
            readText(goldenDir("mixtral_t1") + "/config.json"));
  std::vector<RawTensor> tensors =
      readAllTensors(goldenDir("mixtral_t1") + "/model.safetensors");
  const std::string old = "model.layers.0.block_sparse_moe.";
  RawTensor gate = *findTensor(tensors, old + "gate.weight");
  gate.name = "model.layers.0.mlp.gate.weight";
  RawTensor gateUp{"model.layers.0.mlp.experts.gate_up_proj", "F32",
                   {8, 192, 64}, {}};
  RawTensor down{"model.layers.0.mlp.experts.down_proj", "F32", {8, 64, 96},
                 {}};
  for (int e = 0; e < 8; ++e) {
    std::string expert = old + "experts." + std::to_string(e) + ".";
    for (const char *proj : {"w1", "w3"}) {
      const RawTensor *part = findTensor(tensors, expert + proj + ".weight");
      ASSERT_NE(part, nullptr);
      gateUp.bytes.insert(gateUp.bytes.end(), part->bytes.begin(),
                          part->bytes.end());
    }
    const RawTensor *w2 = findTensor(tensors, expert + "w2.weight");
    ASSERT_NE(w2, nullptr);
    down.bytes.insert(down.bytes.end(), w2->bytes.begin(), w2->bytes.end());
  }
  writeSafeTensors(dir.file("model.safetensors"), {gate, gateUp, down});

  ImportedModel fused = importOrFail(std::string(dir.path));
  ImportedModel single = importOrFail(goldenDir("mixtral_t1"));
  ASSERT_EQ(fused.weights.size(), 1u);
  ASSERT_EQ(single.weights.size(), 1u);
  EXPECT_EQ(fused.weights[0].gate, single.weights[0].gate);
  EXPECT_EQ(fused.weights[0].w1, single.weights[0].w1);
  EXPECT_EQ(fused.weights[0].w2, single.weights[0].w2);
}

//===----------------------------------------------------------------------===//
// Config parsing: which layers are MoE, routing options
//===----------------------------------------------------------------------===//

TEST(ModelConfig, QwenSparseStepAndMlpOnlyLayers) {
  std::vector<LayerSpec> layers = parseOrFail(R"({
    "model_type": "qwen2_moe", "hidden_size": 64, "moe_intermediate_size": 48,
    "num_experts": 16, "num_experts_per_tok": 4, "num_hidden_layers": 8,
    "shared_expert_intermediate_size": 128, "norm_topk_prob": true,
    "decoder_sparse_step": 2, "mlp_only_layers": [3]})");
  // (L + 1) % 2 == 0 gives 1, 3, 5, 7; layer 3 is MLP-only.
  EXPECT_EQ(layerIndices(layers), (std::vector<int64_t>{1, 5, 7}));
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[1].name, "layer5");
  EXPECT_TRUE(layers[0].router.renormalize);
  EXPECT_TRUE(layers[0].sharedGate);
}

TEST(ModelConfig, Qwen3HasNoSharedExpert) {
  std::vector<LayerSpec> layers = parseOrFail(R"({
    "model_type": "qwen3_moe", "hidden_size": 64, "moe_intermediate_size": 48,
    "num_experts": 16, "num_experts_per_tok": 4, "num_hidden_layers": 2,
    "norm_topk_prob": true})");
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].sharedFfn, 0);
  EXPECT_FALSE(layers[0].sharedGate);
  EXPECT_TRUE(layers[0].router.renormalize);
}

TEST(ModelConfig, DeepSeekFirstDenseLayersAndFrequency) {
  const char *base = R"({
    "model_type": "deepseek_v3", "hidden_size": 64,
    "moe_intermediate_size": 32, "n_routed_experts": 32,
    "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
    "n_shared_experts": 2, "routed_scaling_factor": 2.5,
    "norm_topk_prob": true, "num_hidden_layers": 4,
    "first_k_dense_replace": 1)";
  std::vector<LayerSpec> layers = parseOrFail(std::string(base) + "}");
  EXPECT_EQ(layerIndices(layers), (std::vector<int64_t>{1, 2, 3}));
  ASSERT_FALSE(layers.empty());
  EXPECT_EQ(layers[0].sharedFfn, 64);
  layers = parseOrFail(std::string(base) + R"(, "moe_layer_freq": 2})");
  EXPECT_EQ(layerIndices(layers), (std::vector<int64_t>{2}));
}

TEST(ModelConfig, DeepSeekV2TopkMethods) {
  const char *base = R"({
    "model_type": "deepseek_v2", "hidden_size": 64,
    "moe_intermediate_size": 32, "n_routed_experts": 16,
    "num_experts_per_tok": 4, "n_shared_experts": null,
    "routed_scaling_factor": 16.0, "num_hidden_layers": 2,
    "first_k_dense_replace": 1, "n_group": 8, "topk_group": 3)";
  std::vector<LayerSpec> layers =
      parseOrFail(std::string(base) + R"(, "topk_method": "greedy"})");
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].layerIndex, 1);
  EXPECT_EQ(layers[0].router.scoring, Scoring::Softmax);
  EXPECT_FALSE(layers[0].router.selectionBias);
  EXPECT_FALSE(layers[0].router.renormalize);
  EXPECT_DOUBLE_EQ(layers[0].router.scale, 16.0);
  EXPECT_EQ(layers[0].router.nGroup, 0);
  EXPECT_EQ(layers[0].sharedFfn, 0);

  std::string error = configError(
      std::string(base) + R"(, "topk_method": "group_limited_greedy"})");
  EXPECT_NE(error.find("group_limited_greedy"), std::string::npos) << error;
  EXPECT_NE(error.find("test-config.json"), std::string::npos) << error;

  // A group limit that keeps every group is no limit.
  std::string noop = std::string(base) +
                     R"(, "topk_method": "group_limited_greedy", )"
                     R"("n_group": 8, "topk_group": 8})";
  layers = parseOrFail(noop);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].router.nGroup, 0);

  error = configError(std::string(base) + R"(, "topk_method": "noaux"})");
  EXPECT_NE(error.find("noaux"), std::string::npos) << error;
}

TEST(ModelConfig, SwitchSparseEncoderBlocks) {
  const char *base = R"({
    "model_type": "switch_transformers", "d_model": 64, "d_ff": 96,
    "num_experts": 8, "expert_capacity": 64, "router_bias": false,
    "num_layers": 12)";
  std::vector<LayerSpec> layers =
      parseOrFail(std::string(base) + R"(, "num_sparse_encoder_layers": 6})");
  EXPECT_EQ(layerIndices(layers), (std::vector<int64_t>{1, 3, 5, 7, 9, 11}));
  // A saved config's encoder_sparse_step wins, as in Hugging Face.
  layers = parseOrFail(std::string(base) +
                       R"(, "num_sparse_encoder_layers": 6, )"
                       R"("encoder_sparse_step": 4})");
  EXPECT_EQ(layerIndices(layers), (std::vector<int64_t>{1, 5, 9}));
  ASSERT_FALSE(layers.empty());
  EXPECT_EQ(layers[0].activation, ExpertActivation::Relu);
  layers = parseOrFail(std::string(base) + R"(, "dense_act_fn": "gelu_new", )"
                                           R"("num_sparse_encoder_layers": 12})");
  EXPECT_EQ(layers.size(), 12u);
  ASSERT_FALSE(layers.empty());
  EXPECT_EQ(layers[0].activation, ExpertActivation::Gelu);

  std::string error =
      configError(std::string(base) + R"(, "num_sparse_encoder_layers": 0})");
  EXPECT_NE(error.find("no MoE layer"), std::string::npos) << error;
}

TEST(ModelConfig, OwnSchemaOptions) {
  std::vector<LayerSpec> layers = parseOrFail(R"({
    "model_type": "moe_top_p", "hidden_size": 64, "intermediate_size": 96,
    "num_experts": 8, "top_p": 0.5, "max_experts_per_tok": 10,
    "num_null_experts": 4, "capacity_factor": 1.25,
    "capacity_group": "request", "capacity_overflow": "reroute",
    "hidden_act": "relu", "num_hidden_layers": 3})");
  ASSERT_EQ(layers.size(), 3u);
  const RouterSpec &router = layers[2].router;
  EXPECT_EQ(layers[2].layerIndex, 2);
  EXPECT_EQ(router.k, 10); // k_max may use null experts: 10 <= 8 + 4
  EXPECT_EQ(router.nullExperts, 4);
  EXPECT_EQ(layers[2].routerRows(), 12);
  EXPECT_TRUE(router.capacity.enabled);
  EXPECT_DOUBLE_EQ(router.capacity.factor, 1.25);
  EXPECT_EQ(router.capacity.absolute, 0);
  EXPECT_EQ(router.capacity.group, CapacityGroupKind::Request);
  EXPECT_EQ(router.capacity.overflow, Overflow::Reroute);
  EXPECT_EQ(layers[2].activation, ExpertActivation::Relu);

  layers = parseOrFail(R"({
    "model_type": "moe_hash", "hidden_size": 64, "intermediate_size": 96,
    "num_experts": 8, "vocab_size": 100, "expert_capacity": 3,
    "capacity_group": "sequence", "capacity_overflow": "passthrough",
    "hidden_act": "swiglu", "num_hidden_layers": 1})");
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].router.capacity.absolute, 3);
  EXPECT_EQ(layers[0].router.capacity.group, CapacityGroupKind::Sequence);
  EXPECT_EQ(layers[0].router.capacity.overflow, Overflow::Passthrough);
  EXPECT_EQ(layers[0].activation, ExpertActivation::SiluGlu);
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

/// A valid Mixtral config with `replacement` spliced in for `key`'s entry
/// (an empty replacement removes the key).
std::string mixtralConfig(llvm::StringRef key = "",
                          llvm::StringRef replacement = "") {
  llvm::json::Object config{{"model_type", "mixtral"},
                            {"hidden_size", 64},
                            {"intermediate_size", 96},
                            {"num_local_experts", 8},
                            {"num_experts_per_tok", 2},
                            {"num_hidden_layers", 1}};
  if (!key.empty()) {
    config.erase(key);
    if (!replacement.empty()) {
      llvm::Expected<llvm::json::Value> value = llvm::json::parse(replacement);
      EXPECT_TRUE(static_cast<bool>(value));
      if (value)
        config[key] = std::move(*value);
    }
  }
  return llvm::formatv("{0}", llvm::json::Value(std::move(config))).str();
}

struct ConfigErrorCase {
  const char *label;
  std::string json;
  const char *expected; ///< must appear in the message
};

class ModelConfigRejects : public ::testing::TestWithParam<ConfigErrorCase> {};

TEST_P(ModelConfigRejects, NamingTheCulprit) {
  std::string error = configError(GetParam().json);
  ASSERT_FALSE(error.empty()) << "config was accepted";
  EXPECT_NE(error.find(GetParam().expected), std::string::npos) << error;
  EXPECT_NE(error.find("test-config.json"), std::string::npos) << error;
}

const char *kDeepSeek = R"({
  "model_type": "deepseek_v3", "hidden_size": 64, "moe_intermediate_size": 32,
  "n_routed_experts": 32, "num_experts_per_tok": 4, "num_hidden_layers": 1,
  "first_k_dense_replace": 0, )";

const char *kOwn = R"({
  "hidden_size": 64, "intermediate_size": 96, "num_experts": 8,
  "num_hidden_layers": 1, "hidden_act": "silu", )";

INSTANTIATE_TEST_SUITE_P(
    Configs, ModelConfigRejects,
    ::testing::Values(
        ConfigErrorCase{"UnknownType", R"({"model_type": "llama"})", "llama"},
        ConfigErrorCase{"MissingType", R"({"hidden_size": 64})", "model_type"},
        ConfigErrorCase{"NotJson", "{", "JSON"},
        ConfigErrorCase{"MissingKey", mixtralConfig("num_local_experts"),
                        "num_local_experts"},
        ConfigErrorCase{"NullKey", mixtralConfig("hidden_size", "null"),
                        "hidden_size"},
        ConfigErrorCase{"WrongType", mixtralConfig("hidden_size", "\"64\""),
                        "hidden_size"},
        ConfigErrorCase{"Fraction", mixtralConfig("hidden_size", "64.5"),
                        "hidden_size"},
        ConfigErrorCase{"ZeroSize", mixtralConfig("intermediate_size", "0"),
                        "intermediate_size"},
        ConfigErrorCase{"AboveInt32",
                        mixtralConfig("hidden_size", "4294967296"),
                        "hidden_size"},
        ConfigErrorCase{"TooManyLayers",
                        mixtralConfig("num_hidden_layers", "1000000000"),
                        "num_hidden_layers"},
        ConfigErrorCase{"KAboveE", mixtralConfig("num_experts_per_tok", "9"),
                        "num_experts_per_tok"},
        ConfigErrorCase{"BadActivation", mixtralConfig("hidden_act", "\"tanh\""),
                        "tanh"},
        ConfigErrorCase{"GeluGlu", mixtralConfig("hidden_act", "\"gelu\""),
                        "hidden_act"},
        ConfigErrorCase{"GroupsDoNotDivide",
                        std::string(kDeepSeek) +
                            R"("n_group": 5, "topk_group": 2})",
                        "n_group"},
        ConfigErrorCase{"TopkGroupAboveNGroup",
                        std::string(kDeepSeek) +
                            R"("n_group": 4, "topk_group": 5})",
                        "topk_group"},
        ConfigErrorCase{"KAboveKeptGroups",
                        std::string(kDeepSeek) +
                            R"("n_group": 16, "topk_group": 1})",
                        "num_experts_per_tok"},
        ConfigErrorCase{"RouterBias", R"({
          "model_type": "switch_transformers", "d_model": 64, "d_ff": 96,
          "num_experts": 4, "expert_capacity": 5, "router_bias": true,
          "num_layers": 1, "num_sparse_encoder_layers": 1})",
                        "router_bias"},
        ConfigErrorCase{"TopPAboveOne",
                        R"({"model_type": "moe_top_p", "top_p": 1.5, )"
                        R"("max_experts_per_tok": 2, )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "top_p"},
        ConfigErrorCase{"TopPZero",
                        R"({"model_type": "moe_top_p", "top_p": 0, )"
                        R"("max_experts_per_tok": 2, )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "top_p"},
        ConfigErrorCase{"KMaxAboveE",
                        R"({"model_type": "moe_top_p", "top_p": 0.5, )"
                        R"("max_experts_per_tok": 9, )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "max_experts_per_tok"},
        ConfigErrorCase{"BothCapacities",
                        R"({"model_type": "moe_hash", "vocab_size": 10, )"
                        R"("capacity_factor": 1.0, "expert_capacity": 2, )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "expert_capacity"},
        ConfigErrorCase{"HashReroute",
                        R"({"model_type": "moe_hash", "vocab_size": 10, )"
                        R"("capacity_factor": 1.0, )"
                        R"("capacity_overflow": "reroute", )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "reroute"},
        ConfigErrorCase{"GroupWithoutCapacity",
                        R"({"model_type": "moe_hash", "vocab_size": 10, )"
                        R"("capacity_group": "sequence", )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "capacity_group"},
        ConfigErrorCase{"ExpertChoiceNoFactor",
                        R"({"model_type": "moe_expert_choice", )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "capacity_factor"},
        ConfigErrorCase{"ExpertChoiceNullExperts",
                        R"({"model_type": "moe_expert_choice", )"
                        R"("capacity_factor": 2.0, "num_null_experts": 1, )" +
                            std::string(kOwn).substr(1) + "\"x\": 0}",
                        "num_null_experts"},
        ConfigErrorCase{"OwnMissingHiddenAct",
                        R"({"model_type": "moe_top_p", "top_p": 0.5, )"
                        R"("max_experts_per_tok": 2, "hidden_size": 64, )"
                        R"("intermediate_size": 96, "num_experts": 8, )"
                        R"("num_hidden_layers": 1})",
                        "hidden_act"}),
    [](const ::testing::TestParamInfo<ConfigErrorCase> &info) {
      return std::string(info.param.label);
    });

/// Writes mixtral_t1's config and its tensors, after `edit` changed them.
template <typename Edit>
void writeEditedMixtral(const TempDir &dir, Edit edit) {
  writeText(dir.file("config.json"),
            readText(goldenDir("mixtral_t1") + "/config.json"));
  std::vector<RawTensor> tensors =
      readAllTensors(goldenDir("mixtral_t1") + "/model.safetensors");
  edit(tensors);
  writeSafeTensors(dir.file("model.safetensors"), tensors);
}

TEST(ModelImportErrors, MissingTensor) {
  TempDir dir;
  const std::string name = "model.layers.0.block_sparse_moe.experts.5.w3.weight";
  writeEditedMixtral(dir, [&](std::vector<RawTensor> &tensors) {
    llvm::erase_if(tensors,
                   [&](const RawTensor &tensor) { return tensor.name == name; });
  });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("missing tensor '" + name + "'"), std::string::npos)
      << error;
  EXPECT_NE(error.find("model.safetensors"), std::string::npos) << error;
}

TEST(ModelImportErrors, WrongShape) {
  TempDir dir;
  const std::string name = "model.layers.0.block_sparse_moe.experts.2.w2.weight";
  writeEditedMixtral(dir, [&](std::vector<RawTensor> &tensors) {
    if (RawTensor *tensor = findTensor(tensors, name))
      tensor->shape = {96, 64}; // transposed: same bytes, wrong layout
  });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find(name), std::string::npos) << error;
  EXPECT_NE(error.find("shape [96, 64], expected [64, 96]"), std::string::npos)
      << error;
}

TEST(ModelImportErrors, WrongDType) {
  TempDir dir;
  const std::string name = "model.layers.0.block_sparse_moe.gate.weight";
  writeEditedMixtral(dir, [&](std::vector<RawTensor> &tensors) {
    if (RawTensor *tensor = findTensor(tensors, name))
      tensor->dtype = "I32"; // same byte count
  });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find(name), std::string::npos) << error;
  EXPECT_NE(error.find("I32"), std::string::npos) << error;
}

TEST(ModelImportErrors, HugeConfigSizesFailBeforeAllocating) {
  // Buffers are sized only after every tensor matched its expected shape, so
  // a config that claims 2^31 - 1 experts is an error, not an abort.
  TempDir dir;
  writeText(dir.file("config.json"),
            mixtralConfig("num_local_experts", "2147483647"));
  ASSERT_FALSE(llvm::sys::fs::copy_file(
      goldenDir("mixtral_t1") + "/model.safetensors",
      dir.file("model.safetensors")));
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("model.layers.0.block_sparse_moe.gate.weight"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("expected [2147483647, 64]"), std::string::npos)
      << error;
}

TEST(ModelImportErrors, MissingFiles) {
  TempDir dir;
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("config.json"), std::string::npos) << error;
  writeText(dir.file("config.json"),
            readText(goldenDir("mixtral_t1") + "/config.json"));
  error = importError(std::string(dir.path));
  EXPECT_NE(error.find("model.safetensors"), std::string::npos) << error;
}

/// Rewrites the weight map of the index in `dir` through `edit`.
void editWeightMap(const TempDir &dir,
                   llvm::function_ref<void(llvm::json::Object &)> edit) {
  std::string indexPath = dir.file("model.safetensors.index.json");
  llvm::Expected<llvm::json::Value> index =
      llvm::json::parse(readText(indexPath));
  ASSERT_TRUE(static_cast<bool>(index)) << llvm::toString(index.takeError());
  llvm::json::Object *map = index->getAsObject()->getObject("weight_map");
  ASSERT_NE(map, nullptr);
  edit(*map);
  writeText(indexPath, llvm::formatv("{0}", *index).str());
}

TEST(ModelImportErrors, ShardOutsideTheDirectory) {
  TempDir dir;
  writeShardedMixtral(dir, /*toBF16=*/false);
  editWeightMap(dir, [](llvm::json::Object &map) {
    map["model.layers.0.block_sparse_moe.experts.1.w1.weight"] =
        "../evil.safetensors";
  });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("'../evil.safetensors'"), std::string::npos) << error;
  EXPECT_NE(error.find("model.safetensors.index.json"), std::string::npos)
      << error;
}

TEST(ModelImportErrors, TensorMissingFromWeightMap) {
  TempDir dir;
  writeShardedMixtral(dir, /*toBF16=*/false);
  const std::string dropped =
      "model.layers.0.block_sparse_moe.experts.4.w2.weight";
  editWeightMap(dir, [&](llvm::json::Object &map) { map.erase(dropped); });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find(dropped), std::string::npos) << error;
  EXPECT_NE(error.find("weight_map"), std::string::npos) << error;
}

TEST(ModelImportErrors, TensorMissingFromItsShard) {
  TempDir dir;
  writeShardedMixtral(dir, /*toBF16=*/false);
  const std::string moved =
      "model.layers.0.block_sparse_moe.experts.6.w1.weight";
  std::string wrongShard;
  editWeightMap(dir, [&](llvm::json::Object &map) {
    std::optional<llvm::StringRef> shard = map.getString(moved);
    ASSERT_TRUE(shard.has_value());
    wrongShard = *shard == "model-00001-of-00002.safetensors"
                     ? "model-00002-of-00002.safetensors"
                     : "model-00001-of-00002.safetensors";
    map[moved] = wrongShard;
  });
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("missing tensor '" + moved + "'"), std::string::npos)
      << error;
  EXPECT_NE(error.find(wrongShard), std::string::npos) << error;
}

TEST(ModelImportErrors, HashTableOutsideInt32) {
  TempDir dir;
  writeText(dir.file("config.json"),
            readText(goldenDir("hash_t50") + "/config.json"));
  std::vector<RawTensor> tensors =
      readAllTensors(goldenDir("hash_t50") + "/model.safetensors");
  RawTensor *table = findTensor(tensors, "layers.0.hash_table");
  ASSERT_NE(table, nullptr);
  ASSERT_EQ(table->dtype, "I64");
  llvm::support::endian::write64le(table->bytes.data() + 8 * 7,
                                   uint64_t(INT32_MAX) + 1);
  writeSafeTensors(dir.file("model.safetensors"), tensors);
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find("layers.0.hash_table"), std::string::npos) << error;
  EXPECT_NE(error.find("entry 7 is 2147483648"), std::string::npos) << error;

  // A float table is rejected too.
  table->dtype = "F64";
  writeSafeTensors(dir.file("model.safetensors"), tensors);
  error = importError(std::string(dir.path));
  EXPECT_NE(error.find("layers.0.hash_table"), std::string::npos) << error;
  EXPECT_NE(error.find("integer"), std::string::npos) << error;
}

TEST(ModelImportErrors, DeepSeekV3NeedsTheSelectionBias) {
  TempDir dir;
  writeText(dir.file("config.json"),
            readText(goldenDir("deepseek_v3_t29") + "/config.json"));
  std::vector<RawTensor> tensors =
      readAllTensors(goldenDir("deepseek_v3_t29") + "/model.safetensors");
  const std::string name = "model.layers.0.mlp.gate.e_score_correction_bias";
  llvm::erase_if(tensors,
                 [&](const RawTensor &tensor) { return tensor.name == name; });
  writeSafeTensors(dir.file("model.safetensors"), tensors);
  std::string error = importError(std::string(dir.path));
  EXPECT_NE(error.find(name), std::string::npos) << error;
}

TEST(ModelImportErrors, OnlyLayerMustBeAnMoELayer) {
  std::string error = importError(goldenDir("mixtral_t1"), 3);
  EXPECT_NE(error.find("layer 3 is not an MoE layer"), std::string::npos)
      << error;
  EXPECT_NE(error.find("config.json"), std::string::npos) << error;

  // A dense layer inside the model is rejected as well.
  TempDir dir;
  std::string config = readText(goldenDir("qwen2_moe_t40") + "/config.json");
  llvm::Expected<llvm::json::Value> json = llvm::json::parse(config);
  ASSERT_TRUE(static_cast<bool>(json));
  (*json->getAsObject())["num_hidden_layers"] = 2;
  (*json->getAsObject())["mlp_only_layers"] = llvm::json::Array{1};
  writeText(dir.file("config.json"), llvm::formatv("{0}", *json).str());
  ASSERT_FALSE(llvm::sys::fs::copy_file(
      goldenDir("qwen2_moe_t40") + "/model.safetensors",
      dir.file("model.safetensors")));
  error = importError(std::string(dir.path), 1);
  EXPECT_NE(error.find("layer 1 is not an MoE layer"), std::string::npos)
      << error;
  ImportedModel model = importOrFail(std::string(dir.path), 0);
  ASSERT_EQ(model.layers.size(), 1u);
  EXPECT_EQ(model.layers[0].layerIndex, 0);
}

} // namespace
