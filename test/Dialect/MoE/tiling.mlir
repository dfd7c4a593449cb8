// moe.gate and moe.combine implement TilingInterface, so upstream transform
// ops tile them without any moe-specific pass.
// RUN: moe-opt %s --transform-interpreter -split-input-file -canonicalize | FileCheck %s

// CHECK-LABEL: func.func @tile_gate(
// CHECK-SAME: %[[X:[^:]+]]: tensor<16x64xf32>, %[[W:[^:]+]]: tensor<8x64xf32>, %[[B:[^:]+]]: tensor<8xf32>
// CHECK: scf.for %[[T:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[ACC:.*]] = %{{.*}}) -> (tensor<16x8xf32>)
// CHECK: scf.for %[[E:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[ACC2:.*]] = %[[ACC]]) -> (tensor<16x8xf32>)
// CHECK-DAG: %[[XS:.*]] = tensor.extract_slice %[[X]][%[[T]], 0] [4, 64] [1, 1] : tensor<16x64xf32> to tensor<4x64xf32>
// CHECK-DAG: %[[WS:.*]] = tensor.extract_slice %[[W]][%[[E]], 0] [2, 64] [1, 1] : tensor<8x64xf32> to tensor<2x64xf32>
// CHECK-DAG: %[[BS:.*]] = tensor.extract_slice %[[B]][%[[E]]] [2] [1] : tensor<8xf32> to tensor<2xf32>
// CHECK: %[[TILE:.*]] = moe.gate %[[XS]], %[[WS]] bias(%[[BS]] : tensor<2xf32>) : tensor<4x64xf32>, tensor<2x64xf32> -> tensor<4x2xf32>
// CHECK: tensor.insert_slice %[[TILE]] into %[[ACC2]][%[[T]], %[[E]]] [4, 2] [1, 1]
func.func @tile_gate(%x: tensor<16x64xf32>, %w: tensor<8x64xf32>, %b: tensor<8xf32>) -> tensor<16x8xf32> {
  %0 = moe.gate %x, %w bias(%b : tensor<8xf32>) : tensor<16x64xf32>, tensor<8x64xf32> -> tensor<16x8xf32>
  return %0 : tensor<16x8xf32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %gate = transform.structured.match ops{["moe.gate"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %loops:2 = transform.structured.tile_using_for %gate tile_sizes [4, 2] : (!transform.any_op) -> (!transform.any_op, !transform.any_op, !transform.any_op)
    transform.yield
  }
}

// -----

// Combine tiles over tokens; expert rows are addressed through `rows`, so
// each tile keeps every row of y and only the token range of the rest.
// CHECK-LABEL: func.func @tile_combine(
// CHECK-SAME: %[[Y:[^:]+]]: tensor<32x64xf32>, %[[W:[^:]+]]: tensor<16x2xf32>, %[[R:[^:]+]]: tensor<16x2xi32>, %[[X:[^:]+]]: tensor<16x64xf32>
// CHECK: scf.forall (%[[T:.*]]) in (4) shared_outs(%[[ACC:.*]] = %{{.*}}) -> (tensor<16x64xf32>)
// CHECK-DAG: %[[OFF:.*]] = affine.apply #{{.*}}(%[[T]])
// CHECK-DAG: %[[WS:.*]] = tensor.extract_slice %[[W]][%[[OFF]], 0] [4, 2] [1, 1]
// CHECK-DAG: %[[RS:.*]] = tensor.extract_slice %[[R]][%[[OFF]], 0] [4, 2] [1, 1]
// CHECK-DAG: %[[XS:.*]] = tensor.extract_slice %[[X]][%[[OFF]], 0] [4, 64] [1, 1]
// CHECK: %[[TILE:.*]] = moe.combine %[[Y]], %[[WS]], %[[RS]] passthrough(%[[XS]] : tensor<4x64xf32>) : tensor<32x64xf32>, tensor<4x2xf32>, tensor<4x2xi32> -> tensor<4x64xf32>
// CHECK: tensor.parallel_insert_slice %[[TILE]] into %[[ACC]][%[[OFF]], 0] [4, 64] [1, 1]
func.func @tile_combine(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>, %x: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %0 = moe.combine %y, %w, %r passthrough(%x : tensor<16x64xf32>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return %0 : tensor<16x64xf32>
}

module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %combine = transform.structured.match ops{["moe.combine"]} in %root : (!transform.any_op) -> !transform.any_op
    %tiled, %forall = transform.structured.tile_using_forall %combine tile_sizes [4, 0] : (!transform.any_op) -> (!transform.any_op, !transform.any_op)
    transform.yield
  }
}
