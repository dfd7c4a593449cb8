//===- MoETilingInterfaceImpl.cpp - TilingInterface for moe ops -----------===//
//
// moe.gate and moe.combine are parallel over (tokens, columns): a tile of the
// result needs a tile of the token-indexed operands and, for the other
// operands, only the matching columns. Implementing the upstream interface
// lets `transform.structured.tile_using_for`/`_forall` and tile-and-fuse work
// on them without a bespoke pass.
//
//===----------------------------------------------------------------------===//

#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

using namespace mlir;
using namespace mlir::moe;

/// Extracts `[offsets, sizes)` with unit strides and returns the new slice.
static tensor::ExtractSliceOp slice(OpBuilder &b, Location loc, Value source,
                                    ArrayRef<OpFoldResult> offsets,
                                    ArrayRef<OpFoldResult> sizes) {
  SmallVector<OpFoldResult> strides(offsets.size(), b.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(b, loc, source, offsets, sizes,
                                        strides);
}

/// The type of a result tile of `sizes` with the element type of `like`.
static RankedTensorType tileType(ArrayRef<OpFoldResult> sizes, Value like) {
  SmallVector<int64_t> shape;
  for (OpFoldResult size : sizes)
    shape.push_back(getConstantIntValue(size).value_or(ShapedType::kDynamic));
  return RankedTensorType::get(
      shape, cast<ShapedType>(like.getType()).getElementType());
}

static SmallVector<utils::IteratorType> twoParallelLoops() {
  return {utils::IteratorType::parallel, utils::IteratorType::parallel};
}

static SmallVector<Range> rangesFrom(OpBuilder &b, OpFoldResult rows,
                                     OpFoldResult columns) {
  OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
  return {Range{zero, rows, one}, Range{zero, columns, one}};
}

static LogicalResult
sameTilePosition(ArrayRef<OpFoldResult> offsets, ArrayRef<OpFoldResult> sizes,
                 SmallVector<OpFoldResult> &resultOffsets,
                 SmallVector<OpFoldResult> &resultSizes) {
  resultOffsets.assign(offsets.begin(), offsets.end());
  resultSizes.assign(sizes.begin(), sizes.end());
  return success();
}

//===----------------------------------------------------------------------===//
// GateOp: iteration space (token, router row)
//===----------------------------------------------------------------------===//

SmallVector<utils::IteratorType> GateOp::getLoopIteratorTypes() {
  return twoParallelLoops();
}

SmallVector<Range> GateOp::getIterationDomain(OpBuilder &b) {
  Location loc = getLoc();
  return rangesFrom(b, tensor::getMixedSize(b, loc, getInput(), 0),
                    tensor::getMixedSize(b, loc, getWeight(), 0));
}

FailureOr<TilingResult>
GateOp::getTiledImplementation(OpBuilder &b, ArrayRef<OpFoldResult> offsets,
                               ArrayRef<OpFoldResult> sizes) {
  Location loc = getLoc();
  OpFoldResult zero = b.getIndexAttr(0);
  OpFoldResult hidden = tensor::getMixedSize(b, loc, getInput(), 1);
  SmallVector<Operation *> slices;
  auto input = slice(b, loc, getInput(), {offsets[0], zero}, {sizes[0], hidden});
  auto weight =
      slice(b, loc, getWeight(), {offsets[1], zero}, {sizes[1], hidden});
  slices.append({input, weight});
  Value bias;
  if (getBias()) {
    auto biasSlice = slice(b, loc, getBias(), {offsets[1]}, {sizes[1]});
    slices.push_back(biasSlice);
    bias = biasSlice;
  }
  auto tiled = GateOp::create(b, loc, tileType(sizes, getLogits()), input,
                              weight, bias);
  return TilingResult{{tiled}, {tiled.getLogits()}, slices};
}

LogicalResult GateOp::getResultTilePosition(
    OpBuilder &, unsigned, ArrayRef<OpFoldResult> offsets,
    ArrayRef<OpFoldResult> sizes, SmallVector<OpFoldResult> &resultOffsets,
    SmallVector<OpFoldResult> &resultSizes) {
  return sameTilePosition(offsets, sizes, resultOffsets, resultSizes);
}

FailureOr<TilingResult>
GateOp::generateResultTileValue(OpBuilder &b, unsigned,
                                ArrayRef<OpFoldResult> offsets,
                                ArrayRef<OpFoldResult> sizes) {
  return getTiledImplementation(b, offsets, sizes);
}

LogicalResult
GateOp::reifyResultShapes(OpBuilder &b,
                          ReifiedRankedShapedTypeDims &reifiedReturnShapes) {
  Location loc = getLoc();
  reifiedReturnShapes.push_back({tensor::getMixedSize(b, loc, getInput(), 0),
                                 tensor::getMixedSize(b, loc, getWeight(), 0)});
  return success();
}

//===----------------------------------------------------------------------===//
// CombineOp: iteration space (token, column)
//===----------------------------------------------------------------------===//

SmallVector<utils::IteratorType> CombineOp::getLoopIteratorTypes() {
  return twoParallelLoops();
}

SmallVector<Range> CombineOp::getIterationDomain(OpBuilder &b) {
  Location loc = getLoc();
  return rangesFrom(b, tensor::getMixedSize(b, loc, getWeights(), 0),
                    tensor::getMixedSize(b, loc, getInput(), 1));
}

FailureOr<TilingResult>
CombineOp::getTiledImplementation(OpBuilder &b, ArrayRef<OpFoldResult> offsets,
                                  ArrayRef<OpFoldResult> sizes) {
  Location loc = getLoc();
  OpFoldResult zero = b.getIndexAttr(0);
  OpFoldResult slots = tensor::getMixedSize(b, loc, getWeights(), 1);
  OpFoldResult expertRows = tensor::getMixedSize(b, loc, getInput(), 0);
  // Expert rows are addressed indirectly through `rows`: every row stays
  // reachable, only the column range shrinks.
  auto input = slice(b, loc, getInput(), {zero, offsets[1]},
                     {expertRows, sizes[1]});
  auto weights =
      slice(b, loc, getWeights(), {offsets[0], zero}, {sizes[0], slots});
  auto rows = slice(b, loc, getRows(), {offsets[0], zero}, {sizes[0], slots});
  SmallVector<Operation *> slices = {input, weights, rows};
  Value passthrough;
  if (getPassthrough()) {
    auto x = slice(b, loc, getPassthrough(), offsets, sizes);
    slices.push_back(x);
    passthrough = x;
  }
  auto tiled = CombineOp::create(b, loc, tileType(sizes, getResult()), input,
                                 weights, rows, passthrough);
  return TilingResult{{tiled}, {tiled.getResult()}, slices};
}

LogicalResult CombineOp::getResultTilePosition(
    OpBuilder &, unsigned, ArrayRef<OpFoldResult> offsets,
    ArrayRef<OpFoldResult> sizes, SmallVector<OpFoldResult> &resultOffsets,
    SmallVector<OpFoldResult> &resultSizes) {
  return sameTilePosition(offsets, sizes, resultOffsets, resultSizes);
}

FailureOr<TilingResult>
CombineOp::generateResultTileValue(OpBuilder &b, unsigned,
                                   ArrayRef<OpFoldResult> offsets,
                                   ArrayRef<OpFoldResult> sizes) {
  return getTiledImplementation(b, offsets, sizes);
}

LogicalResult
CombineOp::reifyResultShapes(OpBuilder &b,
                             ReifiedRankedShapedTypeDims &reifiedReturnShapes) {
  Location loc = getLoc();
  reifiedReturnShapes.push_back({tensor::getMixedSize(b, loc, getWeights(), 0),
                                 tensor::getMixedSize(b, loc, getInput(), 1)});
  return success();
}
