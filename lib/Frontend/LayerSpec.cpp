//===- LayerSpec.cpp - Derived sizes of an MoE layer description ----------===//

#include "moe/Frontend/LayerSpec.h"

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
