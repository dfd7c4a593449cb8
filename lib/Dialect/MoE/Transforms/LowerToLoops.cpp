//===- LowerToLoops.cpp - moe ops -> linalg, scf and memref ---------------===//
//
// Lowers every `moe` op to upstream dialects for the CPU:
//
// * `moe.gate` on f32 becomes a parallel vector dot-product kernel; other
//   precisions a `linalg.generic` contraction on tensors;
// * `moe.grouped_matmul` on f32 becomes a packing loop and a parallel loop
//   of register-tiled vector kernels (see "the panel kernel" below); other
//   precisions one `linalg.generic` GEMM per expert over that expert's rows
//   of the dispatch plan (a subview), with the epilogue applied as the rows
//   are written back;
// * `moe.combine` becomes a parallel loop over tokens (vectors of columns
//   for f32);
// * the routing, plan and statistics ops are short loop nests (`scf.for`
//   over `memref`), one pass over the tokens each;
// * `moe.experts` becomes an `scf.for` over experts with the region inlined.
//
// Buffer-level code is embedded in tensor IR through
// `bufferization.to_buffer read_only` (operands) and
// `bufferization.to_tensor restrict writable` (fresh results), so
// one-shot bufferization handles the rest of the function unchanged.
//
// Bounds rule (docs/dialect.md): every index read from a tensor (expert
// index, plan row, gather row, offset, token id, group boundary) is checked
// or clamped before it addresses memory, so no runtime value can make the
// generated code access out of bounds.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/PatternMatch.h"

#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <functional>
#include <numeric>
#include <tuple>

namespace mlir::moe {
#define GEN_PASS_DEF_MOELOWERTOLOOPS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

//===----------------------------------------------------------------------===//
// Emitter: terse scalar and loop construction
//===----------------------------------------------------------------------===//

/// Builds scalar code, loops and buffers at the builder's insertion point.
/// Float arithmetic is done in f32; loads and stores of other float types
/// convert.
class Emitter {
public:
  explicit Emitter(ImplicitLocOpBuilder &b) : b(b) {}

  ImplicitLocOpBuilder &b;

  // Constants.
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i32(int64_t v) {
    return arith::ConstantIntOp::create(b, b.getI32Type(), v);
  }
  Value f32(double v) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  /// An f32 constant of `type`: a scalar, or a splat for a vector type.
  Value f32Like(Type type, double v) {
    if (auto vt = dyn_cast<VectorType>(type))
      return arith::ConstantOp::create(
          b, DenseElementsAttr::get(vt, b.getF32FloatAttr(v)));
    return f32(v);
  }
  Value f64(double v) {
    return arith::ConstantOp::create(b, b.getF64FloatAttr(v));
  }

  // Casts.
  Value toIndex(Value v) {
    return v.getType().isIndex()
               ? v
               : arith::IndexCastOp::create(b, b.getIndexType(), v);
  }
  Value toI32(Value v) {
    if (v.getType().isInteger(32))
      return v;
    if (v.getType().isIndex())
      return arith::IndexCastOp::create(b, b.getI32Type(), v);
    return arith::TruncIOp::create(b, b.getI32Type(), v);
  }
  Value toI64(Value v) {
    if (v.getType().isInteger(64))
      return v;
    if (v.getType().isIndex())
      return arith::IndexCastOp::create(b, b.getI64Type(), v);
    return arith::ExtSIOp::create(b, b.getI64Type(), v);
  }
  Value indexToF64(Value v) {
    return arith::SIToFPOp::create(b, b.getF64Type(), toI64(v));
  }
  Value i32ToF32(Value v) {
    return arith::SIToFPOp::create(b, b.getF32Type(), v);
  }

  // Arithmetic, on scalars or vectors.
  static bool isFloat(Value v) {
    return isa<FloatType>(getElementTypeOrSelf(v.getType()));
  }
  Value add(Value x, Value y) {
    return isFloat(x) ? (Value)arith::AddFOp::create(b, x, y)
                      : (Value)arith::AddIOp::create(b, x, y);
  }
  Value sub(Value x, Value y) {
    return isFloat(x) ? (Value)arith::SubFOp::create(b, x, y)
                      : (Value)arith::SubIOp::create(b, x, y);
  }
  Value mul(Value x, Value y) {
    return isFloat(x) ? (Value)arith::MulFOp::create(b, x, y)
                      : (Value)arith::MulIOp::create(b, x, y);
  }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, x, y); }
  Value exp(Value x) { return math::ExpOp::create(b, x); }
  Value log(Value x) { return math::LogOp::create(b, x); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }
  Value andI(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value orI(Value x, Value y) { return arith::OrIOp::create(b, x, y); }
  Value notI(Value x) {
    return arith::XOrIOp::create(
        b, x, arith::ConstantIntOp::create(b, b.getI1Type(), 1));
  }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, p, x, y);
  }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  Value gt(Value x, Value y) {
    return isFloat(x) ? cmpf(arith::CmpFPredicate::OGT, x, y)
                      : cmpi(arith::CmpIPredicate::sgt, x, y);
  }
  Value lt(Value x, Value y) {
    return isFloat(x) ? cmpf(arith::CmpFPredicate::OLT, x, y)
                      : cmpi(arith::CmpIPredicate::slt, x, y);
  }
  Value ge(Value x, Value y) { return cmpi(arith::CmpIPredicate::sge, x, y); }
  Value eq(Value x, Value y) { return cmpi(arith::CmpIPredicate::eq, x, y); }
  Value minI(Value x, Value y) { return arith::MinSIOp::create(b, x, y); }
  Value maxI(Value x, Value y) { return arith::MaxSIOp::create(b, x, y); }
  /// Clamps an integer of any type into [lo, hi] as an index.
  Value clampIndex(Value v, Value lo, Value hi) {
    return minI(maxI(toIndex(v), lo), hi);
  }
  /// lo <= v < hi, for an i32/i64 `v` and index bounds.
  Value inRange(Value v, Value lo, Value hi) {
    Value v64 = toI64(v);
    return andI(ge(v64, toI64(lo)), lt(v64, toI64(hi)));
  }
  /// NaN counts as -inf in every selection.
  Value sanitize(Value v) {
    Value isNaN = cmpf(arith::CmpFPredicate::UNO, v, v);
    return select(isNaN, f32(-INFINITY), v);
  }
  Value sigmoid(Value v) {
    Value one = f32(1.0);
    return div(one, add(one, exp(arith::NegFOp::create(b, v))));
  }

  /// ceil(x - 1e-9) of an f64 as an i64: capacities computed in double,
  /// where exact products (1.25 * 8 / 2) must not round up.
  Value ceilCapacity(Value x) {
    Value ceil = math::CeilOp::create(b, sub(x, f64(1e-9)));
    return arith::FPToSIOp::create(b, b.getI64Type(), ceil);
  }

  // Buffers.
  Value dim(Value memref, int64_t d) {
    return memref::DimOp::create(b, memref, d);
  }
  /// A fresh buffer of `shape` (kDynamic entries taken from `dynSizes`, in
  /// order), 64-byte aligned: panels, scratch tiles and partial sums are
  /// read and written in whole cache lines (16-byte alignment split them:
  /// mixtral-small bf16 T = 1024 758 -> 971 GFLOP/s).
  Value alloc(ArrayRef<int64_t> shape, Type element, ValueRange dynSizes) {
    return memref::AllocOp::create(b, MemRefType::get(shape, element), dynSizes,
                                   b.getI64IntegerAttr(64));
  }
  Value allocLike(RankedTensorType type, ValueRange dynSizes) {
    return alloc(type.getShape(), type.getElementType(), dynSizes);
  }
  /// allocLike for a matrix type whose sizes, where dynamic, are `rows`
  /// and `cols`.
  Value allocMatrixLike(RankedTensorType type, Value rows, Value cols) {
    SmallVector<Value> dynSizes;
    if (type.isDynamicDim(0))
      dynSizes.push_back(rows);
    if (type.isDynamicDim(1))
      dynSizes.push_back(cols);
    return allocLike(type, dynSizes);
  }
  Value load(Value memref, ValueRange ivs) {
    return memref::LoadOp::create(b, memref, ivs);
  }
  /// Loads a float element as f32.
  Value loadF(Value memref, ValueRange ivs) {
    Value v = load(memref, ivs);
    return v.getType().isF32()
               ? v
               : (Value)arith::ExtFOp::create(b, b.getF32Type(), v);
  }
  void store(Value v, Value memref, ValueRange ivs) {
    memref::StoreOp::create(b, v, memref, ivs);
  }
  /// Stores an f32 into a float buffer of any precision.
  void storeF(Value v, Value memref, ValueRange ivs) {
    Type element = cast<MemRefType>(memref.getType()).getElementType();
    if (element != v.getType())
      v = arith::TruncFOp::create(b, element, v);
    store(v, memref, ivs);
  }
  void fill(Value memref, Value v) {
    linalg::FillOp::create(b, ValueRange{v}, ValueRange{memref});
  }
  Value zeroOf(Type type) {
    return arith::ConstantOp::create(b, b.getZeroAttr(type));
  }

  // Control flow.
  void loop(Value lb, Value ub, function_ref<void(Value)> body,
            int64_t step = 1) {
    auto forOp = scf::ForOp::create(b, lb, ub, idx(step));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(forOp.getBody()->getTerminator());
    body(forOp.getInductionVar());
  }
  SmallVector<Value>
  loop(Value lb, Value ub, ValueRange inits,
       function_ref<SmallVector<Value>(Value, ValueRange)> body,
       int64_t step = 1) {
    auto forOp = scf::ForOp::create(b, lb, ub, idx(step), inits);
    {
      OpBuilder::InsertionGuard guard(b);
      Block *block = forOp.getBody();
      if (!block->empty() && block->back().hasTrait<OpTrait::IsTerminator>())
        b.setInsertionPoint(block->getTerminator());
      else
        b.setInsertionPointToEnd(block);
      SmallVector<Value> results =
          body(forOp.getInductionVar(), forOp.getRegionIterArgs());
      if (block->empty() || !block->back().hasTrait<OpTrait::IsTerminator>())
        scf::YieldOp::create(b, results);
      else
        block->getTerminator()->setOperands(results);
    }
    return SmallVector<Value>(forOp.getResults().begin(),
                              forOp.getResults().end());
  }
  void ifThen(Value cond, function_ref<void()> thenBody,
              function_ref<void()> elseBody = nullptr) {
    auto ifOp = scf::IfOp::create(b, cond, /*withElseRegion=*/bool(elseBody));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    thenBody();
    if (elseBody) {
      b.setInsertionPoint(ifOp.elseBlock()->getTerminator());
      elseBody();
    }
  }
  /// `cond ? thenBody() : elseBody()` where only the taken side runs (for
  /// guarded loads); both sides yield a value of `type`.
  Value ifValue(Type type, Value cond, function_ref<Value()> thenBody,
                function_ref<Value()> elseBody) {
    return ifValues(
        TypeRange{type}, cond, [&] { return SmallVector<Value>{thenBody()}; },
        [&] { return SmallVector<Value>{elseBody()}; })[0];
  }
  /// `ifValue` for several values of `types`.
  SmallVector<Value> ifValues(TypeRange types, Value cond,
                              function_ref<SmallVector<Value>()> thenBody,
                              function_ref<SmallVector<Value>()> elseBody) {
    auto ifOp = scf::IfOp::create(b, types, cond, /*addThenBlock=*/true,
                                  /*addElseBlock=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(ifOp.thenBlock());
    scf::YieldOp::create(b, thenBody());
    b.setInsertionPointToEnd(ifOp.elseBlock());
    scf::YieldOp::create(b, elseBody());
    return SmallVector<Value>(ifOp.getResults());
  }
  /// `do { carried = body(carried) } while (cond(carried))`: `body`
  /// returns the next carried values followed by the i1 condition.
  SmallVector<Value>
  doWhile(ValueRange inits, function_ref<SmallVector<Value>(ValueRange)> body) {
    auto whileOp = scf::WhileOp::create(
        b, inits.getTypes(), inits,
        [&](OpBuilder &, Location, ValueRange args) {
          SmallVector<Value> next = body(args);
          Value cond = next.pop_back_val();
          scf::ConditionOp::create(b, cond, next);
        },
        [&](OpBuilder &, Location, ValueRange args) {
          scf::YieldOp::create(b, args);
        });
    return SmallVector<Value>(whileOp.getResults().begin(),
                              whileOp.getResults().end());
  }
  /// Index of the largest `score(i)` over `i` in [lb, ub) with
  /// `eligible(i)`; ties go to the lower index. Returns (-1 as index, -inf)
  /// when nothing is eligible. Scores must already be NaN-free.
  std::pair<Value, Value> argmax(Value lb, Value ub,
                                 function_ref<Value(Value)> eligible,
                                 function_ref<Value(Value)> score) {
    Value none = idx(-1);
    SmallVector<Value> result =
        loop(lb, ub, ValueRange{none, f32(-INFINITY)},
             [&](Value i, ValueRange carried) -> SmallVector<Value> {
               Value best = carried[0], bestScore = carried[1];
               Value s = score(i);
               Value first = eq(best, none);
               Value better = orI(first, gt(s, bestScore));
               Value take = andI(eligible(i), better);
               return {select(take, i, best), select(take, s, bestScore)};
             });
    return {result[0], result[1]};
  }
};

Value toBuffer(ImplicitLocOpBuilder &b, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return bufferization::ToBufferOp::create(b, memrefType, tensor,
                                           /*read_only=*/b.getUnitAttr());
}

Value toTensor(ImplicitLocOpBuilder &b, Value memref, Type tensorType) {
  return bufferization::ToTensorOp::create(b, tensorType, memref,
                                           /*restrict=*/true,
                                           /*writable=*/true);
}

/// `scf.parallel` over [lb, ub) with unit step.
void parallelLoop(Emitter &em, Value lb, Value ub,
                  function_ref<void(Value)> body) {
  ImplicitLocOpBuilder &b = em.b;
  auto par = scf::ParallelOp::create(b, ValueRange{lb}, ValueRange{ub},
                                     ValueRange{em.idx(1)});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(par.getBody()->getTerminator());
  body(par.getInductionVars()[0]);
}

/// `scf.parallel` over [0, ub0) x [0, ub1).
void parallelLoop2D(Emitter &em, Value ub0, Value ub1,
                    function_ref<void(Value, Value)> body) {
  ImplicitLocOpBuilder &b = em.b;
  Value zero = em.idx(0), one = em.idx(1);
  auto par = scf::ParallelOp::create(
      b, ValueRange{zero, zero}, ValueRange{ub0, ub1}, ValueRange{one, one});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(par.getBody()->getTerminator());
  body(par.getInductionVars()[0], par.getInductionVars()[1]);
}

/// Softmax of row `t` of `logits` over columns [0, n) into `out[0, n)`
/// (f32), with NaN treated as -inf. An all -inf row gives all zeros.
/// exp(l - maxv) for a softmax whose maximum is `maxv`, NaN-free: when
/// the maximum is +inf, 1 for the +inf entries and 0 for the others (the
/// limit the reference implementation defines).
Value expShifted(Emitter &em, Value l, Value maxv) {
  Value inf = em.f32(INFINITY);
  Value maxInf = em.cmpf(arith::CmpFPredicate::OEQ, maxv, inf);
  Value safeMax = em.select(maxInf, em.f32(0.0), maxv);
  Value limit = em.select(em.cmpf(arith::CmpFPredicate::OEQ, l, inf),
                          em.f32(1.0), em.f32(0.0));
  return em.select(maxInf, limit, em.exp(em.sub(l, safeMax)));
}

/// `out` is the scratch row: out[e], or out[outRow, e] with `outRow`
/// (a row of a [T, n] buffer, private to the token).
void emitSoftmaxRow(Emitter &em, Value logits, Value t, Value n, Value out,
                    function_ref<void(Value, Value)> store,
                    Value outRow = Value()) {
  auto at = [&](Value e) {
    return outRow ? SmallVector<Value>{outRow, e} : SmallVector<Value>{e};
  };
  Value zero = em.idx(0);
  Value maxv = em.loop(zero, n, ValueRange{em.f32(-INFINITY)},
                       [&](Value e, ValueRange c) -> SmallVector<Value> {
                         Value l = em.sanitize(em.loadF(logits, {t, e}));
                         return {em.select(em.gt(l, c[0]), l, c[0])};
                       })[0];
  Value isNegInf = em.cmpf(arith::CmpFPredicate::OEQ, maxv, em.f32(-INFINITY));
  maxv = em.select(isNegInf, em.f32(0.0), maxv);
  Value sum = em.loop(zero, n, ValueRange{em.f32(0.0)},
                      [&](Value e, ValueRange c) -> SmallVector<Value> {
                        Value l = em.sanitize(em.loadF(logits, {t, e}));
                        Value x = expShifted(em, l, maxv);
                        em.store(x, out, at(e));
                        return {em.add(c[0], x)};
                      })[0];
  Value positive = em.gt(sum, em.f32(0.0));
  Value inv = em.select(positive, em.div(em.f32(1.0), sum), em.f32(0.0));
  em.loop(zero, n,
          [&](Value e) { store(e, em.mul(em.load(out, at(e)), inv)); });
}

//===----------------------------------------------------------------------===//
// moe.gate
//===----------------------------------------------------------------------===//

/// The vector width (f32 lanes) of the CPU kernels.
constexpr int64_t kLanes = 16;

/// Rows and columns of the gate's register block.
constexpr int64_t kGateRows = 4, kGateCols = 4;

/// logits[r, j] = sum_k x[r, k] * w[j, k] (+ bias[j]), all f32, both
/// operands contiguous along k (the [out, in] checkpoint layout): one
/// parallel iteration per block of 4 rows by 4 columns (so a single token
/// is split over the threads too), 16 vector accumulators of 16 lanes, k in
/// steps of 16 with the tail read zero-padded, then one reduction per
/// output. Rows and columns past the edges re-read the last valid one and
/// are not stored. A small kernel on purpose: the gate on the experts'
/// panel kernel ran large routers faster but added 60-70% to a layer's
/// JIT compile time (docs/design.md, "CPU lowering").
Value lowerGateF32(ImplicitLocOpBuilder &b, GateOp op) {
  Emitter em(b);
  auto type = cast<RankedTensorType>(op.getType());
  Value x = toBuffer(b, op.getInput());
  Value w = toBuffer(b, op.getWeight());
  Value bias = op.getBias() ? toBuffer(b, op.getBias()) : Value();
  Value zero = em.idx(0), one = em.idx(1);
  Value numTokens = em.dim(x, 0), numCols = em.dim(w, 0), depth = em.dim(x, 1);
  Value logits = em.allocMatrixLike(type, numTokens, numCols);
  VectorType vt = VectorType::get({kLanes}, b.getF32Type());
  Value pad = em.f32(0.0);
  auto blocksOf = [&](Value n, int64_t size) -> Value {
    return arith::DivUIOp::create(b, em.add(n, em.idx(size - 1)), em.idx(size));
  };
  em.ifThen(em.gt(numTokens, zero), [&] {
    Value lastRow = em.sub(numTokens, one), lastCol = em.sub(numCols, one);
    parallelLoop2D(
        em, blocksOf(numTokens, kGateRows), blocksOf(numCols, kGateCols),
        [&](Value rb, Value cb) {
          Value i0 = em.mul(rb, em.idx(kGateRows));
          Value j0 = em.mul(cb, em.idx(kGateCols));
          SmallVector<Value> rows, cols;
          for (int64_t r = 0; r < kGateRows; ++r)
            rows.push_back(em.minI(em.add(i0, em.idx(r)), lastRow));
          for (int64_t c = 0; c < kGateCols; ++c)
            cols.push_back(em.minI(em.add(j0, em.idx(c)), lastCol));
          SmallVector<Value> inits(kGateRows * kGateCols, em.f32Like(vt, 0.0));
          SmallVector<Value> sums = em.loop(
              zero, depth, inits,
              [&](Value k0, ValueRange acc) -> SmallVector<Value> {
                SmallVector<Value> xv, wv, next;
                for (Value row : rows)
                  xv.push_back(vector::TransferReadOp::create(
                      b, vt, x, ValueRange{row, k0}, pad,
                      ArrayRef<bool>{false}));
                for (Value col : cols)
                  wv.push_back(vector::TransferReadOp::create(
                      b, vt, w, ValueRange{col, k0}, pad,
                      ArrayRef<bool>{false}));
                for (int64_t r = 0; r < kGateRows; ++r)
                  for (int64_t c = 0; c < kGateCols; ++c)
                    next.push_back(vector::FMAOp::create(
                        b, vt, xv[r], wv[c], acc[r * kGateCols + c]));
                return next;
              },
              kLanes);
          for (int64_t r = 0; r < kGateRows; ++r) {
            Value i = em.add(i0, em.idx(r));
            for (int64_t c = 0; c < kGateCols; ++c) {
              Value j = em.add(j0, em.idx(c));
              Value sum = vector::ReductionOp::create(
                  b, vector::CombiningKind::ADD, sums[r * kGateCols + c],
                  arith::FastMathFlags::reassoc);
              em.ifThen(em.andI(em.lt(i, numTokens), em.lt(j, numCols)), [&] {
                if (bias)
                  sum = em.add(sum, em.loadF(bias, {j}));
                em.store(sum, logits, {i, j});
              });
            }
          }
        });
  });
  return toTensor(b, logits, type);
}

/// logits + bias (broadcast over the rows), as a `linalg.generic`.
Value addGateBias(ImplicitLocOpBuilder &b, Value logits, Value bias,
                  ArrayRef<OpFoldResult> sizes) {
  MLIRContext *ctx = b.getContext();
  AffineExpr t, r;
  bindDims(ctx, t, r);
  SmallVector<AffineMap> maps = {AffineMap::get(2, 0, {t, r}, ctx),
                                 AffineMap::get(2, 0, {r}, ctx),
                                 AffineMap::get(2, 0, {t, r}, ctx)};
  Value out = tensor::EmptyOp::create(
      b, sizes, cast<RankedTensorType>(logits.getType()).getElementType());
  return linalg::GenericOp::create(
             b, TypeRange{out.getType()}, ValueRange{logits, bias},
             ValueRange{out}, maps,
             {utils::IteratorType::parallel, utils::IteratorType::parallel},
             [](OpBuilder &nb, Location loc, ValueRange args) {
               Value v = args[1];
               if (v.getType() != args[0].getType())
                 v = arith::ExtFOp::create(nb, loc, args[0].getType(), v);
               Value sum = arith::AddFOp::create(nb, loc, args[0], v);
               linalg::YieldOp::create(nb, loc, sum);
             })
      .getResult(0);
}

/// The gate as a `linalg.generic` contraction (any precision).
Value lowerGateGeneric(ImplicitLocOpBuilder &b, GateOp op) {
  auto type = cast<RankedTensorType>(op.getType());
  Type element = type.getElementType();
  SmallVector<OpFoldResult> sizes = {
      tensor::getMixedSize(b, b.getLoc(), op.getInput(), 0),
      tensor::getMixedSize(b, b.getLoc(), op.getWeight(), 0)};
  Value init = tensor::EmptyOp::create(b, sizes, element);
  Value zero = arith::ConstantOp::create(b, b.getZeroAttr(element));
  init = linalg::FillOp::create(b, ValueRange{zero}, ValueRange{init})
             .getResult(0);
  MLIRContext *ctx = b.getContext();
  AffineExpr t, r, i;
  bindDims(ctx, t, r, i);
  SmallVector<AffineMap> maps = {AffineMap::get(3, 0, {t, i}, ctx),
                                 AffineMap::get(3, 0, {r, i}, ctx),
                                 AffineMap::get(3, 0, {t, r}, ctx)};
  Value logits =
      linalg::GenericOp::create(
          b, TypeRange{init.getType()},
          ValueRange{op.getInput(), op.getWeight()}, ValueRange{init}, maps,
          {utils::IteratorType::parallel, utils::IteratorType::parallel,
           utils::IteratorType::reduction},
          [](OpBuilder &nb, Location loc, ValueRange args) {
            Value prod = arith::MulFOp::create(nb, loc, args[0], args[1]);
            Value acc = arith::AddFOp::create(nb, loc, args[2], prod);
            linalg::YieldOp::create(nb, loc, acc);
          })
          .getResult(0);
  if (Value bias = op.getBias())
    logits = addGateBias(b, logits, bias, sizes);
  if (logits.getType() != type)
    logits = tensor::CastOp::create(b, type, logits);
  return logits;
}

Value lowerGroupedMatmulGPU(ImplicitLocOpBuilder &b, GroupedMatmulOp op,
                            bool mma);

/// The gate on GPUs: the grouped-matmul kernels with one expert holding
/// every token (the decode kernel streams the router weights once for a
/// few tokens; the tiled kernel takes larger batches).
Value lowerGateGPU(ImplicitLocOpBuilder &b, GateOp op) {
  auto type = cast<RankedTensorType>(op.getType());
  auto wType = cast<RankedTensorType>(op.getWeight().getType());
  Value w3 = tensor::ExpandShapeOp::create(
      b,
      RankedTensorType::get({1, wType.getDimSize(0), wType.getDimSize(1)},
                            wType.getElementType()),
      op.getWeight(), ArrayRef<ReassociationIndices>{{0, 1}, {2}});
  Value numTokens = tensor::DimOp::create(b, op.getInput(), 0);
  Value offsets = tensor::FromElementsOp::create(
      b, RankedTensorType::get({2}, b.getI32Type()),
      ValueRange{arith::ConstantIntOp::create(b, b.getI32Type(), 0),
                 arith::IndexCastOp::create(b, b.getI32Type(), numTokens)});
  auto matmulType = RankedTensorType::get(
      {ShapedType::kDynamic, wType.getDimSize(0)}, b.getF32Type());
  auto matmul = GroupedMatmulOp::create(b, matmulType, op.getInput(), w3,
                                        offsets, /*gather=*/Value(),
                                        /*row_scale=*/Value(), Epilogue::none);
  Value logits = lowerGroupedMatmulGPU(b, matmul, /*mma=*/false);
  matmul.erase();
  if (Value bias = op.getBias()) {
    SmallVector<OpFoldResult> sizes = {
        tensor::getMixedSize(b, b.getLoc(), op.getInput(), 0),
        b.getIndexAttr(wType.getDimSize(0))};
    logits = addGateBias(b, logits, bias, sizes);
  }
  if (logits.getType() != type)
    logits = tensor::CastOp::create(b, type, logits);
  return logits;
}

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

/// Hash routing: expert = table[token_id], weight 1; ids outside the table
/// give an empty slot.
void emitHashRoute(Emitter &em, Value ids, Value table, Value indices,
                   Value weights, Value numTokens) {
  Value zero = em.idx(0);
  Value vocab = em.dim(table, 0);
  parallelLoop(em, zero, numTokens, [&](Value t) {
    Value id = em.toI64(em.load(ids, {t}));
    Value valid = em.inRange(id, zero, vocab);
    Value expert = em.ifValue(
        em.b.getI32Type(), valid,
        [&] { return em.load(table, {em.toIndex(id)}); },
        [&] { return em.i32(-1); });
    em.store(expert, indices, {t, zero});
    em.store(em.select(valid, em.f32(1.0), em.f32(0.0)), weights, {t, zero});
  });
}

/// Expert choice: each expert takes the C tokens with the highest softmax
/// probability. Slot j of a token is expert j when it took the token.
void emitExpertChoiceRoute(Emitter &em, RouterAttr router, Value logits,
                           Value indices, Value weights, Value numTokens,
                           int64_t numExperts) {
  Value zero = em.idx(0);
  Value numCols = em.dim(logits, 1);
  Value probs = em.alloc({ShapedType::kDynamic, ShapedType::kDynamic},
                         em.b.getF32Type(), {numTokens, numCols});
  // Each token's row of `probs` is its own softmax scratch, so tokens
  // are independent, and so are experts below (expert e reads and writes
  // column e of the slots only).
  parallelLoop(em, zero, numTokens, [&](Value t) {
    emitSoftmaxRow(
        em, logits, t, numCols, probs,
        [&](Value e, Value p) { em.store(p, probs, {t, e}); }, t);
  });
  em.fill(indices, em.i32(-1));
  em.fill(weights, em.f32(0.0));

  // C = min(T, ceil(T * factor / E)).
  double factor = router.getCapacityFactor().getValueAsDouble();
  Value scaled = em.div(em.mul(em.indexToF64(numTokens), em.f64(factor)),
                        em.f64(numExperts));
  Value capacity = em.toIndex(em.ceilCapacity(scaled));
  capacity = em.minI(em.maxI(capacity, zero), numTokens);

  parallelLoop(em, zero, em.idx(numExperts), [&](Value e) {
    Value e32 = em.toI32(e);
    em.loop(zero, capacity, [&](Value) {
      std::pair<Value, Value> choice = em.argmax(
          zero, numTokens,
          [&](Value t) {
            return em.eq(em.load(indices, {t, e}), em.i32(-1));
          },
          [&](Value t) {
            return em.load(probs, {t, e});
          });
      Value best = choice.first, bestScore = choice.second;
      em.ifThen(em.ge(best, zero), [&] {
        em.store(e32, indices, {best, e});
        em.store(bestScore, weights, {best, e});
      });
    });
  });
}

/// Token-choice routing (topk, top_p): per token, scores, an optional group
/// limit, then `slots` rounds of argmax with ties to the lower index.
void emitTokenChoiceRoute(Emitter &em, RouterAttr router, Value logits,
                          Value bias, Value indices, Value weights,
                          Value numTokens, int64_t numExperts, int64_t slots,
                          bool parallel) {
  ImplicitLocOpBuilder &b = em.b;
  Value zero = em.idx(0);
  Value numCols = em.dim(logits, 1);
  Value E = em.idx(numExperts);
  Type f32 = b.getF32Type();
  bool topP = router.getKind() == RouterKind::top_p;
  bool softmaxAfter = router.getSoftmaxAfter();
  bool sigmoid = !topP && router.getScore() == ScoreFunc::sigmoid;
  int64_t nGroup = router.getNGroup();
  // Per-token scratch: shared buffers for a sequential token loop, or
  // buffers on each iteration's stack for a parallel one (the GPU form:
  // one thread per token), which needs the column count static.
  int64_t staticCols = cast<MemRefType>(logits.getType()).getDimSize(1);
  parallel &= !ShapedType::isDynamic(staticCols);
  Value scores, select, taken, groupScores, groupKept;
  auto allocScratch = [&] {
    auto make = [&](int64_t n, Type t) -> Value {
      if (parallel)
        return memref::AllocaOp::create(b, MemRefType::get({n}, t));
      return em.alloc({ShapedType::kDynamic}, t, {em.idx(n)});
    };
    if (parallel) {
      scores = make(staticCols, f32);
      select = make(staticCols, f32);
      taken = make(staticCols, b.getI32Type());
    } else {
      scores = em.alloc({ShapedType::kDynamic}, f32, {numCols});
      select = em.alloc({ShapedType::kDynamic}, f32, {numCols});
      taken = em.alloc({ShapedType::kDynamic}, b.getI32Type(), {numCols});
    }
    if (nGroup > 0) {
      groupScores = make(nGroup, f32);
      groupKept = make(nGroup, b.getI32Type());
    }
  };
  if (!parallel)
    allocScratch();

  auto tokenLoop = [&](function_ref<void(Value)> body) {
    if (!parallel)
      return em.loop(zero, numTokens, body);
    parallelLoop(em, zero, numTokens, [&](Value t) {
      allocScratch();
      body(t);
    });
  };
  tokenLoop([&](Value t) {
    // Scores.
    if (softmaxAfter) {
      em.loop(zero, numCols, [&](Value e) {
        em.store(em.sanitize(em.loadF(logits, {t, e})), scores, {e});
      });
    } else if (sigmoid) {
      em.loop(zero, numCols, [&](Value e) {
        Value l = em.sanitize(em.loadF(logits, {t, e}));
        em.store(em.sigmoid(l), scores, {e});
      });
    } else {
      emitSoftmaxRow(em, logits, t, numCols, scores,
                     [&](Value e, Value p) { em.store(p, scores, {e}); });
    }
    // Selection keys: scores plus the selection bias of routed experts.
    em.loop(zero, numCols, [&](Value e) {
      Value key = em.load(scores, {e});
      if (bias) {
        Value routed = em.cmpi(arith::CmpIPredicate::slt, e, E);
        Value add = em.ifValue(
            b.getF32Type(), routed, [&] { return em.loadF(bias, {e}); },
            [&] { return em.f32(0.0); });
        key = em.sanitize(em.add(key, add));
      }
      em.store(key, select, {e});
      em.store(em.i32(0), taken, {e});
    });
    // Group limit: keep the topk_group groups whose two best keys sum
    // highest; experts of the other groups are not eligible.
    if (nGroup > 0) {
      int64_t groupSize = numExperts / nGroup;
      em.loop(zero, em.idx(nGroup), [&](Value g) {
        Value start = em.mul(g, em.idx(groupSize));
        SmallVector<Value> best =
            em.loop(zero, em.idx(groupSize),
                    ValueRange{em.f32(-INFINITY), em.f32(-INFINITY)},
                    [&](Value i, ValueRange c) -> SmallVector<Value> {
                      Value v = em.load(select, {em.add(start, i)});
                      Value above1 = em.gt(v, c[0]);
                      Value above2 = em.gt(v, c[1]);
                      Value first = em.select(above1, v, c[0]);
                      Value second =
                          em.select(above1, c[0], em.select(above2, v, c[1]));
                      return {first, second};
                    });
        Value score = groupSize >= 2 ? em.add(best[0], best[1]) : best[0];
        em.store(score, groupScores, {g});
        em.store(em.i32(0), groupKept, {g});
      });
      em.loop(zero, em.idx(router.getTopkGroup()), [&](Value) {
        Value g = em.argmax(
                        zero, em.idx(nGroup),
                        [&](Value gi) {
                          return em.eq(em.load(groupKept, {gi}), em.i32(0));
                        },
                        [&](Value gi) { return em.load(groupScores, {gi}); })
                      .first;
        em.ifThen(em.ge(g, zero), [&] { em.store(em.i32(1), groupKept, {g}); });
      });
      em.loop(zero, E, [&](Value e) {
        Value g = arith::DivUIOp::create(b, e, em.idx(groupSize));
        Value kept = em.load(groupKept, {g});
        em.store(em.select(em.eq(kept, em.i32(1)), em.i32(0), em.i32(1)), taken,
                 {e});
      });
    }
    // Slots in descending key order.
    Value mass = em.f32(0.0);
    double p = topP ? router.getP().getValueAsDouble() : 0.0;
    SmallVector<Value> carried = em.loop(
        zero, em.idx(slots), ValueRange{mass},
        [&](Value j, ValueRange c) -> SmallVector<Value> {
          Value best = em.argmax(
                             zero, numCols,
                             [&](Value e) {
                               return em.eq(em.load(taken, {e}), em.i32(0));
                             },
                             [&](Value e) { return em.load(select, {e}); })
                           .first;
          Value found = em.ge(best, zero);
          Value use = found;
          if (topP)
            use = em.andI(found, em.lt(c[0], em.f32(p)));
          Value weight = em.ifValue(
              f32, use, [&] { return em.load(scores, {best}); },
              [&] { return em.f32(0.0); });
          em.ifThen(found, [&] { em.store(em.i32(1), taken, {best}); });
          em.store(em.select(use, em.toI32(best), em.i32(-1)), indices, {t, j});
          em.store(weight, weights, {t, j});
          return {em.add(c[0], weight)};
        });
    Value slotsV = em.idx(slots);
    if (softmaxAfter) {
      // Softmax over the selected logits (stored as weights above).
      Value maxv = em.loop(zero, slotsV, ValueRange{em.f32(-INFINITY)},
                           [&](Value j, ValueRange c) -> SmallVector<Value> {
                             Value l = em.load(weights, {t, j});
                             return {em.select(em.gt(l, c[0]), l, c[0])};
                           })[0];
      Value sum =
          em.loop(zero, slotsV, ValueRange{em.f32(0.0)},
                  [&](Value j, ValueRange c) -> SmallVector<Value> {
                    Value x = expShifted(em, em.load(weights, {t, j}), maxv);
                    em.store(x, weights, {t, j});
                    return {em.add(c[0], x)};
                  })[0];
      // All selected logits -inf (or no slot): every weight is 0.
      Value inv = em.select(em.gt(sum, em.f32(0.0)), em.div(em.f32(1.0), sum),
                            em.f32(0.0));
      em.loop(zero, slotsV, [&](Value j) {
        em.store(em.mul(em.load(weights, {t, j}), inv), weights, {t, j});
      });
    } else if (router.getRenormalize()) {
      Value sum = carried[0];
      em.ifThen(em.gt(sum, em.f32(0.0)), [&] {
        em.loop(zero, slotsV, [&](Value j) {
          em.store(em.div(em.load(weights, {t, j}), sum), weights, {t, j});
        });
      });
    }
    double scale = router.getScaleValue();
    if (scale != 1.0) {
      em.loop(zero, slotsV, [&](Value j) {
        em.store(em.mul(em.load(weights, {t, j}), em.f32(scale)), weights,
                 {t, j});
      });
    }
  });
}

/// Balanced assignment (BASE layers): the assignment of tokens to the
/// E + null columns maximizing the summed logits, each column serving at
/// most ceil(T / E) tokens, solved exactly as a rectangular assignment
/// problem (Hungarian method with potentials, one shortest augmenting path
/// per token) over T rows and (E + null) * ceil(T / E) column slots, in f64.
/// O(T^2 * columns): the correctness-first lowering; weight =
/// sigmoid(logit). NaN logits count as -inf; infinite logits are clamped to
/// +-1e30 so the potentials stay finite.
void emitBalancedRoute(Emitter &em, Value logits, Value indices, Value weights,
                       Value numTokens, int64_t numExperts) {
  ImplicitLocOpBuilder &b = em.b;
  Type f64 = b.getF64Type();
  Value zero = em.idx(0), one = em.idx(1);
  Value numCols = em.dim(logits, 1);
  em.fill(indices, em.i32(-1));
  em.fill(weights, em.f32(0.0));
  Value E = em.idx(numExperts);
  Value cap = arith::DivUIOp::create(b, em.add(numTokens, em.sub(E, one)),
                                     E); // ceil(T / E)
  Value slots = em.mul(numCols, cap);    // m
  Value size = em.add(slots, one);       // columns 0..m
  Value rows = em.add(numTokens, one);   // rows 0..n
  Value u = em.alloc({ShapedType::kDynamic}, f64, {rows});
  Value v = em.alloc({ShapedType::kDynamic}, f64, {size});
  Value minv = em.alloc({ShapedType::kDynamic}, f64, {size});
  Value p = em.alloc({ShapedType::kDynamic}, b.getIndexType(), {size});
  Value way = em.alloc({ShapedType::kDynamic}, b.getIndexType(), {size});
  Value used = em.alloc({ShapedType::kDynamic}, b.getI32Type(), {size});
  Value inf = em.f64(INFINITY);
  em.fill(u, em.f64(0.0));
  em.fill(v, em.f64(0.0));
  em.fill(p, zero);
  em.fill(way, zero);

  // cost(i, j) = -logit[i - 1, (j - 1) / cap], finite.
  auto cost = [&](Value i, Value j) {
    Value col = arith::DivUIOp::create(b, em.sub(j, one), cap);
    Value l = em.sanitize(em.loadF(logits, {em.sub(i, one), col}));
    Value wide = arith::ExtFOp::create(b, f64, l);
    Value bound = em.f64(1e30);
    wide = arith::MinimumFOp::create(
        b, arith::MaximumFOp::create(b, wide, arith::NegFOp::create(b, bound)),
        bound);
    return (Value)arith::NegFOp::create(b, wide);
  };

  em.loop(one, rows, [&](Value i) {
    em.store(i, p, {zero});
    em.fill(minv, inf);
    em.fill(used, em.i32(0));
    // Grow a shortest augmenting path until it reaches a free column. Each
    // round marks one more column, so `size` rounds always suffice; the
    // bound only guards against non-finite arithmetic.
    Value last = em.doWhile(
        ValueRange{zero, zero}, [&](ValueRange c) -> SmallVector<Value> {
          Value j0 = c[0], round = c[1];
          em.store(em.i32(1), used, {j0});
          Value i0 = em.load(p, {j0});
          SmallVector<Value> best = em.loop(
              one, size, ValueRange{inf, zero},
              [&](Value j, ValueRange acc) -> SmallVector<Value> {
                Value free = em.eq(em.load(used, {j}), em.i32(0));
                Value cur = em.sub(em.sub(cost(i0, j), em.load(u, {i0})),
                                   em.load(v, {j}));
                Value old = em.load(minv, {j});
                Value better = em.andI(free, em.lt(cur, old));
                Value updated = em.select(better, cur, old);
                em.store(updated, minv, {j});
                em.store(em.select(better, j0, em.load(way, {j})), way, {j});
                Value take = em.andI(free, em.lt(updated, acc[0]));
                return {em.select(take, updated, acc[0]),
                        em.select(take, j, acc[1])};
              });
          Value delta = best[0], j1 = best[1];
          em.loop(zero, size, [&](Value j) {
            Value isUsed = em.eq(em.load(used, {j}), em.i32(1));
            em.ifThen(
                isUsed,
                [&] {
                  Value row = em.load(p, {j});
                  em.store(em.add(em.load(u, {row}), delta), u, {row});
                  em.store(em.sub(em.load(v, {j}), delta), v, {j});
                },
                [&] {
                  em.store(em.sub(em.load(minv, {j}), delta), minv, {j});
                });
          });
          Value next = em.add(round, one);
          Value open =
              em.cmpi(arith::CmpIPredicate::ne, em.load(p, {j1}), zero);
          Value again = em.andI(open, em.lt(next, size));
          return {j1, next, again};
        })[0];
    // Flip the path back to the root.
    em.doWhile(ValueRange{last}, [&](ValueRange c) -> SmallVector<Value> {
      Value j0 = c[0];
      Value j1 = em.load(way, {j0});
      em.store(em.load(p, {j1}), p, {j0});
      return {j1, em.cmpi(arith::CmpIPredicate::ne, j1, zero)};
    });
  });

  // Read the assignment off the matched columns.
  em.loop(one, size, [&](Value j) {
    Value row = em.load(p, {j});
    em.ifThen(em.cmpi(arith::CmpIPredicate::ne, row, zero), [&] {
      Value t = em.sub(row, one);
      Value col = arith::DivUIOp::create(b, em.sub(j, one), cap);
      Value l = em.sanitize(em.loadF(logits, {t, col}));
      em.store(em.toI32(col), indices, {t, zero});
      em.store(em.sigmoid(l), weights, {t, zero});
    });
  });
}

LogicalResult lowerRoute(ImplicitLocOpBuilder &b, RouteOp op,
                         SmallVectorImpl<Value> &results, bool gpu) {
  Emitter em(b);
  RouterAttr router = op.getRouter();
  int64_t numExperts = op.getNumExperts();
  auto indicesType = cast<RankedTensorType>(op.getIndices().getType());
  auto weightsType = cast<RankedTensorType>(op.getWeights().getType());

  Value logits = op.getLogits() ? toBuffer(b, op.getLogits()) : Value();
  Value ids = op.getTokenIds() ? toBuffer(b, op.getTokenIds()) : Value();
  Value source = logits ? logits : ids;
  Value numTokens = em.dim(source, 0);
  Value numSlots = em.idx(router.getNumSlots(numExperts));
  Value indices = em.allocMatrixLike(indicesType, numTokens, numSlots);
  Value weights = em.allocMatrixLike(weightsType, numTokens, numSlots);

  switch (router.getKind()) {
  case RouterKind::hash:
    emitHashRoute(em, ids, toBuffer(b, op.getTable()), indices, weights,
                  numTokens);
    break;
  case RouterKind::expert_choice:
    emitExpertChoiceRoute(em, router, logits, indices, weights, numTokens,
                          numExperts);
    break;
  case RouterKind::topk:
  case RouterKind::top_p:
    emitTokenChoiceRoute(em, router, logits,
                         op.getBias() ? toBuffer(b, op.getBias()) : Value(),
                         indices, weights, numTokens, numExperts,
                         router.getNumSlots(numExperts), gpu);
    break;
  case RouterKind::balanced:
    emitBalancedRoute(em, logits, indices, weights, numTokens, numExperts);
    break;
  }
  results.push_back(toTensor(b, indices, indicesType));
  results.push_back(toTensor(b, weights, weightsType));
  return success();
}

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

/// Tokens per block of the parallel dispatch plan: on CPUs a few blocks
/// per thread at large T, on GPUs one thread per block, so short enough
/// that a thread's sequential walk over its block stays cheap.
constexpr int64_t kCPUPlanBlock = 256;
constexpr int64_t kGPUPlanBlock = 32;
constexpr llvm::StringLiteral kPlanBlockAttr = "moe.plan_block";

/// The capacity of one expert in a group of `groupTokens` tokens with
/// `slots` slots each, as i32: the capacity attribute's (in the order of
/// CapacityAttr::computeCapacity, f * (n * K / E)), or one that never
/// binds without one.
Value groupCapacity(Emitter &em, CapacityAttr capacity, Value groupTokens,
                    Value slots, int64_t numExperts) {
  if (!capacity)
    return em.toI32(em.mul(groupTokens, slots));
  if (std::optional<int64_t> absolute = capacity.getAbsolute())
    return em.i32(*absolute);
  double factor = capacity.getFactor().getValueAsDouble();
  Value balanced =
      em.div(em.mul(em.indexToF64(groupTokens), em.indexToF64(slots)),
             em.f64(numExperts));
  return em.toI32(em.ceilCapacity(em.mul(em.f64(factor), balanced)));
}

/// The plan of one group of all the tokens, in parallel over blocks of
/// `blockTokens` tokens (a stable counting sort, so it builds the same
/// plan as the sequential form below, bit for bit):
///  1. per block, the slots it sends to each expert (`ranks[block, e]`);
///  2. per expert, an exclusive scan of those counts over the blocks,
///     which turns `ranks[block, e]` into the rank of the block's first
///     slot among the expert's slots; the expert serves min(total, cap),
///     stored in offsets[e + 1];
///  3. the offsets, a sequential prefix sum in place over the experts;
///  4. per block again, each slot's rank (the block's base plus the
///     slots before it in the block): ranks below the capacity are rows,
///     the others are dropped (-1) or passed through (-2).
/// A slot is served exactly when fewer than `cap` slots before it chose
/// its expert, which is the sequential rule when overflow never reroutes.
void emitBlockedPlan(Emitter &em, Value indices, Value cap, bool passthrough,
                     int64_t numExperts, int64_t blockTokens, Value perm,
                     Value offsets, Value rows) {
  ImplicitLocOpBuilder &b = em.b;
  Type i32 = b.getI32Type();
  Value zero = em.idx(0), one = em.idx(1);
  Value E = em.idx(numExperts);
  Value numTokens = em.dim(indices, 0);
  Value slots = em.dim(indices, 1);
  Value block = em.idx(blockTokens);
  Value numBlocks = arith::CeilDivUIOp::create(b, numTokens, block);
  Value ranks = em.alloc({ShapedType::kDynamic, numExperts}, i32, {numBlocks});
  // body(t, j, e) (e an index) for the slots of block `blk` whose expert
  // is in range, in order; `outOfRange(t, j)` for the others.
  auto forBlockSlots = [&](Value blk,
                           function_ref<void(Value, Value, Value)> body,
                           function_ref<void(Value, Value)> outOfRange) {
    Value begin = em.mul(blk, block);
    Value end = em.minI(em.add(begin, block), numTokens);
    em.loop(begin, end, [&](Value t) {
      em.loop(zero, slots, [&](Value j) {
        Value e = em.load(indices, {t, j});
        em.ifThen(
            em.inRange(e, zero, E), [&] { body(t, j, em.toIndex(e)); },
            [&] { outOfRange(t, j); });
      });
    });
  };
  parallelLoop(em, zero, numBlocks, [&](Value blk) {
    em.loop(zero, E, [&](Value e) { em.store(em.i32(0), ranks, {blk, e}); });
    forBlockSlots(
        blk,
        [&](Value, Value, Value e) {
          em.store(em.add(em.load(ranks, {blk, e}), em.i32(1)), ranks,
                   {blk, e});
        },
        [](Value, Value) {});
  });
  parallelLoop(em, zero, E, [&](Value e) {
    Value total = em.loop(zero, numBlocks, ValueRange{em.i32(0)},
                          [&](Value blk, ValueRange acc) -> SmallVector<Value> {
                            Value n = em.load(ranks, {blk, e});
                            em.store(acc[0], ranks, {blk, e});
                            return {em.add(acc[0], n)};
                          })[0];
    em.store(em.minI(total, cap), offsets, {em.add(e, one)});
  });
  em.store(em.i32(0), offsets, {zero});
  em.loop(zero, E, [&](Value e) {
    Value e1 = em.add(e, one);
    em.store(em.add(em.load(offsets, {e}), em.load(offsets, {e1})), offsets,
             {e1});
  });
  em.fill(perm, em.i32(-1));
  parallelLoop(em, zero, numBlocks, [&](Value blk) {
    forBlockSlots(
        blk,
        [&](Value t, Value j, Value e) {
          Value rank = em.load(ranks, {blk, e});
          em.store(em.add(rank, em.i32(1)), ranks, {blk, e});
          em.ifThen(
              em.lt(rank, cap),
              [&] {
                Value row = em.add(em.load(offsets, {e}), rank);
                em.store(em.toI32(t), perm, {em.toIndex(row)});
                em.store(row, rows, {t, j});
              },
              [&] { em.store(em.i32(passthrough ? -2 : -1), rows, {t, j}); });
        },
        [&](Value t, Value j) { em.store(em.i32(-1), rows, {t, j}); });
  });
}

/// The sequential plan, for token groups and for capacity that reroutes
/// (whose choices depend on every earlier slot's).
void emitSequentialPlan(Emitter &em, DispatchPlanOp op, Value indices,
                        Value perm, Value offsets, Value rows) {
  Type i32 = em.b.getI32Type();
  int64_t numExperts = op.getNumExperts();
  Value E = em.idx(numExperts);
  Value zero = em.idx(0), one = em.idx(1);
  Value numTokens = em.dim(indices, 0);
  Value slots = em.dim(indices, 1);

  // dest[t, j]: the expert that serves slot (t, j), or -1 (nothing) / -2
  // (passthrough).
  Value dest = em.alloc({ShapedType::kDynamic, ShapedType::kDynamic}, i32,
                        {numTokens, slots});
  Value count = em.alloc({numExperts}, i32, {});
  em.fill(dest, em.i32(-1));

  CapacityAttr capacity = op.getCapacityAttr();
  Value scores = op.getScores() ? toBuffer(em.b, op.getScores()) : Value();
  Value groups = op.getGroups() ? toBuffer(em.b, op.getGroups()) : Value();
  Value numGroups = groups ? em.sub(em.dim(groups, 0), one) : one;

  em.loop(zero, numGroups, [&](Value g) {
    Value begin = zero, end = numTokens;
    if (groups) {
      begin = em.clampIndex(em.load(groups, {g}), zero, numTokens);
      end = em.clampIndex(em.load(groups, {em.add(g, one)}), begin, numTokens);
    }
    Value cap =
        groupCapacity(em, capacity, em.sub(end, begin), slots, numExperts);
    em.fill(count, em.i32(0));
    em.loop(begin, end, [&](Value t) {
      em.loop(zero, slots, [&](Value j) {
        Value e = em.load(indices, {t, j});
        em.ifThen(em.inRange(e, zero, E), [&] {
          Value ei = em.toIndex(e);
          Value used = em.load(count, {ei});
          Value room = em.lt(used, cap);
          auto serve = [&](Value expert, Value expertIndex) {
            Value n = em.load(count, {expertIndex});
            em.store(em.add(n, em.i32(1)), count, {expertIndex});
            em.store(expert, dest, {t, j});
          };
          OverflowPolicy policy =
              capacity ? capacity.getOverflow() : OverflowPolicy::drop;
          em.ifThen(
              room, [&] { serve(e, ei); },
              [&] {
                if (policy == OverflowPolicy::passthrough) {
                  em.store(em.i32(-2), dest, {t, j});
                  return;
                }
                if (policy != OverflowPolicy::reroute || !scores)
                  return; // dropped: dest stays -1
                // Next-best expert with room that the token has not chosen.
                Value alt =
                    em.argmax(
                          zero, E,
                          [&](Value c) {
                            Value c32 = em.toI32(c);
                            Value hasRoom = em.lt(em.load(count, {c}), cap);
                            Value chosen = em.loop(
                                zero, slots, ValueRange{hasRoom},
                                [&](Value jj,
                                    ValueRange cc) -> SmallVector<Value> {
                                  Value original =
                                      em.eq(em.load(indices, {t, jj}), c32);
                                  Value earlier = em.andI(
                                      em.cmpi(arith::CmpIPredicate::slt, jj, j),
                                      em.eq(em.load(dest, {t, jj}), c32));
                                  Value clash = em.orI(original, earlier);
                                  return {em.andI(cc[0], em.notI(clash))};
                                })[0];
                            return chosen;
                          },
                          [&](Value c) {
                            return em.sanitize(em.loadF(scores, {t, c}));
                          })
                        .first;
                em.ifThen(em.ge(alt, zero), [&] { serve(em.toI32(alt), alt); });
              });
        });
      });
    });
  });

  // Offsets: exclusive prefix sum of the served slots per expert.
  em.fill(count, em.i32(0));
  em.loop(zero, numTokens, [&](Value t) {
    em.loop(zero, slots, [&](Value j) {
      Value d = em.load(dest, {t, j});
      em.ifThen(em.ge(d, em.i32(0)), [&] {
        Value di = em.toIndex(d);
        em.store(em.add(em.load(count, {di}), em.i32(1)), count, {di});
      });
    });
  });
  em.store(em.i32(0), offsets, {zero});
  em.loop(zero, E, [&](Value e) {
    Value next = em.add(em.load(offsets, {e}), em.load(count, {e}));
    em.store(next, offsets, {em.add(e, one)});
    em.store(em.load(offsets, {e}), count, {e}); // count becomes a cursor
  });
  // Rows, in token order within each expert.
  em.fill(perm, em.i32(-1));
  em.loop(zero, numTokens, [&](Value t) {
    em.loop(zero, slots, [&](Value j) {
      Value d = em.load(dest, {t, j});
      Value served = em.ge(d, em.i32(0));
      em.ifThen(
          served,
          [&] {
            Value di = em.toIndex(d);
            Value row = em.load(count, {di});
            em.store(em.add(row, em.i32(1)), count, {di});
            em.store(em.toI32(t), perm, {em.toIndex(row)});
            em.store(row, rows, {t, j});
          },
          [&] {
            em.store(d, rows, {t, j});
          });
    });
  });
}

void lowerDispatchPlan(ImplicitLocOpBuilder &b, DispatchPlanOp op,
                       SmallVectorImpl<Value> &results, int64_t blockTokens) {
  Emitter em(b);
  Value indices = toBuffer(b, op.getIndices());
  Value numTokens = em.dim(indices, 0);
  Value slots = em.dim(indices, 1);

  auto permType = cast<RankedTensorType>(op.getPerm().getType());
  auto offsetsType = cast<RankedTensorType>(op.getOffsets().getType());
  auto rowsType = cast<RankedTensorType>(op.getRows().getType());
  Value perm = em.allocLike(permType, permType.isDynamicDim(0)
                                          ? ValueRange{em.mul(numTokens, slots)}
                                          : ValueRange{});
  Value offsets = em.allocLike(offsetsType, {});
  Value rows = em.allocMatrixLike(rowsType, numTokens, slots);

  CapacityAttr capacity = op.getCapacityAttr();
  OverflowPolicy policy =
      capacity ? capacity.getOverflow() : OverflowPolicy::drop;
  bool reroutes = policy == OverflowPolicy::reroute && op.getScores();
  if (op.getGroups() || reroutes) {
    emitSequentialPlan(em, op, indices, perm, offsets, rows);
  } else {
    Value cap =
        groupCapacity(em, capacity, numTokens, slots, op.getNumExperts());
    emitBlockedPlan(em, indices, cap, policy == OverflowPolicy::passthrough,
                    op.getNumExperts(), blockTokens, perm, offsets, rows);
  }
  results.push_back(toTensor(b, perm, permType));
  results.push_back(toTensor(b, offsets, offsetsType));
  results.push_back(toTensor(b, rows, rowsType));
}

//===----------------------------------------------------------------------===//
// moe.grouped_matmul
//===----------------------------------------------------------------------===//

/// The epilogue on vectors (or scalars) of accumulators: `acc` holds the
/// tile's columns (for silu_glu the gate columns then the up columns);
/// returns one value per output column.
SmallVector<Value> tileEpilogue(Emitter &em, Epilogue epilogue,
                                ArrayRef<Value> acc, Value scale) {
  ImplicitLocOpBuilder &b = em.b;
  auto splat = [&](Value like, double v) {
    return em.f32Like(like.getType(), v);
  };
  SmallVector<Value> out;
  if (epilogue == Epilogue::silu_glu) {
    size_t half = acc.size() / 2;
    for (size_t i = 0; i < half; ++i) {
      Value g = acc[i], one = splat(g, 1.0);
      Value sig = em.div(one, em.add(one, em.exp(arith::NegFOp::create(b, g))));
      out.push_back(em.mul(em.mul(g, sig), acc[i + half]));
    }
    return out;
  }
  for (Value v : acc) {
    switch (epilogue) {
    case Epilogue::none:
    case Epilogue::silu_glu:
      break;
    case Epilogue::gelu: {
      Value erf = math::ErfOp::create(b, em.mul(v, splat(v, M_SQRT1_2)));
      v = em.mul(em.mul(splat(v, 0.5), v), em.add(splat(v, 1.0), erf));
      break;
    }
    case Epilogue::relu: {
      Value z = splat(v, 0.0);
      v = em.select(em.cmpf(arith::CmpFPredicate::OGT, v, z), v, z);
      break;
    }
    case Epilogue::scale:
      v = em.mul(v, scale);
      break;
    }
    out.push_back(v);
  }
  return out;
}

/// The epilogue of element (i, j) of an accumulator buffer (its up half at
/// column j + width for silu_glu).
Value applyEpilogue(Emitter &em, Epilogue epilogue, Value acc, Value i, Value j,
                    Value width, Value rowScale, Value row) {
  SmallVector<Value> values = {em.loadF(acc, {i, j})};
  if (epilogue == Epilogue::silu_glu)
    values.push_back(em.loadF(acc, {i, em.add(j, width)}));
  Value scale =
      epilogue == Epilogue::scale ? em.loadF(rowScale, {row}) : Value();
  return tileEpilogue(em, epilogue, values, scale).front();
}

//===----------------------------------------------------------------------===//
// moe.grouped_matmul, f32: the panel kernel
//===----------------------------------------------------------------------===//
//
// Each expert's rows are packed (through the gather map, so no permuted copy
// of the tokens exists) into panels of 32 rows stored k-major:
// `panels[p, k, 0..31]`. The register tile is 32 rows (two vectors of 16
// lanes) by 12 weight rows, 24 vector accumulators: per k it loads the two
// panel vectors and broadcasts 12 scalars of W, read in place in the
// checkpoint's `[out, in]` layout, so weights need no repacking. For
// `silu_glu` the 12 weight rows are 6 gate rows and the 6 matching up rows,
// and the activation runs on the accumulators (the GEMM epilogue).
//
// Experts with fewer than `panelMinRows` rows (decode; kPanelMinRows by
// default) take a dot-product kernel instead that streams each weight row
// once along k.
//
// Work items are (column block, expert) pairs in one `scf.parallel`, column
// block major, so a static split gives every thread an equal share of every
// expert's columns however skewed the expert loads are.

/// How one CPU grouped matmul is cut up: its register tile, the steps of
/// k per block (0: the default rule below), its work items per expert
/// along the columns (CPUTargetModel::columnChunks), and the fewest rows an
/// expert needs for the panel kernel (fewer take the decode kernel; 0 in
/// the pass's defaults: kPanelMinRows, or kAMXPanelMinRows). The
/// bytes of token panels kept in L2 while weight tiles stream past them
/// are half the target's L2 (CPUTargetModel::l2CacheBytes).
struct GroupedMatmulSchedule {
  CPUTile tile;
  int64_t depthBlock = 0;
  int64_t columnChunks = 4;
  int64_t panelMinRows = 0;
};
/// The decode threshold when neither the op nor the pass sets one: the
/// decode kernel takes the experts that one of its 4-row blocks covers
/// (1 to 4 rows, each weight row streamed once) and the panel kernel every
/// larger one, padding its rows to a fitted 16-row panel. With 5 to 15
/// rows the decode kernel's second block of 4 re-read each weight tile
/// from cache after the first had waited for it from memory, where the
/// single panel's multiplies overlap the weights' stream: one switch-like
/// expert of 8 rows (d = 768, ffn = 3072, weights from DRAM) 0.59 -> 0.43
/// ms in bf16 (docs/design.md, "Decode kernel"). bf16 ops on AMX keep 16:
/// their panels are 32 rows and the AMX kernel was measured on larger
/// experts only.
constexpr int64_t kPanelMinRows = 5;
constexpr int64_t kAMXPanelMinRows = 16;
/// k steps of the panel kernel per 64-byte line of a weight row (16 f32
/// values or 16 pairs of bf16 values): one prefetch of each of the next
/// tile's rows per this many steps.
constexpr int64_t kPrefetchSteps = 16;
/// k steps (values of k, pairs of them for bf16) per block of k, for
/// depths whose panels do not fit L2 whole (see lowerGroupedMatmulFast).
constexpr int64_t kDefaultDepthBlock = 1024;
/// The discardable attributes that set one op's register tile, k blocks,
/// work items per expert and decode threshold (GroupedMatmulSchedule).
constexpr llvm::StringLiteral kTileAttr = "moe.tile";
constexpr llvm::StringLiteral kDepthBlockAttr = "moe.depth_block";
constexpr llvm::StringLiteral kColumnChunksAttr = "moe.column_chunks";
constexpr llvm::StringLiteral kPanelMinRowsAttr = "moe.panel_min_rows";
constexpr llvm::StringLiteral kTileRule =
    "expected 1 to 4 panel vectors and an even number of columns from 2 to "
    "32";

VectorType vec16(OpBuilder &b) {
  return VectorType::get({kLanes}, b.getF32Type());
}

/// A constant vector of `type` (i32 elements) with every lane `v`.
Value i32Splat(ImplicitLocOpBuilder &b, VectorType type, int64_t v) {
  return arith::ConstantOp::create(
      b, DenseElementsAttr::get(type, b.getI32IntegerAttr(v)));
}

/// f32 values (a vector) rounded to bf16 to nearest even, NaN kept quiet.
/// With `hardware`, arith.truncf (vcvtneps2bf16 on AVX-512 BF16); otherwise
/// in integer ops, since LLVM would call compiler-rt's __truncsfbf2 per
/// lane.
Value roundToBF16(Emitter &em, Value v, bool hardware) {
  ImplicitLocOpBuilder &b = em.b;
  auto type = cast<VectorType>(v.getType());
  auto bf16s = VectorType::get(type.getShape(), b.getBF16Type());
  if (hardware)
    return arith::TruncFOp::create(b, bf16s, v);
  auto i32s = VectorType::get(type.getShape(), b.getI32Type());
  auto splat = [&](int64_t c) { return i32Splat(b, i32s, c); };
  Value bits = vector::BitCastOp::create(b, i32s, v);
  Value high = arith::ShRUIOp::create(b, bits, splat(16));
  Value lsb = arith::AndIOp::create(b, high, splat(1));
  Value rounded = arith::ShRUIOp::create(
      b,
      arith::AddIOp::create(b, bits,
                            arith::AddIOp::create(b, lsb, splat(0x7FFF))),
      splat(16));
  Value nan = em.cmpf(arith::CmpFPredicate::UNO, v, v);
  Value quiet = arith::OrIOp::create(b, high, splat(0x40));
  Value result = em.select(nan, quiet, rounded);
  auto i16s = VectorType::get(type.getShape(), b.getI16Type());
  return vector::BitCastOp::create(b, bf16s,
                                   arith::TruncIOp::create(b, i16s, result));
}

/// An f32 scalar rounded to bf16 as roundToBF16 does, widened back to f32.
Value roundScalarToBF16(Emitter &em, Value v, bool hardware) {
  ImplicitLocOpBuilder &b = em.b;
  auto one = VectorType::get({1}, b.getF32Type());
  Value rounded = vector::ExtractOp::create(
      b, roundToBF16(em, vector::BroadcastOp::create(b, one, v), hardware),
      ArrayRef<int64_t>{0});
  return arith::ExtFOp::create(b, b.getF32Type(), rounded);
}

/// acc + a . b over pairs of bf16 lanes: lane i of the f32 result adds
/// a[2i+1] * b[2i+1], then a[2i] * b[2i] (products of bf16 values are exact
/// in f32). With `hardware`, AVX-512 BF16's vdpbf16ps; otherwise the same
/// sum in two f32 FMAs on the widened halves (bf16 is the top half of an
/// f32), which differs only where vdpbf16ps flushes denormals.
Value bf16PairDot(Emitter &em, Value acc, Value a, Value w, bool hardware) {
  ImplicitLocOpBuilder &b = em.b;
  if (hardware)
    return x86vector::DotBF16Op::create(b, acc.getType(), acc, a, w);
  auto i32s = VectorType::get({kLanes}, b.getI32Type());
  auto splat = [&](int64_t v) { return i32Splat(b, i32s, v); };
  Value shift = splat(16), high = splat(int64_t(0xFFFF0000u) - (1ll << 32));
  auto halves = [&](Value v) -> std::pair<Value, Value> {
    Value bits = vector::BitCastOp::create(b, i32s, v);
    Value even = arith::ShLIOp::create(b, bits, shift);
    Value odd = arith::AndIOp::create(b, bits, high);
    return {vector::BitCastOp::create(b, acc.getType(), even),
            vector::BitCastOp::create(b, acc.getType(), odd)};
  };
  auto [aEven, aOdd] = halves(a);
  auto [wEven, wOdd] = halves(w);
  Value sum = vector::FMAOp::create(b, aOdd, wOdd, acc);
  return vector::FMAOp::create(b, aEven, wEven, sum);
}

/// The buffers and extents both grouped_matmul lowerings start from, and
/// the fresh output buffer.
struct GroupedMatmulOperands {
  Value x, w, offsets, gather, rowScale;
  Value numRows, depth, wRows, width, out;
};

GroupedMatmulOperands getGroupedMatmulOperands(Emitter &em,
                                               GroupedMatmulOp op) {
  ImplicitLocOpBuilder &b = em.b;
  auto resultType = cast<RankedTensorType>(op.getType());
  GroupedMatmulOperands o;
  o.x = toBuffer(b, op.getInput());
  o.w = toBuffer(b, op.getWeight());
  o.offsets = toBuffer(b, op.getOffsets());
  o.gather = op.getGather() ? toBuffer(b, op.getGather()) : Value();
  o.rowScale = op.getRowScale() ? toBuffer(b, op.getRowScale()) : Value();
  o.numRows = em.dim(o.gather ? o.gather : o.x, 0);
  o.depth = em.dim(o.x, 1);
  o.wRows = em.dim(o.w, 1);
  o.width = em.idx(resultType.getDimSize(1));
  if (resultType.isDynamicDim(1))
    o.width = op.getEpilogue() == Epilogue::silu_glu
                  ? (Value)arith::DivUIOp::create(b, o.wRows, em.idx(2))
                  : o.wRows;
  SmallVector<Value> dyn;
  if (resultType.isDynamicDim(0))
    dyn.push_back(o.numRows);
  if (resultType.isDynamicDim(1))
    dyn.push_back(o.width);
  o.out = em.allocLike(resultType, dyn);
  return o;
}

/// Stores rows [vbase, vbase + 16) of a tile of output columns tileStart,
/// tileStart + 1, ..., given one vector of the 16 rows per column:
/// transposed in registers, then each row below `hi` is one masked store of
/// the columns in [ownLo, ownHi).
void storeTileRows(Emitter &em, Value out, Value vbase, Value hi,
                   Value tileStart, Value ownLo, Value ownHi,
                   ArrayRef<Value> columns) {
  ImplicitLocOpBuilder &b = em.b;
  int64_t numCols = columns.size();
  auto colsType = VectorType::get({numCols}, b.getIndexType());
  Value cols = em.add(vector::BroadcastOp::create(b, colsType, tileStart),
                      vector::StepOp::create(b, colsType));
  auto cmp = [&](arith::CmpIPredicate p, Value bound) {
    return arith::CmpIOp::create(
        b, p, cols, vector::BroadcastOp::create(b, colsType, bound));
  };
  Value owned = em.andI(cmp(arith::CmpIPredicate::sge, ownLo),
                        cmp(arith::CmpIPredicate::slt, ownHi));
  auto blockType = VectorType::get({numCols, kLanes}, b.getF32Type());
  Value block = em.f32Like(blockType, 0.0);
  for (int64_t i = 0; i < numCols; ++i)
    block =
        vector::InsertOp::create(b, columns[i], block, ArrayRef<int64_t>{i});
  Value rows = vector::TransposeOp::create(b, block, {1, 0});
  for (int64_t l = 0; l < kLanes; ++l) {
    Value row = em.add(vbase, em.idx(l));
    em.ifThen(em.lt(row, hi), [&] {
      vector::MaskedStoreOp::create(
          b, out, ValueRange{row, tileStart}, owned,
          vector::ExtractOp::create(b, rows, ArrayRef<int64_t>{l}));
    });
  }
}

/// Whether Linux lets this process use AMX tile data: asks for it
/// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), which succeeds
/// again once granted). A raw syscall, so the generated code needs no libc
/// wrapper; the answer is per process, for all its threads.
Value emitAMXTilesRequest(Emitter &em) {
  ImplicitLocOpBuilder &b = em.b;
  Type i64 = b.getI64Type();
  auto constant = [&](int64_t v) {
    return arith::ConstantIntOp::create(b, i64, v).getResult();
  };
  constexpr int64_t kSysArchPrctl = 158; // x86-64 Linux
  auto call = LLVM::InlineAsmOp::create(
      b, i64,
      ValueRange{constant(kSysArchPrctl), constant(kArchReqXcompPerm),
                 constant(kXfeatureXtiledata)},
      "syscall",
      "={rax},{rax},{rdi},{rsi},~{rcx},~{r11},~{memory},~{dirflag},~{fpsr},~{"
      "flags}",
      /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None, LLVM::AsmDialectAttr(),
      ArrayAttr());
  return em.eq(call.getResult(0), constant(0));
}

/// Whether the CPU lowering takes lowerGroupedMatmulFast's panel and
/// decode kernels: f32 tokens, results and row scales, f32 or bf16 weights.
bool takesPanelKernels(GroupedMatmulOp op) {
  auto isF32 = [](Value v) { return !v || getElementTypeOrSelf(v).isF32(); };
  return isF32(op.getResult()) && isF32(op.getInput()) &&
         (isF32(op.getWeight()) ||
          getElementTypeOrSelf(op.getWeight()).isBF16()) &&
         isF32(op.getRowScale());
}

/// Panels of a consumer grouped matmul that a producer's epilogues write
/// (getPanelConsumer): for each expert on the panel kernels the producer
/// stores its output columns, one vector of 16 rows each, straight into
/// the consumer's panels (f32 rows, or bf16 pairs of adjacent columns),
/// where the consumer would otherwise store the rows and then pack them
/// again; an expert on the decode kernel still gets its rows. `bf16` is
/// the consumer's layout; the producer sets `panels`.
struct PanelSink {
  bool bf16 = false;
  Value panels;
};
/// The consumers' panels, by consumer, while the pass lowers.
using PanelHandoff = DenseMap<Operation *, Value>;

Value lowerGroupedMatmulFast(ImplicitLocOpBuilder &b, GroupedMatmulOp op,
                             bool bf16Dot,
                             const GroupedMatmulSchedule &schedule,
                             const CPUTargetModel &model, PanelSink *sink,
                             Value givenPanels) {
  Emitter em(b);
  const CPUTile tile = schedule.tile;
  const int64_t depthBlock = schedule.depthBlock;
  const int64_t columnChunks = schedule.columnChunks;
  Value panelMinRows = em.idx(schedule.panelMinRows);
  // Bytes of token panels per block: half the L2, so that the block and
  // the weight tiles streaming past it both stay there.
  const int64_t panelBlockBytes = std::max<int64_t>(model.l2CacheBytes / 2, 1);
  // The register tile: kPanelVecs vectors of 16 rows by kTileCols weight
  // rows.
  const int64_t kPanelVecs = tile.panelVectors,
                kPanelRows = kPanelVecs * kLanes, kTileCols = tile.columns;
  // bf16 weights: operands are rounded to bf16 (the tokens as they are
  // packed), k runs in pairs, and products accumulate in f32.
  bool bf16 = getElementTypeOrSelf(op.getWeight()).isBF16();
  Type bf16Type = b.getBF16Type();
  auto pairVec = VectorType::get({2 * kLanes}, bf16Type);
  auto wideVec = VectorType::get({2 * kLanes}, b.getF32Type());
  auto resultType = cast<RankedTensorType>(op.getType());
  Value zero = em.idx(0), one = em.idx(1);
  GroupedMatmulOperands o = getGroupedMatmulOperands(em, op);
  Value x = o.x, w = o.w, offsets = o.offsets, gather = o.gather,
        rowScale = o.rowScale, numRows = o.numRows, depth = o.depth,
        width = o.width, out = o.out;
  Epilogue epilogue = op.getEpilogue();
  bool glu = epilogue == Epilogue::silu_glu;
  Value E = em.idx(op.getNumExperts());
  Value inputRows = em.dim(x, 0);
  VectorType vt = vec16(b);
  Value zeroVec = em.f32Like(vt, 0.0);
  Value panelRows = em.idx(kPanelRows);

  auto expertRows = [&](Value e) -> std::pair<Value, Value> {
    Value lo = em.clampIndex(em.load(offsets, {e}), zero, numRows);
    Value hi = em.clampIndex(em.load(offsets, {em.add(e, one)}), lo, numRows);
    return {lo, hi};
  };
  // Source row of plan row r, clamped, and whether it is valid.
  auto sourceRow = [&](Value r) -> std::pair<Value, Value> {
    if (!gather)
      return {r, arith::ConstantIntOp::create(b, b.getI1Type(), 1)};
    Value src = em.load(gather, {r});
    Value valid = em.inRange(src, zero, inputRows);
    return {em.clampIndex(src, zero, em.sub(inputRows, one)), valid};
  };
  auto ceilDiv = [&](Value v, int64_t d) {
    return arith::DivUIOp::create(b, em.add(v, em.idx(d - 1)), em.idx(d))
        .getResult();
  };

  // Panel starts: pstart[e] = panels of the experts before e.
  Value pstart =
      em.alloc({ShapedType::kDynamic}, b.getIndexType(), {em.add(E, one)});
  em.store(zero, pstart, {zero});
  em.loop(zero, E, [&](Value e) {
    Value lo, hi;
    std::tie(lo, hi) = expertRows(e);
    Value n = em.sub(hi, lo);
    Value panels =
        em.select(em.ge(n, panelMinRows), ceilDiv(n, kPanelRows), zero);
    em.store(em.add(em.load(pstart, {e}), panels), pstart, {em.add(e, one)});
  });
  Value numPanels = em.load(pstart, {E});
  // bf16 panels hold pairs: panels[p, k / 2, 2 * row + k % 2], with room
  // for whole 32-wide chunks of k (the tail is zero).
  auto allocPanels = [&](bool pairs, Value depth) {
    if (!pairs)
      return em.alloc({ShapedType::kDynamic, ShapedType::kDynamic, kPanelRows},
                      b.getF32Type(), {numPanels, depth});
    Value depthChunks = ceilDiv(depth, 2 * kLanes);
    return em.alloc(
        {ShapedType::kDynamic, ShapedType::kDynamic, 2 * kPanelRows}, bf16Type,
        {numPanels, em.mul(depthChunks, em.idx(kLanes))});
  };
  // The consumer's panels, when this matmul writes them (a whole number
  // of 32-wide steps of k for pairs, so there is no zero tail to write).
  if (sink)
    sink->panels = allocPanels(sink->bf16, width);
  Value panels = givenPanels ? givenPanels : allocPanels(bf16, depth);
  Value depthChunks = ceilDiv(depth, 2 * kLanes);
  // Pack, one panel per work item (so one heavily loaded expert, such as
  // a shared expert, is packed by every thread); padding rows are zero.
  // Given panels were written by the producer of the rows.
  if (!givenPanels) {
    Value panelExpert =
        em.alloc({ShapedType::kDynamic}, b.getIndexType(), {numPanels});
    em.loop(zero, E, [&](Value e) {
      em.loop(em.load(pstart, {e}), em.load(pstart, {em.add(e, one)}),
              [&](Value p) { em.store(e, panelExpert, {p}); });
    });
    parallelLoop(em, zero, numPanels, [&](Value p) {
      Value e = em.load(panelExpert, {p});
      Value lo, hi;
      std::tie(lo, hi) = expertRows(e);
      Value first = em.mul(em.sub(p, em.load(pstart, {e})), panelRows);
      em.loop(zero, panelRows, [&](Value j) {
        Value m = em.add(first, j);
        // Padding rows (past hi) re-read the last row and store zeros.
        Value r = em.add(lo, m);
        Value src, valid;
        std::tie(src, valid) = sourceRow(em.minI(r, em.sub(hi, one)));
        valid = em.andI(valid, em.lt(r, hi));
        if (!bf16) {
          em.loop(zero, depth, [&](Value k) {
            Value v = em.select(valid, em.loadF(x, {src, k}), em.f32(0.0));
            em.store(v, panels, {p, k, j});
          });
          return;
        }
        // 32 values of k at a time, rounded to bf16 and stored as 16 pairs.
        Value zeroWide = em.f32Like(wideVec, 0.0);
        Value col = em.mul(j, em.idx(2));
        em.loop(zero, depthChunks, [&](Value c) {
          Value v = vector::TransferReadOp::create(
              b, wideVec, x, ValueRange{src, em.mul(c, em.idx(2 * kLanes))},
              em.f32(0.0), ArrayRef<bool>{false});
          Value h = roundToBF16(em, em.select(valid, v, zeroWide), bf16Dot);
          Value k2 = em.mul(c, em.idx(kLanes));
          for (int64_t i = 0; i < kLanes; ++i) {
            Value pair = vector::ExtractStridedSliceOp::create(
                b, h, ArrayRef<int64_t>{2 * i}, ArrayRef<int64_t>{2},
                ArrayRef<int64_t>{1});
            vector::StoreOp::create(b, pair, panels,
                                    ValueRange{p, em.add(k2, em.idx(i)), col});
          }
        });
      });
    });
  }

  // A work item's 12 weight rows: 12 consecutive rows, or 6 gate rows and
  // the 6 matching up rows. When the width is static and holds a whole
  // tile, the last tile of a row is shifted back to end at the width (its
  // overlap with the previous tile is not stored again), so the rows are
  // one base plus constant offsets; otherwise they are clamped.
  int64_t outCols = glu ? kTileCols / 2 : kTileCols;
  int64_t staticWidth = resultType.getDimSize(1);
  bool shifted = !ShapedType::isDynamic(staticWidth) && staticWidth >= outCols;
  Value colBlocks = ceilDiv(width, outCols);
  Value lastCol = em.sub(width, one);
  auto tileRows = [&](Value c0) {
    SmallVector<Value> rows;
    for (int64_t i = 0; i < kTileCols; ++i) {
      Value c = em.add(c0, em.idx(i % outCols));
      if (!shifted)
        c = em.minI(c, lastCol);
      rows.push_back(i < outCols ? c : em.add(c, width));
    }
    return rows;
  };
  // The first output column of column block jb's tile.
  auto tileStartOf = [&](Value jb) {
    Value c0 = em.mul(jb, em.idx(outCols));
    return shifted ? em.minI(c0, em.idx(staticWidth - outCols)) : c0;
  };
  // The weight rows of the tile after column block jb's (its own for the
  // last block), which the kernels prefetch while they multiply jb's.
  auto nextTileRows = [&](Value jb) {
    return tileRows(
        tileStartOf(em.minI(em.add(jb, one), em.sub(colBlocks, one))));
  };
  // k in whole vectors (unmasked reads), then the zero-padded tail; a
  // vector is 16 values of k in f32, 32 in bf16.
  int64_t kVec = bf16 ? 2 * kLanes : kLanes;
  Value depthMain =
      em.mul(arith::DivUIOp::create(b, depth, em.idx(kVec)), em.idx(kVec));
  auto dotOverK =
      [&](ValueRange inits,
          function_ref<SmallVector<Value>(Value, bool, ValueRange)> body) {
        SmallVector<Value> acc = em.loop(
            zero, depthMain, inits,
            [&](Value k0, ValueRange c) { return body(k0, true, c); }, kVec);
        return em.loop(
            depthMain, depth, acc,
            [&](Value k0, ValueRange c) { return body(k0, false, c); }, kVec);
      };
  auto readVec = [&](Value buffer, ValueRange idx, bool inBounds) -> Value {
    return vector::TransferReadOp::create(b, vt, buffer, idx, em.f32(0.0),
                                          ArrayRef<bool>{inBounds});
  };
  // The decode kernel's operands along k: token values (rounded to bf16
  // for bf16 weights) and weight values.
  auto readTokens = [&](ValueRange idx, bool inBounds) -> Value {
    if (!bf16)
      return readVec(x, idx, inBounds);
    Value v = vector::TransferReadOp::create(b, wideVec, x, idx, em.f32(0.0),
                                             ArrayRef<bool>{inBounds});
    return roundToBF16(em, v, bf16Dot);
  };
  // bf16 weights are only read in whole vectors (their tails are scalar,
  // see the decode kernel).
  auto readWeights = [&](ValueRange idx, bool inBounds) -> Value {
    if (!bf16)
      return readVec(w, idx, inBounds);
    assert(inBounds && "masked bf16 loads become __truncsfbf2 calls");
    return vector::LoadOp::create(b, pairVec, w, idx);
  };
  auto multiplyAdd = [&](Value a, Value wv, Value acc) -> Value {
    if (bf16)
      return bf16PairDot(em, acc, a, wv, bf16Dot);
    return vector::FMAOp::create(b, vt, a, wv, acc);
  };
  // One k step of the panel kernel (k, or the pair 2k and 2k + 1 for
  // bf16): the panel's vectors times broadcast weights of the tile's rows.
  auto panelStep = [&](int64_t vecs, Value e, Value p, Value k,
                       ArrayRef<Value> wr, bool inBounds, ValueRange c) {
    SmallVector<Value> a(vecs);
    for (int64_t v = 0; v < vecs; ++v)
      a[v] = vector::LoadOp::create(
          b, bf16 ? pairVec : vt, panels,
          ValueRange{p, k, em.idx(v * kLanes * (bf16 ? 2 : 1))});
    SmallVector<Value> next;
    for (int64_t i = 0; i < kTileCols; ++i) {
      Value bc;
      if (!bf16) {
        bc = vector::BroadcastOp::create(b, vt, em.load(w, {e, wr[i], k}));
      } else {
        auto pairType = VectorType::get({2}, bf16Type);
        SmallVector<Value> idx = {e, wr[i], em.mul(k, em.idx(2))};
        Value bits;
        if (inBounds) {
          Value pair = vector::LoadOp::create(b, pairType, w, idx);
          bits = vector::ExtractOp::create(
              b,
              vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()),
                                        pair),
              ArrayRef<int64_t>{0});
        } else {
          // The last k of an odd depth: its weight alone in the low half
          // (a scalar load: a masked load of bf16 lanes would make LLVM
          // promote them to f32 and call __truncsfbf2 on CPUs without
          // AVX-512 BF16).
          Value last =
              arith::BitcastOp::create(b, b.getI16Type(), em.load(w, idx));
          bits = arith::ExtUIOp::create(b, b.getI32Type(), last);
        }
        auto i32s = VectorType::get({kLanes}, b.getI32Type());
        bc = vector::BitCastOp::create(
            b, pairVec, vector::BroadcastOp::create(b, i32s, bits));
      }
      for (int64_t v = 0; v < vecs; ++v)
        next.push_back(multiplyAdd(a[v], bc, c[i * vecs + v]));
    }
    return next;
  };

  // Work items are (chunk of column blocks, expert) pairs, chunk major, so
  // a static split of the items gives every thread the same share of every
  // expert's columns, however skewed the expert loads are. Within an item,
  // panels are taken in blocks that stay in L2 while the chunk's weight
  // tiles stream past them.
  //
  // AMX (model.amxBF16, bf16 weights): the panels above, 32 rows of pairs
  // of k, are what a tile multiply takes as its second operand, 16 rows of
  // k pairs by 16 token rows; 16 weight rows of 32 values of k, read in
  // place from the [E, N, K] layout, are its first. So an expert of at
  // least panelMinRows rows multiplies a panel by amxCols weight rows in
  // four tile accumulators (gate and up rows, or two blocks of 16 columns,
  // by the panel's two halves), the whole depth at once; the results are
  // the transposed tile, one vector of 16 rows per column, which is the
  // AVX-512 kernel's orientation, so the same epilogue and stores follow.
  // It needs the 32-row panels, whole 32-wide steps of k (weight tiles
  // are not masked) and a static width of at least one tile (the last
  // tile is shifted back as above). With model.amxRuntimeCheck the code
  // asks the operating system for the tiles once per call and takes the
  // AVX-512 kernel when they are refused; otherwise the compiler asked in
  // the process that runs the code. Chunks of columns are then a multiple of
  // both kernels' column blocks, so no AMX tile straddles two work items.
  const int64_t amxCols = glu ? 16 : 32;
  int64_t staticDepth =
      cast<RankedTensorType>(op.getInput().getType()).getDimSize(1);
  bool amx = model.amxBF16 && bf16 && kPanelVecs == 2 &&
             !ShapedType::isDynamic(staticDepth) && staticDepth > 0 &&
             staticDepth % 32 == 0 && !ShapedType::isDynamic(staticWidth) &&
             staticWidth >= amxCols;
  int64_t chunkAlign = amx ? std::lcm(outCols, amxCols) / outCols : 1;
  Value chunkBlocks = ceilDiv(colBlocks, columnChunks);
  if (chunkAlign > 1)
    chunkBlocks = em.mul(ceilDiv(chunkBlocks, chunkAlign), em.idx(chunkAlign));
  Value amxReady =
      amx && model.amxRuntimeCheck ? emitAMXTilesRequest(em) : Value();
  // k steps (values of k, or pairs for bf16). When a panel block would
  // hold fewer than two panels of the whole depth and the expert's weights
  // do not stay in the last-level cache, k is taken in blocks
  // (kDefaultDepthBlock steps, or `depthBlock` for every depth above it),
  // so that a panel block holds more panels in the same bytes of L2 and
  // each weight tile is fetched from memory once for all of them
  // (docs/design.md, "Blocks of k", has the measurements: +12-16% for
  // f32 at d = 4096 and 7168; blocking depth 2048, or weights that fit
  // L3, cost 1-20%). The sums of all but the last block wait in
  // `partial`, one vector per accumulator and (panel of the panel block,
  // column block of the chunk): a buffer of each work item (the item's
  // panel blocks reuse it in turn), so its size does not grow with the
  // token count and at most one per thread is live.
  Value steps =
      bf16 ? arith::DivUIOp::create(b, depth, em.idx(2)).getResult() : depth;
  int64_t blockStepsC = depthBlock ? depthBlock : kDefaultDepthBlock;
  int64_t wholeSteps =
      depthBlock ? depthBlock
                 : std::max<int64_t>(panelBlockBytes / (2 * kPanelRows * 4), 1);
  auto weightType = cast<RankedTensorType>(op.getWeight().getType());
  int64_t expertWeightBytes =
      weightType.hasStaticShape()
          ? weightType.getDimSize(1) * weightType.getDimSize(2) * (bf16 ? 2 : 4)
          : INT64_MAX;
  bool oneDepthBlock =
      (!ShapedType::isDynamic(staticDepth) &&
       (bf16 ? staticDepth / 2 : staticDepth) <= wholeSteps) ||
      (!depthBlock && expertWeightBytes < model.lastLevelCacheBytes);
  Value blockSteps = steps, depthBlocks = one, lastDepthBlock;
  if (!oneDepthBlock) {
    Value blocked = em.gt(steps, em.idx(wholeSteps));
    blockSteps = em.select(blocked, em.idx(blockStepsC), steps);
    depthBlocks = em.select(blocked, ceilDiv(steps, blockStepsC), one);
    lastDepthBlock = em.sub(depthBlocks, one);
  }
  // Panels of `stepsPerPanel` k steps in half the L2: the AVX-512 kernel's
  // blocks of k, the AMX kernel's whole depth.
  auto panelsPerBlock = [&](Value stepsPerPanel) -> Value {
    return em.maxI(one,
                   arith::DivUIOp::create(b, em.idx(panelBlockBytes),
                                          em.mul(em.maxI(stepsPerPanel, one),
                                                 em.idx(kPanelRows * 4))));
  };
  Value blockPanels = panelsPerBlock(blockSteps);
  Value amxBlockPanels = panelsPerBlock(steps);
  // Output columns tileStart + i, each one vector of rows [16 v, 16 v + 16)
  // of panel p, into the consumer's panels (PanelSink): the columns in
  // [ownLo, ownHi), as f32 or as bf16 pairs of adjacent columns (the
  // bounds are then even, see getPanelConsumer).
  auto sinkColumns = [&](Value p, int64_t v, Value tileStart, Value ownLo,
                         Value ownHi, ArrayRef<Value> columns) {
    int64_t step = sink->bf16 ? 2 : 1;
    for (int64_t i = 0; i + step <= int64_t(columns.size()); i += step) {
      Value c = em.add(tileStart, em.idx(i));
      em.ifThen(em.andI(em.ge(c, ownLo), em.lt(c, ownHi)), [&] {
        if (!sink->bf16) {
          vector::StoreOp::create(b, columns[i], sink->panels,
                                  ValueRange{p, c, em.idx(v * kLanes)});
          return;
        }
        Value pairs =
            vector::InterleaveOp::create(b, columns[i], columns[i + 1]);
        vector::StoreOp::create(
            b, roundToBF16(em, pairs, bf16Dot), sink->panels,
            ValueRange{p, arith::DivUIOp::create(b, c, em.idx(2)),
                       em.idx(v * 2 * kLanes)});
      });
    }
  };
  Value partial;
  parallelLoop(em, zero, em.mul(em.idx(columnChunks), E), [&](Value item) {
    Value e = arith::RemUIOp::create(b, item, E);
    Value jbLo = em.mul(arith::DivUIOp::create(b, item, E), chunkBlocks);
    Value jbHi = em.minI(em.add(jbLo, chunkBlocks), colBlocks);
    Value lo, hi;
    std::tie(lo, hi) = expertRows(e);
    Value n = em.sub(hi, lo);
    // Runs `body` on column block jb: its weight rows, and a store of
    // output column i of the tile that skips the columns before c0 (they
    // belong to the previous block).
    using StoreFn = function_ref<void(int64_t, Value, Value)>;
    using StoreRowsFn =
        function_ref<void(Value, int64_t, Value, ArrayRef<Value>)>;
    auto withTile =
        [&](Value jb,
            function_ref<void(ArrayRef<Value>, StoreFn, StoreRowsFn)> body) {
          Value c0 = em.mul(jb, em.idx(outCols));
          Value tileStart = tileStartOf(jb);
          SmallVector<Value> wr = tileRows(tileStart);
          auto storeCol = [&](int64_t i, Value row, Value v) {
            Value c = em.add(tileStart, em.idx(i));
            Value owned = em.andI(em.ge(c, c0), em.lt(c, width));
            em.ifThen(owned, [&] { em.storeF(v, out, {row, c}); });
          };
          // Rows [vbase, vbase + 16) of the tile, vector v of panel p,
          // given one vector per output column; the block owns the columns
          // from c0.
          auto storeRows = [&](Value p, int64_t v, Value vbase,
                               ArrayRef<Value> columns) {
            if (sink)
              return sinkColumns(p, v, tileStart, c0, width, columns);
            storeTileRows(em, out, vbase, hi, tileStart, c0, width, columns);
          };
          body(wr, storeCol, storeRows);
        };
    auto avxPanels =
        [&] {
          if (!oneDepthBlock)
            partial =
                em.alloc({ShapedType::kDynamic, ShapedType::kDynamic,
                          kTileCols * kPanelVecs, kLanes},
                         b.getF32Type(),
                         {em.select(em.gt(depthBlocks, one), blockPanels, zero),
                          chunkBlocks});
          Value p0 = em.load(pstart, {e});
          Value p1 = em.load(pstart, {em.add(e, one)});
          // An expert of one panel (at most 32 rows) multiplies each weight
          // tile once, so its time is the weights' stream plus the
          // multiplies unless the next tile arrives while this one's
          // multiplies run: its rows are prefetched into L2 (prefetcht1), a
          // 64-byte line of each per kPrefetchSteps steps. Larger experts
          // re-read each tile from L2 for their other panels, and measured
          // slower with it (docs/design.md, "Prefetching the next tile").
          Value onePanel = em.eq(em.sub(p1, p0), one);
          auto blocks = scf::ForOp::create(b, p0, p1, blockPanels);
          OpBuilder::InsertionGuard blockGuard(b);
          b.setInsertionPoint(blocks.getBody()->getTerminator());
          Value pm = blocks.getInductionVar();
          Value pmHi = em.minI(em.add(pm, blockPanels), p1);
          Value kb = zero;
          std::optional<scf::ForOp> kBlocks;
          if (!oneDepthBlock) {
            kBlocks = scf::ForOp::create(b, zero, depthBlocks, one);
            b.setInsertionPoint(kBlocks->getBody()->getTerminator());
            kb = kBlocks->getInductionVar();
          }
          Value kLo = em.mul(kb, blockSteps);
          Value kHi =
              oneDepthBlock ? steps : em.minI(em.add(kLo, blockSteps), steps);
          em.loop(jbLo, jbHi, [&](Value jb) {
            withTile(jb, [&](ArrayRef<Value> wr, StoreFn storeCol,
                             StoreRowsFn storeRows) {
              SmallVector<Value> nextRows = nextTileRows(jb);
              // A panel of `vecs` vectors of rows, from lo + (p - p0) * 32.
              auto runPanel = [&](Value p, Value base, int64_t vecs) {
                int64_t numAcc = vecs * kTileCols;
                SmallVector<Value> zeros(numAcc, zeroVec);
                auto partialAt = [&](int64_t j) {
                  return SmallVector<Value, 4>{em.sub(p, pm), em.sub(jb, jbLo),
                                               em.idx(j), zero};
                };
                // The sums of the blocks of k before this one.
                SmallVector<Value> inits =
                    oneDepthBlock
                        ? zeros
                        : em.ifValues(
                              SmallVector<Type>(numAcc, vt), em.eq(kb, zero),
                              [&] { return zeros; },
                              [&] {
                                SmallVector<Value> prior;
                                for (int64_t j = 0; j < numAcc; ++j)
                                  prior.push_back(vector::LoadOp::create(
                                      b, vt, partial, partialAt(j)));
                                return prior;
                              });
                SmallVector<Value> acc = em.loop(
                    kLo, kHi, inits,
                    [&](Value k, ValueRange c) {
                      Value lineStart = em.eq(
                          arith::RemUIOp::create(b, k, em.idx(kPrefetchSteps)),
                          zero);
                      em.ifThen(em.andI(onePanel, lineStart), [&] {
                        Value at = bf16 ? em.mul(k, em.idx(2)) : k;
                        for (Value row : nextRows)
                          memref::PrefetchOp::create(
                              b, w, ValueRange{e, row, at}, /*isWrite=*/false,
                              /*localityHint=*/2, /*isDataCache=*/true);
                      });
                      return panelStep(vecs, e, p, k, wr, true, c);
                    },
                    1);
                auto finish = [&] {
                  // bf16: whole pairs of k, then the last k alone when the
                  // depth is odd.
                  SmallVector<Value> sums = acc;
                  if (bf16)
                    sums = em.loop(
                        steps, ceilDiv(depth, 2), sums,
                        [&](Value k, ValueRange c) {
                          return panelStep(vecs, e, p, k, wr, false, c);
                        },
                        1);
                  for (int64_t v = 0; v < vecs; ++v) {
                    Value vbase = em.add(base, em.idx(v * kLanes));
                    SmallVector<Value> cols;
                    for (int64_t i = 0; i < kTileCols; ++i)
                      cols.push_back(sums[i * vecs + v]);
                    Value scale;
                    if (rowScale)
                      scale = readVec(rowScale, ValueRange{vbase}, false);
                    storeRows(p, v, vbase,
                              tileEpilogue(em, epilogue, cols, scale));
                  }
                  // The rows of the consumer's panel past this tile's are
                  // zero, as its own packing would leave them.
                  if (sink)
                    for (int64_t v = vecs; v < kPanelVecs; ++v)
                      storeRows(p, v, Value(),
                                SmallVector<Value>(outCols, zeroVec));
                };
                if (oneDepthBlock)
                  return finish();
                em.ifThen(em.eq(kb, lastDepthBlock), finish, [&] {
                  for (int64_t j = 0; j < numAcc; ++j)
                    vector::StoreOp::create(b, acc[j], partial, partialAt(j));
                });
              };
              // An expert's last panel takes a tile of as many vectors as
              // it has rows for (a 1 x 12 tile for 16 rows or fewer,
              // about half of the last panels with the default tile)
              // instead of computing zero rows.
              em.loop(pm, pmHi, [&](Value p) {
                Value base = em.add(lo, em.mul(em.sub(p, p0), panelRows));
                Value left = em.sub(hi, base);
                std::function<void(int64_t)> fitted = [&](int64_t vecs) {
                  if (vecs == kPanelVecs)
                    return runPanel(p, base, vecs);
                  em.ifThen(
                      em.ge(em.idx(vecs * kLanes), left),
                      [&] { runPanel(p, base, vecs); },
                      [&] { fitted(vecs + 1); });
                };
                fitted(1);
              });
            });
          });
        };
    auto amxPanels = [&] {
      Value p0 = em.load(pstart, {e});
      Value p1 = em.load(pstart, {em.add(e, one)});
      Value colLo = em.mul(jbLo, em.idx(outCols));
      Value colHi = em.minI(em.mul(jbHi, em.idx(outCols)), width);
      Value scratch = em.alloc({4, kLanes, kLanes}, b.getF32Type(), {});
      auto operandTile = amx::TileType::get({16, 32}, bf16Type);
      auto accTile = amx::TileType::get({16, 16}, b.getF32Type());
      Value half = em.idx(kLanes), lastStart = em.idx(staticWidth - amxCols);
      auto blocks = scf::ForOp::create(b, p0, p1, amxBlockPanels);
      OpBuilder::InsertionGuard blockGuard(b);
      b.setInsertionPoint(blocks.getBody()->getTerminator());
      Value pm = blocks.getInductionVar();
      Value pmHi = em.minI(em.add(pm, amxBlockPanels), p1);
      em.loop(
          colLo, colHi,
          [&](Value c0) {
            Value tileStart = em.minI(c0, lastStart);
            Value ownHi = em.minI(em.add(c0, em.idx(amxCols)), colHi);
            Value rowA = tileStart;
            Value rowB =
                glu ? em.add(tileStart, width) : em.add(tileStart, half);
            em.loop(pm, pmHi, [&](Value p) {
              SmallVector<Value> zeros;
              for (int i = 0; i < 4; ++i)
                zeros.push_back(amx::TileZeroOp::create(b, accTile));
              SmallVector<Value> acc = em.loop(
                  zero, steps, zeros,
                  [&](Value kk, ValueRange c) -> SmallVector<Value> {
                    Value k = em.mul(kk, em.idx(2));
                    Value wa = amx::TileLoadOp::create(b, operandTile, w,
                                                       ValueRange{e, rowA, k});
                    Value wb = amx::TileLoadOp::create(b, operandTile, w,
                                                       ValueRange{e, rowB, k});
                    Value x0 = amx::TileLoadOp::create(b, operandTile, panels,
                                                       ValueRange{p, kk, zero});
                    Value x1 = amx::TileLoadOp::create(
                        b, operandTile, panels,
                        ValueRange{p, kk, em.idx(2 * kLanes)});
                    auto mul = [&](Value a, Value x, Value into) -> Value {
                      return amx::TileMulFOp::create(b, accTile, a, x, into);
                    };
                    return {mul(wa, x0, c[0]), mul(wa, x1, c[1]),
                            mul(wb, x0, c[2]), mul(wb, x1, c[3])};
                  },
                  kLanes);
              for (int64_t i = 0; i < 4; ++i)
                amx::TileStoreOp::create(
                    b, scratch, ValueRange{em.idx(i), zero, zero}, acc[i]);
              Value base = em.add(lo, em.mul(em.sub(p, p0), panelRows));
              for (int64_t v = 0; v < 2; ++v) {
                Value vbase = em.add(base, em.idx(v * kLanes));
                // Tile (a, v) holds columns of weight rows a (gate or the
                // first 16, then up or the next 16) for rows vbase + m.
                SmallVector<Value> cols;
                for (int64_t a = 0; a < 2; ++a)
                  for (int64_t c = 0; c < kLanes; ++c)
                    cols.push_back(vector::LoadOp::create(
                        b, vt, scratch,
                        ValueRange{em.idx(2 * a + v), em.idx(c), zero}));
                Value scale;
                if (rowScale)
                  scale = readVec(rowScale, ValueRange{vbase}, false);
                SmallVector<Value> results =
                    tileEpilogue(em, epilogue, cols, scale);
                if (sink)
                  sinkColumns(p, v, tileStart, c0, ownHi, results);
                else
                  storeTileRows(em, out, vbase, hi, tileStart, c0, ownHi,
                                results);
              }
            });
          },
          amxCols);
    };
    em.ifThen(
        em.ge(n, panelMinRows),
        [&] {
          if (!amx)
            return avxPanels();
          if (!amxReady)
            return amxPanels();
          em.ifThen(amxReady, amxPanels, avxPanels);
        },
        [&] {
          // Few rows (decode): blocks of 4 rows by half a tile (6 weight
          // rows), 24 accumulators along k; each weight row is streamed
          // once per 4 rows. Rows past the end re-read the last one and
          // are not stored. Experts with fewer than 4 rows take blocks of
          // one row instead: the 4-row blocks' repeated rows cost 15-25%
          // of the weight bandwidth at T = 1 (mixtral-small bf16 36-44 ->
          // 45-48 GB/s). While a group of 6 rows is summed, the next
          // group's rows are prefetched into L2 (prefetcht1), a line of
          // each per vector of k: the rows are short streams (a few KB)
          // that the hardware prefetchers barely ramp up on (switch-like
          // bf16 T = 1 13.6 -> 21.5 GB/s on a Zen 4 host, docs/design.md).
          constexpr int64_t kDotCols = 6;
          Value lastRow = em.sub(hi, one);
          em.loop(jbLo, jbHi, [&](Value jb) {
            withTile(jb, [&](ArrayRef<Value> wr, StoreFn storeCol,
                             StoreRowsFn storeRows) {
              SmallVector<Value> nextRows = nextTileRows(jb);
              auto rowBlocks = [&](int64_t kDotRows) {
                em.loop(
                    lo, hi,
                    [&](Value r0) {
                      SmallVector<Value> rows, srcs, valids;
                      for (int64_t q = 0; q < kDotRows; ++q) {
                        rows.push_back(em.minI(em.add(r0, em.idx(q)), lastRow));
                        Value src, valid;
                        std::tie(src, valid) = sourceRow(rows.back());
                        srcs.push_back(src);
                        valids.push_back(valid);
                      }
                      // Weight rows a few at a time, in memory order, so each
                      // k loop reads few long sequential streams.
                      SmallVector<SmallVector<Value>> sums(kDotRows);
                      Value firstBlock = em.eq(r0, lo);
                      for (int64_t j0 = 0; j0 < kTileCols; j0 += kDotCols) {
                        int64_t cols = std::min(kDotCols, kTileCols - j0);
                        SmallVector<Value> inits(kDotRows * cols, zeroVec);
                        // The weight rows of the next group (the next
                        // tile's first ones after the last group), whose
                        // line k0 is prefetched into L2 at step k0 by the
                        // first block of rows (the others find this group
                        // in cache).
                        int64_t nextJ0 = j0 + kDotCols;
                        ArrayRef<Value> ahead =
                            nextJ0 < kTileCols
                                ? ArrayRef<Value>(wr).slice(
                                      nextJ0,
                                      std::min(kDotCols, kTileCols - nextJ0))
                                : ArrayRef<Value>(nextRows).take_front(
                                      std::min(kDotCols, kTileCols));
                        auto step = [&](Value k0, bool inBounds,
                                        ValueRange c) -> SmallVector<Value> {
                          SmallVector<Value> a, next;
                          if (inBounds)
                            em.ifThen(firstBlock, [&] {
                              for (Value row : ahead)
                                memref::PrefetchOp::create(
                                    b, w, ValueRange{e, row, k0},
                                    /*isWrite=*/false, /*localityHint=*/2,
                                    /*isDataCache=*/true);
                            });
                          for (int64_t q = 0; q < kDotRows; ++q)
                            a.push_back(readTokens({srcs[q], k0}, inBounds));
                          for (int64_t j = 0; j < cols; ++j) {
                            Value wv =
                                readWeights({e, wr[j0 + j], k0}, inBounds);
                            for (int64_t q = 0; q < kDotRows; ++q)
                              next.push_back(
                                  multiplyAdd(a[q], wv, c[j * kDotRows + q]));
                          }
                          return next;
                        };
                        SmallVector<Value> acc, tail;
                        if (!bf16) {
                          acc = dotOverK(inits, step);
                        } else {
                          // bf16: whole vectors of k, then the tail in
                          // scalars (masked bf16 loads would be promoted to
                          // f32 lanes and rounded back by __truncsfbf2 on
                          // CPUs without AVX-512 BF16).
                          acc = em.loop(
                              zero, depthMain, inits,
                              [&](Value k0, ValueRange c) {
                                return step(k0, true, c);
                              },
                              kVec);
                          SmallVector<Value> tailInits(kDotRows * cols,
                                                       em.f32(0.0));
                          tail = em.loop(
                              depthMain, depth, tailInits,
                              [&](Value k, ValueRange t) {
                                SmallVector<Value> xs, next;
                                for (int64_t q = 0; q < kDotRows; ++q)
                                  xs.push_back(roundScalarToBF16(
                                      em, em.loadF(x, {srcs[q], k}), bf16Dot));
                                for (int64_t j = 0; j < cols; ++j) {
                                  Value wk = arith::ExtFOp::create(
                                      b, b.getF32Type(),
                                      em.load(w, {e, wr[j0 + j], k}));
                                  for (int64_t q = 0; q < kDotRows; ++q)
                                    next.push_back(em.add(
                                        t[j * kDotRows + q],
                                        arith::MulFOp::create(b, xs[q], wk)));
                                }
                                return next;
                              },
                              1);
                        }
                        for (int64_t j = 0; j < cols; ++j)
                          for (int64_t q = 0; q < kDotRows; ++q) {
                            Value sum = vector::ReductionOp::create(
                                b, vector::CombiningKind::ADD,
                                acc[j * kDotRows + q],
                                arith::FastMathFlags::reassoc);
                            if (bf16)
                              sum = em.add(sum, tail[j * kDotRows + q]);
                            sums[q].push_back(
                                em.select(valids[q], sum, em.f32(0.0)));
                          }
                      }
                      for (int64_t q = 0; q < kDotRows; ++q) {
                        Value scale =
                            rowScale ? em.loadF(rowScale, {rows[q]}) : Value();
                        SmallVector<Value> res =
                            tileEpilogue(em, epilogue, sums[q], scale);
                        Value r = em.add(r0, em.idx(q));
                        em.ifThen(em.lt(r, hi), [&] {
                          for (auto [i, v] : llvm::enumerate(res))
                            storeCol(int64_t(i), r, v);
                        });
                      }
                    },
                    kDotRows);
              };
              em.ifThen(
                  em.lt(n, em.idx(4)), [&] { rowBlocks(1); },
                  [&] { rowBlocks(4); });
            });
          });
        });
  });
  return toTensor(b, out, resultType);
}

Value lowerGroupedMatmul(ImplicitLocOpBuilder &b, GroupedMatmulOp op,
                         bool bf16Dot, const GroupedMatmulSchedule &schedule,
                         const CPUTargetModel &model, PanelSink *sink,
                         Value givenPanels) {
  if (takesPanelKernels(op))
    return lowerGroupedMatmulFast(b, op, bf16Dot, schedule, model, sink,
                                  givenPanels);
  assert(!sink && !givenPanels && "panels are the panel kernels' layout");
  Emitter em(b);
  MLIRContext *ctx = b.getContext();
  auto resultType = cast<RankedTensorType>(op.getType());
  Type element = resultType.getElementType();
  Value zero = em.idx(0), one = em.idx(1);
  GroupedMatmulOperands o = getGroupedMatmulOperands(em, op);
  Value x = o.x, w = o.w, offsets = o.offsets, gather = o.gather,
        rowScale = o.rowScale, numRows = o.numRows, depth = o.depth,
        wRows = o.wRows, width = o.width, out = o.out;
  int64_t numExperts = op.getNumExperts();
  em.fill(out, em.zeroOf(element));

  // Operand rows in plan order: gathered once (rows with an invalid source
  // token are zero), or the input itself.
  Value a = x;
  if (gather) {
    Value inputRows = em.dim(x, 0);
    a = em.alloc({ShapedType::kDynamic, ShapedType::kDynamic},
                 cast<MemRefType>(x.getType()).getElementType(),
                 {numRows, depth});
    em.loop(zero, numRows, [&](Value r) {
      Value src = em.load(gather, {r});
      Value valid = em.inRange(src, zero, inputRows);
      em.ifThen(
          valid,
          [&] {
            Value s = em.toIndex(src);
            em.loop(zero, depth, [&](Value c) {
              em.store(em.load(x, {s, c}), a, {r, c});
            });
          },
          [&] {
            em.loop(zero, depth, [&](Value c) {
              em.store(
                  em.zeroOf(cast<MemRefType>(x.getType()).getElementType()), a,
                  {r, c});
            });
          });
    });
  }
  Value acc = em.alloc({ShapedType::kDynamic, ShapedType::kDynamic}, element,
                       {numRows, wRows});

  AffineExpr i, j, k;
  bindDims(ctx, i, j, k);
  SmallVector<AffineMap> maps = {AffineMap::get(3, 0, {i, k}, ctx),
                                 AffineMap::get(3, 0, {j, k}, ctx),
                                 AffineMap::get(3, 0, {i, j}, ctx)};
  em.loop(zero, em.idx(numExperts), [&](Value e) {
    Value lo = em.clampIndex(em.load(offsets, {e}), zero, numRows);
    Value hi = em.clampIndex(em.load(offsets, {em.add(e, one)}), lo, numRows);
    Value n = em.sub(hi, lo);
    em.ifThen(em.gt(n, zero), [&] {
      auto sub2d = [&](Value buffer, Value cols) {
        return memref::SubViewOp::create(
            b, buffer, ArrayRef<OpFoldResult>{lo, b.getIndexAttr(0)},
            ArrayRef<OpFoldResult>{n, cols},
            ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
      };
      Value aRows = sub2d(a, depth);
      Value accRows = sub2d(acc, wRows);
      auto wType = cast<MemRefType>(w.getType());
      SmallVector<OpFoldResult> wOffsets = {e, b.getIndexAttr(0),
                                            b.getIndexAttr(0)};
      auto extent = [&](int64_t d) -> OpFoldResult {
        if (wType.isDynamicDim(d))
          return em.dim(w, d);
        return b.getIndexAttr(wType.getDimSize(d));
      };
      SmallVector<OpFoldResult> wSizes = {b.getIndexAttr(1), extent(1),
                                          extent(2)};
      SmallVector<OpFoldResult> wStrides(3, b.getIndexAttr(1));
      auto expertType = memref::SubViewOp::inferRankReducedResultType(
          {wType.getDimSize(1), wType.getDimSize(2)}, wType, wOffsets, wSizes,
          wStrides);
      Value wExpert = memref::SubViewOp::create(b, expertType, w, wOffsets,
                                                wSizes, wStrides);
      em.fill(accRows, em.zeroOf(element));
      linalg::GenericOp::create(
          b, TypeRange{}, ValueRange{aRows, wExpert}, ValueRange{accRows}, maps,
          {utils::IteratorType::parallel, utils::IteratorType::parallel,
           utils::IteratorType::reduction},
          [](OpBuilder &nb, Location loc, ValueRange args) {
            // Mixed precisions (f16 or bf16 weights on f32 tokens, ...)
            // multiply in the accumulator's type.
            Type accType = args[2].getType();
            auto toAcc = [&](Value v) -> Value {
              auto from = cast<FloatType>(v.getType());
              if (from == accType)
                return v;
              if (from.getWidth() < cast<FloatType>(accType).getWidth())
                return arith::ExtFOp::create(nb, loc, accType, v);
              return arith::TruncFOp::create(nb, loc, accType, v);
            };
            Value prod =
                arith::MulFOp::create(nb, loc, toAcc(args[0]), toAcc(args[1]));
            Value sum = arith::AddFOp::create(nb, loc, args[2], prod);
            linalg::YieldOp::create(nb, loc, sum);
          });
      em.loop(lo, hi, [&](Value r) {
        em.loop(zero, width, [&](Value c) {
          Value v = applyEpilogue(em, op.getEpilogue(), acc, r, c, width,
                                  rowScale, r);
          em.storeF(v, out, {r, c});
        });
      });
    });
  });
  return toTensor(b, out, resultType);
}

//===----------------------------------------------------------------------===//
// moe.grouped_matmul for GPUs: a tiled kernel behind a launcher function
//===----------------------------------------------------------------------===//
//
// The op becomes a call of a private launcher function (attribute
// `moe.gpu_launcher`, one per op) that `--moe-offload-to-gpu` keeps on the
// host and whose body is a `gpu.launch` written for the GPU directly:
//
//   * the output is zeroed (rows outside every expert stay zero);
//   * block (x, y) computes a 64 x 64 output tile: column tile x, and row
//     tile y of the schedule that the offsets give (each expert's rows cut
//     into 64-row tiles, experts in order), found by every block scanning
//     the offsets itself, so no host round trip; blocks past the last tile
//     exit;
//   * per 16-deep k step, the block's 256 threads stage the operand tile
//     (rows read through the gather map) and the weight tile (gate and, for
//     silu_glu, up rows read in place from the [E, N, K] weights) in
//     workgroup memory, then each thread accumulates a 4 x 4 register tile
//     (two for silu_glu) in f32; with `mma` (bf16 weights), 32-deep steps
//     of packed bf16 words feed tensor-core mma.sync instead
//     (emitMmaTile);
//   * the epilogue (activation, row scale) runs on the registers.
//
// Expert ranges are made disjoint in expert order (lo_e = max(offsets[e],
// hi_{e-1})), which is what dispatch plans produce.

constexpr llvm::StringLiteral kGpuLauncherAttr = "moe.gpu_launcher";
/// Experts with at most this many rows take the decode kernel.
constexpr int64_t kGpuDecodeRows = 8;
constexpr int64_t kGpuTile = 64, kGpuDepth = 16, kGpuThreads = 256,
                  kGpuMicro = 4, kGpuPad = 1;
/// The tensor-core form's steps: 32 deep, staged as 16 words of two bf16
/// values per tile row, rows padded to 20 words so that the fragment reads
/// of a warp (rows g and words q for g < 8, q < 4) hit 32 distinct banks.
constexpr int64_t kMmaDepth = 32, kMmaWords = kMmaDepth / 2,
                  kMmaStride = kMmaWords + 4;

/// Declares a private launcher function of `module` taking `args` (named
/// after `base`, uniqued) whose `moe.gpu_launcher` dictionary `config`
/// says what buildGPULauncherBody builds into it after bufferization.
func::FuncOp declareLauncher(ModuleOp module, Location loc, StringRef base,
                             ValueRange args, DictionaryAttr config) {
  OpBuilder mb(module.getContext());
  auto fn = func::FuncOp::create(
      mb, loc, base,
      FunctionType::get(module.getContext(), args.getTypes(), {}));
  fn.setPrivate();
  fn->setAttr(kGpuLauncherAttr, config);
  SymbolTable(module).insert(fn);
  return fn;
}

Value lowerGroupedMatmulGPU(ImplicitLocOpBuilder &b, GroupedMatmulOp op,
                            bool mma) {
  Emitter outer(b);
  auto resultType = cast<RankedTensorType>(op.getType());
  GroupedMatmulOperands o = getGroupedMatmulOperands(outer, op);
  SmallVector<Value> args = {o.x, o.w, o.offsets};
  if (o.gather)
    args.push_back(o.gather);
  if (o.rowScale)
    args.push_back(o.rowScale);
  args.push_back(o.out);
  MLIRContext *ctx = b.getContext();
  SmallVector<NamedAttribute> config = {
      b.getNamedAttr("kind", b.getStringAttr("grouped_matmul")),
      b.getNamedAttr("epilogue", EpilogueAttr::get(ctx, op.getEpilogue())),
      b.getNamedAttr("num_experts", b.getI64IntegerAttr(op.getNumExperts())),
      b.getNamedAttr("gather", b.getBoolAttr(bool(o.gather))),
      b.getNamedAttr("row_scale", b.getBoolAttr(bool(o.rowScale)))};
  // Tensor cores take bf16 weights (f32 weights keep the CUDA-core form).
  if (mma && getElementTypeOrSelf(op.getWeight()).isBF16())
    config.push_back(b.getNamedAttr("mma", b.getBoolAttr(true)));
  func::FuncOp fn = declareLauncher(op->getParentOfType<ModuleOp>(), b.getLoc(),
                                    "__moe_gpu_grouped_matmul", args,
                                    DictionaryAttr::get(ctx, config));
  func::CallOp::create(b, fn, args);
  return toTensor(b, o.out, resultType);
}

/// What both forms of the tiled kernel work on: the launcher's buffers, the
/// block's expert, rows [rowStart, rowEnd) and first column, and sizes.
struct GpuTile {
  Value x, w, gather, rowScale, out;
  Value expert, rowStart, rowEnd, col0;
  Value width, depth, inputRows, tid;
  Epilogue epilogue;
};

/// Stores output element (row, col) from its accumulators `values` (gate
/// then up for silu_glu) through the epilogue, when it lies inside the
/// tile's rows and the output's columns.
void storeTileElement(Emitter &k, const GpuTile &t, Value row, Value col,
                      ArrayRef<Value> values) {
  k.ifThen(k.andI(k.lt(row, t.rowEnd), k.lt(col, t.width)), [&] {
    Value scale =
        t.epilogue == Epilogue::scale ? k.loadF(t.rowScale, {row}) : Value();
    k.storeF(tileEpilogue(k, t.epilogue, values, scale).front(), t.out,
             {row, col});
  });
}

/// The CUDA-core tile (f32 or widened bf16 weights): 16-deep steps staged
/// as f32 [depth][row] tiles; each thread accumulates a 4 x 4 register tile
/// (two for silu_glu) with FMAs.
void emitSimtTile(Emitter &k, const GpuTile &t, ValueRange tiles) {
  ImplicitLocOpBuilder &fb = k.b;
  bool glu = t.epilogue == Epilogue::silu_glu;
  Value aTile = tiles[0], gTile = tiles[1];
  Value uTile = glu ? Value(tiles[2]) : Value();
  Value zero = k.idx(0), one = k.idx(1), tid = t.tid;
  Value ty = arith::DivUIOp::create(fb, tid, k.idx(kGpuTile / kGpuMicro));
  Value tx = arith::RemUIOp::create(fb, tid, k.idx(kGpuTile / kGpuMicro));
  int64_t numAcc = kGpuMicro * kGpuMicro * (glu ? 2 : 1);
  SmallVector<Value> inits(numAcc, k.f32(0.0));
  Value depthStep = k.idx(kGpuDepth);
  auto forOp = scf::ForOp::create(fb, zero, t.depth, depthStep, inits);
  {
    OpBuilder::InsertionGuard loopGuard(fb);
    fb.setInsertionPointToStart(forOp.getBody());
    Value k0 = forOp.getInductionVar();
    // Stage the tiles: element i = tid + j * threads is (row or column
    // i / 16, depth i % 16).
    for (int64_t j = 0; j < kGpuTile * kGpuDepth / kGpuThreads; ++j) {
      Value i = k.add(tid, k.idx(j * kGpuThreads));
      Value r = arith::DivUIOp::create(fb, i, depthStep);
      Value kk = arith::RemUIOp::create(fb, i, depthStep);
      Value kIdx = k.add(k0, kk);
      Value kIn = k.lt(kIdx, t.depth);
      Value row = k.add(t.rowStart, r);
      Value valid = k.andI(k.lt(row, t.rowEnd), kIn);
      Value a = k.ifValue(
          fb.getF32Type(), valid,
          [&]() -> Value {
            if (!t.gather)
              return k.loadF(t.x, {row, kIdx});
            Value src = k.load(t.gather, {row});
            Value srcOk = k.inRange(src, zero, t.inputRows);
            Value s = k.clampIndex(src, zero, k.sub(t.inputRows, one));
            return k.select(srcOk, k.loadF(t.x, {s, kIdx}), k.f32(0.0));
          },
          [&] { return k.f32(0.0); });
      k.store(a, aTile, {kk, r});
      Value col = k.add(t.col0, r);
      Value colOk = k.andI(k.lt(col, t.width), kIn);
      Value g = k.ifValue(
          fb.getF32Type(), colOk,
          [&] {
            return k.loadF(t.w, {t.expert, col, kIdx});
          },
          [&] { return k.f32(0.0); });
      k.store(g, gTile, {kk, r});
      if (glu) {
        Value u = k.ifValue(
            fb.getF32Type(), colOk,
            [&] {
              return k.loadF(t.w, {t.expert, k.add(col, t.width), kIdx});
            },
            [&] { return k.f32(0.0); });
        k.store(u, uTile, {kk, r});
      }
    }
    gpu::BarrierOp::create(fb);
    SmallVector<Value> acc(forOp.getRegionIterArgs().begin(),
                           forOp.getRegionIterArgs().end());
    Value rowBase = k.mul(ty, k.idx(kGpuMicro));
    Value colBase = k.mul(tx, k.idx(kGpuMicro));
    for (int64_t kk = 0; kk < kGpuDepth; ++kk) {
      Value kkIdx = k.idx(kk);
      SmallVector<Value> a, g, u;
      for (int64_t m = 0; m < kGpuMicro; ++m)
        a.push_back(k.load(aTile, {kkIdx, k.add(rowBase, k.idx(m))}));
      for (int64_t n = 0; n < kGpuMicro; ++n) {
        Value cn = k.add(colBase, k.idx(n));
        g.push_back(k.load(gTile, {kkIdx, cn}));
        if (glu)
          u.push_back(k.load(uTile, {kkIdx, cn}));
      }
      for (int64_t m = 0; m < kGpuMicro; ++m)
        for (int64_t n = 0; n < kGpuMicro; ++n) {
          int64_t q = m * kGpuMicro + n;
          acc[q] = math::FmaOp::create(fb, a[m], g[n], acc[q]);
          if (glu)
            acc[q + kGpuMicro * kGpuMicro] = math::FmaOp::create(
                fb, a[m], u[n], acc[q + kGpuMicro * kGpuMicro]);
        }
    }
    gpu::BarrierOp::create(fb);
    scf::YieldOp::create(fb, acc);
  }
  // Epilogue on the registers.
  for (int64_t m = 0; m < kGpuMicro; ++m) {
    Value row = k.add(t.rowStart, k.add(k.mul(ty, k.idx(kGpuMicro)), k.idx(m)));
    for (int64_t n = 0; n < kGpuMicro; ++n) {
      Value col = k.add(t.col0, k.add(k.mul(tx, k.idx(kGpuMicro)), k.idx(n)));
      int64_t q = m * kGpuMicro + n;
      SmallVector<Value> values = {forOp.getResult(q)};
      if (glu)
        values.push_back(forOp.getResult(q + kGpuMicro * kGpuMicro));
      storeTileElement(k, t, row, col, values);
    }
  }
}

/// The tensor-core tile (bf16 weights; see docs/gpu.md): 32-deep steps
/// staged as words of two bf16 values, tokens rounded to bf16 as they are
/// staged; warp w computes rows 32 * (w / 4) .. + 32 and columns
/// 16 * (w % 4) .. + 16 of the tile as 2 x 2 mma.sync.m16n8k16 tiles (two
/// sets for silu_glu), accumulating in f32.
void emitMmaTile(Emitter &k, const GpuTile &t, ValueRange tiles) {
  ImplicitLocOpBuilder &fb = k.b;
  MLIRContext *ctx = fb.getContext();
  bool glu = t.epilogue == Epilogue::silu_glu;
  Type i16 = fb.getI16Type(), i32 = fb.getI32Type(), f32 = fb.getF32Type();
  Type bf16 = fb.getBF16Type();
  Value zero = k.idx(0), one = k.idx(1), tid = t.tid;
  auto div = [&](Value v, int64_t d) -> Value {
    return arith::DivUIOp::create(fb, v, k.idx(d));
  };
  auto rem = [&](Value v, int64_t d) -> Value {
    return arith::RemUIOp::create(fb, v, k.idx(d));
  };
  // Fragment coordinates (PTX ISA, mma.m16n8k16): lane = 4 * group + quad.
  Value lane = rem(tid, 32), warp = div(tid, 32);
  Value group = div(lane, 4), quad = rem(lane, 4);
  Value warpRow = k.mul(div(warp, 4), k.idx(32));
  Value warpCol = k.mul(rem(warp, 4), k.idx(16));
  // A word of two bf16 values, the lower k in the low half.
  auto pack = [&](Value lo, Value hi) -> Value {
    auto bits = [&](Value v) -> Value {
      return arith::ExtUIOp::create(fb, i32,
                                    arith::BitcastOp::create(fb, i16, v));
    };
    return k.orI(bits(lo), arith::ShLIOp::create(fb, bits(hi), k.i32(16)));
  };
  // Loads are clamped into their buffers and their values selected, so the
  // staging has no branches.
  Value lastK = k.sub(t.depth, one), lastCol = k.sub(t.width, one);
  Value lastRow = k.sub(t.rowEnd, one);
  Value bf16Zero = arith::ConstantOp::create(fb, fb.getZeroAttr(bf16));
  int64_t sets = glu ? 2 : 1, fragments = 2 * 2;
  SmallVector<Value> inits(sets * fragments * 4, k.f32(0.0));
  auto forOp = scf::ForOp::create(fb, zero, t.depth, k.idx(kMmaDepth), inits);
  {
    OpBuilder::InsertionGuard loopGuard(fb);
    fb.setInsertionPointToStart(forOp.getBody());
    Value k0 = forOp.getInductionVar();
    // Stage the tiles: word i = tid + j * threads is (row or column
    // i / 16, depth 2 * (i % 16) and the next).
    for (int64_t j = 0; j < kGpuTile * kMmaWords / kGpuThreads; ++j) {
      Value i = k.add(tid, k.idx(j * kGpuThreads));
      Value r = div(i, kMmaWords), kw = rem(i, kMmaWords);
      Value kLo = k.add(k0, k.mul(kw, k.idx(2))), kHi = k.add(kLo, one);
      Value loOk = k.lt(kLo, t.depth), hiOk = k.lt(kHi, t.depth);
      kLo = k.minI(kLo, lastK);
      kHi = k.minI(kHi, lastK);
      Value row = k.add(t.rowStart, r);
      Value rowOk = k.lt(row, t.rowEnd);
      Value src = k.minI(row, lastRow);
      if (t.gather) {
        Value g = k.load(t.gather, {src});
        rowOk = k.andI(rowOk, k.inRange(g, zero, t.inputRows));
        src = k.clampIndex(g, zero, k.sub(t.inputRows, one));
      }
      auto token = [&](Value kk, Value ok) -> Value {
        Value v =
            k.select(k.andI(rowOk, ok), k.loadF(t.x, {src, kk}), k.f32(0.0));
        return arith::TruncFOp::create(fb, bf16, v);
      };
      k.store(pack(token(kLo, loOk), token(kHi, hiOk)), tiles[0], {r, kw});
      Value col = k.add(t.col0, r);
      Value colOk = k.lt(col, t.width);
      Value wRow = k.minI(col, lastCol);
      for (int64_t set = 0; set < sets; ++set) {
        auto weight = [&](Value kk, Value ok) -> Value {
          return k.select(k.andI(colOk, ok), k.load(t.w, {t.expert, wRow, kk}),
                          bf16Zero);
        };
        k.store(pack(weight(kLo, loOk), weight(kHi, hiOk)), tiles[1 + set],
                {r, kw});
        wRow = k.add(wRow, t.width);
      }
    }
    gpu::BarrierOp::create(fb);
    SmallVector<Value> acc(forOp.getRegionIterArgs().begin(),
                           forOp.getRegionIterArgs().end());
    auto resultType =
        LLVM::LLVMStructType::getLiteral(ctx, SmallVector<Type>(4, f32));
    for (int64_t step = 0; step < kMmaDepth / 16; ++step) {
      Value w0 = k.add(quad, k.idx(8 * step)), w1 = k.add(w0, k.idx(4));
      // A fragments: (group, k 2q..), (group + 8, 2q..), (group, 2q + 8..),
      // (group + 8, 2q + 8..) of each 16-row m tile.
      SmallVector<SmallVector<Value>> a;
      for (int64_t m = 0; m < 2; ++m) {
        Value r0 = k.add(warpRow, k.add(group, k.idx(16 * m)));
        Value r1 = k.add(r0, k.idx(8));
        a.push_back({k.load(tiles[0], {r0, w0}), k.load(tiles[0], {r1, w0}),
                     k.load(tiles[0], {r0, w1}), k.load(tiles[0], {r1, w1})});
      }
      for (int64_t set = 0; set < sets; ++set)
        for (int64_t n = 0; n < 2; ++n) {
          // B fragment: column `group` of the 8-column n tile, k 2q.. and
          // 2q + 8.. (the weights' [column][k] rows are its col layout).
          Value c = k.add(warpCol, k.add(group, k.idx(8 * n)));
          SmallVector<Value> bFrag = {k.load(tiles[1 + set], {c, w0}),
                                      k.load(tiles[1 + set], {c, w1})};
          for (int64_t m = 0; m < 2; ++m) {
            int64_t q = ((set * 2 + m) * 2 + n) * 4;
            ArrayRef<Value> cFrag = ArrayRef<Value>(acc).slice(q, 4);
            Value d = NVVM::MmaOp::create(
                fb, resultType, a[m], bFrag, cFrag,
                ArrayRef<int64_t>{16, 8, 16}, std::nullopt, std::nullopt,
                std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16,
                                              NVVM::MMATypes::bf16},
                std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                               NVVM::MMALayout::col});
            for (int64_t e = 0; e < 4; ++e)
              acc[q + e] = LLVM::ExtractValueOp::create(fb, d, e);
          }
        }
    }
    gpu::BarrierOp::create(fb);
    scf::YieldOp::create(fb, acc);
  }
  // Epilogue on the registers: element e of a C fragment is (group +
  // 8 * (e / 2), 2 * quad + e % 2) of its 16 x 8 tile.
  for (int64_t m = 0; m < 2; ++m)
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t e = 0; e < 4; ++e) {
        Value row =
            k.add(t.rowStart,
                  k.add(warpRow, k.add(group, k.idx(16 * m + 8 * (e / 2)))));
        Value col = k.add(t.col0, k.add(warpCol, k.add(k.mul(quad, k.idx(2)),
                                                       k.idx(8 * n + e % 2))));
        int64_t q = (m * 2 + n) * 4 + e;
        SmallVector<Value> values = {forOp.getResult(q)};
        if (glu)
          values.push_back(forOp.getResult(q + fragments * 4));
        storeTileElement(k, t, row, col, values);
      }
}

/// Weight values per 16-byte load in the decode kernel's vector form: 4
/// f32 or 8 bf16.
int64_t decodeVectorWidth(Value w) {
  return getElementTypeOrSelf(w).isBF16() ? 8 : 4;
}

/// Whether the decode kernel can read 16-byte vectors: the depth is a
/// multiple of the vector width, so every row of the tokens and the
/// weights starts 16-byte aligned when the buffers do, and both buffers do
/// (their layouts are the identity, so the aligned pointer is element 0).
Value decodeVectorsFit(Emitter &k, Value x, Value w, Value depth) {
  Value fits = k.eq(arith::RemUIOp::create(k.b, depth,
                                           k.idx(decodeVectorWidth(w))),
                    k.idx(0));
  for (Value buffer : {x, w}) {
    if (!cast<MemRefType>(buffer.getType()).getLayout().isIdentity())
      return arith::ConstantIntOp::create(k.b, 0, 1);
    Value address =
        memref::ExtractAlignedPointerAsIndexOp::create(k.b, buffer);
    fits = k.andI(
        fits, k.eq(arith::RemUIOp::create(k.b, address, k.idx(16)), k.idx(0)));
  }
  return fits;
}

/// The decode kernel's lane sums in 16-byte vectors (decodeVectorsFit
/// holds): lane l reads vectors l, l + 32, ... of 4 f32 (or 8 bf16) weights
/// of its column's rows and the same k of the expert's token rows. The
/// loop is specialised to 1, 2 or 4 token rows, and 5 to 8 in two passes
/// of 4 (T = 1 decode has one per expert), so no load reads a repeated
/// row; with 1 or 2 rows it takes two vectors 32 apart per iteration, so
/// that two loads of each weight row are in flight. Returns the sums in
/// the layout of the scalar form (rows past the expert's are zero).
SmallVector<Value> emitDecodeVectors(Emitter &k, Value x, Value w, Value e,
                                     Value col, Value upCol,
                                     function_ref<SmallVector<Value>(int64_t)>
                                         sources,
                                     Value rows,
                                     Value depth, Value lane, bool glu) {
  ImplicitLocOpBuilder &b = k.b;
  int64_t width = decodeVectorWidth(w);
  Type weightType = getElementTypeOrSelf(w);
  auto f32Vec = VectorType::get({width}, b.getF32Type());
  auto weightVec = VectorType::get({width}, weightType);
  Value zeroVec = k.f32Like(VectorType::get({4}, b.getF32Type()), 0.0);
  Value vectors = arith::DivUIOp::create(b, depth, k.idx(width));
  Value pairs = arith::DivUIOp::create(b, vectors, k.idx(64));
  auto load = [&](VectorType type, Value buffer, ValueRange idx) -> Value {
    return vector::LoadOp::create(b, type, buffer, idx, /*nontemporal=*/false,
                                  llvm::MaybeAlign(16));
  };
  // Accumulators: [r] gate, [numRows + r] up, one vector per row.
  auto sumRows = [&](int64_t numRows, int64_t row0,
                     SmallVector<Value> sums) -> SmallVector<Value> {
    int64_t numAcc = numRows * (glu ? 2 : 1);
    SmallVector<Value> src = sources(row0 + numRows);
    auto step = [&](Value v, MutableArrayRef<Value> acc) {
      Value kk = k.mul(v, k.idx(width));
      auto weights = [&](Value c) -> Value {
        Value wv = load(weightVec, w, {e, c, kk});
        return weightType.isF32()
                   ? wv
                   : (Value)arith::ExtFOp::create(b, f32Vec, wv);
      };
      Value g = weights(col);
      Value u = glu ? weights(upCol) : Value();
      // Accumulators of 4 lanes: the two halves of a bf16 step add into
      // the same ones (8-lane accumulators spilled on sm_80).
      auto fma = [&](Value a, Value wv, Value c) -> Value {
        for (int64_t h = 0; h < width; h += 4) {
          auto half = [&](Value v) -> Value {
            if (width == 4)
              return v;
            // (A shuffle: extract_strided_slice has no NVVM lowering.)
            return vector::ShuffleOp::create(
                b, v, v, ArrayRef<int64_t>{h, h + 1, h + 2, h + 3});
          };
          c = vector::FMAOp::create(b, half(a), half(wv), c);
        }
        return c;
      };
      for (int64_t r = 0; r < numRows; ++r) {
        Value a = load(f32Vec, x, {src[row0 + r], kk});
        acc[r] = fma(a, g, acc[r]);
        if (glu)
          acc[numRows + r] = fma(a, u, acc[numRows + r]);
      }
    };
    // Two steps per iteration for up to 2 rows; with 4, two steps spill
    // (ptxas gives the kernel 128 registers).
    SmallVector<Value> acc(numAcc, zeroVec);
    Value first = lane;
    if (numRows <= 2) {
      acc = k.loop(k.idx(0), pairs, acc,
                   [&](Value i, ValueRange c) -> SmallVector<Value> {
                     SmallVector<Value> next(c.begin(), c.end());
                     Value v = k.add(k.mul(i, k.idx(64)), lane);
                     step(v, next);
                     step(k.add(v, k.idx(32)), next);
                     return next;
                   });
      first = k.add(k.mul(pairs, k.idx(64)), lane);
    }
    acc = k.loop(
        first, vectors, acc,
        [&](Value v, ValueRange c) -> SmallVector<Value> {
          SmallVector<Value> next(c.begin(), c.end());
          step(v, next);
          return next;
        },
        /*step=*/32);
    for (int64_t r = 0; r < numRows; ++r)
      for (int64_t half = 0; half < (glu ? 2 : 1); ++half)
        sums[half * kGpuDecodeRows + row0 + r] = vector::ReductionOp::create(
            b, vector::CombiningKind::ADD, acc[half * numRows + r]);
    return sums;
  };
  SmallVector<Value> zeros(kGpuDecodeRows * (glu ? 2 : 1), k.f32(0.0));
  SmallVector<Type> types(zeros.size(), b.getF32Type());
  // 1, 2 or 4 rows in one pass; 5 to 8 rows in two passes of 4 (a pass of
  // 8 spills: ptxas gives these kernels 128 registers), the second reading
  // the weights again from L2.
  std::function<SmallVector<Value>(int64_t)> fitted =
      [&](int64_t numRows) -> SmallVector<Value> {
    if (numRows == kGpuDecodeRows)
      return sumRows(4, 4, sumRows(4, 0, zeros));
    return k.ifValues(
        types, k.cmpi(arith::CmpIPredicate::sle, rows, k.idx(numRows)),
        [&] { return sumRows(numRows, 0, zeros); },
        [&] { return fitted(numRows * 2); });
  };
  static_assert(kGpuDecodeRows == 8, "the passes above cover 8 rows");
  return fitted(1);
}

/// The row range [lo, hi) of expert `e` of a grouped matmul, by the rule of
/// the CPU loops (each range clamped to start where the previous one ended,
/// so ranges never overlap whatever the offsets): lo = clamp(max(offsets[0],
/// ..., offsets[e]), 0, numRows), hi = clamp(offsets[e + 1], lo, numRows).
/// One warp computes it: lane l takes the maximum of offsets l, l + 32, ...
/// (indices above e read offsets[e]), then a butterfly of shuffles gives
/// every lane the whole maximum: E / 32 loads and 5 shuffles per thread
/// instead of a sequential pass over the experts before e (which, with 64
/// experts, cost more instructions than the decode kernel's arithmetic).
std::pair<Value, Value> warpExpertRange(Emitter &k, Value offsets, Value e,
                                        Value lane, Value numRows,
                                        int64_t numExperts) {
  Value one = k.idx(1);
  // A fixed number of steps (E is static) with clamped indices: a loop
  // bounded by e kept one more predicate live, which ptxas spilled on sm_80.
  Value m = k.i32(0);
  for (int64_t j = 0; j < numExperts; j += 32) {
    Value i = k.add(lane, k.idx(j));
    Value v = k.toI32(k.load(offsets, {k.minI(i, e)}));
    m = k.maxI(m, v);
  }
  for (int32_t offset = 16; offset >= 1; offset /= 2)
    m = k.maxI(m,
               gpu::ShuffleOp::create(k.b, m, offset, 32, gpu::ShuffleMode::XOR)
                   .getShuffleResult());
  Value lo = k.clampIndex(m, k.idx(0), numRows);
  Value hi = k.clampIndex(k.load(offsets, {k.add(e, one)}), lo, numRows);
  return {lo, hi};
}

/// The body of a grouped_matmul launcher (see above).
void buildGroupedMatmulLauncher(func::FuncOp fn, DictionaryAttr config) {
  auto epilogueAttr = config.getAs<EpilogueAttr>("epilogue");
  Epilogue epilogue = epilogueAttr.getValue();
  bool hasGather = config.getAs<BoolAttr>("gather").getValue();
  bool hasRowScale = config.getAs<BoolAttr>("row_scale").getValue();
  int64_t numExperts = config.getAs<IntegerAttr>("num_experts").getInt();
  auto mmaAttr = config.getAs<BoolAttr>("mma");
  bool mma = mmaAttr && mmaAttr.getValue();
  Block *entry = fn.addEntryBlock();
  OpBuilder eb(fn.getContext());
  eb.setInsertionPointToEnd(entry);
  auto ret = func::ReturnOp::create(eb, fn.getLoc());
  ImplicitLocOpBuilder fb(fn.getLoc(), ret);
  Emitter em(fb);
  auto fnArgs = fn.getArguments();
  Value x = fnArgs[0], w = fnArgs[1], offsets = fnArgs[2];
  size_t next = 3;
  Value gather = hasGather ? Value(fnArgs[next++]) : Value();
  Value rowScale = hasRowScale ? Value(fnArgs[next++]) : Value();
  Value out = fnArgs[next];
  bool glu = epilogue == Epilogue::silu_glu;
  Value zero = em.idx(0), one = em.idx(1);
  Value numRows = em.dim(out, 0), width = em.dim(out, 1);
  Value depth = em.dim(x, 1), inputRows = em.dim(x, 0);
  Value E = em.idx(numExperts);
  Value tile = em.idx(kGpuTile);
  auto ceilDiv = [&](Emitter &e, Value v, Value d) -> Value {
    return arith::CeilDivUIOp::create(e.b, v, d);
  };
  gpu::MemsetOp::create(fb, Type(), ValueRange{}, out, em.f32(0.0));
  // At least one column tile (blocks check the columns they touch): the
  // launch stays unconditional, in the caller's chain of GPU operations.
  Value colTiles = arith::MaxUIOp::create(fb, ceilDiv(em, width, tile), one);
  // Row tiles: an expert with r > kGpuDecodeRows rows has ceil(r / tile) <=
  // r / tile + 1, so there are at most ceil(numRows / tile) plus as many as
  // experts can have that many rows: at most numRows / (kGpuDecodeRows + 1).
  // (Sized by E alone, a decode batch launched E row tiles of blocks that
  // each searched all experts to find no work.) At least one, as for the
  // columns: an empty grid is a launch error.
  Value rowTiles = arith::MaxUIOp::create(
      fb,
      em.add(
          ceilDiv(em, numRows, tile),
          arith::MinUIOp::create(
              fb, E,
              arith::DivUIOp::create(fb, numRows, em.idx(kGpuDecodeRows + 1)))),
      one);
  {
    MLIRContext *ctx = fb.getContext();
    auto wg = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
    auto tileType = mma ? MemRefType::get({kGpuTile, kMmaStride},
                                          fb.getI32Type(), AffineMap(), wg)
                        : MemRefType::get({kGpuDepth, kGpuTile + kGpuPad},
                                          fb.getF32Type(), AffineMap(), wg);
    SmallVector<Type> attributions(glu ? 3 : 2, tileType);
    auto launch = gpu::LaunchOp::create(
        fb, colTiles, rowTiles, one, em.idx(kGpuThreads), one, one,
        /*dynamicSharedMemorySize=*/nullptr, /*asyncTokenType=*/nullptr,
        ValueRange{}, attributions);
    OpBuilder::InsertionGuard guard(fb);
    fb.setInsertionPointToEnd(&launch.getBody().front());
    auto terminator = gpu::TerminatorOp::create(fb);
    fb.setInsertionPoint(terminator);
    Emitter k(fb);
    Value bx = launch.getBlockIds().x, by = launch.getBlockIds().y;

    // The expert and row range of row tile `by`.
    SmallVector<Value> found = k.loop(
        zero, E, ValueRange{k.idx(-1), zero, zero, zero, zero},
        [&](Value e, ValueRange c) -> SmallVector<Value> {
          Value lo = k.clampIndex(k.load(offsets, {e}), c[4], numRows);
          Value hi =
              k.clampIndex(k.load(offsets, {k.add(e, one)}), lo, numRows);
          // Experts with few rows are the decode kernel's.
          Value rows = k.sub(hi, lo);
          Value n = k.select(k.gt(rows, k.idx(kGpuDecodeRows)),
                             ceilDiv(k, rows, tile), zero);
          Value base = c[3];
          Value inside = k.andI(k.ge(by, base), k.lt(by, k.add(base, n)));
          Value start = k.add(lo, k.mul(k.sub(by, base), tile));
          return {k.select(inside, e, c[0]), k.select(inside, start, c[1]),
                  k.select(inside, hi, c[2]), k.add(base, n), hi};
        });
    GpuTile t{x, w, gather, rowScale, out, /*expert=*/found[0],
              /*rowStart=*/found[1], /*rowEnd=*/found[2],
              /*col0=*/k.mul(bx, tile), width, depth, inputRows,
              /*tid=*/launch.getThreadIds().x, epilogue};
    // The tensor-core form reads clamped indices unconditionally: it needs
    // a column, and an input row for gathers to point at.
    Value work = k.ge(t.expert, zero);
    if (mma)
      work = k.andI(work, k.andI(k.gt(width, zero), k.gt(inputRows, zero)));
    k.ifThen(work, [&] {
      if (mma)
        emitMmaTile(k, t, launch.getWorkgroupAttributions());
      else
        emitSimtTile(k, t, launch.getWorkgroupAttributions());
    });
  }

  // Decode: experts with at most kGpuDecodeRows rows. Block (x, e) runs 8
  // warps on expert e; warp w computes output column x * 8 + w for every
  // row of the expert: its lanes stride along k (consecutive lanes read
  // consecutive weights, so each weight row streams through once, fully
  // coalesced), then a butterfly of shuffles sums the lanes.
  {
    int64_t warps = kGpuThreads / 32;
    Value colBlocks =
        arith::MaxUIOp::create(fb, ceilDiv(em, width, em.idx(warps)), one);
    auto launch = gpu::LaunchOp::create(fb, colBlocks, E, one,
                                        em.idx(kGpuThreads), one, one);
    OpBuilder::InsertionGuard guard(fb);
    fb.setInsertionPointToEnd(&launch.getBody().front());
    auto terminator = gpu::TerminatorOp::create(fb);
    fb.setInsertionPoint(terminator);
    Emitter k(fb);
    Value bx = launch.getBlockIds().x, e = launch.getBlockIds().y;
    Value tid = launch.getThreadIds().x;
    Value lane = arith::RemUIOp::create(fb, tid, k.idx(32));
    Value warp = arith::DivUIOp::create(fb, tid, k.idx(32));
    Value col = k.add(k.mul(bx, k.idx(warps)), warp);
    // This expert's rows, disjoint from the earlier experts' as above.
    Value lo, hi;
    std::tie(lo, hi) =
        warpExpertRange(k, offsets, e, lane, numRows, numExperts);
    Value rows = k.sub(hi, lo);
    Value mine =
        k.andI(k.andI(k.gt(rows, zero), k.cmpi(arith::CmpIPredicate::sle, rows,
                                               k.idx(kGpuDecodeRows))),
               k.lt(col, width));
    k.ifThen(mine, [&] {
      // Source row of each of the expert's rows (clamped) and whether it
      // holds data. The second is recomputed where the row is stored: 8
      // predicates live across the loops would not fit the 7 predicate
      // registers of the hardware, and ptxas spilled.
      auto source = [&](int64_t r) -> std::pair<Value, Value> {
        Value row = k.minI(k.add(lo, k.idx(r)), k.sub(hi, one));
        Value ok = k.lt(k.idx(r), rows);
        if (!gather)
          return {row, ok};
        Value g = k.load(gather, {row});
        return {k.clampIndex(g, zero, k.sub(inputRows, one)),
                k.andI(ok, k.inRange(g, zero, inputRows))};
      };
      // Computed in each form of the loop below, for the rows it reads, so
      // that fewer addresses are live across the forms.
      auto sources = [&](int64_t numRows) {
        SmallVector<Value> src;
        for (int64_t r = 0; r < numRows; ++r)
          src.push_back(source(r).first);
        return src;
      };
      int64_t numAcc = kGpuDecodeRows * (glu ? 2 : 1);
      SmallVector<Value> inits(numAcc, k.f32(0.0));
      Value upCol = glu ? k.add(col, width) : col;
      SmallVector<Type> sumTypes(numAcc, fb.getF32Type());
      // Lane sums for every row: [r] of the gate (or only) column, then
      // [kGpuDecodeRows + r] of the up column.
      SmallVector<Value> sums = k.ifValues(
          sumTypes, decodeVectorsFit(k, x, w, depth),
          [&] { return emitDecodeVectors(k, x, w, e, col, upCol, sources,
                                         rows, depth, lane, glu); },
          [&] {
            // Any depth and alignment: one value of k per lane and step.
            SmallVector<Value> src = sources(kGpuDecodeRows);
            return k.loop(
                lane, depth, inits,
                [&](Value kk, ValueRange acc) -> SmallVector<Value> {
                  SmallVector<Value> next(acc.begin(), acc.end());
                  Value g = k.loadF(w, {e, col, kk});
                  Value u = glu ? k.loadF(w, {e, upCol, kk}) : Value();
                  for (int64_t r = 0; r < kGpuDecodeRows; ++r) {
                    Value a = k.loadF(x, {src[r], kk});
                    next[r] = math::FmaOp::create(fb, a, g, next[r]);
                    if (glu)
                      next[r + kGpuDecodeRows] = math::FmaOp::create(
                          fb, a, u, next[r + kGpuDecodeRows]);
                  }
                  return next;
                },
                /*step=*/32);
          });
      for (Value &v : sums)
        for (int32_t offset = 16; offset >= 1; offset /= 2)
          v = k.add(v, gpu::ShuffleOp::create(fb, v, offset, 32,
                                              gpu::ShuffleMode::XOR)
                           .getShuffleResult());
      k.ifThen(k.eq(lane, zero), [&] {
        for (int64_t r = 0; r < kGpuDecodeRows; ++r) {
          k.ifThen(k.lt(k.idx(r), rows), [&] {
            Value row = k.add(lo, k.idx(r));
            SmallVector<Value> values = {sums[r]};
            if (glu)
              values.push_back(sums[r + kGpuDecodeRows]);
            Value scale = epilogue == Epilogue::scale ? k.loadF(rowScale, {row})
                                                      : Value();
            Value v = tileEpilogue(k, epilogue, values, scale).front();
            k.storeF(k.select(source(r).second, v, k.f32(0.0)), out,
                     {row, col});
          });
        }
      });
    });
  }
}

//===----------------------------------------------------------------------===//
// moe.combine
//===----------------------------------------------------------------------===//

/// The sum over token t's slots j, in their order from zero, of
/// weights[t, j] times the slot's value: `read(y, rows[t, j])` for a row in
/// range, `read(passthrough, t)` for a passthrough slot (-2, when the op
/// has passthrough values); other slots (dropped, null experts) add
/// nothing. `splat` turns a weight into the type of `read`'s values (f32,
/// or vectors of f32 columns).
Value sumSlots(Emitter &em, Value t, Value y, Value rows, Value weights,
               Value numRows, Value passthrough, Value init,
               function_ref<Value(Value source, Value row)> read,
               function_ref<Value(Value weight)> splat) {
  Value zero = em.idx(0);
  Type type = init.getType();
  return em.loop(zero, em.dim(rows, 1), ValueRange{init},
                 [&](Value j, ValueRange acc) -> SmallVector<Value> {
                   Value r = em.load(rows, {t, j});
                   Value wt = splat(em.loadF(weights, {t, j}));
                   auto weighted = [&](Value source, Value row) -> Value {
                     return em.add(acc[0], em.mul(wt, read(source, row)));
                   };
                   return {em.ifValue(
                       type, em.inRange(r, zero, numRows),
                       [&] { return weighted(y, em.toIndex(r)); },
                       [&]() -> Value {
                         if (!passthrough)
                           return acc[0];
                         return em.ifValue(
                             type, em.eq(r, em.i32(-2)),
                             [&] { return weighted(passthrough, t); },
                             [&] { return acc[0]; });
                       })};
                 })[0];
}

/// out[t, :] = sum over the slots j of weights[t, j] * y[rows[t, j], :], the
/// slots summed in their order from zero (deterministic, and the same sums
/// on every target). On CPUs with f32 rows, a parallel loop over tokens
/// summing vectors of 16 columns in registers; otherwise (GPUs, other
/// precisions) one parallel iteration per output element.
Value lowerCombine(ImplicitLocOpBuilder &b, CombineOp op, bool gpu) {
  Emitter em(b);
  auto resultType = cast<RankedTensorType>(op.getType());
  Value zero = em.idx(0);
  Value y = toBuffer(b, op.getInput());
  Value weights = toBuffer(b, op.getWeights());
  Value rows = toBuffer(b, op.getRows());
  Value passthrough =
      op.getPassthrough() ? toBuffer(b, op.getPassthrough()) : Value();
  Value numTokens = em.dim(rows, 0);
  Value numRows = em.dim(y, 0);
  Value width = em.dim(y, 1);
  SmallVector<Value> dyn;
  if (resultType.isDynamicDim(0))
    dyn.push_back(numTokens);
  if (resultType.isDynamicDim(1))
    dyn.push_back(width);
  Value out = em.allocLike(resultType, dyn);
  bool f32 =
      resultType.getElementType().isF32() &&
      getElementTypeOrSelf(y.getType()).isF32() &&
      (!passthrough || getElementTypeOrSelf(passthrough.getType()).isF32());
  if (gpu || !f32) {
    parallelLoop2D(em, numTokens, width, [&](Value t, Value c) {
      Value sum = sumSlots(
          em, t, y, rows, weights, numRows, passthrough, em.f32(0.0),
          [&](Value source, Value row) {
            return em.loadF(source, {row, c});
          },
          [](Value w) { return w; });
      em.storeF(sum, out, {t, c});
    });
    return toTensor(b, out, resultType);
  }
  VectorType vt = vec16(b);
  Value pad = em.f32(0.0);
  parallelLoop(em, zero, numTokens, [&](Value t) {
    em.loop(
        zero, width,
        [&](Value c) {
          Value sum = sumSlots(
              em, t, y, rows, weights, numRows, passthrough,
              em.f32Like(vt, 0.0),
              [&](Value source, Value row) -> Value {
                return vector::TransferReadOp::create(b, vt, source,
                                                      ValueRange{row, c}, pad,
                                                      ArrayRef<bool>{false});
              },
              [&](Value w) -> Value {
                return vector::BroadcastOp::create(b, vt, w);
              });
          vector::TransferWriteOp::create(b, sum, out, ValueRange{t, c},
                                          ArrayRef<bool>{false});
        },
        kLanes);
  });
  return toTensor(b, out, resultType);
}

//===----------------------------------------------------------------------===//
// moe.experts
//===----------------------------------------------------------------------===//

Value lowerExperts(ImplicitLocOpBuilder &b, ExpertsOp op) {
  Emitter em(b);
  auto resultType = cast<RankedTensorType>(op.getType());
  Value zero = em.idx(0), one = em.idx(1);
  Value input = op.getInput();
  Value numRows = tensor::DimOp::create(b, input, 0);
  Value width = em.idx(resultType.getDimSize(1));
  OpFoldResult widthFold = b.getIndexAttr(resultType.getDimSize(1));
  SmallVector<OpFoldResult> sizes = {numRows, width};
  if (!resultType.isDynamicDim(0))
    sizes[0] = b.getIndexAttr(resultType.getDimSize(0));
  Value init = tensor::EmptyOp::create(b, sizes, resultType.getElementType());
  init = linalg::FillOp::create(
             b, ValueRange{em.zeroOf(resultType.getElementType())},
             ValueRange{init})
             .getResult(0);
  int64_t numExperts =
      cast<RankedTensorType>(op.getOffsets().getType()).getDimSize(0) - 1;
  Block &body = op.getBody().front();
  Value result = em.loop(
      zero, em.idx(numExperts), ValueRange{init},
      [&](Value e, ValueRange carried) -> SmallVector<Value> {
        Value lo = em.clampIndex(
            tensor::ExtractOp::create(b, op.getOffsets(), e), zero, numRows);
        Value hi = em.clampIndex(
            tensor::ExtractOp::create(b, op.getOffsets(), em.add(e, one)), lo,
            numRows);
        Value n = em.sub(hi, lo);
        auto inputType = cast<RankedTensorType>(input.getType());
        OpFoldResult depth = tensor::getMixedSize(b, b.getLoc(), input, 1);
        Value rowsIn = tensor::ExtractSliceOp::create(
            b,
            RankedTensorType::get(
                {ShapedType::kDynamic, inputType.getDimSize(1)},
                inputType.getElementType()),
            input, ArrayRef<OpFoldResult>{lo, b.getIndexAttr(0)},
            ArrayRef<OpFoldResult>{n, depth},
            ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
        IRMapping mapping;
        mapping.map(body.getArgument(0), e);
        mapping.map(body.getArgument(1), rowsIn);
        for (auto [arg, weight] :
             llvm::zip(body.getArguments().drop_front(2), op.getWeights())) {
          auto wType = cast<RankedTensorType>(weight.getType());
          SmallVector<OpFoldResult> offs(wType.getRank(), b.getIndexAttr(0));
          offs[0] = e;
          SmallVector<OpFoldResult> szs =
              tensor::getMixedSizes(b, b.getLoc(), weight);
          szs[0] = b.getIndexAttr(1);
          SmallVector<OpFoldResult> strides(wType.getRank(), b.getIndexAttr(1));
          Value slice = tensor::ExtractSliceOp::create(
              b, cast<RankedTensorType>(arg.getType()), weight, offs, szs,
              strides);
          mapping.map(arg, slice);
        }
        for (Operation &nested : body.without_terminator())
          b.clone(nested, mapping);
        Value yielded =
            mapping.lookupOrDefault(body.getTerminator()->getOperand(0));
        Value inserted = tensor::InsertSliceOp::create(
            b, yielded, carried[0],
            ArrayRef<OpFoldResult>{lo, b.getIndexAttr(0)},
            ArrayRef<OpFoldResult>{n, widthFold},
            ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
        return {inserted};
      })[0];
  if (result.getType() != resultType)
    result = tensor::CastOp::create(b, resultType, result);
  return result;
}

//===----------------------------------------------------------------------===//
// Statistics
//===----------------------------------------------------------------------===//

Value scalarResult(ImplicitLocOpBuilder &b, Value scalar, Type tensorType) {
  Emitter em(b);
  Value buffer = em.alloc({}, b.getF32Type(), {});
  em.store(scalar, buffer, {});
  return toTensor(b, buffer, tensorType);
}

Value lowerAuxLoss(ImplicitLocOpBuilder &b, AuxLossOp op) {
  Emitter em(b);
  Value zero = em.idx(0), one = em.idx(1);
  Value probs = toBuffer(b, op.getProbs());
  Value indices = toBuffer(b, op.getIndices());
  Value groups = op.getGroups() ? toBuffer(b, op.getGroups()) : Value();
  Value numTokens = em.dim(probs, 0);
  Value E = em.dim(probs, 1);
  Value slots = em.dim(indices, 1);
  Value counts = em.alloc({ShapedType::kDynamic}, b.getF32Type(), {E});
  Value mass = em.alloc({ShapedType::kDynamic}, b.getF32Type(), {E});
  Value numGroups = groups ? em.sub(em.dim(groups, 0), one) : one;
  SmallVector<Value> total = em.loop(
      zero, numGroups, ValueRange{em.f32(0.0), em.f32(0.0)},
      [&](Value g, ValueRange c) -> SmallVector<Value> {
        Value begin = zero, end = numTokens;
        if (groups) {
          begin = em.clampIndex(em.load(groups, {g}), zero, numTokens);
          end = em.clampIndex(em.load(groups, {em.add(g, one)}), begin,
                              numTokens);
        }
        em.fill(counts, em.f32(0.0));
        em.fill(mass, em.f32(0.0));
        em.loop(begin, end, [&](Value t) {
          em.loop(zero, E, [&](Value e) {
            em.store(em.add(em.load(mass, {e}), em.loadF(probs, {t, e})), mass,
                     {e});
          });
          em.loop(zero, slots, [&](Value j) {
            Value e = em.load(indices, {t, j});
            em.ifThen(em.inRange(e, zero, E), [&] {
              Value ei = em.toIndex(e);
              em.store(em.add(em.load(counts, {ei}), em.f32(1.0)), counts,
                       {ei});
            });
          });
        });
        Value n = arith::UIToFPOp::create(b, b.getF32Type(),
                                          em.toI64(em.sub(end, begin)));
        Value dot = em.loop(zero, E, ValueRange{em.f32(0.0)},
                            [&](Value e, ValueRange cc) -> SmallVector<Value> {
                              Value f = em.load(counts, {e});
                              Value p = em.load(mass, {e});
                              return {em.add(cc[0], em.mul(f, p))};
                            })[0];
        Value numE = arith::UIToFPOp::create(b, b.getF32Type(), em.toI64(E));
        Value loss = em.div(em.mul(numE, dot), em.mul(n, n));
        Value nonEmpty = em.gt(end, begin);
        return {em.select(nonEmpty, em.add(c[0], loss), c[0]),
                em.select(nonEmpty, em.add(c[1], em.f32(1.0)), c[1])};
      });
  Value mean = em.select(em.gt(total[1], em.f32(0.0)),
                         em.div(total[0], total[1]), em.f32(0.0));
  return scalarResult(b, mean, op.getType());
}

Value lowerZLoss(ImplicitLocOpBuilder &b, ZLossOp op) {
  Emitter em(b);
  Value zero = em.idx(0);
  Value logits = toBuffer(b, op.getLogits());
  Value numTokens = em.dim(logits, 0);
  Value numCols = em.dim(logits, 1);
  Value sum = em.loop(
      zero, numTokens, ValueRange{em.f32(0.0)},
      [&](Value t, ValueRange c) -> SmallVector<Value> {
        Value maxv = em.loop(zero, numCols, ValueRange{em.f32(-INFINITY)},
                             [&](Value e, ValueRange cc) -> SmallVector<Value> {
                               Value l = em.sanitize(em.loadF(logits, {t, e}));
                               return {em.select(em.gt(l, cc[0]), l, cc[0])};
                             })[0];
        // An infinite maximum is the log-sum-exp itself.
        Value infinite =
            em.cmpf(arith::CmpFPredicate::OEQ, math::AbsFOp::create(b, maxv),
                    em.f32(INFINITY));
        Value shift = em.select(infinite, em.f32(0.0), maxv);
        Value s = em.loop(zero, numCols, ValueRange{em.f32(0.0)},
                          [&](Value e, ValueRange cc) -> SmallVector<Value> {
                            Value l = em.sanitize(em.loadF(logits, {t, e}));
                            return {em.add(cc[0], em.exp(em.sub(l, shift)))};
                          })[0];
        Value lse = em.select(infinite, maxv, em.add(shift, em.log(s)));
        return {em.add(c[0], em.mul(lse, lse))};
      })[0];
  Value n = arith::UIToFPOp::create(b, b.getF32Type(), em.toI64(numTokens));
  Value mean = em.select(em.gt(numTokens, zero), em.div(sum, n), em.f32(0.0));
  return scalarResult(b, mean, op.getType());
}

Value lowerExpertLoad(ImplicitLocOpBuilder &b, ExpertLoadOp op) {
  Emitter em(b);
  auto resultType = cast<RankedTensorType>(op.getType());
  Value zero = em.idx(0);
  Value indices = toBuffer(b, op.getIndices());
  Value E = em.idx(resultType.getDimSize(0));
  Value load = em.allocLike(resultType, {});
  em.fill(load, em.i32(0));
  em.loop(zero, em.dim(indices, 0), [&](Value t) {
    em.loop(zero, em.dim(indices, 1), [&](Value j) {
      Value e = em.load(indices, {t, j});
      em.ifThen(em.inRange(e, zero, E), [&] {
        Value ei = em.toIndex(e);
        em.store(em.add(em.load(load, {ei}), em.i32(1)), load, {ei});
      });
    });
  });
  return toTensor(b, load, resultType);
}

//===----------------------------------------------------------------------===//
// The pass
//===----------------------------------------------------------------------===//

/// What the CPU lowering of grouped_matmul is told about its target: BF16
/// dot products, the target model, and the schedule from the pass options
/// (a tile size of 0: the cost model's), which an op's attributes override.
struct CPUTarget {
  bool bf16Dot = false;
  CPUTargetModel model;
  GroupedMatmulSchedule defaults{{0, 0}};
};

/// The op's discardable attribute `name`, a positive integer of at most 32
/// bits (`what` says what it counts), or `fallback` when it has none.
FailureOr<int64_t> getPositiveAttr(Operation *op, StringRef name,
                                   StringRef what, int64_t fallback) {
  Attribute attr = op->getAttr(name);
  if (!attr)
    return fallback;
  auto value = dyn_cast<IntegerAttr>(attr);
  if (!value || value.getType().isIndex() ||
      value.getValue().getSignificantBits() > 32 || value.getInt() < 1) {
    return op->emitOpError("expects '")
           << name << "' to be a positive integer of at most 32 bits (" << what
           << "), not " << attr;
  }
  return value.getInt();
}

/// The CPU schedule of one grouped matmul: the tile (the op's `moe.tile`,
/// else the pass options, else the cost model), the blocks of k
/// (`moe.depth_block`, else the pass option), the work items per expert
/// (`moe.column_chunks`, else the target model's) and the decode threshold
/// (`moe.panel_min_rows`, else the pass option, else kPanelMinRows or
/// kAMXPanelMinRows), checked here.
FailureOr<GroupedMatmulSchedule> getCPUSchedule(GroupedMatmulOp matmul,
                                                const CPUTarget &target) {
  // A `moe.tile` array (set by a schedule, e.g. transform.annotate)
  // overrides the pass's tile for this op.
  bool bf16 = getElementTypeOrSelf(matmul.getWeight()).isBF16();
  CPUTile opTile = chooseCPUTile(target.model.unit,
                                 !bf16            ? TileOperands::F32
                                 : target.bf16Dot ? TileOperands::BF16Dot
                                                  : TileOperands::BF16Emulated);
  // AMX without the AVX-512 fallback: the decode kernel's tile of 16
  // weight rows, so that its column blocks (8 or 16 columns) divide the
  // AMX tiles' (16 or 32) and chunks of columns split evenly.
  if (bf16 && target.model.amxBF16 && !target.model.amxRuntimeCheck)
    opTile = {2, 16};
  const GroupedMatmulSchedule &defaults = target.defaults;
  if (defaults.tile.panelVectors)
    opTile.panelVectors = defaults.tile.panelVectors;
  if (defaults.tile.columns)
    opTile.columns = defaults.tile.columns;
  if (Attribute attr = matmul->getAttr(kTileAttr)) {
    auto sizes = dyn_cast<DenseI64ArrayAttr>(attr);
    if (!sizes || sizes.size() != 2) {
      return matmul.emitOpError("expects '")
             << kTileAttr
             << "' to be array<i64: panel-vectors, tile-columns>, "
                "not "
             << attr;
    }
    opTile = {sizes[0], sizes[1]};
    if (!isSupportedCPUTile(opTile)) {
      return matmul.emitOpError("has an unsupported '")
             << kTileAttr << "' " << attr << " (" << kTileRule << ")";
    }
  }
  GroupedMatmulSchedule schedule{opTile};
  FailureOr<int64_t> depthBlock = getPositiveAttr(
      matmul, kDepthBlockAttr, "k steps per block", defaults.depthBlock);
  FailureOr<int64_t> chunks =
      getPositiveAttr(matmul, kColumnChunksAttr, "work items per expert",
                      defaults.columnChunks);
  FailureOr<int64_t> minRows = getPositiveAttr(
      matmul, kPanelMinRowsAttr, "rows an expert needs for the panel kernel",
      defaults.panelMinRows          ? defaults.panelMinRows
      : bf16 && target.model.amxBF16 ? kAMXPanelMinRows
                                     : kPanelMinRows);
  if (failed(depthBlock) || failed(chunks) || failed(minRows))
    return failure();
  schedule.depthBlock = *depthBlock;
  schedule.columnChunks = *chunks;
  schedule.panelMinRows = *minRows;
  return schedule;
}

/// The grouped matmul that takes `producer`'s rows as its input and can
/// take them as the panels `producer`'s epilogues write (PanelSink), or
/// null: the producer's only user, reading the rows in plan order (no
/// gather) with the same offsets, both on the panel kernels, the consumer
/// with the producer's panel height and decode threshold (so that both
/// give an expert the same panels, or both the decode kernel), and for
/// bf16 pairs a static width of whole 32-wide steps of k split into whole
/// pairs by the producer's column blocks.
GroupedMatmulOp getPanelConsumer(GroupedMatmulOp producer,
                                 const GroupedMatmulSchedule &schedule,
                                 const CPUTarget &target) {
  if (!producer->hasOneUse())
    return {};
  auto consumer = dyn_cast<GroupedMatmulOp>(*producer->user_begin());
  if (!consumer || consumer.getInput() != producer.getResult() ||
      consumer.getGather() || consumer.getOffsets() != producer.getOffsets() ||
      !takesPanelKernels(producer) || !takesPanelKernels(consumer))
    return {};
  int64_t width = producer.getType().getDimSize(1);
  int64_t outCols = producer.getEpilogue() == Epilogue::silu_glu
                        ? schedule.tile.columns / 2
                        : schedule.tile.columns;
  bool pairs = getElementTypeOrSelf(consumer.getWeight()).isBF16();
  if (ShapedType::isDynamic(width) || (pairs && (width % 32 || outCols % 2)))
    return {};
  // The consumer's schedule, quietly: its own lowering reports a bad one.
  ScopedDiagnosticHandler quiet(producer.getContext(),
                                [](Diagnostic &) { return success(); });
  FailureOr<GroupedMatmulSchedule> theirs = getCPUSchedule(consumer, target);
  if (failed(theirs) ||
      theirs->tile.panelVectors != schedule.tile.panelVectors ||
      theirs->panelMinRows != schedule.panelMinRows)
    return {};
  return consumer;
}

/// Lowers one grouped matmul for the GPU or the CPU target (the CPU
/// schedule from getCPUSchedule). On the CPU, a matmul whose rows feed
/// another one (getPanelConsumer) writes that one's panels instead of its
/// rows, and `handoff` holds them for the consumer's lowering.
FailureOr<Value> lowerGroupedMatmulFor(ImplicitLocOpBuilder &b,
                                       GroupedMatmulOp matmul, bool gpu,
                                       bool mma, const CPUTarget &target,
                                       PanelHandoff &handoff) {
  if (gpu) {
    // The kernels widen each weight as they load it and compute in f32
    // with CUDA-core FMAs, so bf16 weights halve the bytes they stream;
    // with `mma`, the tiled kernel multiplies bf16 weights by tokens
    // rounded to bf16 on tensor cores instead. Tokens and results stay
    // f32.
    Type tokenType = getElementTypeOrSelf(matmul.getInput());
    Type weightType = getElementTypeOrSelf(matmul.getWeight());
    Type resultType = getElementTypeOrSelf(matmul.getType());
    if (!tokenType.isF32() || !resultType.isF32() ||
        !(weightType.isF32() || weightType.isBF16())) {
      return matmul.emitOpError("has no GPU lowering for ")
             << tokenType << " tokens, " << weightType << " weights and "
             << resultType
             << " results yet (f32 tokens and results, f32 or bf16 weights)";
    }
    return lowerGroupedMatmulGPU(b, matmul, mma);
  }
  FailureOr<GroupedMatmulSchedule> schedule = getCPUSchedule(matmul, target);
  if (failed(schedule))
    return failure();
  PanelSink sink;
  GroupedMatmulOp consumer = getPanelConsumer(matmul, *schedule, target);
  if (consumer)
    sink.bf16 = getElementTypeOrSelf(consumer.getWeight()).isBF16();
  Value result =
      lowerGroupedMatmul(b, matmul, target.bf16Dot, *schedule, target.model,
                         consumer ? &sink : nullptr, handoff.lookup(matmul));
  if (consumer)
    handoff[consumer] = sink.panels;
  return result;
}

/// The gate: on GPUs a grouped matmul of one expert; on CPUs the
/// dot-product kernel above for f32 operands and the generic contraction
/// otherwise.
Value lowerGate(ImplicitLocOpBuilder &b, GateOp op, bool gpu) {
  if (gpu)
    return lowerGateGPU(b, op);
  bool f32 = getElementTypeOrSelf(op.getType()).isF32() &&
             getElementTypeOrSelf(op.getInput()).isF32() &&
             getElementTypeOrSelf(op.getWeight()).isF32();
  return f32 ? lowerGateF32(b, op) : lowerGateGeneric(b, op);
}

LogicalResult lowerOne(IRRewriter &rewriter, Operation *op, bool gpu, bool mma,
                       const CPUTarget &target, int64_t planBlock,
                       PanelHandoff &handoff) {
  ImplicitLocOpBuilder b(op->getLoc(), rewriter);
  b.setInsertionPoint(op);
  SmallVector<Value> results;
  LogicalResult status = success();
  TypeSwitch<Operation *>(op)
      .Case([&](GateOp gate) { results.push_back(lowerGate(b, gate, gpu)); })
      .Case([&](RouteOp route) { status = lowerRoute(b, route, results, gpu); })
      .Case([&](DispatchPlanOp plan) {
        FailureOr<int64_t> block = getPositiveAttr(
            plan, kPlanBlockAttr, "tokens per block of the plan", planBlock);
        if (failed(block))
          status = failure();
        else
          lowerDispatchPlan(b, plan, results, *block);
      })
      .Case([&](GroupedMatmulOp matmul) {
        FailureOr<Value> lowered =
            lowerGroupedMatmulFor(b, matmul, gpu, mma, target, handoff);
        if (failed(lowered))
          status = failure();
        else
          results.push_back(*lowered);
      })
      .Case([&](CombineOp combine) {
        results.push_back(lowerCombine(b, combine, gpu));
      })
      .Case([&](ExpertsOp experts) {
        results.push_back(lowerExperts(b, experts));
      })
      .Case([&](AuxLossOp aux) { results.push_back(lowerAuxLoss(b, aux)); })
      .Case([&](ZLossOp z) { results.push_back(lowerZLoss(b, z)); })
      .Case([&](ExpertLoadOp load) {
        results.push_back(lowerExpertLoad(b, load));
      })
      .Default([&](Operation *other) {
        status = other->emitOpError("has no CPU lowering");
      });
  if (failed(status))
    return failure();
  rewriter.replaceOp(op, results);
  return success();
}

struct MoELowerToLoopsPass
    : public mlir::moe::impl::MoELowerToLoopsBase<MoELowerToLoopsPass> {
  using MoELowerToLoopsBase::MoELowerToLoopsBase;
  void runOnOperation() override {
    Operation *root = getOperation();
    IRRewriter rewriter(&getContext());
    CPUTarget target{bf16Dot,
                     {{vectorBits, vectorRegisters},
                      llcBytes,
                      l2Bytes,
                      columnChunks,
                      amxBF16,
                      amxRuntimeCheck},
                     {{panelVectors, tileColumns},
                      int64_t(depthBlock),
                      columnChunks,
                      panelMinRows}};
    CPUTile checked{panelVectors ? panelVectors : 1,
                    tileColumns ? tileColumns : 2};
    if (!isSupportedCPUTile(checked)) {
      emitError(root->getLoc(), "unsupported tile options panel-vectors=")
          << int64_t(panelVectors) << " tile-columns=" << int64_t(tileColumns)
          << " (" << kTileRule << ", or 0 for the cost model's)";
      return signalPassFailure();
    }
    if (gpuMma && !gpu) {
      emitError(root->getLoc(), "gpu-mma applies to the GPU forms: add gpu");
      return signalPassFailure();
    }
    if (llcBytes <= 0 || l2Bytes <= 0) {
      emitError(root->getLoc(), "cache sizes must be positive, not llc-bytes=")
          << int64_t(llcBytes) << " l2-bytes=" << int64_t(l2Bytes);
      return signalPassFailure();
    }
    if (columnChunks < 1 || columnChunks > INT32_MAX || panelMinRows < 0 ||
        panelMinRows > INT32_MAX) {
      emitError(root->getLoc(),
                "work item options must be positive 32-bit integers (0 for "
                "the target's panel-min-rows), not column-chunks=")
          << int64_t(columnChunks)
          << " panel-min-rows=" << int64_t(panelMinRows);
      return signalPassFailure();
    }
    int64_t planBlock = planBlockTokens ? planBlockTokens
                        : gpu           ? kGPUPlanBlock
                                        : kCPUPlanBlock;
    if (planBlock < 1 || planBlock > INT32_MAX) {
      emitError(root->getLoc(),
                "plan-block must be a positive 32-bit integer (0 for the "
                "target's), not ")
          << int64_t(planBlockTokens);
      return signalPassFailure();
    }
    PanelHandoff handoff;
    // Region ops first (their bodies may hold moe ops), then the rest.
    SmallVector<Operation *> regionOps, ops;
    root->walk([&](Operation *op) {
      if (isa<ExpertsOp>(op))
        regionOps.push_back(op);
    });
    for (Operation *op : regionOps)
      if (failed(
              lowerOne(rewriter, op, gpu, gpuMma, target, planBlock, handoff)))
        return signalPassFailure();
    root->walk([&](Operation *op) {
      if (isa<MoEDialect>(op->getDialect()) && !isa<YieldOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      if (isa<LayerOp>(op)) {
        op->emitOpError("must be expanded first (run --moe-expand-layer)");
        return signalPassFailure();
      }
      if (failed(
              lowerOne(rewriter, op, gpu, gpuMma, target, planBlock, handoff)))
        return signalPassFailure();
    }
  }
};

} // namespace

bool mlir::moe::isSupportedCPUTile(CPUTile tile) {
  return tile.panelVectors >= 1 && tile.panelVectors <= 4 &&
         tile.columns >= 2 && tile.columns <= 32 && tile.columns % 2 == 0;
}

CPUTile mlir::moe::chooseCPUTile(CPUVectorUnit unit, TileOperands operands) {
  // A 16-lane f32 vector takes `parts` registers. Per k step (a pair of k
  // for bf16) a tile of v vectors by c columns loads parts * v panel
  // registers and broadcasts c weights, into parts * v * c accumulator
  // registers. Widened bf16 pairs take twice the operand registers (even
  // and odd halves) and two FMAs per product. The tile kept has the most
  // accumulators among those whose accumulators take at most three
  // quarters of the registers, whose accumulators and operands leave one
  // register spare, and whose loads are at most two thirds of their
  // FMAs; ties go to fewer vector instructions (widening bf16 costs one
  // per weight column), then to fewer panel vectors, which pad small
  // experts less.
  // Measured here (docs/design.md): AVX-512 2 x 12 (2 x 14, 28
  // accumulators, ran 8% slower; 1 x 24, 25 loads per 24 FMAs, 2.4x
  // slower); AVX2 f32 1 x 6 (2.1x the 2 x 12 tile, which spills); AVX2
  // widened bf16 1 x 4 (1 x 6 spills).
  int64_t parts = std::max<int64_t>(1, 512 / std::max(unit.bits, 1u));
  bool widened = operands == TileOperands::BF16Emulated;
  int64_t registers = unit.registers;
  int64_t panelRegisters = widened ? 2 * parts : parts;
  int64_t weightRegisters = widened ? 2 : 1, fmasPerProduct = widened ? 2 : 1;
  CPUTile best{1, 2};
  int64_t bestAccumulators = 0, bestOps = 0;
  for (int64_t v = 1; v <= 4; ++v)
    for (int64_t c = 2; c <= 32; c += 2) {
      int64_t accumulators = parts * v * c;
      int64_t used = accumulators + panelRegisters * v + weightRegisters;
      int64_t loads = parts * v + c, fmas = accumulators * fmasPerProduct;
      if (4 * accumulators > 3 * registers || used > registers - 1 ||
          3 * loads > 2 * fmas)
        continue;
      // Vector instructions per step: the FMAs, and for widened bf16 two
      // shifts or masks per broadcast weight and per panel register.
      int64_t ops = fmas + (widened ? 2 * (c + parts * v) : 0);
      if (accumulators > bestAccumulators ||
          (accumulators == bestAccumulators && ops < bestOps)) {
        best = {v, c};
        bestAccumulators = accumulators;
        bestOps = ops;
      }
    }
  return best;
}

LogicalResult mlir::moe::buildGPULauncherBody(func::FuncOp fn) {
  auto config = fn->getAttrOfType<DictionaryAttr>(kGpuLauncherAttr);
  if (!config || !fn.isExternal())
    return fn.emitOpError("is not a GPU launcher declaration");
  auto kind = config.getAs<StringAttr>("kind");
  if (kind && kind.getValue() == "grouped_matmul" &&
      config.getAs<EpilogueAttr>("epilogue") &&
      config.getAs<BoolAttr>("gather") && config.getAs<BoolAttr>("row_scale") &&
      config.getAs<IntegerAttr>("num_experts")) {
    // Tensor-core tiles read bf16 weights and f32 tokens bit by bit.
    if (Attribute mma = config.get("mma")) {
      auto flag = dyn_cast<BoolAttr>(mma);
      ArrayRef<Type> inputs = fn.getArgumentTypes();
      auto element = [&](size_t i) {
        auto type = i < inputs.size() ? dyn_cast<MemRefType>(inputs[i])
                                      : MemRefType();
        return type ? type.getElementType() : Type();
      };
      if (!flag || (flag.getValue() && !(element(0) && element(0).isF32() &&
                                         element(1) && element(1).isBF16())))
        return fn.emitOpError("has an mma configuration that is not a bool "
                              "over f32 tokens and bf16 weights: ")
               << config;
    }
    buildGroupedMatmulLauncher(fn, config);
    return success();
  }
  return fn.emitOpError("has an unknown moe.gpu_launcher configuration ")
         << config;
}
