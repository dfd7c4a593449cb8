//===- MoEAttrs.cpp - moe dialect attributes ------------------------------===//
//
// Parsing, printing and verification of #moe.capacity and #moe.router.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace mlir::moe;

#include "moe/Dialect/MoE/IR/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"

void MoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
}

/// Parses `= <float>` into an f64 FloatAttr.
static ParseResult parseFloatOption(AsmParser &parser, FloatAttr &result) {
  double value;
  if (parser.parseEqual() || parser.parseFloat(value))
    return failure();
  result = FloatAttr::get(Float64Type::get(parser.getContext()), value);
  return success();
}

/// Prints the shortest decimal that reads back as the same double, with a
/// decimal point, so `1.25` stays `1.25` rather than `1.250000e+00`.
static void printShortestFloat(AsmPrinter &printer, FloatAttr value) {
  double v = value.getValueAsDouble();
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v)
      break;
  }
  StringRef text(buffer);
  printer << text;
  if (text.find_first_of(".eni") == StringRef::npos)
    printer << ".0";
}

static void printFloatOption(AsmPrinter &printer, StringRef name,
                             FloatAttr value) {
  printer << ", " << name << " = ";
  printShortestFloat(printer, value);
}

/// Parses `= <keyword>` into an enum through its generated `symbolize*`.
template <typename EnumT>
static ParseResult
parseEnumOption(AsmParser &parser,
                std::optional<EnumT> (*symbolize)(StringRef), StringRef what,
                StringRef expected, EnumT &result) {
  if (parser.parseEqual())
    return failure();
  SMLoc valueLoc = parser.getCurrentLocation();
  StringRef value;
  if (parser.parseKeyword(&value))
    return failure();
  if (std::optional<EnumT> parsed = symbolize(value)) {
    result = *parsed;
    return success();
  }
  return parser.emitError(valueLoc) << "unknown " << what << " '" << value
                                    << "'; expected " << expected;
}

static bool isPositiveFinite(FloatAttr value) {
  double v = value.getValueAsDouble();
  return std::isfinite(v) && v > 0.0;
}

//===----------------------------------------------------------------------===//
// CapacityAttr
//===----------------------------------------------------------------------===//

Attribute CapacityAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  FloatAttr factor;
  std::optional<int64_t> absolute;
  CapacityGroup group = CapacityGroup::batch;
  OverflowPolicy overflow = OverflowPolicy::drop;
  llvm::StringSet<> seen;

  auto parseOne = [&]() -> ParseResult {
    SMLoc keyLoc = parser.getCurrentLocation();
    StringRef key;
    if (parser.parseKeyword(&key))
      return failure();
    if (!seen.insert(key).second)
      return parser.emitError(keyLoc) << "capacity option '" << key
                                      << "' given twice";
    if (key == "factor")
      return parseFloatOption(parser, factor);
    if (key == "absolute") {
      int64_t value;
      if (parser.parseEqual() || parser.parseInteger(value))
        return failure();
      absolute = value;
      return success();
    }
    if (key == "group")
      return parseEnumOption(parser, symbolizeCapacityGroup, "capacity group",
                             "batch, sequence or request", group);
    if (key == "overflow")
      return parseEnumOption(parser, symbolizeOverflowPolicy,
                             "overflow policy", "drop, passthrough or reroute",
                             overflow);
    return parser.emitError(keyLoc)
           << "unknown capacity option '" << key
           << "'; expected factor, absolute, group or overflow";
  };

  if (parser.parseCommaSeparatedList(AsmParser::Delimiter::LessGreater,
                                     parseOne))
    return {};
  return parser.getChecked<CapacityAttr>(loc, parser.getContext(), factor,
                                         absolute, group, overflow);
}

void CapacityAttr::print(AsmPrinter &printer) const {
  printer << "<";
  if (getFactor()) {
    printer << "factor = ";
    printShortestFloat(printer, getFactor());
  } else {
    printer << "absolute = " << *getAbsolute();
  }
  printer << ", group = " << stringifyCapacityGroup(getGroup())
          << ", overflow = " << stringifyOverflowPolicy(getOverflow()) << ">";
}

LogicalResult
CapacityAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                     FloatAttr factor, std::optional<int64_t> absolute,
                     CapacityGroup, OverflowPolicy) {
  if (static_cast<bool>(factor) == absolute.has_value())
    return emitError() << "capacity expects exactly one of 'factor' or "
                          "'absolute', found "
                       << (factor ? "both" : "neither");
  if (factor && !isPositiveFinite(factor))
    return emitError() << "capacity factor must be a positive finite number, "
                          "found "
                       << factor.getValueAsDouble();
  if (absolute && *absolute <= 0)
    return emitError() << "absolute capacity must be positive, found "
                       << *absolute;
  return success();
}

int64_t CapacityAttr::computeCapacity(int64_t groupTokens,
                                      int64_t slotsPerToken,
                                      int64_t numExperts) const {
  if (getAbsolute())
    return *getAbsolute();
  // Computed in double like the reference frameworks; the small epsilon keeps
  // exact products (1.25 * 8 * 1 / 2 = 5) from rounding up to 6.
  double balanced = static_cast<double>(groupTokens) *
                    static_cast<double>(slotsPerToken) /
                    static_cast<double>(numExperts);
  double scaled = getFactor().getValueAsDouble() * balanced;
  return static_cast<int64_t>(std::ceil(scaled - 1e-9));
}

bool CapacityAttr::neverBinds(int64_t maxGroupTokens, int64_t slotsPerToken,
                              int64_t numExperts) const {
  // An expert serves at most every slot of a group, n * K of them.
  if (getFactor())
    return getFactor().getValueAsDouble() >= static_cast<double>(numExperts);
  if (ShapedType::isDynamic(maxGroupTokens))
    return false;
  return *getAbsolute() >= maxGroupTokens * slotsPerToken;
}

//===----------------------------------------------------------------------===//
// RouterAttr
//===----------------------------------------------------------------------===//

RouterAttr RouterAttr::getTopK(MLIRContext *ctx, int64_t k, bool renormalize) {
  return RouterAttr::get(ctx, RouterKind::topk, k, ScoreFunc::softmax,
                         renormalize, /*scale=*/FloatAttr(), /*bias=*/false,
                         /*nGroup=*/0, /*topkGroup=*/0, /*softmaxAfter=*/false,
                         /*p=*/FloatAttr(), /*capacityFactor=*/FloatAttr(),
                         /*nullExperts=*/0, /*capacity=*/CapacityAttr());
}

Attribute RouterAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  MLIRContext *ctx = parser.getContext();
  if (parser.parseLess())
    return {};

  SMLoc kindLoc = parser.getCurrentLocation();
  StringRef kindName;
  if (parser.parseKeyword(&kindName))
    return {};
  std::optional<RouterKind> kind = symbolizeRouterKind(kindName);
  if (!kind) {
    parser.emitError(kindLoc)
        << "unknown router family '" << kindName
        << "'; expected topk, top_p, expert_choice, hash or balanced";
    return {};
  }

  int64_t k = 0, nGroup = 0, topkGroup = 0, nullExperts = 0;
  ScoreFunc score = ScoreFunc::softmax;
  bool renormalize = false, bias = false, softmaxAfter = false;
  FloatAttr scale, p, capacityFactor;
  CapacityAttr capacity;
  llvm::StringSet<> seen;

  auto parseInt = [&](int64_t &value) -> ParseResult {
    return failure(parser.parseEqual() || parser.parseInteger(value));
  };

  while (succeeded(parser.parseOptionalComma())) {
    SMLoc keyLoc = parser.getCurrentLocation();
    StringRef key;
    if (parser.parseKeyword(&key))
      return {};
    // softmax and sigmoid set the same field.
    StringRef field = (key == "sigmoid") ? StringRef("softmax") : key;
    if (!seen.insert(field).second) {
      parser.emitError(keyLoc) << "router option '" << key
                               << "' given twice or contradicted";
      return {};
    }
    ParseResult result = success();
    if (key == "k" || key == "k_max") {
      bool isTopP = *kind == RouterKind::top_p;
      if ((key == "k_max") != isTopP) {
        parser.emitError(keyLoc)
            << "'" << key << "' does not apply to the '" << kindName
            << "' router; " << (isTopP ? "top_p uses 'k_max'" : "use 'k'");
        return {};
      }
      result = parseInt(k);
    } else if (key == "softmax" || key == "sigmoid") {
      score = key == "softmax" ? ScoreFunc::softmax : ScoreFunc::sigmoid;
    } else if (key == "renormalize") {
      renormalize = true;
    } else if (key == "scale") {
      result = parseFloatOption(parser, scale);
    } else if (key == "bias") {
      bias = true;
    } else if (key == "n_group") {
      result = parseInt(nGroup);
    } else if (key == "topk_group") {
      result = parseInt(topkGroup);
    } else if (key == "softmax_after") {
      softmaxAfter = true;
    } else if (key == "p") {
      result = parseFloatOption(parser, p);
    } else if (key == "capacity_factor") {
      result = parseFloatOption(parser, capacityFactor);
    } else if (key == "null_experts") {
      result = parseInt(nullExperts);
    } else if (key == "capacity") {
      result = failure(parser.parseEqual() ||
                       parser.parseCustomAttributeWithFallback(capacity));
    } else {
      parser.emitError(keyLoc)
          << "unknown router option '" << key
          << "'; expected k, k_max, softmax, sigmoid, renormalize, scale, "
             "bias, n_group, topk_group, softmax_after, p, capacity_factor, "
             "null_experts or capacity";
      return {};
    }
    if (failed(result))
      return {};
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<RouterAttr>(
      loc, ctx, *kind, k, score, renormalize, scale, bias, nGroup, topkGroup,
      softmaxAfter, p, capacityFactor, nullExperts, capacity);
}

void RouterAttr::print(AsmPrinter &printer) const {
  printer << "<" << stringifyRouterKind(getKind());
  switch (getKind()) {
  case RouterKind::topk:
    printer << ", k = " << getK() << ", " << stringifyScoreFunc(getScore());
    break;
  case RouterKind::top_p:
    printFloatOption(printer, "p", getP());
    printer << ", k_max = " << getK();
    break;
  case RouterKind::expert_choice:
    printFloatOption(printer, "capacity_factor", getCapacityFactor());
    break;
  case RouterKind::hash:
  case RouterKind::balanced:
    break;
  }
  if (getRenormalize())
    printer << ", renormalize";
  if (getSoftmaxAfter())
    printer << ", softmax_after";
  if (getScale())
    printFloatOption(printer, "scale", getScale());
  if (getBias())
    printer << ", bias";
  if (hasGroups())
    printer << ", n_group = " << getNGroup()
            << ", topk_group = " << getTopkGroup();
  if (getNullExperts() > 0)
    printer << ", null_experts = " << getNullExperts();
  if (getCapacity()) {
    printer << ", capacity = ";
    printer.printStrippedAttrOrType(getCapacity());
  }
  printer << ">";
}

LogicalResult RouterAttr::verify(
    function_ref<InFlightDiagnostic()> emitError, RouterKind kind, int64_t k,
    ScoreFunc score, bool renormalize, FloatAttr scale, bool bias,
    int64_t nGroup, int64_t topkGroup, bool softmaxAfter, FloatAttr p,
    FloatAttr capacityFactor, int64_t nullExperts, CapacityAttr capacity) {
  StringRef family = stringifyRouterKind(kind);
  auto notFor = [&](StringRef option) -> LogicalResult {
    return emitError() << "router option '" << option
                       << "' does not apply to the '" << family << "' router";
  };
  bool isTopK = kind == RouterKind::topk;
  bool isTopP = kind == RouterKind::top_p;

  // Options that belong to a single family.
  if (!isTopK) {
    if (score != ScoreFunc::softmax)
      return notFor("sigmoid");
    if (renormalize)
      return notFor("renormalize");
    if (bias)
      return notFor("bias");
    if (nGroup || topkGroup)
      return notFor("n_group");
    if (softmaxAfter)
      return notFor("softmax_after");
  }
  if (!isTopK && !isTopP) {
    if (k != 0)
      return notFor("k");
    if (scale)
      return notFor("scale");
  }
  if (!isTopP && p)
    return notFor("p");
  if (kind != RouterKind::expert_choice && capacityFactor)
    return notFor("capacity_factor");
  if (kind == RouterKind::hash && nullExperts)
    return notFor("null_experts");
  if (capacity && kind != RouterKind::topk && kind != RouterKind::top_p &&
      kind != RouterKind::hash)
    return emitError() << "capacity applies to token-choice routers (topk, "
                          "top_p, hash), not to '"
                       << family << "'";

  // Value ranges.
  if ((isTopK || isTopP) && k < 1)
    return emitError() << "'" << family << "' router expects "
                       << (isTopP ? "k_max" : "k") << " >= 1, found " << k;
  if (nullExperts < 0)
    return emitError() << "null_experts must be non-negative, found "
                       << nullExperts;
  if (scale && !isPositiveFinite(scale))
    return emitError() << "scale must be a positive finite number, found "
                       << scale.getValueAsDouble();
  if (isTopP) {
    if (!p)
      return emitError() << "'top_p' router expects 'p = F'";
    double pv = p.getValueAsDouble();
    if (!(pv > 0.0 && pv <= 1.0))
      return emitError() << "top_p threshold p must be in (0, 1], found "
                         << pv;
  }
  if (kind == RouterKind::expert_choice) {
    if (!capacityFactor)
      return emitError()
             << "'expert_choice' router expects 'capacity_factor = F'";
    if (!isPositiveFinite(capacityFactor))
      return emitError() << "capacity_factor must be a positive finite "
                            "number, found "
                         << capacityFactor.getValueAsDouble();
  }
  if (softmaxAfter) {
    if (score != ScoreFunc::softmax)
      return emitError() << "softmax_after normalizes logits with a softmax; "
                            "it cannot be combined with sigmoid scores";
    if (renormalize)
      return emitError() << "softmax_after already sums the selected weights "
                            "to 1; drop 'renormalize'";
  }
  if ((nGroup != 0) != (topkGroup != 0))
    return emitError() << "n_group and topk_group must be given together, "
                          "found n_group = "
                       << nGroup << ", topk_group = " << topkGroup;
  if (nGroup < 0 || (nGroup && (topkGroup < 1 || topkGroup > nGroup)))
    return emitError() << "topk_group must be in [1, n_group = " << nGroup
                       << "], found " << topkGroup;
  if (nGroup && nullExperts)
    return emitError() << "null experts cannot be combined with group-limited "
                          "routing (n_group)";
  return success();
}

int64_t RouterAttr::getNumSlots(int64_t numExperts) const {
  switch (getKind()) {
  case RouterKind::topk:
  case RouterKind::top_p:
    return getK();
  case RouterKind::expert_choice:
    return numExperts;
  case RouterKind::hash:
  case RouterKind::balanced:
    return 1;
  }
  llvm_unreachable("unknown router kind");
}

bool RouterAttr::isTokenChoice() const {
  return getKind() == RouterKind::topk || getKind() == RouterKind::top_p ||
         getKind() == RouterKind::hash;
}

bool RouterAttr::needsLogits() const { return getKind() != RouterKind::hash; }

double RouterAttr::getScaleValue() const {
  return getScale() ? getScale().getValueAsDouble() : 1.0;
}

LogicalResult RouterAttr::verifyForNumExperts(
    function_ref<InFlightDiagnostic()> emitError, int64_t numExperts) const {
  int64_t choices = numExperts + getNullExperts();
  if ((getKind() == RouterKind::topk || getKind() == RouterKind::top_p) &&
      getK() > choices)
    return emitError() << "router "
                       << (getKind() == RouterKind::top_p ? "k_max" : "k")
                       << " = " << getK()
                       << " exceeds the number of experts (" << numExperts
                       << " routed + " << getNullExperts() << " null)";
  if (hasGroups()) {
    if (numExperts % getNGroup() != 0)
      return emitError() << "n_group = " << getNGroup()
                         << " does not divide the " << numExperts
                         << " routed experts";
    int64_t eligible = getTopkGroup() * (numExperts / getNGroup());
    if (getK() > eligible)
      return emitError() << "k = " << getK() << " exceeds the " << eligible
                         << " experts of the topk_group = " << getTopkGroup()
                         << " best groups";
  }
  return success();
}
