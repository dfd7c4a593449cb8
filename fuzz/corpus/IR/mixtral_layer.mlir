// A Mixtral-style MoE block (the shapes of the `mixtral-small` preset):
// d = 1024, 8 experts of width 3584 with SwiGLU, top-2 softmax routing with
// the two weights renormalized to sum to 1. Any number of tokens.
//
//   moe-opt --moe-expand-layer examples/mixtral_layer.mlir

func.func @mixtral_moe(%x: tensor<?x1024xf32>,
                       %router: tensor<8x1024xf32>,
                       %w_gate_up: tensor<8x7168x1024xf32>,
                       %w_down: tensor<8x1024x3584xf32>) -> tensor<?x1024xf32> {
  %y = moe.layer %x gate(%router : tensor<8x1024xf32>)
      experts(%w_gate_up, %w_down : tensor<8x7168x1024xf32>, tensor<8x1024x3584xf32>)
      router <topk, k = 2, softmax, renormalize> activation <silu_glu>
      : tensor<?x1024xf32> -> tensor<?x1024xf32>
  return %y : tensor<?x1024xf32>
}
