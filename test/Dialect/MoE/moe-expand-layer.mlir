// RUN: moe-opt %s --moe-expand-layer -split-input-file | FileCheck %s

// Token choice with SwiGLU experts: gate -> route -> plan -> two grouped
// matmuls (the first gathers through the plan) -> combine.
// CHECK-LABEL: func.func @mixtral(
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x64xf32>, %[[WG:[^:]+]]: tensor<8x64xf32>, %[[W1:[^:]+]]: tensor<8x256x64xf32>, %[[W2:[^:]+]]: tensor<8x64x128xf32>
// CHECK: %[[LOGITS:.*]] = moe.gate %[[X]], %[[WG]] : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
// CHECK: %[[IDX:.*]], %[[W:.*]] = moe.route %[[LOGITS]] : tensor<?x8xf32> experts 8 router <topk, k = 2, softmax, renormalize> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: %[[PERM:.*]], %[[OFFS:.*]], %[[ROWS:.*]] = moe.dispatch_plan %[[IDX]] experts 8 : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
// CHECK: %[[H:.*]] = moe.grouped_matmul %[[X]], %[[W1]], %[[OFFS]] gather(%[[PERM]] : tensor<?xi32>) epilogue <silu_glu> : {{.*}} -> tensor<?x128xf32>
// CHECK: %[[Y:.*]] = moe.grouped_matmul %[[H]], %[[W2]], %[[OFFS]] epilogue <none> : {{.*}} -> tensor<?x64xf32>
// CHECK: %[[OUT:.*]] = moe.combine %[[Y]], %[[W]], %[[ROWS]] : {{.*}} -> tensor<?x64xf32>
// CHECK-NOT: moe.layer
// CHECK: return %[[OUT]]
func.func @mixtral(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax, renormalize> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// DeepSeek-V3: the selection bias goes to moe.route; the ungated shared
// expert is a one-expert grouped matmul pair over all tokens, added on top.
// CHECK-LABEL: func.func @deepseek(
// CHECK-SAME: %[[X:[^:]+]]: tensor<29x64xf32>, %{{[^:]+}}: tensor<16x64xf32>, %[[B:[^:]+]]: tensor<16xf32>
// CHECK-SAME: %[[S1:[^:]+]]: tensor<128x64xf32>, %[[S2:[^:]+]]: tensor<64x64xf32>
// CHECK: moe.route %{{.*}} bias(%[[B]] : tensor<16xf32>) experts 16 router <topk, k = 4, sigmoid, renormalize, scale = 2.5, bias, n_group = 4, topk_group = 2>
// CHECK: %[[ROUTED:.*]] = moe.combine
// CHECK: %[[C0:.*]] = arith.constant 0 : i32
// CHECK: %[[T:.*]] = arith.index_cast %{{.*}} : index to i32
// CHECK: %[[ONE_EXPERT:.*]] = tensor.from_elements %[[C0]], %[[T]] : tensor<2xi32>
// CHECK: %[[E1:.*]] = tensor.expand_shape %[[S1]] {{\[}}[0, 1], [2]] output_shape [1, 128, 64]
// CHECK: %[[E2:.*]] = tensor.expand_shape %[[S2]] {{\[}}[0, 1], [2]] output_shape [1, 64, 64]
// CHECK: %[[SH:.*]] = moe.grouped_matmul %[[X]], %[[E1]], %[[ONE_EXPERT]] epilogue <silu_glu> : {{.*}} -> tensor<29x64xf32>
// CHECK: %[[SHARED:.*]] = moe.grouped_matmul %[[SH]], %[[E2]], %[[ONE_EXPERT]] epilogue <none>
// CHECK: %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[ROUTED]], %[[SHARED]] : tensor<29x64xf32>, tensor<29x64xf32>)
// CHECK: arith.addf
// CHECK: return %[[SUM]]
func.func @deepseek(%x: tensor<29x64xf32>, %wg: tensor<16x64xf32>, %bias: tensor<16xf32>, %w1: tensor<16x64x64xf32>, %w2: tensor<16x64x32xf32>,
                    %s1: tensor<128x64xf32>, %s2: tensor<64x64xf32>) -> tensor<29x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<16x64xf32>) selection_bias(%bias : tensor<16xf32>) experts(%w1, %w2 : tensor<16x64x64xf32>, tensor<16x64x32xf32>)
      shared(%s1, %s2 : tensor<128x64xf32>, tensor<64x64xf32>)
      router <topk, k = 4, sigmoid, renormalize, scale = 2.5, bias, n_group = 4, topk_group = 2> activation <silu_glu> : tensor<29x64xf32> -> tensor<29x64xf32>
  return %y : tensor<29x64xf32>
}

// -----

// Qwen2-MoE: the shared expert's output is scaled per token by
// sigmoid(x . gate), fused as the `scale` epilogue of its down projection.
// CHECK-LABEL: func.func @qwen2(
// CHECK-SAME: %[[X:[^:]+]]: tensor<40x64xf32>
// CHECK-SAME: %[[SG:[^:]+]]: tensor<1x64xf32>
// CHECK: %[[SH:.*]] = moe.grouped_matmul %[[X]], %{{.*}}, %{{.*}} epilogue <silu_glu> : {{.*}} -> tensor<40x96xf32>
// CHECK: %[[GL:.*]] = moe.gate %[[X]], %[[SG]] : tensor<40x64xf32>, tensor<1x64xf32> -> tensor<40x1xf32>
// CHECK: %[[FLAT:.*]] = tensor.collapse_shape %[[GL]] {{\[}}[0, 1]] : tensor<40x1xf32> into tensor<40xf32>
// CHECK: %[[SIG:.*]] = linalg.generic {{.*}} ins(%[[FLAT]] : tensor<40xf32>)
// CHECK: arith.negf
// CHECK: math.exp
// CHECK: arith.addf
// CHECK: arith.divf
// CHECK: moe.grouped_matmul %[[SH]], %{{.*}}, %{{.*}} row_scale(%[[SIG]] : tensor<40xf32>) epilogue <scale> : {{.*}} -> tensor<40x64xf32>
func.func @qwen2(%x: tensor<40x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x64x64xf32>, %w2: tensor<8x64x32xf32>,
                 %s1: tensor<192x64xf32>, %s2: tensor<64x96xf32>, %sg: tensor<1x64xf32>) -> tensor<40x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x64x64xf32>, tensor<8x64x32xf32>)
      shared(%s1, %s2 : tensor<192x64xf32>, tensor<64x96xf32>) shared_gate(%sg : tensor<1x64xf32>)
      router <topk, k = 4, softmax> activation <silu_glu> : tensor<40x64xf32> -> tensor<40x64xf32>
  return %y : tensor<40x64xf32>
}

// -----

// Switch on a [batch, seq, d] input with per-sequence capacity: tokens are
// flattened, the sequence boundaries [0, 24, 48] are generated for the plan,
// and the result gets its batch shape back.
// CHECK-LABEL: func.func @switch(
// CHECK-SAME: %[[X:[^:]+]]: tensor<2x24x64xf32>
// CHECK: %[[TOK:.*]] = tensor.collapse_shape %[[X]] {{\[}}[0, 1], [2]] : tensor<2x24x64xf32> into tensor<48x64xf32>
// CHECK: %[[S:.*]] = arith.constant 24 : index
// CHECK: %[[GROUPS:.*]] = tensor.generate
// CHECK: ^bb0(%[[I:.*]]: index):
// CHECK: %[[START:.*]] = arith.muli %[[I]], %[[S]] : index
// CHECK: arith.index_cast %[[START]] : index to i32
// CHECK: } : tensor<3xi32>
// CHECK: moe.dispatch_plan %{{.*}} groups(%[[GROUPS]] : tensor<3xi32>) experts 4 capacity <absolute = 8, group = sequence, overflow = drop>
// CHECK: moe.grouped_matmul %[[TOK]], {{.*}} epilogue <relu>
// CHECK: %[[OUT:.*]] = moe.combine
// CHECK-NOT: passthrough
// CHECK: tensor.expand_shape %[[OUT]] {{\[}}[0, 1], [2]] output_shape [2, 24, 64] : tensor<48x64xf32> into tensor<2x24x64xf32>
func.func @switch(%x: tensor<2x24x64xf32>, %wg: tensor<4x64xf32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<2x24x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x64xf32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <topk, k = 1, softmax, capacity = <absolute = 8, group = sequence, overflow = drop>> activation <relu> : tensor<2x24x64xf32> -> tensor<2x24x64xf32>
  return %y : tensor<2x24x64xf32>
}

// -----

// A dynamic batch gets a dynamically sized boundary tensor.
// CHECK-LABEL: func.func @switch_dynamic_batch(
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x24x64xf32>
// CHECK: %[[B:.*]] = tensor.dim %[[X]], %{{.*}} : tensor<?x24x64xf32>
// CHECK: %[[B1:.*]] = arith.addi %[[B]], %{{.*}} : index
// CHECK: tensor.generate %[[B1]]
// CHECK: } : tensor<?xi32>
// CHECK: tensor.expand_shape %{{.*}} {{\[}}[0, 1], [2]] output_shape [%{{.*}}, 24, 64] : tensor<?x64xf32> into tensor<?x24x64xf32>
func.func @switch_dynamic_batch(%x: tensor<?x24x64xf32>, %wg: tensor<4x64xf32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<?x24x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x64xf32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <topk, k = 1, softmax, capacity = <factor = 1.25, group = sequence, overflow = drop>> activation <relu> : tensor<?x24x64xf32> -> tensor<?x24x64xf32>
  return %y : tensor<?x24x64xf32>
}

// -----

// Hugging Face 4.x Switch: a dropped token passes prob * x through.
// CHECK-LABEL: func.func @passthrough(
// CHECK-SAME: %[[X:[^:]+]]: tensor<16x64xf32>
// CHECK: moe.dispatch_plan %{{.*}} experts 4 capacity <factor = 1.0, group = batch, overflow = passthrough>
// CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} passthrough(%[[X]] : tensor<16x64xf32>)
func.func @passthrough(%x: tensor<16x64xf32>, %wg: tensor<4x64xf32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<16x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x64xf32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <topk, k = 1, softmax, capacity = <factor = 1.0, group = batch, overflow = passthrough>> activation <relu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// -----

// Reroute ranks alternatives by the logits (routed + null columns); request
// groups come from the layer's operand. The gate's bias is a logit bias.
// CHECK-LABEL: func.func @reroute_per_request(
// CHECK-SAME: %[[X:[^:]+]]: tensor<?x64xf32>, %[[G:[^:]+]]: tensor<?xi32>, %[[WG:[^:]+]]: tensor<10x64xf32>, %[[GB:[^:]+]]: tensor<10xf32>
// CHECK: %[[L:.*]] = moe.gate %[[X]], %[[WG]] bias(%[[GB]] : tensor<10xf32>) : tensor<?x64xf32>, tensor<10x64xf32> -> tensor<?x10xf32>
// CHECK: moe.route %[[L]] : tensor<?x10xf32> experts 8 router <topk, k = 2, softmax, null_experts = 2,
// CHECK: moe.dispatch_plan %{{.*}} scores(%[[L]] : tensor<?x10xf32>) groups(%[[G]] : tensor<?xi32>) experts 8 capacity <factor = 1.5, group = request, overflow = reroute>
func.func @reroute_per_request(%x: tensor<?x64xf32>, %g: tensor<?xi32>, %wg: tensor<10x64xf32>, %gb: tensor<10xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<10x64xf32>) gate_bias(%gb : tensor<10xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) groups(%g : tensor<?xi32>)
      router <topk, k = 2, softmax, null_experts = 2, capacity = <factor = 1.5, group = request, overflow = reroute>> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Hash routing reads token ids, not logits: no gate is built.
// CHECK-LABEL: func.func @hash(
// CHECK-SAME: %[[IDS:[^:]+]]: tensor<50xi32>, %[[TBL:[^:]+]]: tensor<1000xi32>
// CHECK-NOT: moe.gate
// CHECK: moe.route token_ids(%[[IDS]] : tensor<50xi32>) table(%[[TBL]] : tensor<1000xi32>) experts 4 router <hash> -> tensor<50x1xi32>, tensor<50x1xf32>
func.func @hash(%x: tensor<50x64xf32>, %ids: tensor<50xi32>, %table: tensor<1000xi32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<50x64xf32> {
  %y = moe.layer %x token_ids(%ids : tensor<50xi32>) hash_table(%table : tensor<1000xi32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <hash> activation <relu> : tensor<50x64xf32> -> tensor<50x64xf32>
  return %y : tensor<50x64xf32>
}

// -----

// Expert choice: one slot per expert and token (K = E).
// CHECK-LABEL: func.func @expert_choice(
// CHECK: moe.route %{{.*}} experts 8 router <expert_choice, capacity_factor = 2.0> -> tensor<32x8xi32>, tensor<32x8xf32>
// CHECK: moe.dispatch_plan %{{.*}} experts 8 : tensor<32x8xi32> -> tensor<256xi32>, tensor<9xi32>, tensor<32x8xi32>
// CHECK: epilogue <gelu> : {{.*}} -> tensor<256x128xf32>
func.func @expert_choice(%x: tensor<32x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<32x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x128x64xf32>, tensor<8x64x128xf32>)
      router <expert_choice, capacity_factor = 2.0> activation <gelu> : tensor<32x64xf32> -> tensor<32x64xf32>
  return %y : tensor<32x64xf32>
}
