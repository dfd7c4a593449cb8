//===- Passes.td - moe dialect transformation passes -------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEExpandLayer : Pass<"moe-expand-layer"> {
  let summary = "Decompose moe.layer into gate/route/dispatch_plan/grouped_matmul/combine";
  let description = [{
    Rewrites every `moe.layer` into its parts, preserving semantics:

    1. `moe.gate` computes the router logits (skipped for `hash` routing);
    2. `moe.route` applies the router policy;
    3. `moe.dispatch_plan` groups the slots by expert under the capacity
       policy (a `[B, S, d]` input with `sequence` capacity groups gets its
       sequence boundaries built here);
    4. two `moe.grouped_matmul`s run the expert FFN, the first gathering the
       token rows through the plan with the activation as its epilogue;
    5. `moe.combine` sums the weighted expert rows per token;
    6. shared experts run as one-expert grouped matmuls (the optional sigmoid
       gate becomes a `scale` epilogue) and are added to the routed output.

    Example: `moe-opt --moe-expand-layer examples/mixtral_layer.mlir`.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
