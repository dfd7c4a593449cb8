//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// The `moe` dialect: router, dispatch, expert and combine operations of
// sparse Mixture-of-Experts layers, on builtin tensors.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_TD
#define MOE_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Sparse Mixture-of-Experts layers: routing, dispatch, experts, combine";
  let description = [{
    The `moe` dialect expresses a Mixture-of-Experts block as a handful of
    value-semantic operations on builtin tensors:

    * `moe.gate` computes router logits, `moe.route` applies a routing policy
      (`#moe.router<...>`) and yields, per token, K slots of
      (expert index, weight);
    * `moe.dispatch_plan` groups the slots by expert (a CSR `offsets` vector
      plus a permutation), honouring expert capacity;
    * `moe.grouped_matmul` runs one GEMM per expert over its rows, with a
      fused elementwise epilogue, and `moe.experts` does the same for an
      arbitrary expert body written as a region;
    * `moe.combine` sums the weighted expert outputs back into token order;
    * `moe.layer` is the whole block as one op (`--moe-expand-layer`
      decomposes it);
    * `moe.aux_loss`, `moe.z_loss` and `moe.expert_load` are the training and
      observability statistics.

    Ragged data (tokens grouped by expert) is a static-capacity tensor plus a
    runtime CSR `offsets : tensor<E+1 x i32>`. See `docs/dialect.md` for the
    semantics of every routing policy.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasConstantMaterializer = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect"];
  let extraClassDeclaration = [{
    /// Registers the attributes; defined beside their storage classes.
    void registerAttributes();
    /// Attaches the TilingInterface and ReifyRankedShapedTypeOpInterface
    /// models of the token-parallel ops (MoETilingInterfaceImpl.cpp).
    void registerTilingInterfaceModels();
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_TD
