// A schedule for the dispatch-plan tests: blocks of 1 token(s), so even
// the difftest's small batches take several blocks of the parallel plan.
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %plans = transform.structured.match ops{["moe.dispatch_plan"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %block = transform.param.constant 1 : i64 -> !transform.any_param
    transform.annotate %plans "moe.plan_block" = %block
        : !transform.any_op, !transform.any_param
    transform.yield
  }
}
