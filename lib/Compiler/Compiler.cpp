//===- Compiler.cpp - Lower, wrap, JIT or emit moe layer modules ----------===//

#include "moe/Compiler/Compiler.h"

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Verifier.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Memory.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/Threading.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Transforms/Instrumentation/AddressSanitizer.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <vector>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;

void mlir::moe::compiler::registerCompilerDialects(DialectRegistry &registry) {
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  registry.insert<MoEDialect>();
}

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

void registerPassesOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    registerAllPasses();
    registerMoEPasses();
  });
}

//===----------------------------------------------------------------------===//
// C entry wrappers (LLVM dialect)
//===----------------------------------------------------------------------===//

/// Builds `int32_t NAME(const void *const *w, const moe_batch *batch,
/// void *out)`: checks the arguments, expands every buffer into the memref
/// descriptor fields the lowered inner function takes, and calls it.
constexpr llvm::StringLiteral kTakeError = "moe_cuda_take_error";
constexpr llvm::StringLiteral kPeekError = "moe_cuda_peek_error";

class WrapperBuilder {
public:
  WrapperBuilder(ImplicitLocOpBuilder &b) : b(b) {}

  void build(StringRef publicName, StringRef innerName, ArrayRef<EntryArg> args,
             bool routeEntry, bool device = false) {
    MLIRContext *ctx = b.getContext();
    auto ptr = LLVM::LLVMPointerType::get(ctx);
    i64 = b.getI64Type();
    auto fnType = LLVM::LLVMFunctionType::get(b.getI32Type(), {ptr, ptr, ptr});
    auto fn = LLVM::LLVMFuncOp::create(b, publicName, fnType);
    Block *entry = fn.addEntryBlock(b);
    Block *fail = fn.addBlock();
    Block *call = fn.addBlock();
    fail->addArgument(b.getI32Type(), b.getLoc());
    b.setInsertionPointToStart(entry);
    Value weights = entry->getArgument(0), batch = entry->getArgument(1),
          out = entry->getArgument(2);
    // The weights, the batch and (for the route entry) the routing table
    // are dereferenced unconditionally; `y` only when there are tokens.
    nullBad = isNull(weights);
    nullBad = orI(nullBad, isNull(batch));
    if (routeEntry)
      nullBad = orI(nullBad, isNull(out));
    shapeBad = constI1(false);
    // Nothing is loaded through a null batch: the loads below run only in
    // the `call` block, after the checks.
    Value anyNull = nullBad;
    Value status0 = select(anyNull, constI32(StatusNullPointer), constI32(0));
    Value early = icmp(LLVM::ICmpPredicate::ne, status0, constI32(0));
    Block *checks = fn.addBlock();
    LLVM::CondBrOp::create(b, early, fail, ValueRange{status0}, checks,
                           ValueRange{});

    b.setInsertionPointToStart(checks);
    nullBad = constI1(false);
    numTokens = loadField(batch, 0, i64);
    shapeBad = icmp(LLVM::ICmpPredicate::slt, numTokens, constI64(0));
    Value some = icmp(LLVM::ICmpPredicate::sgt, numTokens, constI64(0));
    SmallVector<Value> operands;
    for (const EntryArg &arg : args) {
      switch (arg.source) {
      case ArgSource::BatchX:
        expand(loadField(batch, 1, ptr), arg, some, operands);
        break;
      case ArgSource::BatchTokenIds:
        expand(loadField(batch, 2, ptr), arg, some, operands);
        break;
      case ArgSource::SequenceLength: {
        Value seq = loadField(batch, 3, i64);
        shapeBad =
            orI(shapeBad, icmp(LLVM::ICmpPredicate::slt, seq, constI64(0)));
        Value whole = LLVM::SelectOp::create(b, some, numTokens, constI64(1));
        seq = select(icmp(LLVM::ICmpPredicate::sle, seq, constI64(0)), whole,
                     seq);
        Value rem = LLVM::SRemOp::create(b, numTokens, seq);
        shapeBad =
            orI(shapeBad, icmp(LLVM::ICmpPredicate::ne, rem, constI64(0)));
        operands.push_back(seq);
        break;
      }
      case ArgSource::BatchGroups: {
        numGroups = loadField(batch, 5, i64);
        shapeBad = orI(shapeBad,
                       icmp(LLVM::ICmpPredicate::slt, numGroups, constI64(1)));
        expand(loadField(batch, 4, ptr), arg, constI1(true), operands);
        break;
      }
      case ArgSource::Weight:
        expand(loadField(weights, arg.field, ptr), arg, constI1(true),
               operands);
        break;
      case ArgSource::Output:
        expand(out, arg, some, operands);
        break;
      case ArgSource::Routing:
        // Per-token arrays may be null when there are no tokens.
        expand(loadField(out, arg.field, ptr), arg,
               arg.shape.empty() || arg.shape[0].kind != DimSpec::Tokens
                   ? constI1(true)
                   : some,
               operands);
        break;
      }
    }
    Value status =
        select(nullBad, constI32(StatusNullPointer),
               select(shapeBad, constI32(StatusBadShape), constI32(0)));
    Value bad = icmp(LLVM::ICmpPredicate::ne, status, constI32(0));
    LLVM::CondBrOp::create(b, bad, fail, ValueRange{status}, call,
                           ValueRange{});

    b.setInsertionPointToStart(fail);
    LLVM::ReturnOp::create(b, fail->getArgument(0));

    b.setInsertionPointToStart(call);
    // GPU code: the runtime's pending error is cleared before the call and
    // turns the status into StatusDeviceError after it, staying pending for
    // the caller to read the reason (moe_cuda_take_error).
    if (device)
      LLVM::CallOp::create(b, TypeRange{b.getI32Type()}, kTakeError,
                           ValueRange{});
    Value result =
        LLVM::CallOp::create(b, TypeRange{b.getI32Type()}, innerName, operands)
            .getResult();
    if (device) {
      Value error = LLVM::CallOp::create(b, TypeRange{b.getI32Type()},
                                         kPeekError, ValueRange{})
                        .getResult();
      result = select(icmp(LLVM::ICmpPredicate::ne, error, constI32(0)),
                      constI32(StatusDeviceError), result);
    }
    LLVM::ReturnOp::create(b, result);
  }

private:
  Value constI64(int64_t v) {
    return LLVM::ConstantOp::create(b, i64, b.getI64IntegerAttr(v));
  }
  Value constI32(int32_t v) {
    return LLVM::ConstantOp::create(b, b.getI32Type(), b.getI32IntegerAttr(v));
  }
  Value constI1(bool v) {
    return LLVM::ConstantOp::create(b, b.getI1Type(), b.getBoolAttr(v));
  }
  Value icmp(LLVM::ICmpPredicate p, Value x, Value y) {
    return LLVM::ICmpOp::create(b, p, x, y);
  }
  Value orI(Value x, Value y) { return LLVM::OrOp::create(b, x, y); }
  Value select(Value c, Value x, Value y) {
    return LLVM::SelectOp::create(b, c, x, y);
  }
  Value isNull(Value p) {
    Value null = LLVM::ZeroOp::create(b, p.getType());
    return icmp(LLVM::ICmpPredicate::eq, p, null);
  }
  /// Loads the 8-byte field `index` of a struct of pointers and int64s.
  Value loadField(Value base, int64_t index, Type type) {
    auto ptr = LLVM::LLVMPointerType::get(b.getContext());
    Value addr = LLVM::GEPOp::create(b, ptr, b.getI8Type(), base,
                                     ArrayRef<LLVM::GEPArg>{index * 8});
    return LLVM::LoadOp::create(b, type, addr);
  }
  /// Appends the descriptor fields of a dense row-major buffer at `data`;
  /// a null `data` is an error when `required` holds.
  void expand(Value data, const EntryArg &arg, Value required,
              SmallVectorImpl<Value> &operands) {
    nullBad = orI(nullBad, LLVM::AndOp::create(b, isNull(data), required));
    operands.push_back(data); // allocated
    operands.push_back(data); // aligned
    operands.push_back(constI64(0));
    SmallVector<Value> sizes;
    for (const DimSpec &dim : arg.shape) {
      if (dim.kind == DimSpec::Static)
        sizes.push_back(constI64(dim.extent));
      else if (dim.kind == DimSpec::Tokens)
        sizes.push_back(numTokens);
      else
        sizes.push_back(LLVM::AddOp::create(b, numGroups, constI64(1)));
    }
    SmallVector<Value> strides(sizes.size());
    Value stride = constI64(1);
    for (int64_t i = sizes.size() - 1; i >= 0; --i) {
      strides[i] = stride;
      stride = LLVM::MulOp::create(b, stride, sizes[i]);
    }
    llvm::append_range(operands, sizes);
    llvm::append_range(operands, strides);
  }

  ImplicitLocOpBuilder &b;
  Type i64;
  Value nullBad, shapeBad, numTokens, numGroups;
};

//===----------------------------------------------------------------------===//
// Buffer allocation
//===----------------------------------------------------------------------===//

/// The allocator behind `_mlir_memref_to_llvm_alloc/free` in every compiled
/// module: blocks are malloc'ed in power-of-two size classes (a 64-byte
/// header holds the class) and, when freed, parked in a small lock-free
/// cache (4 blocks per class, claimed with atomic exchange / compare-and-
/// swap) instead of going back to malloc. glibc returns large blocks to
/// the kernel on free, so without the cache every call of a layer paid page
/// faults on fresh memory for its temporaries (8x the run time of a
/// 1024-token OLMoE-sized layer here). The cache keeps at most 4 blocks per
/// class while the code is loaded: a global destructor frees them when the
/// program exits, the shared object is unloaded or the JIT engine holding
/// the code is destroyed. The functions are internal to each module, so
/// several compiled objects link together.
constexpr llvm::StringLiteral kCachingAllocator = R"mlir(
llvm.func @malloc(i64) -> !llvm.ptr
llvm.func @free(!llvm.ptr)
llvm.mlir.global internal @__moe_block_cache() {addr_space = 0 : i32} : !llvm.array<256 x ptr> {
  %0 = llvm.mlir.zero : !llvm.array<256 x ptr>
  llvm.return %0 : !llvm.array<256 x ptr>
}
llvm.func internal @_mlir_memref_to_llvm_alloc(%size: i64) -> !llvm.ptr {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c4 = llvm.mlir.constant(4 : i64) : i64
  %c64 = llvm.mlir.constant(64 : i64) : i64
  %null = llvm.mlir.zero : !llvm.ptr
  %cache = llvm.mlir.addressof @__moe_block_cache : !llvm.ptr
  %total = llvm.add %size, %c64 : i64
  %m1 = llvm.sub %total, %c1 : i64
  %lz = "llvm.intr.ctlz"(%m1) <{is_zero_poison = false}> : (i64) -> i64
  %cls = llvm.sub %c64, %lz : i64
  %first = llvm.mul %cls, %c4 : i64
  llvm.br ^probe(%c0 : i64)
^probe(%s: i64):
  %done = llvm.icmp "eq" %s, %c4 : i64
  llvm.cond_br %done, ^fresh, ^try
^try:
  %i = llvm.add %first, %s : i64
  %slot = llvm.getelementptr %cache[0, %i] : (!llvm.ptr, i64) -> !llvm.ptr, !llvm.array<256 x ptr>
  %got = llvm.atomicrmw xchg %slot, %null acq_rel : !llvm.ptr, !llvm.ptr
  %hit = llvm.icmp "ne" %got, %null : !llvm.ptr
  %next = llvm.add %s, %c1 : i64
  llvm.cond_br %hit, ^found(%got : !llvm.ptr), ^probe(%next : i64)
^fresh:
  %bytes = llvm.shl %c1, %cls : i64
  %p = llvm.call @malloc(%bytes) : (i64) -> !llvm.ptr
  %failed = llvm.icmp "eq" %p, %null : !llvm.ptr
  llvm.cond_br %failed, ^out_of_memory, ^label(%p : !llvm.ptr)
^label(%q: !llvm.ptr):
  llvm.store %cls, %q : i64, !llvm.ptr
  llvm.br ^found(%q : !llvm.ptr)
^found(%b: !llvm.ptr):
  %user = llvm.getelementptr %b[64] : (!llvm.ptr) -> !llvm.ptr, i8
  llvm.return %user : !llvm.ptr
^out_of_memory:
  llvm.return %null : !llvm.ptr
}
llvm.func internal @_mlir_memref_to_llvm_free(%user: !llvm.ptr) {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c4 = llvm.mlir.constant(4 : i64) : i64
  %null = llvm.mlir.zero : !llvm.ptr
  %cache = llvm.mlir.addressof @__moe_block_cache : !llvm.ptr
  %none = llvm.icmp "eq" %user, %null : !llvm.ptr
  llvm.cond_br %none, ^out, ^body
^body:
  %b = llvm.getelementptr %user[-64] : (!llvm.ptr) -> !llvm.ptr, i8
  %cls = llvm.load %b : !llvm.ptr -> i64
  %first = llvm.mul %cls, %c4 : i64
  llvm.br ^probe(%c0 : i64)
^probe(%s: i64):
  %done = llvm.icmp "eq" %s, %c4 : i64
  llvm.cond_br %done, ^release, ^try
^try:
  %i = llvm.add %first, %s : i64
  %slot = llvm.getelementptr %cache[0, %i] : (!llvm.ptr, i64) -> !llvm.ptr, !llvm.array<256 x ptr>
  %res = llvm.cmpxchg %slot, %null, %b acq_rel monotonic : !llvm.ptr, !llvm.ptr
  %ok = llvm.extractvalue %res[1] : !llvm.struct<(ptr, i1)>
  %next = llvm.add %s, %c1 : i64
  llvm.cond_br %ok, ^out, ^probe(%next : i64)
^release:
  llvm.call @free(%b) : (!llvm.ptr) -> ()
  llvm.br ^out
^out:
  llvm.return
}
llvm.func internal @__moe_release_block_cache() {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c256 = llvm.mlir.constant(256 : i64) : i64
  %null = llvm.mlir.zero : !llvm.ptr
  %cache = llvm.mlir.addressof @__moe_block_cache : !llvm.ptr
  llvm.br ^loop(%c0 : i64)
^loop(%i: i64):
  %done = llvm.icmp "eq" %i, %c256 : i64
  llvm.cond_br %done, ^out, ^body
^body:
  %slot = llvm.getelementptr %cache[0, %i] : (!llvm.ptr, i64) -> !llvm.ptr, !llvm.array<256 x ptr>
  %b = llvm.atomicrmw xchg %slot, %null acq_rel : !llvm.ptr, !llvm.ptr
  llvm.call @free(%b) : (!llvm.ptr) -> ()
  %next = llvm.add %i, %c1 : i64
  llvm.br ^loop(%next : i64)
^out:
  llvm.return
}
llvm.mlir.global_dtors dtors = [@__moe_release_block_cache],
                       priorities = [65535 : i32], data = [#llvm.zero]
)mlir";

/// Replaces the declarations of the generic allocation functions in a
/// lowered module with the caching allocator.
llvm::Error defineAllocator(ModuleOp module) {
  MLIRContext *ctx = module.getContext();
  bool used = false;
  for (StringRef name :
       {"_mlir_memref_to_llvm_alloc", "_mlir_memref_to_llvm_free"}) {
    if (auto fn = module.lookupSymbol<LLVM::LLVMFuncOp>(name)) {
      if (!fn.isExternal())
        return makeError(llvm::Twine("the module already defines ") + name);
      fn.erase();
      used = true;
    }
  }
  if (!used)
    return llvm::Error::success();
  OwningOpRef<ModuleOp> allocator =
      parseSourceString<ModuleOp>(kCachingAllocator, ctx);
  if (!allocator)
    return makeError("the built-in allocator does not parse");
  for (Operation &op :
       llvm::make_early_inc_range(allocator->getBody()->getOperations())) {
    // malloc and free may already be declared by other lowerings.
    auto fn = dyn_cast<LLVM::LLVMFuncOp>(op);
    if (fn && fn.isExternal() && module.lookupSymbol(fn.getName()))
      continue;
    op.moveBefore(module.getBody(), module.getBody()->end());
  }
  return llvm::Error::success();
}

/// Adds the public C entries of `layers` around the lowered inner
/// functions.
llvm::Error addEntryWrappers(ModuleOp module, ArrayRef<LayerABI> layers,
                             bool device) {
  MLIRContext *ctx = module.getContext();
  DiagnosticCollector diagnostics(ctx);
  ImplicitLocOpBuilder b(module.getLoc(), ctx);
  b.setInsertionPointToEnd(module.getBody());
  if (device && !layers.empty())
    for (StringRef name : {kTakeError, kPeekError})
      if (!module.lookupSymbol(name))
        LLVM::LLVMFuncOp::create(
            b, name, LLVM::LLVMFunctionType::get(b.getI32Type(), {}));
  WrapperBuilder wrappers(b);
  for (const LayerABI &abi : layers) {
    if (!module.lookupSymbol(abi.symbol + "__forward") &&
        !module.lookupSymbol(abi.symbol + "__route"))
      return makeError("lowered module has no entry of layer '" + abi.symbol +
                       "'");
    for (bool route : {false, true}) {
      // A module may hold one of the two entries (LayerEntries).
      std::string inner = abi.symbol + (route ? "__route" : "__forward");
      if (!module.lookupSymbol(inner))
        continue;
      b.setInsertionPointToEnd(module.getBody());
      wrappers.build(route ? abi.symbol + "_route" : abi.symbol, inner,
                     route ? abi.routeArgs : abi.forwardArgs, route, device);
    }
  }
  if (failed(verify(module)))
    return makeError("entry wrappers failed to verify:\n" + diagnostics.text);
  return llvm::Error::success();
}

} // namespace

DiagnosticCollector::DiagnosticCollector(MLIRContext *ctx)
    : stream(text), handler(ctx, [this](Diagnostic &diag) {
        stream << diag.getLocation() << ": " << diag << "\n";
        return success();
      }) {}

llvm::Error mlir::moe::compiler::lowerToLLVM(ModuleOp module,
                                             ArrayRef<LayerABI> layers,
                                             bool cachingAllocator, bool openmp,
                                             StringRef targetCPU,
                                             StringRef schedule,
                                             bool runsInThisProcess) {
  registerPassesOnce();
  llvm::Expected<CPUFeatures> features = getCPUFeatures(targetCPU);
  if (!features)
    return features.takeError();
  // Code for this process asks for AMX tiles now, and does without them
  // when they are refused.
  bool amx = features->amxBF16;
  bool amxRuntimeCheck = !runsInThisProcess;
  if (amx && runsInThisProcess)
    amx = requestAMXTiles();
  MLIRContext *ctx = module.getContext();
  DiagnosticCollector diagnostics(ctx);
  PassManager pm(ctx, ModuleOp::getOperationName());
  std::string pipelineErrors;
  llvm::raw_string_ostream pipelineStream(pipelineErrors);
  if (failed(buildMoECPUPipeline(
          pm, cachingAllocator, openmp, features->bf16Dot,
          CPUTargetModel{
              {features->vectorBits, features->vectorRegisters},
              features->lastLevelCacheBytes,
              features->l2CacheBytes,
              std::max<int64_t>(CPUTargetModel().columnChunks, features->cores),
              amx,
              amxRuntimeCheck},
          schedule, pipelineStream)))
    return makeError("cannot build the moe CPU pipeline: " + pipelineErrors);
  if (failed(pm.run(module)))
    return makeError("lowering failed:\n" + diagnostics.text);
  if (llvm::Error error = defineAllocator(module))
    return error;

  return addEntryWrappers(module, layers, /*device=*/false);
}

llvm::Error mlir::moe::compiler::lowerToLLVMForNVPTX(ModuleOp module,
                                                     ArrayRef<LayerABI> layers,
                                                     StringRef chip,
                                                     StringRef format,
                                                     bool mma) {
  registerPassesOnce();
  MLIRContext *ctx = module.getContext();
  DiagnosticCollector diagnostics(ctx);
  std::string toolkit = findCUDAToolkit();
  if (toolkit.empty())
    return makeError(
        "the CUDA toolkit (bin/ptxas and nvvm/libdevice) was "
        "not found: set MOE_CUDA_TOOLKIT or CUDA_HOME, or put ptxas on PATH");
  PassManager pm(ctx, ModuleOp::getOperationName());
  std::string pipelineErrors;
  llvm::raw_string_ostream errors(pipelineErrors);
  if (failed(buildMoENVPTXPipeline(pm, chip, format, toolkit, mma, errors)))
    return makeError("cannot build the moe NVPTX pipeline: " + pipelineErrors);
  if (failed(pm.run(module)))
    return makeError("lowering failed:\n" + diagnostics.text);
  return addEntryWrappers(module, layers, /*device=*/true);
}

llvm::Expected<std::string>
mlir::moe::compiler::getDeviceBinary(ModuleOp module) {
  std::string binary;
  for (auto op : module.getOps<gpu::BinaryOp>()) {
    if (!binary.empty() || op.getObjects().size() != 1)
      return makeError("expected one gpu.binary with one object");
    auto object = cast<gpu::ObjectAttr>(op.getObjects()[0]);
    binary = object.getObject().getValue().str();
  }
  if (binary.empty())
    return makeError("the module holds no device code");
  return binary;
}

llvm::StringRef mlir::moe::compiler::getCUDARuntimeLibrary() {
  return MOE_CUDA_RUNTIME_DIR "/libmoe_cuda_runtime.so";
}

llvm::StringRef mlir::moe::compiler::getCUDARuntimeLibraryDir() {
  return MOE_CUDA_RUNTIME_DIR;
}

//===----------------------------------------------------------------------===//
// Code generation
//===----------------------------------------------------------------------===//

namespace {

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    // Inline assembly (the AMX permission request) is parsed as it is
    // emitted.
    llvm::InitializeNativeTargetAsmParser();
  });
}

llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createTargetMachine(const CodegenOptions &options) {
  initializeNativeTarget();
  llvm::Triple triple(llvm::sys::getDefaultTargetTriple());
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return makeError("no target for " + triple.str() + ": " + error);
  std::string cpu = options.targetCPU;
  std::string features;
  if (cpu == "native") {
    cpu = llvm::sys::getHostCPUName().str();
    llvm::SubtargetFeatures featureSet;
    for (auto &feature : llvm::sys::getHostCPUFeatures())
      featureSet.AddFeature(feature.first(), feature.second);
    features = featureSet.getString();
  }
  llvm::TargetOptions targetOptions;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, cpu, features, targetOptions, llvm::Reloc::PIC_));
  if (!machine)
    return makeError("cannot create a target machine for CPU '" + cpu + "'");
  if (!machine->getMCSubtargetInfo()->isCPUStringValid(cpu))
    return makeError("unknown target CPU '" + cpu +
                     "' (use native, x86-64-v3, x86-64-v4 or an LLVM CPU "
                     "name such as skylake-avx512)");
  return machine;
}

} // namespace

namespace {

/// Sizes of CPU 0's data or unified caches, from Linux sysfs ("32768K"):
/// the level-2 one and the highest-level one; nothing where sysfs does
/// not say.
struct HostCaches {
  std::optional<int64_t> l2, last;
};

HostCaches readHostCaches() {
  HostCaches caches;
  int lastLevel = 0;
  for (int index = 0; index < 16; ++index) {
    std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    // Read to the end, as a stream: sysfs gives every file a size of one
    // page, and where a read of it is not cut short at the text's end (some
    // sandboxes) a sized read keeps the page's trailing NULs.
    auto read = [&](StringRef name) -> std::string {
      auto buffer = llvm::MemoryBuffer::getFileAsStream(dir + "/" + name.str());
      return buffer ? (*buffer)->getBuffer().trim().str() : std::string();
    };
    std::string level = read("level"), type = read("type"), size = read("size");
    if (level.empty())
      break;
    int levelNumber = 0;
    if (type == "Instruction" || StringRef(level).getAsInteger(10, levelNumber))
      continue;
    StringRef text(size);
    int64_t scale = 1;
    if (text.consume_back("K"))
      scale = 1024;
    else if (text.consume_back("M"))
      scale = 1024 * 1024;
    int64_t value = 0;
    if (text.getAsInteger(10, value) || value <= 0)
      continue;
    if (levelNumber == 2)
      caches.l2 = value * scale;
    if (levelNumber > lastLevel) {
      lastLevel = levelNumber;
      caches.last = value * scale;
    }
  }
  return caches;
}

} // namespace

bool mlir::moe::compiler::requestAMXTiles() {
#if defined(__linux__) && defined(__x86_64__)
  // Granting it again is a success.
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

llvm::Expected<CPUFeatures>
mlir::moe::compiler::getCPUFeatures(StringRef targetCPU) {
  CodegenOptions options;
  options.targetCPU = targetCPU.str();
  auto machine = createTargetMachine(options);
  if (!machine)
    return machine.takeError();
  const llvm::MCSubtargetInfo *info = (*machine)->getMCSubtargetInfo();
  CPUFeatures features;
  features.bf16Dot = info->checkFeatures("+avx512bf16");
  features.amxBF16 = info->checkFeatures("+amx-tile,+amx-bf16");
  if (info->checkFeatures("+avx512f")) {
    features.vectorBits = 512;
    features.vectorRegisters = 32;
  } else if (info->checkFeatures("+avx")) {
    features.vectorBits = 256;
  }
  // Read once: every lowering for the native CPU asks.
  static const HostCaches host = readHostCaches();
  if (targetCPU == "native") {
    if (host.last)
      features.lastLevelCacheBytes = *host.last;
    if (host.l2)
      features.l2CacheBytes = *host.l2;
    features.cores = llvm::hardware_concurrency().compute_thread_count();
  }
  return features;
}

namespace {

/// Runs AddressSanitizer on every function defined in `module`, as clang
/// does at the end of its optimization pipeline for -fsanitize=address.
void instrumentWithAddressSanitizer(llvm::Module &module,
                                    llvm::TargetMachine &machine) {
  for (llvm::Function &function : module)
    if (!function.isDeclaration())
      function.addFnAttr(llvm::Attribute::SanitizeAddress);
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgscc;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(cgscc);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, cgscc, modules);
  llvm::ModulePassManager passes;
  passes.addPass(llvm::AddressSanitizerPass(llvm::AddressSanitizerOptions()));
  passes.run(module, modules);
}

} // namespace

llvm::Error mlir::moe::compiler::emitObjectFile(ModuleOp module, StringRef path,
                                                const CodegenOptions &options) {
  auto machine = createTargetMachine(options);
  if (!machine)
    return machine.takeError();
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return makeError("cannot translate the module to LLVM IR");
  llvmModule->setDataLayout((*machine)->createDataLayout());
  llvmModule->setTargetTriple((*machine)->getTargetTriple());
  auto optimize =
      makeOptimizingTransformer(options.optLevel, 0, machine->get());
  if (llvm::Error error = optimize(llvmModule.get()))
    return error;
  if (options.sanitizeAddress)
    instrumentWithAddressSanitizer(*llvmModule, **machine);

  std::error_code ec;
  llvm::ToolOutputFile out(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return makeError("cannot open '" + path + "': " + ec.message());
  llvm::legacy::PassManager pm;
  if ((*machine)->addPassesToEmitFile(pm, out.os(), nullptr,
                                      llvm::CodeGenFileType::ObjectFile))
    return makeError("the target cannot emit object files");
  pm.run(*llvmModule);
  out.keep();
  return llvm::Error::success();
}

extern "C" void omp_set_num_threads(int);

llvm::StringRef mlir::moe::compiler::getOpenMPLibrary() {
  return MOE_OPENMP_LIBRARY;
}

llvm::StringRef mlir::moe::compiler::getOpenMPLibraryDir() {
  return MOE_OPENMP_LIBRARY_DIR;
}

void mlir::moe::compiler::setNumThreads(int threads) {
  if (threads > 0)
    omp_set_num_threads(threads);
}

llvm::cl::opt<int> &
mlir::moe::compiler::addThreadsOption(llvm::cl::OptionCategory &category) {
  static llvm::cl::opt<int> *threads = nullptr;
  if (!threads) {
    auto &registered = llvm::cl::getRegisteredOptions();
    auto existing = registered.find("threads");
    if (existing != registered.end())
      existing->second->setArgStr("llvm-internal-threads");
    threads = new llvm::cl::opt<int>(
        "threads",
        llvm::cl::desc("Threads for the generated code's parallel loops (0: "
                       "OMP_NUM_THREADS, else one per core)"),
        llvm::cl::init(0), llvm::cl::cat(category));
  }
  return *threads;
}

llvm::cl::opt<std::string> &
mlir::moe::compiler::addScheduleOption(llvm::cl::OptionCategory &category) {
  static llvm::cl::opt<std::string> *schedule = nullptr;
  if (!schedule)
    schedule = new llvm::cl::opt<std::string>(
        "schedule",
        llvm::cl::desc("Transform-dialect schedule file run on the expanded "
                       "ops before they are lowered (it can set moe.tile, "
                       "the grouped_matmul register tile; see schedules/)"),
        llvm::cl::value_desc("file.mlir"), llvm::cl::cat(category));
  return *schedule;
}

namespace {

/// Where the JIT puts the sections of compiled modules: pages handed out in
/// order from one large reservation of address space, so the code,
/// constants and data of a module lie within its own size of each other.
/// Mapped one by one, as the ExecutionEngine's memory manager does by
/// default, they can land more than 2 GiB apart in a fragmented address
/// space (seen 1 run in 5 under ASan), where the small code model's 32-bit
/// RIP-relative references wrap without an error and read the wrong
/// memory. Released sections are unmapped and their addresses not reused;
/// a new reservation (asked for right after the old one) starts when a span
/// is used up, every 8 GiB of compiled code.
class ContiguousSectionMapper final
    : public llvm::SectionMemoryManager::MemoryMapper {
public:
  llvm::sys::MemoryBlock
  allocateMappedMemory(llvm::SectionMemoryManager::AllocationPurpose,
                       size_t numBytes, const llvm::sys::MemoryBlock *,
                       unsigned flags, std::error_code &ec) override {
    std::lock_guard<std::mutex> lock(mutex);
    size_t page = llvm::sys::Process::getPageSizeEstimate();
    size_t size = llvm::alignTo(numBytes, page);
    if (!next || size > size_t(end - next)) {
      size_t span = std::max<size_t>(kSpanBytes, size);
      void *at = mmap(end, span, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (at == MAP_FAILED) {
        ec = std::error_code(errno, std::generic_category());
        return llvm::sys::MemoryBlock();
      }
      next = static_cast<char *>(at);
      end = next + span;
    }
    llvm::sys::MemoryBlock block(next, size);
    if ((ec = llvm::sys::Memory::protectMappedMemory(block, flags)))
      return llvm::sys::MemoryBlock();
    next += size;
    return block;
  }

  std::error_code protectMappedMemory(const llvm::sys::MemoryBlock &block,
                                      unsigned flags) override {
    return llvm::sys::Memory::protectMappedMemory(block, flags);
  }

  std::error_code releaseMappedMemory(llvm::sys::MemoryBlock &block) override {
    return llvm::sys::Memory::releaseMappedMemory(block);
  }

private:
  static constexpr size_t kSpanBytes = size_t(8) << 30;
  std::mutex mutex;
  char *next = nullptr, *end = nullptr;
};

/// Set at exit by a handler that JIT compiles register when they end.
/// Exit handlers and static destructors run in reverse order of
/// registration, so the flag is up before anything destroys an engine that
/// was created before that compile, and before the objects LLVM
/// constructed lazily during the compile are destroyed. Such objects come
/// from code paths run for the first time, so the handler is registered
/// after compiles 1, 2, 4, 8, ...: a long-running process that compiles
/// often adds a few dozen handlers, not one per compile.
std::atomic<bool> processExiting{false};
std::atomic<uint64_t> jitCompiles{0};

void markProcessExiting() { processExiting = true; }

} // namespace

llvm::SectionMemoryManager::MemoryMapper &
mlir::moe::compiler::getJITSectionMapper() {
  // Engines hold a pointer to it until they are destroyed, possibly during
  // static destruction, so it is never freed.
  static ContiguousSectionMapper *mapper = new ContiguousSectionMapper();
  return *mapper;
}

JitModule::~JitModule() {
  // mlir::ExecutionEngine's destructor runs ORC's deinitialization, which
  // compiles and links a small platform module; once static objects LLVM
  // built lazily during a compile have been destroyed, that writes through
  // dead objects and crashes. An engine destroyed at exit after our handler
  // ran (a function-local static, an exit handler registered before the
  // first compile) is kept instead: the process is ending, and a pointer
  // from a never-destroyed list keeps it reachable for leak checkers.
  if (!processExiting || !engine)
    return;
  static std::mutex keptMutex;
  static auto *kept = new std::vector<std::unique_ptr<ExecutionEngine>>();
  std::lock_guard<std::mutex> lock(keptMutex);
  kept->push_back(std::move(engine));
}

llvm::Expected<std::unique_ptr<JitModule>>
JitModule::create(ModuleOp module, const CodegenOptions &options) {
  auto machine = createTargetMachine(options);
  if (!machine)
    return machine.takeError();
  std::function<llvm::Error(llvm::Module *)> transformer =
      makeOptimizingTransformer(options.optLevel, 0, machine->get());
  ExecutionEngineOptions engineOptions;
  engineOptions.transformer = transformer;
  // The small code model's RIP-relative references need a module's
  // sections near each other (RuntimeDyld does not check the range in
  // release builds).
  engineOptions.sectionMemoryMapper = &getJITSectionMapper();
  SmallVector<StringRef> libraries(options.sharedLibraries.begin(),
                                   options.sharedLibraries.end());
  engineOptions.sharedLibPaths = libraries;
  engineOptions.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto engine =
      ExecutionEngine::create(module, engineOptions, std::move(*machine));
  if (!engine)
    return engine.takeError();
  std::unique_ptr<JitModule> jit(new JitModule());
  jit->engine = std::move(*engine);
  // Registers the module's global destructors (the allocator's cache
  // release), which run when the engine is destroyed.
  jit->engine->initialize();
  uint64_t compiles = ++jitCompiles;
  if ((compiles & (compiles - 1)) == 0)
    std::atexit(markProcessExiting);
  return jit;
}

llvm::Expected<void *> JitModule::lookup(StringRef symbol) {
  return engine->lookup(symbol);
}
