// RUN: moe-opt --moe-lower-to-loops="bf16-dot amx-bf16 amx-runtime-check=0" --split-input-file %s | FileCheck %s
// RUN: moe-opt --moe-lower-to-loops="bf16-dot amx-bf16" --split-input-file %s | FileCheck %s --check-prefix=ASK

// A grouped matmul whose rows only feed another one (the expert up and
// down projections) writes the consumer's panels from its epilogue
// instead of its rows: bf16 pairs of adjacent output columns, interleaved
// and rounded, one 64-byte store per pair of columns and 16 rows; the
// consumer neither allocates nor packs panels of its own.
// CHECK-LABEL: func.func @pairs
// CHECK: %[[THEIRS:.*]] = memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// CHECK: %[[OWN:.*]] = memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// CHECK: vector.store %{{.*}}, %[[OWN]][%{{.*}}] : memref<?x?x64xbf16>, vector<2xbf16>
// CHECK: amx.tile_load %[[OWN]]
// CHECK: %[[PAIR:.*]] = vector.interleave %{{.*}}, %{{.*}} : vector<16xf32> -> vector<32xf32>
// CHECK: %[[BF16:.*]] = arith.truncf %[[PAIR]] : vector<32xf32> to vector<32xbf16>
// CHECK: vector.store %[[BF16]], %[[THEIRS]][%{{.*}}, %{{.*}}, %c0{{.*}}] : memref<?x?x64xbf16>, vector<32xbf16>
// CHECK: vector.store %{{.*}}, %[[THEIRS]][%{{.*}}, %{{.*}}, %c32{{.*}}] : memref<?x?x64xbf16>, vector<32xbf16>
// CHECK-NOT: memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// CHECK-NOT: vector<2xbf16>
// CHECK: amx.tile_load %[[THEIRS]]
// CHECK-NOT: vector<2xbf16>
// CHECK: return
// With the run-time check, the AVX-512 kernel kept for a refused AMX
// request writes the same panels.
// ASK-LABEL: func.func @pairs
// ASK: %[[THEIRS:.*]] = memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// ASK: amx.tile_mulf
// ASK: vector.store %{{.*}}, %[[THEIRS]]{{.*}} : memref<?x?x64xbf16>, vector<32xbf16>
// ASK: x86vector.avx512.dot
// ASK: vector.store %{{.*}}, %[[THEIRS]]{{.*}} : memref<?x?x64xbf16>, vector<32xbf16>
// ASK-NOT: memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x64xbf16>
// ASK: amx.tile_load %[[THEIRS]]
// ASK: return
func.func @pairs(%x: tensor<?x64xf32>, %w1: tensor<4x256x64xbf16>,
                 %w2: tensor<4x64x128xbf16>, %offsets: tensor<5xi32>,
                 %perm: tensor<?xi32>) -> tensor<?x64xf32> {
  %h = moe.grouped_matmul %x, %w1, %offsets gather(%perm : tensor<?xi32>)
      epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  %y = moe.grouped_matmul %h, %w2, %offsets epilogue <none>
      : tensor<?x128xf32>, tensor<4x64x128xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// f32 panels take one column of 16 rows per store; tiles that overlap the
// previous one at the end of a row (128 columns in tiles of 6) store only
// the columns they own, and an expert's last panel with one vector of
// rows zeroes the other half as packing would.
// CHECK-LABEL: func.func @f32
// CHECK: %[[THEIRS:.*]] = memref.alloc(%{{.*}}, %c128{{.*}}) {alignment = 64 : i64} : memref<?x?x32xf32>
// CHECK: %[[OWN:.*]] = memref.alloc(%{{.*}}, %{{.*}}) {alignment = 64 : i64} : memref<?x?x32xf32>
// CHECK: memref.store %{{.*}}, %[[OWN]]
// CHECK: arith.cmpi sge
// CHECK: scf.if
// CHECK: vector.store %{{.*}}, %[[THEIRS]][%{{.*}}, %{{.*}}, %c0{{.*}}] : memref<?x?x32xf32>, vector<16xf32>
// CHECK: vector.store %cst{{.*}}, %[[THEIRS]][%{{.*}}, %{{.*}}, %c16{{.*}}] : memref<?x?x32xf32>, vector<16xf32>
// CHECK-NOT: memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x32xf32>
// CHECK: vector.load %[[THEIRS]]
// CHECK: return
func.func @f32(%x: tensor<?x64xf32>, %w1: tensor<4x256x64xf32>,
               %w2: tensor<4x64x128xf32>, %offsets: tensor<5xi32>,
               %perm: tensor<?xi32>) -> tensor<?x64xf32> {
  %h = moe.grouped_matmul %x, %w1, %offsets gather(%perm : tensor<?xi32>)
      epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xf32>, tensor<5xi32> -> tensor<?x128xf32>
  %y = moe.grouped_matmul %h, %w2, %offsets epilogue <none>
      : tensor<?x128xf32>, tensor<4x64x128xf32>, tensor<5xi32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// No handoff when the rows have another user: both matmuls pack.
// CHECK-LABEL: func.func @two_users
// CHECK-NOT: vector.interleave
// CHECK: vector<2xbf16>
// CHECK: vector<2xbf16>
// CHECK-NOT: vector.interleave
// CHECK: return
func.func @two_users(%x: tensor<?x64xf32>, %w1: tensor<4x256x64xbf16>,
                     %w2: tensor<4x64x128xbf16>, %offsets: tensor<5xi32>)
    -> (tensor<?x64xf32>, tensor<?x128xf32>) {
  %h = moe.grouped_matmul %x, %w1, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  %y = moe.grouped_matmul %h, %w2, %offsets epilogue <none>
      : tensor<?x128xf32>, tensor<4x64x128xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  return %y, %h : tensor<?x64xf32>, tensor<?x128xf32>
}

// -----

// Nor when the consumer gathers its rows, takes other offsets, has
// another decode threshold, or for pairs a width that is not whole
// 32-wide steps of k.
// CHECK-LABEL: func.func @no_handoff
// CHECK-NOT: vector.interleave
// CHECK: return
func.func @no_handoff(%x: tensor<?x64xf32>, %w1: tensor<4x256x64xbf16>,
                      %w2: tensor<4x64x128xbf16>, %w3: tensor<4x160x64xbf16>,
                      %w4: tensor<4x64x80xbf16>, %offsets: tensor<5xi32>,
                      %other: tensor<5xi32>, %perm: tensor<?xi32>)
    -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %h0 = moe.grouped_matmul %x, %w1, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  %y0 = moe.grouped_matmul %h0, %w2, %offsets gather(%perm : tensor<?xi32>)
      epilogue <none>
      : tensor<?x128xf32>, tensor<4x64x128xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  %h1 = moe.grouped_matmul %x, %w1, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  %y1 = moe.grouped_matmul %h1, %w2, %other epilogue <none>
      : tensor<?x128xf32>, tensor<4x64x128xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  %h2 = moe.grouped_matmul %x, %w1, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x256x64xbf16>, tensor<5xi32> -> tensor<?x128xf32>
  %y2 = moe.grouped_matmul %h2, %w2, %offsets epilogue <none>
      {moe.panel_min_rows = 32 : i64}
      : tensor<?x128xf32>, tensor<4x64x128xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  %h3 = moe.grouped_matmul %x, %w3, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x160x64xbf16>, tensor<5xi32> -> tensor<?x80xf32>
  %y3 = moe.grouped_matmul %h3, %w4, %offsets epilogue <none>
      : tensor<?x80xf32>, tensor<4x64x80xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  return %y0, %y1, %y2, %y3
      : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}
