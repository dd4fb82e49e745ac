// The fixed-order sums over float32 reconstructions (qpack/spec/
// float_error_sums.hpp, used for GGUF tensors): the four-lane, branch-free
// float_block_sums against the plain element loop (accumulate_float_element
// unit by unit) bit for bit, with NaN/Inf in both inputs and awkward lengths
// (three mutations of the lane code caught when written); FloatErrorAccumulator the same for any
// thread count and slicing, and refusing a slice after one that ended inside a block.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/spec/float_error_sums.hpp"
#include "qpack/verify/metrics.hpp"
#include "testutil.hpp"

using namespace qpack;
namespace sp = qpack::spec;

namespace {

uint64_t bits(double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return u;
}

void expect_same(const sp::PartialSums& a, const sp::PartialSums& b) {
  EXPECT_EQ(bits(a.sq_err), bits(b.sq_err));
  EXPECT_EQ(bits(a.abs_err), bits(b.abs_err));
  EXPECT_EQ(bits(a.sq_ref), bits(b.sq_ref));
  EXPECT_EQ(bits(a.sq_hat), bits(b.sq_hat));
  EXPECT_EQ(bits(a.dot), bits(b.dot));
  EXPECT_EQ(bits(a.max_abs), bits(b.max_abs));
  EXPECT_EQ(a.max_index, b.max_index);
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.nonfinite, b.nonfinite);
}

// The definition: every unit by the element rule, in order, then the tree.
sp::PartialSums plain_block(const float* ref, const float* hat, int64_t n, int64_t flat0) {
  std::vector<sp::PartialSums> slots(sp::kBlockUnits);
  for (int t = 0; t < sp::kBlockUnits; ++t) {
    sp::partial_init(slots[size_t(t)]);
    for (int64_t k = t * sp::kFloatUnitElements;
         k < std::min<int64_t>(n, (t + 1) * sp::kFloatUnitElements); ++k)
      sp::accumulate_float_element(slots[size_t(t)], ref[k], hat[k], flat0 + k);
  }
  for (int s = sp::kBlockUnits / 2; s > 0; s >>= 1)
    for (int t = 0; t < s; ++t) sp::partial_merge(slots[size_t(t)], slots[size_t(t + s)]);
  return slots[0];
}

// Non-finite source elements (skipped) and signed zeros throughout; with
// `hat_specials`, also one NaN and one Inf in the reconstruction (which make
// the sums NaN/Inf, so they are rare: otherwise nothing else would show).
void fill(std::vector<float>& ref, std::vector<float>& hat, std::mt19937_64& rng,
          bool hat_specials = false) {
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 199);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), -0.0f, 0.0f};
  for (size_t i = 0; i < ref.size(); ++i) {
    ref[i] = nd(rng);
    hat[i] = ref[i] + nd(rng) * 0.01f;
    const int p = pick(rng);
    if (p < 5) ref[i] = specials[p];
    if (p >= 5 && p < 8) hat[i] = specials[p - 2];  // signed zeros
    if (p == 10) hat[i] = ref[i];                   // exact
  }
  if (ref.size() > 64) ref[ref.size() / 3] = std::numeric_limits<float>::quiet_NaN();  // always one
  if (hat_specials && ref.size() > 2) {
    hat[ref.size() / 2] = std::numeric_limits<float>::infinity();
    hat[ref.size() - 1] = std::numeric_limits<float>::quiet_NaN();
  }
}

TEST(FloatErrorSums, FourLanesEqualThePlainElementLoop) {
  std::mt19937_64 rng(test::test_seed());
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(63), int64_t(64), int64_t(255), int64_t(257),
                    int64_t(4 * 64 + 3), sp::kFloatBlockElements - 1, sp::kFloatBlockElements}) {
    for (bool hat_specials : {false, true}) {
      SCOPED_TRACE(std::to_string(n) + (hat_specials ? " with NaN/Inf reconstructions" : ""));
      std::vector<float> ref(static_cast<size_t>(n)), hat(static_cast<size_t>(n));
      fill(ref, hat, rng, hat_specials);
      std::vector<sp::PartialSums> slots(sp::kBlockUnits);
      const int64_t flat0 = 3 * sp::kFloatBlockElements;
      sp::float_block_sums(ref.data(), hat.data(), n, flat0, slots.data());
      const sp::PartialSums want = plain_block(ref.data(), hat.data(), n, flat0);
      expect_same(slots[0], want);
      if (!hat_specials && n > 64) {
        EXPECT_TRUE(std::isfinite(want.sq_err));  // so that the sums are compared at all
        EXPECT_GT(want.nonfinite, 0u);
      }
    }
  }
}

// An exact reconstruction whose first element is a NaN source: the maximum
// (0) is at the first finite element, never at the skipped one.
TEST(FloatErrorSums, SkippedElementsNeverHoldTheMaximum) {
  std::vector<float> ref(size_t(sp::kFloatBlockElements), 0.25f);
  ref[0] = std::numeric_limits<float>::quiet_NaN();
  ref[64] = std::numeric_limits<float>::infinity();
  const std::vector<float> hat = ref;
  std::vector<sp::PartialSums> slots(sp::kBlockUnits);
  sp::float_block_sums(ref.data(), hat.data(), int64_t(ref.size()), 0, slots.data());
  expect_same(slots[0], plain_block(ref.data(), hat.data(), int64_t(ref.size()), 0));
  EXPECT_EQ(slots[0].max_index, 1);
  EXPECT_EQ(slots[0].max_abs, 0.0);
  EXPECT_EQ(slots[0].nonfinite, 2u);
}

TEST(FloatErrorSums, AccumulatorIsTheSameForAnyThreadCountAndSlicing) {
  std::mt19937_64 rng(test::test_seed());
  const int64_t n = 3 * sp::kFloatBlockElements + 1000;
  std::vector<float> ref(static_cast<size_t>(n)), hat(static_cast<size_t>(n));
  fill(ref, hat, rng);
  FloatErrorAccumulator one, two, sliced;
  one.add(ref.data(), hat.data(), n, 1);
  two.add(ref.data(), hat.data(), n, 2);
  sliced.add(ref.data(), hat.data(), sp::kFloatBlockElements, 2);
  sliced.add(ref.data() + sp::kFloatBlockElements, hat.data() + sp::kFloatBlockElements,
             n - sp::kFloatBlockElements, 2);
  for (const FloatErrorAccumulator* a : {&two, &sliced}) {
    const ErrorSums x = one.sums(), y = a->sums();
    EXPECT_EQ(bits(x.sum_sq_err), bits(y.sum_sq_err));
    EXPECT_EQ(bits(x.sum_dot), bits(y.sum_dot));
    EXPECT_EQ(bits(x.max_abs_err), bits(y.max_abs_err));
    EXPECT_EQ(x.max_abs_index, y.max_abs_index);
    EXPECT_EQ(x.count, y.count);
    EXPECT_EQ(x.nonfinite, y.nonfinite);
  }
  EXPECT_GT(one.sums().nonfinite, 0u);
  EXPECT_GT(one.sums().count, 0u);
  // A slice after one that ended inside a block would split a block.
  FloatErrorAccumulator bad;
  bad.add(ref.data(), hat.data(), 100, 1);
  EXPECT_THROW(bad.add(ref.data(), hat.data(), 100, 1), Error);
}

}  // namespace
