// RUN: moe-opt --moe-lower-to-loops="bf16-dot amx-bf16" %s | FileCheck %s --check-prefixes=CHECK,ASK
// RUN: moe-opt --moe-lower-to-loops="bf16-dot amx-bf16 amx-runtime-check=0" %s | FileCheck %s --check-prefixes=CHECK,GRANTED
// RUN: moe-opt --moe-lower-to-loops=bf16-dot %s | FileCheck %s --check-prefix=NO-AMX
// RUN: moe-opt --moe-cpu-pipeline="bf16-dot amx-bf16" %s | FileCheck %s --check-prefix=LLVM

// With amx-bf16, experts of at least 16 rows multiply on AMX tiles: the
// 32-row pair panels the AVX-512 kernel packs are the second operand as
// they are (16 k pairs by 16 rows, at columns 0 and 32 of a panel row),
// 16 weight rows of 32 k values read in place from [E, N, K] the first
// (gate rows at c, up rows at c + width for silu_glu; two blocks of 16
// rows otherwise); four f32 accumulator tiles live through the k loop,
// then go through a scratch buffer to the shared epilogue.
// CHECK-LABEL: func.func @glu
// CHECK: memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// CHECK: scf.parallel
// The run-time question to the operating system (arch_prctl), unless the
// compiler asked in the process that runs the code.
// ASK: llvm.inline_asm has_side_effects "syscall", "={rax},{rax},{rdi},{rsi}
// GRANTED-NOT: llvm.inline_asm
// CHECK: scf.parallel
// CHECK: memref.alloc() {alignment = 64 : i64} : memref<4x16x16xf32>
// CHECK-COUNT-4: amx.tile_zero : !amx.tile<16x16xf32>
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (!amx.tile<16x16xf32>, !amx.tile<16x16xf32>, !amx.tile<16x16xf32>, !amx.tile<16x16xf32>)
// CHECK:   amx.tile_load %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] : memref<4x256x64xbf16> into !amx.tile<16x32xbf16>
// CHECK:   amx.tile_load %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] : memref<4x256x64xbf16> into !amx.tile<16x32xbf16>
// CHECK:   amx.tile_load %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] : memref<?x?x64xbf16> into !amx.tile<16x32xbf16>
// CHECK:   amx.tile_load %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] : memref<?x?x64xbf16> into !amx.tile<16x32xbf16>
// CHECK-COUNT-4: amx.tile_mulf
// CHECK-COUNT-4: amx.tile_store %{{.*}} : memref<4x16x16xf32>, !amx.tile<16x16xf32>
// CHECK: math.exp
// CHECK: vector.transpose %{{.*}}, [1, 0] : vector<16x16xf32> to vector<16x16xf32>
// With the run-time check, the AVX-512 panel kernel stays for a refusal.
// ASK: x86vector.avx512.dot
// NO-AMX-NOT: amx.
// LLVM: llvm.call_intrinsic "llvm.x86.tdpbf16ps.internal"
func.func @glu(%x: tensor<?x64xf32>, %w: tensor<4x256x64xbf16>,
               %offsets: tensor<5xi32>) -> tensor<?x128xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  return %h : tensor<?x128xf32>
}

// Without an activation: two blocks of 16 weight rows, 32 output columns
// per tile, each row scaled.
// CHECK-LABEL: func.func @scaled
// CHECK-COUNT-4: amx.tile_mulf
// CHECK: vector.transpose %{{.*}}, [1, 0] : vector<32x16xf32> to vector<16x32xf32>
func.func @scaled(%x: tensor<?x64xf32>, %w: tensor<4x48x64xbf16>,
                  %offsets: tensor<5xi32>, %scale: tensor<?xf32>) -> tensor<?x48xf32> {
  %y = moe.grouped_matmul %x, %w, %offsets row_scale(%scale : tensor<?xf32>) epilogue <scale>
      : tensor<?x64xf32>, tensor<4x48x64xbf16>, tensor<5xi32> -> tensor<?x48xf32>
  return %y : tensor<?x48xf32>
}

// Not taken: a depth that is no multiple of 32 (weight tiles are not
// masked), a width below one tile, f32 weights.
// CHECK-LABEL: func.func @odd_depth
// CHECK-NOT: amx.
// CHECK-LABEL: func.func @narrow
// CHECK-NOT: amx.
// CHECK-LABEL: func.func @f32_weights
// CHECK-NOT: amx.
// CHECK: return
func.func @odd_depth(%x: tensor<?x40xf32>, %w: tensor<4x64x40xbf16>,
                     %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x40xf32>, tensor<4x64x40xbf16>, tensor<5xi32> -> tensor<?x32xf32>
  return %h : tensor<?x32xf32>
}
func.func @narrow(%x: tensor<?x64xf32>, %w: tensor<4x24x64xbf16>,
                  %offsets: tensor<5xi32>) -> tensor<?x12xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x24x64xbf16>, tensor<5xi32> -> tensor<?x12xf32>
  return %h : tensor<?x12xf32>
}
func.func @f32_weights(%x: tensor<?x64xf32>, %w: tensor<4x256x64xf32>,
                       %offsets: tensor<5xi32>) -> tensor<?x128xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xf32>, tensor<5xi32> -> tensor<?x128xf32>
  return %h : tensor<?x128xf32>
}
