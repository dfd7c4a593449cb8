//===- ModelImport.h - Hugging Face config + safetensors -> LayerSpec -*- C++ -*-===//
//
// Reads a model directory (config.json plus model.safetensors, or a sharded
// checkpoint with model.safetensors.index.json) and returns one LayerSpec
// and its packed LayerWeights per MoE layer.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTEND_MODELIMPORT_H
#define MOE_FRONTEND_MODELIMPORT_H

#include "moe/Frontend/LayerSpec.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::frontend {

struct ImportedModel {
  std::string modelType;
  std::string directory;
  /// One entry per MoE layer, in increasing layer index.
  std::vector<LayerSpec> layers;
  std::vector<LayerWeights> weights;
};

/// Parses a config.json text into the MoE layers it describes (no weights).
/// `source` names the file in messages.
llvm::Expected<std::vector<LayerSpec>> parseModelConfig(llvm::StringRef json,
                                                        llvm::StringRef source);

/// Imports `directory`. With `onlyLayer`, imports just that MoE layer (by
/// model layer index) and fails if the model has no MoE layer there.
llvm::Expected<ImportedModel>
importModel(llvm::StringRef directory,
            std::optional<int64_t> onlyLayer = std::nullopt);

/// Makes every layer of `model` use expert weights of `type`, converting
/// the weights (bf16: rounded to nearest even; a BF16 checkpoint's values
/// come back exactly). Without `keepF32`, the f32 expert arrays are
/// released once converted.
void setExpertWeights(ImportedModel &model, WeightType type,
                      bool keepF32 = true);

} // namespace mlir::moe::frontend

#endif // MOE_FRONTEND_MODELIMPORT_H
