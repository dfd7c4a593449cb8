//===- MoEAttrs.td - moe dialect attributes ----------------*- tablegen -*-===//
//
// Enumerations and the routing-policy attributes of the moe dialect.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEATTRS_TD
#define MOE_DIALECT_MOE_IR_MOEATTRS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enumerations
//===----------------------------------------------------------------------===//

def MoE_RouterKind : I32EnumAttr<"RouterKind", "routing policy family", [
    I32EnumAttrCase<"topk", 0>,
    I32EnumAttrCase<"top_p", 1>,
    I32EnumAttrCase<"expert_choice", 2>,
    I32EnumAttrCase<"hash", 3>,
    I32EnumAttrCase<"balanced", 4>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_ScoreFunc : I32EnumAttr<"ScoreFunc", "router scoring function", [
    I32EnumAttrCase<"softmax", 0>,
    I32EnumAttrCase<"sigmoid", 1>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_CapacityGroup : I32EnumAttr<"CapacityGroup",
    "the set of tokens over which expert capacity is counted", [
    I32EnumAttrCase<"batch", 0>,
    I32EnumAttrCase<"sequence", 1>,
    I32EnumAttrCase<"request", 2>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_OverflowPolicy : I32EnumAttr<"OverflowPolicy",
    "what happens to a routing slot beyond an expert's capacity", [
    I32EnumAttrCase<"drop", 0>,
    I32EnumAttrCase<"passthrough", 1>,
    I32EnumAttrCase<"reroute", 2>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_Epilogue : I32EnumAttr<"Epilogue",
    "elementwise epilogue fused into a grouped matmul", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"silu_glu", 1>,
    I32EnumAttrCase<"gelu", 2>,
    I32EnumAttrCase<"relu", 3>,
    I32EnumAttrCase<"scale", 4>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_Activation : I32EnumAttr<"Activation",
    "activation of an expert feed-forward network", [
    I32EnumAttrCase<"silu_glu", 0>,
    I32EnumAttrCase<"gelu", 1>,
    I32EnumAttrCase<"relu", 2>]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

class MoE_EnumAttr<EnumAttrInfo info, string mnemonic>
    : EnumAttr<MoE_Dialect, info, mnemonic> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_EpilogueAttr : MoE_EnumAttr<MoE_Epilogue, "epilogue">;
def MoE_ActivationAttr : MoE_EnumAttr<MoE_Activation, "activation">;

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

class MoE_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<MoE_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def MoE_CapacityAttr : MoE_Attr<"Capacity", "capacity"> {
  let summary = "Expert capacity: how many routing slots an expert serves per group";
  let description = [{
    Bounds the number of routing slots each expert serves within one capacity
    group. The capacity is either a factor `f` of the balanced load,
    `C = ceil(f * n_g * k / E)` for a group of `n_g` tokens routed to `k` of
    `E` experts, or an absolute count. Slots are served in token order (then
    slot order) within a group; the `overflow` policy decides what happens to
    the rest: `drop` (contributes nothing, the Switch Transformer rule),
    `passthrough` (contributes `weight * x`, the Hugging Face transformers 4.x
    Switch rule) or `reroute` (moves to the token's next-best expert that still
    has room).

    The group is the whole batch, each sequence of a `[B, S, d]` input, or each
    request (runtime boundaries); per-request groups make a request's output
    independent of its batch neighbours.

    ```mlir
    #moe.capacity<factor = 1.25, group = batch, overflow = drop>
    #moe.capacity<absolute = 4, group = sequence, overflow = passthrough>
    #moe.capacity<factor = 2.0, group = request, overflow = reroute>
    ```
  }];
  let parameters = (ins
    "::mlir::FloatAttr":$factor,
    "std::optional<int64_t>":$absolute,
    "::mlir::moe::CapacityGroup":$group,
    "::mlir::moe::OverflowPolicy":$overflow);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Capacity of one expert within a group of `groupTokens` tokens that
    /// each route `slotsPerToken` slots over `numExperts` experts.
    int64_t computeCapacity(int64_t groupTokens, int64_t slotsPerToken,
                            int64_t numExperts) const;
    /// True if the capacity can never bind: every expert could take every
    /// slot of a group of at most `maxGroupTokens` tokens
    /// (ShapedType::kDynamic when unknown).
    bool neverBinds(int64_t maxGroupTokens, int64_t slotsPerToken,
                    int64_t numExperts) const;
  }];
}

def MoE_RouterAttr : MoE_Attr<"Router", "router"> {
  let summary = "A routing policy: which experts a token goes to, and with what weight";
  let description = [{
    One declarative description of every routing scheme the dialect supports.
    The first keyword is the policy family; options follow, comma separated:

    | family | options |
    | --- | --- |
    | `topk` | `k = N`, `softmax` or `sigmoid`, `renormalize`, `scale = F`, `bias`, `n_group = G, topk_group = g`, `softmax_after` |
    | `top_p` | `p = F`, `k_max = N` |
    | `expert_choice` | `capacity_factor = F` |
    | `hash` | (none) |
    | `balanced` | (none) |

    Every family that routes tokens to experts accepts `null_experts = N`
    (AdaMoE) and, for token-choice families (`topk`, `top_p`, `hash`),
    `capacity = <...>` (a `#moe.capacity`).

    ```mlir
    #moe.router<topk, k = 2, softmax, renormalize>
    #moe.router<topk, k = 8, sigmoid, renormalize, scale = 2.5, bias, n_group = 8, topk_group = 4>
    #moe.router<top_p, p = 0.4, k_max = 4>
    #moe.router<expert_choice, capacity_factor = 2.0>
    #moe.router<hash>
    #moe.router<topk, k = 1, softmax, capacity = <absolute = 4, group = sequence, overflow = drop>>
    ```
  }];
  let parameters = (ins
    "::mlir::moe::RouterKind":$kind,
    "int64_t":$k,
    "::mlir::moe::ScoreFunc":$score,
    "bool":$renormalize,
    "::mlir::FloatAttr":$scale,
    "bool":$bias,
    "int64_t":$nGroup,
    "int64_t":$topkGroup,
    "bool":$softmaxAfter,
    "::mlir::FloatAttr":$p,
    "::mlir::FloatAttr":$capacityFactor,
    "int64_t":$nullExperts,
    "::mlir::moe::CapacityAttr":$capacity);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// A plain top-k token-choice router (softmax scores).
    static RouterAttr getTopK(::mlir::MLIRContext *ctx, int64_t k,
                              bool renormalize);

    /// Number of routing slots per token (K of the [T, K] index tensor) for
    /// a layer with `numExperts` routed experts.
    int64_t getNumSlots(int64_t numExperts) const;
    /// True for families where each token picks its experts.
    bool isTokenChoice() const;
    /// True when the router reads logits (every family but `hash`).
    bool needsLogits() const;
    /// The multiplier applied to routing weights (1.0 when absent).
    double getScaleValue() const;
    bool hasGroups() const { return getNGroup() > 0; }

    /// Checks the rules that need the number of routed experts (k <= E,
    /// n_group divides E, ...). Reports through `emitError`.
    ::llvm::LogicalResult verifyForNumExperts(
        ::llvm::function_ref<::mlir::InFlightDiagnostic()> emitError,
        int64_t numExperts) const;
  }];
}

#endif // MOE_DIALECT_MOE_IR_MOEATTRS_TD
