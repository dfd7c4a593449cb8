// RUN: moe-opt --moe-lower-to-loops=gpu --verify-diagnostics %s

// The GPU forms take f32 weights only; bf16 weights are a located error,
// not silently wrong code.
func.func @bf16_weights(%x: tensor<?x64xf32>, %w: tensor<4x32x64xbf16>,
                        %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{has no GPU lowering for weights of type 'bf16' yet (f32 only)}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu>
      : tensor<?x64xf32>, tensor<4x32x64xbf16>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
