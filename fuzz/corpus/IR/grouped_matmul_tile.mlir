func.func @tiles(%x: tensor<?x24xf32>, %w: tensor<4x40x24xf32>,
                 %wb: tensor<4x40x24xbf16>, %offsets: tensor<5xi32>)
    -> (tensor<?x20xf32>, tensor<?x40xf32>, tensor<?x40xf32>) {
  %a = moe.grouped_matmul %x, %w, %offsets epilogue <silu_glu>
      {moe.tile = array<i64: 3, 4>, moe.column_chunks = 6 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xf32>, tensor<5xi32> -> tensor<?x20xf32>
  %b = moe.grouped_matmul %x, %wb, %offsets epilogue <relu>
      {moe.tile = array<i64: 1, 6>, moe.depth_block = 5 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xbf16>, tensor<5xi32> -> tensor<?x40xf32>
  %c = moe.grouped_matmul %x, %w, %offsets epilogue <none>
      {moe.depth_block = 7 : i64, moe.panel_min_rows = 1 : i64}
      : tensor<?x24xf32>, tensor<4x40x24xf32>, tensor<5xi32> -> tensor<?x40xf32>
  return %a, %b, %c : tensor<?x20xf32>, tensor<?x40xf32>, tensor<?x40xf32>
}
