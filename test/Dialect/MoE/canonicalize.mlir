// RUN: moe-opt %s -canonicalize -split-input-file | FileCheck %s

// A capacity factor >= E lets every expert take every slot: it never binds.
// CHECK-LABEL: func.func @unbound_capacity_factor(
// CHECK: moe.dispatch_plan %{{.*}} experts 4 : tensor<?x2xi32>
// CHECK-NOT: capacity
func.func @unbound_capacity_factor(%i: tensor<?x2xi32>) -> tensor<?xi32> {
  %p, %o, %r = moe.dispatch_plan %i experts 4 capacity <factor = 4.0, group = batch, overflow = drop> : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  return %p : tensor<?xi32>
}

// -----

// An absolute capacity of T*K = 32 slots cannot bind either; the operands
// only the capacity used go away with it.
// CHECK-LABEL: func.func @unbound_absolute_capacity(
// CHECK: moe.dispatch_plan %{{.*}} experts 8 : tensor<16x2xi32>
// CHECK-NOT: capacity
func.func @unbound_absolute_capacity(%i: tensor<16x2xi32>, %g: tensor<3xi32>) -> tensor<32xi32> {
  %p, %o, %r = moe.dispatch_plan %i groups(%g : tensor<3xi32>) experts 8 capacity <absolute = 32, group = request, overflow = drop> : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
  return %p : tensor<32xi32>
}

// -----

// CHECK-LABEL: func.func @binding_capacity_kept(
// CHECK: capacity <absolute = 31, group = batch, overflow = drop>
// CHECK: capacity <factor = 3.5, group = batch, overflow = drop>
// CHECK: capacity <absolute = 1000, group = batch, overflow = drop>
func.func @binding_capacity_kept(%i: tensor<16x2xi32>, %d: tensor<?x2xi32>) -> (tensor<32xi32>, tensor<32xi32>, tensor<?xi32>) {
  %p0, %o0, %r0 = moe.dispatch_plan %i experts 4 capacity <absolute = 31> : tensor<16x2xi32> -> tensor<32xi32>, tensor<5xi32>, tensor<16x2xi32>
  %p1, %o1, %r1 = moe.dispatch_plan %i experts 4 capacity <factor = 3.5> : tensor<16x2xi32> -> tensor<32xi32>, tensor<5xi32>, tensor<16x2xi32>
  // With a dynamic token count an absolute capacity may always bind.
  %p2, %o2, %r2 = moe.dispatch_plan %d experts 4 capacity <absolute = 1000> : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  return %p0, %p1, %p2 : tensor<32xi32>, tensor<32xi32>, tensor<?xi32>
}

// -----

// Scaling every row by 1.0 is the identity epilogue.
// CHECK-LABEL: func.func @unit_row_scale(
// CHECK: %[[ONE:.*]] = moe.grouped_matmul %{{.*}}, %{{.*}}, %{{.*}} epilogue <none>
// CHECK: moe.grouped_matmul %{{.*}}, %{{.*}}, %{{.*}} row_scale(%{{.*}} : tensor<8xf32>) epilogue <scale>
// CHECK: return %[[ONE]],
func.func @unit_row_scale(%x: tensor<8x16xf32>, %w: tensor<2x4x16xf32>, %o: tensor<3xi32>) -> (tensor<8x4xf32>, tensor<8x4xf32>) {
  %ones = arith.constant dense<1.0> : tensor<8xf32>
  %halves = arith.constant dense<0.5> : tensor<8xf32>
  %0 = moe.grouped_matmul %x, %w, %o row_scale(%ones : tensor<8xf32>) epilogue <scale> : tensor<8x16xf32>, tensor<2x4x16xf32>, tensor<3xi32> -> tensor<8x4xf32>
  %1 = moe.grouped_matmul %x, %w, %o row_scale(%halves : tensor<8xf32>) epilogue <scale> : tensor<8x16xf32>, tensor<2x4x16xf32>, tensor<3xi32> -> tensor<8x4xf32>
  return %0, %1 : tensor<8x4xf32>, tensor<8x4xf32>
}

// -----

// The load of constant indices folds; empty slots (-1) and null experts
// (>= E) are not counted.
// CHECK-LABEL: func.func @expert_load_of_constant(
// CHECK: %[[LOAD:.*]] = arith.constant dense<[1, 1, 2, 0]> : tensor<4xi32>
// CHECK-NOT: moe.expert_load
// CHECK: return %[[LOAD]]
func.func @expert_load_of_constant() -> tensor<4xi32> {
  %i = arith.constant dense<[[2, 0], [2, -1], [5, 1]]> : tensor<3x2xi32>
  %load = moe.expert_load %i : tensor<3x2xi32> -> tensor<4xi32>
  return %load : tensor<4xi32>
}
