//===- ExpandLayer.cpp - moe.layer -> its parts ---------------------------===//
//
// Decomposes the whole-block op into the router, dispatch, expert and combine
// ops, which later passes fuse and lower one by one.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEEXPANDLAYER
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

Epilogue epilogueFor(Activation activation) {
  switch (activation) {
  case Activation::silu_glu:
    return Epilogue::silu_glu;
  case Activation::gelu:
    return Epilogue::gelu;
  case Activation::relu:
    return Epilogue::relu;
  }
  llvm_unreachable("unknown activation");
}

int64_t mulStatic(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b)
             ? ShapedType::kDynamic
             : a * b;
}

/// Builds `result[i] = body(inputs[0][i], inputs[1][i], ...)` as a
/// linalg.generic over same-shaped tensors.
Value buildElementwise(
    OpBuilder &b, Location loc, ValueRange inputs,
    function_ref<Value(OpBuilder &, Location, ValueRange)> body) {
  auto type = cast<RankedTensorType>(inputs[0].getType());
  Value init =
      tensor::EmptyOp::create(b, loc, tensor::getMixedSizes(b, loc, inputs[0]),
                              type.getElementType());
  AffineMap identity = b.getMultiDimIdentityMap(type.getRank());
  SmallVector<AffineMap> maps(inputs.size() + 1, identity);
  SmallVector<utils::IteratorType> iterators(type.getRank(),
                                             utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{type}, inputs, ValueRange{init}, maps, iterators,
      [&](OpBuilder &nested, Location nestedLoc, ValueRange args) {
        Value result = body(nested, nestedLoc, args.drop_back());
        linalg::YieldOp::create(nested, nestedLoc, result);
      });
  return generic.getResult(0);
}

Value buildSigmoid(OpBuilder &b, Location loc, Value input) {
  return buildElementwise(
      b, loc, input, [](OpBuilder &nb, Location l, ValueRange args) -> Value {
        Type type = args[0].getType();
        Value one = arith::ConstantOp::create(nb, l, nb.getFloatAttr(type, 1.0));
        Value negated = arith::NegFOp::create(nb, l, args[0]);
        Value denominator =
            arith::AddFOp::create(nb, l, one, math::ExpOp::create(nb, l, negated));
        return arith::DivFOp::create(nb, l, one, denominator);
      });
}

Value buildAdd(OpBuilder &b, Location loc, Value lhs, Value rhs) {
  return buildElementwise(
      b, loc, ValueRange{lhs, rhs},
      [](OpBuilder &nb, Location l, ValueRange args) -> Value {
        return arith::AddFOp::create(nb, l, args[0], args[1]);
      });
}

Value indexToI32(OpBuilder &b, Location loc, OpFoldResult value) {
  Value index = getValueOrCreateConstantIndexOp(b, loc, value);
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), index);
}

/// Boundaries `[0, S, 2S, ..., B*S]` of the B sequences of a [B, S, d] input.
Value buildSequenceGroups(OpBuilder &b, Location loc, Value input) {
  auto inputType = cast<RankedTensorType>(input.getType());
  int64_t batch = inputType.getDimSize(0);
  SmallVector<Value> dynamicExtents;
  if (ShapedType::isDynamic(batch)) {
    Value numSeqs = tensor::DimOp::create(b, loc, input, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    dynamicExtents.push_back(arith::AddIOp::create(b, loc, numSeqs, one));
  }
  Value seqLen = getValueOrCreateConstantIndexOp(
      b, loc, tensor::getMixedSize(b, loc, input, 1));
  auto type = RankedTensorType::get(
      {ShapedType::isDynamic(batch) ? ShapedType::kDynamic : batch + 1},
      b.getI32Type());
  return tensor::GenerateOp::create(
      b, loc, type, dynamicExtents,
      [&](OpBuilder &nb, Location l, ValueRange ivs) {
        Value start = arith::MulIOp::create(nb, l, ivs[0], seqLen);
        Value start32 =
            arith::IndexCastOp::create(nb, l, nb.getI32Type(), start);
        tensor::YieldOp::create(nb, l, start32);
      });
}

/// One always-on expert: a one-expert grouped matmul pair over all tokens,
/// optionally scaled per token by sigmoid(x . gate).
Value buildSharedExpert(OpBuilder &b, LayerOp layer, Value tokens) {
  Location loc = layer.getLoc();
  auto tokensType = cast<RankedTensorType>(tokens.getType());
  Type elementType = tokensType.getElementType();
  int64_t numTokens = tokensType.getDimSize(0);

  OpFoldResult count = tensor::getMixedSize(b, loc, tokens, 0);
  Value zero = arith::ConstantIntOp::create(b, loc, b.getI32Type(), 0);
  Value offsets = tensor::FromElementsOp::create(
      b, loc, RankedTensorType::get({2}, b.getI32Type()),
      ValueRange{zero, indexToI32(b, loc, count)});

  auto addExpertDim = [&](Value weight) -> Value {
    auto type = cast<RankedTensorType>(weight.getType());
    SmallVector<int64_t> shape = {1};
    llvm::append_range(shape, type.getShape());
    auto expandedType = RankedTensorType::get(shape, type.getElementType());
    SmallVector<OpFoldResult> outputShape = {b.getIndexAttr(1)};
    llvm::append_range(outputShape, tensor::getMixedSizes(b, loc, weight));
    return tensor::ExpandShapeOp::create(
        b, loc, expandedType, weight,
        ArrayRef<ReassociationIndices>{{0, 1}, {2}}, outputShape);
  };
  Value w1 = addExpertDim(layer.getSharedW1());
  Value w2 = addExpertDim(layer.getSharedW2());
  int64_t sharedFfn = cast<RankedTensorType>(w2.getType()).getDimSize(2);
  int64_t hidden = layer.getHiddenSize();
  MLIRContext *ctx = b.getContext();

  auto hiddenType = RankedTensorType::get({numTokens, sharedFfn}, elementType);
  Value h = GroupedMatmulOp::create(
      b, loc, hiddenType, tokens, w1, offsets, /*gather=*/Value(),
      /*row_scale=*/Value(),
      EpilogueAttr::get(ctx, epilogueFor(layer.getActivation())));

  Value rowScale;
  Epilogue epilogue = Epilogue::none;
  if (Value gate = layer.getSharedGate()) {
    auto logitsType = RankedTensorType::get({numTokens, 1}, elementType);
    Value logits =
        GateOp::create(b, loc, logitsType, tokens, gate, /*bias=*/Value());
    Value flat = tensor::CollapseShapeOp::create(
        b, loc, logits, ArrayRef<ReassociationIndices>{{0, 1}});
    rowScale = buildSigmoid(b, loc, flat);
    epilogue = Epilogue::scale;
  }
  auto outType = RankedTensorType::get({numTokens, hidden}, elementType);
  return GroupedMatmulOp::create(b, loc, outType, h, w2, offsets,
                                 /*gather=*/Value(), rowScale,
                                 EpilogueAttr::get(ctx, epilogue));
}

/// Rewrites one moe.layer in place.
void expandLayer(RewriterBase &rewriter, LayerOp layer) {
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(layer);
  Location loc = layer.getLoc();
  MLIRContext *ctx = rewriter.getContext();
  RouterAttr router = layer.getRouter();
  CapacityAttr capacity = router.getCapacity();

  Value input = layer.getInput();
  auto inputType = cast<RankedTensorType>(input.getType());
  Type elementType = inputType.getElementType();
  bool batched = inputType.getRank() == 3;

  // Tokens as rows: [B, S, d] -> [B*S, d].
  Value tokens = input;
  if (batched)
    tokens = tensor::CollapseShapeOp::create(
        rewriter, loc, input, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
  int64_t numTokens = cast<RankedTensorType>(tokens.getType()).getDimSize(0);

  Value groups = layer.getGroups();
  if (!groups && capacity && capacity.getGroup() == CapacityGroup::sequence)
    groups = buildSequenceGroups(rewriter, loc, input);

  int64_t numExperts = layer.getNumExperts();
  int64_t hidden = layer.getHiddenSize();
  int64_t ffn = layer.getFfnSize();
  int64_t slots = router.getNumSlots(numExperts);
  int64_t rows = mulStatic(numTokens, slots);
  IntegerAttr numExpertsAttr = rewriter.getI64IntegerAttr(numExperts);
  Type i32 = rewriter.getI32Type();

  // 1. Router logits.
  Value logits;
  if (Value gate = layer.getGate()) {
    auto logitsType = RankedTensorType::get(
        {numTokens, numExperts + router.getNullExperts()}, elementType);
    logits = GateOp::create(rewriter, loc, logitsType, tokens, gate,
                            layer.getGateBias());
  }

  // 2. Routing.
  auto slotsType = [&](Type element) {
    return RankedTensorType::get({numTokens, slots}, element);
  };
  auto route = RouteOp::create(
      rewriter, loc, TypeRange{slotsType(i32), slotsType(rewriter.getF32Type())},
      logits, layer.getSelectionBias(), layer.getTokenIds(),
      layer.getHashTable(), numExpertsAttr, router);

  // 3. Dispatch plan.
  Value scores;
  if (capacity && capacity.getOverflow() == OverflowPolicy::reroute)
    scores = logits;
  auto plan = DispatchPlanOp::create(
      rewriter, loc,
      TypeRange{RankedTensorType::get({rows}, i32),
                RankedTensorType::get({numExperts + 1}, i32), slotsType(i32)},
      route.getIndices(), scores, groups, numExpertsAttr, capacity);

  // 4. Expert FFN: gather + activation, then the down projection.
  Value h = GroupedMatmulOp::create(
      rewriter, loc, RankedTensorType::get({rows, ffn}, elementType), tokens,
      layer.getW1(), plan.getOffsets(), plan.getPerm(), /*row_scale=*/Value(),
      EpilogueAttr::get(ctx, epilogueFor(layer.getActivation())));
  Value y = GroupedMatmulOp::create(
      rewriter, loc, RankedTensorType::get({rows, hidden}, elementType), h,
      layer.getW2(), plan.getOffsets(), /*gather=*/Value(),
      /*row_scale=*/Value(), EpilogueAttr::get(ctx, Epilogue::none));

  // 5. Combine.
  Value passthrough;
  if (capacity && capacity.getOverflow() == OverflowPolicy::passthrough)
    passthrough = tokens;
  Value out = CombineOp::create(
      rewriter, loc, RankedTensorType::get({numTokens, hidden}, elementType),
      y, route.getWeights(), plan.getRows(), passthrough);

  // 6. Shared experts.
  if (layer.getSharedW1())
    out = buildAdd(rewriter, loc, out,
                   buildSharedExpert(rewriter, layer, tokens));

  if (batched)
    out = tensor::ExpandShapeOp::create(
        rewriter, loc, inputType, out,
        ArrayRef<ReassociationIndices>{{0, 1}, {2}},
        tensor::getMixedSizes(rewriter, loc, input));
  rewriter.replaceOp(layer, out);
}

struct ExpandLayerPattern : public OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LayerOp layer,
                                PatternRewriter &rewriter) const override {
    expandLayer(rewriter, layer);
    return success();
  }
};

struct MoEExpandLayerPass
    : public mlir::moe::impl::MoEExpandLayerBase<MoEExpandLayerPass> {
  void runOnOperation() override {
    SmallVector<LayerOp> layers;
    getOperation()->walk([&](LayerOp layer) { layers.push_back(layer); });
    IRRewriter rewriter(&getContext());
    for (LayerOp layer : layers)
      expandLayer(rewriter, layer);
  }
};

} // namespace

void mlir::moe::populateMoEExpandLayerPatterns(RewritePatternSet &patterns) {
  patterns.add<ExpandLayerPattern>(patterns.getContext());
}
