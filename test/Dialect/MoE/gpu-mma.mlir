// RUN: moe-opt --moe-lower-to-loops="gpu gpu-mma" %s --split-input-file | FileCheck %s --check-prefix=CONFIG
// RUN: moe-opt --moe-lower-to-loops=gpu %s --split-input-file | FileCheck %s --check-prefix=NOMMA
// RUN: moe-opt %s --split-input-file --pass-pipeline="builtin.module(moe-lower-to-loops{gpu gpu-mma},one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map},convert-linalg-to-parallel-loops,moe-offload-to-gpu)" | FileCheck %s --check-prefix=KERNEL
// RUN: moe-opt %s --split-input-file --moe-nvptx-pipeline="chip=sm_80 format=isa mma=1" | FileCheck %s --check-prefix=PTX
// RUN: not moe-opt --moe-lower-to-loops=gpu-mma %s --split-input-file 2>&1 | FileCheck %s --check-prefix=NOGPU
// NOGPU: error: gpu-mma applies to the GPU forms: add gpu

// Tensor-core tiles (--moe-lower-to-loops=gpu-mma): only grouped matmuls
// with bf16 weights take them; the launcher configuration says so.
// CONFIG-LABEL: func.func @glu_bf16
// CONFIG: func.func private @__moe_gpu_grouped_matmul(
// CONFIG-SAME: moe.gpu_launcher = {epilogue = #moe.epilogue<silu_glu>, gather = true, kind = "grouped_matmul", mma = true, num_experts = 4 : i64, row_scale = false}
// NOMMA-LABEL: func.func @glu_bf16
// NOMMA-NOT: mma = true
// NOMMA-LABEL: func.func @scale_bf16

// The tiled kernel: three [64 x 20] i32 tiles (words of two bf16 values,
// rows padded by 4 words) for tokens, gate and up rows; 32-deep steps; the
// tokens rounded to bf16 and packed as they are staged; per step each warp
// issues 2 x (2 x 2) mma.sync per weight set, 16 for silu_glu. The decode
// kernel still widens each weight and uses FMAs.
// KERNEL-LABEL: func.func private @__moe_gpu_grouped_matmul(
// KERNEL: gpu.launch
// KERNEL-SAME: workgroup(%{{.*}} : memref<64x20xi32, #gpu.address_space<workgroup>>, %{{.*}} : memref<64x20xi32, #gpu.address_space<workgroup>>, %{{.*}} : memref<64x20xi32, #gpu.address_space<workgroup>>)
// KERNEL: scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c32{{(_[0-9]+)?}} iter_args({{.*}}) -> (f32, f32,
// KERNEL: arith.truncf %{{.*}} : f32 to bf16
// KERNEL: arith.bitcast %{{.*}} : bf16 to i16
// KERNEL: arith.shli
// KERNEL: memref.store %{{.*}} : memref<64x20xi32, #gpu.address_space<workgroup>>
// KERNEL: gpu.barrier
// KERNEL-COUNT-16: nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// KERNEL-NOT: nvvm.mma.sync
// KERNEL: gpu.barrier
// KERNEL: gpu.launch
// KERNEL-NOT: nvvm.mma.sync
// KERNEL: arith.extf %{{.*}} : bf16 to f32
// KERNEL: math.fma
// PTX-LABEL: llvm.func @glu_bf16
// PTX-COUNT-16: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// PTX-NOT: mma.sync
func.func @glu_bf16(%x: tensor<?x64xf32>, %w: tensor<4x96x64xbf16>,
                    %offsets: tensor<5xi32>, %perm: tensor<?xi32>) -> tensor<?x48xf32> {
  %y = moe.grouped_matmul %x, %w, %offsets gather(%perm : tensor<?xi32>) epilogue <silu_glu>
      : tensor<?x64xf32>, tensor<4x96x64xbf16>, tensor<5xi32> -> tensor<?x48xf32>
  return %y : tensor<?x48xf32>
}

// -----

// One weight set: 8 mma.sync per step; the row scale is applied to the
// registers. f32 weights (the gate here) keep the FMA kernel.
// CONFIG-LABEL: func.func @scale_bf16
// CONFIG: func.func private @__moe_gpu_grouped_matmul(
// CONFIG-SAME: mma = true
// CONFIG: func.func private @__moe_gpu_grouped_matmul_0(
// CONFIG-NOT: mma = true
// CONFIG-SAME: num_experts = 1
// KERNEL-LABEL: func.func private @__moe_gpu_grouped_matmul(
// KERNEL-SAME: memref<?xf32>
// KERNEL-SAME: moe.gpu_launcher
// KERNEL-SAME: row_scale = true
// KERNEL-COUNT-8: nvvm.mma.sync
// KERNEL-NOT: nvvm.mma.sync
// KERNEL: arith.mulf
// KERNEL-LABEL: func.func private @__moe_gpu_grouped_matmul_0(
// KERNEL-NOT: nvvm.mma.sync
// KERNEL: return
// PTX-LABEL: llvm.func @scale_bf16
// PTX-COUNT-8: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// PTX-NOT: mma.sync
func.func @scale_bf16(%x: tensor<?x48xf32>, %w: tensor<4x64x48xbf16>,
                      %offsets: tensor<5xi32>, %scale: tensor<?xf32>,
                      %wg: tensor<4x48xf32>) -> (tensor<?x64xf32>, tensor<?x4xf32>) {
  %y = moe.grouped_matmul %x, %w, %offsets row_scale(%scale : tensor<?xf32>) epilogue <scale>
      : tensor<?x48xf32>, tensor<4x64x48xbf16>, tensor<5xi32> -> tensor<?x64xf32>
  %logits = moe.gate %x, %wg : tensor<?x48xf32>, tensor<4x48xf32> -> tensor<?x4xf32>
  return %y, %logits : tensor<?x64xf32>, tensor<?x4xf32>
}
