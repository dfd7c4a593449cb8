//===- Passes.td - moe dialect transformation passes -------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEExpandLayer : Pass<"moe-expand-layer"> {
  let summary = "Decompose moe.layer into gate/route/dispatch_plan/grouped_matmul/combine";
  let description = [{
    Rewrites every `moe.layer` into its parts, preserving semantics:

    1. `moe.gate` computes the router logits (skipped for `hash` routing);
    2. `moe.route` applies the router policy;
    3. `moe.dispatch_plan` groups the slots by expert under the capacity
       policy (a `[B, S, d]` input with `sequence` capacity groups gets its
       sequence boundaries built here);
    4. two `moe.grouped_matmul`s run the expert FFN, the first gathering the
       token rows through the plan with the activation as its epilogue;
    5. `moe.combine` sums the weighted expert rows per token;
    6. shared experts run as one-expert grouped matmuls (the optional sigmoid
       gate becomes a `scale` epilogue) and are added to the routed output.

    Example: `moe-opt --moe-expand-layer examples/mixtral_layer.mlir`.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoELowerToLoops : Pass<"moe-lower-to-loops"> {
  let summary = "Lower moe ops to linalg, scf and memref for the CPU";
  let description = [{
    Lowers every `moe` op except `moe.layer` (run `--moe-expand-layer`
    first) to upstream dialects on tensors, ready for one-shot
    bufferization:

    * `moe.gate` on f32 operands becomes an `scf.parallel` over blocks of
      4 tokens by 4 experts of a vector dot-product kernel; other
      precisions a `linalg.generic` contraction;
    * `moe.grouped_matmul` on f32 tokens (f32 or bf16 weights) becomes
      two `scf.parallel` loops: one packs each expert's rows (read through
      the gather map) into k-major panels of 16 x `panel-vectors` rows; the
      other runs (column chunk, expert) work items of a register-tiled
      vector kernel (`panel-vectors` x 16 rows by `tile-columns` weight
      rows, weights read in place in their `[out, in]` layout) with the
      epilogue applied to the accumulators. An expert's last panel takes
      only as many row vectors as it has rows for. The tile comes from a
      cost model of the register file (`vector-bits`, `vector-registers`;
      2 x 12 for AVX-512, 1 x 6 for AVX2), from `panel-vectors` /
      `tile-columns`, or from the op's own `moe.tile` attribute (e.g. set
      by a schedule, `--moe-apply-schedule`). Deep GEMMs take k in blocks
      (`depth-block`, or the op's `moe.depth_block`), keeping partial sums
      between blocks. Experts with fewer than 16 rows take a
      weight-streaming dot-product kernel instead. Other
      precisions become, per expert, a `linalg.generic` GEMM on the
      subview of that expert's rows;
    * `moe.route`, `moe.dispatch_plan`, `moe.aux_loss`, `moe.z_loss` and
      `moe.expert_load` become loop nests over buffers, bridged
      into tensor IR with `bufferization.to_buffer` and
      `bufferization.to_tensor restrict`. Hash routing is an `scf.parallel`
      over tokens, expert choice one over tokens and then one over
      experts. The dispatch plan, without token groups or rerouting, is a
      stable counting sort in `scf.parallel` loops over blocks of
      `plan-block` tokens (the op's `moe.plan_block` wins) and over experts,
      with the same result as the sequential `scf.for` form the other
      plans take; `moe.combine` an `scf.parallel`
      over tokens summing 16-column vectors over the slots in order (f32;
      one element per iteration otherwise);
    * `moe.experts` becomes an `scf.for` over experts with its body inlined.

    `balanced` routing is solved exactly as an assignment problem (shortest
    augmenting paths with potentials, `scf.while`, in f64).

    Every index read at run time (expert, row, gather source, offset, token
    id, group boundary) is checked or clamped before it addresses memory.

    With `gpu`, the forms for `--moe-offload-to-gpu` instead, with no
    vector types: `moe.combine` is one `scf.parallel` over (token, column)
    summing the slots in order; token-choice routing an `scf.parallel`
    over tokens with per-token scratch in `memref.alloca`;
    `moe.grouped_matmul` a call of a private launcher declaration whose
    `moe.gpu_launcher` dictionary names the kernels `--moe-offload-to-gpu`
    builds into it (a tiled kernel for experts with more than 8 rows, a
    warp-per-column decode kernel for the others; docs/gpu.md);
    `moe.gate` the same with one expert holding every token.
  }];
  let options = [
    Option<"gpu", "gpu", "bool", /*default=*/"false",
           "Emit the GPU forms (see the description)">,
    Option<"gpuMma", "gpu-mma", "bool", /*default=*/"false",
           "With gpu: tiles of bf16-weight grouped_matmul ops multiply on "
           "tensor cores (mma.sync m16n8k16, tokens rounded to bf16, f32 "
           "accumulation; sm_80 and later) instead of f32 FMAs; an error "
           "without gpu">,
    Option<"bf16Dot", "bf16-dot", "bool", /*default=*/"false",
           "bf16 weights: use AVX-512 BF16 dot products (vdpbf16ps); "
           "without it they are computed by f32 FMAs with the same result "
           "(denormals aside)">,
    Option<"amxBF16", "amx-bf16", "bool", /*default=*/"false",
           "bf16 weights: experts of at least panel-min-rows rows multiply "
           "on AMX tiles (tdpbf16ps) where the code finds the operating "
           "system grants them at run time, the AVX-512 panel kernel "
           "otherwise; needs 32-row panels, a static depth that is a "
           "multiple of 32 and a static width of at least 16 (silu_glu) "
           "or 32 columns (docs/design.md, \"AMX tiles\")">,
    Option<"amxRuntimeCheck", "amx-runtime-check", "bool",
           /*default=*/"true",
           "With amx-bf16: ask the operating system for the tiles once per "
           "call (arch_prctl) and keep the AVX-512 kernel for a refusal; "
           "without, the code assumes they are granted (a JIT that asked "
           "in its own process)">,
    Option<"vectorBits", "vector-bits", "unsigned", /*default=*/"512",
           "Width of the target's vector registers, for the tile cost "
           "model">,
    Option<"vectorRegisters", "vector-registers", "unsigned",
           /*default=*/"32",
           "Number of the target's vector registers, for the tile cost "
           "model">,
    Option<"panelVectors", "panel-vectors", "int64_t", /*default=*/"0",
           "CPU grouped_matmul register tile: vectors of 16 token rows "
           "(1 to 4; 0: the cost model's)">,
    Option<"tileColumns", "tile-columns", "int64_t", /*default=*/"0",
           "CPU grouped_matmul register tile: weight rows (even, 2 to 32; "
           "half gate and half up rows for silu_glu; 0: the cost "
           "model's). An op's own "
           "`moe.tile` (array<i64: panel-vectors, tile-columns>) overrides "
           "both options">,
    Option<"llcBytes", "llc-bytes", "int64_t", /*default=*/"33554432",
           "Bytes of the target's last-level cache: by default experts "
           "whose weights take fewer are not taken in blocks of k (their "
           "weights stay in it between panels)">,
    Option<"l2Bytes", "l2-bytes", "int64_t", /*default=*/"1048576",
           "Bytes of one core's L2 cache: blocks of token panels take half "
           "of it (the panels stay in L2 while a block of weight tiles "
           "streams past), and depths of more steps than two 32-row "
           "panels of that half hold are blocks-of-k candidates">,
    Option<"depthBlock", "depth-block", "unsigned", /*default=*/"0",
           "CPU grouped_matmul: take k in blocks of this many steps "
           "(values of k; pairs of them for bf16 weights) when the depth "
           "has more (0: blocks of 1024 steps, only for depths above "
           "2048 steps of experts with at least llc-bytes of weights). "
           "An op's own `moe.depth_block` (i64) overrides it">,
    Option<"columnChunks", "column-chunks", "int64_t", /*default=*/"4",
           "CPU grouped_matmul: work items per expert along its columns "
           "(chunks of its column blocks; the items are (chunk, expert) "
           "pairs, chunk major, split statically over the threads, so at "
           "least one chunk per thread shares every expert's columns among "
           "them). An op's own `moe.column_chunks` (i64) overrides it">,
    Option<"panelMinRows", "panel-min-rows", "int64_t", /*default=*/"0",
           "CPU grouped_matmul: experts with at least this many rows take "
           "the panel kernel, others the decode (dot-product) kernel (0: "
           "5, or 16 for bf16 weights with amx-bf16). An op's own "
           "`moe.panel_min_rows` (i64) overrides it">,
    Option<"planBlockTokens", "plan-block", "int64_t", /*default=*/"0",
           "moe.dispatch_plan: tokens per block of the parallel plan "
           "(0: 256 on CPUs, 32 with gpu). An op's own `moe.plan_block` "
           "(i64) overrides it">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::func::FuncDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect",
    "::mlir::x86vector::X86VectorDialect",
    "::mlir::amx::AMXDialect",
    "::mlir::LLVM::LLVMDialect"
  ];
}

def MoEApplySchedule : Pass<"moe-apply-schedule", "::mlir::ModuleOp"> {
  let summary = "Run a transform-dialect schedule file on the module";
  let description = [{
    Parses `schedule`, a module holding a `transform.named_sequence
    @__transform_main`, and applies that sequence to the module. The CPU
    pipeline runs it right after `moe-expand-layer`, so a schedule sees
    every `moe.grouped_matmul` and can set one op's register tile with
    `transform.annotate %op "moe.tile" = %param` (an
    `array<i64: panel-vectors, tile-columns>`; see `moe-lower-to-loops`).
    Unlike `transform-preload-library`, the schedule is parsed for each
    run and owned by it, so one context can lower many modules, each with
    its own schedule. A missing file, a parse error, a missing entry point
    or a failing transform is a pass failure with its diagnostic.
  }];
  let options = [
    Option<"schedule", "schedule", "std::string", /*default=*/"",
           "Transform-dialect file with @__transform_main">
  ];
  let dependentDialects = ["::mlir::transform::TransformDialect"];
}

def MoEApproximateVectorMath : Pass<"moe-approximate-vector-math"> {
  let summary = "Polynomial approximations for math functions on vectors";
  let description = [{
    Rewrites `math.exp`, `math.erf` and `math.tanh` on vector operands (the
    activation epilogues of the grouped-GEMM kernels) into polynomial
    approximations in `arith`, which LLVM vectorizes; left alone, each lane
    becomes a libm call. Scalar math (routing scores, softmax, losses) keeps
    the libm functions, so routing decisions do not move.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoEInlineAllocaScopes : Pass<"moe-inline-alloca-scopes"> {
  let summary = "Inline memref.alloca_scope regions that allocate nothing";
  let description = [{
    `convert-scf-to-openmp` wraps every parallel loop body in a
    `memref.alloca_scope`, whose region must stay a single block, so
    `convert-scf-to-cf` cannot run after it. A scope whose region holds no
    `memref.alloca` releases nothing: this pass inlines such scopes into the
    enclosing block. Scopes that do allocate are kept.
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect"];
}

def MoEOffloadToGPU : Pass<"moe-offload-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Move every buffer access of host functions into GPU kernels";
  let description = [{
    Runs on bufferized functions (the output of `--moe-lower-to-loops=gpu`,
    one-shot bufferization and `convert-linalg-to-parallel-loops`) and
    rewrites each function body so that the host only allocates, launches
    and copies, and every load or store of buffer contents happens on the
    device:

    * `memref.alloc` / `memref.dealloc` (and top-level `memref.alloca`)
      become `gpu.alloc` / `gpu.dealloc`; a `memref.get_global` becomes a
      device buffer filled from the global;
    * a top-level `scf.parallel` becomes one `gpu.launch` of 256-thread
      blocks over its flattened iteration space (one iteration per thread,
      the last dimension fastest), skipped when the space is empty;
    * a contiguous `memref.copy` becomes `gpu.memcpy`;
    * every maximal run of other statements that touch memory (loop nests,
      loads, stores) becomes one single-thread `gpu.launch`, run in order;
      a scalar it computes that the host needs (a returned status, a size)
      is stored to a one-element device buffer and copied back.

    Side-effect-free scalar and buffer-metadata ops (`arith`, `memref.dim`,
    views) stay on the host, and so do calls of functions marked
    `moe.gpu_launcher`, which already launch their own kernels (those
    functions are left as they are). Function arguments are device
    buffers. Run `gpu-kernel-outlining` afterwards.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::NVVM::NVVMDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoEMergeGPUModules : Pass<"moe-merge-gpu-modules", "::mlir::ModuleOp"> {
  let summary = "Put every outlined kernel into one gpu.module";
  let description = [{
    `gpu-kernel-outlining` makes one `gpu.module` per kernel; each becomes
    its own device binary, loaded separately at program start. This pass
    moves the kernels of every `gpu.module` without a target into the
    first one and retargets the `gpu.launch_func` ops, so a compiled layer
    carries one PTX module / cubin (what `moe-compile --emit ptx|cubin`
    writes).
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
