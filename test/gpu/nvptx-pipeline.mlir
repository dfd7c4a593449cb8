// RUN: moe-opt %S/../aot/Inputs/mixtral_t1_layer.mlir --moe-nvptx-pipeline="chip=sm_80 format=isa" | FileCheck %s
// RUN: not moe-opt %S/../aot/Inputs/mixtral_t1_layer.mlir --moe-nvptx-pipeline="chip=sm_70" 2>&1 | FileCheck --check-prefix=BADCHIP %s

// The whole layer lowers to host code in the LLVM dialect that launches
// kernels of one PTX module, PTX 8.0 for sm_80; the kernels use no vector
// types and the host touches device buffers only through the runtime.
// CHECK: module attributes {gpu.container_module}
// CHECK: llvm.func @mixtral_t1(
// CHECK: llvm.call @mgpuStreamCreate()
// CHECK: llvm.call @mgpuMemAlloc(
// CHECK: gpu.launch_func <%{{.*}} : !llvm.ptr> @mixtral_t1_kernel::@mixtral_t1_kernel{{(_[0-9]+)?}} blocks in
// CHECK-NOT: gpu.module
// CHECK: gpu.binary @mixtral_t1_kernel
// CHECK-SAME: #nvvm.target<O = 3, chip = "sm_80", features = "+ptx80">
// CHECK-SAME: .version 8.0
// CHECK-SAME: .target sm_80
// CHECK-SAME: .entry mixtral_t1_kernel(
// CHECK-NOT: gpu.binary

// BADCHIP: Cannot find option named 'sm_70'
