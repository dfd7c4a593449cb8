//===- Reference.h - Naive reference implementation of an MoE block -*- C++ -*-===//
//
// A deliberately simple, scalar, MLIR-free implementation of every routing
// policy and expert form of the `moe` dialect. It shares no code with the
// compiler and exists to check it (differential tests, moe-run).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_REFERENCE_REFERENCE_H
#define MOE_REFERENCE_REFERENCE_H

#include "moe/Frontend/LayerSpec.h"

#include <cstdint>
#include <vector>

namespace mlir::moe::reference {

struct Inputs {
  const float *x = nullptr; ///< [T, d]
  int64_t numTokens = 0;
  const int64_t *tokenIds = nullptr; ///< [T], hash family only
  /// CSR token boundaries of capacity groups of kind `request` (G + 1
  /// entries, 0 .. T). Sequence groups come from spec.sequenceLength.
  std::vector<int32_t> groups;
  /// Optional [T, E + null] router logits to use instead of x . gate^T (+
  /// bias). Differential tests pass the compiled logits here so routing is
  /// compared on identical inputs: f32 vs double dot products differ by
  /// ~1e-6, enough to flip rare near-ties.
  const float *logits = nullptr;
};

struct Result {
  std::vector<float> output;   ///< [T, d]
  std::vector<float> logits;   ///< [T, E + null] (empty for hash)
  std::vector<int32_t> indices; ///< [T, K] route slots (-1 empty)
  /// [T, K] the router's choices before capacity (what `moe.route`
  /// returns). Equal to `indices` except for slots moved by
  /// `overflow = reroute`, whose `indices` entry names the new expert.
  std::vector<int32_t> routeIndices;
  std::vector<float> weights;   ///< [T, K] route weights (0 for empty)
  std::vector<int32_t> rows;    ///< [T, K]: >= 0 computed, -1 nothing, -2 passthrough
  std::vector<int32_t> load;    ///< [E] slots per expert, before capacity
  /// E * sum_e f_e * P_e with P = softmax over all E + null columns, read at
  /// e < E, and f_e from `routeIndices`; averaged over the capacity groups
  /// when capacity is enabled (one group otherwise). 0 for hash.
  float auxLoss = 0.0f;
  float zLoss = 0.0f;           ///< mean logsumexp(logits)^2; 0 for hash
  bool sawNaN = false;          ///< some logit was NaN (treated as -inf)
  /// hash: some token id was outside [0, len(table)) (its slot is -1).
  bool sawBadTokenId = false;
};

/// Runs one MoE block on `inputs` exactly as docs/dialect.md sections 3 to 6
/// define it. Malformed inputs (weight sizes that do not match `spec`, bad
/// group boundaries, missing token ids) abort with a message on stderr.
Result run(const frontend::LayerSpec &spec, const frontend::LayerWeights &w,
           const Inputs &inputs);

} // namespace mlir::moe::reference

#endif // MOE_REFERENCE_REFERENCE_H
