// A schedule for the k-blocking tests: every moe.grouped_matmul takes k in
// blocks of 4 steps (values of k, or pairs of them for bf16 weights), so
// the small layers of moe-difftest keep partial sums between blocks.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %matmuls = transform.structured.match ops{["moe.grouped_matmul"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %steps = transform.param.constant 4 : i64 -> !transform.any_param
    transform.annotate %matmuls "moe.depth_block" = %steps
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
