// RUN: moe-opt --moe-lower-to-loops=gpu %s | FileCheck %s

// The GPU forms: the grouped matmul becomes a call of a private launcher
// declaration whose configuration names the kernel that
// --moe-offload-to-gpu builds into it (see offload-to-gpu.mlir). No vector
// types anywhere.
// CHECK-LABEL: func.func @grouped_matmul
// CHECK-NOT: vector
// CHECK: %[[OUT:.*]] = memref.alloc(%{{.*}}) {alignment = 64 : i64} : memref<?x128xf32>
// CHECK: call @__moe_gpu_grouped_matmul(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[OUT]]) : (memref<?x64xf32>, memref<8x256x64xf32>, memref<9xi32>, memref<?xi32>, memref<?x128xf32>) -> ()
// CHECK: bufferization.to_tensor %[[OUT]] restrict writable
func.func @grouped_matmul(%x: tensor<?x64xf32>, %w: tensor<8x256x64xf32>,
                          %offsets: tensor<9xi32>, %perm: tensor<?xi32>) -> tensor<?x128xf32> {
  %y = moe.grouped_matmul %x, %w, %offsets gather(%perm : tensor<?xi32>) epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<8x256x64xf32>, tensor<9xi32> -> tensor<?x128xf32>
  return %y : tensor<?x128xf32>
}

// The gate is a grouped matmul with one expert holding every token (its
// weight [E, d] seen as [1, E, d], offsets [0, T]); combine is a parallel
// loop over (token, column) that sums the slots in order, reading a row of
// y only when the slot's row is in range.
// CHECK-LABEL: func.func @gate_combine
// CHECK-NOT: vector
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] output_shape [1, 8, 64]
// CHECK: tensor.from_elements %{{.*}}, %{{.*}} : tensor<2xi32>
// CHECK: call @__moe_gpu_grouped_matmul_0(%{{.*}}) : (memref<?x64xf32>, memref<1x8x64xf32>, memref<2xi32>, memref<?x8xf32>) -> ()
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

// CHECK: func.func private @__moe_gpu_grouped_matmul(memref<?x64xf32>, memref<8x256x64xf32>, memref<9xi32>, memref<?xi32>, memref<?x128xf32>)
// CHECK-SAME: moe.gpu_launcher = {epilogue = #moe.epilogue<silu_glu>, gather = true, kind = "grouped_matmul", num_experts = 8 : i64, row_scale = false}
// CHECK: func.func private @__moe_gpu_grouped_matmul_0(memref<?x64xf32>, memref<1x8x64xf32>, memref<2xi32>, memref<?x8xf32>)
// CHECK-SAME: moe.gpu_launcher = {epilogue = #moe.epilogue<none>, gather = false, kind = "grouped_matmul", num_experts = 1 : i64, row_scale = false}
