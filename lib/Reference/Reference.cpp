//===- Reference.cpp - Naive reference implementation of an MoE block -----===//
//
// Scalar loops, written to be read side by side with docs/dialect.md
// sections 3 to 6, not to be fast. The steps of `run` are those of an
// expanded `moe.layer`:
//
//   1. logits   = x . gate^T (+ gate bias)                    (moe.gate)
//   2. routing  = the policy of spec.router                    (moe.route)
//   3. capacity = which slots are computed, passed through or dropped,
//                 and where rerouted slots go           (moe.dispatch_plan)
//   4. output   = sum of weighted expert outputs + shared expert
//   5. losses   = aux loss, z loss, expert load
//
// Numerics: logits are rounded to f32 once (the gate's result type), and
// everything downstream of them (scores, expert FFNs, sums) runs in double.
// Routing weights are rounded to f32 (their type in the dialect) before they
// scale expert outputs. Every ranking uses the total order of section 5:
// higher value first, then lower index, with NaN counted as -inf.
//
// This file deliberately shares no code with the compiler.
//
//===----------------------------------------------------------------------===//

#include "moe/Reference/Reference.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>

using namespace mlir::moe::frontend;
using namespace mlir::moe::reference;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

[[noreturn]] void fail(const char *message) {
  std::fprintf(stderr, "moe reference: %s\n", message);
  std::abort();
}

void check(bool condition, const char *message) {
  if (!condition)
    fail(message);
}

//===----------------------------------------------------------------------===//
// Scalar helpers
//===----------------------------------------------------------------------===//

/// The value a ranking sees: NaN counts as -inf (section 5).
double rankKey(double value) { return std::isnan(value) ? -kInf : value; }

/// The total order of section 5: `a` (at index `ia`) ranks before `b` (at
/// `ib`) if it is larger, or equal and at a lower index.
bool ranksBefore(double a, int64_t ia, double b, int64_t ib) {
  a = rankKey(a);
  b = rankKey(b);
  if (a != b)
    return a > b;
  return ia < ib;
}

/// `candidates` (indices into `keys`) sorted best first.
std::vector<int64_t> rankDescending(const std::vector<double> &keys,
                                    std::vector<int64_t> candidates) {
  std::sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
    return ranksBefore(keys[a], a, keys[b], b);
  });
  return candidates;
}

/// 0, 1, ..., n - 1.
std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> values(n);
  for (int64_t i = 0; i < n; ++i)
    values[i] = i;
  return values;
}

double dot(const float *a, const float *b, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return sum;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double silu(double z) { return z * sigmoid(z); }
double gelu(double z) { return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0))); }
double relu(double z) { return z > 0.0 ? z : 0.0; }

/// Softmax of `values` (which hold no NaN). A row whose largest value is -inf
/// (every logit NaN or -inf) gets all-zero probabilities; a row with +inf
/// entries splits the mass evenly among them (the limit of the formula).
std::vector<double> softmax(const std::vector<double> &values) {
  std::vector<double> probs(values.size(), 0.0);
  if (values.empty())
    return probs;
  double maxValue = *std::max_element(values.begin(), values.end());
  if (maxValue == -kInf)
    return probs;
  if (maxValue == kInf) {
    double count = std::count(values.begin(), values.end(), kInf);
    for (size_t i = 0; i < values.size(); ++i)
      probs[i] = values[i] == kInf ? 1.0 / count : 0.0;
    return probs;
  }
  double sum = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    probs[i] = std::exp(values[i] - maxValue);
    sum += probs[i];
  }
  for (double &prob : probs)
    prob /= sum;
  return probs;
}

/// log(sum(exp(values))), with the same conventions as `softmax`.
double logSumExp(const std::vector<double> &values) {
  if (values.empty())
    return -kInf;
  double maxValue = *std::max_element(values.begin(), values.end());
  if (std::isinf(maxValue))
    return maxValue;
  double sum = 0.0;
  for (double value : values)
    sum += std::exp(value - maxValue);
  return maxValue + std::log(sum);
}

//===----------------------------------------------------------------------===//
// Expert FFNs
//===----------------------------------------------------------------------===//

float roundToBF16(float v) { return fromBF16(toBF16(v)); }

/// One FFN: y = w2 . act(w1 . x). `w1` is [2F, d] (gate rows, then up rows)
/// for SiluGlu and [F, d] otherwise; `w2` is [d, F]. Row-major, [out, in].
/// With `bf16`, x and the hidden activations (as f32) are rounded to bf16
/// before their products (the weights are given rounded already).
std::vector<double> ffn(ExpertActivation activation, const float *w1,
                        const float *w2, int64_t d, int64_t f, const float *x,
                        bool bf16) {
  std::vector<float> rounded;
  if (bf16) {
    rounded.assign(x, x + d);
    for (float &v : rounded)
      v = roundToBF16(v);
    x = rounded.data();
  }
  std::vector<double> hidden(f);
  for (int64_t i = 0; i < f; ++i) {
    double z = dot(w1 + i * d, x, d);
    switch (activation) {
    case ExpertActivation::SiluGlu:
      hidden[i] = silu(z) * dot(w1 + (f + i) * d, x, d);
      break;
    case ExpertActivation::Gelu:
      hidden[i] = gelu(z);
      break;
    case ExpertActivation::Relu:
      hidden[i] = relu(z);
      break;
    }
    if (bf16)
      hidden[i] = roundToBF16(static_cast<float>(hidden[i]));
  }
  std::vector<double> y(d, 0.0);
  for (int64_t o = 0; o < d; ++o) {
    double sum = 0.0;
    for (int64_t i = 0; i < f; ++i)
      sum += static_cast<double>(w2[o * f + i]) * hidden[i];
    y[o] = sum;
  }
  return y;
}

//===----------------------------------------------------------------------===//
// Validation
//===----------------------------------------------------------------------===//

void validate(const LayerSpec &spec, const LayerWeights &w,
              const Inputs &inputs) {
  const RouterSpec &router = spec.router;
  int64_t d = spec.hidden, e = spec.numExperts, rows = spec.routerRows();
  check(d > 0 && e > 0 && spec.ffn > 0, "hidden, numExperts, ffn must be > 0");
  check(inputs.numTokens >= 0, "numTokens must be >= 0");
  check(inputs.numTokens == 0 || inputs.x, "x is null");
  check(static_cast<int64_t>(w.gate.size()) == rows * d,
        "gate must be [E + null, d] (empty for hash)");
  if (spec.gateBias)
    check(static_cast<int64_t>(w.gateBias.size()) == rows,
          "gateBias must be [E + null]");
  if (router.family == RouterFamily::TopK && router.selectionBias)
    check(static_cast<int64_t>(w.selectionBias.size()) == e,
          "selectionBias must be [E]");
  check(static_cast<int64_t>(w.w1.size()) == e * spec.firstRows() * d,
        "w1 must be [E, 2F or F, d]");
  check(static_cast<int64_t>(w.w2.size()) == e * d * spec.ffn,
        "w2 must be [E, d, F]");
  if (spec.sharedFfn > 0) {
    int64_t firstRows = spec.activation == ExpertActivation::SiluGlu
                            ? 2 * spec.sharedFfn
                            : spec.sharedFfn;
    check(static_cast<int64_t>(w.sharedW1.size()) == firstRows * d,
          "sharedW1 must be [2Fs or Fs, d]");
    check(static_cast<int64_t>(w.sharedW2.size()) == d * spec.sharedFfn,
          "sharedW2 must be [d, Fs]");
    if (spec.sharedGate)
      check(static_cast<int64_t>(w.sharedGate.size()) == d,
            "sharedGate must be [1, d]");
  }
  if (router.family == RouterFamily::TopK ||
      router.family == RouterFamily::TopP)
    check(router.k >= 1, "k (k_max) must be >= 1");
  if (router.family == RouterFamily::TopK && router.nGroup > 0)
    check(e % router.nGroup == 0 && router.topkGroup >= 1 &&
              router.topkGroup <= router.nGroup,
          "n_group must divide E and 1 <= topk_group <= n_group");
  if (router.family == RouterFamily::Hash)
    check(inputs.numTokens == 0 || inputs.tokenIds,
          "the hash router needs token ids");
  if (router.capacity.enabled)
    check(router.capacity.absolute >= 1 || router.capacity.factor > 0.0,
          "capacity needs absolute >= 1 or factor > 0");
}

/// Token boundaries (G + 1 entries, 0 .. T) of the capacity groups, which
/// also group the aux loss. Without capacity the whole batch is one group.
std::vector<int64_t> capacityGroups(const LayerSpec &spec,
                                    const Inputs &inputs) {
  int64_t numTokens = inputs.numTokens;
  const CapacitySpec &capacity = spec.router.capacity;
  std::vector<int64_t> bounds;
  bool useInputGroups = false;
  if (capacity.enabled && capacity.group == CapacityGroupKind::Sequence) {
    if (spec.sequenceLength > 0) {
      for (int64_t start = 0; start < numTokens; start += spec.sequenceLength)
        bounds.push_back(start);
      bounds.push_back(numTokens);
      if (bounds.size() == 1) // T = 0: one empty group.
        bounds.insert(bounds.begin(), 0);
      return bounds;
    }
    useInputGroups = true;
  }
  if (capacity.enabled && capacity.group == CapacityGroupKind::Request)
    useInputGroups = true;
  if (!useInputGroups || (inputs.groups.empty() && numTokens == 0))
    return {0, numTokens};

  check(inputs.groups.size() >= 2,
        "sequence/request capacity groups need inputs.groups (or "
        "spec.sequenceLength)");
  check(inputs.groups.front() == 0 && inputs.groups.back() == numTokens,
        "inputs.groups must run from 0 to T");
  for (size_t g = 0; g < inputs.groups.size(); ++g) {
    if (g > 0)
      check(inputs.groups[g] >= inputs.groups[g - 1],
            "inputs.groups must be non-decreasing");
    bounds.push_back(inputs.groups[g]);
  }
  return bounds;
}

//===----------------------------------------------------------------------===//
// Routing policies (section 3)
//===----------------------------------------------------------------------===//

/// The logits of the routing policies, rounded to f32 then NaN -> -inf.
struct Logits {
  int64_t numTokens = 0, numColumns = 0;
  std::vector<double> values; ///< [T, E + null]

  std::vector<double> row(int64_t t) const {
    return std::vector<double>(values.begin() + t * numColumns,
                               values.begin() + (t + 1) * numColumns);
  }
  double at(int64_t t, int64_t c) const { return values[t * numColumns + c]; }
};

/// Writes the routing slots of token `t` to `result`.
void setSlot(Result &result, int64_t numSlots, int64_t t, int64_t j,
             int64_t index, double weight) {
  result.indices[t * numSlots + j] = static_cast<int32_t>(index);
  result.weights[t * numSlots + j] = static_cast<float>(weight);
}

/// topk: section 3 `topk`, `bias`, `n_group` / `topk_group`, `softmax_after`.
void routeTopK(const LayerSpec &spec, const LayerWeights &w,
               const Logits &logits, Result &result) {
  const RouterSpec &router = spec.router;
  int64_t numExperts = spec.numExperts, numColumns = logits.numColumns;
  int64_t k = router.k;
  for (int64_t t = 0; t < logits.numTokens; ++t) {
    std::vector<double> row = logits.row(t);

    // Unbiased scores s, used for the weights.
    std::vector<double> scores(numColumns);
    if (router.softmaxAfter) {
      scores = row; // Selection ranks raw logits.
    } else if (router.scoring == Scoring::Softmax) {
      scores = softmax(row);
    } else {
      for (int64_t c = 0; c < numColumns; ++c)
        scores[c] = sigmoid(row[c]);
    }

    // Selection keys: s + b for routed experts; null experts get no bias.
    std::vector<double> keys = scores;
    if (router.selectionBias)
      for (int64_t e = 0; e < numExperts; ++e)
        keys[e] += w.selectionBias[e];
    for (double &key : keys)
      key = rankKey(key);

    // Eligible experts: all of them, or those of the topk_group best groups
    // (null experts belong to no group and stay eligible).
    std::vector<int64_t> eligible;
    if (router.nGroup > 0) {
      int64_t groupSize = numExperts / router.nGroup;
      std::vector<double> groupScores(router.nGroup);
      for (int64_t g = 0; g < router.nGroup; ++g) {
        std::vector<int64_t> members;
        for (int64_t e = g * groupSize; e < (g + 1) * groupSize; ++e)
          members.push_back(e);
        members = rankDescending(keys, members);
        double score = keys[members[0]];
        if (groupSize > 1)
          score += keys[members[1]];
        groupScores[g] = rankKey(score);
      }
      std::vector<int64_t> groups =
          rankDescending(groupScores, iota(router.nGroup));
      for (int64_t i = 0; i < router.topkGroup; ++i)
        for (int64_t e = groups[i] * groupSize; e < (groups[i] + 1) * groupSize;
             ++e)
          eligible.push_back(e);
      for (int64_t c = numExperts; c < numColumns; ++c)
        eligible.push_back(c);
    } else {
      eligible = iota(numColumns);
    }

    std::vector<int64_t> ranked = rankDescending(keys, eligible);
    int64_t chosen = std::min<int64_t>(k, ranked.size());

    // Weights: unbiased scores of the chosen experts (softmax_after: the
    // softmax over the chosen logits), renormalized, scaled.
    std::vector<double> weights(chosen);
    if (router.softmaxAfter) {
      std::vector<double> chosenLogits(chosen);
      for (int64_t j = 0; j < chosen; ++j)
        chosenLogits[j] = row[ranked[j]];
      weights = softmax(chosenLogits);
    } else {
      for (int64_t j = 0; j < chosen; ++j)
        weights[j] = scores[ranked[j]];
    }
    if (router.renormalize) {
      double sum = 0.0;
      for (double weight : weights)
        sum += weight;
      if (sum != 0.0)
        for (double &weight : weights)
          weight /= sum;
    }
    for (int64_t j = 0; j < chosen; ++j)
      setSlot(result, k, t, j, ranked[j], router.scale * weights[j]);
  }
}

/// top_p: the smallest prefix of the sorted probabilities reaching p, at
/// most k_max slots; raw probabilities (times `scale`) as weights.
void routeTopP(const LayerSpec &spec, const Logits &logits, Result &result) {
  const RouterSpec &router = spec.router;
  int64_t kMax = router.k;
  for (int64_t t = 0; t < logits.numTokens; ++t) {
    std::vector<double> probs = softmax(logits.row(t));
    std::vector<int64_t> ranked = rankDescending(probs, iota(probs.size()));
    int64_t limit = std::min<int64_t>(kMax, ranked.size());
    double mass = 0.0;
    for (int64_t j = 0; j < limit; ++j) {
      setSlot(result, kMax, t, j, ranked[j], router.scale * probs[ranked[j]]);
      mass += probs[ranked[j]];
      if (mass >= router.p)
        break;
    }
  }
}

/// expert_choice: each routed expert takes its C best tokens by probability.
void routeExpertChoice(const LayerSpec &spec, const Logits &logits,
                       Result &result) {
  int64_t numTokens = logits.numTokens, numExperts = spec.numExperts;
  double exact = static_cast<double>(numTokens) * spec.router.capacityFactor /
                 static_cast<double>(numExperts);
  int64_t capacity = static_cast<int64_t>(std::ceil(exact - 1e-9));
  capacity = std::max<int64_t>(0, std::min(capacity, numTokens));

  std::vector<std::vector<double>> probs(numTokens);
  for (int64_t t = 0; t < numTokens; ++t)
    probs[t] = softmax(logits.row(t));
  for (int64_t e = 0; e < numExperts; ++e) {
    std::vector<double> column(numTokens);
    for (int64_t t = 0; t < numTokens; ++t)
      column[t] = probs[t][e];
    std::vector<int64_t> ranked = rankDescending(column, iota(numTokens));
    for (int64_t i = 0; i < capacity; ++i)
      setSlot(result, numExperts, ranked[i], e, e, probs[ranked[i]][e]);
  }
}

/// hash: a table lookup on the token id, weight 1.
void routeHash(const LayerWeights &w, const Inputs &inputs, Result &result) {
  int64_t vocab = w.hashTable.size();
  for (int64_t t = 0; t < inputs.numTokens; ++t) {
    int64_t id = inputs.tokenIds[t];
    if (id < 0 || id >= vocab) {
      result.sawBadTokenId = true;
      continue;
    }
    setSlot(result, 1, t, 0, w.hashTable[id], 1.0);
  }
}

/// Minimum-cost assignment of each of `numRows` rows to a distinct one of
/// `numCols >= numRows` columns: the Hungarian algorithm with potentials
/// (Kuhn-Munkres, O(rows^2 * cols)). Returns the column of each row.
std::vector<int64_t> solveAssignment(const std::vector<double> &cost,
                                     int64_t numRows, int64_t numCols) {
  // 1-based, column 0 is a sentinel; rowOf[c] is the row holding column c.
  std::vector<double> u(numRows + 1, 0.0), v(numCols + 1, 0.0);
  std::vector<int64_t> rowOf(numCols + 1, 0), way(numCols + 1, 0);
  for (int64_t i = 1; i <= numRows; ++i) {
    rowOf[0] = i;
    int64_t col0 = 0;
    std::vector<double> minValue(numCols + 1, kInf);
    std::vector<bool> used(numCols + 1, false);
    do {
      used[col0] = true;
      int64_t row0 = rowOf[col0], col1 = 0;
      double delta = kInf;
      for (int64_t c = 1; c <= numCols; ++c) {
        if (used[c])
          continue;
        double reduced = cost[(row0 - 1) * numCols + (c - 1)] - u[row0] - v[c];
        if (reduced < minValue[c]) {
          minValue[c] = reduced;
          way[c] = col0;
        }
        if (minValue[c] < delta) {
          delta = minValue[c];
          col1 = c;
        }
      }
      for (int64_t c = 0; c <= numCols; ++c) {
        if (used[c]) {
          u[rowOf[c]] += delta;
          v[c] -= delta;
        } else {
          minValue[c] -= delta;
        }
      }
      col0 = col1;
    } while (rowOf[col0] != 0);
    do {
      int64_t col1 = way[col0];
      rowOf[col0] = rowOf[col1];
      col0 = col1;
    } while (col0 != 0);
  }
  std::vector<int64_t> colOf(numRows, -1);
  for (int64_t c = 1; c <= numCols; ++c)
    if (rowOf[c] != 0)
      colOf[rowOf[c] - 1] = c - 1;
  return colOf;
}

/// balanced (BASE): the assignment maximizing the summed logits, each expert
/// column (null experts included) taking at most ceil(T / E) tokens; weight
/// sigmoid of the assigned logit. Solved exactly on T x (columns * cap)
/// expanded slots.
void routeBalanced(const LayerSpec &spec, const Logits &logits,
                   Result &result) {
  int64_t numTokens = logits.numTokens, numColumns = logits.numColumns;
  if (numTokens == 0)
    return;
  int64_t cap = (numTokens + spec.numExperts - 1) / spec.numExperts;
  int64_t numSlotCols = numColumns * cap;

  // -inf / +inf logits become a penalty / bonus larger than any finite
  // difference, so the solver first minimizes how many it uses.
  double maxFinite = 0.0;
  for (double value : logits.values)
    if (std::isfinite(value))
      maxFinite = std::max(maxFinite, std::fabs(value));
  double big = 4.0 * (maxFinite + 1.0) * static_cast<double>(numTokens + 1);

  std::vector<double> cost(numTokens * numSlotCols);
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t c = 0; c < numSlotCols; ++c) {
      double value = logits.at(t, c / cap);
      cost[t * numSlotCols + c] = std::isfinite(value) ? -value
                                  : value > 0          ? -big
                                                       : big;
    }
  std::vector<int64_t> slotOf = solveAssignment(cost, numTokens, numSlotCols);
  for (int64_t t = 0; t < numTokens; ++t) {
    int64_t expert = slotOf[t] / cap;
    setSlot(result, 1, t, 0, expert, sigmoid(logits.at(t, expert)));
  }
}

//===----------------------------------------------------------------------===//
// Capacity and overflow (section 4)
//===----------------------------------------------------------------------===//

enum class SlotFate { Compute, Nothing, Passthrough };

/// Decides the fate of every slot and, under reroute, moves overflowing
/// slots (rewriting `result.indices`). `scores` ranks reroute targets
/// (null for hash: all targets tie, so the lowest free index wins).
std::vector<SlotFate> applyCapacity(const LayerSpec &spec, const Logits *scores,
                                    const std::vector<int64_t> &groups,
                                    int64_t numTokens, Result &result) {
  int64_t numExperts = spec.numExperts, numSlots = spec.numSlots();
  std::vector<SlotFate> fates(numTokens * numSlots, SlotFate::Nothing);
  for (int64_t s = 0; s < numTokens * numSlots; ++s)
    if (result.indices[s] >= 0 && result.indices[s] < numExperts)
      fates[s] = SlotFate::Compute;

  const CapacitySpec &capacity = spec.router.capacity;
  bool tokenChoice = spec.router.family == RouterFamily::TopK ||
                     spec.router.family == RouterFamily::TopP ||
                     spec.router.family == RouterFamily::Hash;
  if (!capacity.enabled || !tokenChoice)
    return fates;

  for (size_t g = 0; g + 1 < groups.size(); ++g) {
    int64_t begin = groups[g], end = groups[g + 1];
    int64_t limit = capacity.absolute;
    if (capacity.absolute < 1) {
      double balanced = static_cast<double>(end - begin) *
                        static_cast<double>(numSlots) /
                        static_cast<double>(numExperts);
      limit =
          static_cast<int64_t>(std::ceil(capacity.factor * balanced - 1e-9));
    }
    std::vector<int64_t> served(numExperts, 0);
    for (int64_t t = begin; t < end; ++t) {
      // Experts this token uses: its original choices, then reroute targets.
      std::set<int64_t> taken;
      for (int64_t j = 0; j < numSlots; ++j)
        taken.insert(result.indices[t * numSlots + j]);
      for (int64_t j = 0; j < numSlots; ++j) {
        int64_t s = t * numSlots + j;
        if (fates[s] != SlotFate::Compute)
          continue;
        int64_t expert = result.indices[s];
        if (served[expert] < limit) {
          ++served[expert];
          continue;
        }
        switch (capacity.overflow) {
        case Overflow::Drop:
          fates[s] = SlotFate::Nothing;
          break;
        case Overflow::Passthrough:
          fates[s] = SlotFate::Passthrough;
          break;
        case Overflow::Reroute: {
          auto scoreOf = [&](int64_t e) {
            return scores ? scores->at(t, e) : 0.0;
          };
          int64_t best = -1;
          for (int64_t e = 0; e < numExperts; ++e) {
            if (taken.count(e) || served[e] >= limit)
              continue;
            if (best < 0 || ranksBefore(scoreOf(e), e, scoreOf(best), best))
              best = e;
          }
          if (best < 0) {
            fates[s] = SlotFate::Nothing;
            break;
          }
          ++served[best];
          taken.insert(best);
          result.indices[s] = static_cast<int32_t>(best);
          break;
        }
        }
      }
    }
  }
  return fates;
}

/// Row numbers of the dispatch plan: computed slots grouped by expert, in
/// token then slot order within an expert; -1 nothing, -2 passthrough.
void assignRows(const LayerSpec &spec, const std::vector<SlotFate> &fates,
                Result &result) {
  int64_t total = fates.size();
  for (int64_t s = 0; s < total; ++s)
    result.rows[s] = fates[s] == SlotFate::Passthrough ? -2 : -1;
  int32_t next = 0;
  for (int64_t e = 0; e < spec.numExperts; ++e)
    for (int64_t s = 0; s < total; ++s)
      if (fates[s] == SlotFate::Compute && result.indices[s] == e)
        result.rows[s] = next++;
}

//===----------------------------------------------------------------------===//
// Losses (section 6)
//===----------------------------------------------------------------------===//

/// E * sum_e f_e * P_e per group, averaged over the groups. Probabilities
/// are the softmax over all E + null columns, read at routed experts only;
/// f_e counts the slots choosing e before capacity.
double auxLoss(const LayerSpec &spec, const Logits &logits,
               const std::vector<int32_t> &routeIndices,
               const std::vector<int64_t> &groups) {
  int64_t numExperts = spec.numExperts, numSlots = spec.numSlots();
  size_t numGroups = groups.size() - 1;
  double total = 0.0;
  size_t nonEmpty = 0;
  for (size_t g = 0; g < numGroups; ++g) {
    int64_t begin = groups[g], end = groups[g + 1];
    if (end == begin)
      continue; // An empty group has no tokens to balance: not averaged.
    ++nonEmpty;
    std::vector<double> meanProb(numExperts, 0.0), fraction(numExperts, 0.0);
    for (int64_t t = begin; t < end; ++t) {
      std::vector<double> probs = softmax(logits.row(t));
      for (int64_t e = 0; e < numExperts; ++e)
        meanProb[e] += probs[e];
      for (int64_t j = 0; j < numSlots; ++j) {
        int64_t index = routeIndices[t * numSlots + j];
        if (index >= 0 && index < numExperts)
          fraction[index] += 1.0;
      }
    }
    double sum = 0.0;
    double count = static_cast<double>(end - begin);
    for (int64_t e = 0; e < numExperts; ++e)
      sum += (fraction[e] / count) * (meanProb[e] / count);
    total += static_cast<double>(numExperts) * sum;
  }
  return nonEmpty ? total / static_cast<double>(nonEmpty) : 0.0;
}

/// mean_t logsumexp(logits[t, :])^2 over all columns.
double zLoss(const Logits &logits) {
  if (logits.numTokens == 0)
    return 0.0;
  double sum = 0.0;
  for (int64_t t = 0; t < logits.numTokens; ++t) {
    double lse = logSumExp(logits.row(t));
    sum += lse * lse;
  }
  return sum / static_cast<double>(logits.numTokens);
}

} // namespace

//===----------------------------------------------------------------------===//
// The whole block
//===----------------------------------------------------------------------===//

Result mlir::moe::reference::run(const LayerSpec &spec, const LayerWeights &w,
                                 const Inputs &inputs) {
  validate(spec, w, inputs);
  const RouterSpec &router = spec.router;
  int64_t numTokens = inputs.numTokens, d = spec.hidden;
  int64_t numExperts = spec.numExperts, numSlots = spec.numSlots();
  int64_t numColumns = spec.routerRows();
  bool isHash = router.family == RouterFamily::Hash;

  Result result;
  result.output.assign(numTokens * d, 0.0f);
  result.indices.assign(numTokens * numSlots, -1);
  result.weights.assign(numTokens * numSlots, 0.0f);
  result.rows.assign(numTokens * numSlots, -1);
  result.load.assign(numExperts, 0);

  // 1. Router logits, rounded to f32; NaN -> -inf for everything after.
  Logits logits;
  logits.numTokens = numTokens;
  logits.numColumns = numColumns;
  if (!isHash) {
    result.logits.resize(numTokens * numColumns);
    logits.values.resize(numTokens * numColumns);
    for (int64_t t = 0; t < numTokens; ++t) {
      for (int64_t c = 0; c < numColumns; ++c) {
        float rounded;
        if (inputs.logits) {
          rounded = inputs.logits[t * numColumns + c];
        } else {
          double value = dot(inputs.x + t * d, w.gate.data() + c * d, d);
          if (spec.gateBias)
            value += w.gateBias[c];
          rounded = static_cast<float>(value);
        }
        result.logits[t * numColumns + c] = rounded;
        if (std::isnan(rounded))
          result.sawNaN = true;
        logits.values[t * numColumns + c] = rankKey(rounded);
      }
    }
  }

  // 2. Routing.
  switch (router.family) {
  case RouterFamily::TopK:
    routeTopK(spec, w, logits, result);
    break;
  case RouterFamily::TopP:
    routeTopP(spec, logits, result);
    break;
  case RouterFamily::ExpertChoice:
    routeExpertChoice(spec, logits, result);
    break;
  case RouterFamily::Hash:
    routeHash(w, inputs, result);
    break;
  case RouterFamily::Balanced:
    routeBalanced(spec, logits, result);
    break;
  }
  result.routeIndices = result.indices;
  for (int32_t index : result.routeIndices)
    if (index >= 0 && index < numExperts)
      ++result.load[index];

  // 3. Capacity, overflow and the rows of the dispatch plan.
  std::vector<int64_t> groups = capacityGroups(spec, inputs);
  std::vector<SlotFate> fates = applyCapacity(spec, isHash ? nullptr : &logits,
                                              groups, numTokens, result);
  assignRows(spec, fates, result);

  // 4. Output: routed slots in slot order, then the shared expert. bf16
  // expert weights: the f32 weights rounded as the compiled layer's are.
  bool bf16 = spec.expertWeights == WeightType::BF16;
  std::vector<float> rounded[4];
  const float *w1 = w.w1.data(), *w2 = w.w2.data(),
              *sharedW1 = w.sharedW1.data(), *sharedW2 = w.sharedW2.data();
  if (bf16) {
    const float **views[4] = {&w1, &w2, &sharedW1, &sharedW2};
    const std::vector<float> *sources[4] = {&w.w1, &w.w2, &w.sharedW1,
                                            &w.sharedW2};
    for (int i = 0; i < 4; ++i) {
      rounded[i] = *sources[i];
      for (float &v : rounded[i])
        v = roundToBF16(v);
      *views[i] = rounded[i].data();
    }
  }
  int64_t firstRows = spec.firstRows();
  for (int64_t t = 0; t < numTokens; ++t) {
    const float *x = inputs.x + t * d;
    std::vector<double> out(d, 0.0);
    for (int64_t j = 0; j < numSlots; ++j) {
      int64_t s = t * numSlots + j;
      double weight = result.weights[s];
      if (fates[s] == SlotFate::Passthrough) {
        for (int64_t i = 0; i < d; ++i)
          out[i] += weight * static_cast<double>(x[i]);
      } else if (fates[s] == SlotFate::Compute) {
        int64_t e = result.indices[s];
        std::vector<double> y =
            ffn(spec.activation, w1 + e * firstRows * d, w2 + e * d * spec.ffn,
                d, spec.ffn, x, bf16);
        for (int64_t i = 0; i < d; ++i)
          out[i] += weight * y[i];
      }
    }
    if (spec.sharedFfn > 0) {
      std::vector<double> y =
          ffn(spec.activation, sharedW1, sharedW2, d, spec.sharedFfn, x, bf16);
      double gate =
          spec.sharedGate ? sigmoid(dot(x, w.sharedGate.data(), d)) : 1.0;
      for (int64_t i = 0; i < d; ++i)
        out[i] += gate * y[i];
    }
    for (int64_t i = 0; i < d; ++i)
      result.output[t * d + i] = static_cast<float>(out[i]);
  }

  // 5. Losses (none for hash, which has no router probabilities).
  if (!isHash) {
    result.auxLoss =
        static_cast<float>(auxLoss(spec, logits, result.routeIndices, groups));
    result.zLoss = static_cast<float>(zLoss(logits));
  }
  return result;
}
