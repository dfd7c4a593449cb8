//===- Compiler.h - Lower, wrap, JIT or emit moe layer modules --*- C++ -*-===//

#ifndef MOE_COMPILER_COMPILER_H
#define MOE_COMPILER_COMPILER_H

#include "moe/Compiler/LayerModule.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"

#include "llvm/ExecutionEngine/SectionMemoryManager.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace mlir {
class ExecutionEngine;
class DialectRegistry;
} // namespace mlir

namespace mlir::moe::compiler {

/// Collects the diagnostics emitted in `ctx` while it lives, one
/// "location: message" line each, for error messages.
struct DiagnosticCollector {
  explicit DiagnosticCollector(MLIRContext *ctx);
  std::string text;
  llvm::raw_string_ostream stream;
  ScopedDiagnosticHandler handler;
};

/// Registers every dialect, interface and translation the compiler uses.
void registerCompilerDialects(DialectRegistry &registry);

/// Runs the CPU pipeline on `module` (built by buildLayerModule) and adds the
/// plain C entry points of `layers`. With `cachingAllocator`, temporaries
/// come from a module-internal allocator that keeps freed blocks for reuse
/// (see Compiler.cpp); without it, from malloc/free, so buffers a function
/// returns can be released with free(). With `openmp`, the kernels'
/// parallel loops run on the OpenMP runtime (link or load libomp, see
/// getOpenMPLibrary); without it they run on the calling thread.
/// `targetCPU` (as in CodegenOptions) chooses instructions the lowering
/// emits itself: AVX-512 BF16 dot products for bf16 expert weights where
/// the CPU has them, and the grouped_matmul register tile its vector
/// registers hold (chooseCPUTile, for each op). A non-empty `schedule` is a
/// transform-dialect file run on the expanded ops before they are lowered
/// (getMoECPUPipeline). `runsInThisProcess` says the code will run in this
/// process (a JIT): AMX tiles are then requested from the operating system
/// now, and the code neither asks again nor keeps the AVX-512 kernel for
/// a refusal (without it, the code asks once per call and falls back).
llvm::Error lowerToLLVM(ModuleOp module, llvm::ArrayRef<LayerABI> layers,
                        bool cachingAllocator = true, bool openmp = true,
                        llvm::StringRef targetCPU = "native",
                        llvm::StringRef schedule = "",
                        bool runsInThisProcess = false);
/// Asks Linux to let this process use AMX tile data (arch_prctl
/// ARCH_REQ_XCOMP_PERM); true when it is granted. False on other systems.
bool requestAMXTiles();
/// What the CPU lowering asks of a target CPU.
struct CPUFeatures {
  /// AVX-512 BF16 dot products (vdpbf16ps).
  bool bf16Dot = false;
  /// AMX tiles with bf16 multiplies (amx-tile and amx-bf16): the grouped
  /// matmuls of bf16 weights use them for experts of many rows where the
  /// operating system grants them at run time (docs/design.md, "AMX
  /// tiles").
  bool amxBF16 = false;
  /// The widest vector registers (512 with AVX-512F, 256 with AVX, else
  /// 128) and how many there are.
  unsigned vectorBits = 128;
  unsigned vectorRegisters = 16;
  /// Bytes of the last-level cache: for "native", the host's (Linux
  /// sysfs: the highest-level data or unified cache of CPU 0); otherwise,
  /// or when the host does not say, 32 MiB (CPUTargetModel's default).
  int64_t lastLevelCacheBytes = int64_t(32) << 20;
  /// Bytes of one core's level-2 cache: for "native", the host's (sysfs:
  /// the level-2 data or unified cache of CPU 0); otherwise 1 MiB.
  int64_t l2CacheBytes = int64_t(1) << 20;
  /// Cores the generated code can run on: for "native", the CPUs this
  /// process may run on (its affinity mask); otherwise 0 (unknown). lowerToLLVM
  /// cuts each expert GEMM into max(4, cores) work items per expert along
  /// its columns (CPUTargetModel::columnChunks).
  int64_t cores = 0;
};
/// The features of `targetCPU` ("native" or an LLVM CPU name); an error
/// for an unknown CPU.
llvm::Expected<CPUFeatures> getCPUFeatures(llvm::StringRef targetCPU);

/// Runs the NVPTX pipeline on `module` (built by buildLayerModule) for
/// `chip` (sm_80 or sm_90), device code in `format` (isa: PTX, JIT-compiled
/// by the driver at load; bin: cubin; fatbin: cubin and PTX; bin and fatbin
/// need the CUDA toolkit's ptxas and fatbinary, see getCUDAToolkitPath),
/// and adds the C entries of `layers`. Every pointer the entries take
/// (weights, batch arrays, outputs) is a device pointer; the batch struct
/// itself is host memory. The code calls the mgpu* functions of
/// libmoe_cuda_runtime (getCUDARuntimeLibrary); an entry returns
/// StatusDeviceError when a CUDA operation of the call failed. `mma`
/// multiplies bf16 expert weights on tensor cores (getMoENVPTXPipeline).
llvm::Error lowerToLLVMForNVPTX(ModuleOp module,
                                llvm::ArrayRef<LayerABI> layers,
                                llvm::StringRef chip, llvm::StringRef format,
                                bool mma = false);

/// The device code of a module lowered by lowerToLLVMForNVPTX: PTX text
/// for format isa, the cubin or fatbin bytes otherwise.
llvm::Expected<std::string> getDeviceBinary(ModuleOp module);

/// libmoe_cuda_runtime, the shared library (for the JIT and for linking
/// shared objects), and its directory.
llvm::StringRef getCUDARuntimeLibrary();
llvm::StringRef getCUDARuntimeLibraryDir();

/// The OpenMP runtime generated code calls (`__kmpc_*`): the library's
/// path and directory, for linking objects into programs (link the path,
/// add the directory as an rpath).
llvm::StringRef getOpenMPLibrary();
llvm::StringRef getOpenMPLibraryDir();

/// Threads the parallel loops of generated code use from now on (OpenMP's
/// `omp_set_num_threads`); 0 leaves the runtime's default (OMP_NUM_THREADS,
/// else one per core).
void setNumThreads(int threads);

/// Registers the tools' `--threads N` option in `category` (call before
/// parsing the command line). libLLVM registers an unrelated hidden
/// `threads` option of its own; it is renamed out of the way.
llvm::cl::opt<int> &addThreadsOption(llvm::cl::OptionCategory &category);

/// Registers the tools' `--schedule FILE` option (a transform-dialect
/// schedule for the CPU lowering; lowerToLLVM) in `category`.
llvm::cl::opt<std::string> &
addScheduleOption(llvm::cl::OptionCategory &category);

struct CodegenOptions {
  /// "native", "x86-64-v3", "x86-64-v4", or any LLVM CPU name.
  std::string targetCPU = "native";
  unsigned optLevel = 3;
  /// Instruments the generated code with AddressSanitizer after
  /// optimization (emitObjectFile only): every load and store is checked
  /// against ASan's shadow memory, so a program built with
  /// -fsanitize=address reports any out-of-bounds access the compiled
  /// layer makes. Lower such modules without the caching allocator, so
  /// every temporary is its own malloc block with redzones on both sides.
  bool sanitizeAddress = false;
  /// Shared libraries the JIT loads to resolve the code's external calls.
  std::vector<std::string> sharedLibraries;
};

/// Writes a relocatable object file for a lowered module.
llvm::Error emitObjectFile(ModuleOp module, llvm::StringRef path,
                           const CodegenOptions &options);

/// Where JitModule places the sections of compiled code: pages handed out
/// in order from one reserved span of address space, so the code and
/// constants of a module stay within reach of the small code model's 32-bit
/// RIP-relative references however fragmented the process's address space
/// is. One for the process, never destroyed.
llvm::SectionMemoryManager::MemoryMapper &getJITSectionMapper();

/// A lowered module compiled in process.
class JitModule {
public:
  ~JitModule();
  static llvm::Expected<std::unique_ptr<JitModule>>
  create(ModuleOp module, const CodegenOptions &options);
  /// The address of a C entry point, or an error.
  llvm::Expected<void *> lookup(llvm::StringRef symbol);

private:
  JitModule() = default;
  std::unique_ptr<ExecutionEngine> engine;
};

/// The C signatures of the entries (see the generated header).
struct MoEBatch {
  int64_t num_tokens;
  const float *x;
  const int64_t *token_ids;
  int64_t sequence_length;
  const int32_t *group_offsets;
  int64_t num_groups;
};
using ForwardFn = int32_t (*)(const void *const *weights, const MoEBatch *batch,
                              float *y);
using RouteFn = int32_t (*)(const void *const *weights, const MoEBatch *batch,
                            void *const *routing);

} // namespace mlir::moe::compiler

#endif // MOE_COMPILER_COMPILER_H
