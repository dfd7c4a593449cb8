// Round trip of every moe op and every router policy, in the custom and in
// the generic form.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK-LABEL: func.func @gate(
// CHECK: %0 = moe.gate %arg0, %arg1 : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
// CHECK: %1 = moe.gate %arg0, %arg1 bias(%arg2 : tensor<8xf32>) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
func.func @gate(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>, %b: tensor<8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %0 = moe.gate %x, %wg : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %1 = moe.gate %x, %wg bias(%b : tensor<8xf32>) : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  return %0, %1 : tensor<?x8xf32>, tensor<?x8xf32>
}

// CHECK-LABEL: func.func @gate_bf16_weights(
// CHECK: %0 = moe.gate %arg0, %arg1 : tensor<4x64xbf16>, tensor<8x64xbf16> -> tensor<4x8xbf16>
func.func @gate_bf16_weights(%x: tensor<4x64xbf16>, %wg: tensor<8x64xbf16>) -> tensor<4x8xbf16> {
  %0 = moe.gate %x, %wg : tensor<4x64xbf16>, tensor<8x64xbf16> -> tensor<4x8xbf16>
  return %0 : tensor<4x8xbf16>
}

// CHECK-LABEL: func.func @route_topk(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<?x8xf32> experts 8 router <topk, k = 2, softmax, renormalize> -> tensor<?x2xi32>, tensor<?x2xf32>
func.func @route_topk(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l : tensor<?x8xf32> experts 8 router <topk, k = 2, softmax, renormalize> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// CHECK-LABEL: func.func @route_topk_not_renormalized(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x64xf32> experts 64 router <topk, k = 8, softmax> -> tensor<16x8xi32>, tensor<16x8xf32>
func.func @route_topk_not_renormalized(%l: tensor<16x64xf32>) -> (tensor<16x8xi32>, tensor<16x8xf32>) {
  %i, %w = moe.route %l : tensor<16x64xf32> experts 64 router <topk, k = 8, softmax> -> tensor<16x8xi32>, tensor<16x8xf32>
  return %i, %w : tensor<16x8xi32>, tensor<16x8xf32>
}

// CHECK-LABEL: func.func @route_deepseek_v3(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x64xf32> bias(%arg1 : tensor<64xf32>) experts 64 router <topk, k = 6, sigmoid, renormalize, scale = 2.5, bias, n_group = 8, topk_group = 4> -> tensor<16x6xi32>, tensor<16x6xf32>
func.func @route_deepseek_v3(%l: tensor<16x64xf32>, %b: tensor<64xf32>) -> (tensor<16x6xi32>, tensor<16x6xf32>) {
  %i, %w = moe.route %l : tensor<16x64xf32> bias(%b : tensor<64xf32>) experts 64 router <topk, k = 6, sigmoid, renormalize, scale = 2.5, bias, n_group = 8, topk_group = 4> -> tensor<16x6xi32>, tensor<16x6xf32>
  return %i, %w : tensor<16x6xi32>, tensor<16x6xf32>
}

// CHECK-LABEL: func.func @route_softmax_after(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x8xf32> experts 8 router <topk, k = 2, softmax, softmax_after> -> tensor<16x2xi32>, tensor<16x2xf32>
func.func @route_softmax_after(%l: tensor<16x8xf32>) -> (tensor<16x2xi32>, tensor<16x2xf32>) {
  %i, %w = moe.route %l : tensor<16x8xf32> experts 8 router <topk, k = 2, softmax, softmax_after> -> tensor<16x2xi32>, tensor<16x2xf32>
  return %i, %w : tensor<16x2xi32>, tensor<16x2xf32>
}

// CHECK-LABEL: func.func @route_top_p(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x8xf32> experts 8 router <top_p, p = 0.4, k_max = 4> -> tensor<16x4xi32>, tensor<16x4xf32>
func.func @route_top_p(%l: tensor<16x8xf32>) -> (tensor<16x4xi32>, tensor<16x4xf32>) {
  %i, %w = moe.route %l : tensor<16x8xf32> experts 8 router <top_p, p = 0.4, k_max = 4> -> tensor<16x4xi32>, tensor<16x4xf32>
  return %i, %w : tensor<16x4xi32>, tensor<16x4xf32>
}

// CHECK-LABEL: func.func @route_expert_choice(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<32x8xf32> experts 8 router <expert_choice, capacity_factor = 2.0> -> tensor<32x8xi32>, tensor<32x8xf32>
func.func @route_expert_choice(%l: tensor<32x8xf32>) -> (tensor<32x8xi32>, tensor<32x8xf32>) {
  %i, %w = moe.route %l : tensor<32x8xf32> experts 8 router <expert_choice, capacity_factor = 2.0> -> tensor<32x8xi32>, tensor<32x8xf32>
  return %i, %w : tensor<32x8xi32>, tensor<32x8xf32>
}

// CHECK-LABEL: func.func @route_hash(
// CHECK: %indices, %weights = moe.route token_ids(%arg0 : tensor<50xi64>) table(%arg1 : tensor<1000xi32>) experts 4 router <hash> -> tensor<50x1xi32>, tensor<50x1xf32>
func.func @route_hash(%ids: tensor<50xi64>, %table: tensor<1000xi32>) -> (tensor<50x1xi32>, tensor<50x1xf32>) {
  %i, %w = moe.route token_ids(%ids : tensor<50xi64>) table(%table : tensor<1000xi32>) experts 4 router <hash> -> tensor<50x1xi32>, tensor<50x1xf32>
  return %i, %w : tensor<50x1xi32>, tensor<50x1xf32>
}

// CHECK-LABEL: func.func @route_balanced(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x4xf32> experts 4 router <balanced> -> tensor<16x1xi32>, tensor<16x1xf32>
func.func @route_balanced(%l: tensor<16x4xf32>) -> (tensor<16x1xi32>, tensor<16x1xf32>) {
  %i, %w = moe.route %l : tensor<16x4xf32> experts 4 router <balanced> -> tensor<16x1xi32>, tensor<16x1xf32>
  return %i, %w : tensor<16x1xi32>, tensor<16x1xf32>
}

// CHECK-LABEL: func.func @route_null_experts(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x12xf32> experts 8 router <topk, k = 2, softmax, null_experts = 4> -> tensor<16x2xi32>, tensor<16x2xf32>
func.func @route_null_experts(%l: tensor<16x12xf32>) -> (tensor<16x2xi32>, tensor<16x2xf32>) {
  %i, %w = moe.route %l : tensor<16x12xf32> experts 8 router <topk, k = 2, softmax, null_experts = 4> -> tensor<16x2xi32>, tensor<16x2xf32>
  return %i, %w : tensor<16x2xi32>, tensor<16x2xf32>
}

// CHECK-LABEL: func.func @route_capacity(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = 1.25, group = batch, overflow = drop>> -> tensor<16x1xi32>, tensor<16x1xf32>
func.func @route_capacity(%l: tensor<16x8xf32>) -> (tensor<16x1xi32>, tensor<16x1xf32>) {
  %i, %w = moe.route %l : tensor<16x8xf32> experts 8 router <topk, k = 1, softmax, capacity = #moe.capacity<factor = 1.25, group = batch, overflow = drop>> -> tensor<16x1xi32>, tensor<16x1xf32>
  return %i, %w : tensor<16x1xi32>, tensor<16x1xf32>
}

// CHECK-LABEL: func.func @route_top_p_capacity(
// CHECK: %indices, %weights = moe.route %arg0 : tensor<16x8xf32> experts 8 router <top_p, p = 0.5, k_max = 3, scale = 2.0, capacity = <absolute = 3, group = request, overflow = reroute>> -> tensor<16x3xi32>, tensor<16x3xf32>
func.func @route_top_p_capacity(%l: tensor<16x8xf32>) -> (tensor<16x3xi32>, tensor<16x3xf32>) {
  %i, %w = moe.route %l : tensor<16x8xf32> experts 8 router <top_p, p = 0.5, k_max = 3, scale = 2.0, null_experts = 0, capacity = <absolute = 3, group = request, overflow = reroute>> -> tensor<16x3xi32>, tensor<16x3xf32>
  return %i, %w : tensor<16x3xi32>, tensor<16x3xf32>
}

// CHECK-LABEL: func.func @dispatch_plan(
// CHECK: %perm, %offsets, %rows = moe.dispatch_plan %arg0 experts 8 : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
func.func @dispatch_plan(%i: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>) {
  %perm, %offsets, %rows = moe.dispatch_plan %i experts 8 : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  return %perm, %offsets, %rows : tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
}

// CHECK-LABEL: func.func @dispatch_plan_capacity(
// CHECK: %perm, %offsets, %rows = moe.dispatch_plan %arg0 groups(%arg1 : tensor<3xi32>) experts 8 capacity <absolute = 4, group = sequence, overflow = drop> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
// CHECK: %perm_0, %offsets_1, %rows_2 = moe.dispatch_plan %arg0 scores(%arg2 : tensor<48x8xf32>) experts 8 capacity <factor = 1.0, group = batch, overflow = reroute> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
// CHECK: %perm_3, %offsets_4, %rows_5 = moe.dispatch_plan %arg3 experts 8 capacity <factor = 1.25, group = batch, overflow = passthrough> : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
func.func @dispatch_plan_capacity(%i: tensor<48x1xi32>, %g: tensor<3xi32>, %s: tensor<48x8xf32>, %i2: tensor<16x2xi32>)
    -> (tensor<48xi32>, tensor<48xi32>, tensor<32xi32>) {
  %p0, %o0, %r0 = moe.dispatch_plan %i groups(%g : tensor<3xi32>) experts 8 capacity <absolute = 4, group = sequence, overflow = drop> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
  %p1, %o1, %r1 = moe.dispatch_plan %i scores(%s : tensor<48x8xf32>) experts 8 capacity <factor = 1.0, group = batch, overflow = reroute> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
  %p2, %o2, %r2 = moe.dispatch_plan %i2 experts 8 capacity <factor = 1.25, group = batch, overflow = passthrough> : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
  return %p0, %p1, %p2 : tensor<48xi32>, tensor<48xi32>, tensor<32xi32>
}

// CHECK-LABEL: func.func @grouped_matmul(
// CHECK: %0 = moe.grouped_matmul %arg0, %arg3, %arg2 gather(%arg1 : tensor<32xi32>) epilogue <silu_glu> : tensor<16x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
// CHECK: %1 = moe.grouped_matmul %arg0, %arg4, %arg2 gather(%arg1 : tensor<32xi32>) epilogue <gelu> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
// CHECK: %2 = moe.grouped_matmul %arg0, %arg5, %arg2 gather(%arg1 : tensor<32xi32>) epilogue <relu> : tensor<16x64xf32>, tensor<8x128x64xbf16>, tensor<9xi32> -> tensor<32x128xf32>
// CHECK: %3 = moe.grouped_matmul %arg6, %arg4, %arg2 epilogue <none> : tensor<32x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
// CHECK: %4 = moe.grouped_matmul %arg6, %arg4, %arg2 row_scale(%arg7 : tensor<32xf32>) epilogue <scale> : tensor<32x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
func.func @grouped_matmul(%x: tensor<16x64xf32>, %perm: tensor<32xi32>, %offsets: tensor<9xi32>,
                          %w_glu: tensor<8x256x64xf32>, %w: tensor<8x128x64xf32>, %w_bf16: tensor<8x128x64xbf16>,
                          %rows: tensor<32x64xf32>, %scale: tensor<32xf32>)
    -> (tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>) {
  %0 = moe.grouped_matmul %x, %w_glu, %offsets gather(%perm : tensor<32xi32>) epilogue <silu_glu> : tensor<16x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  %1 = moe.grouped_matmul %x, %w, %offsets gather(%perm : tensor<32xi32>) epilogue <gelu> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  %2 = moe.grouped_matmul %x, %w_bf16, %offsets gather(%perm : tensor<32xi32>) epilogue <relu> : tensor<16x64xf32>, tensor<8x128x64xbf16>, tensor<9xi32> -> tensor<32x128xf32>
  %3 = moe.grouped_matmul %rows, %w, %offsets epilogue <none> : tensor<32x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  %4 = moe.grouped_matmul %rows, %w, %offsets row_scale(%scale : tensor<32xf32>) epilogue <scale> : tensor<32x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return %0, %1, %2, %3, %4 : tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>, tensor<32x128xf32>
}

// CHECK-LABEL: func.func @combine(
// CHECK: %0 = moe.combine %arg0, %arg1, %arg2 : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
// CHECK: %1 = moe.combine %arg0, %arg1, %arg2 passthrough(%arg3 : tensor<16x64xf32>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
func.func @combine(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %rows: tensor<16x2xi32>, %x: tensor<16x64xf32>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  %0 = moe.combine %y, %w, %rows : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  %1 = moe.combine %y, %w, %rows passthrough(%x : tensor<16x64xf32>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return %0, %1 : tensor<16x64xf32>, tensor<16x64xf32>
}

// CHECK-LABEL: func.func @experts_lora(
// CHECK: %0 = moe.experts %arg0, %arg1 weights(%arg2, %arg3, %arg4 : tensor<8x32x64xf32>, tensor<8x4x64xf32>, tensor<8x32x4xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x32xf32> {
// CHECK: ^bb0(%arg5: index, %arg6: tensor<?x64xf32>, %arg7: tensor<32x64xf32>, %arg8: tensor<4x64xf32>, %arg9: tensor<32x4xf32>):
// CHECK: moe.yield %3 : tensor<?x32xf32>
func.func @experts_lora(%rows: tensor<32x64xf32>, %offsets: tensor<9xi32>, %w: tensor<8x32x64xf32>,
                        %a: tensor<8x4x64xf32>, %b: tensor<8x32x4xf32>) -> tensor<32x32xf32> {
  %y = moe.experts %rows, %offsets weights(%w, %a, %b : tensor<8x32x64xf32>, tensor<8x4x64xf32>, tensor<8x32x4xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x32xf32> {
  ^bb0(%e: index, %x: tensor<?x64xf32>, %we: tensor<32x64xf32>, %ae: tensor<4x64xf32>, %be: tensor<32x4xf32>):
    %c0 = arith.constant 0 : index
    %n = tensor.dim %x, %c0 : tensor<?x64xf32>
    %zero = arith.constant 0.0 : f32
    %init = tensor.empty(%n) : tensor<?x32xf32>
    %acc = linalg.fill ins(%zero : f32) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    %base = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>]
        ins(%x, %we : tensor<?x64xf32>, tensor<32x64xf32>) outs(%acc : tensor<?x32xf32>) -> tensor<?x32xf32>
    moe.yield %base : tensor<?x32xf32>
  }
  return %y : tensor<32x32xf32>
}

// CHECK-LABEL: func.func @layer_mixtral(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<8x64xf32>) experts(%arg2, %arg3 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax, renormalize> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
func.func @layer_mixtral(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax, renormalize> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @layer_deepseek(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<16x64xf32>) selection_bias(%arg2 : tensor<16xf32>) experts(%arg3, %arg4 : tensor<16x64x64xf32>, tensor<16x64x32xf32>) shared(%arg5, %arg6 : tensor<128x64xf32>, tensor<64x64xf32>) router <topk, k = 4, sigmoid, renormalize, scale = 2.5, bias, n_group = 4, topk_group = 2> activation <silu_glu> : tensor<29x64xf32> -> tensor<29x64xf32>
func.func @layer_deepseek(%x: tensor<29x64xf32>, %wg: tensor<16x64xf32>, %bias: tensor<16xf32>, %w1: tensor<16x64x64xf32>, %w2: tensor<16x64x32xf32>,
                          %s1: tensor<128x64xf32>, %s2: tensor<64x64xf32>) -> tensor<29x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<16x64xf32>) selection_bias(%bias : tensor<16xf32>) experts(%w1, %w2 : tensor<16x64x64xf32>, tensor<16x64x32xf32>)
      shared(%s1, %s2 : tensor<128x64xf32>, tensor<64x64xf32>)
      router <topk, k = 4, sigmoid, renormalize, scale = 2.5, bias, n_group = 4, topk_group = 2> activation <silu_glu> : tensor<29x64xf32> -> tensor<29x64xf32>
  return %y : tensor<29x64xf32>
}

// CHECK-LABEL: func.func @layer_qwen2(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<8x64xf32>) experts(%arg2, %arg3 : tensor<8x64x64xf32>, tensor<8x64x32xf32>) shared(%arg4, %arg5 : tensor<192x64xf32>, tensor<64x96xf32>) shared_gate(%arg6 : tensor<1x64xf32>) router <topk, k = 4, softmax> activation <silu_glu> : tensor<40x64xf32> -> tensor<40x64xf32>
func.func @layer_qwen2(%x: tensor<40x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x64x64xf32>, %w2: tensor<8x64x32xf32>,
                       %s1: tensor<192x64xf32>, %s2: tensor<64x96xf32>, %sg: tensor<1x64xf32>) -> tensor<40x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x64x64xf32>, tensor<8x64x32xf32>)
      shared(%s1, %s2 : tensor<192x64xf32>, tensor<64x96xf32>) shared_gate(%sg : tensor<1x64xf32>)
      router <topk, k = 4, softmax> activation <silu_glu> : tensor<40x64xf32> -> tensor<40x64xf32>
  return %y : tensor<40x64xf32>
}

// CHECK-LABEL: func.func @layer_switch(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<4x64xf32>) experts(%arg2, %arg3 : tensor<4x128x64xf32>, tensor<4x64x128xf32>) router <topk, k = 1, softmax, capacity = <absolute = 8, group = sequence, overflow = drop>> activation <relu> : tensor<2x24x64xf32> -> tensor<2x24x64xf32>
func.func @layer_switch(%x: tensor<2x24x64xf32>, %wg: tensor<4x64xf32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<2x24x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x64xf32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <topk, k = 1, softmax, capacity = <absolute = 8, group = sequence, overflow = drop>> activation <relu> : tensor<2x24x64xf32> -> tensor<2x24x64xf32>
  return %y : tensor<2x24x64xf32>
}

// CHECK-LABEL: func.func @layer_hash(
// CHECK: %0 = moe.layer %arg0 token_ids(%arg1 : tensor<50xi32>) hash_table(%arg2 : tensor<1000xi32>) experts(%arg3, %arg4 : tensor<4x128x64xf32>, tensor<4x64x128xf32>) router <hash> activation <relu> : tensor<50x64xf32> -> tensor<50x64xf32>
func.func @layer_hash(%x: tensor<50x64xf32>, %ids: tensor<50xi32>, %table: tensor<1000xi32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<50x64xf32> {
  %y = moe.layer %x token_ids(%ids : tensor<50xi32>) hash_table(%table : tensor<1000xi32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <hash> activation <relu> : tensor<50x64xf32> -> tensor<50x64xf32>
  return %y : tensor<50x64xf32>
}

// CHECK-LABEL: func.func @layer_expert_choice(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<8x64xf32>) gate_bias(%arg2 : tensor<8xf32>) experts(%arg3, %arg4 : tensor<8x128x64xf32>, tensor<8x64x128xf32>) router <expert_choice, capacity_factor = 2.0> activation <gelu> : tensor<32x64xf32> -> tensor<32x64xf32>
func.func @layer_expert_choice(%x: tensor<32x64xf32>, %wg: tensor<8x64xf32>, %gb: tensor<8xf32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<32x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) gate_bias(%gb : tensor<8xf32>) experts(%w1, %w2 : tensor<8x128x64xf32>, tensor<8x64x128xf32>)
      router <expert_choice, capacity_factor = 2.0> activation <gelu> : tensor<32x64xf32> -> tensor<32x64xf32>
  return %y : tensor<32x64xf32>
}

// CHECK-LABEL: func.func @layer_request_groups(
// CHECK: %0 = moe.layer %arg0 gate(%arg2 : tensor<10x64xf32>) experts(%arg3, %arg4 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) groups(%arg1 : tensor<?xi32>) router <topk, k = 2, softmax, null_experts = 2, capacity = <factor = 1.5, group = request, overflow = reroute>> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
func.func @layer_request_groups(%x: tensor<?x64xf32>, %g: tensor<?xi32>, %wg: tensor<10x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<10x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) groups(%g : tensor<?xi32>)
      router <topk, k = 2, softmax, null_experts = 2, capacity = <factor = 1.5, group = request, overflow = reroute>> activation <silu_glu> : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func.func @layer_balanced(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<4x64xf32>) experts(%arg2, %arg3 : tensor<4x128x64xf32>, tensor<4x64x128xf32>) router <balanced> activation <relu> : tensor<16x64xf32> -> tensor<16x64xf32>
func.func @layer_balanced(%x: tensor<16x64xf32>, %wg: tensor<4x64xf32>, %w1: tensor<4x128x64xf32>, %w2: tensor<4x64x128xf32>) -> tensor<16x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x64xf32>) experts(%w1, %w2 : tensor<4x128x64xf32>, tensor<4x64x128xf32>)
      router <balanced> activation <relu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// CHECK-LABEL: func.func @layer_top_p(
// CHECK: %0 = moe.layer %arg0 gate(%arg1 : tensor<8x64xf32>) experts(%arg2, %arg3 : tensor<8x128x64xf32>, tensor<8x64x64xf32>) router <top_p, p = 0.6, k_max = 4> activation <silu_glu> : tensor<25x64xf32> -> tensor<25x64xf32>
func.func @layer_top_p(%x: tensor<25x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x64xf32>) -> tensor<25x64xf32> {
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x128x64xf32>, tensor<8x64x64xf32>)
      router <top_p, p = 0.6, k_max = 4> activation <silu_glu> : tensor<25x64xf32> -> tensor<25x64xf32>
  return %y : tensor<25x64xf32>
}

// CHECK-LABEL: func.func @statistics(
// CHECK: %0 = moe.aux_loss %arg0, %arg1 : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
// CHECK: %1 = moe.aux_loss %arg0, %arg1 groups(%arg2 : tensor<3xi32>) : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
// CHECK: %2 = moe.z_loss %arg3 : tensor<?x8xf32> -> tensor<f32>
// CHECK: %3 = moe.expert_load %arg1 : tensor<?x2xi32> -> tensor<8xi32>
func.func @statistics(%probs: tensor<?x8xf32>, %i: tensor<?x2xi32>, %g: tensor<3xi32>, %l: tensor<?x8xf32>) -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xi32>) {
  %aux = moe.aux_loss %probs, %i : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
  %aux_seq = moe.aux_loss %probs, %i groups(%g : tensor<3xi32>) : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
  %z = moe.z_loss %l : tensor<?x8xf32> -> tensor<f32>
  %load = moe.expert_load %i : tensor<?x2xi32> -> tensor<8xi32>
  return %aux, %aux_seq, %z, %load : tensor<f32>, tensor<f32>, tensor<f32>, tensor<8xi32>
}

