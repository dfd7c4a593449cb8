// RUN: moe-opt --moe-lower-to-loops --split-input-file --verify-diagnostics %s | FileCheck %s
// RUN: moe-opt --moe-lower-to-loops="plan-block=5" --split-input-file --verify-diagnostics %s | FileCheck %s --check-prefix=OPT
// RUN: moe-opt --moe-lower-to-loops="gpu plan-block=0" --split-input-file --verify-diagnostics %s | FileCheck %s --check-prefix=GPU
// RUN: not moe-opt --moe-lower-to-loops="plan-block=-4" %s 2>&1 | FileCheck %s --check-prefix=BAD-OPTION

// BAD-OPTION: error: plan-block must be a positive 32-bit integer (0 for the target's), not -4

// Without token groups or rerouting, the plan is a stable counting sort in
// parallel over blocks of tokens (256 on CPUs, 32 on GPUs, `plan-block`
// or the op's `moe.plan_block`): per-block counts per expert, a parallel
// scan over the blocks per expert, the offsets' prefix sum over the
// experts, then every slot's row from its block's base.
// CHECK-LABEL: func.func @plan
// CHECK: %[[B:.*]] = arith.ceildivui %{{.*}}, %c256 : index
// CHECK: %[[RANKS:.*]] = memref.alloc(%[[B]]) {alignment = 64 : i64} : memref<?x8xi32>
// CHECK: scf.parallel (%[[BLK:.*]]) = (%{{.*}}) to (%[[B]]) step
// CHECK:   scf.for %{{.*}} = %{{.*}} to %{{.*}} step
// CHECK:     scf.for %{{.*}} = %{{.*}} to %{{.*}} step
// CHECK:       memref.load %[[RANKS]][%[[BLK]], %{{.*}}]
// CHECK: scf.parallel (%[[E:.*]]) = (%{{.*}}) to (%c8) step
// CHECK:   scf.for %{{.*}} = %{{.*}} to %[[B]] step %{{.*}} iter_args
// CHECK:     memref.load %[[RANKS]][%{{.*}}, %[[E]]]
// CHECK:   arith.minsi
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step
// CHECK: linalg.fill ins(%c-1_i32 : i32)
// CHECK: scf.parallel (%{{.*}}) = (%{{.*}}) to (%[[B]]) step
// CHECK-NOT: moe.dispatch_plan
// CHECK: return
// OPT-LABEL: func.func @plan
// OPT: arith.ceildivui %{{.*}}, %c5 : index
// GPU-LABEL: func.func @plan
// GPU: arith.ceildivui %{{.*}}, %c32 : index
func.func @plan(%i: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>) {
  %perm, %offsets, %rows = moe.dispatch_plan %i experts 8 : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  return %perm, %offsets, %rows : tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
}

// -----

// Capacity over the whole batch takes the same form: a slot is served
// when its rank among its expert's slots is below the capacity, and a
// passed-through slot's row is -2. The op's `moe.plan_block` wins over
// the option.
// CHECK-LABEL: func.func @plan_capacity
// CHECK: arith.ceildivui %{{.*}}, %c4 : index
// CHECK: scf.parallel
// CHECK: scf.parallel
// CHECK: scf.parallel
// CHECK: memref.store %c-2_i32
// OPT-LABEL: func.func @plan_capacity
// OPT: arith.ceildivui %{{.*}}, %c4 : index
func.func @plan_capacity(%i: tensor<16x2xi32>) -> (tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>) {
  %p, %o, %r = moe.dispatch_plan %i experts 8 capacity <factor = 1.25, group = batch, overflow = passthrough> {moe.plan_block = 4 : i64} : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
  return %p, %o, %r : tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
}

// -----

// Token groups and rerouting keep the sequential plan: no parallel loop.
// CHECK-LABEL: func.func @plan_sequential
// CHECK-NOT: scf.parallel
// CHECK-NOT: arith.ceildivui
// CHECK: return
func.func @plan_sequential(%i: tensor<48x1xi32>, %g: tensor<3xi32>, %s: tensor<48x8xf32>) -> (tensor<48xi32>, tensor<48xi32>) {
  %p0, %o0, %r0 = moe.dispatch_plan %i groups(%g : tensor<3xi32>) experts 8 capacity <absolute = 4, group = sequence, overflow = drop> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
  %p1, %o1, %r1 = moe.dispatch_plan %i scores(%s : tensor<48x8xf32>) experts 8 capacity <factor = 1.0, group = batch, overflow = reroute> : tensor<48x1xi32> -> tensor<48xi32>, tensor<9xi32>, tensor<48x1xi32>
  return %p0, %p1 : tensor<48xi32>, tensor<48xi32>
}

// -----

// Hash routing is parallel over tokens; expert choice over tokens (each
// token's softmax in its own row) and then over experts.
// CHECK-LABEL: func.func @routes
// CHECK: %[[T:.*]] = memref.dim %{{.*}} : memref<50xi64>
// CHECK: scf.parallel (%{{.*}}) = (%{{.*}}) to (%[[T]]) step
// CHECK: scf.parallel (%{{.*}}) = (%{{.*}}) to (%{{.*}}) step
// CHECK: scf.parallel (%{{.*}}) = (%{{.*}}) to (%c8{{.*}}) step
func.func @routes(%ids: tensor<50xi64>, %table: tensor<1000xi32>, %l: tensor<32x8xf32>) -> (tensor<50x1xi32>, tensor<32x8xi32>) {
  %hi, %hw = moe.route token_ids(%ids : tensor<50xi64>) table(%table : tensor<1000xi32>) experts 4 router <hash> -> tensor<50x1xi32>, tensor<50x1xf32>
  %ei, %ew = moe.route %l : tensor<32x8xf32> experts 8 router <expert_choice, capacity_factor = 2.0> -> tensor<32x8xi32>, tensor<32x8xf32>
  return %hi, %ei : tensor<50x1xi32>, tensor<32x8xi32>
}

// -----

func.func @bad_block(%i: tensor<16x2xi32>) -> tensor<32xi32> {
  // expected-error @below {{'moe.dispatch_plan' op expects 'moe.plan_block' to be a positive integer of at most 32 bits (tokens per block of the plan), not 0 : i64}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 {moe.plan_block = 0 : i64} : tensor<16x2xi32> -> tensor<32xi32>, tensor<9xi32>, tensor<16x2xi32>
  return %p : tensor<32xi32>
}
