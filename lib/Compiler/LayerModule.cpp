//===- LayerModule.cpp - LayerSpec -> moe IR with a C entry ABI -----------===//

#include "moe/Compiler/LayerModule.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;
using namespace mlir::moe::frontend;

//===----------------------------------------------------------------------===//
// ABI description
//===----------------------------------------------------------------------===//

namespace {

DimSpec fixed(int64_t extent) { return {DimSpec::Static, extent}; }
DimSpec tokens() { return {DimSpec::Tokens, 0}; }

EntryArg field(ArgSource source, int index, StringRef name, StringRef ctype,
               std::vector<DimSpec> shape) {
  return {source, index, name.str(), ctype.str(), std::move(shape)};
}

bool usesGroups(const LayerSpec &spec, CapacityGroupKind kind) {
  const CapacitySpec &capacity = spec.router.capacity;
  return capacity.enabled && capacity.group == kind;
}

} // namespace

int64_t mlir::moe::compiler::elementBytes(StringRef ctype) {
  return ctype == "uint16_t" ? 2 : ctype == "int64_t" ? 8 : 4;
}

int64_t mlir::moe::compiler::numElements(const EntryArg &arg, int64_t tokens) {
  int64_t n = 1;
  for (const DimSpec &dim : arg.shape)
    n *= dim.kind == DimSpec::Tokens            ? tokens
         : dim.kind == DimSpec::GroupBoundaries ? 1
                                                : dim.extent;
  return n;
}

LayerABI mlir::moe::compiler::describeLayer(const LayerSpec &spec,
                                            StringRef symbol) {
  LayerABI abi;
  abi.symbol = symbol.str();
  abi.spec = spec;
  int64_t d = spec.hidden, E = spec.numExperts, K = spec.numSlots();
  bool hash = spec.router.family == RouterFamily::Hash;
  auto addWeight = [&](StringRef name, StringRef ctype,
                       std::vector<DimSpec> shape) {
    abi.weights.push_back(field(ArgSource::Weight, abi.weights.size(), name,
                                ctype, std::move(shape)));
  };
  if (!hash)
    addWeight("gate", "float", {fixed(spec.routerRows()), fixed(d)});
  if (spec.gateBias)
    addWeight("gate_bias", "float", {fixed(spec.routerRows())});
  if (spec.router.selectionBias)
    addWeight("selection_bias", "float", {fixed(E)});
  if (hash)
    addWeight("hash_table", "int32_t", {fixed(spec.hashVocab)});
  // bf16 expert weights travel as their bits.
  StringRef expertType =
      spec.expertWeights == WeightType::BF16 ? "uint16_t" : "float";
  addWeight("w1", expertType, {fixed(E), fixed(spec.firstRows()), fixed(d)});
  addWeight("w2", expertType, {fixed(E), fixed(d), fixed(spec.ffn)});
  if (spec.sharedFfn > 0) {
    int64_t rows = spec.activation == ExpertActivation::SiluGlu
                       ? 2 * spec.sharedFfn
                       : spec.sharedFfn;
    addWeight("shared_w1", expertType, {fixed(rows), fixed(d)});
    addWeight("shared_w2", expertType, {fixed(d), fixed(spec.sharedFfn)});
    if (spec.sharedGate)
      addWeight("shared_gate", "float", {fixed(1), fixed(d)});
  }

  auto addRouting = [&](StringRef name, StringRef ctype,
                        std::vector<DimSpec> shape) {
    abi.routing.push_back(field(ArgSource::Routing, abi.routing.size(), name,
                                ctype, std::move(shape)));
  };
  addRouting("indices", "int32_t", {tokens(), fixed(K)});
  addRouting("weights", "float", {tokens(), fixed(K)});
  addRouting("rows", "int32_t", {tokens(), fixed(K)});
  addRouting("expert_load", "int32_t", {fixed(E)});
  if (!hash) {
    addRouting("logits", "float", {tokens(), fixed(spec.routerRows())});
    addRouting("aux_loss", "float", {});
    addRouting("z_loss", "float", {});
  }

  abi.needsTokenIds = hash;
  abi.needsSequenceLength = usesGroups(spec, CapacityGroupKind::Sequence);
  abi.needsGroups = usesGroups(spec, CapacityGroupKind::Request);

  std::vector<EntryArg> common;
  common.push_back(
      field(ArgSource::BatchX, 0, "x", "float", {tokens(), fixed(d)}));
  if (abi.needsTokenIds)
    common.push_back(
        field(ArgSource::BatchTokenIds, 0, "token_ids", "int64_t", {tokens()}));
  if (abi.needsSequenceLength)
    common.push_back(
        field(ArgSource::SequenceLength, 0, "sequence_length", "int64_t", {}));
  if (abi.needsGroups)
    common.push_back(field(ArgSource::BatchGroups, 0, "group_offsets",
                           "int32_t", {{DimSpec::GroupBoundaries, 0}}));
  llvm::append_range(common, abi.weights);
  abi.forwardArgs = common;
  abi.forwardArgs.push_back(
      field(ArgSource::Output, 0, "y", "float", {tokens(), fixed(d)}));
  abi.routeArgs = common;
  llvm::append_range(abi.routeArgs, abi.routing);
  return abi;
}

std::pair<const void *, size_t>
mlir::moe::compiler::getWeightData(const LayerWeights &w,
                                   const EntryArg &field) {
  StringRef name = field.name;
  if (name == "hash_table")
    return {w.hashTable.data(), w.hashTable.size()};
  if (field.ctype == "uint16_t") {
    const std::vector<uint16_t> *bits =
        llvm::StringSwitch<const std::vector<uint16_t> *>(name)
            .Case("w1", &w.w1BF16)
            .Case("w2", &w.w2BF16)
            .Case("shared_w1", &w.sharedW1BF16)
            .Case("shared_w2", &w.sharedW2BF16)
            .Default(nullptr);
    if (!bits)
      return {nullptr, 0};
    return {bits->data(), bits->size()};
  }
  const std::vector<float> *data =
      llvm::StringSwitch<const std::vector<float> *>(name)
          .Case("gate", &w.gate)
          .Case("gate_bias", &w.gateBias)
          .Case("selection_bias", &w.selectionBias)
          .Case("w1", &w.w1)
          .Case("w2", &w.w2)
          .Case("shared_w1", &w.sharedW1)
          .Case("shared_w2", &w.sharedW2)
          .Case("shared_gate", &w.sharedGate)
          .Default(nullptr);
  if (!data)
    return {nullptr, 0};
  return {data->data(), data->size()};
}

std::vector<const void *>
mlir::moe::compiler::getWeightPointers(const LayerABI &abi,
                                       const LayerWeights &w) {
  std::vector<const void *> pointers;
  for (const EntryArg &field : abi.weights)
    pointers.push_back(getWeightData(w, field).first);
  return pointers;
}

RoutingBuffers::RoutingBuffers(const LayerABI &abi, int64_t numTokens) {
  const LayerSpec &spec = abi.spec;
  slots = spec.numSlots();
  indices.resize(numTokens * slots);
  rows.resize(numTokens * slots);
  weights.resize(numTokens * slots);
  load.resize(spec.numExperts);
  logits.resize(numTokens * spec.routerRows());
}

std::vector<void *> RoutingBuffers::pointers(const LayerABI &abi) {
  std::vector<void *> out;
  for (const EntryArg &field : abi.routing)
    out.push_back(llvm::StringSwitch<void *>(field.name)
                      .Case("indices", indices.data())
                      .Case("weights", weights.data())
                      .Case("rows", rows.data())
                      .Case("expert_load", load.data())
                      .Case("logits", logits.data())
                      .Case("aux_loss", &auxLoss)
                      .Case("z_loss", &zLoss)
                      .Default(nullptr));
  return out;
}

//===----------------------------------------------------------------------===//
// IR
//===----------------------------------------------------------------------===//

namespace {

Type elementTypeOf(MLIRContext *ctx, StringRef ctype) {
  if (ctype == "float")
    return Float32Type::get(ctx);
  if (ctype == "int32_t")
    return IntegerType::get(ctx, 32);
  if (ctype == "uint16_t")
    return BFloat16Type::get(ctx);
  return IntegerType::get(ctx, 64);
}

SmallVector<int64_t> shapeOf(const EntryArg &arg) {
  SmallVector<int64_t> shape;
  for (const DimSpec &dim : arg.shape)
    shape.push_back(dim.kind == DimSpec::Static ? dim.extent
                                                : ShapedType::kDynamic);
  return shape;
}

Type argType(MLIRContext *ctx, const EntryArg &arg) {
  if (arg.source == ArgSource::SequenceLength)
    return IndexType::get(ctx);
  return MemRefType::get(shapeOf(arg), elementTypeOf(ctx, arg.ctype));
}

RouterAttr routerAttrFor(MLIRContext *ctx, const LayerSpec &spec) {
  const RouterSpec &r = spec.router;
  auto f64 = [&](double v) { return FloatAttr::get(Float64Type::get(ctx), v); };
  RouterKind kind = RouterKind::topk;
  switch (r.family) {
  case RouterFamily::TopK:
    kind = RouterKind::topk;
    break;
  case RouterFamily::TopP:
    kind = RouterKind::top_p;
    break;
  case RouterFamily::ExpertChoice:
    kind = RouterKind::expert_choice;
    break;
  case RouterFamily::Hash:
    kind = RouterKind::hash;
    break;
  case RouterFamily::Balanced:
    kind = RouterKind::balanced;
    break;
  }
  CapacityAttr capacity;
  if (r.capacity.enabled) {
    CapacityGroup group = r.capacity.group == CapacityGroupKind::Batch
                              ? CapacityGroup::batch
                          : r.capacity.group == CapacityGroupKind::Sequence
                              ? CapacityGroup::sequence
                              : CapacityGroup::request;
    OverflowPolicy overflow = r.capacity.overflow == Overflow::Drop
                                  ? OverflowPolicy::drop
                              : r.capacity.overflow == Overflow::Passthrough
                                  ? OverflowPolicy::passthrough
                                  : OverflowPolicy::reroute;
    std::optional<int64_t> absolute;
    FloatAttr factor;
    if (r.capacity.absolute > 0)
      absolute = r.capacity.absolute;
    else
      factor = f64(r.capacity.factor);
    capacity = CapacityAttr::get(ctx, factor, absolute, group, overflow);
  }
  bool topk = r.family == RouterFamily::TopK;
  int64_t k = (r.family == RouterFamily::TopK || r.family == RouterFamily::TopP)
                  ? r.k
                  : 0;
  return RouterAttr::get(
      ctx, kind, k,
      r.scoring == Scoring::Sigmoid && topk ? ScoreFunc::sigmoid
                                            : ScoreFunc::softmax,
      topk && r.renormalize,
      topk && r.scale != 1.0 ? f64(r.scale) : FloatAttr(),
      topk && r.selectionBias, topk ? r.nGroup : 0, topk ? r.topkGroup : 0,
      topk && r.softmaxAfter,
      r.family == RouterFamily::TopP ? f64(r.p) : FloatAttr(),
      r.family == RouterFamily::ExpertChoice ? f64(r.capacityFactor)
                                             : FloatAttr(),
      r.nullExperts, capacity);
}

Activation activationFor(ExpertActivation act) {
  switch (act) {
  case ExpertActivation::SiluGlu:
    return Activation::silu_glu;
  case ExpertActivation::Gelu:
    return Activation::gelu;
  case ExpertActivation::Relu:
    return Activation::relu;
  }
  return Activation::silu_glu;
}

/// `init` filled by a row reduction of `input` [T, C] along columns.
Value rowReduce(ImplicitLocOpBuilder &b, Value input, double initValue,
                function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  MLIRContext *ctx = b.getContext();
  Value rows = tensor::DimOp::create(b, input, 0);
  Value init =
      tensor::EmptyOp::create(b, ArrayRef<OpFoldResult>{rows}, b.getF32Type());
  Value start = arith::ConstantOp::create(b, b.getF32FloatAttr(initValue));
  init = linalg::FillOp::create(b, ValueRange{start}, ValueRange{init})
             .getResult(0);
  AffineExpr t, c;
  bindDims(ctx, t, c);
  return linalg::GenericOp::create(
             b, TypeRange{init.getType()}, ValueRange{input}, ValueRange{init},
             {AffineMap::get(2, 0, {t, c}, ctx),
              AffineMap::get(2, 0, {t}, ctx)},
             {utils::IteratorType::parallel, utils::IteratorType::reduction},
             [&](OpBuilder &nb, Location loc, ValueRange args) {
               linalg::YieldOp::create(nb, loc, fn(nb, loc, args[0], args[1]));
             })
      .getResult(0);
}

/// Row-wise softmax of `logits` [T, C].
Value buildSoftmax(ImplicitLocOpBuilder &b, Value logits) {
  MLIRContext *ctx = b.getContext();
  Value maxv = rowReduce(b, logits, -INFINITY,
                         [](OpBuilder &nb, Location loc, Value x, Value acc) {
                           return arith::MaxNumFOp::create(nb, loc, x, acc);
                         });
  AffineExpr t, c;
  bindDims(ctx, t, c);
  AffineMap full = AffineMap::get(2, 0, {t, c}, ctx);
  AffineMap row = AffineMap::get(2, 0, {t}, ctx);
  auto parallel2 =
      SmallVector<utils::IteratorType>(2, utils::IteratorType::parallel);
  auto elementwise =
      [&](ValueRange inputs, AffineMap secondMap,
          function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
        Value init = tensor::EmptyOp::create(
            b, tensor::getMixedSizes(b, b.getLoc(), logits), b.getF32Type());
        return linalg::GenericOp::create(
                   b, TypeRange{init.getType()}, inputs, ValueRange{init},
                   {full, secondMap, full}, parallel2,
                   [&](OpBuilder &nb, Location loc, ValueRange args) {
                     linalg::YieldOp::create(nb, loc,
                                             fn(nb, loc, args[0], args[1]));
                   })
            .getResult(0);
      };
  Value exps = elementwise({logits, maxv}, row,
                           [](OpBuilder &nb, Location loc, Value x, Value m) {
                             return math::ExpOp::create(
                                 nb, loc, arith::SubFOp::create(nb, loc, x, m));
                           });
  Value sums = rowReduce(b, exps, 0.0,
                         [](OpBuilder &nb, Location loc, Value x, Value acc) {
                           return arith::AddFOp::create(nb, loc, x, acc);
                         });
  return elementwise({exps, sums}, row,
                     [](OpBuilder &nb, Location loc, Value x, Value s) {
                       return arith::DivFOp::create(nb, loc, x, s);
                     });
}

/// An i32 that is `flag` when `predicate` holds for some element of the
/// rank-1 or rank-2 tensor `input`, else 0.
Value anyFlag(ImplicitLocOpBuilder &b, Value input, int32_t flag,
              function_ref<Value(OpBuilder &, Location, Value)> predicate) {
  MLIRContext *ctx = b.getContext();
  auto type = cast<RankedTensorType>(input.getType());
  Value init = tensor::EmptyOp::create(b, ArrayRef<int64_t>{}, b.getI32Type());
  Value zero = arith::ConstantIntOp::create(b, b.getI32Type(), 0);
  init = linalg::FillOp::create(b, ValueRange{zero}, ValueRange{init})
             .getResult(0);
  unsigned rank = type.getRank();
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::reduction);
  Value reduced =
      linalg::GenericOp::create(
          b, TypeRange{init.getType()}, ValueRange{input}, ValueRange{init},
          {AffineMap::getMultiDimIdentityMap(rank, ctx),
           AffineMap::get(rank, 0, {}, ctx)},
          iterators,
          [&](OpBuilder &nb, Location loc, ValueRange args) {
            Value hit = predicate(nb, loc, args[0]);
            Value bits = arith::SelectOp::create(
                nb, loc, hit,
                arith::ConstantIntOp::create(nb, loc, nb.getI32Type(), flag),
                arith::ConstantIntOp::create(nb, loc, nb.getI32Type(), 0));
            Value merged = arith::OrIOp::create(nb, loc, bits, args[1]);
            linalg::YieldOp::create(nb, loc, merged);
          })
          .getResult(0);
  return tensor::ExtractOp::create(b, reduced, ValueRange{});
}

struct EntryValues {
  Value x, tokenIds, groups, logits;
  SmallVector<Value> weights;
};

/// Turns the buffer arguments of an entry into tensors and derived values.
EntryValues bindArguments(ImplicitLocOpBuilder &b, ArrayRef<EntryArg> args,
                          ValueRange values) {
  EntryValues v;
  Value seqLen;
  for (auto pair : llvm::zip(args, values)) {
    const EntryArg &arg = std::get<0>(pair);
    Value value = std::get<1>(pair);
    auto asTensor = [&]() -> Value {
      auto type = cast<MemRefType>(value.getType());
      return bufferization::ToTensorOp::create(
          b, RankedTensorType::get(type.getShape(), type.getElementType()),
          value, /*restrict=*/true);
    };
    switch (arg.source) {
    case ArgSource::BatchX:
      v.x = asTensor();
      break;
    case ArgSource::BatchTokenIds:
      v.tokenIds = asTensor();
      break;
    case ArgSource::BatchGroups:
      v.groups = asTensor();
      break;
    case ArgSource::SequenceLength:
      seqLen = value;
      break;
    case ArgSource::Weight:
      v.weights.push_back(asTensor());
      break;
    case ArgSource::Output:
    case ArgSource::Routing:
      break;
    }
  }
  if (seqLen) {
    // Sequence boundaries 0, S, 2S, ..., T (the wrapper checks S | T).
    Value numTokens = tensor::DimOp::create(b, v.x, 0);
    Value one = arith::ConstantIndexOp::create(b, 1);
    Value count = arith::AddIOp::create(
        b, arith::DivUIOp::create(b, numTokens, seqLen), one);
    v.groups = tensor::GenerateOp::create(
        b, RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type()),
        ValueRange{count}, [&](OpBuilder &nb, Location loc, ValueRange ivs) {
          Value start = arith::MulIOp::create(nb, loc, ivs[0], seqLen);
          tensor::YieldOp::create(
              nb, loc,
              arith::IndexCastOp::create(nb, loc, nb.getI32Type(), start)
                  .getResult());
        });
  }
  return v;
}

Value weightNamed(const LayerABI &abi, const EntryValues &v, StringRef name) {
  for (auto [i, w] : llvm::enumerate(abi.weights))
    if (w.name == name)
      return v.weights[i];
  return Value();
}

Value buildLogits(ImplicitLocOpBuilder &b, const LayerABI &abi,
                  const EntryValues &v) {
  Value gate = weightNamed(abi, v, "gate");
  if (!gate)
    return Value();
  auto type = RankedTensorType::get(
      {ShapedType::kDynamic, abi.spec.routerRows()}, b.getF32Type());
  return GateOp::create(b, type, v.x, gate, weightNamed(abi, v, "gate_bias"));
}

/// The status word: NaN logits, out-of-range hash token ids.
Value buildStatus(ImplicitLocOpBuilder &b, const LayerABI &abi,
                  const EntryValues &v, Value logits) {
  Value status = arith::ConstantIntOp::create(b, b.getI32Type(), 0);
  if (logits)
    status = arith::OrIOp::create(
        b, status,
        anyFlag(b, logits, StatusNaNLogits,
                [](OpBuilder &nb, Location loc, Value x) -> Value {
                  return arith::CmpFOp::create(nb, loc,
                                               arith::CmpFPredicate::UNO, x, x);
                }));
  if (v.tokenIds) {
    int64_t vocab = abi.spec.hashVocab;
    status = arith::OrIOp::create(
        b, status,
        anyFlag(b, v.tokenIds, StatusTokenIdOutOfRange,
                [&](OpBuilder &nb, Location loc, Value id) -> Value {
                  Value lo =
                      arith::ConstantIntOp::create(nb, loc, nb.getI64Type(), 0);
                  Value hi = arith::ConstantIntOp::create(
                      nb, loc, nb.getI64Type(), vocab);
                  Value below = arith::CmpIOp::create(
                      nb, loc, arith::CmpIPredicate::slt, id, lo);
                  Value above = arith::CmpIOp::create(
                      nb, loc, arith::CmpIPredicate::sge, id, hi);
                  return arith::OrIOp::create(nb, loc, below, above);
                }));
  }
  return status;
}

func::FuncOp createEntry(OpBuilder &builder, Location loc, StringRef name,
                         ArrayRef<EntryArg> args) {
  MLIRContext *ctx = builder.getContext();
  SmallVector<Type> types;
  for (const EntryArg &arg : args)
    types.push_back(argType(ctx, arg));
  auto fn = func::FuncOp::create(
      builder, loc, name,
      FunctionType::get(ctx, types, {IntegerType::get(ctx, 32)}));
  fn.addEntryBlock();
  return fn;
}

void storeInto(ImplicitLocOpBuilder &b, Value tensor, Value buffer) {
  bufferization::MaterializeInDestinationOp::create(
      b, TypeRange{}, tensor, buffer, /*restrict=*/true, /*writable=*/true);
}

/// The location of a layer's generated ops: its symbol, so a diagnostic
/// about any of them (a schedule's bad tile, a failed lowering) names the
/// layer.
Location layerLoc(OpBuilder &builder, const LayerABI &abi) {
  return NameLoc::get(builder.getStringAttr(abi.symbol));
}

void buildForward(OpBuilder &builder, const LayerABI &abi) {
  Location loc = layerLoc(builder, abi);
  func::FuncOp fn =
      createEntry(builder, loc, abi.symbol + "__forward", abi.forwardArgs);
  ImplicitLocOpBuilder b(loc, builder);
  b.setInsertionPointToStart(&fn.getBody().front());
  EntryValues v = bindArguments(b, abi.forwardArgs, fn.getArguments());
  const LayerSpec &spec = abi.spec;
  MLIRContext *ctx = b.getContext();
  Value tokenIds = v.tokenIds;
  Value table = weightNamed(abi, v, "hash_table");
  auto type = cast<RankedTensorType>(v.x.getType());
  Value y = LayerOp::create(
      b, type, v.x, weightNamed(abi, v, "gate"),
      weightNamed(abi, v, "gate_bias"), weightNamed(abi, v, "selection_bias"),
      tokenIds, table, weightNamed(abi, v, "w1"), weightNamed(abi, v, "w2"),
      weightNamed(abi, v, "shared_w1"), weightNamed(abi, v, "shared_w2"),
      weightNamed(abi, v, "shared_gate"), v.groups, routerAttrFor(ctx, spec),
      ActivationAttr::get(ctx, activationFor(spec.activation)));
  storeInto(b, y, fn.getArguments().back());
  Value status = buildStatus(b, abi, v, buildLogits(b, abi, v));
  func::ReturnOp::create(b, status);
}

void buildRoute(OpBuilder &builder, const LayerABI &abi) {
  Location loc = layerLoc(builder, abi);
  func::FuncOp fn =
      createEntry(builder, loc, abi.symbol + "__route", abi.routeArgs);
  ImplicitLocOpBuilder b(loc, builder);
  b.setInsertionPointToStart(&fn.getBody().front());
  EntryValues v = bindArguments(b, abi.routeArgs, fn.getArguments());
  const LayerSpec &spec = abi.spec;
  MLIRContext *ctx = b.getContext();
  int64_t E = spec.numExperts, K = spec.numSlots();
  RouterAttr router = routerAttrFor(ctx, spec);
  Type i32 = b.getI32Type(), f32 = b.getF32Type();
  auto slots = [&](Type t) {
    return RankedTensorType::get({ShapedType::kDynamic, K}, t);
  };
  Value logits = buildLogits(b, abi, v);
  auto route = RouteOp::create(b, TypeRange{slots(i32), slots(f32)}, logits,
                               weightNamed(abi, v, "selection_bias"),
                               v.tokenIds, weightNamed(abi, v, "hash_table"),
                               b.getI64IntegerAttr(E), router);
  CapacityAttr capacity = router.getCapacity();
  Value scores;
  if (capacity && capacity.getOverflow() == OverflowPolicy::reroute)
    scores = logits;
  auto plan = DispatchPlanOp::create(
      b,
      TypeRange{RankedTensorType::get({ShapedType::kDynamic}, i32),
                RankedTensorType::get({E + 1}, i32), slots(i32)},
      route.getIndices(), scores, v.groups, b.getI64IntegerAttr(E), capacity);
  Value load = ExpertLoadOp::create(b, RankedTensorType::get({E}, i32),
                                    route.getIndices());

  // Routing outputs, in NAME_routing field order.
  auto outputs = fn.getArguments().take_back(abi.routing.size());
  llvm::StringMap<Value> produced;
  produced["indices"] = route.getIndices();
  produced["weights"] = route.getWeights();
  produced["rows"] = plan.getRows();
  produced["expert_load"] = load;
  if (logits) {
    produced["logits"] = logits;
    Value probs = buildSoftmax(b, logits);
    if (spec.router.nullExperts > 0) {
      OpFoldResult numTokens = tensor::getMixedSize(b, b.getLoc(), probs, 0);
      probs = tensor::ExtractSliceOp::create(
          b, RankedTensorType::get({ShapedType::kDynamic, E}, f32), probs,
          ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
          ArrayRef<OpFoldResult>{numTokens, b.getIndexAttr(E)},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
    }
    auto scalar = RankedTensorType::get({}, f32);
    produced["aux_loss"] =
        AuxLossOp::create(b, scalar, probs, route.getIndices(), v.groups);
    produced["z_loss"] = ZLossOp::create(b, scalar, logits);
  }
  for (auto [arg, buffer] : llvm::zip(abi.routing, outputs))
    storeInto(b, produced.lookup(arg.name), buffer);
  func::ReturnOp::create(b, buildStatus(b, abi, v, logits));
}

} // namespace

llvm::Expected<LayerABI>
mlir::moe::compiler::wrapLayerFunction(ModuleOp module, StringRef symbol) {
  auto error = [](const Twine &message) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   message.str());
  };
  func::FuncOp fn;
  for (auto candidate : module.getOps<func::FuncOp>()) {
    if (candidate.isPrivate() || candidate.isExternal())
      continue;
    if (fn)
      return error("the module has several public functions ('" + fn.getName() +
                   "', '" + candidate.getName() +
                   "'): keep one, make the others private");
    fn = candidate;
  }
  if (!fn)
    return error("the module has no public function with a body");
  FunctionType type = fn.getFunctionType();
  auto x = type.getNumInputs() ? dyn_cast<RankedTensorType>(type.getInput(0))
                               : RankedTensorType();
  if (!x || x.getRank() != 2 || !x.isDynamicDim(0) || x.isDynamicDim(1) ||
      !x.getElementType().isF32() || type.getNumResults() != 1 ||
      type.getResult(0) != x)
    return error("function '" + fn.getName() +
                 "' must take the tokens as tensor<?xDxf32> first and return "
                 "a tensor of the same type");
  LayerABI abi;
  abi.symbol = symbol.str();
  abi.spec.name = fn.getName().str();
  abi.spec.hidden = x.getDimSize(1);
  int64_t d = abi.spec.hidden;
  abi.forwardArgs.push_back(
      field(ArgSource::BatchX, 0, "x", "float", {tokens(), fixed(d)}));
  for (auto [i, input] : llvm::enumerate(type.getInputs().drop_front())) {
    auto t = dyn_cast<RankedTensorType>(input);
    if (!t || !t.hasStaticShape() ||
        !(t.getElementType().isF32() || t.getElementType().isInteger(32)))
      return error("argument " + Twine(i + 1) + " of '" + fn.getName() +
                   "' must be a static-shaped tensor of f32 or i32 (a "
                   "weight)");
    std::vector<DimSpec> shape;
    for (int64_t extent : t.getShape())
      shape.push_back(fixed(extent));
    abi.weights.push_back(
        field(ArgSource::Weight, i, "arg" + std::to_string(i + 1),
              t.getElementType().isF32() ? "float" : "int32_t", shape));
  }
  llvm::append_range(abi.forwardArgs, abi.weights);
  abi.forwardArgs.push_back(
      field(ArgSource::Output, 0, "y", "float", {tokens(), fixed(d)}));

  // NAME__forward(x, weights..., y) -> status: the function on tensors
  // views of the buffers, its result stored into y.
  MLIRContext *ctx = module.getContext();
  ctx->loadDialect<func::FuncDialect, bufferization::BufferizationDialect,
                   arith::ArithDialect>();
  fn.setPrivate();
  OpBuilder builder(ctx);
  builder.setInsertionPointToEnd(module.getBody());
  func::FuncOp entry = createEntry(builder, fn.getLoc(),
                                   abi.symbol + "__forward", abi.forwardArgs);
  ImplicitLocOpBuilder b(fn.getLoc(), builder);
  b.setInsertionPointToStart(&entry.getBody().front());
  SmallVector<Value> tensors;
  for (auto [arg, value] :
       llvm::zip(abi.forwardArgs, entry.getArguments().drop_back())) {
    auto memref = cast<MemRefType>(value.getType());
    tensors.push_back(bufferization::ToTensorOp::create(
        b, RankedTensorType::get(memref.getShape(), memref.getElementType()),
        value, /*restrict=*/true));
  }
  auto call = func::CallOp::create(b, fn, tensors);
  storeInto(b, call.getResult(0), entry.getArguments().back());
  func::ReturnOp::create(
      b, arith::ConstantIntOp::create(b, b.getI32Type(), 0).getResult());
  return abi;
}

OwningOpRef<ModuleOp> mlir::moe::compiler::buildLayerModule(
    MLIRContext *ctx, ArrayRef<LayerABI> layers, LayerEntries entries) {
  ctx->loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect,
                   bufferization::BufferizationDialect, linalg::LinalgDialect,
                   math::MathDialect, tensor::TensorDialect>();
  OpBuilder builder(ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  builder.setInsertionPointToEnd(module->getBody());
  for (const LayerABI &abi : layers) {
    if (entries != LayerEntries::Route)
      buildForward(builder, abi);
    if (entries != LayerEntries::Forward)
      buildRoute(builder, abi);
  }
  return module;
}

//===----------------------------------------------------------------------===//
// C header
//===----------------------------------------------------------------------===//

namespace {

std::string shapeComment(const EntryArg &arg) {
  std::string text = "[";
  for (auto [i, dim] : llvm::enumerate(arg.shape)) {
    if (i)
      text += ", ";
    if (dim.kind == DimSpec::Static)
      text += std::to_string(dim.extent);
    else if (dim.kind == DimSpec::Tokens)
      text += "num_tokens";
    else
      text += "num_groups + 1";
  }
  return text + "]";
}

std::string describeRouter(const LayerSpec &spec) {
  const RouterSpec &r = spec.router;
  switch (r.family) {
  case RouterFamily::TopK:
    return llvm::formatv("top-{0} {1}{2}", r.k,
                         r.scoring == Scoring::Softmax ? "softmax" : "sigmoid",
                         r.renormalize ? ", renormalized" : "")
        .str();
  case RouterFamily::TopP:
    return llvm::formatv("top-p {0}, at most {1} experts", r.p, r.k).str();
  case RouterFamily::ExpertChoice:
    return llvm::formatv("expert choice, capacity factor {0}", r.capacityFactor)
        .str();
  case RouterFamily::Hash:
    return "hash on token ids";
  case RouterFamily::Balanced:
    return "balanced assignment (BASE)";
  }
  return "";
}

} // namespace

std::string mlir::moe::compiler::emitCHeader(ArrayRef<LayerABI> layers,
                                             StringRef guard) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "/* Generated by moe-compile. Do not edit.\n"
        " *\n"
        " * Every entry returns a status: 0 on success; a positive value is a\n"
        " * set of warning bits (the outputs are still defined); a negative\n"
        " * value is an error (the outputs are untouched). Entries are\n"
        " * reentrant: concurrent calls on different outputs are safe.\n"
        " * Arrays are dense, row-major and aligned to their element size at\n"
        " * least (bf16 weight fields: 2 bytes, the others 4).\n"
        " *\n"
        " * Unless compiled with --no-openmp, the object runs its parallel\n"
        " * loops on LLVM's OpenMP runtime: link with clang -fopenmp, or add\n"
        " * libomp (e.g. /usr/lib/llvm-22/lib/libomp.so) yourself. Threads:\n"
        " * OMP_NUM_THREADS or omp_set_num_threads(). */\n";
  os << "#ifndef " << guard << "\n#define " << guard << "\n\n";
  os << "#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n";
  os << "#ifndef MOE_BATCH_DEFINED\n#define MOE_BATCH_DEFINED\n"
        "/* The tokens of one call. */\n"
        "typedef struct moe_batch {\n"
        "  int64_t num_tokens;        /* T >= 0 */\n"
        "  const float *x;            /* [T, hidden] */\n"
        "  const int64_t *token_ids;  /* [T]: hash-routed layers only */\n"
        "  int64_t sequence_length;   /* per-sequence capacity: tokens per "
        "sequence (0: one sequence) */\n"
        "  const int32_t *group_offsets; /* per-request capacity: [num_groups "
        "+ 1] token boundaries */\n"
        "  int64_t num_groups;\n"
        "} moe_batch;\n\n"
        "enum {\n"
        "  MOE_STATUS_OK = 0,\n"
        "  MOE_STATUS_NAN_LOGITS = 1,          /* bit: NaN router logits, "
        "treated as -inf */\n"
        "  MOE_STATUS_TOKEN_ID_OUT_OF_RANGE = 2, /* bit: hash token id outside "
        "the table, routed nowhere */\n"
        "  MOE_ERROR_NULL_POINTER = -1,\n"
        "  MOE_ERROR_BAD_SHAPE = -2,           /* T < 0; where the layer uses "
        "them, sequence_length not dividing T, num_groups < 1 */\n"
        "  MOE_ERROR_DEVICE = -3               /* GPU code: a CUDA operation "
        "failed (moe_cuda_take_error) */\n"
        "};\n#endif\n\n";
  for (const LayerABI &abi : layers) {
    const LayerSpec &s = abi.spec;
    os << "/* " << abi.symbol << ": MoE layer " << s.layerIndex << ", hidden "
       << s.hidden << ", " << s.numExperts << " experts of width " << s.ffn
       << ", " << describeRouter(s);
    if (s.sharedFfn)
      os << ", shared expert of width " << s.sharedFfn
         << (s.sharedGate ? " (gated)" : "");
    os << ". */\n";
    os << "typedef struct " << abi.symbol << "_weights {\n";
    for (const EntryArg &w : abi.weights)
      os << "  const " << w.ctype << " *" << w.name << "; /* "
         << shapeComment(w) << (w.ctype == "uint16_t" ? ", bf16 bits" : "")
         << " */\n";
    os << "} " << abi.symbol << "_weights;\n";
    os << "/* Elements of each NAME_weights field, in order. */\n"
       << "static const int64_t " << abi.symbol << "_weight_elements[] = {";
    for (auto [i, w] : llvm::enumerate(abi.weights))
      os << (i ? ", " : "") << numElements(w);
    os << "};\n/* Bytes of each element of those fields. */\n"
       << "static const int64_t " << abi.symbol
       << "_weight_element_bytes[] = {";
    for (auto [i, w] : llvm::enumerate(abi.weights))
      os << (i ? ", " : "") << (w.ctype == "uint16_t" ? 2 : 4);
    os << "};\n#define " << llvm::StringRef(abi.symbol).upper() << "_HIDDEN "
       << s.hidden << "\n\n";
    os << "typedef struct " << abi.symbol << "_routing {\n";
    for (const EntryArg &r : abi.routing)
      os << "  " << r.ctype << " *" << r.name << "; /* "
         << (r.shape.empty() ? std::string("scalar") : shapeComment(r))
         << " */\n";
    os << "} " << abi.symbol << "_routing;\n\n";
    os << "/* y[T, " << s.hidden << "] = the MoE block applied to batch->x."
       << (abi.needsTokenIds ? " Needs batch->token_ids." : "")
       << (abi.needsSequenceLength ? " Uses batch->sequence_length." : "")
       << (abi.needsGroups ? " Needs batch->group_offsets." : "") << " */\n";
    os << "int32_t " << abi.symbol << "(const " << abi.symbol
       << "_weights *w, const moe_batch *batch, float *y);\n";
    os << "/* The routing decision, dispatch rows and router statistics. */\n";
    os << "int32_t " << abi.symbol << "_route(const " << abi.symbol
       << "_weights *w, const moe_batch *batch, const " << abi.symbol
       << "_routing *out);\n\n";
  }
  os << "#ifdef __cplusplus\n}\n#endif\n\n#endif /* " << guard << " */\n";
  return text;
}
