// RUN: moe-opt --moe-lower-to-loops %s | FileCheck %s --check-prefix=DEFAULT
// RUN: moe-opt --moe-lower-to-loops="vector-bits=256 vector-registers=16" %s \
// RUN:   | FileCheck %s --check-prefix=AVX2
// RUN: moe-opt --moe-lower-to-loops="panel-vectors=1 tile-columns=6" %s \
// RUN:   | FileCheck %s --check-prefix=AVX2
// RUN: moe-opt --moe-apply-schedule="schedule=%moe_src_root/schedules/avx2-tile.mlir" \
// RUN:   --moe-lower-to-loops %s | FileCheck %s --check-prefix=AVX2
// RUN: not moe-opt --moe-apply-schedule="schedule=%t.missing.mlir" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=NO-FILE
// RUN: not moe-opt --moe-lower-to-loops="tile-columns=5" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD-OPTION

// The panel kernel's register tile: panel-vectors vectors of 16 token rows
// by tile-columns weight rows (for silu_glu half gate, half up rows).
//
// Default (the cost model's AVX-512 tile): 32-row panels, and a 2 x 12
// tile, except for an expert's last panel when it holds at most 16 rows,
// which takes a 1 x 12 tile instead of computing 16 zero rows.
// DEFAULT-LABEL: func.func @glu
// DEFAULT:       memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x32xf32>
// DEFAULT:       scf.if
// DEFAULT:         vector.load %{{.*}} : memref<?x?x32xf32>, vector<16xf32>
// DEFAULT-NOT:     vector.load %{{.*}} : memref<?x?x32xf32>
// DEFAULT-COUNT-12: vector.fma
// DEFAULT-NOT:     vector.fma
// DEFAULT:         math.exp
// DEFAULT:       } else {
// DEFAULT:         vector.load %{{.*}} : memref<?x?x32xf32>, vector<16xf32>
// DEFAULT:         vector.load %{{.*}} : memref<?x?x32xf32>, vector<16xf32>
// DEFAULT-COUNT-24: vector.fma
// DEFAULT-NOT:     vector.fma
// DEFAULT:         math.exp
//
// 1 x 6 (the AVX2 tile: 12 ymm accumulators), from the cost model for 16
// 256-bit registers, from the pass options or from a schedule's moe.tile:
// 16-row panels, 6 FMAs per k, 3 gate and 3 up rows.
// AVX2-LABEL: func.func @glu
// AVX2:       memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x16xf32>
// AVX2:       vector.load %{{.*}} : memref<?x?x16xf32>, vector<16xf32>
// AVX2-NOT:   vector.load %{{.*}} : memref<?x?x16xf32>
// AVX2-COUNT-6: vector.fma
// AVX2-NOT:   vector.fma
// AVX2-COUNT-3: math.exp
// AVX2-NOT:   math.exp
// AVX2:       vector.reduction
//
// NO-FILE: error: failed to open transform file: cannot open input file '{{.*}}.missing.mlir'
// BAD-OPTION: error: unsupported tile options panel-vectors=0 tile-columns=5 (expected 1 to 4 panel vectors and an even number of columns from 2 to 32, or 0 for the cost model's)
func.func @glu(%x: tensor<?x64xf32>, %w: tensor<4x256x64xf32>,
               %offsets: tensor<5xi32>) -> tensor<?x128xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xf32>, tensor<5xi32> -> tensor<?x128xf32>
  return %h : tensor<?x128xf32>
}

// An op's own moe.tile overrides the pass's: 3 x 4 on 48-row panels; an
// expert's last panel takes 1, 2 or 3 vectors, as its rows need.
// DEFAULT-LABEL: func.func @own_tile
// DEFAULT:       memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x48xf32>
// DEFAULT:       arith.cmpi sge, %c16
// DEFAULT:       scf.if
// DEFAULT-COUNT-1: vector.load %{{.*}} : memref<?x?x48xf32>, vector<16xf32>
// DEFAULT-COUNT-4: vector.fma
// DEFAULT-NOT:   vector.fma
// DEFAULT:       arith.cmpi sge, %c32
// DEFAULT:       scf.if
// DEFAULT-COUNT-2: vector.load %{{.*}} : memref<?x?x48xf32>, vector<16xf32>
// DEFAULT-COUNT-8: vector.fma
// DEFAULT-NOT:   vector.fma
// DEFAULT:       } else {
// DEFAULT-COUNT-3: vector.load %{{.*}} : memref<?x?x48xf32>, vector<16xf32>
// DEFAULT-COUNT-12: vector.fma
// DEFAULT-NOT:   vector.fma
// DEFAULT:       vector.transpose
func.func @own_tile(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                    %offsets: tensor<5xi32>) -> tensor<?x96xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <none> {moe.tile = array<i64: 3, 4>}
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x96xf32>
  return %h : tensor<?x96xf32>
}
