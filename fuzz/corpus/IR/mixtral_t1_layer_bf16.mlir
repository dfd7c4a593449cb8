// The MoE block of testdata/golden/mixtral_t1 written by hand as moe IR.
func.func @mixtral_t1(%x: tensor<?x64xf32>, %router: tensor<8x64xf32>,
                      %w1: tensor<8x192x64xbf16>, %w2: tensor<8x64x96xbf16>) -> tensor<?x64xf32> {
  %y = moe.layer %x gate(%router : tensor<8x64xf32>)
      experts(%w1, %w2 : tensor<8x192x64xbf16>, tensor<8x64x96xbf16>)
      router <topk, k = 2, softmax, renormalize> activation <silu_glu>
      : tensor<?x64xf32> -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
