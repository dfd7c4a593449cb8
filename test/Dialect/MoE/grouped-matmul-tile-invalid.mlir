// RUN: moe-opt --moe-lower-to-loops --verify-diagnostics --split-input-file %s

// A moe.tile the panel kernel cannot build is a located error.
func.func @odd_columns(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf32>,
                       %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{has an unsupported 'moe.tile' array<i64: 2, 7> (expected 1 to 4 panel vectors and an even number of columns from 2 to 32)}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu> {moe.tile = array<i64: 2, 7>}
      : tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

func.func @too_many_vectors(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf32>,
                            %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{has an unsupported 'moe.tile' array<i64: 5, 2>}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu> {moe.tile = array<i64: 5, 2>}
      : tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

func.func @not_an_array(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf32>,
                        %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{expects 'moe.tile' to be array<i64: panel-vectors, tile-columns>, not 12 : i64}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu> {moe.tile = 12}
      : tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// moe.depth_block counts k steps per block: a positive integer.
func.func @zero_depth_block(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf32>,
                            %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{expects 'moe.depth_block' to be a positive integer of at most 32 bits (k steps per block), not 0 : i64}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu> {moe.depth_block = 0 : i64}
      : tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

func.func @array_depth_block(%x: tensor<?x64xf32>, %w: tensor<4x32x64xf32>,
                             %offsets: tensor<5xi32>) -> tensor<?x32xf32> {
  // expected-error @below {{expects 'moe.depth_block' to be a positive integer of at most 32 bits (k steps per block), not array<i64: 4>}}
  %y = moe.grouped_matmul %x, %w, %offsets epilogue <relu> {moe.depth_block = array<i64: 4>}
      : tensor<?x64xf32>, tensor<4x32x64xf32>, tensor<5xi32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// Bad work-item attributes (moe.column_chunks, moe.panel_min_rows).
func.func @zero_chunks(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                       %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  // expected-error @below {{expects 'moe.column_chunks' to be a positive integer of at most 32 bits (work items per expert), not 0 : i64}}
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.column_chunks = 0 : i64}
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}

// -----

func.func @big_chunks(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                      %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  // expected-error @below {{expects 'moe.column_chunks' to be a positive integer of at most 32 bits (work items per expert), not 8589934592 : i64}}
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.column_chunks = 8589934592 : i64}
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}

// -----

func.func @rows_not_integer(%x: tensor<?x64xf32>, %w: tensor<4x96x64xf32>,
                            %offsets: tensor<5xi32>) -> tensor<?x48xf32> {
  // expected-error @below {{expects 'moe.panel_min_rows' to be a positive integer of at most 32 bits (rows an expert needs for the panel kernel), not "16"}}
  %h = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.panel_min_rows = "16"}
      : tensor<?x64xf32>, tensor<4x96x64xf32>, tensor<5xi32> -> tensor<?x48xf32>
  return %h : tensor<?x48xf32>
}
