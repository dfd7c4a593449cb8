//===- MoEOpsTest.cpp - moe ops and passes through the C++ API ------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "gtest/gtest.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

constexpr const char *kMixtralLayer = R"mlir(
func.func @layer(%x: tensor<?x16xf32>, %wg: tensor<4x16xf32>,
                 %w1: tensor<4x64x16xf32>, %w2: tensor<4x16x32xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x gate(%wg : tensor<4x16xf32>)
      experts(%w1, %w2 : tensor<4x64x16xf32>, tensor<4x16x32xf32>)
      router <topk, k = 2, softmax, renormalize> activation <silu_glu>
      : tensor<?x16xf32> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
)mlir";

class MoEOpsTest : public ::testing::Test {
protected:
  MoEOpsTest() {
    static bool registered = (registerMoEPasses(), true);
    (void)registered;
    context.loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect,
                        linalg::LinalgDialect, math::MathDialect,
                        tensor::TensorDialect>();
  }

  template <typename OpTy>
  static int count(ModuleOp module) {
    int n = 0;
    module.walk([&](OpTy) { ++n; });
    return n;
  }

  MLIRContext context;
};

TEST_F(MoEOpsTest, ExpandLayerPatternsThroughTheGreedyDriver) {
  OwningOpRef<ModuleOp> module =
      parseSourceString<ModuleOp>(kMixtralLayer, &context);
  ASSERT_TRUE(module);
  RewritePatternSet patterns(&context);
  populateMoEExpandLayerPatterns(patterns);
  ASSERT_TRUE(succeeded(applyPatternsGreedily(*module, std::move(patterns))));
  ASSERT_TRUE(succeeded(verify(*module)));
  EXPECT_EQ(count<LayerOp>(*module), 0);
  EXPECT_EQ(count<GateOp>(*module), 1);
  EXPECT_EQ(count<RouteOp>(*module), 1);
  EXPECT_EQ(count<DispatchPlanOp>(*module), 1);
  EXPECT_EQ(count<GroupedMatmulOp>(*module), 2);
  EXPECT_EQ(count<CombineOp>(*module), 1);
}

TEST_F(MoEOpsTest, ExpandLayerPassFromATextualPipeline) {
  OwningOpRef<ModuleOp> module =
      parseSourceString<ModuleOp>(kMixtralLayer, &context);
  ASSERT_TRUE(module);
  // The manager is anchored on builtin.module and the text names only the
  // passes: a "builtin.module(...)" wrapper here would nest a second module
  // pass manager that matches no op and silently runs nothing.
  PassManager pm(&context, ModuleOp::getOperationName());
  ASSERT_TRUE(
      succeeded(parsePassPipeline("moe-expand-layer", pm, llvm::errs())));
  ASSERT_TRUE(succeeded(pm.run(*module)));
  EXPECT_EQ(count<LayerOp>(*module), 0);
  EXPECT_EQ(count<GroupedMatmulOp>(*module), 2);
}

TEST_F(MoEOpsTest, ExpertLoadFoldsConstantIndices) {
  OpBuilder builder(&context);
  Location loc = builder.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  builder.setInsertionPointToEnd(module->getBody());
  auto indicesType = RankedTensorType::get({3, 2}, builder.getI32Type());
  // Slots: experts 2, 0, 2, -1 (empty), 5 (a null expert of a 4-expert
  // layer) and 1. Only in-range indices count.
  auto indices = DenseIntElementsAttr::get(
      indicesType, ArrayRef<int32_t>{2, 0, 2, -1, 5, 1});
  Value constant = arith::ConstantOp::create(builder, loc, indices);
  auto loadType = RankedTensorType::get({4}, builder.getI32Type());
  Value load = builder.createOrFold<ExpertLoadOp>(loc, loadType, constant);
  DenseIntElementsAttr folded;
  ASSERT_TRUE(matchPattern(load, m_Constant(&folded)));
  SmallVector<int32_t> counts(folded.getValues<int32_t>());
  EXPECT_EQ(counts, (SmallVector<int32_t>{1, 1, 2, 0}));
}

} // namespace

// The tile cost model (docs/design.md, "Tile sizes"): the tiles measured
// fastest on this machine for AVX-512 and AVX2, every tile it returns one
// the kernel builds, and the smallest tile when no tile meets its rules.
TEST(CPUTileTest, CostModel) {
  auto expectTile = [](CPUVectorUnit unit, TileOperands operands,
                       int64_t panelVectors, int64_t columns) {
    CPUTile tile = chooseCPUTile(unit, operands);
    EXPECT_EQ(tile.panelVectors, panelVectors) << unit.bits;
    EXPECT_EQ(tile.columns, columns) << unit.bits;
  };
  for (TileOperands operands : {TileOperands::F32, TileOperands::BF16Dot,
                                TileOperands::BF16Emulated})
    expectTile({512, 32}, operands, 2, 12);
  expectTile({256, 16}, TileOperands::F32, 1, 6);
  expectTile({256, 16}, TileOperands::BF16Emulated, 1, 4);
  expectTile({128, 16}, TileOperands::F32, 1, 2);
  for (unsigned bits : {128u, 256u, 512u})
    for (unsigned registers : {8u, 16u, 32u, 64u})
      for (TileOperands operands :
           {TileOperands::F32, TileOperands::BF16Emulated})
        EXPECT_TRUE(
            isSupportedCPUTile(chooseCPUTile({bits, registers}, operands)))
            << bits << " bits, " << registers << " registers";
  EXPECT_FALSE(isSupportedCPUTile({2, 7}));
  EXPECT_FALSE(isSupportedCPUTile({0, 12}));
  EXPECT_FALSE(isSupportedCPUTile({5, 12}));
  EXPECT_FALSE(isSupportedCPUTile({2, 34}));
}
