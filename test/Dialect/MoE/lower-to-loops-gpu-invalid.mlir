// RUN: moe-opt --moe-lower-to-loops=gpu --split-input-file --verify-diagnostics %s

// The GPU forms take f32 tokens and results with f32 or bf16 weights;
// anything else is a located error, not silently wrong code.
func.func @f16_weights(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf16>,
                       %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{has no GPU lowering for 'f32' tokens, 'f16' weights and 'f32' results yet (f32 tokens and results, f32 or bf16 weights)}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu>
      : tensor<?x64xf32>, tensor<4x32x64xf16>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

func.func @bf16_tokens(%x: tensor<?x64xbf16>, %w: tensor<4x32x64xbf16>,
                       %offsets: tensor<5xi32>) -> tensor<?x32xbf16> {
  // expected-error @below {{has no GPU lowering for 'bf16' tokens, 'bf16' weights and 'bf16' results yet}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu>
      : tensor<?x64xbf16>, tensor<4x32x64xbf16>, tensor<5xi32> -> tensor<?x32xbf16>
  return %y : tensor<?x32xbf16>
}
