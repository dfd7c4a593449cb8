//===- LayerSpec.h - A plain description of one MoE layer -------*- C++ -*-===//
//
// The model importer, the IR builder and the naive reference implementation
// all speak this one MLIR-free description of an MoE block: its shapes, its
// routing policy and its weights in the packed layouts the `moe` dialect
// uses. Field meanings follow `#moe.router` and `moe.layer` exactly (see
// docs/dialect.md).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTEND_LAYERSPEC_H
#define MOE_FRONTEND_LAYERSPEC_H

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe::frontend {

enum class RouterFamily { TopK, TopP, ExpertChoice, Hash, Balanced };
enum class Scoring { Softmax, Sigmoid };
enum class ExpertActivation { SiluGlu, Gelu, Relu };
enum class CapacityGroupKind { Batch, Sequence, Request };
enum class Overflow { Drop, Passthrough, Reroute };
/// Precision of the expert weights (w1, w2 and the shared expert's). The
/// router, its biases, the tokens and the outputs stay f32. With bf16, the
/// expert GEMMs round both operands (tokens or hidden activations, and
/// weights) to bf16 to nearest even and sum the products in f32.
enum class WeightType { F32, BF16 };

/// Expert capacity (token-choice families only). Exactly one of `factor`
/// (> 0) and `absolute` (>= 1) is set when `enabled`.
struct CapacitySpec {
  bool enabled = false;
  double factor = 0.0;
  int64_t absolute = 0;
  CapacityGroupKind group = CapacityGroupKind::Batch;
  Overflow overflow = Overflow::Drop;
};

struct RouterSpec {
  RouterFamily family = RouterFamily::TopK;
  // topk
  int64_t k = 1;
  Scoring scoring = Scoring::Softmax;
  bool renormalize = false;
  double scale = 1.0;
  bool selectionBias = false; ///< scores + bias select, unbiased scores weigh
  int64_t nGroup = 0;         ///< 0: no group-limited routing
  int64_t topkGroup = 0;
  bool softmaxAfter = false; ///< softmax over the k selected logits
  // top_p (k holds k_max)
  double p = 0.0;
  // expert_choice
  double capacityFactor = 0.0;
  // every family but expert_choice
  int64_t nullExperts = 0;
  CapacitySpec capacity;
};

/// Shapes and policy of one MoE block. Tokens are rows of width `hidden`.
struct LayerSpec {
  std::string name; ///< symbol-friendly, e.g. "layer0"
  int64_t layerIndex = 0;
  int64_t hidden = 0;
  int64_t ffn = 0; ///< per-expert intermediate width F
  int64_t numExperts = 0;
  RouterSpec router;
  ExpertActivation activation = ExpertActivation::SiluGlu;
  bool gateBias = false;   ///< logit bias on the router [E + null]
  int64_t sharedFfn = 0;   ///< 0: no shared expert
  bool sharedGate = false; ///< shared output scaled by sigmoid(x . g)
  int64_t hashVocab = 0;   ///< hash family: table length
  /// Tokens per sequence when capacity groups are sequences (0: unknown,
  /// given at run time).
  int64_t sequenceLength = 0;
  WeightType expertWeights = WeightType::F32;

  /// Routing slots per token: k (topk), k_max (top_p), E (expert_choice),
  /// 1 (hash, balanced).
  int64_t numSlots() const;
  /// Rows of the router weight: E + null experts (0 for hash).
  int64_t routerRows() const;
  /// Rows of each expert's first matrix: 2F for SwiGLU, F otherwise.
  int64_t firstRows() const;
};

/// Weights in the packed layouts of `moe.layer`, all row-major f32.
struct LayerWeights {
  std::vector<float> gate;          ///< [E + null, d]   (empty for hash)
  std::vector<float> gateBias;      ///< [E + null]      (optional)
  std::vector<float> selectionBias; ///< [E]             (topk ... bias)
  std::vector<int32_t> hashTable;   ///< [vocab]         (hash)
  std::vector<float> w1;            ///< [E, 2F or F, d] (gate rows, then up)
  std::vector<float> w2;            ///< [E, d, F]
  std::vector<float> sharedW1;      ///< [2Fs or Fs, d]  (optional)
  std::vector<float> sharedW2;      ///< [d, Fs]
  std::vector<float> sharedGate;    ///< [1, d]          (optional)
  /// For bf16 expert weights: w1, w2, sharedW1 and sharedW2 as bf16 bits
  /// (see convertExpertWeightsToBF16). The compiled layer reads these; the
  /// f32 arrays may then be dropped.
  std::vector<uint16_t> w1BF16, w2BF16, sharedW1BF16, sharedW2BF16;
};

/// `value` rounded to bf16 to nearest even (NaN stays a quiet NaN).
uint16_t toBF16(float value);
/// The f32 value of bf16 bits (exact).
float fromBF16(uint16_t bits);
/// Fills the bf16 arrays of `w` from its f32 expert weights; without
/// `keepF32`, the f32 expert arrays are released afterwards.
void convertExpertWeightsToBF16(LayerWeights &w, bool keepF32 = true);
/// "f32" or "bf16"; parseWeightType returns false for any other name.
const char *getWeightTypeName(WeightType type);
bool parseWeightType(const std::string &name, WeightType &type);

} // namespace mlir::moe::frontend

#endif // MOE_FRONTEND_LAYERSPEC_H
