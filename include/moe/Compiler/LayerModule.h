//===- LayerModule.h - LayerSpec -> moe IR with a C entry ABI ---*- C++ -*-===//
//
// Builds, for each MoE layer, two functions over buffers whose plain C
// wrappers (added after lowering, see Compiler.h) form the entry ABI that
// moe-compile documents in its generated header:
//
//   int32_t NAME(const NAME_weights *w, const moe_batch *batch, float *y);
//   int32_t NAME_route(const NAME_weights *w, const moe_batch *batch,
//                      const NAME_routing *out);
//
// docs/user-guide.md describes the structs and status codes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_LAYERMODULE_H
#define MOE_COMPILER_LAYERMODULE_H

#include "moe/Frontend/LayerSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace mlir::moe::compiler {

/// Where one argument of an entry's inner function comes from.
enum class ArgSource {
  BatchX,         ///< moe_batch.x: [T, d]
  BatchTokenIds,  ///< moe_batch.token_ids: [T] i64
  BatchGroups,    ///< moe_batch.group_offsets: [G + 1] i32
  SequenceLength, ///< moe_batch.sequence_length, as an index scalar
  Weight,         ///< field `field` of NAME_weights
  Output,         ///< the `y` pointer: [T, d]
  Routing,        ///< field `field` of NAME_routing
};

/// One dimension of a buffer argument: a static extent, the token count T,
/// or the number of group boundaries G + 1.
struct DimSpec {
  enum Kind { Static, Tokens, GroupBoundaries } kind = Static;
  int64_t extent = 0;
};

struct EntryArg {
  ArgSource source;
  int field = 0;
  std::string name;  ///< the C field name (weights/routing)
  std::string ctype; ///< element C type: float, int32_t, int64_t, uint16_t
                     ///< (bf16 bits)
  std::vector<DimSpec> shape;
};

/// The C-facing description of one layer's entries.
struct LayerABI {
  std::string symbol; ///< NAME
  frontend::LayerSpec spec;
  std::vector<EntryArg> weights;     ///< NAME_weights fields, in order
  std::vector<EntryArg> routing;     ///< NAME_routing fields, in order
  std::vector<EntryArg> forwardArgs; ///< inner forward function arguments
  std::vector<EntryArg> routeArgs;   ///< inner route function arguments
  bool needsTokenIds = false;
  bool needsSequenceLength = false;
  bool needsGroups = false;
};

/// Elements of a buffer argument, its token dimensions counted as `tokens`
/// (group-boundary dimensions are not supported and count 1).
int64_t numElements(const EntryArg &arg, int64_t tokens = 0);

/// Builds the ABI description of `spec` under C symbol `symbol`.
LayerABI describeLayer(const frontend::LayerSpec &spec, llvm::StringRef symbol);

/// Turns the one public function of a parsed module, taking the tokens as
/// `tensor<?xDxf32>` then static-shaped f32/i32 weight tensors and
/// returning `tensor<?xDxf32>`, into a layer with a forward entry
/// `symbol__forward` (no route entry): the function is made private and
/// called from the entry. Weights are named arg1, arg2, ... Errors say
/// which signature was expected.
llvm::Expected<LayerABI> wrapLayerFunction(ModuleOp module,
                                           llvm::StringRef symbol);

/// Which entries buildLayerModule builds.
enum class LayerEntries { Both, Forward, Route };

/// Builds a module holding `NAME__forward` and `NAME__route` (buffer
/// arguments, i32 status result) for every layer, or only one of them.
OwningOpRef<ModuleOp>
buildLayerModule(MLIRContext *ctx, llvm::ArrayRef<LayerABI> layers,
                 LayerEntries entries = LayerEntries::Both);

/// The C header text declaring the entries of `layers`.
std::string emitCHeader(llvm::ArrayRef<LayerABI> layers, llvm::StringRef guard);

/// The array behind weight field `field` ("gate", "w1", ...): its data and
/// element count (f32; i32 for "hash_table"; bf16 bits for fields of C
/// type uint16_t, from the LayerWeights bf16 arrays).
std::pair<const void *, size_t> getWeightData(const frontend::LayerWeights &w,
                                              const EntryArg &field);
/// Bytes per element of a buffer of C type `ctype`.
int64_t elementBytes(llvm::StringRef ctype);

/// Weight pointers in NAME_weights field order, for calling an entry.
std::vector<const void *> getWeightPointers(const LayerABI &abi,
                                            const frontend::LayerWeights &w);

/// Host buffers for the outputs of NAME_route.
struct RoutingBuffers {
  RoutingBuffers(const LayerABI &abi, int64_t numTokens);
  /// Pointers in NAME_routing field order.
  std::vector<void *> pointers(const LayerABI &abi);

  int64_t slots = 0;
  std::vector<int32_t> indices, rows, load;
  std::vector<float> weights, logits;
  float auxLoss = 0.0f, zLoss = 0.0f;
};

/// Status codes returned by the entries (also in the generated header).
enum Status : int32_t {
  StatusOk = 0,
  StatusNaNLogits = 1,         ///< bit: some router logit was NaN (-inf)
  StatusTokenIdOutOfRange = 2, ///< bit: a hash token id was outside the table
  StatusNullPointer = -1,
  StatusBadShape = -2,
  StatusDeviceError = -3, ///< a GPU operation failed (moe_cuda_take_error)
};

} // namespace mlir::moe::compiler

#endif // MOE_COMPILER_LAYERMODULE_H
