// RUN: moe-opt --moe-approximate-vector-math --split-input-file %s | FileCheck %s --check-prefix=MATH
// RUN: moe-opt --convert-scf-to-openmp --moe-inline-alloca-scopes --split-input-file %s | FileCheck %s --check-prefix=SCOPE
// RUN: moe-opt --convert-scf-to-openmp --moe-inline-alloca-scopes --convert-scf-to-cf --split-input-file %s -o /dev/null

// Vector exp and erf become polynomials; the scalar exp (routing) stays.
// MATH-LABEL: func.func @math
// MATH-NOT: math.exp {{.*}} : vector<16xf32>
// MATH-NOT: math.erf
// MATH: math.exp %{{.*}} : f32
// MATH-NOT: math.exp
// MATH: return
func.func @math(%v: vector<16xf32>, %s: f32) -> (vector<16xf32>, vector<16xf32>, f32) {
  %0 = math.exp %v : vector<16xf32>
  %1 = math.erf %v : vector<16xf32>
  %2 = math.exp %s : f32
  return %0, %1, %2 : vector<16xf32>, vector<16xf32>, f32
}

// -----

// The scope convert-scf-to-openmp puts around a parallel body that
// allocates nothing is inlined, so the body's scf can become cf.
// SCOPE-LABEL: func.func @no_alloca
// SCOPE: omp.loop_nest
// SCOPE-NOT: memref.alloca_scope
// SCOPE: scf.for
// SCOPE: omp.yield
func.func @no_alloca(%m: memref<?xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %f = arith.constant 1.0 : f32
  scf.parallel (%i) = (%c0) to (%n) step (%c1) {
    scf.for %j = %c0 to %i step %c1 {
      memref.store %f, %m[%j] : memref<?xf32>
    }
    scf.reduce
  }
  return
}

// -----

// A scope that does allocate on the stack is kept.
// SCOPE-LABEL: func.func @with_alloca
// SCOPE: omp.loop_nest
// SCOPE: memref.alloca_scope
// SCOPE: memref.alloca
func.func @with_alloca(%m: memref<?xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.parallel (%i) = (%c0) to (%n) step (%c1) {
    %t = memref.alloca() : memref<4xf32>
    %v = memref.load %t[%c0] : memref<4xf32>
    memref.store %v, %m[%i] : memref<?xf32>
    scf.reduce
  }
  return
}
