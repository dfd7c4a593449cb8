// RUN: moe-opt --moe-cpu-pipeline %moe_src_root/examples/mixtral_layer.mlir | FileCheck %s

// The whole pipeline takes the default example to the LLVM dialect: no moe,
// tensor, memref, scf or linalg op is left, buffers are freed, the expert
// GEMMs' work items are OpenMP work-sharing loops, and their SwiGLU exp is
// a polynomial (no vector math op reaches LLVM).
// CHECK: llvm.func @mixtral_moe(
// CHECK-NOT: moe.
// CHECK-NOT: tensor.
// CHECK-NOT: linalg.
// CHECK-NOT: scf.
// CHECK-NOT: math.
// CHECK-NOT: memref.alloca_scope
// CHECK: omp.parallel
// CHECK: omp.wsloop
// CHECK: llvm.call @free
