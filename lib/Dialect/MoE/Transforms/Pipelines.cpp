//===- Pipelines.cpp - Named pass pipelines of moe-mlir -------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"

using namespace mlir;

/// Bufferization of the functions on tensors both pipelines produce, with
/// buffer deallocation.
constexpr const char *kBufferize =
    "one-shot-bufferize{bufferize-function-boundaries "
    "function-boundary-type-conversion=identity-layout-map},"
    "buffer-deallocation-pipeline,";

std::string mlir::moe::getMoECPUPipeline(bool genericAllocation, bool openmp,
                                         bool bf16Dot, CPUTargetModel target,
                                         StringRef schedule) {
  // Pass names are given bare: the manager this is parsed into is already
  // anchored on builtin.module.
  std::string finalize = genericAllocation
                             ? "finalize-memref-to-llvm{use-generic-functions},"
                             : "finalize-memref-to-llvm,";
  // A schedule runs on the expanded ops (it can annotate them, e.g. with
  // `moe.tile`) before they are lowered.
  std::string scheduled;
  if (!schedule.empty())
    scheduled = "moe-apply-schedule{schedule=\"" + schedule.str() + "\"},";
  return std::string("moe-expand-layer,") + scheduled +
         "moe-lower-to-loops{bf16-dot=" + (bf16Dot ? "1" : "0") +
         " vector-bits=" + std::to_string(target.unit.bits) +
         " vector-registers=" + std::to_string(target.unit.registers) +
         " llc-bytes=" + std::to_string(target.lastLevelCacheBytes) +
         " l2-bytes=" + std::to_string(target.l2CacheBytes) +
         " column-chunks=" + std::to_string(target.columnChunks) +
         " amx-bf16=" + (target.amxBF16 ? "1" : "0") +
         " amx-runtime-check=" + (target.amxRuntimeCheck ? "1" : "0") + "}," +
         "moe-approximate-vector-math,"
         "canonicalize,cse," +
         kBufferize +
         (openmp ? "convert-scf-to-openmp,moe-inline-alloca-scopes," : "") +
         std::string("convert-linalg-to-loops,"
                     "convert-scf-to-cf,"
                     "expand-strided-metadata,"
                     "lower-affine,"
                     "convert-math-to-llvm,"
                     "convert-math-to-libm,"
                     "convert-vector-to-llvm{reassociate-fp-reductions "
                     "enable-x86vector enable-amx},") +
         finalize + "convert-to-llvm,reconcile-unrealized-casts";
}

std::string mlir::moe::findCUDAToolkit() {
  auto isToolkit = [](llvm::StringRef dir) {
    llvm::SmallString<256> ptxas(dir), libdevice(dir);
    llvm::sys::path::append(ptxas, "bin", "ptxas");
    llvm::sys::path::append(libdevice, "nvvm", "libdevice");
    return llvm::sys::fs::can_execute(ptxas) &&
           llvm::sys::fs::is_directory(libdevice);
  };
  // An explicit choice is final, valid or not.
  if (std::optional<std::string> dir =
          llvm::sys::Process::GetEnv("MOE_CUDA_TOOLKIT"))
    return isToolkit(*dir) ? *dir : "";
  for (const char *var : {"CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"})
    if (std::optional<std::string> dir = llvm::sys::Process::GetEnv(var))
      if (isToolkit(*dir))
        return *dir;
  if (llvm::ErrorOr<std::string> ptxas =
          llvm::sys::findProgramByName("ptxas")) {
    llvm::SmallString<256> real;
    if (!llvm::sys::fs::real_path(*ptxas, real)) {
      llvm::StringRef dir =
          llvm::sys::path::parent_path(llvm::sys::path::parent_path(real));
      if (isToolkit(dir))
        return dir.str();
    }
  }
  if (isToolkit("/usr/local/cuda"))
    return "/usr/local/cuda";
  return "";
}

std::string mlir::moe::getMoENVPTXPipeline(llvm::StringRef chip,
                                           llvm::StringRef format,
                                           llvm::StringRef toolkit, bool mma) {
  // After offloading, the steps of upstream's gpu-lower-to-nvvm-pipeline,
  // spelled out to pass the toolkit to gpu-module-to-binary. PTX 8.0 is the
  // lowest version every supported chip accepts (LLVM's default, 6.0,
  // aborts for sm_90). Host code reaches the device through the mgpu*
  // runtime functions (runtime/cuda).
  return std::string("moe-expand-layer,") +
         (mma ? "moe-lower-to-loops{gpu gpu-mma},"
              : "moe-lower-to-loops{gpu},") +
         "canonicalize,cse," + kBufferize +
         "convert-linalg-to-parallel-loops,"
         "canonicalize,"
         "moe-offload-to-gpu,"
         "gpu-kernel-outlining,"
         "moe-merge-gpu-modules,"
         "func.func(gpu-async-region),"
         "convert-scf-to-cf,"
         "convert-nvvm-to-llvm,"
         "convert-func-to-llvm,"
         "expand-strided-metadata,"
         "nvvm-attach-target{O=3 chip=" +
         chip.str() +
         " features=+ptx80},"
         "lower-affine,"
         "convert-arith-to-llvm,"
         "convert-index-to-llvm,"
         "canonicalize,cse,"
         "gpu.module(convert-gpu-to-nvvm,canonicalize,cse,"
         "reconcile-unrealized-casts),"
         "gpu-to-llvm,"
         "gpu-module-to-binary{format=" +
         format.str() + (toolkit.empty() ? "" : " toolkit=" + toolkit.str()) +
         "},"
         "convert-math-to-llvm,"
         "finalize-memref-to-llvm,"
         "canonicalize,cse,"
         "reconcile-unrealized-casts";
}

LogicalResult mlir::moe::buildMoENVPTXPipeline(
    OpPassManager &pm, llvm::StringRef chip, llvm::StringRef format,
    llvm::StringRef toolkit, bool mma, llvm::raw_ostream &errors) {
  if (chip != "sm_80" && chip != "sm_90")
    return errors << "moe-nvptx-pipeline: chip must be sm_80 or sm_90, not '"
                  << chip << "'\n",
           failure();
  if (format != "isa" && format != "bin" && format != "fatbin")
    return errors << "moe-nvptx-pipeline: format must be isa, bin or "
                     "fatbin, not '"
                  << format << "'\n",
           failure();
  return parsePassPipeline(getMoENVPTXPipeline(chip, format, toolkit, mma), pm,
                           errors);
}

LogicalResult
mlir::moe::buildMoECPUPipeline(OpPassManager &pm, bool genericAllocation,
                               bool openmp, bool bf16Dot, CPUTargetModel target,
                               StringRef schedule, raw_ostream &errors) {
  if (schedule.contains('"'))
    return errors << "a schedule path cannot contain '\"': " << schedule
                  << "\n",
           failure();
  return parsePassPipeline(
      getMoECPUPipeline(genericAllocation, openmp, bf16Dot, target, schedule),
      pm, errors);
}

namespace {
// Enumerated, so a bad value is a parse error of the pipeline, not a crash.
enum class Chip { sm80, sm90 };
enum class Format { isa, bin, fatbin };

struct NVPTXPipelineOptions : public PassPipelineOptions<NVPTXPipelineOptions> {
  Option<Chip> chip{
      *this, "chip", llvm::cl::desc("GPU architecture"),
      llvm::cl::init(Chip::sm90),
      llvm::cl::values(clEnumValN(Chip::sm80, "sm_80", "Ampere"),
                       clEnumValN(Chip::sm90, "sm_90", "Hopper"))};
  Option<Format> format{
      *this, "format", llvm::cl::desc("Device code in the gpu.binary"),
      llvm::cl::init(Format::fatbin),
      llvm::cl::values(clEnumValN(Format::isa, "isa", "PTX text"),
                       clEnumValN(Format::bin, "bin", "cubin (runs ptxas)"),
                       clEnumValN(Format::fatbin, "fatbin",
                                  "cubin and PTX (runs ptxas and fatbinary)"))};
  Option<std::string> toolkit{
      *this, "toolkit",
      llvm::cl::desc("CUDA toolkit directory (ptxas, nvvm/libdevice); "
                     "default: moe::findCUDAToolkit()")};
  Option<bool> mma{
      *this, "mma",
      llvm::cl::desc("Tensor-core (mma.sync) tiles for bf16 expert weights; "
                     "see --moe-lower-to-loops=gpu-mma"),
      llvm::cl::init(false)};
};
struct CPUPipelineOptions : public PassPipelineOptions<CPUPipelineOptions> {
  Option<bool> bf16Dot{
      *this, "bf16-dot",
      llvm::cl::desc("bf16 weights: AVX-512 BF16 dot products (vdpbf16ps)"),
      llvm::cl::init(false)};
  Option<unsigned> vectorBits{
      *this, "vector-bits",
      llvm::cl::desc("Width of the target's vector registers (the tile cost "
                     "model's input)"),
      llvm::cl::init(moe::CPUVectorUnit().bits)};
  Option<unsigned> vectorRegisters{
      *this, "vector-registers",
      llvm::cl::desc("Number of the target's vector registers"),
      llvm::cl::init(moe::CPUVectorUnit().registers)};
  Option<int64_t> llcBytes{
      *this, "llc-bytes",
      llvm::cl::desc("Bytes of the target's last-level cache (the rule for "
                     "blocks of k)"),
      llvm::cl::init(moe::CPUTargetModel().lastLevelCacheBytes)};
  Option<int64_t> l2Bytes{
      *this, "l2-bytes",
      llvm::cl::desc("Bytes of one core's L2 cache (the size of the blocks "
                     "of token panels)"),
      llvm::cl::init(moe::CPUTargetModel().l2CacheBytes)};
  Option<int64_t> columnChunks{
      *this, "column-chunks",
      llvm::cl::desc("Work items of an expert GEMM per expert along its "
                     "columns (at least the threads the code runs on)"),
      llvm::cl::init(moe::CPUTargetModel().columnChunks)};
  Option<bool> amxBF16{
      *this, "amx-bf16",
      llvm::cl::desc("bf16 weights: AMX tiles for experts of many rows (see "
                     "--moe-lower-to-loops=amx-bf16)"),
      llvm::cl::init(false)};
  Option<std::string> schedule{
      *this, "schedule",
      llvm::cl::desc("transform-dialect file run on the expanded ops before "
                     "they are lowered (it can set moe.tile)")};
};
} // namespace

void mlir::moe::registerMoEPipelines() {
  PassPipelineRegistration<NVPTXPipelineOptions>(
      "moe-nvptx-pipeline",
      "Lower moe IR on tensors to LLVM host code that launches NVPTX "
      "kernels (expand, lower to loops for GPUs, bufferize, offload, "
      "outline, NVVM, ptxas)",
      [](OpPassManager &pm, const NVPTXPipelineOptions &options) {
        StringRef chip = options.chip == Chip::sm80 ? "sm_80" : "sm_90";
        StringRef format = options.format == Format::isa   ? "isa"
                           : options.format == Format::bin ? "bin"
                                                           : "fatbin";
        std::string toolkit = options.toolkit;
        if (toolkit.empty())
          toolkit = findCUDAToolkit();
        if (failed(
                buildMoENVPTXPipeline(pm, chip, format, toolkit, options.mma)))
          llvm::report_fatal_error("invalid built-in moe-nvptx-pipeline");
      });

  PassPipelineRegistration<CPUPipelineOptions>(
      "moe-cpu-pipeline",
      "Lower moe IR on tensors to the LLVM dialect for the CPU "
      "(expand, lower to loops, bufferize, convert to LLVM)",
      [](OpPassManager &pm, const CPUPipelineOptions &options) {
        if (failed(buildMoECPUPipeline(
                pm, /*genericAllocation=*/false,
                /*openmp=*/true, options.bf16Dot,
                {{options.vectorBits, options.vectorRegisters},
                 options.llcBytes,
                 options.l2Bytes,
                 options.columnChunks,
                 options.amxBF16},
                options.schedule)))
          llvm::report_fatal_error("invalid moe-cpu-pipeline options");
      });
}
