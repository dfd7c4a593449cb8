// A schedule with a tile the kernel cannot build (an odd column count),
// for the error tests.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %tile = transform.param.constant array<i64: 2, 7> -> !transform.any_param
    transform.annotate %matmuls "moe.tile" = %tile
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
