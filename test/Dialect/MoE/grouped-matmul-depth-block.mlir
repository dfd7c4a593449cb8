// RUN: moe-opt --moe-lower-to-loops %s | FileCheck %s --check-prefix=DEFAULT
// RUN: moe-opt --moe-lower-to-loops="depth-block=16" %s \
// RUN:   | FileCheck %s --check-prefix=OPTION
// RUN: moe-opt --moe-lower-to-loops="llc-bytes=8388608" %s \
// RUN:   | FileCheck %s --check-prefix=SMALL-LLC
// RUN: moe-opt --moe-lower-to-loops="l2-bytes=2097152" %s \
// RUN:   | FileCheck %s --check-prefix=BIG-L2
// RUN: not moe-opt --moe-lower-to-loops="l2-bytes=0" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD-CACHE

// BAD-CACHE: error: cache sizes must be positive, not llc-bytes=33554432 l2-bytes=0

// Blocks of k in the panel kernel. By default only a depth whose 32-row
// panels do not fit two at a time in the 512 KB panel block (more than
// 2048 steps), of experts whose weights take at least 32 MB, is taken in
// blocks of 1024 steps; the sums of the blocks before the last wait in a
// buffer of one vector per accumulator and (panel of the panel block,
// column block of the chunk), allocated by each work item (so its size
// does not depend on the token count), and the epilogue runs after the
// last block.
// DEFAULT-LABEL: func.func @deep
// DEFAULT:       arith.constant 524288 : index
// DEFAULT:       scf.parallel
// DEFAULT:         scf.if
// DEFAULT:           %[[PARTIAL:.*]] = memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x24x16xf32>
// DEFAULT:       scf.for %[[KB:.*]] = %c0{{.*}} to
// DEFAULT:         arith.cmpi eq, %[[KB]], %c0
// DEFAULT:         scf.if {{.*}} -> (vector<16xf32>
// DEFAULT:           vector.load %[[PARTIAL]]
// DEFAULT:         arith.cmpi eq, %[[KB]]
// DEFAULT-NEXT:    scf.if
// DEFAULT:           math.exp
// DEFAULT:         } else {
// DEFAULT:           vector.store %{{.*}}, %[[PARTIAL]]
// Panel blocks are half the L2 (1 MiB unless l2-bytes says otherwise):
// with a 2 MiB L2 a block holds two panels of depth 4096 whole, so there
// are no blocks of k.
// BIG-L2-LABEL: func.func @deep
// BIG-L2:       arith.constant 1048576 : index
// BIG-L2-NOT:   memref<?x?x24x16xf32>
// BIG-L2:       return
func.func @deep(%x: tensor<?x4096xf32>, %w: tensor<4x2048x4096xf32>,
                %offsets: tensor<5xi32>) -> tensor<?x1024xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x4096xf32>, tensor<4x2048x4096xf32>, tensor<5xi32> -> tensor<?x1024xf32>
  return %h : tensor<?x1024xf32>
}

// The same depth with 16 MB per expert: its weights can stay in the
// last-level cache (32 MiB unless llc-bytes says otherwise) between
// panels, and blocks of k only cost. With an 8 MiB cache they cannot.
// DEFAULT-LABEL: func.func @cached
// DEFAULT-NOT:   memref<?x?x24x16xf32>
// DEFAULT:       return
// SMALL-LLC-LABEL: func.func @cached
// SMALL-LLC:       memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x24x16xf32>
// SMALL-LLC:       return
func.func @cached(%x: tensor<?x4096xf32>, %w: tensor<4x1024x4096xf32>,
                  %offsets: tensor<5xi32>) -> tensor<?x512xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x4096xf32>, tensor<4x1024x4096xf32>, tensor<5xi32> -> tensor<?x512xf32>
  return %h : tensor<?x512xf32>
}

// Two panels of depth 2048 fit (64 MB per expert): one block, no partial sums (the kernel of
// before k blocks). With depth-block=16 the pass option blocks it too.
// DEFAULT-LABEL: func.func @fits
// DEFAULT-NOT:   memref<?x?x24x16xf32>
// DEFAULT:       return
// OPTION-LABEL:  func.func @fits
// OPTION:        memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x24x16xf32>
func.func @fits(%x: tensor<?x2048xf32>, %w: tensor<4x8192x2048xf32>,
                %offsets: tensor<5xi32>) -> tensor<?x4096xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x2048xf32>, tensor<4x8192x2048xf32>, tensor<5xi32> -> tensor<?x4096xf32>
  return %h : tensor<?x4096xf32>
}

// An op's own moe.depth_block (e.g. set by a schedule's transform.annotate)
// overrides the default, here on a depth of 64 and bf16 weights (steps are
// pairs of k): partial sums for its 2 x 12 tile.
// DEFAULT-LABEL: func.func @own_blocks
// DEFAULT:       memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?x?x24x16xf32>
// OPTION-LABEL:  func.func @own_blocks
func.func @own_blocks(%x: tensor<?x64xf32>, %w: tensor<4x48x64xbf16>,
                      %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <none> {moe.depth_block = 8 : i64}
      : tensor<?x64xf32>, tensor<4x48x64xbf16>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}
