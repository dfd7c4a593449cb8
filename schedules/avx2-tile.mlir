// A transform-dialect schedule for moe-mlir's CPU pipeline: every
// moe.grouped_matmul gets the register tile the cost model picks for AVX2
// (one vector of 16 token rows by 6 weight rows), whatever the target.
//
//   moe-compile --schedule schedules/avx2-tile.mlir ...
//   moe-opt --moe-cpu-pipeline="schedule=schedules/avx2-tile.mlir" in.mlir
//
// `moe.tile` is array<i64: panel-vectors, tile-columns>: 1 to 4 vectors of
// 16 rows, an even number of columns from 2 to 32 (docs/design.md, "Tile
// sizes"). A schedule runs after moe-expand-layer, so it sees the
// grouped_matmul ops of every layer and can match them one by one.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %tile = transform.param.constant array<i64: 1, 6> -> !transform.any_param
    transform.annotate %matmuls "moe.tile" = %tile
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
