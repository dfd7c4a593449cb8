// RUN: moe-opt %s --moe-offload-to-gpu --split-input-file --verify-diagnostics | FileCheck %s

// Allocations move to the device, a parallel loop becomes a launch over
// its flattened iteration space (at least one block; threads past the end
// do nothing), a serial
// loop nest becomes a single-thread launch, and the scalar it hands to the
// host comes back through a one-element device buffer.

// CHECK: module attributes {gpu.container_module}
// CHECK-LABEL: func.func @offload
// CHECK-SAME: (%[[A:.*]]: memref<?x4xf32>, %[[OUT:.*]]: memref<?x4xf32>) -> i32
// CHECK: %[[N:.*]] = memref.dim %[[A]]
// CHECK: %[[BUF:.*]] = gpu.alloc (%[[N]]) : memref<?x4xf32>
// CHECK: %[[CEIL:.*]] = arith.ceildivui %{{.*}}, %[[C256:.*]] : index
// CHECK: %[[BLOCKS:.*]] = arith.maxui %[[CEIL]], %{{.*}} : index
// CHECK-NOT: scf.if
// CHECK:   gpu.launch blocks({{.*}}) in ({{.*}} = %[[BLOCKS]], {{.*}}) threads({{.*}}) in ({{.*}} = %[[C256]],
// CHECK:     arith.cmpi ult
// CHECK:     arith.remui
// CHECK:     math.exp
// CHECK:     memref.store {{.*}}, %[[BUF]]
// CHECK: %[[SLOT:.*]] = gpu.alloc () : memref<1xi32>
// CHECK: gpu.launch blocks({{.*}}) in ({{.*}} = %[[ONE:.*]], {{.*}} = %[[ONE]], {{.*}} = %[[ONE]]) threads({{.*}}) in ({{.*}} = %[[ONE]], {{.*}} = %[[ONE]], {{.*}} = %[[ONE]])
// CHECK:   scf.for
// CHECK:   memref.store {{.*}}, %[[SLOT]]
// CHECK:   gpu.terminator
// CHECK: %[[HOST:.*]] = memref.alloca() : memref<1xi32>
// CHECK: gpu.memcpy %[[HOST]], %[[SLOT]]
// CHECK: gpu.dealloc %[[SLOT]]
// CHECK: %[[STATUS:.*]] = memref.load %[[HOST]]
// CHECK: gpu.memcpy %[[OUT]], %[[BUF]]
// CHECK: gpu.dealloc %[[BUF]]
// CHECK: return %[[STATUS]] : i32
func.func @offload(%a: memref<?x4xf32>, %out: memref<?x4xf32>) -> i32 {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0 : i32
  %n = memref.dim %a, %c0 : memref<?x4xf32>
  %buf = memref.alloc(%n) : memref<?x4xf32>
  scf.parallel (%i, %j) = (%c0, %c0) to (%n, %c4) step (%c1, %c1) {
    %v = memref.load %a[%i, %j] : memref<?x4xf32>
    %e = math.exp %v : f32
    memref.store %e, %buf[%i, %j] : memref<?x4xf32>
    scf.reduce
  }
  %count = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %zero) -> i32 {
    %v = memref.load %buf[%i, %c0] : memref<?x4xf32>
    %nan = arith.cmpf uno, %v, %v : f32
    %one = arith.extui %nan : i1 to i32
    %next = arith.addi %acc, %one : i32
    scf.yield %next : i32
  }
  memref.copy %buf, %out : memref<?x4xf32> to memref<?x4xf32>
  memref.dealloc %buf : memref<?x4xf32>
  return %count : i32
}

// -----

// A result the host needs that has no scalar type cannot be offloaded.
func.func @vector_escape(%a: memref<4xf32>) -> vector<4xf32> {
  %c0 = arith.constant 0 : index
  %pad = arith.constant 0.0 : f32
  // expected-error @below {{cannot be offloaded: its result of type 'vector<4xf32>' is needed on the host}}
  %v = vector.transfer_read %a[%c0], %pad : memref<4xf32>, vector<4xf32>
  return %v : vector<4xf32>
}

// -----

// expected-error @below {{cannot be offloaded: its body has several blocks}}
func.func @blocks(%a: memref<4xf32>) {
  cf.br ^bb1
^bb1:
  return
}

// -----

// A launcher declaration gets its kernels: the output zeroed, then one
// launch of 256-thread blocks over (column tiles, row tiles + min(experts,
// rows / 9), the experts that can have more than 8 rows, at least 1) with three 16 x 65
// workgroup tiles (operand, gate, up), barriers around the register-tile
// FMAs. The call stays on the host.
// CHECK-LABEL: func.func @caller
// CHECK-NEXT: call @__moe_gpu_grouped_matmul
// CHECK-LABEL: func.func private @__moe_gpu_grouped_matmul
// CHECK: %[[N:.*]] = memref.dim %{{.*}}, %{{.*}} : memref<?x128xf32>
// CHECK: gpu.memset %{{.*}}, %{{.*}} : memref<?x128xf32>, f32
// CHECK: %[[ROWS:.*]] = arith.ceildivui %[[N]], %c64 : index
// CHECK: %[[BIG:.*]] = arith.divui %[[N]], %c9 : index
// CHECK: %[[FEW:.*]] = arith.minui %c8, %[[BIG]] : index
// CHECK: %[[SUM:.*]] = arith.addi %[[ROWS]], %[[FEW]] : index
// CHECK: %[[TILES:.*]] = arith.maxui %[[SUM]], %c1 : index
// CHECK: gpu.launch blocks({{.*}}) in ({{.*}} = %{{.*}}, {{.*}} = %[[TILES]], {{.*}} = %c1)
// CHECK-SAME: workgroup(%{{.*}} : memref<16x65xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<16x65xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<16x65xf32, #gpu.address_space<workgroup>>)
// CHECK: scf.for
// CHECK: gpu.barrier
// CHECK-COUNT-32: math.fma
// CHECK: gpu.barrier
// CHECK: math.exp
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}] : memref<?x128xf32>
// Then the decode kernel for experts of at most 8 rows: 8 warps per block.
// Where both buffers start 16-byte aligned (and the depth is a multiple of
// 4), each lane reads vectors of 4 values of k: for one token row two steps
// per iteration (gate and up weights, then the token), then one step at a
// time, one accumulator vector per row and weight row, reduced to a lane
// sum.
// Each warp finds its expert's rows with one offset per lane (8 experts)
// and a butterfly of 5 max-shuffles, not a pass over the earlier experts.
// CHECK: gpu.launch
// CHECK: %[[OFF:.*]] = memref.load %{{.*}} : memref<9xi32>
// CHECK: %[[M:.*]] = arith.maxsi %{{.*}}, %[[OFF]] : i32
// CHECK: gpu.shuffle  xor %[[M]], %c16_i32
// CHECK-COUNT-4: gpu.shuffle  xor
// CHECK: memref.extract_aligned_pointer_as_index %{{.*}} : memref<?x64xf32>
// CHECK: memref.extract_aligned_pointer_as_index %{{.*}} : memref<8x256x64xf32>
// CHECK: scf.if
// CHECK: scf.for
// CHECK-COUNT-2: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x256x64xf32>, vector<4xf32>
// CHECK-NEXT: vector.load %{{.*}} {alignment = 16 : i64} : memref<?x64xf32>, vector<4xf32>
// CHECK-NEXT: vector.fma
// CHECK-NEXT: vector.fma
// CHECK-COUNT-2: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x256x64xf32>, vector<4xf32>
// CHECK: scf.for %{{.*}} step %c32
// CHECK: vector.reduction <add>, %{{.*}} : vector<4xf32> into f32
// CHECK-NEXT: vector.reduction <add>, %{{.*}} : vector<4xf32> into f32
// Otherwise lanes stride along k by 32 with scalar loads, 16 accumulators
// (8 rows, gate and up). Either way the lane sums go through a butterfly
// of 5 shuffles each.
// CHECK: scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c32{{.*}} iter_args
// CHECK-COUNT-16: math.fma
// CHECK-COUNT-80: gpu.shuffle xor
// CHECK: math.exp
func.func @caller(%x: memref<?x64xf32>, %w: memref<8x256x64xf32>, %o: memref<9xi32>,
                  %g: memref<?xi32>, %out: memref<?x128xf32>) {
  call @__moe_gpu_grouped_matmul(%x, %w, %o, %g, %out) : (memref<?x64xf32>, memref<8x256x64xf32>, memref<9xi32>, memref<?xi32>, memref<?x128xf32>) -> ()
  return
}
func.func private @__moe_gpu_grouped_matmul(memref<?x64xf32>, memref<8x256x64xf32>, memref<9xi32>, memref<?xi32>, memref<?x128xf32>) attributes {moe.gpu_launcher = {epilogue = #moe.epilogue<silu_glu>, gather = true, kind = "grouped_matmul", num_experts = 8 : i64, row_scale = false}}

// -----

// expected-error @below {{has an unknown moe.gpu_launcher configuration}}
func.func private @bad_launcher(memref<4xf32>) attributes {moe.gpu_launcher = {kind = "fft"}}

// -----

// Tensor-core tiles need bf16 weights (and a bool flag).
// expected-error @below {{has an mma configuration that is not a bool over f32 tokens and bf16 weights}}
func.func private @mma_f32(memref<?x64xf32>, memref<4x32x64xf32>, memref<5xi32>, memref<?x32xf32>) attributes {moe.gpu_launcher = {epilogue = #moe.epilogue<none>, gather = false, kind = "grouped_matmul", mma = true, num_experts = 4 : i64, row_scale = false}}

// -----

// expected-error @below {{has an mma configuration that is not a bool over f32 tokens and bf16 weights}}
func.func private @mma_int(memref<?x64xf32>, memref<4x32x64xbf16>, memref<5xi32>, memref<?x32xf32>) attributes {moe.gpu_launcher = {epilogue = #moe.epilogue<none>, gather = false, kind = "grouped_matmul", mma = 1 : i64, num_experts = 4 : i64, row_scale = false}}

// -----

// bf16 weights: both kernels load each weight as bf16 and widen it to f32
// before the FMAs (the staged tiles stay f32).
// CHECK-LABEL: func.func private @__moe_gpu_grouped_matmul_bf16
// CHECK: gpu.launch
// CHECK-SAME: workgroup(%{{.*}} : memref<16x65xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<16x65xf32, #gpu.address_space<workgroup>>)
// CHECK: memref.load %{{.*}} : memref<4x32x64xbf16>
// CHECK-NEXT: arith.extf %{{.*}} : bf16 to f32
// The decode kernel's vector form reads 8 weights (16 bytes) at a time,
// widened as a vector; its scalar form one at a time.
// CHECK: gpu.launch
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<4x32x64xbf16>, vector<8xbf16>
// CHECK-NEXT: arith.extf %{{.*}} : vector<8xbf16> to vector<8xf32>
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<?x64xf32>, vector<8xf32>
// CHECK: vector.shuffle
// CHECK: vector.fma
// CHECK: memref.load %{{.*}} : memref<4x32x64xbf16>
// CHECK-NEXT: arith.extf %{{.*}} : bf16 to f32
// CHECK: math.fma
func.func @caller_bf16(%x: memref<?x64xf32>, %w: memref<4x32x64xbf16>, %o: memref<5xi32>,
                       %out: memref<?x32xf32>) {
  call @__moe_gpu_grouped_matmul_bf16(%x, %w, %o, %out) : (memref<?x64xf32>, memref<4x32x64xbf16>, memref<5xi32>, memref<?x32xf32>) -> ()
  return
}
func.func private @__moe_gpu_grouped_matmul_bf16(memref<?x64xf32>, memref<4x32x64xbf16>, memref<5xi32>, memref<?x32xf32>) attributes {moe.gpu_launcher = {epilogue = #moe.epilogue<relu>, gather = false, kind = "grouped_matmul", num_experts = 4 : i64, row_scale = false}}
