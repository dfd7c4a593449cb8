//===- ModelImport.cpp - Hugging Face config + safetensors -> LayerSpec ---===//
//
// Reads a model directory, config.json plus model.safetensors (or a sharded
// checkpoint: model.safetensors.index.json and the shards its "weight_map"
// names), and returns one LayerSpec with its packed LayerWeights per MoE
// layer.
//
// Supported `model_type` values and the config keys read
// ------------------------------------------------------
// Keys that fix a shape or a count (widths, expert counts, k, layer counts)
// are required. Policy keys are optional and default to the value of the
// Hugging Face config class, given in parentheses. Other keys are ignored.
// A key given as JSON null counts as absent. Integer keys must be at most
// 2^31 - 1 (the dialect indexes with i32) and layer counts at most 65536.
//
// mixtral
//   hidden_size, intermediate_size, num_local_experts, num_experts_per_tok,
//   num_hidden_layers, hidden_act ("silu").
//   Router: topk, softmax, renormalize. Every layer is an MoE layer.
//   Tensors: model.layers.L.block_sparse_moe.gate.weight [E, d],
//   ...experts.E.w1.weight (gate) [F, d], .w3.weight (up) [F, d],
//   .w2.weight (down) [d, F].
//
// qwen2_moe, qwen3_moe
//   hidden_size, moe_intermediate_size, num_experts, num_experts_per_tok,
//   num_hidden_layers, norm_topk_prob (false), decoder_sparse_step (1),
//   mlp_only_layers ([]), hidden_act ("silu"); qwen2_moe also
//   shared_expert_intermediate_size.
//   Layer L is an MoE layer iff L is not in mlp_only_layers and
//   (L + 1) % decoder_sparse_step == 0.
//   Router: topk, softmax, renormalize iff norm_topk_prob.
//   Tensors: model.layers.L.mlp.gate.weight, mlp.experts.E.{gate,up,down}_proj
//   .weight; qwen2_moe: mlp.shared_expert.{gate,up,down}_proj.weight and
//   mlp.shared_expert_gate.weight [1, d] (shared output scaled by
//   sigmoid(x . g)). qwen3_moe has no shared expert.
//
// deepseek_v2, deepseek_v3
//   hidden_size, moe_intermediate_size, n_routed_experts,
//   num_experts_per_tok, num_hidden_layers, n_shared_experts (v2: 2, v3: 1;
//   null or 0: none), routed_scaling_factor (v2: 1.0, v3: 2.5),
//   norm_topk_prob (v2: false, v3: true), first_k_dense_replace (v2: 0,
//   v3: 3), moe_layer_freq (1), hidden_act ("silu");
//   v3: n_group (8), topk_group (4); v2: topk_method ("greedy"), and
//   n_group, topk_group when topk_method is "group_limited_greedy".
//   Layer L is an MoE layer iff L >= first_k_dense_replace and
//   L % moe_layer_freq == 0.
//   v3 router: topk, sigmoid, bias (mlp.gate.e_score_correction_bias [E],
//   required), group-limited by n_group / topk_group, renormalize iff
//   norm_topk_prob, scale = routed_scaling_factor. scoring_func and
//   topk_method are ignored, as the Hugging Face class does.
//   v2 router: topk, softmax, no bias, same renormalize / scale. "greedy"
//   has no group limit. "group_limited_greedy" ranks groups by their single
//   best score, which the `moe` router does not express (it ranks by the sum
//   of the two best), so it is rejected unless the limit is a no-op
//   (n_group == 1 or topk_group == n_group).
//   A group limit that keeps every group is imported as no limit
//   (nGroup = topkGroup = 0).
//   Shared expert: one SwiGLU FFN of width n_shared_experts *
//   moe_intermediate_size, ungated: mlp.shared_experts.{gate,up,down}_proj.
//
// olmoe
//   hidden_size, intermediate_size, num_experts, num_experts_per_tok,
//   num_hidden_layers, norm_topk_prob (false), hidden_act ("silu").
//   Every layer is an MoE layer. Tensors as qwen (model.layers.L.mlp.*).
//
// switch_transformers
//   d_model, d_ff, num_experts, expert_capacity, num_layers,
//   dense_act_fn ("relu"; "gelu" and "gelu_new" import as exact GELU),
//   router_bias (false; true is rejected), encoder_sparse_step or else
//   num_sparse_encoder_layers (3; step = num_layers / n, 0 sparse layers
//   when n is 0).
//   Only the sparse ENCODER blocks are imported; decoder blocks are not.
//   Encoder block B is sparse, as Hugging Face builds it, iff step > 0 and
//   (step == 1 or B % step == 1). layerIndex = B.
//   Router: topk, k = 1, softmax, not renormalized, capacity absolute =
//   expert_capacity per sequence, overflow = drop (the Switch paper).
//   Tensors: encoder.block.B.layer.1.mlp.router.classifier.weight and
//   encoder.block.B.layer.1.mlp.experts.expert_E.{wi,wo}.weight.
//
// Hugging Face 5.x fused experts: for every SwiGLU family above the importer
// also accepts model.layers.L.mlp.experts.gate_up_proj [E, 2F, d]
// (= cat(gate, up) per expert) with mlp.experts.down_proj [E, d, F]; the
// router is then model.layers.L.mlp.gate.weight (also for mixtral).
//
// The project's own schema (no Hugging Face class exists)
// -------------------------------------------------------
// Common keys, all required:
//   hidden_size, intermediate_size, num_experts, num_hidden_layers,
//   hidden_act: "silu" / "swiglu" (SwiGLU experts), "gelu" (exact, erf) or
//   "relu". Every layer is an MoE layer.
// Tensors of layer L:
//   layers.L.gate.weight                        [E + null, d]  (not for hash)
//   layers.L.experts.E.gate_proj.weight         [F, d]  \
//   layers.L.experts.E.up_proj.weight           [F, d]   } silu
//   layers.L.experts.E.down_proj.weight         [d, F]  /
//   layers.L.experts.E.wi.weight                [F, d]  \  gelu, relu
//   layers.L.experts.E.wo.weight                [d, F]  /
//   layers.L.hash_table                         [vocab_size], integer dtype
//
// moe_expert_choice: capacity_factor (> 0). Router: expert_choice.
// moe_top_p:         top_p (in (0, 1]), max_experts_per_tok (k_max).
//                    Router: top_p.
// moe_hash:          vocab_size. Router: hash, table from layers.L.hash_table
//                    (values must fit in int32).
// Optional for moe_top_p and moe_hash:
//   num_null_experts (0)        AdaMoE null experts (extra router rows)
//   capacity_factor or expert_capacity (at most one; no capacity if absent)
//   capacity_group    "batch" (default) | "sequence" | "request"
//   capacity_overflow "drop" (default) | "passthrough" | "reroute"
//                     (moe_hash cannot reroute: it has no router scores)
//
// Weights are returned as f32 (F32, F16, BF16 and F64 tensors convert) in
// the packed layouts of LayerSpec.h. Every error names the file and the key
// or tensor at fault.
//
//===----------------------------------------------------------------------===//

#include "moe/Frontend/ModelImport.h"

#include "moe/Frontend/SafeTensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace llvm;
using namespace mlir::moe::frontend;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

Error makeError(StringRef file, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), file + ": " + message);
}

std::string shapeToString(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (auto [i, dim] : llvm::enumerate(shape))
    text += (i ? ", " : "") + std::to_string(dim);
  return text + "]";
}

std::string joinIndices(ArrayRef<int64_t> values, size_t limit = 16) {
  std::string text;
  for (auto [i, value] : llvm::enumerate(values)) {
    if (i == limit)
      return text + ", ...";
    text += (i ? ", " : "") + std::to_string(value);
  }
  return text.empty() ? "none" : text;
}

/// A config number as written in messages ("2.5", "1e-05").
std::string formatNumber(double value) {
  return formatv("{0}", json::Value(value)).str();
}

bool isFloatDType(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 ||
         dtype == DType::F64;
}

bool isIntegerDType(DType dtype) {
  return dtype == DType::I64 || dtype == DType::I32 || dtype == DType::I16 ||
         dtype == DType::I8 || dtype == DType::U8;
}

//===----------------------------------------------------------------------===//
// ConfigReader: typed access to config.json keys
//===----------------------------------------------------------------------===//

/// Reads typed keys of one JSON object. Accessors never fail: on a missing
/// or ill-typed key they record the first error (prefixed with the source
/// file) and return a harmless placeholder, so a parser reads all its keys
/// and checks `failed()` once before it relies on the values.
class ConfigReader {
public:
  static constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
  static constexpr int64_t kMaxLayers = 65536;

  ConfigReader(const json::Object &object, StringRef source)
      : object(object), source(source.str()) {}

  /// Whether `key` is present with a non-null value.
  bool has(StringRef key) const {
    const json::Value *value = object.get(key);
    return value && value->kind() != json::Value::Null;
  }
  /// Whether `key` is present with the value null.
  bool isNull(StringRef key) const {
    const json::Value *value = object.get(key);
    return value && value->kind() == json::Value::Null;
  }

  /// Records `message` unless an error was recorded before.
  void fail(const Twine &message) {
    if (!firstError)
      firstError = (source + ": " + message).str();
  }
  bool failed() const { return firstError.has_value(); }
  Error takeError() {
    if (!firstError)
      return Error::success();
    Error error = createStringError(inconvertibleErrorCode(), *firstError);
    firstError.reset();
    return error;
  }

  /// An integer key in [minimum, maximum]; `fallback` when absent, else
  /// required. The default maximum is INT32_MAX: the `moe` dialect indexes
  /// experts, rows and tokens with i32.
  int64_t getInt(StringRef key, std::optional<int64_t> fallback,
                 int64_t minimum, int64_t maximum = kMaxInt32) {
    const json::Value *value = lookup(key, fallback.has_value());
    if (!value)
      return fallback.value_or(minimum);
    std::optional<int64_t> integer = value->getAsInteger();
    if (!integer) {
      wrongType(key, "an integer", *value);
      return minimum;
    }
    if (*integer < minimum) {
      fail("key '" + key + "' must be " +
           (minimum == 1 ? std::string("positive")
                         : ">= " + std::to_string(minimum)) +
           ", found " + Twine(*integer));
      return minimum;
    }
    if (*integer > maximum) {
      fail("key '" + key + "' must be at most " + Twine(maximum) +
           ", found " + Twine(*integer));
      return minimum;
    }
    return *integer;
  }
  int64_t requireInt(StringRef key, int64_t minimum) {
    return getInt(key, std::nullopt, minimum);
  }
  /// A layer count: at most kMaxLayers, so that a corrupt config cannot make
  /// the importer allocate one LayerSpec per bogus layer.
  int64_t requireLayerCount(StringRef key) {
    return getInt(key, std::nullopt, 1, kMaxLayers);
  }

  /// A finite number; `fallback` when absent, else required.
  double getNumber(StringRef key, std::optional<double> fallback) {
    const json::Value *value = lookup(key, fallback.has_value());
    if (!value)
      return fallback.value_or(0.0);
    std::optional<double> number = value->getAsNumber();
    if (!number || !std::isfinite(*number)) {
      wrongType(key, "a finite number", *value);
      return 0.0;
    }
    return *number;
  }

  bool getBool(StringRef key, std::optional<bool> fallback) {
    const json::Value *value = lookup(key, fallback.has_value());
    if (!value)
      return fallback.value_or(false);
    std::optional<bool> boolean = value->getAsBoolean();
    if (!boolean) {
      wrongType(key, "a boolean", *value);
      return false;
    }
    return *boolean;
  }

  std::string getString(StringRef key, std::optional<StringRef> fallback) {
    const json::Value *value = lookup(key, fallback.has_value());
    if (!value)
      return fallback.value_or("").str();
    std::optional<StringRef> text = value->getAsString();
    if (!text) {
      wrongType(key, "a string", *value);
      return "";
    }
    return text->str();
  }

  /// An optional array of non-negative integers (empty when absent).
  std::vector<int64_t> getIndexList(StringRef key) {
    std::vector<int64_t> result;
    const json::Value *value = lookup(key, /*optional=*/true);
    if (!value)
      return result;
    const json::Array *array = value->getAsArray();
    if (!array) {
      wrongType(key, "an array of integers", *value);
      return result;
    }
    for (const json::Value &entry : *array) {
      std::optional<int64_t> integer = entry.getAsInteger();
      if (!integer || *integer < 0) {
        wrongType(key, "an array of non-negative integers", *value);
        return {};
      }
      result.push_back(*integer);
    }
    return result;
  }

private:
  /// The non-null value of `key`, or null (recording "missing" unless the
  /// key is optional).
  const json::Value *lookup(StringRef key, bool optional) {
    const json::Value *value = object.get(key);
    if (value && value->kind() != json::Value::Null)
      return value;
    if (!optional)
      fail("missing required key '" + key + "'" +
           (value ? " (it is null)" : ""));
    return nullptr;
  }

  void wrongType(StringRef key, StringRef expected, const json::Value &found) {
    std::string text = formatv("{0}", found).str();
    if (text.size() > 40)
      text = text.substr(0, 40) + "...";
    fail("key '" + key + "' must be " + expected + ", found " + text);
  }

  const json::Object &object;
  std::string source;
  std::optional<std::string> firstError;
};

//===----------------------------------------------------------------------===//
// Config parsing
//===----------------------------------------------------------------------===//

/// A parsed config.json: the model type and its MoE layers.
struct ParsedConfig {
  std::string modelType;
  /// Layers of the model (encoder blocks for switch_transformers).
  int64_t numLayers = 0;
  /// The MoE layers, in increasing layerIndex.
  std::vector<LayerSpec> layers;
};

/// Appends a copy of `base` for every layer in [0, numLayers) that `isMoe`
/// accepts.
template <typename Predicate>
void addLayers(ParsedConfig &config, const LayerSpec &base, Predicate isMoe) {
  for (int64_t layer = 0; layer < config.numLayers; ++layer) {
    if (!isMoe(layer))
      continue;
    LayerSpec spec = base;
    spec.name = "layer" + std::to_string(layer);
    spec.layerIndex = layer;
    config.layers.push_back(std::move(spec));
  }
}

std::optional<ExpertActivation> parseActivation(StringRef name) {
  if (name == "silu" || name == "swiglu")
    return ExpertActivation::SiluGlu;
  if (name == "gelu")
    return ExpertActivation::Gelu;
  if (name == "relu")
    return ExpertActivation::Relu;
  return std::nullopt;
}

/// The Hugging Face SwiGLU families compute act(gate(x)) * up(x); only silu
/// has an epilogue (silu_glu), so any other hidden_act is rejected.
void readGatedActivation(ConfigReader &reader, LayerSpec &spec,
                         StringRef modelType) {
  std::string act = reader.getString("hidden_act", StringRef("silu"));
  if (reader.failed())
    return;
  if (parseActivation(act) != ExpertActivation::SiluGlu)
    reader.fail("hidden_act '" + act + "' is not supported for " + modelType +
                ": its experts compute act(gate(x)) * up(x) and only 'silu' "
                "(SwiGLU) is supported");
  spec.activation = ExpertActivation::SiluGlu;
}

/// k must fit the experts (k <= E + null experts).
void checkTopK(ConfigReader &reader, const LayerSpec &spec, StringRef kKey,
               StringRef expertsKey) {
  int64_t columns = spec.numExperts + spec.router.nullExperts;
  if (spec.router.k > columns)
    reader.fail("key '" + kKey + "' (" + Twine(spec.router.k) +
                ") exceeds the number of experts '" + expertsKey + "' (" +
                Twine(spec.numExperts) +
                (spec.router.nullExperts
                     ? " + " + Twine(spec.router.nullExperts) + " null"
                     : Twine()) +
                ")");
}

/// Validates group-limited routing and drops a limit that keeps every group.
void checkGroups(ConfigReader &reader, LayerSpec &spec, StringRef expertsKey) {
  RouterSpec &router = spec.router;
  if (router.nGroup == 0)
    return;
  if (spec.numExperts % router.nGroup != 0) {
    reader.fail("key 'n_group' (" + Twine(router.nGroup) + ") does not divide '" +
                expertsKey + "' (" + Twine(spec.numExperts) + ")");
    return;
  }
  if (router.topkGroup > router.nGroup) {
    reader.fail("key 'topk_group' (" + Twine(router.topkGroup) +
                ") exceeds 'n_group' (" + Twine(router.nGroup) + ")");
    return;
  }
  if (router.topkGroup == router.nGroup) {
    // Every group stays eligible: no limit at all.
    router.nGroup = router.topkGroup = 0;
    return;
  }
  int64_t groupSize = spec.numExperts / router.nGroup;
  if (router.k > router.topkGroup * groupSize) {
    reader.fail("key 'num_experts_per_tok' (" + Twine(router.k) +
                ") exceeds the " + Twine(router.topkGroup * groupSize) +
                " experts of the 'topk_group' (" + Twine(router.topkGroup) +
                ") groups a token may use");
    return;
  }
  if (groupSize < 2)
    reader.fail("key 'n_group' (" + Twine(router.nGroup) +
                ") leaves groups of one expert; a group's score is the sum of "
                "its two best experts");
}

void parseMixtral(ConfigReader &reader, ParsedConfig &config) {
  LayerSpec spec;
  spec.hidden = reader.requireInt("hidden_size", 1);
  spec.ffn = reader.requireInt("intermediate_size", 1);
  spec.numExperts = reader.requireInt("num_local_experts", 1);
  spec.router.k = reader.requireInt("num_experts_per_tok", 1);
  config.numLayers = reader.requireLayerCount("num_hidden_layers");
  readGatedActivation(reader, spec, config.modelType);
  spec.router.scoring = Scoring::Softmax;
  spec.router.renormalize = true;
  if (reader.failed())
    return;
  checkTopK(reader, spec, "num_experts_per_tok", "num_local_experts");
  addLayers(config, spec, [](int64_t) { return true; });
}

void parseQwen(ConfigReader &reader, ParsedConfig &config, bool hasShared) {
  LayerSpec spec;
  spec.hidden = reader.requireInt("hidden_size", 1);
  spec.ffn = reader.requireInt("moe_intermediate_size", 1);
  spec.numExperts = reader.requireInt("num_experts", 1);
  spec.router.k = reader.requireInt("num_experts_per_tok", 1);
  config.numLayers = reader.requireLayerCount("num_hidden_layers");
  spec.router.scoring = Scoring::Softmax;
  spec.router.renormalize = reader.getBool("norm_topk_prob", false);
  int64_t sparseStep = reader.getInt("decoder_sparse_step", 1, 1);
  std::vector<int64_t> mlpOnly = reader.getIndexList("mlp_only_layers");
  if (hasShared) {
    spec.sharedFfn = reader.requireInt("shared_expert_intermediate_size", 1);
    spec.sharedGate = true;
  }
  readGatedActivation(reader, spec, config.modelType);
  if (reader.failed())
    return;
  checkTopK(reader, spec, "num_experts_per_tok", "num_experts");
  addLayers(config, spec, [&](int64_t layer) {
    return !llvm::is_contained(mlpOnly, layer) &&
           (layer + 1) % sparseStep == 0;
  });
}

void parseDeepSeek(ConfigReader &reader, ParsedConfig &config, bool isV3) {
  LayerSpec spec;
  RouterSpec &router = spec.router;
  spec.hidden = reader.requireInt("hidden_size", 1);
  spec.ffn = reader.requireInt("moe_intermediate_size", 1);
  spec.numExperts = reader.requireInt("n_routed_experts", 1);
  router.k = reader.requireInt("num_experts_per_tok", 1);
  config.numLayers = reader.requireLayerCount("num_hidden_layers");
  int64_t sharedExperts =
      reader.isNull("n_shared_experts")
          ? 0
          : reader.getInt("n_shared_experts", isV3 ? 1 : 2, 0);
  router.scale = reader.getNumber("routed_scaling_factor", isV3 ? 2.5 : 1.0);
  router.renormalize = reader.getBool("norm_topk_prob", isV3);
  int64_t firstDense = reader.getInt("first_k_dense_replace", isV3 ? 3 : 0, 0);
  int64_t layerFreq = reader.getInt("moe_layer_freq", 1, 1);
  readGatedActivation(reader, spec, config.modelType);

  std::string topkMethod;
  if (isV3) {
    router.scoring = Scoring::Sigmoid;
    router.selectionBias = true;
    router.nGroup = reader.getInt("n_group", 8, 1);
    router.topkGroup = reader.getInt("topk_group", 4, 1);
  } else {
    router.scoring = Scoring::Softmax;
    topkMethod = reader.getString("topk_method", StringRef("greedy"));
    if (topkMethod == "group_limited_greedy") {
      router.nGroup = reader.requireInt("n_group", 1);
      router.topkGroup = reader.requireInt("topk_group", 1);
    } else if (!reader.failed() && topkMethod != "greedy") {
      reader.fail("unsupported topk_method '" + topkMethod +
                  "' for deepseek_v2 (supported: greedy, "
                  "group_limited_greedy)");
    }
  }
  if (reader.failed())
    return;
  if (router.scale <= 0.0) {
    reader.fail("key 'routed_scaling_factor' must be positive, found " +
                formatNumber(router.scale));
    return;
  }
  spec.sharedFfn = sharedExperts * spec.ffn;
  checkTopK(reader, spec, "num_experts_per_tok", "n_routed_experts");
  if (reader.failed())
    return;
  int64_t requestedGroups = router.nGroup, requestedTopk = router.topkGroup;
  checkGroups(reader, spec, "n_routed_experts");
  if (reader.failed())
    return;
  if (!isV3 && router.nGroup > 1) {
    // checkGroups kept a real limit (topk_group < n_group).
    reader.fail("topk_method 'group_limited_greedy' with n_group = " +
                Twine(requestedGroups) + " and topk_group = " +
                Twine(requestedTopk) +
                " ranks expert groups by their single best score, which the "
                "moe router does not express (it ranks a group by the sum of "
                "its two best scores, as DeepSeek-V3 does)");
    return;
  }
  addLayers(config, spec, [&](int64_t layer) {
    return layer >= firstDense && layer % layerFreq == 0;
  });
}

void parseOlmoe(ConfigReader &reader, ParsedConfig &config) {
  LayerSpec spec;
  spec.hidden = reader.requireInt("hidden_size", 1);
  spec.ffn = reader.requireInt("intermediate_size", 1);
  spec.numExperts = reader.requireInt("num_experts", 1);
  spec.router.k = reader.requireInt("num_experts_per_tok", 1);
  config.numLayers = reader.requireLayerCount("num_hidden_layers");
  spec.router.scoring = Scoring::Softmax;
  spec.router.renormalize = reader.getBool("norm_topk_prob", false);
  readGatedActivation(reader, spec, config.modelType);
  if (reader.failed())
    return;
  checkTopK(reader, spec, "num_experts_per_tok", "num_experts");
  addLayers(config, spec, [](int64_t) { return true; });
}

void parseSwitch(ConfigReader &reader, ParsedConfig &config) {
  LayerSpec spec;
  spec.hidden = reader.requireInt("d_model", 1);
  spec.ffn = reader.requireInt("d_ff", 1);
  spec.numExperts = reader.requireInt("num_experts", 1);
  int64_t capacity = reader.requireInt("expert_capacity", 1);
  config.numLayers = reader.requireLayerCount("num_layers");
  std::string act = reader.getString("dense_act_fn", StringRef("relu"));
  bool routerBias = reader.getBool("router_bias", false);
  // A saved config carries encoder_sparse_step, which Hugging Face prefers
  // over the value it derives from num_sparse_encoder_layers.
  int64_t sparseStep = 0;
  if (reader.has("encoder_sparse_step")) {
    sparseStep = reader.getInt("encoder_sparse_step", 0, 0);
  } else {
    int64_t sparseLayers = reader.getInt("num_sparse_encoder_layers", 3, 0);
    if (!reader.failed() && sparseLayers > 0)
      sparseStep = config.numLayers / sparseLayers;
  }
  if (reader.failed())
    return;
  if (act == "relu")
    spec.activation = ExpertActivation::Relu;
  else if (act == "gelu" || act == "gelu_new")
    spec.activation = ExpertActivation::Gelu;
  else
    reader.fail("dense_act_fn '" + act +
                "' is not supported (supported: relu, gelu, gelu_new)");
  if (routerBias)
    reader.fail("key 'router_bias' is true; a router with a bias is not "
                "supported for switch_transformers");
  if (reader.failed())
    return;
  RouterSpec &router = spec.router;
  router.k = 1;
  router.scoring = Scoring::Softmax;
  router.renormalize = false;
  router.capacity.enabled = true;
  router.capacity.absolute = capacity;
  router.capacity.group = CapacityGroupKind::Sequence;
  router.capacity.overflow = Overflow::Drop;
  // Hugging Face's SwitchTransformersStack: block i is sparse iff
  // sparse_step == 1 or i % sparse_step == 1 (and sparse_step > 0).
  addLayers(config, spec, [&](int64_t block) {
    return sparseStep > 0 && (sparseStep == 1 || block % sparseStep == 1);
  });
}

/// Optional null experts and capacity of the own top_p / hash types.
void readOwnRoutingOptions(ConfigReader &reader, LayerSpec &spec,
                           bool canReroute, StringRef modelType) {
  RouterSpec &router = spec.router;
  router.nullExperts = reader.getInt("num_null_experts", 0, 0);
  bool hasFactor = reader.has("capacity_factor");
  bool hasAbsolute = reader.has("expert_capacity");
  if (hasFactor && hasAbsolute) {
    reader.fail("keys 'capacity_factor' and 'expert_capacity' exclude each "
                "other; give at most one");
    return;
  }
  if (!hasFactor && !hasAbsolute) {
    for (StringRef key : {"capacity_group", "capacity_overflow"})
      if (reader.has(key))
        reader.fail("key '" + key +
                    "' needs 'capacity_factor' or 'expert_capacity'");
    return;
  }
  CapacitySpec &capacity = router.capacity;
  capacity.enabled = true;
  if (hasFactor) {
    capacity.factor = reader.getNumber("capacity_factor", std::nullopt);
    if (!reader.failed() && capacity.factor <= 0.0)
      reader.fail("key 'capacity_factor' must be positive, found " +
                  formatNumber(capacity.factor));
  } else {
    capacity.absolute = reader.requireInt("expert_capacity", 1);
  }
  std::string group = reader.getString("capacity_group", StringRef("batch"));
  std::string overflow =
      reader.getString("capacity_overflow", StringRef("drop"));
  if (reader.failed())
    return;
  if (group == "batch")
    capacity.group = CapacityGroupKind::Batch;
  else if (group == "sequence")
    capacity.group = CapacityGroupKind::Sequence;
  else if (group == "request")
    capacity.group = CapacityGroupKind::Request;
  else
    reader.fail("capacity_group '" + group +
                "' is not one of batch, sequence, request");
  if (overflow == "drop")
    capacity.overflow = Overflow::Drop;
  else if (overflow == "passthrough")
    capacity.overflow = Overflow::Passthrough;
  else if (overflow == "reroute" && canReroute)
    capacity.overflow = Overflow::Reroute;
  else if (overflow == "reroute")
    reader.fail("capacity_overflow 'reroute' is not supported for " +
                modelType + ": rerouting ranks experts by router scores, "
                            "which a hash layer does not have");
  else
    reader.fail("capacity_overflow '" + overflow +
                "' is not one of drop, passthrough, reroute");
}

void parseOwn(ConfigReader &reader, ParsedConfig &config) {
  StringRef type = config.modelType;
  LayerSpec spec;
  RouterSpec &router = spec.router;
  spec.hidden = reader.requireInt("hidden_size", 1);
  spec.ffn = reader.requireInt("intermediate_size", 1);
  spec.numExperts = reader.requireInt("num_experts", 1);
  config.numLayers = reader.requireLayerCount("num_hidden_layers");
  std::string act = reader.getString("hidden_act", std::nullopt);
  if (reader.failed())
    return;
  std::optional<ExpertActivation> activation = parseActivation(act);
  if (!activation) {
    reader.fail("hidden_act '" + act +
                "' is not supported (supported: silu, swiglu, gelu, relu)");
    return;
  }
  spec.activation = *activation;

  if (type == "moe_expert_choice") {
    router.family = RouterFamily::ExpertChoice;
    router.capacityFactor = reader.getNumber("capacity_factor", std::nullopt);
    for (StringRef key : {"num_null_experts", "expert_capacity",
                          "capacity_group", "capacity_overflow"})
      if (reader.has(key))
        reader.fail("key '" + key + "' does not apply to moe_expert_choice");
    if (!reader.failed() && router.capacityFactor <= 0.0)
      reader.fail("key 'capacity_factor' must be positive, found " +
                  formatNumber(router.capacityFactor));
  } else if (type == "moe_top_p") {
    router.family = RouterFamily::TopP;
    router.scoring = Scoring::Softmax;
    router.p = reader.getNumber("top_p", std::nullopt);
    router.k = reader.requireInt("max_experts_per_tok", 1);
    readOwnRoutingOptions(reader, spec, /*canReroute=*/true, type);
    if (!reader.failed() && !(router.p > 0.0 && router.p <= 1.0))
      reader.fail("key 'top_p' must be in (0, 1], found " + formatNumber(router.p));
    if (!reader.failed())
      checkTopK(reader, spec, "max_experts_per_tok", "num_experts");
  } else {
    router.family = RouterFamily::Hash;
    router.k = 1;
    spec.hashVocab = reader.requireInt("vocab_size", 1);
    readOwnRoutingOptions(reader, spec, /*canReroute=*/false, type);
  }
  if (reader.failed())
    return;
  addLayers(config, spec, [](int64_t) { return true; });
}

Expected<ParsedConfig> parseConfig(StringRef text, StringRef source) {
  Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return makeError(source,
                     "not valid JSON: " + toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return makeError(source, "the top level is not a JSON object");
  ConfigReader reader(*root, source);
  ParsedConfig config;
  config.modelType = reader.getString("model_type", std::nullopt);
  if (reader.failed())
    return reader.takeError();

  StringRef type = config.modelType;
  if (type == "mixtral")
    parseMixtral(reader, config);
  else if (type == "qwen2_moe" || type == "qwen3_moe")
    parseQwen(reader, config, /*hasShared=*/type == "qwen2_moe");
  else if (type == "deepseek_v2" || type == "deepseek_v3")
    parseDeepSeek(reader, config, /*isV3=*/type == "deepseek_v3");
  else if (type == "olmoe")
    parseOlmoe(reader, config);
  else if (type == "switch_transformers")
    parseSwitch(reader, config);
  else if (type == "moe_expert_choice" || type == "moe_top_p" ||
           type == "moe_hash")
    parseOwn(reader, config);
  else
    return makeError(source,
                     "unsupported model_type '" + type +
                         "' (supported: mixtral, qwen2_moe, qwen3_moe, "
                         "deepseek_v2, deepseek_v3, olmoe, "
                         "switch_transformers, moe_expert_choice, moe_top_p, "
                         "moe_hash)");
  if (reader.failed())
    return reader.takeError();
  if (config.layers.empty())
    return makeError(source, "this " + type + " config has no MoE layer");
  return config;
}

//===----------------------------------------------------------------------===//
// Checkpoint: one model.safetensors or the shards of an index
//===----------------------------------------------------------------------===//

constexpr StringLiteral kSingleFile = "model.safetensors";
constexpr StringLiteral kIndexFile = "model.safetensors.index.json";

/// A tensor and the file it came from (for messages).
struct LocatedTensor {
  const TensorView *tensor;
  std::string file;
};

/// The tensors of a model directory. Shards are opened on first use and
/// stay mapped for the life of the object, so every TensorView it hands out
/// stays valid.
class Checkpoint {
public:
  static Expected<std::unique_ptr<Checkpoint>> open(StringRef directory) {
    auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
    checkpoint->directory = directory.str();
    std::string indexPath = checkpoint->pathOf(kIndexFile);
    if (sys::fs::exists(indexPath)) {
      checkpoint->indexPath = indexPath;
      if (Error error = checkpoint->readIndex())
        return std::move(error);
    } else {
      // Open eagerly so a missing file is reported even if no tensor is read.
      if (Expected<SafeTensorsFile *> file = checkpoint->getShard(kSingleFile);
          !file)
        return file.takeError();
    }
    return std::move(checkpoint);
  }

  /// Whether a tensor called `name` exists (sharded: per the weight map).
  bool contains(StringRef name) {
    if (isSharded())
      return weightMap.count(name);
    Expected<SafeTensorsFile *> file = getShard(kSingleFile);
    if (!file) {
      consumeError(file.takeError());
      return false;
    }
    return (*file)->lookup(name) != nullptr;
  }

  /// The tensor called `name`, or an error naming it and the file.
  Expected<LocatedTensor> find(StringRef name) {
    StringRef shard = kSingleFile;
    if (isSharded()) {
      auto it = weightMap.find(name);
      if (it == weightMap.end())
        return makeError(indexPath, "missing tensor '" + name +
                                        "': it is not in the weight_map");
      shard = it->second;
    }
    Expected<SafeTensorsFile *> file = getShard(shard);
    if (!file)
      return file.takeError();
    const TensorView *tensor = (*file)->lookup(name);
    if (!tensor)
      return makeError((*file)->getPath(),
                       "missing tensor '" + name + "'" +
                           (isSharded() ? " (the weight_map of " + kIndexFile +
                                              " places it in this shard)"
                                        : Twine()));
    return LocatedTensor{tensor, (*file)->getPath().str()};
  }

private:
  Checkpoint() = default;

  bool isSharded() const { return !indexPath.empty(); }

  std::string pathOf(StringRef fileName) const {
    SmallString<256> path(directory);
    sys::path::append(path, fileName);
    return std::string(path);
  }

  /// Reads the weight map of the index, checking every shard name.
  Error readIndex() {
    ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
        MemoryBuffer::getFile(indexPath, /*IsText=*/true);
    if (!buffer)
      return makeError(indexPath,
                       "cannot read: " + buffer.getError().message());
    Expected<json::Value> parsed = json::parse((*buffer)->getBuffer());
    if (!parsed)
      return makeError(indexPath,
                       "not valid JSON: " + toString(parsed.takeError()));
    const json::Object *root = parsed->getAsObject();
    const json::Object *map = root ? root->getObject("weight_map") : nullptr;
    if (!map)
      return makeError(indexPath, "missing object 'weight_map'");
    for (const auto &[key, value] : *map) {
      std::optional<StringRef> shard = value.getAsString();
      if (!shard)
        return makeError(indexPath, "weight_map entry '" + key.str() +
                                        "' is not a string");
      // A shard must be a plain file of this directory: no path separators,
      // no "." or "..", nothing that could leave the directory.
      if (shard->empty() || *shard == "." || *shard == ".." ||
          shard->contains('/') || shard->contains('\\') ||
          shard->contains('\0'))
        return makeError(indexPath,
                         "weight_map entry '" + key.str() + "' names shard '" +
                             *shard +
                             "', which is not a plain file name inside the "
                             "model directory");
      weightMap[key.str()] = shard->str();
    }
    return Error::success();
  }

  /// The shard called `fileName`, opened (once) on first use.
  Expected<SafeTensorsFile *> getShard(StringRef fileName) {
    auto it = shards.find(fileName);
    if (it != shards.end())
      return it->second.get();
    Expected<SafeTensorsFile> file = SafeTensorsFile::open(pathOf(fileName));
    if (!file)
      return file.takeError();
    auto owned = std::make_unique<SafeTensorsFile>(std::move(*file));
    SafeTensorsFile *result = owned.get();
    shards[fileName] = std::move(owned);
    return result;
  }

  std::string directory;
  std::string indexPath; ///< empty for a single-file checkpoint
  StringMap<std::string> weightMap;
  StringMap<std::unique_ptr<SafeTensorsFile>> shards;
};

//===----------------------------------------------------------------------===//
// Weight loading
//===----------------------------------------------------------------------===//

/// Gathers the float tensors of one layer and copies them into the packed
/// buffers. `add` validates a tensor (presence, dtype, shape) without
/// touching its data; `finish` then sizes every buffer and converts. So no
/// buffer is allocated before every tensor it receives has been checked, and
/// a corrupt config cannot request more memory than the checkpoint holds.
class PackedLoader {
public:
  explicit PackedLoader(Checkpoint &checkpoint) : checkpoint(checkpoint) {}

  /// Checks float tensor `name` against `shape`; `finish` copies it to
  /// `target` from element `offset` on.
  Error add(StringRef name, ArrayRef<int64_t> shape,
            std::vector<float> &target, int64_t offset) {
    Expected<LocatedTensor> found = checkpoint.find(name);
    if (!found)
      return found.takeError();
    const TensorView &tensor = *found->tensor;
    if (!isFloatDType(tensor.dtype))
      return makeError(found->file,
                       "tensor '" + name + "' has dtype " +
                           getDTypeName(tensor.dtype) +
                           ", expected a float dtype (F32, F16, BF16 or F64)");
    if (ArrayRef<int64_t>(tensor.shape) != shape)
      return makeError(found->file, "tensor '" + name + "' has shape " +
                                        shapeToString(tensor.shape) +
                                        ", expected " + shapeToString(shape));
    copies.push_back({&tensor, std::move(found->file), &target, offset});
    return Error::success();
  }

  /// Sizes every target to cover its copies and converts the tensors.
  Error finish() {
    for (const Copy &copy : copies) {
      size_t end = copy.offset + copy.tensor->getNumElements();
      if (copy.target->size() < end)
        copy.target->resize(end);
    }
    for (const Copy &copy : copies) {
      Expected<std::vector<float>> values = copy.tensor->toF32();
      if (!values)
        return makeError(copy.file, toString(values.takeError()));
      std::copy(values->begin(), values->end(),
                copy.target->begin() + copy.offset);
    }
    copies.clear();
    return Error::success();
  }

private:
  struct Copy {
    const TensorView *tensor;
    std::string file;
    std::vector<float> *target;
    int64_t offset;
  };
  Checkpoint &checkpoint;
  std::vector<Copy> copies;
};

/// Reads the integer hash table `name` of `length` entries as int32.
Error readHashTable(Checkpoint &checkpoint, StringRef name, int64_t length,
                    std::vector<int32_t> &out) {
  Expected<LocatedTensor> found = checkpoint.find(name);
  if (!found)
    return found.takeError();
  const TensorView &tensor = *found->tensor;
  if (!isIntegerDType(tensor.dtype))
    return makeError(found->file,
                     "tensor '" + name + "' has dtype " +
                         getDTypeName(tensor.dtype) +
                         ", expected an integer dtype (I64, I32, I16, I8 or "
                         "U8)");
  if (tensor.shape != std::vector<int64_t>{length})
    return makeError(found->file, "tensor '" + name + "' has shape " +
                                      shapeToString(tensor.shape) +
                                      ", expected " +
                                      shapeToString({length}));
  Expected<std::vector<int64_t>> values = tensor.toI64();
  if (!values)
    return makeError(found->file, toString(values.takeError()));
  out.resize(values->size());
  for (auto [i, value] : llvm::enumerate(*values)) {
    if (value < std::numeric_limits<int32_t>::min() ||
        value > std::numeric_limits<int32_t>::max())
      return makeError(found->file, "tensor '" + name + "' entry " + Twine(i) +
                                        " is " + Twine(value) +
                                        ", outside the int32 range");
    out[i] = static_cast<int32_t>(value);
  }
  return Error::success();
}

/// Where the tensors of one MoE layer live. Names are complete except the
/// per-expert ones: `block + expertStem + e + "." + proj + ".weight"`.
struct TensorNames {
  std::string block;         ///< prefix of the layer's tensors
  std::string router;        ///< "" for hash layers
  std::string selectionBias; ///< "" when the router has none
  std::string hashTable;     ///< "" unless hash
  std::string expertStem;    ///< "experts." or "experts.expert_"
  /// Projections: gate/up/down for SwiGLU; for GELU/ReLU experts `gateProj`
  /// is the first matrix (wi) and `downProj` the second (wo).
  std::string gateProj, upProj, downProj;
  /// HF-5 fused form (mixtral, qwen, deepseek, olmoe): its block prefix,
  /// "" when the family has no such form.
  std::string fusedBlock;
  std::string sharedStem; ///< prefix of shared_expert(s).{gate,up,down}_proj
  std::string sharedGate; ///< "" when ungated

  std::string expert(int64_t e, StringRef proj) const {
    return block + expertStem + std::to_string(e) + "." + proj.str() +
           ".weight";
  }
};

TensorNames getTensorNames(StringRef modelType, const LayerSpec &spec) {
  TensorNames names;
  std::string layer = std::to_string(spec.layerIndex);
  names.expertStem = "experts.";
  names.gateProj = "gate_proj";
  names.upProj = "up_proj";
  names.downProj = "down_proj";
  if (modelType == "mixtral") {
    names.block = "model.layers." + layer + ".block_sparse_moe.";
    names.fusedBlock = "model.layers." + layer + ".mlp.";
    names.gateProj = "w1";
    names.upProj = "w3";
    names.downProj = "w2";
  } else if (modelType == "switch_transformers") {
    names.block = "encoder.block." + layer + ".layer.1.mlp.";
    names.expertStem = "experts.expert_";
  } else if (modelType.starts_with("moe_")) {
    names.block = "layers." + layer + ".";
  } else {
    names.block = "model.layers." + layer + ".mlp.";
    names.fusedBlock = names.block;
  }

  if (modelType == "switch_transformers")
    names.router = names.block + "router.classifier.weight";
  else if (spec.router.family != RouterFamily::Hash)
    names.router = names.block + "gate.weight";
  if (spec.router.family == RouterFamily::Hash)
    names.hashTable = names.block + "hash_table";
  if (spec.router.selectionBias)
    names.selectionBias = names.block + "gate.e_score_correction_bias";
  if (spec.activation != ExpertActivation::SiluGlu) {
    names.gateProj = "wi";
    names.downProj = "wo";
  }
  if (modelType == "qwen2_moe") {
    names.sharedStem = names.block + "shared_expert.";
    names.sharedGate = names.block + "shared_expert_gate.weight";
  } else if (modelType.starts_with("deepseek")) {
    names.sharedStem = names.block + "shared_experts.";
  }
  return names;
}

Expected<LayerWeights> loadLayer(Checkpoint &checkpoint, StringRef modelType,
                                 const LayerSpec &spec) {
  TensorNames names = getTensorNames(modelType, spec);
  const int64_t d = spec.hidden, f = spec.ffn, e = spec.numExperts;
  const bool glu = spec.activation == ExpertActivation::SiluGlu;
  const int64_t firstRows = spec.firstRows();
  LayerWeights weights;
  PackedLoader loader(checkpoint);

  // Use the HF-5 fused form when the checkpoint has it.
  bool fused = !names.fusedBlock.empty() &&
               checkpoint.contains(names.fusedBlock + "experts.gate_up_proj");
  if (fused && names.fusedBlock != names.block) {
    names.router = names.fusedBlock + "gate.weight";
    names.block = names.fusedBlock;
  }

  if (!names.router.empty())
    if (Error error = loader.add(names.router, {spec.routerRows(), d},
                                 weights.gate, 0))
      return std::move(error);
  if (!names.selectionBias.empty())
    if (Error error =
            loader.add(names.selectionBias, {e}, weights.selectionBias, 0))
      return std::move(error);
  if (!names.hashTable.empty())
    if (Error error = readHashTable(checkpoint, names.hashTable,
                                    spec.hashVocab, weights.hashTable))
      return std::move(error);

  if (fused) {
    // gate_up_proj[e] = cat(gate, up) is exactly the packed w1 layout.
    if (Error error = loader.add(names.block + "experts.gate_up_proj",
                                 {e, 2 * f, d}, weights.w1, 0))
      return std::move(error);
    if (Error error = loader.add(names.block + "experts.down_proj", {e, d, f},
                                 weights.w2, 0))
      return std::move(error);
  } else {
    for (int64_t expert = 0; expert < e; ++expert) {
      // w1[expert] = gate rows then up rows (SwiGLU), or wi; w2[expert] =
      // down / wo.
      int64_t first = expert * firstRows * d;
      if (Error error = loader.add(names.expert(expert, names.gateProj),
                                   {f, d}, weights.w1, first))
        return std::move(error);
      if (glu)
        if (Error error = loader.add(names.expert(expert, names.upProj),
                                     {f, d}, weights.w1, first + f * d))
          return std::move(error);
      if (Error error = loader.add(names.expert(expert, names.downProj),
                                   {d, f}, weights.w2, expert * d * f))
        return std::move(error);
    }
  }

  if (spec.sharedFfn > 0) {
    // The shared experts of the supported families are SwiGLU FFNs.
    const int64_t fs = spec.sharedFfn;
    if (Error error = loader.add(names.sharedStem + "gate_proj.weight",
                                 {fs, d}, weights.sharedW1, 0))
      return std::move(error);
    if (Error error = loader.add(names.sharedStem + "up_proj.weight", {fs, d},
                                 weights.sharedW1, fs * d))
      return std::move(error);
    if (Error error = loader.add(names.sharedStem + "down_proj.weight",
                                 {d, fs}, weights.sharedW2, 0))
      return std::move(error);
    if (spec.sharedGate)
      if (Error error =
              loader.add(names.sharedGate, {1, d}, weights.sharedGate, 0))
        return std::move(error);
  }
  if (Error error = loader.finish())
    return std::move(error);
  return weights;
}

} // namespace

//===----------------------------------------------------------------------===//
// Public API
//===----------------------------------------------------------------------===//

Expected<std::vector<LayerSpec>>
mlir::moe::frontend::parseModelConfig(StringRef json, StringRef source) {
  Expected<ParsedConfig> config = parseConfig(json, source);
  if (!config)
    return config.takeError();
  return std::move(config->layers);
}

Expected<ImportedModel>
mlir::moe::frontend::importModel(StringRef directory,
                                 std::optional<int64_t> onlyLayer) {
  SmallString<256> configPath(directory);
  sys::path::append(configPath, "config.json");
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(configPath, /*IsText=*/true);
  if (!buffer)
    return makeError(configPath,
                     "cannot read: " + buffer.getError().message());
  Expected<ParsedConfig> config =
      parseConfig((*buffer)->getBuffer(), configPath);
  if (!config)
    return config.takeError();

  ImportedModel model;
  model.modelType = config->modelType;
  model.directory = directory.str();
  if (onlyLayer) {
    auto it = llvm::find_if(config->layers, [&](const LayerSpec &spec) {
      return spec.layerIndex == *onlyLayer;
    });
    if (it == config->layers.end()) {
      std::vector<int64_t> moeLayers;
      for (const LayerSpec &spec : config->layers)
        moeLayers.push_back(spec.layerIndex);
      return makeError(configPath,
                       "layer " + Twine(*onlyLayer) +
                           " is not an MoE layer of this " +
                           config->modelType + " model (" +
                           Twine(config->numLayers) +
                           " layers; MoE layers: " + joinIndices(moeLayers) +
                           ")");
    }
    model.layers.push_back(std::move(*it));
  } else {
    model.layers = std::move(config->layers);
  }

  Expected<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::open(directory);
  if (!checkpoint)
    return checkpoint.takeError();
  for (const LayerSpec &spec : model.layers) {
    Expected<LayerWeights> weights =
        loadLayer(**checkpoint, model.modelType, spec);
    if (!weights)
      return weights.takeError();
    model.weights.push_back(std::move(*weights));
  }
  return model;
}

void mlir::moe::frontend::setExpertWeights(ImportedModel &model,
                                           WeightType type, bool keepF32) {
  for (LayerSpec &spec : model.layers)
    spec.expertWeights = type;
  if (type == WeightType::BF16)
    for (LayerWeights &w : model.weights)
      convertExpertWeightsToBF16(w, keepF32);
}
