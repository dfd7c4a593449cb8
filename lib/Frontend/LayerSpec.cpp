//===- LayerSpec.cpp - Derived sizes of an MoE layer description ----------===//

#include "moe/Frontend/LayerSpec.h"

#include <cmath>
#include <cstring>

using namespace mlir::moe::frontend;

int64_t LayerSpec::numSlots() const {
  switch (router.family) {
  case RouterFamily::TopK:
  case RouterFamily::TopP:
    return router.k;
  case RouterFamily::ExpertChoice:
    return numExperts;
  case RouterFamily::Hash:
  case RouterFamily::Balanced:
    return 1;
  }
  return 1;
}

int64_t LayerSpec::routerRows() const {
  return router.family == RouterFamily::Hash
             ? 0
             : numExperts + router.nullExperts;
}

int64_t LayerSpec::firstRows() const {
  return activation == ExpertActivation::SiluGlu ? 2 * ffn : ffn;
}

uint16_t mlir::moe::frontend::toBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t roundingBias = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + roundingBias) >> 16);
}

float mlir::moe::frontend::fromBF16(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

void mlir::moe::frontend::convertExpertWeightsToBF16(LayerWeights &w,
                                                     bool keepF32) {
  auto convert = [&](std::vector<float> &from, std::vector<uint16_t> &to) {
    to.resize(from.size());
    for (size_t i = 0; i < from.size(); ++i)
      to[i] = toBF16(from[i]);
    if (!keepF32)
      std::vector<float>().swap(from);
  };
  convert(w.w1, w.w1BF16);
  convert(w.w2, w.w2BF16);
  convert(w.sharedW1, w.sharedW1BF16);
  convert(w.sharedW2, w.sharedW2BF16);
}

const char *mlir::moe::frontend::getWeightTypeName(WeightType type) {
  return type == WeightType::BF16 ? "bf16" : "f32";
}

bool mlir::moe::frontend::parseWeightType(const std::string &name,
                                          WeightType &type) {
  if (name == "f32")
    type = WeightType::F32;
  else if (name == "bf16")
    type = WeightType::BF16;
  else
    return false;
  return true;
}
