// A schedule for the tile tests: every moe.grouped_matmul takes a 3 x 4
// tile (48-row panels; last panels of 1, 2 or 3 vectors).
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %tile = transform.param.constant array<i64: 3, 4> -> !transform.any_param
    transform.annotate %matmuls "moe.tile" = %tile
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
