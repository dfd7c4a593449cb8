// A schedule for the work-item tests: every expert with at least one row
// takes the panel kernel (one-row experts in a 32-row panel), in 7 work
// items per expert.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %chunks = transform.param.constant 7 : i64 -> !transform.any_param
    transform.annotate %matmuls "moe.column_chunks" = %chunks
        : !transform.any_op, !transform.any_param
    %rows = transform.param.constant 1 : i64 -> !transform.any_param
    transform.annotate %matmuls "moe.panel_min_rows" = %rows
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
