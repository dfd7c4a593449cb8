//===- moe-opt.cpp - the mlir-opt of the moe dialect ----------------------===//
//
// Parses, verifies and transforms IR that mixes the moe dialect with the
// upstream dialects, running any moe or upstream pass and pipeline.
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEPipelines();

  mlir::DialectRegistry registry;
  // Every upstream dialect and interface model (func, arith, math, tensor,
  // linalg, scf, memref, bufferization, vector, gpu, nvvm, llvm, transform,
  // ...), so moe IR can be combined with and lowered through any of them.
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  // gpu-module-to-binary translates device modules to LLVM IR.
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<mlir::moe::MoEDialect>();

  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moe-mlir optimizer driver\n", registry));
}
