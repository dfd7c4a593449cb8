// A function that reads wherever its caller says: asan.test's proof that
// an out-of-bounds access in code moe-compile --sanitize address generates
// is reported.
func.func @pick(%values: tensor<?xf32>, %at: index) -> f32 {
  %v = tensor.extract %values[%at] : tensor<?xf32>
  return %v : f32
}
