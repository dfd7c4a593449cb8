// RUN: moe-opt --moe-lower-to-loops=bf16-dot %s | FileCheck %s --check-prefixes=CHECK,HW
// RUN: moe-opt --moe-lower-to-loops %s | FileCheck %s --check-prefixes=CHECK,EMU
// RUN: moe-opt --moe-lower-to-loops %s | FileCheck %s --check-prefix=NO-MASK
// NO-MASK-NOT: vector.transfer_read {{[^{]+}}: memref<4x256x64xbf16>
// RUN: moe-opt --moe-cpu-pipeline=bf16-dot %s | FileCheck %s --check-prefix=LLVM-HW
// RUN: moe-opt --moe-cpu-pipeline %s | FileCheck %s --check-prefix=LLVM-EMU

// bf16 weights on f32 tokens take the panel and decode kernels of the f32
// path with k in pairs: tokens are rounded to bf16 as they are packed into
// pair panels (panels[p, k / 2, 2 * row + k % 2]); each weight pair, read
// in place from the [E, N, K] checkpoint layout as one 32-bit value, is
// broadcast to every lane. With bf16-dot the pair products are AVX-512
// BF16 dot products; without, two f32 FMAs on the halves widened by shifts
// and masks, and the rounding is done in integer ops.
// CHECK-LABEL: func.func @bf16_weights
// CHECK: memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// CHECK: scf.parallel
// CHECK:   vector.transfer_read %{{.*}} : memref<?x64xf32>, vector<32xf32>
// HW:      arith.truncf %{{.*}} : vector<32xf32> to vector<32xbf16>
// EMU-NOT: arith.truncf
// EMU:     arith.trunci %{{.*}} : vector<32xi32> to vector<32xi16>
// CHECK-COUNT-16: vector.store %{{.*}} : memref<?x?x64xbf16>, vector<2xbf16>
// CHECK: scf.parallel
// An expert of one panel prefetches the next tile's 12 weight rows at
// value 2k of pair step k, one line per 16 steps.
// CHECK:   %[[K2:.*]] = arith.muli %arg{{[0-9]+}}, %c2{{.*}} : index
// CHECK-NEXT: memref.prefetch %{{.*}}[%{{.*}}, %{{.*}}, %[[K2]]], read, locality<2>, data : memref<4x256x64xbf16>
// CHECK-COUNT-11: memref.prefetch %{{.*}}[%{{.*}}, %{{.*}}, %[[K2]]], read, locality<2>, data : memref<4x256x64xbf16>
// Panel kernel: two pair vectors (32 rows), 12 broadcast weight pairs.
// CHECK:   vector.load %{{.*}} : memref<?x?x64xbf16>, vector<32xbf16>
// CHECK:   vector.load %{{.*}} : memref<?x?x64xbf16>, vector<32xbf16>
// CHECK:   vector.load %{{.*}} : memref<4x256x64xbf16>, vector<2xbf16>
// CHECK:   vector.bitcast %{{.*}} : vector<2xbf16> to vector<1xi32>
// CHECK:   vector.broadcast %{{.*}} : i32 to vector<16xi32>
// HW-COUNT-24: x86vector.avx512.dot
// EMU:     arith.shli
// EMU:     arith.andi
// EMU-COUNT-4: vector.fma
// The odd-depth tail's last weight is a scalar load, zero-extended into
// its pair (no masked bf16 loads anywhere: without AVX-512 BF16, LLVM
// would promote their lanes to f32 and round them back by calling
// __truncsfbf2).
// CHECK:   memref.load %{{.*}} : memref<4x256x64xbf16>
// CHECK:   arith.bitcast %{{.*}} : bf16 to i16
// CHECK:   arith.extui %{{.*}} : i16 to i32
// CHECK:   math.exp
// Decode kernel: 32 values of k per vector, tokens rounded as read; then
// the tail of k in scalars.
// CHECK:   vector.transfer_read %{{.*}} : memref<?x64xf32>, vector<32xf32>
// CHECK:   vector.load %{{.*}} : memref<4x256x64xbf16>, vector<32xbf16>
// HW:      x86vector.avx512.dot
// CHECK:   memref.load %{{.*}} : memref<4x256x64xbf16>
// CHECK:   arith.extf %{{.*}} : bf16 to f32
// CHECK:   vector.reduction <add>
// LLVM-HW: llvm.call_intrinsic "llvm.x86.avx512bf16.dpbf16ps.512"
// LLVM-EMU-NOT: llvm.x86.avx512bf16
// LLVM-EMU: llvm.intr.fma
func.func @bf16_weights(%x: tensor<?x64xf32>, %w: tensor<4x256x64xbf16>,
                        %offsets: tensor<5xi32>) -> tensor<?x128xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  return %h : tensor<?x128xf32>
}
