// RUN: moe-opt --moe-lower-to-loops --split-input-file --verify-diagnostics %s | FileCheck %s

// The f32 grouped matmul packs each expert's rows (read through the gather
// map) into k-major panels of 32 rows, one parallel work item per panel
// (each panel's expert from a map filled per expert), then runs (column
// chunk, expert) work items in parallel: per block of panels, per column
// block, per panel, 24 vector accumulators (2 x 16 rows by 6 gate + 6 up
// weight rows read in place from expert e), SwiGLU on the accumulators,
// and rows written back: each 6 x 16 block transposed, one masked store per
// row. An expert of one panel prefetches the next column block's weight
// rows into L2 (locality 2), one line per 16 steps of k. Experts with
// fewer than 5 rows take the dot-product path instead, which prefetches
// the next group of 6 weight rows into L2 while it sums one, a line of each
// per vector of k, in its first block of rows.
// CHECK-LABEL: func.func @grouped_matmul
// CHECK-NOT: moe.
// CHECK: bufferization.to_buffer %{{.*}} read_only
// CHECK: memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x32xf32>
// CHECK: %[[MAP:.*]] = memref.alloc(%{{.*}}) {alignment = 64 : i64} : memref<?xindex>
// CHECK: scf.for %{{.*}} = %c0 to %c8
// CHECK: scf.parallel (%{{.*}}) = (%c0) to (%{{.*}})
// CHECK:   memref.load %[[MAP]]
// CHECK:   memref.load %[[PERM:.*]][%{{.*}}] : memref<?xi32>
// CHECK:   memref.store %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] : memref<?x?x32xf32>
// CHECK: scf.parallel
// CHECK:   %[[E:.*]] = arith.remui
// CHECK:   scf.if
// CHECK:     %[[ONE:.*]] = arith.cmpi eq, %{{.*}}, %c1 : index
// CHECK:     scf.for %[[BLOCK:.*]] = {{.*}} {
// CHECK:       scf.for %[[JB:.*]] = {{.*}} {
// CHECK:         scf.for %[[P:.*]] = %[[BLOCK]] to {{.*}} {
// CHECK:           scf.for %[[K:.*]] = {{.*}} iter_args
// CHECK:             %[[AT:.*]] = arith.remui %[[K]], %c16{{.*}} : index
// CHECK:             %[[LINE:.*]] = arith.cmpi eq, %[[AT]], %c0 : index
// CHECK:             %[[GO:.*]] = arith.andi %[[ONE]], %[[LINE]] : i1
// CHECK:             scf.if %[[GO]] {
// CHECK-COUNT-12:      memref.prefetch %{{.*}}[%[[E]], %{{.*}}, %[[K]]], read, locality<2>, data : memref<8x256x64xf32>
// CHECK-NEXT:        }
// CHECK-COUNT-2: vector.load %{{.*}}[%[[P]], %[[K]], %{{.*}}] : memref<?x?x32xf32>, vector<16xf32>
// CHECK:         memref.load %{{.*}}[%[[E]], %{{.*}}, %[[K]]] : memref<8x256x64xf32>
// CHECK-NEXT:    vector.broadcast
// CHECK-NEXT:    vector.fma
// CHECK-NEXT:    vector.fma
// CHECK-COUNT-22: vector.fma
// CHECK:       math.exp %{{.*}} : vector<16xf32>
// CHECK:       vector.transpose %{{.*}}, [1, 0] : vector<6x16xf32> to vector<16x6xf32>
// CHECK:       vector.maskedstore %{{.*}} : memref<?x128xf32>, vector<6xi1>, vector<6xf32>
// CHECK:   } else {
// CHECK:     scf.for %[[K0:.*]] = %c0 to %{{.*}} step %c16{{.*}} iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
// CHECK-NEXT:  scf.if %{{.*}} {
// CHECK-COUNT-6: memref.prefetch %{{.*}}[%[[E]], %{{.*}}, %[[K0]]], read, locality<2>, data : memref<8x256x64xf32>
// CHECK-NEXT:  }
// CHECK:       vector.transfer_read %{{.*}} : memref<?x64xf32>, vector<16xf32>
// CHECK:       vector.transfer_read %{{.*}}[%[[E]], %{{.*}}, %[[K0]]], %{{.*}} : memref<8x256x64xf32>, vector<16xf32>
// CHECK:     vector.reduction <add>, %{{.*}} fastmath<reassoc>
// CHECK: bufferization.to_tensor %{{.*}} restrict writable
func.func @grouped_matmul(%x: tensor<?x64xf32>, %w: tensor<8x256x64xf32>,
                          %offsets: tensor<9xi32>, %perm: tensor<?xi32>) -> tensor<?x128xf32> {
  %y = moe.grouped_matmul %x, %w, %offsets gather(%perm : tensor<?xi32>) epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<?x128xf32>
  return %y : tensor<?x128xf32>
}

// -----

// Other precisions use the generic contraction on the expert's subview.
// CHECK-LABEL: func.func @grouped_matmul_bf16
// CHECK-NOT: vector.
// CHECK: memref.subview %{{.*}}[%{{.*}}, 0, 0] [1, 32, 64] [1, 1, 1] : memref<4x32x64xbf16> to memref<32x64xbf16, strided<[64, 1], offset: ?>>
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]
func.func @grouped_matmul_bf16(%x: tensor<?x64xbf16>, %w: tensor<4x32x64xbf16>,
                               %offsets: tensor<5xi32>) -> tensor<?x32xbf16> {
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu>
      : tensor<?x64xbf16>, tensor<4x32x64xbf16>, tensor<5xi32> -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}

// -----

// Routing and planning are loop nests over buffers; the f32 gate is a
// parallel loop over blocks of 4 tokens by 4 experts, each 16 vector
// accumulators along k (4 token rows and 4 weight rows read per step),
// reduced once per logit.
// CHECK-LABEL: func.func @parts
// CHECK-NOT: moe.
// CHECK: scf.parallel (%{{.*}}, %{{.*}}) = (%{{.*}}, %{{.*}}) to (%{{.*}}, %{{.*}}) step (%{{.*}}, %{{.*}}) {
// CHECK:   scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c16 iter_args
// CHECK-COUNT-4: vector.transfer_read %{{.*}} : memref<?x64xf32>, vector<16xf32>
// CHECK-COUNT-4: vector.transfer_read %{{.*}} : memref<8x64xf32>, vector<16xf32>
// CHECK-COUNT-16: vector.fma
// CHECK:   vector.reduction <add>, %{{.*}} fastmath<reassoc>
// CHECK: scf.for
// CHECK: return
func.func @parts(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<9xi32>, tensor<f32>, tensor<f32>, tensor<8xi32>) {
  %logits = moe.gate %x, %wg : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %idx, %w = moe.route %logits : tensor<?x8xf32> experts 8
      router <topk, k = 2, softmax, renormalize, capacity = <factor = 1.0, group = batch, overflow = reroute>>
      -> tensor<?x2xi32>, tensor<?x2xf32>
  %perm, %offsets, %rows = moe.dispatch_plan %idx scores(%logits : tensor<?x8xf32>) experts 8
      capacity <factor = 1.0, group = batch, overflow = reroute>
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  %aux = moe.aux_loss %logits, %idx : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<f32>
  %z = moe.z_loss %logits : tensor<?x8xf32> -> tensor<f32>
  %load = moe.expert_load %idx : tensor<?x2xi32> -> tensor<8xi32>
  return %w, %rows, %offsets, %aux, %z, %load : tensor<?x2xf32>, tensor<?x2xi32>, tensor<9xi32>, tensor<f32>, tensor<f32>, tensor<8xi32>
}

// -----

// On CPUs the f32 combine is a parallel loop over tokens summing vectors
// of 16 columns over the token's slots, in slot order, in registers: an
// in-range plan row adds weight * y[row], -2 (passthrough) adds the token
// itself, and the column tail is a masked transfer.
// CHECK-LABEL: func.func @combine
// CHECK: scf.parallel (%[[T:.*]]) = (%c0) to (%{{.*}}) step (%{{.*}}) {
// CHECK:   scf.for %[[C:.*]] = %c0 to %{{.*}} step %c16 {
// CHECK:     %[[SUM:.*]] = scf.for %[[J:.*]] = %c0{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[ACC:.*]] = %cst{{.*}}) -> (vector<16xf32>) {
// CHECK:       %[[ROW:.*]] = memref.load %{{.*}}[%[[T]], %[[J]]] : memref<?x2xi32>
// CHECK:       %[[WT:.*]] = memref.load %{{.*}}[%[[T]], %[[J]]] : memref<?x2xf32>
// CHECK:       vector.broadcast %[[WT]] : f32 to vector<16xf32>
// CHECK:       scf.if
// CHECK:         vector.transfer_read %{{.*}}[%{{.*}}, %[[C]]], %{{.*}} : memref<?x40xf32>, vector<16xf32>
// CHECK:         arith.mulf
// CHECK:         arith.addf %[[ACC]]
// CHECK:       } else {
// CHECK:         arith.cmpi eq, %[[ROW]], %c-2_i32
// CHECK:         vector.transfer_read %{{.*}}[%[[T]], %[[C]]], %{{.*}} : memref<?x40xf32>, vector<16xf32>
// CHECK:     vector.transfer_write %[[SUM]], %{{.*}}[%[[T]], %[[C]]] : vector<16xf32>, memref<?x40xf32>
func.func @combine(%y: tensor<?x40xf32>, %w: tensor<?x2xf32>, %rows: tensor<?x2xi32>,
                   %x: tensor<?x40xf32>) -> tensor<?x40xf32> {
  %out = moe.combine %y, %w, %rows passthrough(%x : tensor<?x40xf32>)
      : tensor<?x40xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x40xf32>
  return %out : tensor<?x40xf32>
}

// -----

// Other precisions combine one output element per parallel iteration.
// CHECK-LABEL: func.func @combine_f16
// CHECK-NOT: vector.
// CHECK: scf.parallel (%{{.*}}, %{{.*}}) = (%{{.*}}, %{{.*}}) to (%{{.*}}, %{{.*}}) step (%{{.*}}, %{{.*}}) {
// CHECK:   scf.for %{{.*}} = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %cst{{.*}}) -> (f32)
// CHECK:   arith.truncf %{{.*}} : f32 to f16
func.func @combine_f16(%y: tensor<?x40xf16>, %w: tensor<?x2xf32>, %rows: tensor<?x2xi32>)
    -> tensor<?x40xf16> {
  %out = moe.combine %y, %w, %rows
      : tensor<?x40xf16>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x40xf16>
  return %out : tensor<?x40xf16>
}

// -----

// A generic expert body is inlined into a loop over experts.
// CHECK-LABEL: func.func @experts
// CHECK-NOT: moe.
// CHECK: scf.for {{.*}} iter_args
// CHECK:   tensor.extract_slice
// CHECK:   linalg.matmul
// CHECK:   tensor.insert_slice
func.func @experts(%rows: tensor<?x64xf32>, %offsets: tensor<5xi32>, %w: tensor<4x64x32xf32>) -> tensor<?x32xf32> {
  %y = moe.experts %rows, %offsets weights(%w : tensor<4x64x32xf32>)
      : tensor<?x64xf32>, tensor<5xi32> -> tensor<?x32xf32> {
  ^bb0(%e: index, %x: tensor<?x64xf32>, %we: tensor<64x32xf32>):
    %c0 = arith.constant 0 : index
    %n = tensor.dim %x, %c0 : tensor<?x64xf32>
    %zero = arith.constant 0.0 : f32
    %init = tensor.empty(%n) : tensor<?x32xf32>
    %fill = linalg.fill ins(%zero : f32) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    %out = linalg.matmul ins(%x, %we : tensor<?x64xf32>, tensor<64x32xf32>) outs(%fill : tensor<?x32xf32>) -> tensor<?x32xf32>
    moe.yield %out : tensor<?x32xf32>
  }
  return %y : tensor<?x32xf32>
}

// -----

// Balanced assignment: shortest augmenting paths (scf.while) in f64.
// CHECK-LABEL: func.func @balanced
// CHECK-NOT: moe.
// CHECK: memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?xf64>
// CHECK: scf.while
// CHECK: arith.negf {{.*}} : f64
func.func @balanced(%logits: tensor<16x4xf32>) -> tensor<16x1xi32> {
  %idx, %w = moe.route %logits : tensor<16x4xf32> experts 4 router <balanced>
      -> tensor<16x1xi32>, tensor<16x1xf32>
  return %idx : tensor<16x1xi32>
}

// -----

func.func @layer(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{must be expanded first (run --moe-expand-layer)}}
  %y = moe.layer %x gate(%wg : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>)
      router <topk, k = 2, softmax, renormalize> activation <silu_glu>
      : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
