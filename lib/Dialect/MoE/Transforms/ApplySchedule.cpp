//===- ApplySchedule.cpp - Run a transform-dialect schedule file ----------===//
//
// moe-apply-schedule: parses a schedule file for each run and applies its
// @__transform_main to the module (see Passes.td).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Transform/IR/TransformDialect.h"
#include "mlir/Dialect/Transform/Interfaces/TransformInterfaces.h"
#include "mlir/Dialect/Transform/Transforms/TransformInterpreterUtils.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEAPPLYSCHEDULE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

struct ApplySchedulePass
    : public moe::impl::MoEApplyScheduleBase<ApplySchedulePass> {
  using MoEApplyScheduleBase::MoEApplyScheduleBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (schedule.empty()) {
      emitError(module.getLoc(), "moe-apply-schedule needs a schedule file");
      return signalPassFailure();
    }
    OwningOpRef<ModuleOp> library;
    if (failed(transform::detail::parseTransformModuleFromFile(
            &getContext(), schedule, library)))
      return signalPassFailure();
    StringRef entry =
        transform::TransformDialect::kTransformEntryPointSymbolName;
    transform::TransformOpInterface main =
        transform::detail::findTransformEntryPoint(library.get(), ModuleOp(),
                                                   entry);
    if (!main) {
      emitError(library->getLoc())
          << "the schedule has no transform.named_sequence @" << entry;
      return signalPassFailure();
    }
    if (failed(transform::applyTransformNamedSequence(
            module, main, library.get(), transform::TransformOptions())))
      return signalPassFailure();
  }
};

} // namespace
