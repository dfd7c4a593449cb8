//===- IRFuzzer.cpp - libFuzzer target: moe IR through the CPU pipeline ---===//
//
// Input: MLIR text. It is parsed and verified with the moe dialect and the
// upstream dialects moe IR is written with (func, arith, tensor); a module
// that verifies and holds only those ops is lowered through the whole CPU
// pipeline (without emitting code). Diagnostics are fine; a crash or a
// sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/Compiler.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <cstdint>
#include <string>

using namespace mlir;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 1 << 16)
    return 0;
  std::string text(reinterpret_cast<const char *>(data), size);
  DialectRegistry registry;
  moe::compiler::registerCompilerDialects(registry);
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  context.allowUnregisteredDialects(false);
  ScopedDiagnosticHandler quiet(&context, [](Diagnostic &) {
    return success();
  });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &context);
  if (!module || failed(verify(*module)))
    return 0;
  bool lowerable = true;
  module->walk([&](Operation *op) {
    StringRef ns = op->getDialect() ? op->getDialect()->getNamespace() : "";
    if (ns != "moe" && ns != "func" && ns != "arith" && ns != "tensor" &&
        ns != "builtin")
      lowerable = false;
  });
  if (!lowerable)
    return 0;
  if (llvm::Error e = moe::compiler::lowerToLLVM(*module, {},
                                                 /*cachingAllocator=*/false,
                                                 /*openmp=*/false))
    llvm::consumeError(std::move(e));
  return 0;
}
