//===- MoEOps.td - moe dialect operations ------------------*- tablegen -*-===//
//
// Router, dispatch, expert, combine and statistics operations.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "moe/Dialect/MoE/IR/MoEAttrs.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/TilingInterface.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

defvar MoE_FloatElts = [F32, F16, BF16];
def MoE_Matrix : TensorRankOf<MoE_FloatElts, [2]>;
def MoE_Vector : TensorRankOf<MoE_FloatElts, [1]>;
def MoE_ExpertWeights : TensorRankOf<MoE_FloatElts, [3]>;
def MoE_Hidden : TensorRankOf<MoE_FloatElts, [2, 3]>;
def MoE_F32Matrix : TensorRankOf<[F32], [2]>;
def MoE_I32Matrix : TensorRankOf<[I32], [2]>;
def MoE_I32Vector : TensorRankOf<[I32], [1]>;
def MoE_TokenIds : TensorRankOf<[I32, I64], [1]>;
def MoE_Scalar : TensorRankOf<[F32], [0]>;

//===----------------------------------------------------------------------===//
// moe.gate
//===----------------------------------------------------------------------===//

def MoE_GateOp : MoE_Op<"gate", [Pure]> {
  let summary = "Router logits: x . Wg^T (+ b)";
  let description = [{
    Computes the router logits `logits[t, e] = sum_i x[t, i] * Wg[e, i] + b[e]`
    for `T` tokens of width `d` and `E` router rows (routed experts plus any
    null experts). `Wg` uses the `[out, in]` layout of checkpoints.

    Implements `TilingInterface`: both loops (tokens, experts) are parallel,
    so upstream tiling and fusion apply.

    ```mlir
    %logits = moe.gate %x, %wg bias(%b : tensor<8xf32>)
        : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$input, MoE_Matrix:$weight,
                       Optional<MoE_Vector>:$bias);
  let results = (outs MoE_Matrix:$logits);
  let assemblyFormat = [{
    $input `,` $weight (`bias` `(` $bias^ `:` type($bias) `)`)? attr-dict
    `:` type($input) `,` type($weight) `->` type($logits)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.route
//===----------------------------------------------------------------------===//

def MoE_RouteOp : MoE_Op<"route", [Pure, AttrSizedOperandSegments]> {
  let summary = "Apply a routing policy: logits -> per-token expert slots";
  let description = [{
    Applies the routing policy `router` to `T` tokens and yields, per token, `K`
    slots of (expert index, weight). `K` is `k` for `topk`, `k_max` for
    `top_p`, `E` for `expert_choice` (slot `j` is expert `j` when that expert
    took the token) and 1 for `hash` and `balanced`.

    A slot index in `[0, E)` is a routed expert, in `[E, E + null_experts)` a
    null expert (no work, contributes 0), and `-1` an empty slot (weight 0).
    Ties are broken by higher score, then lower index; NaN logits count as
    `-inf`.

    Operands: `logits` (`[T, E + null_experts]`, all families but `hash`);
    `bias` (`[E]`, the selection bias of `topk ... bias`); `token_ids` and
    `table` (the `hash` family: `expert = table[token_id]`; an id outside the
    table gives an empty slot).

    ```mlir
    %idx, %w = moe.route %logits : tensor<?x8xf32>
        experts 8 router <topk, k = 2, softmax, renormalize>
        -> tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins Optional<MoE_Matrix>:$logits,
                       Optional<MoE_Vector>:$bias,
                       Optional<MoE_TokenIds>:$token_ids,
                       Optional<MoE_I32Vector>:$table,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_experts,
                       MoE_RouterAttr:$router);
  let results = (outs MoE_I32Matrix:$indices, MoE_F32Matrix:$weights);
  let assemblyFormat = [{
    ($logits^ `:` type($logits))?
    (`bias` `(` $bias^ `:` type($bias) `)`)?
    (`token_ids` `(` $token_ids^ `:` type($token_ids) `)`)?
    (`table` `(` $table^ `:` type($table) `)`)?
    `experts` $num_experts `router` $router attr-dict
    `->` type($indices) `,` type($weights)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.dispatch_plan
//===----------------------------------------------------------------------===//

def MoE_DispatchPlanOp : MoE_Op<"dispatch_plan", [Pure, AttrSizedOperandSegments]> {
  let summary = "Group routing slots by expert, honouring capacity";
  let description = [{
    Turns the `[T, K]` slot indices of `moe.route` into a plan that expert
    computations consume:

    * `perm : tensor<T*K x i32>`: the token of each computed row; rows are
      grouped by expert and stable in token order within an expert; rows past
      `offsets[E]` are padding (`-1`);
    * `offsets : tensor<E+1 x i32>`: CSR boundaries, expert `e` owns rows
      `[offsets[e], offsets[e+1])`;
    * `rows : tensor<T x K x i32>`: the row computing slot `(t, j)`; `-1` when
      the slot contributes nothing (empty, null expert, or dropped under
      `drop`), `-2` when it was dropped under `passthrough` (it then
      contributes `weight * x[t]`).

    Any index outside `[0, E)` computes nothing: out-of-range indices can
    never make later ops read or write out of bounds.

    With `capacity`, each expert serves at most `C` slots per capacity group,
    in token order. `groups` (CSR token boundaries, `G + 1` entries) is
    required when the capacity group is `sequence` or `request`; `scores`
    (`[T, >= E]`, higher is better) ranks the alternatives for `reroute`.

    ```mlir
    %perm, %offsets, %rows = moe.dispatch_plan %idx experts 8
        capacity <factor = 1.25, group = batch, overflow = drop>
        : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
    ```
  }];
  let arguments = (ins MoE_I32Matrix:$indices,
                       Optional<MoE_Matrix>:$scores,
                       Optional<MoE_I32Vector>:$groups,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_experts,
                       OptionalAttr<MoE_CapacityAttr>:$capacity);
  let results = (outs MoE_I32Vector:$perm, MoE_I32Vector:$offsets,
                      MoE_I32Matrix:$rows);
  let assemblyFormat = [{
    $indices (`scores` `(` $scores^ `:` type($scores) `)`)?
    (`groups` `(` $groups^ `:` type($groups) `)`)?
    `experts` $num_experts (`capacity` $capacity^)? attr-dict
    `:` type($indices) `->` type($perm) `,` type($offsets) `,` type($rows)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// moe.grouped_matmul
//===----------------------------------------------------------------------===//

def MoE_GroupedMatmulOp : MoE_Op<"grouped_matmul", [Pure,
    AttrSizedOperandSegments]> {
  let summary = "One GEMM per expert over its rows, with a fused epilogue";
  let description = [{
    For every row `r` owned by expert `e` (`offsets[e] <= r < offsets[e+1]`):
    `y[r] = epilogue(x[src(r)] . W[e]^T)`, where `src(r) = gather[r]` when a
    gather map is given (rows read straight from token order, no permuted copy)
    and `r` otherwise. Rows past `offsets[E]` are zero. `W` is `[E, N, K]`
    (the `[out, in]` checkpoint layout).

    Epilogues: `none`; `silu_glu` (`W` stacks gate then up: `[E, 2F, K]`,
    `y = silu(gate) * up`, width `F`); `gelu` (exact, erf); `relu`; `scale`
    (`y[r] *= row_scale[r]`).

    ```mlir
    %h = moe.grouped_matmul %x, %w1, %offsets gather(%perm : tensor<32xi32>)
        epilogue <silu_glu>
        : tensor<16x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$input, MoE_ExpertWeights:$weight,
                       MoE_I32Vector:$offsets,
                       Optional<MoE_I32Vector>:$gather,
                       Optional<MoE_Vector>:$row_scale,
                       MoE_EpilogueAttr:$epilogue);
  let results = (outs MoE_Matrix:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $offsets
    (`gather` `(` $gather^ `:` type($gather) `)`)?
    (`row_scale` `(` $row_scale^ `:` type($row_scale) `)`)?
    `epilogue` $epilogue attr-dict
    `:` type($input) `,` type($weight) `,` type($offsets) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() { return getWeight().getType().getDimSize(0); }
  }];
}

//===----------------------------------------------------------------------===//
// moe.combine
//===----------------------------------------------------------------------===//

def MoE_CombineOp : MoE_Op<"combine", [Pure]> {
  let summary = "Weighted sum of expert outputs back into token order";
  let description = [{
    `out[t] = sum_j w[t, j] * y[rows[t, j]]` over the slots with
    `rows[t, j] >= 0`, plus `w[t, j] * x[t]` for the slots marked `-2`
    (dropped under the `passthrough` overflow policy), which needs the
    `passthrough` operand. Slots are summed in slot order, so the result is
    deterministic.

    Implements `TilingInterface` over (tokens, columns), both parallel.

    ```mlir
    %out = moe.combine %y, %w, %rows
        : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$input, MoE_F32Matrix:$weights,
                       MoE_I32Matrix:$rows, Optional<MoE_Matrix>:$passthrough);
  let results = (outs MoE_Matrix:$result);
  let assemblyFormat = [{
    $input `,` $weights `,` $rows
    (`passthrough` `(` $passthrough^ `:` type($passthrough) `)`)? attr-dict
    `:` type($input) `,` type($weights) `,` type($rows) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// moe.experts
//===----------------------------------------------------------------------===//

def MoE_ExpertsOp : MoE_Op<"experts", [IsolatedFromAbove,
    RecursiveMemoryEffects, SingleBlock]> {
  let summary = "A generic expert body, applied to each expert's rows";
  let description = [{
    Applies the region to the rows of each expert: for expert `e` the block
    receives `e` (an `index`), its rows `x[offsets[e] : offsets[e+1]]` as a
    `tensor<? x d>`, and the `e`-th slice of every weight operand (each weight
    has `E` as its leading dimension, which the slice drops). The yielded
    `tensor<? x N>` becomes the same rows of the result. Rows past
    `offsets[E]` are zero.

    This expresses expert bodies that `moe.grouped_matmul` cannot: LoRA
    experts, heterogeneous widths, custom activations.

    ```mlir
    %y = moe.experts %rows, %offsets weights(%w : tensor<8x32x64xf32>)
        : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x32xf32> {
    ^bb0(%e: index, %x: tensor<?x64xf32>, %we: tensor<32x64xf32>):
      ...
      moe.yield %ye : tensor<?x32xf32>
    }
    ```
  }];
  let arguments = (ins MoE_Matrix:$input, MoE_I32Vector:$offsets,
                       Variadic<AnyRankedTensor>:$weights);
  let results = (outs MoE_Matrix:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $input `,` $offsets (`weights` `(` $weights^ `:` type($weights) `)`)?
    attr-dict `:` type($input) `,` type($offsets) `->` type($result) $body
  }];
  let hasRegionVerifier = 1;
}

def MoE_YieldOp : MoE_Op<"yield", [Pure, Terminator, ReturnLike,
    HasParent<"ExpertsOp">]> {
  let summary = "Yields one expert's output rows from a moe.experts body";
  let description = [{
    ```mlir
    moe.yield %rows : tensor<?x32xf32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

//===----------------------------------------------------------------------===//
// moe.layer
//===----------------------------------------------------------------------===//

def MoE_LayerOp : MoE_Op<"layer", [Pure, AttrSizedOperandSegments]> {
  let summary = "A whole MoE block: router, routed experts, shared experts";
  let description = [{
    The MoE block of a transformer layer as one op. The input is `[T, d]`, or
    `[B, S, d]` (then `capacity` groups of kind `sequence` are the `B`
    sequences). Operands, each optional unless said:

    * `gate(Wg)`: router weight `[E + null_experts, d]` (every policy but
      `hash`), `gate_bias(b)`: a logit bias `[E + null_experts]`;
    * `selection_bias(b)`: `[E]`, required by `topk ... bias`;
    * `token_ids(ids)`, `hash_table(tbl)`: required by `hash`;
    * `experts(W1, W2)`: required; `W1` is `[E, 2F, d]` (gate then up) for
      `silu_glu`, `[E, F, d]` otherwise; `W2` is `[E, d, F]`;
    * `shared(S1, S2)`: an always-on expert of width `Fs`, `S1` `[2Fs, d]`
      (or `[Fs, d]`), `S2` `[d, Fs]`, with the same activation;
      `shared_gate(g)`: `[1, d]`, scales the shared output by
      `sigmoid(x . g)` (Qwen-MoE);
    * `groups(offsets)`: capacity-group boundaries for `request` groups.

    `--moe-expand-layer` decomposes it into `moe.gate`, `moe.route`,
    `moe.dispatch_plan`, `moe.grouped_matmul` and `moe.combine`.

    ```mlir
    %y = moe.layer %x gate(%wg : tensor<8x64xf32>)
        experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>)
        router <topk, k = 2, softmax, renormalize> activation <silu_glu>
        : tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Hidden:$input,
                       Optional<MoE_Matrix>:$gate,
                       Optional<MoE_Vector>:$gate_bias,
                       Optional<MoE_Vector>:$selection_bias,
                       Optional<MoE_TokenIds>:$token_ids,
                       Optional<MoE_I32Vector>:$hash_table,
                       MoE_ExpertWeights:$w1,
                       MoE_ExpertWeights:$w2,
                       Optional<MoE_Matrix>:$shared_w1,
                       Optional<MoE_Matrix>:$shared_w2,
                       Optional<MoE_Matrix>:$shared_gate,
                       Optional<MoE_I32Vector>:$groups,
                       MoE_RouterAttr:$router,
                       MoE_ActivationAttr:$activation);
  let results = (outs MoE_Hidden:$result);
  let assemblyFormat = [{
    $input
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`selection_bias` `(` $selection_bias^ `:` type($selection_bias) `)`)?
    (`token_ids` `(` $token_ids^ `:` type($token_ids) `)`)?
    (`hash_table` `(` $hash_table^ `:` type($hash_table) `)`)?
    `experts` `(` $w1 `,` $w2 `:` type($w1) `,` type($w2) `)`
    (`shared` `(` $shared_w1^ `,` $shared_w2 `:` type($shared_w1) `,` type($shared_w2) `)`)?
    (`shared_gate` `(` $shared_gate^ `:` type($shared_gate) `)`)?
    (`groups` `(` $groups^ `:` type($groups) `)`)?
    `router` $router `activation` $activation attr-dict
    `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() { return getW1().getType().getDimSize(0); }
    int64_t getHiddenSize() {
      auto type = getInput().getType();
      return type.getDimSize(type.getRank() - 1);
    }
    int64_t getFfnSize() { return getW2().getType().getDimSize(2); }
  }];
}

//===----------------------------------------------------------------------===//
// Statistics
//===----------------------------------------------------------------------===//

def MoE_AuxLossOp : MoE_Op<"aux_loss", [Pure]> {
  let summary = "Load-balancing loss E * sum_e f_e * P_e";
  let description = [{
    `aux = E * sum_e f_e * P_e` with `f_e` the number of routing slots (over
    all `T` tokens and `K` slots) that chose expert `e`, divided by `T` (so the
    `f_e` sum to `k`), and `P_e` the mean router probability of `e` over the
    tokens. `E` is the number of columns of `probs`; slots outside `[0, E)`
    are not counted. With `groups` (CSR token boundaries) the loss is computed
    per group and averaged over the non-empty groups, as the Switch Transformer does per
    sequence. An empty token set gives 0.

    ```mlir
    %aux = moe.aux_loss %probs, %idx : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$probs, MoE_I32Matrix:$indices,
                       Optional<MoE_I32Vector>:$groups);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = [{
    $probs `,` $indices (`groups` `(` $groups^ `:` type($groups) `)`)? attr-dict
    `:` type($probs) `,` type($indices) `->` type($loss)
  }];
  let hasVerifier = 1;
}

def MoE_ZLossOp : MoE_Op<"z_loss", [Pure]> {
  let summary = "Router z-loss mean(logsumexp(logits)^2)";
  let description = [{
    The ST-MoE router z-loss: the mean over tokens of the squared
    log-sum-exp of each token's logits. An empty token set gives 0.

    ```mlir
    %z = moe.z_loss %logits : tensor<?x8xf32> -> tensor<f32>
    ```
  }];
  let arguments = (ins MoE_Matrix:$logits);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = "$logits attr-dict `:` type($logits) `->` type($loss)";
}

def MoE_ExpertLoadOp : MoE_Op<"expert_load", [Pure]> {
  let summary = "Number of routing slots per expert";
  let description = [{
    `load[e]` counts the slots of `indices` equal to `e`; indices outside
    `[0, E)` (empty slots, null experts) are not counted. `E` is the length of
    the result. Folds when `indices` is a constant.

    ```mlir
    %load = moe.expert_load %idx : tensor<?x2xi32> -> tensor<8xi32>
    ```
  }];
  let arguments = (ins MoE_I32Matrix:$indices);
  let results = (outs TensorRankOf<[I32], [1]>:$load);
  let assemblyFormat = "$indices attr-dict `:` type($indices) `->` type($load)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
