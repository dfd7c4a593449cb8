// A transform-dialect schedule for moe-mlir's CPU pipeline: every
// moe.grouped_matmul sends all its experts to the panel kernel, however
// few rows they have (`moe.panel_min_rows` = 1; by default experts with at
// most 4 rows take the decode kernel, docs/design.md, "Decode kernel").
//
//   moe-compile --schedule schedules/panel-kernel-only.mlir ...
//   moe-run --schedule schedules/panel-kernel-only.mlir ...
//
// The two kernels add a row's products in different orders, so by default
// a row's output can move by rounding when other rows of the batch push
// its expert across the threshold. With one kernel for every row count it
// does not: a request's output is bitwise the same alone and inside any
// batch whose routing leaves its tokens where they were (docs/errors.md,
// "Capacity per request"). The price is decode speed: an expert with one
// row computes a padded 16-row panel.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %rows = transform.param.constant 1 : i64 -> !transform.any_param
    transform.annotate %matmuls "moe.panel_min_rows" = %rows
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
