//===- MoETilingInterfaceImpl.cpp - TilingInterface for moe ops -----------===//
//
// moe.gate and moe.combine are parallel over (tokens, columns): a tile of the
// result needs a tile of the token-indexed operands and, for the other
// operands, only the matching columns. One external model serves both ops;
// each op only says how big its iteration space is and how to build a tile.
// Implementing the upstream interfaces lets
// `transform.structured.tile_using_for/_forall` and tile-and-fuse work on
// them without a bespoke pass.
//
//===----------------------------------------------------------------------===//

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/TilingInterface.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Extracts `[offsets, sizes)` with unit strides.
tensor::ExtractSliceOp slice(OpBuilder &b, Location loc, Value source,
                             ArrayRef<OpFoldResult> offsets,
                             ArrayRef<OpFoldResult> sizes) {
  SmallVector<OpFoldResult> strides(offsets.size(), b.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(b, loc, source, offsets, sizes,
                                        strides);
}

/// The type of a result tile of `sizes` with the element type of `like`.
RankedTensorType tileType(ArrayRef<OpFoldResult> sizes, Value like) {
  SmallVector<int64_t> shape;
  for (OpFoldResult size : sizes)
    shape.push_back(getConstantIntValue(size).value_or(ShapedType::kDynamic));
  return RankedTensorType::get(
      shape, cast<ShapedType>(like.getType()).getElementType());
}

//===----------------------------------------------------------------------===//
// Per-op parts: the (rows, columns) of the iteration space, which is also the
// result shape, and the op computing one tile.
//===----------------------------------------------------------------------===//

/// moe.gate: (token, router row).
SmallVector<OpFoldResult> iterationSizes(GateOp op, OpBuilder &b) {
  Location loc = op.getLoc();
  return {tensor::getMixedSize(b, loc, op.getInput(), 0),
          tensor::getMixedSize(b, loc, op.getWeight(), 0)};
}

TilingResult buildTile(GateOp op, OpBuilder &b, ArrayRef<OpFoldResult> offsets,
                       ArrayRef<OpFoldResult> sizes) {
  Location loc = op.getLoc();
  OpFoldResult zero = b.getIndexAttr(0);
  OpFoldResult hidden = tensor::getMixedSize(b, loc, op.getInput(), 1);
  auto input =
      slice(b, loc, op.getInput(), {offsets[0], zero}, {sizes[0], hidden});
  auto weight =
      slice(b, loc, op.getWeight(), {offsets[1], zero}, {sizes[1], hidden});
  SmallVector<Operation *> slices = {input, weight};
  Value bias;
  if (op.getBias()) {
    auto biasSlice = slice(b, loc, op.getBias(), {offsets[1]}, {sizes[1]});
    slices.push_back(biasSlice);
    bias = biasSlice;
  }
  auto tiled = GateOp::create(b, loc, tileType(sizes, op.getLogits()), input,
                              weight, bias);
  return TilingResult{{tiled}, {tiled.getLogits()}, slices};
}

/// moe.combine: (token, column).
SmallVector<OpFoldResult> iterationSizes(CombineOp op, OpBuilder &b) {
  Location loc = op.getLoc();
  return {tensor::getMixedSize(b, loc, op.getWeights(), 0),
          tensor::getMixedSize(b, loc, op.getInput(), 1)};
}

TilingResult buildTile(CombineOp op, OpBuilder &b,
                       ArrayRef<OpFoldResult> offsets,
                       ArrayRef<OpFoldResult> sizes) {
  Location loc = op.getLoc();
  OpFoldResult zero = b.getIndexAttr(0);
  OpFoldResult slots = tensor::getMixedSize(b, loc, op.getWeights(), 1);
  OpFoldResult expertRows = tensor::getMixedSize(b, loc, op.getInput(), 0);
  // Expert rows are addressed indirectly through `rows`: every row stays
  // reachable, only the column range shrinks.
  auto input = slice(b, loc, op.getInput(), {zero, offsets[1]},
                     {expertRows, sizes[1]});
  auto weights =
      slice(b, loc, op.getWeights(), {offsets[0], zero}, {sizes[0], slots});
  auto rows =
      slice(b, loc, op.getRows(), {offsets[0], zero}, {sizes[0], slots});
  SmallVector<Operation *> slices = {input, weights, rows};
  Value passthrough;
  if (op.getPassthrough()) {
    auto x = slice(b, loc, op.getPassthrough(), offsets, sizes);
    slices.push_back(x);
    passthrough = x;
  }
  auto tiled = CombineOp::create(b, loc, tileType(sizes, op.getResult()),
                                 input, weights, rows, passthrough);
  return TilingResult{{tiled}, {tiled.getResult()}, slices};
}

//===----------------------------------------------------------------------===//
// The shared models
//===----------------------------------------------------------------------===//

template <typename OpTy>
struct TokenParallelTiling
    : public TilingInterface::ExternalModel<TokenParallelTiling<OpTy>, OpTy> {
  SmallVector<utils::IteratorType> getLoopIteratorTypes(Operation *) const {
    return {utils::IteratorType::parallel, utils::IteratorType::parallel};
  }

  SmallVector<Range> getIterationDomain(Operation *op, OpBuilder &b) const {
    OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
    SmallVector<Range> domain;
    for (OpFoldResult size : iterationSizes(cast<OpTy>(op), b))
      domain.push_back(Range{zero, size, one});
    return domain;
  }

  FailureOr<TilingResult>
  getTiledImplementation(Operation *op, OpBuilder &b,
                         ArrayRef<OpFoldResult> offsets,
                         ArrayRef<OpFoldResult> sizes) const {
    return buildTile(cast<OpTy>(op), b, offsets, sizes);
  }

  /// The iteration space is the result's index space.
  LogicalResult
  getResultTilePosition(Operation *, OpBuilder &, unsigned,
                        ArrayRef<OpFoldResult> offsets,
                        ArrayRef<OpFoldResult> sizes,
                        SmallVector<OpFoldResult> &resultOffsets,
                        SmallVector<OpFoldResult> &resultSizes) const {
    resultOffsets.assign(offsets.begin(), offsets.end());
    resultSizes.assign(sizes.begin(), sizes.end());
    return success();
  }

  FailureOr<TilingResult>
  generateResultTileValue(Operation *op, OpBuilder &b, unsigned,
                          ArrayRef<OpFoldResult> offsets,
                          ArrayRef<OpFoldResult> sizes) const {
    return buildTile(cast<OpTy>(op), b, offsets, sizes);
  }
};

template <typename OpTy>
struct TokenParallelReify
    : public ReifyRankedShapedTypeOpInterface::ExternalModel<
          TokenParallelReify<OpTy>, OpTy> {
  LogicalResult
  reifyResultShapes(Operation *op, OpBuilder &b,
                    ReifiedRankedShapedTypeDims &reifiedReturnShapes) const {
    reifiedReturnShapes.push_back(iterationSizes(cast<OpTy>(op), b));
    return success();
  }
};

template <typename... OpTys>
void attachModels(MLIRContext *ctx) {
  (OpTys::template attachInterface<TokenParallelTiling<OpTys>,
                                   TokenParallelReify<OpTys>>(*ctx),
   ...);
}

} // namespace

void MoEDialect::registerTilingInterfaceModels() {
  attachModels<GateOp, CombineOp>(getContext());
}
