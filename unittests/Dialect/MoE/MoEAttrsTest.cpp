//===- MoEAttrsTest.cpp - C++ API of #moe.capacity and #moe.router --------===//

#include "moe/Dialect/MoE/IR/MoEAttrs.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include "gtest/gtest.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

class MoEAttrsTest : public ::testing::Test {
protected:
  MoEAttrsTest() { context.loadDialect<MoEDialect>(); }

  /// Parses `text`, returning a null attribute and the diagnostic on error.
  Attribute parse(StringRef text) {
    diagnostic.clear();
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      diagnostic = diag.str();
      return success();
    });
    return parseAttribute(text, &context);
  }

  static std::string print(Attribute attr) {
    std::string text;
    llvm::raw_string_ostream os(text);
    attr.print(os);
    return text;
  }

  CapacityAttr capacity(StringRef text) {
    return dyn_cast_or_null<CapacityAttr>(parse(text));
  }

  MLIRContext context;
  std::string diagnostic;
};

TEST_F(MoEAttrsTest, CapacityFromFactorRoundsUp) {
  CapacityAttr c = capacity("#moe.capacity<factor = 1.25>");
  ASSERT_TRUE(c);
  // 1.25 * 8 tokens * 1 slot / 2 experts = 5 exactly: no spurious round-up.
  EXPECT_EQ(c.computeCapacity(8, 1, 2), 5);
  // 1.25 * 10 * 2 / 4 = 6.25 -> 7.
  EXPECT_EQ(c.computeCapacity(10, 2, 4), 7);
  // Zero tokens need no capacity.
  EXPECT_EQ(c.computeCapacity(0, 2, 4), 0);
}

TEST_F(MoEAttrsTest, AbsoluteCapacityIgnoresGroupSize) {
  CapacityAttr c = capacity("#moe.capacity<absolute = 3, group = sequence>");
  ASSERT_TRUE(c);
  EXPECT_EQ(c.computeCapacity(1, 1, 8), 3);
  EXPECT_EQ(c.computeCapacity(1000, 8, 64), 3);
  EXPECT_EQ(c.getGroup(), CapacityGroup::sequence);
  EXPECT_EQ(c.getOverflow(), OverflowPolicy::drop);
}

TEST_F(MoEAttrsTest, NeverBinds) {
  // A factor >= E lets every expert take every slot of any group.
  EXPECT_TRUE(capacity("#moe.capacity<factor = 8.0>").neverBinds(
      ShapedType::kDynamic, 2, 8));
  EXPECT_FALSE(capacity("#moe.capacity<factor = 7.5>").neverBinds(100, 2, 8));
  // An absolute capacity binds unless it covers T * K slots.
  CapacityAttr c = capacity("#moe.capacity<absolute = 32>");
  EXPECT_TRUE(c.neverBinds(16, 2, 8));
  EXPECT_FALSE(c.neverBinds(17, 2, 8));
  EXPECT_FALSE(c.neverBinds(ShapedType::kDynamic, 2, 8));
}

TEST_F(MoEAttrsTest, CapacityVerifierMessages) {
  EXPECT_FALSE(parse("#moe.capacity<group = batch>"));
  EXPECT_NE(diagnostic.find("exactly one of 'factor' or 'absolute', found "
                            "neither"),
            std::string::npos)
      << diagnostic;
  EXPECT_FALSE(parse("#moe.capacity<factor = 1.0, absolute = 2>"));
  EXPECT_NE(diagnostic.find("found both"), std::string::npos) << diagnostic;
  EXPECT_FALSE(parse("#moe.capacity<absolute = 0>"));
  EXPECT_NE(diagnostic.find("must be positive, found 0"), std::string::npos)
      << diagnostic;
}

TEST_F(MoEAttrsTest, SlotsPerToken) {
  auto slots = [&](StringRef text, int64_t numExperts) {
    auto router = dyn_cast_or_null<RouterAttr>(parse(text));
    EXPECT_TRUE(router) << text.str() << ": " << diagnostic;
    return router ? router.getNumSlots(numExperts) : -1;
  };
  EXPECT_EQ(slots("#moe.router<topk, k = 6, sigmoid>", 64), 6);
  EXPECT_EQ(slots("#moe.router<top_p, p = 0.5, k_max = 3>", 8), 3);
  EXPECT_EQ(slots("#moe.router<expert_choice, capacity_factor = 2.0>", 8), 8);
  EXPECT_EQ(slots("#moe.router<hash>", 16), 1);
  EXPECT_EQ(slots("#moe.router<balanced>", 16), 1);
}

TEST_F(MoEAttrsTest, BuilderMatchesParser) {
  RouterAttr built = RouterAttr::getTopK(&context, 2, /*renormalize=*/true);
  EXPECT_EQ(built, parse("#moe.router<topk, k = 2, softmax, renormalize>"));
  EXPECT_EQ(print(built), "#moe.router<topk, k = 2, softmax, renormalize>");
  EXPECT_DOUBLE_EQ(built.getScaleValue(), 1.0);
  EXPECT_TRUE(built.isTokenChoice());
  EXPECT_TRUE(built.needsLogits());
}

TEST_F(MoEAttrsTest, PrintsShortestFloats) {
  Attribute attr = parse("#moe.router<topk, k = 8, sigmoid, renormalize, "
                         "scale = 2.5, bias, n_group = 8, topk_group = 4, "
                         "capacity = #moe.capacity<factor = 1.1, group = "
                         "request, overflow = reroute>>");
  ASSERT_TRUE(attr) << diagnostic;
  EXPECT_EQ(print(attr),
            "#moe.router<topk, k = 8, sigmoid, renormalize, scale = 2.5, bias, "
            "n_group = 8, topk_group = 4, capacity = <factor = 1.1, group = "
            "request, overflow = reroute>>");
  auto router = cast<RouterAttr>(attr);
  EXPECT_DOUBLE_EQ(router.getScaleValue(), 2.5);
  EXPECT_EQ(router.getCapacity().getOverflow(), OverflowPolicy::reroute);
}

TEST_F(MoEAttrsTest, RulesThatNeedTheExpertCount) {
  auto router = cast<RouterAttr>(
      parse("#moe.router<topk, k = 6, sigmoid, n_group = 8, topk_group = 2>"));
  auto check = [&](int64_t numExperts) {
    diagnostic.clear();
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      diagnostic = diag.str();
      return success();
    });
    return succeeded(router.verifyForNumExperts(
        [&] { return emitError(UnknownLoc::get(&context)); }, numExperts));
  };
  EXPECT_TRUE(check(64)); // 2 groups of 8 experts leave 16 >= 6 candidates.
  EXPECT_FALSE(check(12));
  EXPECT_NE(diagnostic.find("n_group = 8 does not divide the 12"),
            std::string::npos)
      << diagnostic;
  EXPECT_FALSE(check(16)); // 2 groups of 2 experts: only 4 candidates.
  EXPECT_NE(diagnostic.find("k = 6 exceeds the 4 experts"), std::string::npos)
      << diagnostic;
}

} // namespace
