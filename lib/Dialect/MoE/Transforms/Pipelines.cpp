//===- Pipelines.cpp - Named pass pipelines of moe-mlir -------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

std::string mlir::moe::getMoECPUPipeline(bool genericAllocation,
                                         bool openmp) {
  // Pass names are given bare: the manager this is parsed into is already
  // anchored on builtin.module.
  std::string finalize = genericAllocation
                             ? "finalize-memref-to-llvm{use-generic-functions},"
                             : "finalize-memref-to-llvm,";
  return std::string("moe-expand-layer,"
         "moe-lower-to-loops,"
         "moe-approximate-vector-math,"
         "canonicalize,cse,"
         "one-shot-bufferize{bufferize-function-boundaries "
         "function-boundary-type-conversion=identity-layout-map},"
         "buffer-deallocation-pipeline,") +
         (openmp ? "convert-scf-to-openmp,moe-inline-alloca-scopes," : "") +
         std::string("convert-linalg-to-loops,"
         "convert-scf-to-cf,"
         "expand-strided-metadata,"
         "lower-affine,"
         "convert-math-to-llvm,"
         "convert-math-to-libm,"
         "convert-vector-to-llvm{reassociate-fp-reductions},") +
         finalize + "convert-to-llvm,reconcile-unrealized-casts";
}

LogicalResult mlir::moe::buildMoECPUPipeline(OpPassManager &pm,
                                            bool genericAllocation,
                                            bool openmp) {
  return parsePassPipeline(getMoECPUPipeline(genericAllocation, openmp), pm,
                           llvm::errs());
}

void mlir::moe::registerMoEPipelines() {
  PassPipelineRegistration<>(
      "moe-cpu-pipeline",
      "Lower moe IR on tensors to the LLVM dialect for the CPU "
      "(expand, lower to loops, bufferize, convert to LLVM)",
      [](OpPassManager &pm) {
        if (failed(buildMoECPUPipeline(pm)))
          llvm::report_fatal_error("invalid built-in moe-cpu-pipeline");
      });
}
