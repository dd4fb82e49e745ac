// The fused dequantize-and-compare pass against an independent float64
// reference, on awkward shapes and every scheme; determinism across thread
// counts; the device-side bound against error_bound().
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"
#include "qpack/spec/error_sums.hpp"
#include "qpack/verify/metrics.hpp"
#include "testutil.hpp"
#include "verify/verify_fixtures.hpp"

namespace qpack {
namespace {

using vtest::HostTensor;
using vtest::Quantized;
using vtest::view_of;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_identical(const ErrorSums& a, const ErrorSums& b, const std::string& what) {
  EXPECT_EQ(a.count, b.count) << what;
  EXPECT_EQ(a.nonfinite, b.nonfinite) << what;
  EXPECT_TRUE(same_bits(a.sum_sq_err, b.sum_sq_err)) << what;
  EXPECT_TRUE(same_bits(a.sum_abs_err, b.sum_abs_err)) << what;
  EXPECT_TRUE(same_bits(a.sum_sq_ref, b.sum_sq_ref)) << what;
  EXPECT_TRUE(same_bits(a.sum_sq_hat, b.sum_sq_hat)) << what;
  EXPECT_TRUE(same_bits(a.sum_dot, b.sum_dot)) << what;
  EXPECT_TRUE(same_bits(a.max_abs_err, b.max_abs_err)) << what;
  EXPECT_EQ(a.max_abs_index, b.max_abs_index) << what;
  EXPECT_EQ(a.bound_violations, b.bound_violations) << what;
  EXPECT_EQ(a.first_violation_index, b.first_violation_index) << what;
}

// Sums of the same terms in another order: equal to a few ulps per term.
void expect_close(double got, double want, const std::string& what) {
  if (std::isinf(want) || std::isnan(want)) {
    EXPECT_TRUE(got == want || (std::isnan(got) && std::isnan(want)))
        << what << ": " << got << " vs " << want;
    return;
  }
  EXPECT_NEAR(got, want, 1e-11 * std::max(1.0, std::fabs(want)) + 1e-300) << what;
}

void check_against_reference(const HostTensor& t, const Quantized& q, const std::string& what) {
  const vtest::RefMetrics r = vtest::reference_metrics(t, q);
  const ErrorSums s = compute_error_sums_cpu(view_of(t, q), 1);
  EXPECT_EQ(s.count, r.count) << what;
  EXPECT_EQ(s.nonfinite, r.nonfinite) << what;
  expect_close(s.sum_sq_err, r.sq_err, what + " sq_err");
  expect_close(s.sum_abs_err, r.abs_err, what + " abs_err");
  expect_close(s.sum_sq_ref, r.sq_ref, what + " sq_ref");
  expect_close(s.sum_sq_hat, r.sq_hat, what + " sq_hat");
  expect_close(s.sum_dot, r.dot, what + " dot");
  // The max is order independent: exact, with the smallest index on ties.
  EXPECT_EQ(s.max_abs_err, r.max_abs) << what;
  EXPECT_EQ(s.max_abs_index, r.max_index) << what;
  EXPECT_EQ(s.bound_violations, r.violations) << what;
  EXPECT_EQ(s.first_violation_index, r.first_violation) << what;
  EXPECT_EQ(s.bound_violations, 0u) << what << ": the quantizer must meet the bound";
  // Derived metrics.
  expect_close(s.rmse(), r.rmse(), what + " rmse");
  expect_close(s.mean_abs_err(), r.count ? r.abs_err / double(r.count) : 0, what + " mean_abs");
  expect_close(s.rel_error(), r.rel(), what + " rel");
  if (std::isfinite(r.snr_db()))
    EXPECT_NEAR(s.snr_db(), r.snr_db(), 1e-9 * std::max(1.0, std::fabs(r.snr_db()))) << what;
  else
    EXPECT_EQ(s.snr_db(), r.snr_db()) << what;
  EXPECT_NEAR(s.cosine(), r.cosine(), 1e-12) << what;
  // Any thread count gives the same bits.
  expect_identical(s, compute_error_sums_cpu(view_of(t, q), 2), what + " (2 threads)");
  expect_identical(s, compute_error_sums_cpu(view_of(t, q), 3), what + " (3 threads)");
}

std::string describe(const HostTensor& t, const QuantScheme& s) {
  std::string r = t.name + " " + dtype_name(t.dtype) + " [";
  for (size_t i = 0; i < t.shape.size(); ++i) r += (i ? "," : "") + std::to_string(t.shape[i]);
  return r + "] " + scheme_label(s);
}

// Every bits x symmetric x scale dtype, each on a random awkward shape, axis,
// group size and source dtype.
TEST(VerifyMetrics, MatchesFloat64ReferenceOnEveryScheme) {
  std::mt19937_64 rng(test::test_seed());
  const std::vector<std::vector<int64_t>> shapes = {{1},         {7},       {3, 5},      {65, 3},
                                                    {2, 3, 130}, {70, 300}, {5, 100, 3}, {129, 2},
                                                    {1, 1000},   {33, 257}};
  const int64_t groups[] = {8, 16, 64, 0, 96, 128, 10};
  const DType sources[] = {DType::F32, DType::F16, DType::BF16};
  for (int bits : {2, 3, 4, 8})
    for (int kind = 0; kind < 3; ++kind)  // symmetric, float and integer zero-points
      for (DType sd : {DType::F16, DType::BF16, DType::F32})
        for (int rep = 0; rep < 2; ++rep) {
          const auto& shape = shapes[rng() % shapes.size()];
          QuantScheme s;
          s.bits = bits;
          s.symmetric = kind == 0;
          s.zero_point = kind == 2 ? ZeroPoint::Integer : ZeroPoint::Float;
          s.scale_dtype = sd;
          s.group_size = groups[rng() % std::size(groups)];
          s.axis = int(rng() % shape.size()) - (rng() % 2 ? int(shape.size()) : 0);
          const HostTensor t =
              vtest::random_tensor("t", sources[rng() % 3], shape, rng, rep ? 0.02 : 3.0);
          check_against_reference(t, vtest::quantize(t, s), describe(t, s));
        }
}

// Each shape with the default scheme on both axes, including the layouts of
// the fixed order's special cases: inner >= 256 with a partial column block,
// inner < 256 not dividing 256, groups of several 64-element segments with a
// partial last one.
TEST(VerifyMetrics, AwkwardShapesAndGroupSizes) {
  std::mt19937_64 rng(test::test_seed() + 1);
  const std::vector<std::vector<int64_t>> shapes = {{1},       {2},        {9, 1},      {1, 9},
                                                    {64, 64},  {65, 300},  {200, 3},    {3, 200},
                                                    {4, 5, 6}, {190, 513}, {1, 257, 1}, {0, 5}};
  for (const auto& shape : shapes)
    for (int axis : {0, -1})
      for (int64_t g : {8, 64, 0, 130}) {
        QuantScheme s;
        s.axis = axis;
        s.group_size = g;
        const HostTensor t = vtest::random_tensor("w", DType::F32, shape, rng);
        check_against_reference(t, vtest::quantize(t, s), describe(t, s));
      }
}

TEST(VerifyMetrics, SpecialTensors) {
  QuantScheme s;
  s.axis = -1;
  // All zeros: exact. rel 0, SNR +inf, cosine 1.
  HostTensor z;
  z.name = "zeros";
  z.dtype = DType::F32;
  z.shape = {4, 100};
  z.bytes.assign(1600, 0);
  const ErrorSums zs = compute_error_sums_cpu(view_of(z, vtest::quantize(z, s)), 2);
  EXPECT_EQ(zs.count, 400u);
  EXPECT_EQ(zs.sum_sq_err, 0.0);
  EXPECT_EQ(zs.rel_error(), 0.0);
  EXPECT_EQ(zs.snr_db(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(zs.cosine(), 1.0);
  EXPECT_EQ(zs.max_abs_err, 0.0);
  EXPECT_EQ(zs.max_abs_index, 0);  // every error ties at 0: the smallest index
  // A constant representable in F16: reconstructed exactly.
  HostTensor c = z;
  for (uint64_t i = 0; i < 400; ++i) vtest::set_value(c, i, 0.75f);
  const ErrorSums cs = compute_error_sums_cpu(view_of(c, vtest::quantize(c, s)), 1);
  EXPECT_EQ(cs.sum_sq_err, 0.0);
  EXPECT_EQ(cs.snr_db(), std::numeric_limits<double>::infinity());
  EXPECT_NEAR(cs.cosine(), 1.0, 1e-15);
  // One element.
  std::mt19937_64 rng(7);
  const HostTensor one = vtest::random_tensor("one", DType::BF16, {1}, rng);
  check_against_reference(one, vtest::quantize(one, QuantScheme{}), "one element");
}

// Repeated rows give equal errors at several indexes: the smallest wins, on
// every path and thread count.
TEST(VerifyMetrics, MaxAbsTiesGoToTheSmallestIndex) {
  std::mt19937_64 rng(11);
  for (int axis : {0, -1}) {
    HostTensor t = vtest::random_tensor("t", DType::F32, {6, 300}, rng);
    // Rows 3..5 repeat rows 0..2; with axis -1 the groups repeat, with axis 0
    // columns repeat in pairs: make columns 150.. equal columns 0...
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 0; c < 300; ++c) {
        const int64_t rr = axis == -1 ? r % 3 : r;
        const int64_t cc = axis == 0 ? c % 150 : c;
        vtest::set_value(t, uint64_t(r * 300 + c), vtest::get_value(t, uint64_t(rr * 300 + cc)));
      }
    QuantScheme s;
    s.axis = axis;
    s.group_size = 0;
    const Quantized q = vtest::quantize(t, s);
    const vtest::RefMetrics r = vtest::reference_metrics(t, q);
    for (int threads : {1, 2}) {
      const ErrorSums e = compute_error_sums_cpu(view_of(t, q), threads);
      EXPECT_EQ(e.max_abs_index, r.max_index) << "axis " << axis;
      EXPECT_EQ(e.max_abs_err, r.max_abs);
    }
    // The tie really exists.
    const int64_t twin = axis == -1 ? r.max_index + 900 : r.max_index + 150;
    ASSERT_LT(twin, 1800);
    EXPECT_EQ(vtest::get_value(t, uint64_t(r.max_index)), vtest::get_value(t, uint64_t(twin)));
  }
}

// Files converted with --nonfinite=zero: NaN/Inf source elements are left
// out of every metric and counted.
TEST(VerifyMetrics, NonFiniteSourceElementsAreExcludedAndCounted) {
  std::mt19937_64 rng(5);
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    HostTensor t = vtest::random_tensor("t", dt, {40, 70}, rng);
    vtest::set_value(t, 3, std::numeric_limits<float>::quiet_NaN());
    vtest::set_value(t, 100, std::numeric_limits<float>::infinity());
    vtest::set_value(t, 2799, -std::numeric_limits<float>::infinity());
    const Quantized q = vtest::quantize(t, QuantScheme{}, NonFinitePolicy::Zero);
    const ErrorSums s = compute_error_sums_cpu(view_of(t, q), 2);
    EXPECT_EQ(s.nonfinite, 3u);
    EXPECT_EQ(s.count, 2800u - 3u);
    EXPECT_TRUE(std::isfinite(s.sum_sq_err));
    EXPECT_TRUE(std::isfinite(s.rel_error()));
    check_against_reference(t, q, std::string("nonfinite ") + dtype_name(dt));
  }
}

// A damaged scale (as if the wrong source were given, or a quantizer bug)
// is caught by the bound count, at the right first index.
TEST(VerifyMetrics, BoundViolationsAreCounted) {
  std::mt19937_64 rng(9);
  const HostTensor t = vtest::random_tensor("t", DType::F32, {128, 96}, rng);
  Quantized q = vtest::quantize(t, QuantScheme{});
  // Halve the scale of group (g=1, i=5): its reconstructions shrink.
  const int64_t p = 1 * q.layout.inner + 5;
  const float s = load_as_f32(q.scales.data(), DType::F16, uint64_t(p));
  const uint16_t h = f32_to_f16_rne(s * 0.5f);
  std::memcpy(q.scales.data() + 2 * p, &h, 2);
  const vtest::RefMetrics r = vtest::reference_metrics(t, q);
  ASSERT_GT(r.violations, 0u);
  for (int threads : {1, 2}) {
    const ErrorSums e = compute_error_sums_cpu(view_of(t, q), threads);
    EXPECT_EQ(e.bound_violations, r.violations);
    EXPECT_EQ(e.first_violation_index, r.first_violation);
    EXPECT_GE(e.first_violation_index, 64 * 96);  // inside group row 1
  }
}

// The spec's libm-free bound (bound_terms/bound_for, which the GPU runs, and
// error_bound) gives the bits of the doc's formula evaluated with libm.
TEST(VerifyMetrics, DeviceBoundEqualsErrorBound) {
  std::mt19937_64 rng(test::test_seed() + 3);
  std::uniform_real_distribution<double> exp_dist(-40, 20);
  for (int i = 0; i < 20000; ++i) {
    QuantScheme s;
    s.bits = std::array<int, 4>{2, 3, 4, 8}[rng() % 4];
    s.symmetric = rng() % 2;
    if (rng() % 2) s.zero_point = ZeroPoint::Integer;
    s.scale_dtype = std::array<DType, 3>{DType::F16, DType::BF16, DType::F32}[rng() % 3];
    const auto pick = [&]() -> double {
      switch (rng() % 6) {
        case 0:
          return 0.0;
        case 1:
          return 6e-8;
        default:
          return float((rng() % 2 ? -1 : 1) * std::pow(2.0, exp_dist(rng)));
      }
    };
    const double sc = std::fabs(pick()), m = s.symmetric ? 0.0 : pick(), x = pick();
    const double q = s.symmetric ? qmax_sym(s.bits) : qmax_asym(s.bits);
    const bool float_zero = !s.symmetric && s.zero_point == ZeroPoint::Float;
    const spec::BoundTerms bt =
        spec::bound_terms(sc, float_zero ? m : 0.0, q, float_zero, s.scale_dtype);
    const double mine = spec::bound_for(bt, x), want = test::reference_error_bound(x, sc, m, s);
    ASSERT_TRUE(same_bits(mine, want)) << "s=" << sc << " m=" << m << " x=" << x << " "
                                       << scheme_label(s) << ": " << mine << " vs " << want;
    ASSERT_LE(bt.base, want);
    ASSERT_EQ(spec::ulp_in(m, s.scale_dtype), test::reference_ulp(m, s.scale_dtype));
    ASSERT_TRUE(same_bits(spec::error_bound(x, sc, m, s), want));
  }
}

TEST(VerifyMetrics, BlockGeometry) {
  QuantScheme s;
  // inner >= 256: blocks never straddle a segment row.
  auto L = make_layout({130, 300}, s);
  auto g = spec::make_geometry(L, s, DType::F32);
  EXPECT_EQ(g.segs, 1);
  EXPECT_EQ(g.seg_rows, 3);
  EXPECT_EQ(g.col_blocks, 2);
  EXPECT_EQ(g.blocks, 6);
  // Group 128 = two segments; inner 3: 85 segment rows per block.
  s.group_size = 128;
  s.axis = 1;
  L = make_layout({2, 200, 3}, s);
  g = spec::make_geometry(L, s, DType::F32);
  EXPECT_EQ(g.segs, 2);
  EXPECT_EQ(g.seg_rows, 2 * 2 * 2);
  EXPECT_EQ(g.rows_per_block, 85);
  EXPECT_EQ(g.blocks, 1);
  // The spans of consecutive segment rows tile the rows, planes and scales.
  int64_t row = 0, plane = 0;
  for (int64_t sr = 0; sr < g.seg_rows; ++sr) {
    const auto sp = spec::seg_row_span(g, sr);
    EXPECT_EQ(sp.row_begin, row);
    EXPECT_EQ(sp.plane_begin, plane);
    row = sp.row_end;
    plane = sp.plane_end;
  }
  EXPECT_EQ(row, 2 * 200);
  EXPECT_EQ(uint64_t(plane) * uint64_t(L.inner), L.codes_bytes());
  // Empty tensors have no blocks.
  EXPECT_EQ(error_sums_block_count(make_layout({0, 5}, QuantScheme{})), 0);
}

TEST(VerifyMetrics, CudaUnavailableIsNoDevice) {
  if (verify_cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    CudaMetricsEngine::create(1 << 20);
    FAIL() << "expected Error(NoDevice)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoDevice);
  }
}

}  // namespace
}  // namespace qpack
