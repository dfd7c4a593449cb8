// One case per verifier and parser message of the moe dialect.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

func.func @case0(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{capacity option 'factor' given twice}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = 1.0, factor = 2.0>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case1(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown capacity group 'everyone'; expected batch, sequence or request}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = 1.0, group = everyone>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case2(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown overflow policy 'spill'; expected drop, passthrough or reroute}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = 1.0, overflow = spill>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case3(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown capacity option 'size'; expected factor, absolute, group or overflow}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = 1.0, size = 3>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case4(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{capacity expects exactly one of 'factor' or 'absolute', found neither}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <group = batch>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case5(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{capacity factor must be a positive finite number, found -1}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <factor = -1.0>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case6(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{absolute capacity must be positive, found 0}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 1, softmax, capacity = <absolute = 0>> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case7(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown router family 'top_k'; expected topk, top_p, expert_choice, hash or balanced}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_k, k = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case8(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'sigmoid' given twice or contradicted}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax, sigmoid> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case9(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'k_max' does not apply to the 'topk' router; use 'k'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k_max = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case10(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'k' does not apply to the 'top_p' router; top_p uses 'k_max'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 0.5, k = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case11(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{unknown router option 'temperature'; expected k, k_max, softmax, sigmoid, renormalize, scale, bias, n_group, topk_group, softmax_after, p, capacity_factor, null_experts or capacity}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, temperature = 1.0> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case12(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'sigmoid' does not apply to the 'top_p' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 0.5, k_max = 2, sigmoid> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case13(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'renormalize' does not apply to the 'top_p' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 0.5, k_max = 2, renormalize> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case14(%ids: tensor<4xi32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{router option 'bias' does not apply to the 'hash' router}}
  %i, %w = moe.route token_ids(%ids : tensor<4xi32>) table(%t : tensor<16xi32>) experts 8 router <hash, bias> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case15(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'n_group' does not apply to the 'balanced' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <balanced, n_group = 2, topk_group = 1> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case16(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'softmax_after' does not apply to the 'top_p' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 0.5, k_max = 2, softmax_after> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case17(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'k' does not apply to the 'expert_choice' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <expert_choice, capacity_factor = 1.0, k = 2> -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @case18(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'scale' does not apply to the 'balanced' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <balanced, scale = 2.0> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case19(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'p' does not apply to the 'topk' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, p = 0.5> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case20(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router option 'capacity_factor' does not apply to the 'topk' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, capacity_factor = 1.0> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case21(%ids: tensor<4xi32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{router option 'null_experts' does not apply to the 'hash' router}}
  %i, %w = moe.route token_ids(%ids : tensor<4xi32>) table(%t : tensor<16xi32>) experts 8 router <hash, null_experts = 2> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case22(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{capacity applies to token-choice routers (topk, top_p, hash), not to 'expert_choice'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <expert_choice, capacity_factor = 1.0, capacity = <factor = 1.0>> -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @case23(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'topk' router expects k >= 1, found 0}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 0> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case24(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'top_p' router expects k_max >= 1, found 0}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 0.5> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case25(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{null_experts must be non-negative, found -1}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, null_experts = -1> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case26(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{scale must be a positive finite number, found 0}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, scale = 0.0> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case27(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'top_p' router expects 'p = F'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, k_max = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case28(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{top_p threshold p must be in (0, 1], found 1.5}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <top_p, p = 1.5, k_max = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case29(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'expert_choice' router expects 'capacity_factor = F'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <expert_choice> -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @case30(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{capacity_factor must be a positive finite number, found -2}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <expert_choice, capacity_factor = -2.0> -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @case31(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{softmax_after normalizes logits with a softmax; it cannot be combined with sigmoid scores}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, sigmoid, softmax_after> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case32(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{softmax_after already sums the selected weights to 1; drop 'renormalize'}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax, renormalize, softmax_after> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case33(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{n_group and topk_group must be given together, found n_group = 4, topk_group = 0}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, sigmoid, n_group = 4> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case34(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{topk_group must be in [1, n_group = 4], found 5}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, sigmoid, n_group = 4, topk_group = 5> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case35(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{null experts cannot be combined with group-limited routing (n_group)}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax, n_group = 4, topk_group = 2, null_experts = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case36(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{router k = 9 exceeds the number of experts (8 routed + 0 null)}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 9, softmax> -> tensor<4x9xi32>, tensor<4x9xf32>
  return
}

// -----

func.func @case37(%l: tensor<4x9xf32>) {
  // expected-error @+1 {{router k_max = 10 exceeds the number of experts (8 routed + 1 null)}}
  %i, %w = moe.route %l : tensor<4x9xf32> experts 8 router <top_p, p = 0.5, k_max = 10, null_experts = 1> -> tensor<4x10xi32>, tensor<4x10xf32>
  return
}

// -----

func.func @case38(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{n_group = 3 does not divide the 8 routed experts}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, sigmoid, n_group = 3, topk_group = 1> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case39(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{k = 6 exceeds the 4 experts of the topk_group = 2 best groups}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 6, sigmoid, n_group = 4, topk_group = 2> -> tensor<4x6xi32>, tensor<4x6xf32>
  return
}

// -----

func.func @case40(%x: tensor<4x64xf32>, %w: tensor<8x32xf32>) {
  // expected-error @+1 {{expected weight dim 1 (hidden size d) to be 64, found 32}}
  %r = moe.gate %x, %w : tensor<4x64xf32>, tensor<8x32xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @case41(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{expected result dim 0 (tokens) to be 4, found 5}}
  %r = moe.gate %x, %w : tensor<4x64xf32>, tensor<8x64xf32> -> tensor<5x8xf32>
  return
}

// -----

func.func @case42(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{expected result dim 1 (router rows) to be 8, found 6}}
  %r = moe.gate %x, %w : tensor<4x64xf32>, tensor<8x64xf32> -> tensor<4x6xf32>
  return
}

// -----

func.func @case43(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{expected result element type 'f32', found 'bf16'}}
  %r = moe.gate %x, %w : tensor<4x64xf32>, tensor<8x64xf32> -> tensor<4x8xbf16>
  return
}

// -----

func.func @case44(%x: tensor<4x64xf32>, %w: tensor<8x64xf32>, %b: tensor<6xf32>) {
  // expected-error @+1 {{expected bias length (router rows) to be 8, found 6}}
  %r = moe.gate %x, %w bias(%b : tensor<6xf32>) : tensor<4x64xf32>, tensor<8x64xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @case45(%x: tensor<4x64xi32>, %w: tensor<8x64xf32>) {
  // expected-error @+1 {{operand #0 must be 2D tensor of 32-bit float or 16-bit float or bfloat16 type values}}
  %r = moe.gate %x, %w : tensor<4x64xi32>, tensor<8x64xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @case46(%ids: tensor<4xi32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{the 'topk' router needs logits}}
  %i, %w = moe.route token_ids(%ids : tensor<4xi32>) table(%t : tensor<16xi32>) experts 8 router <topk, k = 2, softmax> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case47(%l: tensor<4x8xf32>, %ids: tensor<4xi32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{the 'hash' router takes no logits}}
  %i, %w = moe.route %l : tensor<4x8xf32> token_ids(%ids : tensor<4xi32>) table(%t : tensor<16xi32>) experts 8 router <hash> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case48(%ids: tensor<4xi32>) {
  // expected-error @+1 {{the 'hash' router needs both token_ids and table}}
  %i, %w = moe.route token_ids(%ids : tensor<4xi32>) experts 8 router <hash> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case49(%l: tensor<4x8xf32>, %ids: tensor<4xi32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{token_ids and table are only used by the 'hash' router}}
  %i, %w = moe.route %l : tensor<4x8xf32> token_ids(%ids : tensor<4xi32>) table(%t : tensor<16xi32>) experts 8 router <topk, k = 2, softmax> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case50(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{the router's 'bias' option needs a bias operand}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, sigmoid, bias> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case51(%l: tensor<4x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{a bias operand needs the router's 'bias' option}}
  %i, %w = moe.route %l : tensor<4x8xf32> bias(%b : tensor<8xf32>) experts 8 router <topk, k = 2, sigmoid> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case52(%l: tensor<4x8xf32>, %b: tensor<7xf32>) {
  // expected-error @+1 {{expected bias length (routed experts) to be 8, found 7}}
  %i, %w = moe.route %l : tensor<4x8xf32> bias(%b : tensor<7xf32>) experts 8 router <topk, k = 2, sigmoid, bias> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case53(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected logits dim 1 (routed + null experts) to be 10, found 8}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax, null_experts = 2> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case54(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected indices dim 0 (tokens) to be 4, found 5}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax> -> tensor<5x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case55(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected indices dim 1 (slots per token) to be 2, found 3}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax> -> tensor<4x3xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case56(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected weights dim 0 (tokens) to be 4, found 3}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax> -> tensor<4x2xi32>, tensor<3x2xf32>
  return
}

// -----

func.func @case57(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{expected weights dim 1 (slots per token) to be 2, found 1}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 8 router <topk, k = 2, softmax> -> tensor<4x2xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @case58(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op attribute 'num_experts' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %i, %w = moe.route %l : tensor<4x8xf32> experts 0 router <topk, k = 2, softmax> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @case59(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expected perm length (tokens x slots) to be 8, found 6}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 : tensor<4x2xi32> -> tensor<6xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case60(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expected offsets length (experts + 1) to be 9, found 8}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 : tensor<4x2xi32> -> tensor<8xi32>, tensor<8xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case61(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expected rows dim 0 (tokens) to be 4, found 2}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<2x2xi32>
  return
}

// -----

func.func @case62(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expected rows dim 1 (slots per token) to be 2, found 1}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x1xi32>
  return
}

// -----

func.func @case63(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{overflow = reroute needs a 'scores' operand to rank alternative experts}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 capacity <factor = 1.0, overflow = reroute> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case64(%i: tensor<4x2xi32>, %s: tensor<4x8xf32>) {
  // expected-error @+1 {{'scores' is only used by overflow = reroute}}
  %p, %o, %r = moe.dispatch_plan %i scores(%s : tensor<4x8xf32>) experts 8 capacity <factor = 1.0, overflow = drop> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case65(%i: tensor<4x2xi32>, %s: tensor<3x8xf32>) {
  // expected-error @+1 {{expected scores dim 0 (tokens) to be 4, found 3}}
  %p, %o, %r = moe.dispatch_plan %i scores(%s : tensor<3x8xf32>) experts 8 capacity <factor = 1.0, overflow = reroute> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case66(%i: tensor<4x2xi32>, %s: tensor<4x4xf32>) {
  // expected-error @+1 {{expected scores dim 1 to cover the 8 experts, found 4}}
  %p, %o, %r = moe.dispatch_plan %i scores(%s : tensor<4x4xf32>) experts 8 capacity <factor = 1.0, overflow = reroute> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case67(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{capacity counted per 'sequence' needs a 'groups' operand with the group boundaries}}
  %p, %o, %r = moe.dispatch_plan %i experts 8 capacity <absolute = 2, group = sequence> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case68(%i: tensor<4x2xi32>, %g: tensor<3xi32>) {
  // expected-error @+1 {{'groups' is only used by capacity counted per sequence or request}}
  %p, %o, %r = moe.dispatch_plan %i groups(%g : tensor<3xi32>) experts 8 capacity <absolute = 2, group = batch> : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @case69(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x32xf32>) {
  // expected-error @+1 {{expected weight dim 2 (input features) to be 64, found 32}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <none> : tensor<16x64xf32>, tensor<8x128x32xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case70(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<4x128x64xf32>) {
  // expected-error @+1 {{expected offsets length (experts + 1) to be 5, found 9}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <none> : tensor<16x64xf32>, tensor<4x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case71(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expected result element type 'f32', found 'bf16'}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <none> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xbf16>
  return
}

// -----

func.func @case72(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expected result dim 0 (gathered rows) to be 32, found 16}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <none> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<16x128xf32>
  return
}

// -----

func.func @case73(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expected result dim 0 (input rows) to be 16, found 32}}
  %y = moe.grouped_matmul %x, %w, %o epilogue <none> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case74(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x127x64xf32>) {
  // expected-error @+1 {{epilogue silu_glu expects an even number of weight rows (gate then up), found 127}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <silu_glu> : tensor<16x64xf32>, tensor<8x127x64xf32>, tensor<9xi32> -> tensor<32x63xf32>
  return
}

// -----

func.func @case75(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expected result dim 1 (half the weight rows) to be 64, found 128}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <silu_glu> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case76(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expected result dim 1 (weight rows) to be 128, found 64}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <relu> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @case77(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+1 {{epilogue 'scale' needs a row_scale operand}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <scale> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case78(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>, %s: tensor<32xf32>) {
  // expected-error @+1 {{row_scale is only used by the 'scale' epilogue, found epilogue 'none'}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) row_scale(%s : tensor<32xf32>) epilogue <none> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case79(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>, %s: tensor<16xf32>) {
  // expected-error @+1 {{expected row_scale length (result rows) to be 32, found 16}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) row_scale(%s : tensor<16xf32>) epilogue <scale> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case80(%x: tensor<16x64xf32>, %p: tensor<32xi32>, %o: tensor<9xi32>, %w: tensor<8x128x64xf32>) {
  // expected-error @+2 {{expected ::mlir::moe::Epilogue to be one of: none, silu_glu, gelu, relu, scale}}
  // expected-error @+1 {{failed to parse MoE_EpilogueAttr parameter 'value' which is to be a `::mlir::moe::Epilogue`}}
  %y = moe.grouped_matmul %x, %w, %o gather(%p : tensor<32xi32>) epilogue <swiglu> : tensor<16x64xf32>, tensor<8x128x64xf32>, tensor<9xi32> -> tensor<32x128xf32>
  return
}

// -----

func.func @case81(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<8x2xi32>) {
  // expected-error @+1 {{expected rows dim 0 (tokens) to be 16, found 8}}
  %o = moe.combine %y, %w, %r : tensor<32x64xf32>, tensor<16x2xf32>, tensor<8x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case82(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x1xi32>) {
  // expected-error @+1 {{expected rows dim 1 (slots per token) to be 2, found 1}}
  %o = moe.combine %y, %w, %r : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x1xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case83(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>) {
  // expected-error @+1 {{expected result dim 0 (tokens) to be 16, found 8}}
  %o = moe.combine %y, %w, %r : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<8x64xf32>
  return
}

// -----

func.func @case84(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>) {
  // expected-error @+1 {{expected result dim 1 (columns) to be 64, found 32}}
  %o = moe.combine %y, %w, %r : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x32xf32>
  return
}

// -----

func.func @case85(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>) {
  // expected-error @+1 {{expected result element type 'f32', found 'f16'}}
  %o = moe.combine %y, %w, %r : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf16>
  return
}

// -----

func.func @case86(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>, %x: tensor<4x64xf32>) {
  // expected-error @+1 {{expected passthrough dim 0 (tokens) to be 16, found 4}}
  %o = moe.combine %y, %w, %r passthrough(%x : tensor<4x64xf32>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case87(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>, %x: tensor<16x32xf32>) {
  // expected-error @+1 {{expected passthrough dim 1 (columns) to be 64, found 32}}
  %o = moe.combine %y, %w, %r passthrough(%x : tensor<16x32xf32>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case88(%y: tensor<32x64xf32>, %w: tensor<16x2xf32>, %r: tensor<16x2xi32>, %x: tensor<16x64xbf16>) {
  // expected-error @+1 {{expected passthrough element type 'f32', found 'bf16'}}
  %o = moe.combine %y, %w, %r passthrough(%x : tensor<16x64xbf16>) : tensor<32x64xf32>, tensor<16x2xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case89(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected result dim 0 (input rows) to be 32, found 16}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<16x16xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>, %we: tensor<16x64xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case90(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected the body to take 3 arguments (expert index, rows, one slice per weight), found 2}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case91(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected body argument #0 (expert index) to be index, found 'i32'}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: i32, %r: tensor<?x64xf32>, %we: tensor<16x64xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case92(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected body argument #1 (rows) to be 'tensor<?x64xf32>', found 'tensor<32x64xf32>'}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: index, %r: tensor<32x64xf32>, %we: tensor<16x64xf32>):
    moe.yield %r : tensor<32x64xf32>
  }
  return
}

// -----

func.func @case93(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<4x16x64xf32>) {
  // expected-error @+1 {{expected weight #0 dim 0 (experts) to be 8, found 4}}
  %e = moe.experts %x, %o weights(%w : tensor<4x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>, %we: tensor<16x64xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case94(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<f32>) {
  // expected-error @+1 {{expected weight #0 to have a leading expert dimension, found 'tensor<f32>'}}
  %e = moe.experts %x, %o weights(%w : tensor<f32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>, %we: tensor<f32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case95(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected body argument #2 (slice of weight #0) to be 'tensor<16x64xf32>', found 'tensor<64x16xf32>'}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x64xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>, %we: tensor<64x16xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case96(%x: tensor<32x64xf32>, %o: tensor<9xi32>, %w: tensor<8x16x64xf32>) {
  // expected-error @+1 {{expected the body to yield 'tensor<?x16xf32>', found 'tensor<?x64xf32>'}}
  %e = moe.experts %x, %o weights(%w : tensor<8x16x64xf32>) : tensor<32x64xf32>, tensor<9xi32> -> tensor<32x16xf32> {
  ^bb0(%i: index, %r: tensor<?x64xf32>, %we: tensor<16x64xf32>):
    moe.yield %r : tensor<?x64xf32>
  }
  return
}

// -----

func.func @case97(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected the result type to equal the input type 'tensor<16x64xf32>', found 'tensor<8x64xf32>'}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @case98(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<?x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected a static number of experts (w1 dim 0)}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<?x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case99(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x32xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected w1 dim 2 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x32xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case100(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<4x64x128xf32>) {
  // expected-error @+1 {{expected w2 dim 0 (experts) to be 8, found 4}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<4x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case101(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x32x128xf32>) {
  // expected-error @+1 {{expected w2 dim 1 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x32x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case102(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected w1 dim 1 (gate and up rows, 2 x ffn) to be 256, found 128}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x128x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case103(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected w1 dim 1 (ffn) to be 128, found 256}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <gelu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case104(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{router k = 9 exceeds the number of experts (8 routed + 0 null)}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 9, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case105(%x: tensor<16x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{the 'topk' router needs a gate(...) operand}}
  %y = moe.layer %x experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case106(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %ids: tensor<16xi32>, %t: tensor<64xi32>) {
  // expected-error @+1 {{the 'hash' router takes no gate(...) operand}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) token_ids(%ids : tensor<16xi32>) hash_table(%t : tensor<64xi32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <hash> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case107(%x: tensor<16x64xf32>, %g: tensor<6x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected gate dim 0 (routed + null experts) to be 8, found 6}}
  %y = moe.layer %x gate(%g : tensor<6x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case108(%x: tensor<16x64xf32>, %g: tensor<8x32xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected gate dim 1 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x32xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case109(%x: tensor<16x64xf32>, %b: tensor<8xf32>, %ids: tensor<16xi32>, %t: tensor<64xi32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{gate_bias needs a gate(...) operand}}
  %y = moe.layer %x gate_bias(%b : tensor<8xf32>) token_ids(%ids : tensor<16xi32>) hash_table(%t : tensor<64xi32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <hash> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case110(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %b: tensor<9xf32>) {
  // expected-error @+1 {{expected gate_bias length (routed + null experts) to be 8, found 9}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) gate_bias(%b : tensor<9xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case111(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{the router's 'bias' option needs a selection_bias(...) operand}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, sigmoid, bias> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case112(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{selection_bias needs the router's 'bias' option}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) selection_bias(%b : tensor<8xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, sigmoid> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case113(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{expected selection_bias length (routed experts) to be 8, found 4}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) selection_bias(%b : tensor<4xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, sigmoid, bias> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case114(%x: tensor<16x64xf32>, %ids: tensor<16xi32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{the 'hash' router needs token_ids(...) and hash_table(...)}}
  %y = moe.layer %x token_ids(%ids : tensor<16xi32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <hash> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case115(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %ids: tensor<16xi32>, %t: tensor<64xi32>) {
  // expected-error @+1 {{token_ids and hash_table are only used by the 'hash' router}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) token_ids(%ids : tensor<16xi32>) hash_table(%t : tensor<64xi32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case116(%x: tensor<16x64xf32>, %ids: tensor<15xi32>, %t: tensor<64xi32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{expected token_ids length (tokens) to be 16, found 15}}
  %y = moe.layer %x token_ids(%ids : tensor<15xi32>) hash_table(%t : tensor<64xi32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <hash> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case117(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x32xf32>, %s2: tensor<64x32xf32>) {
  // expected-error @+1 {{expected shared_w1 dim 1 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<64x32xf32>, tensor<64x32xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case118(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x64xf32>, %s2: tensor<32x32xf32>) {
  // expected-error @+1 {{expected shared_w2 dim 0 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<64x64xf32>, tensor<32x32xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case119(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<32x64xf32>, %s2: tensor<64x32xf32>) {
  // expected-error @+1 {{expected shared_w1 dim 0 (gate and up rows, 2 x ffn) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<32x64xf32>, tensor<64x32xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case120(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x128x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x64xf32>, %s2: tensor<64x32xf32>) {
  // expected-error @+1 {{expected shared_w1 dim 0 (ffn) to be 32, found 64}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x128x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<64x64xf32>, tensor<64x32xf32>) router <topk, k = 2, softmax> activation <relu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case121(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %sg: tensor<1x64xf32>) {
  // expected-error @+1 {{shared_gate needs shared(...) experts}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared_gate(%sg : tensor<1x64xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case122(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x64xf32>, %s2: tensor<64x32xf32>, %sg: tensor<2x64xf32>) {
  // expected-error @+1 {{expected shared_gate dim 0 to be 1, found 2}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<64x64xf32>, tensor<64x32xf32>) shared_gate(%sg : tensor<2x64xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case123(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x64xf32>, %s2: tensor<64x32xf32>, %sg: tensor<1x32xf32>) {
  // expected-error @+1 {{expected shared_gate dim 1 (hidden size) to be 64, found 32}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) shared(%s1, %s2 : tensor<64x64xf32>, tensor<64x32xf32>) shared_gate(%sg : tensor<1x32xf32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case124(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{capacity counted per 'request' needs a groups(...) operand with the request boundaries}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax, capacity = <factor = 1.0, group = request>> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case125(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{capacity counted per 'sequence' needs a [batch, seq, d] input or a groups(...) operand}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax, capacity = <factor = 1.0, group = sequence>> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case126(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{overflow = reroute ranks alternative experts by logit, which is not defined together with a selection bias}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) selection_bias(%b : tensor<8xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, sigmoid, bias, capacity = <factor = 1.0, overflow = reroute>> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case127(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %gr: tensor<3xi32>) {
  // expected-error @+1 {{groups(...) is only used by capacity counted per sequence or request}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) groups(%gr : tensor<3xi32>) router <topk, k = 2, softmax> activation <silu_glu> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case128(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+2 {{expected ::mlir::moe::Activation to be one of: silu_glu, gelu, relu}}
  // expected-error @+1 {{failed to parse MoE_ActivationAttr parameter 'value' which is to be a `::mlir::moe::Activation`}}
  %y = moe.layer %x gate(%g : tensor<8x64xf32>) experts(%w1, %w2 : tensor<8x256x64xf32>, tensor<8x64x128xf32>) router <topk, k = 2, softmax> activation <swish> : tensor<16x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case129(%x: tensor<16x64xf32>, %g: tensor<8x64xf32>, %w1: tensor<8x256x64xf32>, %w2: tensor<8x64x128xf32>, %s1: tensor<64x64xf32>) {
  // expected-error @+1 {{shared_w1 and shared_w2 must be given together}}
  %y = "moe.layer"(%x, %g, %w1, %w2, %s1) <{activation = #moe.activation<silu_glu>, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0>, router = #moe.router<topk, k = 2, softmax>}> : (tensor<16x64xf32>, tensor<8x64xf32>, tensor<8x256x64xf32>, tensor<8x64x128xf32>, tensor<64x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @case130(%p: tensor<4x8xf32>, %i: tensor<5x2xi32>) {
  // expected-error @+1 {{expected indices dim 0 (tokens) to be 4, found 5}}
  %a = moe.aux_loss %p, %i : tensor<4x8xf32>, tensor<5x2xi32> -> tensor<f32>
  return
}

// -----

func.func @case131(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expected a static result length (the number of experts), found 'tensor<?xi32>'}}
  %l = moe.expert_load %i : tensor<4x2xi32> -> tensor<?xi32>
  return
}

// -----

func.func @case132(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{result #0 must be 0D tensor of 32-bit float values}}
  %z = moe.z_loss %l : tensor<4x8xf32> -> tensor<1xf32>
  return
}
