// RUN: moe-opt --moe-lower-to-loops=gpu %s | FileCheck %s

// The GPU forms: the grouped matmul is one parallel loop over (plan row,
// output column); each iteration finds its expert by scanning the offsets,
// reads its operand row through the gather map (clamped; invalid rows give
// zero) and accumulates gate and up columns along k; SwiGLU follows. No
// vector types: one GPU thread computes one element.
// CHECK-LABEL: func.func @grouped_matmul
// CHECK-NOT: vector
// CHECK: scf.parallel (%[[R:.*]], %[[C:.*]]) = ({{.*}}) to (%{{.*}}, %c128)
// CHECK:   scf.for %{{.*}} = %{{.*}} to %c8 {{.*}} iter_args
// CHECK:     memref.load %{{.*}} : memref<9xi32>
// CHECK:     arith.select
// CHECK:   memref.load %{{.*}}[%[[R]]] : memref<?xi32>
// CHECK:   %[[UP:.*]] = arith.addi %[[C]], %c128
// CHECK:   scf.for %[[K:.*]] = {{.*}} iter_args
// CHECK:     memref.load %{{.*}}[%{{.*}}, %[[C]], %[[K]]] : memref<8x256x64xf32>
// CHECK:     memref.load %{{.*}}[%{{.*}}, %[[UP]], %[[K]]] : memref<8x256x64xf32>
// CHECK:   math.exp
// CHECK:   arith.select
// CHECK:   memref.store %{{.*}}, %{{.*}}[%[[R]], %[[C]]] : memref<?x128xf32>
// CHECK-NOT: vector
// CHECK: return
func.func @grouped_matmul(%x: tensor<?x64xf32>, %w: tensor<8x256x64xf32>,
                          %offsets: tensor<9xi32>, %perm: tensor<?xi32>) -> tensor<?x128xf32> {
  %y = moe.grouped_matmul %x, %w, %offsets gather(%perm : tensor<?xi32>) epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<?x128xf32>
  return %y : tensor<?x128xf32>
}

// The gate is the linalg contraction; combine is a parallel loop over
// (token, column) that sums the slots in order, reading a row of y only
// when the slot's row is in range.
// CHECK-LABEL: func.func @gate_combine
// CHECK-NOT: vector
// CHECK: linalg.generic
// CHECK-SAME: iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: scf.parallel (%[[T:.*]], %[[COL:.*]]) = ({{.*}}) to ({{.*}})
// CHECK:   scf.for {{.*}} iter_args
// CHECK:     scf.if
// CHECK:       memref.load %{{.*}}[%{{.*}}, %[[COL]]] : memref<?x64xf32>
// CHECK:   memref.store %{{.*}}, %{{.*}}[%[[T]], %[[COL]]] : memref<?x64xf32>
func.func @gate_combine(%x: tensor<?x64xf32>, %wg: tensor<8x64xf32>,
                        %y: tensor<?x64xf32>, %w: tensor<?x2xf32>,
                        %rows: tensor<?x2xi32>) -> (tensor<?x8xf32>, tensor<?x64xf32>) {
  %logits = moe.gate %x, %wg : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
  %out = moe.combine %y, %w, %rows : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x64xf32>
  return %logits, %out : tensor<?x8xf32>, tensor<?x64xf32>
}
