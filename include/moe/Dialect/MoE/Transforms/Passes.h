//===- Passes.h - moe dialect transformation passes -------------*- C++ -*-===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_H
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir {
class RewritePatternSet;
namespace moe {

#define GEN_PASS_DECL
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"

/// The register tile of the CPU panel kernel of `moe.grouped_matmul`
/// (docs/design.md): `panelVectors` vectors of 16 token rows by `columns`
/// weight rows (for `silu_glu`, half gate rows and the matching up rows).
struct CPUTile {
  int64_t panelVectors = 2;
  int64_t columns = 12;
};

/// Whether the kernel supports `tile`: 1 to 4 panel vectors, an even
/// number of columns from 2 to 32.
bool isSupportedCPUTile(CPUTile tile);

/// What the tile's products are computed from: f32 FMAs; AVX-512 BF16 dot
/// products on bf16 pairs; or bf16 pairs widened into two f32 halves each
/// (bf16 weights without BF16 instructions: twice the operand registers
/// and FMAs).
enum class TileOperands { F32, BF16Dot, BF16Emulated };

/// The vector register file the CPU lowering targets.
struct CPUVectorUnit {
  unsigned bits = 512;
  unsigned registers = 32;
};

/// What the CPU lowering's cost rules know of the target: its vector
/// register file (the register tile), the bytes of its last-level cache
/// (experts whose weights stay in it take no blocks of k; docs/design.md,
/// "Blocks of k"; 32 MiB when unknown) and of one core's L2 (half of it
/// holds the token panels a block of weight tiles streams past; 1 MiB
/// when unknown), and the work items of an expert GEMM per expert along
/// its columns: the items are (chunk, expert) pairs, chunk major, so with
/// at least one chunk per thread a static split gives every thread a share
/// of every expert's columns, however skewed the loads (4 when unknown;
/// the drivers give max(4, cores) for the host, docs/design.md, "Work
/// items and threads").
struct CPUTargetModel {
  CPUVectorUnit unit;
  int64_t lastLevelCacheBytes = int64_t(32) << 20;
  int64_t l2CacheBytes = int64_t(1) << 20;
  int64_t columnChunks = 4;
  /// AMX-BF16 tiles (tdpbf16ps) for bf16 expert weights.
  bool amxBF16 = false;
  /// With amxBF16: the code asks the operating system for the tiles once
  /// per call and keeps the AVX-512 kernel for a refusal; without, it
  /// assumes they were granted (a JIT that asked in its own process).
  bool amxRuntimeCheck = true;
};

/// Linux's request for AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)), made by the compiler for a JIT and by generated
/// code compiled with amxRuntimeCheck.
constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;

/// The cost model's tile for `unit` and `operands` (docs/design.md, "Tile
/// sizes").
CPUTile chooseCPUTile(CPUVectorUnit unit,
                      TileOperands operands = TileOperands::F32);

/// Patterns that decompose `moe.layer` into gate / route / dispatch_plan /
/// grouped_matmul / combine (the body of `--moe-expand-layer`).
void populateMoEExpandLayerPatterns(RewritePatternSet &patterns);

/// The textual pass pipeline that lowers moe IR (tensor functions) to the
/// LLVM dialect for the CPU; `moe-opt --moe-cpu-pipeline` runs it. With
/// `genericAllocation`, buffers are allocated through
/// `_mlir_memref_to_llvm_alloc` / `_mlir_memref_to_llvm_free` instead of
/// malloc / free (the compiler driver defines them, see Compiler.cpp).
/// With `openmp`, the kernels' parallel loops become OpenMP work-sharing
/// loops (the code then needs libomp when it is linked or loaded); without
/// it they run sequentially. With `bf16Dot`, bf16 expert weights use
/// AVX-512 BF16 dot products (the target CPU must have them).
/// `target` is the vector register file grouped_matmul register tiles are
/// chosen for (chooseCPUTile) and the last-level cache size the rule for
/// blocks of k compares expert weights with. A non-empty
/// `schedule` names a transform-dialect file whose `__transform_main`
/// runs on the expanded ops before they are lowered; it can set one op's
/// tile with `transform.annotate %op "moe.tile" = array<i64: V, C>`
/// (docs/design.md, "Tile sizes").
std::string getMoECPUPipeline(bool genericAllocation = false,
                              bool openmp = true, bool bf16Dot = false,
                              CPUTargetModel target = {},
                              llvm::StringRef schedule = "");

/// Adds the CPU pipeline to `pm` (anchored on builtin.module); errors go to
/// `errors`.
llvm::LogicalResult
buildMoECPUPipeline(OpPassManager &pm, bool genericAllocation = false,
                    bool openmp = true, bool bf16Dot = false,
                    CPUTargetModel target = {}, llvm::StringRef schedule = "",
                    llvm::raw_ostream &errors = llvm::errs());

/// The textual pass pipeline that lowers moe IR (tensor functions) to host
/// code in the LLVM dialect that launches NVPTX kernels embedded as a
/// `gpu.binary` for `chip` (sm_80 or sm_90) in `format` (isa: PTX text;
/// bin: cubin; fatbin: cubin and PTX; bin and fatbin run the CUDA
/// toolkit's ptxas). Function arguments are device buffers. `toolkit` is
/// the CUDA toolkit directory (ptxas, libdevice); empty lets MLIR look in
/// CUDA_ROOT / CUDA_HOME / CUDA_PATH and PATH. `mma` selects tensor-core
/// tiles for bf16 expert weights (`--moe-lower-to-loops=gpu-mma`).
std::string getMoENVPTXPipeline(llvm::StringRef chip, llvm::StringRef format,
                                llvm::StringRef toolkit = "", bool mma = false);

/// The CUDA toolkit directory (holding bin/ptxas and nvvm/libdevice):
/// MOE_CUDA_TOOLKIT if set (empty when it is not a toolkit), else the first
/// toolkit among CUDA_ROOT, CUDA_HOME, CUDA_PATH, the ptxas on PATH and
/// /usr/local/cuda; empty when none is found.
std::string findCUDAToolkit();

/// Adds the NVPTX pipeline to `pm` (anchored on builtin.module); fails,
/// saying why on `errors`, on an unknown chip or format.
llvm::LogicalResult
buildMoENVPTXPipeline(OpPassManager &pm, llvm::StringRef chip,
                      llvm::StringRef format, llvm::StringRef toolkit = "",
                      bool mma = false,
                      llvm::raw_ostream &errors = llvm::errs());

/// Builds the body of a private function declared by
/// `--moe-lower-to-loops=gpu` with a `moe.gpu_launcher` configuration:
/// host code around a `gpu.launch` of the kernel the configuration names.
/// Called by `--moe-offload-to-gpu`, after bufferization, since buffer
/// deallocation cannot analyze GPU barriers.
llvm::LogicalResult buildGPULauncherBody(func::FuncOp fn);

/// Registers `--moe-cpu-pipeline` and `--moe-nvptx-pipeline`.
void registerMoEPipelines();

#define GEN_PASS_REGISTRATION
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"

} // namespace moe
} // namespace mlir

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_H
