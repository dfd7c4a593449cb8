// RUN: moe-opt %s --moe-merge-gpu-modules --split-input-file --verify-diagnostics --allow-unregistered-dialect | FileCheck %s

// Outlined kernels that share a function name end up in one gpu.module,
// renamed apart, and every launch follows its kernel.

// CHECK: gpu.module @k
// CHECK:   gpu.func @k() kernel
// CHECK:   gpu.func @k_0() kernel
// CHECK-NOT: gpu.module
// CHECK-LABEL: func.func @host
// CHECK: gpu.launch_func @k::@k
// CHECK: gpu.launch_func @k::@k_0
// CHECK: gpu.launch_func @k::@k
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @k() kernel {
      gpu.return
    }
  }
  gpu.module @k_0 {
    gpu.func @k() kernel {
      gpu.return
    }
  }
  func.func @host() {
    %c1 = arith.constant 1 : index
    gpu.launch_func @k::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    gpu.launch_func @k_0::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    gpu.launch_func @k::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1)
    return
  }
}

// -----

// Only symbols can move: anything else in a kernel module is an error.
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @k() kernel {
      gpu.return
    }
  }
  // expected-error @below {{holds an op without a symbol name: cannot merge}}
  gpu.module @k_0 {
    "test.unregistered"() : () -> ()
  }
}
