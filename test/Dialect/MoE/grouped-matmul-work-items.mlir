// RUN: moe-opt --moe-lower-to-loops --split-input-file %s | FileCheck %s --check-prefix=DEFAULT
// RUN: moe-opt --moe-lower-to-loops="column-chunks=7 panel-min-rows=9" --split-input-file %s \
// RUN:   | FileCheck %s --check-prefix=OPTION
// RUN: moe-opt --moe-lower-to-loops="amx-bf16=1" --split-input-file %s \
// RUN:   | FileCheck %s --check-prefix=AMX
// RUN: not moe-opt --moe-lower-to-loops="column-chunks=0" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD-OPTION
// RUN: not moe-opt --moe-cpu-pipeline="column-chunks=-3" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD-PIPELINE
// RUN: not moe-opt --moe-lower-to-loops="panel-min-rows=-1" %s 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD-MIN-ROWS
// RUN: moe-opt --moe-apply-schedule="schedule=%moe_src_root/schedules/panel-kernel-only.mlir" \
// RUN:   --moe-lower-to-loops --split-input-file %s | FileCheck %s --check-prefix=ONE-KERNEL
// Bad attributes: grouped-matmul-tile-invalid.mlir.

// BAD-OPTION: error: work item options must be positive 32-bit integers (0 for the target's panel-min-rows), not column-chunks=0 panel-min-rows=0
// BAD-PIPELINE: error: work item options must be positive 32-bit integers (0 for the target's panel-min-rows), not column-chunks=-3 panel-min-rows=0
// BAD-MIN-ROWS: error: work item options must be positive 32-bit integers (0 for the target's panel-min-rows), not column-chunks=4 panel-min-rows=-1
// schedules/panel-kernel-only.mlir sends every expert, f32 or bf16, to the
// panel kernel (a threshold of 1 row).
// ONE-KERNEL-LABEL: func.func @items
// ONE-KERNEL:       %[[MIN:.*]] = arith.constant 1 : index
// ONE-KERNEL:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// ONE-KERNEL-LABEL: func.func @items_bf16
// ONE-KERNEL:       %[[MIN:.*]] = arith.constant 1 : index
// ONE-KERNEL:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index

// The expert GEMM's work items are (chunk of column blocks, expert)
// pairs, chunk major: 4 chunks by default (CPUTargetModel; the drivers
// give max(4, cores) for the host), each ceil(blocks / 4) column blocks.
// Experts with at least 5 rows (more than one 4-row block of the decode
// kernel) take the panel kernel (they are given panels when packed, and
// the work item takes the panel branch); the others the decode kernel.
// DEFAULT-LABEL: func.func @items
// DEFAULT:       %[[MIN:.*]] = arith.constant 5 : index
// DEFAULT:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// DEFAULT:       %[[C4:.*]] = arith.constant 4 : index
// DEFAULT:       %[[CHUNK:.*]] = arith.divui %{{.*}}, %[[C4]] : index
// DEFAULT:       %[[ITEMS:.*]] = arith.muli %c4{{.*}}, %c4{{.*}} : index
// DEFAULT:       scf.parallel (%[[ITEM:.*]]) = (%c0) to (%[[ITEMS]])
// DEFAULT:         %[[E:.*]] = arith.remui %[[ITEM]], %c4 : index
// DEFAULT:         %[[CI:.*]] = arith.divui %[[ITEM]], %c4 : index
// DEFAULT:         %[[JB:.*]] = arith.muli %[[CI]], %[[CHUNK]] : index
// DEFAULT:         arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// The options: 7 chunks, and a threshold of 9 rows.
// OPTION-LABEL: func.func @items
// OPTION:       %[[MIN:.*]] = arith.constant 9 : index
// OPTION:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// OPTION:       %[[C7:.*]] = arith.constant 7 : index
// OPTION:       arith.divui %{{.*}}, %[[C7]] : index
// OPTION:       %[[C7B:.*]] = arith.constant 7 : index
// OPTION:       %[[ITEMS:.*]] = arith.muli %[[C7B]], %c4 : index
// OPTION:       scf.parallel (%{{.*}}) = (%c0) to (%[[ITEMS]])
// OPTION:         arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// With AMX tiles f32 weights keep the default of 5 (AMX is bf16 only).
// AMX-LABEL: func.func @items
// AMX:       arith.constant 5 : index
func.func @items(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                 %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}

// -----

// bf16 weights on AMX tiles keep a threshold of 16 rows (their panels are
// 32 rows); without AMX they take 5, like f32.
// DEFAULT-LABEL: func.func @items_bf16
// DEFAULT:       %[[MIN:.*]] = arith.constant 5 : index
// DEFAULT:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// AMX-LABEL: func.func @items_bf16
// AMX:       %[[MIN:.*]] = arith.constant 16 : index
// AMX:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
func.func @items_bf16(%x: tensor<?x64xf32>, %w: tensor<4x96x64xbf16>,
                      %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x96x64xbf16>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}

// -----

// An op's own attributes override both options.
// DEFAULT-LABEL: func.func @annotated
// DEFAULT:       %[[MIN:.*]] = arith.constant 1 : index
// DEFAULT:       arith.cmpi sge, %{{.*}}, %[[MIN]] : index
// DEFAULT:       %[[C3:.*]] = arith.constant 3 : index
// DEFAULT:       arith.divui %{{.*}}, %[[C3]] : index
// DEFAULT:       %[[ITEMS:.*]] = arith.muli %c3{{.*}}, %c4 : index
// DEFAULT:       scf.parallel (%{{.*}}) = (%c0) to (%[[ITEMS]])
// OPTION-LABEL: func.func @annotated
// OPTION:       arith.constant 1 : index
// OPTION:       %[[ITEMS:.*]] = arith.muli %c3{{.*}}, %c4 : index
// OPTION:       scf.parallel (%{{.*}}) = (%c0) to (%[[ITEMS]])
func.func @annotated(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                     %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.column_chunks = 3 : i64, moe.panel_min_rows = 1 : i64}
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}
