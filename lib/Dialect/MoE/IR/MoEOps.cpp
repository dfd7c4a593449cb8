//===- MoEOps.cpp - moe dialect operations --------------------------------===//
//
// Verifiers, folders and canonicalization patterns of the moe operations.
// Every diagnostic says what was expected and what was found.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Shape-check helpers
//===----------------------------------------------------------------------===//

static std::string dimToString(int64_t dim) {
  return ShapedType::isDynamic(dim) ? "?" : std::to_string(dim);
}

/// Dynamic sizes are checked at run time; two static sizes must agree.
static bool dimsAgree(int64_t found, int64_t expected) {
  return ShapedType::isDynamic(found) || ShapedType::isDynamic(expected) ||
         found == expected;
}

static LogicalResult expectDim(Operation *op, const Twine &what, int64_t found,
                               int64_t expected) {
  if (dimsAgree(found, expected))
    return success();
  return op->emitOpError() << "expected " << what << " to be "
                           << dimToString(expected) << ", found "
                           << dimToString(found);
}

static int64_t dim(Value value, unsigned index) {
  return cast<ShapedType>(value.getType()).getDimSize(index);
}

static Type elementType(Value value) {
  return cast<ShapedType>(value.getType()).getElementType();
}

static LogicalResult expectElementType(Operation *op, const Twine &what,
                                       Value value, Type expected) {
  Type found = elementType(value);
  if (found == expected)
    return success();
  return op->emitOpError() << "expected " << what << " element type "
                           << expected << ", found " << found;
}

/// Product of two sizes, dynamic if either is.
static int64_t mulDims(int64_t a, int64_t b) {
  if (ShapedType::isDynamic(a) || ShapedType::isDynamic(b))
    return ShapedType::kDynamic;
  return a * b;
}

static int64_t addDims(int64_t a, int64_t b) {
  if (ShapedType::isDynamic(a) || ShapedType::isDynamic(b))
    return ShapedType::kDynamic;
  return a + b;
}

static bool needsGroupBoundaries(CapacityAttr capacity) {
  return capacity && capacity.getGroup() != CapacityGroup::batch;
}

//===----------------------------------------------------------------------===//
// GateOp
//===----------------------------------------------------------------------===//

LogicalResult GateOp::verify() {
  Operation *op = getOperation();
  if (failed(expectDim(op, "weight dim 1 (hidden size d)", dim(getWeight(), 1),
                       dim(getInput(), 1))) ||
      failed(expectDim(op, "result dim 0 (tokens)", dim(getLogits(), 0),
                       dim(getInput(), 0))) ||
      failed(expectDim(op, "result dim 1 (router rows)", dim(getLogits(), 1),
                       dim(getWeight(), 0))) ||
      failed(expectElementType(op, "result", getLogits(),
                               elementType(getInput()))))
    return failure();
  if (getBias() && failed(expectDim(op, "bias length (router rows)",
                                    dim(getBias(), 0), dim(getWeight(), 0))))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// RouteOp
//===----------------------------------------------------------------------===//

LogicalResult RouteOp::verify() {
  Operation *op = getOperation();
  RouterAttr router = getRouter();
  int64_t numExperts = getNumExperts();
  StringRef family = stringifyRouterKind(router.getKind());
  if (failed(router.verifyForNumExperts([&] { return emitOpError(); },
                                        numExperts)))
    return failure();

  if (router.needsLogits() != static_cast<bool>(getLogits()))
    return emitOpError() << "the '" << family << "' router "
                         << (router.needsLogits() ? "needs" : "takes no")
                         << " logits";
  bool isHash = router.getKind() == RouterKind::hash;
  if (isHash != static_cast<bool>(getTokenIds()) ||
      isHash != static_cast<bool>(getTable()))
    return emitOpError() << (isHash ? "the 'hash' router needs both "
                                      "token_ids and table"
                                    : "token_ids and table are only used by "
                                      "the 'hash' router");
  if (router.getBias() != static_cast<bool>(getBias()))
    return emitOpError() << (router.getBias()
                                 ? "the router's 'bias' option needs a bias "
                                   "operand"
                                 : "a bias operand needs the router's 'bias' "
                                   "option");
  if (getBias() && failed(expectDim(op, "bias length (routed experts)",
                                    dim(getBias(), 0), numExperts)))
    return failure();

  Value tokenSource = getLogits() ? getLogits() : getTokenIds();
  int64_t numTokens = dim(tokenSource, 0);
  if (getLogits() &&
      failed(expectDim(op, "logits dim 1 (routed + null experts)",
                       dim(getLogits(), 1),
                       numExperts + router.getNullExperts())))
    return failure();

  int64_t slots = router.getNumSlots(numExperts);
  if (failed(expectDim(op, "indices dim 0 (tokens)", dim(getIndices(), 0),
                       numTokens)) ||
      failed(expectDim(op, "indices dim 1 (slots per token)",
                       dim(getIndices(), 1), slots)) ||
      failed(expectDim(op, "weights dim 0 (tokens)", dim(getWeights(), 0),
                       numTokens)) ||
      failed(expectDim(op, "weights dim 1 (slots per token)",
                       dim(getWeights(), 1), slots)))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// DispatchPlanOp
//===----------------------------------------------------------------------===//

LogicalResult DispatchPlanOp::verify() {
  Operation *op = getOperation();
  int64_t numExperts = getNumExperts();
  int64_t numTokens = dim(getIndices(), 0);
  int64_t slots = dim(getIndices(), 1);
  if (failed(expectDim(op, "perm length (tokens x slots)", dim(getPerm(), 0),
                       mulDims(numTokens, slots))) ||
      failed(expectDim(op, "offsets length (experts + 1)", dim(getOffsets(), 0),
                       numExperts + 1)) ||
      failed(expectDim(op, "rows dim 0 (tokens)", dim(getRows(), 0),
                       numTokens)) ||
      failed(expectDim(op, "rows dim 1 (slots per token)", dim(getRows(), 1),
                       slots)))
    return failure();

  CapacityAttr capacity = getCapacityAttr();
  bool reroute =
      capacity && capacity.getOverflow() == OverflowPolicy::reroute;
  if (reroute && !getScores())
    return emitOpError() << "overflow = reroute needs a 'scores' operand to "
                            "rank alternative experts";
  if (!reroute && getScores())
    return emitOpError() << "'scores' is only used by overflow = reroute";
  if (getScores()) {
    if (failed(expectDim(op, "scores dim 0 (tokens)", dim(getScores(), 0),
                         numTokens)))
      return failure();
    int64_t columns = dim(getScores(), 1);
    if (!ShapedType::isDynamic(columns) && columns < numExperts)
      return emitOpError() << "expected scores dim 1 to cover the "
                           << numExperts << " experts, found " << columns;
  }
  if (needsGroupBoundaries(capacity) && !getGroups())
    return emitOpError() << "capacity counted per '"
                         << stringifyCapacityGroup(capacity.getGroup())
                         << "' needs a 'groups' operand with the group "
                            "boundaries";
  if (!needsGroupBoundaries(capacity) && getGroups())
    return emitOpError() << "'groups' is only used by capacity counted per "
                            "sequence or request";
  return success();
}

namespace {
/// Removes a capacity that can never bind (every expert could serve every
/// slot of the largest possible group), together with the operands that only
/// the capacity used.
struct DropUnboundCapacity : public OpRewritePattern<DispatchPlanOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DispatchPlanOp op,
                                PatternRewriter &rewriter) const override {
    CapacityAttr capacity = op.getCapacityAttr();
    if (!capacity)
      return failure();
    int64_t slots = dim(op.getIndices(), 1);
    if (ShapedType::isDynamic(slots) ||
        !capacity.neverBinds(dim(op.getIndices(), 0), slots,
                             op.getNumExperts()))
      return failure();
    rewriter.replaceOpWithNewOp<DispatchPlanOp>(
        op, op.getResultTypes(), op.getIndices(), /*scores=*/Value(),
        /*groups=*/Value(), op.getNumExpertsAttr(), CapacityAttr());
    return success();
  }
};
} // namespace

void DispatchPlanOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                                 MLIRContext *context) {
  results.add<DropUnboundCapacity>(context);
}

//===----------------------------------------------------------------------===//
// GroupedMatmulOp
//===----------------------------------------------------------------------===//

LogicalResult GroupedMatmulOp::verify() {
  Operation *op = getOperation();
  int64_t numExperts = getNumExperts();
  if (failed(expectDim(op, "weight dim 2 (input features)",
                       dim(getWeight(), 2), dim(getInput(), 1))) ||
      failed(expectDim(op, "offsets length (experts + 1)",
                       dim(getOffsets(), 0), addDims(numExperts, 1))) ||
      failed(expectElementType(op, "result", getResult(),
                               elementType(getInput()))))
    return failure();

  int64_t rows = getGather() ? dim(getGather(), 0) : dim(getInput(), 0);
  if (failed(expectDim(op,
                       getGather() ? "result dim 0 (gathered rows)"
                                   : "result dim 0 (input rows)",
                       dim(getResult(), 0), rows)))
    return failure();

  Epilogue epilogue = getEpilogue();
  int64_t weightRows = dim(getWeight(), 1);
  int64_t columns = weightRows;
  if (epilogue == Epilogue::silu_glu && !ShapedType::isDynamic(weightRows)) {
    if (weightRows % 2 != 0)
      return emitOpError() << "epilogue silu_glu expects an even number of "
                              "weight rows (gate then up), found "
                           << weightRows;
    columns = weightRows / 2;
  } else if (epilogue == Epilogue::silu_glu) {
    columns = ShapedType::kDynamic;
  }
  if (failed(expectDim(op,
                       epilogue == Epilogue::silu_glu
                           ? "result dim 1 (half the weight rows)"
                           : "result dim 1 (weight rows)",
                       dim(getResult(), 1), columns)))
    return failure();

  bool wantsScale = epilogue == Epilogue::scale;
  if (wantsScale && !getRowScale())
    return emitOpError() << "epilogue 'scale' needs a row_scale operand";
  if (!wantsScale && getRowScale())
    return emitOpError() << "row_scale is only used by the 'scale' epilogue, "
                            "found epilogue '"
                         << stringifyEpilogue(epilogue) << "'";
  if (getRowScale() &&
      failed(expectDim(op, "row_scale length (result rows)",
                       dim(getRowScale(), 0), dim(getResult(), 0))))
    return failure();
  return success();
}

namespace {
/// `scale` by a splat 1.0 is the identity epilogue.
struct DropUnitRowScale : public OpRewritePattern<GroupedMatmulOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(GroupedMatmulOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getEpilogue() != Epilogue::scale)
      return failure();
    DenseFPElementsAttr scale;
    if (!matchPattern(op.getRowScale(), m_Constant(&scale)) ||
        !scale.isSplat() || !scale.getSplatValue<APFloat>().isExactlyValue(1.0))
      return failure();
    rewriter.replaceOpWithNewOp<GroupedMatmulOp>(
        op, op.getType(), op.getInput(), op.getWeight(), op.getOffsets(),
        op.getGather(), /*row_scale=*/Value(),
        EpilogueAttr::get(op.getContext(), Epilogue::none));
    return success();
  }
};
} // namespace

void GroupedMatmulOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                                  MLIRContext *context) {
  results.add<DropUnitRowScale>(context);
}

//===----------------------------------------------------------------------===//
// CombineOp
//===----------------------------------------------------------------------===//

LogicalResult CombineOp::verify() {
  Operation *op = getOperation();
  if (failed(expectDim(op, "rows dim 0 (tokens)", dim(getRows(), 0),
                       dim(getWeights(), 0))) ||
      failed(expectDim(op, "rows dim 1 (slots per token)", dim(getRows(), 1),
                       dim(getWeights(), 1))) ||
      failed(expectDim(op, "result dim 0 (tokens)", dim(getResult(), 0),
                       dim(getWeights(), 0))) ||
      failed(expectDim(op, "result dim 1 (columns)", dim(getResult(), 1),
                       dim(getInput(), 1))) ||
      failed(expectElementType(op, "result", getResult(),
                               elementType(getInput()))))
    return failure();
  if (Value x = getPassthrough()) {
    if (failed(expectDim(op, "passthrough dim 0 (tokens)", dim(x, 0),
                         dim(getWeights(), 0))) ||
        failed(expectDim(op, "passthrough dim 1 (columns)", dim(x, 1),
                         dim(getInput(), 1))) ||
        failed(expectElementType(op, "passthrough", x,
                                 elementType(getInput()))))
      return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertsOp::verifyRegions() {
  Operation *op = getOperation();
  int64_t numExperts = addDims(dim(getOffsets(), 0), -1);
  if (failed(expectDim(op, "result dim 0 (input rows)", dim(getResult(), 0),
                       dim(getInput(), 0))) ||
      failed(expectElementType(op, "result", getResult(),
                               elementType(getInput()))))
    return failure();

  Block &body = getBody().front();
  size_t expectedArgs = 2 + getWeights().size();
  if (body.getNumArguments() != expectedArgs)
    return emitOpError() << "expected the body to take " << expectedArgs
                         << " arguments (expert index, rows, one slice per "
                            "weight), found "
                         << body.getNumArguments();
  if (!body.getArgument(0).getType().isIndex())
    return emitOpError() << "expected body argument #0 (expert index) to be "
                            "index, found "
                         << body.getArgument(0).getType();

  auto inputType = cast<RankedTensorType>(getInput().getType());
  auto rowsType =
      RankedTensorType::get({ShapedType::kDynamic, inputType.getDimSize(1)},
                            inputType.getElementType());
  if (body.getArgument(1).getType() != rowsType)
    return emitOpError() << "expected body argument #1 (rows) to be "
                         << rowsType << ", found "
                         << body.getArgument(1).getType();

  for (auto [index, weight] : llvm::enumerate(getWeights())) {
    auto type = cast<RankedTensorType>(weight.getType());
    if (type.getRank() < 1)
      return emitOpError() << "expected weight #" << index
                           << " to have a leading expert dimension, found "
                           << type;
    if (failed(expectDim(op, "weight #" + Twine(index) + " dim 0 (experts)",
                         type.getDimSize(0), numExperts)))
      return failure();
    auto sliceType = RankedTensorType::get(type.getShape().drop_front(),
                                           type.getElementType());
    Type argType = body.getArgument(2 + index).getType();
    if (argType != sliceType)
      return emitOpError() << "expected body argument #" << 2 + index
                           << " (slice of weight #" << index << ") to be "
                           << sliceType << ", found " << argType;
  }

  auto yield = cast<YieldOp>(body.getTerminator());
  auto resultType = cast<RankedTensorType>(getResult().getType());
  auto yieldType = cast<RankedTensorType>(yield.getValue().getType());
  auto expectedYield =
      RankedTensorType::get({ShapedType::kDynamic, resultType.getDimSize(1)},
                            resultType.getElementType());
  if (yieldType.getElementType() != resultType.getElementType() ||
      !dimsAgree(yieldType.getDimSize(1), resultType.getDimSize(1)))
    return emitOpError() << "expected the body to yield " << expectedYield
                         << ", found " << yieldType;
  return success();
}

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

LogicalResult LayerOp::verify() {
  Operation *op = getOperation();
  RouterAttr router = getRouter();
  StringRef family = stringifyRouterKind(router.getKind());
  auto inputType = cast<RankedTensorType>(getInput().getType());
  int64_t hidden = getHiddenSize();
  int64_t numExperts = getNumExperts();
  int64_t ffn = getFfnSize();
  bool glu = getActivation() == Activation::silu_glu;
  int64_t numTokens = inputType.getRank() == 2
                          ? inputType.getDimSize(0)
                          : mulDims(inputType.getDimSize(0),
                                    inputType.getDimSize(1));

  if (getResult().getType() != inputType)
    return emitOpError() << "expected the result type to equal the input type "
                         << inputType << ", found " << getResult().getType();

  // Expert weights.
  if (ShapedType::isDynamic(numExperts))
    return emitOpError() << "expected a static number of experts (w1 dim 0)";
  if (failed(expectDim(op, "w1 dim 2 (hidden size)", dim(getW1(), 2),
                       hidden)) ||
      failed(expectDim(op, "w2 dim 0 (experts)", dim(getW2(), 0),
                       numExperts)) ||
      failed(expectDim(op, "w2 dim 1 (hidden size)", dim(getW2(), 1),
                       hidden)) ||
      failed(expectDim(op,
                       glu ? "w1 dim 1 (gate and up rows, 2 x ffn)"
                           : "w1 dim 1 (ffn)",
                       dim(getW1(), 1), glu ? mulDims(2, ffn) : ffn)))
    return failure();

  if (failed(router.verifyForNumExperts([&] { return emitOpError(); },
                                        numExperts)))
    return failure();
  int64_t routerRows = numExperts + router.getNullExperts();

  // Router operands.
  if (router.needsLogits() && !getGate())
    return emitOpError() << "the '" << family
                         << "' router needs a gate(...) operand";
  if (!router.needsLogits() && getGate())
    return emitOpError() << "the 'hash' router takes no gate(...) operand";
  if (getGate() &&
      (failed(expectDim(op, "gate dim 0 (routed + null experts)",
                        dim(getGate(), 0), routerRows)) ||
       failed(expectDim(op, "gate dim 1 (hidden size)", dim(getGate(), 1),
                        hidden))))
    return failure();
  if (getGateBias() && !getGate())
    return emitOpError() << "gate_bias needs a gate(...) operand";
  if (getGateBias() &&
      failed(expectDim(op, "gate_bias length (routed + null experts)",
                       dim(getGateBias(), 0), routerRows)))
    return failure();
  if (router.getBias() != static_cast<bool>(getSelectionBias()))
    return emitOpError() << (router.getBias()
                                 ? "the router's 'bias' option needs a "
                                   "selection_bias(...) operand"
                                 : "selection_bias needs the router's 'bias' "
                                   "option");
  if (getSelectionBias() &&
      failed(expectDim(op, "selection_bias length (routed experts)",
                       dim(getSelectionBias(), 0), numExperts)))
    return failure();
  bool isHash = router.getKind() == RouterKind::hash;
  if (isHash != static_cast<bool>(getTokenIds()) ||
      isHash != static_cast<bool>(getHashTable()))
    return emitOpError() << (isHash ? "the 'hash' router needs token_ids(...) "
                                      "and hash_table(...)"
                                    : "token_ids and hash_table are only used "
                                      "by the 'hash' router");
  if (getTokenIds() && failed(expectDim(op, "token_ids length (tokens)",
                                        dim(getTokenIds(), 0), numTokens)))
    return failure();

  // Shared experts.
  if (static_cast<bool>(getSharedW1()) != static_cast<bool>(getSharedW2()))
    return emitOpError() << "shared_w1 and shared_w2 must be given together";
  if (Value s1 = getSharedW1()) {
    Value s2 = getSharedW2();
    int64_t sharedFfn = dim(s2, 1);
    if (failed(expectDim(op, "shared_w1 dim 1 (hidden size)", dim(s1, 1),
                         hidden)) ||
        failed(expectDim(op, "shared_w2 dim 0 (hidden size)", dim(s2, 0),
                         hidden)) ||
        failed(expectDim(op,
                         glu ? "shared_w1 dim 0 (gate and up rows, 2 x ffn)"
                             : "shared_w1 dim 0 (ffn)",
                         dim(s1, 0), glu ? mulDims(2, sharedFfn) : sharedFfn)))
      return failure();
  }
  if (getSharedGate() && !getSharedW1())
    return emitOpError() << "shared_gate needs shared(...) experts";
  if (Value g = getSharedGate()) {
    if (failed(expectDim(op, "shared_gate dim 0", dim(g, 0), 1)) ||
        failed(expectDim(op, "shared_gate dim 1 (hidden size)", dim(g, 1),
                         hidden)))
      return failure();
  }

  // Capacity groups.
  CapacityAttr capacity = router.getCapacity();
  if (capacity) {
    CapacityGroup group = capacity.getGroup();
    if (group == CapacityGroup::request && !getGroups())
      return emitOpError() << "capacity counted per 'request' needs a "
                              "groups(...) operand with the request "
                              "boundaries";
    if (group == CapacityGroup::sequence && !getGroups() &&
        inputType.getRank() != 3)
      return emitOpError() << "capacity counted per 'sequence' needs a "
                              "[batch, seq, d] input or a groups(...) operand";
    if (capacity.getOverflow() == OverflowPolicy::reroute && router.getBias())
      return emitOpError() << "overflow = reroute ranks alternative experts "
                              "by logit, which is not defined together with a "
                              "selection bias";
  }
  if (getGroups() && !needsGroupBoundaries(capacity))
    return emitOpError() << "groups(...) is only used by capacity counted per "
                            "sequence or request";
  return success();
}

//===----------------------------------------------------------------------===//
// Statistics
//===----------------------------------------------------------------------===//

LogicalResult AuxLossOp::verify() {
  return expectDim(getOperation(), "indices dim 0 (tokens)",
                   dim(getIndices(), 0), dim(getProbs(), 0));
}

LogicalResult ExpertLoadOp::verify() {
  if (ShapedType::isDynamic(dim(getLoad(), 0)))
    return emitOpError() << "expected a static result length (the number of "
                            "experts), found "
                         << getLoad().getType();
  return success();
}

OpFoldResult ExpertLoadOp::fold(FoldAdaptor adaptor) {
  auto indices = dyn_cast_if_present<DenseIntElementsAttr>(adaptor.getIndices());
  if (!indices)
    return {};
  auto type = cast<RankedTensorType>(getLoad().getType());
  int64_t numExperts = type.getDimSize(0);
  SmallVector<int32_t> counts(numExperts, 0);
  for (const APInt &value : indices.getValues<APInt>()) {
    int64_t expert = value.getSExtValue();
    if (expert >= 0 && expert < numExperts)
      ++counts[expert];
  }
  return DenseIntElementsAttr::get(type, ArrayRef<int32_t>(counts));
}

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
