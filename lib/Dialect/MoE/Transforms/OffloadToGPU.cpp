//===- OffloadToGPU.cpp - Host functions whose buffer work runs on a GPU --===//
//
// After bufferization every moe function is a flat sequence of buffer
// allocations, parallel loops, loop nests and scalar code. This pass keeps
// the host's part to what the host can do with device buffers (allocate,
// launch, copy, compute sizes) and moves everything that reads or writes
// buffer contents into `gpu.launch` regions, in program order:
//
//   * a top-level `scf.parallel` -> one launch over its iteration space;
//   * a maximal run of other memory-touching statements -> one launch of a
//     single thread (routing and plan loop nests are sequential by nature);
//   * scalars such a run hands back to the host travel through a
//     one-element device buffer and a copy.
//
// Launches on the default stream run in order, so the sequential semantics
// of the function is kept without extra synchronization.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEOFFLOADTOGPU
#define GEN_PASS_DEF_MOEMERGEGPUMODULES
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

/// Functions that launch their own kernels (see moe-lower-to-loops).
constexpr llvm::StringLiteral kLauncherAttr = "moe.gpu_launcher";

/// Threads per block of the launches made from parallel loops.
constexpr int64_t kBlockThreads = 256;

bool isIdentityBuffer(Value v) {
  auto type = dyn_cast<MemRefType>(v.getType());
  return type && type.getLayout().isIdentity();
}

/// Ops the host runs as they are: no memory access, no regions (scalar
/// arithmetic, `memref.dim`, views and casts of buffers).
bool isHostPure(Operation *op) {
  return op->getNumRegions() == 0 && isMemoryEffectFree(op) &&
         !isa<memref::GetGlobalOp>(op);
}

class FunctionOffloader {
public:
  explicit FunctionOffloader(func::FuncOp fn) : fn(fn) {}

  LogicalResult run() {
    Block &body = fn.getBody().front();
    SmallVector<Operation *> ops =
        llvm::map_to_vector(body, [](Operation &op) { return &op; });
    for (Operation *op : ops) {
      if (op->hasTrait<OpTrait::IsTerminator>()) {
        if (failed(closeRun()))
          return failure();
        freeHostAllocas(op);
        continue;
      }
      if (!pending.empty() && dependsOnRun(op) && isHostPure(op)) {
        pending.insert(op);
        continue;
      }
      if (isHostPure(op))
        continue;
      if (isLauncherCall(op)) {
        if (failed(closeRun()))
          return failure();
        continue;
      }
      if (isa<memref::AllocOp, memref::AllocaOp, memref::DeallocOp,
              memref::GetGlobalOp, scf::ParallelOp, memref::CopyOp>(op)) {
        if (auto par = dyn_cast<scf::ParallelOp>(op);
            par && (par.getNumResults() != 0 || par.getNumReductions() != 0)) {
          pending.insert(op);
          continue;
        }
        if (auto copy = dyn_cast<memref::CopyOp>(op);
            copy && !(isIdentityBuffer(copy.getSource()) &&
                      isIdentityBuffer(copy.getTarget()))) {
          pending.insert(op);
          continue;
        }
        if (failed(closeRun()))
          return failure();
        if (failed(rewriteHostOp(op)))
          return failure();
        continue;
      }
      pending.insert(op);
    }
    return success();
  }

private:
  /// A call of a function that launches its own kernels.
  bool isLauncherCall(Operation *op) {
    auto call = dyn_cast<func::CallOp>(op);
    if (!call)
      return false;
    auto callee = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
        call, call.getCalleeAttr());
    return callee && callee->hasAttr(kLauncherAttr);
  }

  bool dependsOnRun(Operation *op) {
    bool depends = false;
    op->walk([&](Operation *nested) {
      for (Value operand : nested->getOperands())
        if (Operation *def = operand.getDefiningOp())
          if (isInRun(def))
            depends = true;
    });
    return depends;
  }

  LogicalResult rewriteHostOp(Operation *op) {
    ImplicitLocOpBuilder b(op->getLoc(), op);
    if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
      auto dev = gpu::AllocOp::create(b, alloc.getType(), Type(), ValueRange{},
                                      alloc.getDynamicSizes(),
                                      alloc.getSymbolOperands(), UnitAttr());
      alloc.replaceAllUsesWith(dev.getMemref());
      alloc.erase();
      return success();
    }
    if (auto alloca = dyn_cast<memref::AllocaOp>(op)) {
      auto dev = gpu::AllocOp::create(b, alloca.getType(), Type(), ValueRange{},
                                      alloca.getDynamicSizes(),
                                      alloca.getSymbolOperands(), UnitAttr());
      alloca.replaceAllUsesWith(dev.getMemref());
      alloca.erase();
      hostAllocas.push_back(dev.getMemref());
      return success();
    }
    if (auto dealloc = dyn_cast<memref::DeallocOp>(op)) {
      gpu::DeallocOp::create(b, Type(), ValueRange{}, dealloc.getMemref());
      dealloc.erase();
      return success();
    }
    if (auto global = dyn_cast<memref::GetGlobalOp>(op)) {
      // The global is host memory: give the kernels a device copy.
      auto type = cast<MemRefType>(global.getType());
      if (!type.hasStaticShape() || !type.getLayout().isIdentity())
        return global.emitOpError("cannot be offloaded: only globals of a "
                                  "static identity-layout type can");
      auto dev = gpu::AllocOp::create(b, type, Type(), ValueRange{},
                                      ValueRange{}, ValueRange{}, UnitAttr());
      b.setInsertionPointAfter(global);
      auto copy = gpu::MemcpyOp::create(b, Type(), ValueRange{},
                                        dev.getMemref(), global.getResult());
      global.getResult().replaceAllUsesExcept(dev.getMemref(), copy);
      hostAllocas.push_back(dev.getMemref());
      return success();
    }
    if (auto copy = dyn_cast<memref::CopyOp>(op)) {
      gpu::MemcpyOp::create(b, Type(), ValueRange{}, copy.getTarget(),
                            copy.getSource());
      copy.erase();
      return success();
    }
    return launchParallel(cast<scf::ParallelOp>(op));
  }

  /// One thread per iteration of `par`, the last dimension fastest.
  LogicalResult launchParallel(scf::ParallelOp par) {
    ImplicitLocOpBuilder b(par.getLoc(), par);
    Value zero = arith::ConstantIndexOp::create(b, 0);
    Value one = arith::ConstantIndexOp::create(b, 1);
    SmallVector<Value> counts;
    Value total = one;
    for (auto [lb, ub, step] :
         llvm::zip(par.getLowerBound(), par.getUpperBound(), par.getStep())) {
      Value extent = arith::SubIOp::create(b, ub, lb);
      Value count = arith::MaxSIOp::create(
          b, arith::CeilDivSIOp::create(b, extent, step), zero);
      counts.push_back(count);
      total = arith::MulIOp::create(b, total, count);
    }
    Value threads = arith::ConstantIndexOp::create(b, kBlockThreads);
    // At least one block, so launches stay at the top level of the function
    // (one chain of asynchronous GPU operations, see gpu-async-region); the
    // threads past the end do nothing.
    Value blocks = arith::MaxUIOp::create(
        b, arith::CeilDivUIOp::create(b, total, threads), one);
    auto launch = gpu::LaunchOp::create(b, blocks, one, one, threads, one, one);
    b.setInsertionPointToEnd(&launch.getBody().front());
    Value id = arith::AddIOp::create(
        b, arith::MulIOp::create(b, launch.getBlockIds().x, threads),
        launch.getThreadIds().x);
    Value inside =
        arith::CmpIOp::create(b, arith::CmpIPredicate::ult, id, total);
    auto ifInside = scf::IfOp::create(b, inside, /*withElseRegion=*/false);
    gpu::TerminatorOp::create(b);
    b.setInsertionPoint(ifInside.thenBlock()->getTerminator());
    IRMapping mapping;
    Value rest = id;
    for (int64_t d = counts.size() - 1; d >= 0; --d) {
      Value i = d == 0 ? rest : arith::RemUIOp::create(b, rest, counts[d]);
      if (d != 0)
        rest = arith::DivUIOp::create(b, rest, counts[d]);
      Value iv =
          arith::AddIOp::create(b, par.getLowerBound()[d],
                                arith::MulIOp::create(b, i, par.getStep()[d]));
      mapping.map(par.getInductionVars()[d], iv);
    }
    for (Operation &op : par.getBody()->without_terminator())
      b.clone(op, mapping);
    par.erase();
    return success();
  }

  /// Moves the current run into a single-thread launch placed where its
  /// last statement was; scalars used after it come back through memory.
  LogicalResult closeRun() {
    if (pending.empty())
      return success();
    Operation *last = pending.back();
    ImplicitLocOpBuilder b(last->getLoc(), last);
    b.setInsertionPointAfter(last);
    // Results used outside the run.
    SmallVector<Value> escaping;
    for (Operation *op : pending)
      for (Value result : op->getResults())
        if (llvm::any_of(result.getUsers(),
                         [&](Operation *user) { return !isInRun(user); }))
          escaping.push_back(result);
    SmallVector<Value> slots;
    for (Value v : escaping) {
      Type type = v.getType();
      if (!type.isIntOrIndexOrFloat())
        return v.getDefiningOp()->emitOpError(
                   "cannot be offloaded: its result of type ")
               << type << " is needed on the host";
      auto slotType = MemRefType::get({1}, type);
      slots.push_back(gpu::AllocOp::create(b, slotType, Type(), ValueRange{},
                                           ValueRange{}, ValueRange{},
                                           UnitAttr())
                          .getMemref());
    }
    Value one = arith::ConstantIndexOp::create(b, 1);
    auto launch = gpu::LaunchOp::create(b, one, one, one, one, one, one);
    Block &kernel = launch.getBody().front();
    for (Operation *op : pending)
      op->moveBefore(&kernel, kernel.end());
    b.setInsertionPointToEnd(&kernel);
    Value zero = arith::ConstantIndexOp::create(b, 0);
    for (auto [v, slot] : llvm::zip(escaping, slots))
      memref::StoreOp::create(b, v, slot, ValueRange{zero});
    gpu::TerminatorOp::create(b);
    b.setInsertionPointAfter(launch);
    for (auto [v, slot] : llvm::zip(escaping, slots)) {
      auto hostType = MemRefType::get({1}, v.getType());
      Value host = memref::AllocaOp::create(b, hostType);
      gpu::MemcpyOp::create(b, Type(), ValueRange{}, host, slot);
      gpu::DeallocOp::create(b, Type(), ValueRange{}, slot);
      Value zeroHost = arith::ConstantIndexOp::create(b, 0);
      Value back = memref::LoadOp::create(b, host, ValueRange{zeroHost});
      v.replaceUsesWithIf(back, [&](OpOperand &use) {
        return !launch->isProperAncestor(use.getOwner());
      });
    }
    pending.clear();
    return success();
  }

  bool isInRun(Operation *user) {
    for (Operation *op = user; op; op = op->getParentOp())
      if (pending.contains(op))
        return true;
    return false;
  }

  void freeHostAllocas(Operation *terminator) {
    ImplicitLocOpBuilder b(terminator->getLoc(), terminator);
    for (Value buffer : hostAllocas)
      gpu::DeallocOp::create(b, Type(), ValueRange{}, buffer);
    hostAllocas.clear();
  }

  func::FuncOp fn;
  llvm::SetVector<Operation *> pending;
  SmallVector<Value> hostAllocas;
};

struct MoEOffloadToGPUPass
    : public mlir::moe::impl::MoEOffloadToGPUBase<MoEOffloadToGPUPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    for (auto fn : module.getOps<func::FuncOp>())
      if (fn->hasAttr(kLauncherAttr) && fn.isExternal() &&
          failed(moe::buildGPULauncherBody(fn)))
        return signalPassFailure();
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal() || fn->hasAttr(kLauncherAttr))
        continue;
      if (!fn.getBody().hasOneBlock()) {
        fn.emitOpError("cannot be offloaded: its body has several blocks");
        return signalPassFailure();
      }
      if (failed(FunctionOffloader(fn).run()))
        return signalPassFailure();
    }
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(&getContext()));
  }
};

struct MoEMergeGPUModulesPass
    : public mlir::moe::impl::MoEMergeGPUModulesBase<MoEMergeGPUModulesPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::GPUModuleOp> modules;
    for (auto gpuModule : module.getOps<gpu::GPUModuleOp>())
      if (!gpuModule.getTargetsAttr())
        modules.push_back(gpuModule);
    if (modules.size() < 2)
      return;
    gpu::GPUModuleOp target = modules.front();
    // (module, symbol) -> the symbol's name in `target`.
    llvm::DenseMap<std::pair<StringAttr, StringAttr>, StringAttr> renamed;
    SymbolTable targetSymbols(target);
    for (gpu::GPUModuleOp from : llvm::drop_begin(modules)) {
      for (Operation &op :
           llvm::make_early_inc_range(from.getBodyRegion().front())) {
        auto symbol = dyn_cast<SymbolOpInterface>(op);
        if (!symbol) {
          from.emitOpError("holds an op without a symbol name: cannot merge");
          return signalPassFailure();
        }
        StringAttr oldName = symbol.getNameAttr();
        op.remove();
        // Outlined kernels share their function's name: the symbol table
        // renames clashes (NAME_0, NAME_1, ...).
        StringAttr newName = targetSymbols.insert(&op);
        renamed[{from.getNameAttr(), oldName}] = newName;
      }
    }
    module.walk([&](gpu::LaunchFuncOp launch) {
      SymbolRefAttr kernel = launch.getKernel();
      auto it =
          renamed.find({kernel.getRootReference(), kernel.getLeafReference()});
      if (it == renamed.end())
        return;
      launch.setKernelAttr(SymbolRefAttr::get(
          target.getNameAttr(), {FlatSymbolRefAttr::get(it->second)}));
    });
    for (gpu::GPUModuleOp from : llvm::drop_begin(modules))
      from.erase();
  }
};

} // namespace
