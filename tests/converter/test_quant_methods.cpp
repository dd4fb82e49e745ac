// The parameter methods of docs/quantization.md §M (search, refit, and the
// integer zero-point search of §M5): the CPU
// path against the scalar reference byte for byte (poisoned buffers, several
// thread counts, awkward shapes, every width and scale dtype), every group's
// error no larger than RTN's (recomputed here in float64 from the decoded
// tensor), every element within the method's bound (§M4), and the methods
// refused where they do not apply.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_isa_levels.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/error_bound.hpp"
#include "qpack/spec/group_methods.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

struct Quantized {
  GroupLayout layout;
  std::vector<uint8_t> codes, scales, zeros;
  QuantBuffers buffers() { return {codes.data(), scales.data(), zeros.data()}; }
};

Quantized make_output(const std::vector<int64_t>& shape, const QuantScheme& s, uint8_t poison) {
  Quantized q;
  q.layout = make_layout(shape, s);
  q.codes.assign(q.layout.codes_bytes(), poison);
  q.scales.assign(size_t(q.layout.params_bytes(s.scale_dtype)), poison);
  q.zeros.assign(q.scales.size(), poison);
  return q;
}

// Values rounded to the source dtype, and their bytes.
std::vector<uint8_t> to_source(std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> b(v.size() * (dtype == DType::F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&b[4 * i], &v[i], 4);
      continue;
    }
    const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(v[i]) : f32_to_bf16_rne(v[i]);
    v[i] = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    std::memcpy(&b[2 * i], &h, 2);
  }
  return b;
}

// Weight-like values: mostly Gaussian, some outliers, some runs of equal
// values (constant groups), some exact zeros of both signs.
std::vector<float> weights(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::uniform_int_distribution<int> pick(0, 999);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const int p = pick(rng);
    x = nd(rng);
    if (p < 8) x *= 12.0f;  // outliers
    if (p >= 990) x = p % 2 ? 0.0f : -0.0f;
  }
  if (n >= 40)
    for (int k = 0; k < 16; ++k) v[size_t(20 + k)] = 0.0123f;
  return v;
}

struct Case {
  std::vector<int64_t> shape;
  int axis;
  int64_t group;
  int bits;
  DType sd, src;
};

const Case kCases[] = {
    {{64, 48}, 0, 64, 4, DType::F16, DType::F16},
    {{130, 40}, 0, 64, 4, DType::F16, DType::F32},
    {{37, 96}, -1, 32, 4, DType::F16, DType::BF16},
    {{5, 200}, -1, 64, 3, DType::BF16, DType::F16},
    {{72, 33}, 0, 16, 2, DType::F32, DType::F32},
    {{3, 100, 7}, 1, 24, 8, DType::F16, DType::F32},
    {{96, 64}, 0, 0, 4, DType::BF16, DType::BF16},
    {{11, 90}, -1, 0, 2, DType::F16, DType::F16},
    {{200, 35}, 0, 64, 8, DType::F32, DType::F16},
    {{64, 256}, -1, 64, 4, DType::F16, DType::F16},
    // Row groups with a partial last group per row (batches of 16 groups
    // only where no partial one is among them), and 16-column batches of a
    // BF16 source next to scalar columns.
    {{3, 1100}, -1, 64, 4, DType::F16, DType::F16},
    {{70, 21}, 0, 32, 3, DType::BF16, DType::BF16},
};

// Sum of (x_hat - x)^2 per group, in float64, from the decoded tensor.
std::vector<double> group_errors(const GroupLayout& L, const std::vector<float>& x,
                                 const std::vector<float>& xh) {
  std::vector<double> e(size_t(L.num_groups()), 0.0);
  for (int64_t o = 0; o < L.outer; ++o)
    for (int64_t g = 0; g < L.groups_per_axis; ++g)
      for (int64_t i = 0; i < L.inner; ++i)
        for (int64_t k = 0; k < L.group_len(g); ++k) {
          const int64_t f = (o * L.axis_len + g * L.group_size + k) * L.inner + i;
          const double d = double(xh[size_t(f)]) - double(x[size_t(f)]);
          e[size_t((o * L.groups_per_axis + g) * L.inner + i)] += d * d;
        }
  return e;
}

// A method and the zero-point rule it runs under.
struct MethodCase {
  QuantMethod method;
  ZeroPoint zero_point;
};
class QuantMethods : public ::testing::TestWithParam<MethodCase> {};

TEST_P(QuantMethods, CpuMatchesReferenceNeverWorseThanRtnWithinBound) {
  std::mt19937 rng(unsigned(test::test_seed()));
  int improved_groups = 0, beyond_rtn_bound = 0;
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << "shape " << c.shape[0] << "x" << c.shape[1] << " axis "
                                    << c.axis << " g" << c.group << " b" << c.bits);
    QuantScheme s;
    s.bits = c.bits;
    s.group_size = c.group;
    s.axis = c.axis;
    s.scale_dtype = c.sd;
    s.method = GetParam().method;
    s.zero_point = GetParam().zero_point;
    const bool intz = has_integer_zero(s);
    QuantScheme rtn = s;
    rtn.method = QuantMethod::Rtn;
    int64_t n = 1;
    for (auto d : c.shape) n *= d;
    std::vector<float> x = weights(n, rng);
    const auto src = to_source(x, c.src);
    const QuantInput in{src.data(), c.src, "t"};

    auto ref = make_output(c.shape, s, 0xA5);
    quantize_reference(in, ref.layout, s, NonFinitePolicy::Error, ref.buffers());
    for (CpuIsa isa : test::available_cpu_isas()) {
      test::CpuIsaScope level(isa);
      for (int threads : {1, 2, 3}) {
        auto fast = make_output(c.shape, s, uint8_t(0x3C + threads));
        quantize_cpu(in, fast.layout, s, NonFinitePolicy::Error, fast.buffers(), threads);
        EXPECT_EQ(fast.codes, ref.codes) << cpu_isa_name(isa) << ", " << threads << " threads";
        EXPECT_EQ(fast.scales, ref.scales) << cpu_isa_name(isa) << ", " << threads << " threads";
        EXPECT_EQ(fast.zeros, ref.zeros) << cpu_isa_name(isa) << ", " << threads << " threads";
      }
    }
    auto base = make_output(c.shape, rtn, 0x00);
    quantize_reference(in, base.layout, rtn, NonFinitePolicy::Error, base.buffers());

    std::vector<float> xh(static_cast<size_t>(n)), xr(static_cast<size_t>(n));
    dequantize_reference(ref.codes.data(), ref.scales.data(), ref.zeros.data(), ref.layout, s,
                         xh.data());
    dequantize_reference(base.codes.data(), base.scales.data(), base.zeros.data(), base.layout, rtn,
                         xr.data());
    const auto em = group_errors(ref.layout, x, xh), er = group_errors(base.layout, x, xr);
    for (size_t p = 0; p < em.size(); ++p) {
      ASSERT_LE(em[p], er[p]) << "group " << p;
      if (em[p] < er[p]) ++improved_groups;
    }
    // The method's bound (§M4) for every element; RTN's own bound is what
    // a method may exceed.
    const GroupLayout& L = ref.layout;
    for (int64_t o = 0; o < L.outer; ++o)
      for (int64_t g = 0; g < L.groups_per_axis; ++g)
        for (int64_t i = 0; i < L.inner; ++i) {
          const int64_t pi = (o * L.groups_per_axis + g) * L.inner + i;
          const double S = spec::load_param(ref.scales.data(), pi, c.sd);
          const double M = spec::load_param(ref.zeros.data(), pi, c.sd);
          for (int64_t k = 0; k < L.group_len(g); ++k) {
            const size_t f = size_t((o * L.axis_len + g * L.group_size + k) * L.inner + i);
            const double err = std::fabs(double(x[f]) - double(xh[f]));
            ASSERT_LE(err, spec::error_bound(x[f], S, M, s)) << "flat " << f;
            if (err > spec::error_bound(x[f], S, M, rtn)) ++beyond_rtn_bound;
            // Independent form of §M4 (§M5): within S/2 (+ slack) of the
            // grid inside [M, M + Q*S] ([-z*S, (Q - z)*S]), the nearest
            // end outside it.
            const double Q = double((1 << c.bits) - 1);
            const double lo = intz ? -M * S : M, hi = intz ? (Q - M) * S : M + Q * S;
            const double out = std::max({0.0, lo - x[f], x[f] - hi});
            ASSERT_LE(err, out + 0.5 * S * (1 + 1e-5) +
                               1e-6 * (std::fabs(x[f]) + (intz ? 0.0 : std::fabs(M))) +
                               4 * Q * S * 0x1p-10 + 1e-30)
                << "flat " << f;
          }
        }
  }
  // A method that never changed anything would pass the above.
  EXPECT_GT(improved_groups, 100);
  if (GetParam().method == QuantMethod::Search) {
    EXPECT_GT(beyond_rtn_bound, 0);
  }
}

TEST_P(QuantMethods, LowerTotalErrorThanRtn) {
  std::mt19937 rng(unsigned(test::test_seed()));
  QuantScheme s;
  s.method = GetParam().method;
  s.zero_point = GetParam().zero_point;
  QuantScheme rtn;
  rtn.zero_point = s.zero_point;
  std::vector<float> x = weights(256 * 128, rng);
  const auto src = to_source(x, DType::F32);
  const QuantInput in{src.data(), DType::F32, "t"};
  auto a = make_output({256, 128}, s, 0);
  auto b = make_output({256, 128}, rtn, 0);
  quantize_cpu(in, a.layout, s, NonFinitePolicy::Error, a.buffers(), 2);
  quantize_cpu(in, b.layout, rtn, NonFinitePolicy::Error, b.buffers(), 2);
  std::vector<float> xa(x.size()), xb(x.size());
  dequantize_reference(a.codes.data(), a.scales.data(), a.zeros.data(), a.layout, s, xa.data());
  dequantize_reference(b.codes.data(), b.scales.data(), b.zeros.data(), b.layout, rtn, xb.data());
  double ea = 0, eb = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    ea += (double(xa[k]) - x[k]) * (double(xa[k]) - x[k]);
    eb += (double(xb[k]) - x[k]) * (double(xb[k]) - x[k]);
  }
  // At least 3 % lower squared error on Gaussian weights with outliers.
  EXPECT_LT(ea, 0.97 * eb);
}

INSTANTIATE_TEST_SUITE_P(Methods, QuantMethods,
                         ::testing::Values(MethodCase{QuantMethod::Search, ZeroPoint::Float},
                                           MethodCase{QuantMethod::Refit, ZeroPoint::Float},
                                           MethodCase{QuantMethod::Search, ZeroPoint::Integer}),
                         [](const auto& info) {
                           return std::string(info.param.method == QuantMethod::Search ? "search"
                                                                                       : "refit") +
                                  (info.param.zero_point == ZeroPoint::Integer ? "_integer_zero"
                                                                               : "");
                         });

TEST(QuantMethodsRules, RefusedForSymmetricRefitRefusedForIntegerZeroPoints) {
  QuantScheme s;
  s.method = QuantMethod::Search;
  EXPECT_TRUE(validate_scheme(s).empty());
  s.symmetric = true;
  EXPECT_NE(validate_scheme(s).find("asymmetric"), std::string::npos);
  s.symmetric = false;
  s.zero_point = ZeroPoint::Integer;
  EXPECT_TRUE(validate_scheme(s).empty());  // §M5
  s.method = QuantMethod::Refit;
  EXPECT_NE(validate_scheme(s).find("float zero-points"), std::string::npos);
  s.method = QuantMethod::Rtn;
  EXPECT_TRUE(validate_scheme(s).empty());
}

// Unit weights given explicitly are the default; other weights change the
// choice (the hook an importance matrix will use).
TEST(QuantMethodsRules, ExplicitUnitWeightsAreTheDefault) {
  std::mt19937 rng(unsigned(test::test_seed()));
  int differ = 0;
  for (int t = 0; t < 200; ++t) {
    std::vector<float> x = weights(64, rng), ones(64, 1.0f), w(64);
    std::uniform_real_distribution<float> ud(0.1f, 4.0f);
    for (auto& v : w) v = ud(rng);
    for (QuantMethod m : {QuantMethod::Search, QuantMethod::Refit}) {
      const auto a = spec::params_asym_method(spec::GroupValues{x.data(), nullptr}, 64, 4,
                                              DType::F16, m, false);
      const auto b = spec::params_asym_method(spec::GroupValues{x.data(), ones.data()}, 64, 4,
                                              DType::F16, m, false);
      const auto c = spec::params_asym_method(spec::GroupValues{x.data(), w.data()}, 64, 4,
                                              DType::F16, m, false);
      ASSERT_EQ(a.scale_bits16, b.scale_bits16);
      ASSERT_EQ(a.zero_bits16, b.zero_bits16);
      differ += a.scale_bits16 != c.scale_bits16 || a.zero_bits16 != c.zero_bits16;
      // Weighted, the weighted error still never exceeds RTN's.
      float mn = x[0], mx = x[0];
      for (float v : x) {
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
      const auto r = spec::params_asym(mn, mx, 4, DType::F16);
      const spec::GroupValues gw{x.data(), w.data()};
      ASSERT_LE(spec::group_error(gw, 64, c, 4), spec::group_error(gw, 64, r, 4));
    }
  }
  EXPECT_GT(differ, 10);
}

// NaN/Inf: with the Zero policy the CPU path gives the reference's bytes
// (batched and single groups, both layouts); with Error both refuse with the
// same message.
TEST(QuantMethodsRules, NonFiniteAsTheReference) {
  std::mt19937 rng(unsigned(test::test_seed()));
  for (int axis : {0, -1})
    for (ZeroPoint zp : {ZeroPoint::Float, ZeroPoint::Integer}) {
      SCOPED_TRACE(zp == ZeroPoint::Integer ? "integer zero-points" : "float zero-points");
      std::vector<float> x = weights(96 * 80, rng);
      x[77] = std::nanf("");
      x[1234] = INFINITY;
      x[5000] = -INFINITY;
      const auto src = to_source(x, DType::F16);
      const QuantInput in{src.data(), DType::F16, "nf"};
      QuantScheme s;
      s.axis = axis;
      s.method = QuantMethod::Search;
      s.zero_point = zp;
      auto ref = make_output({96, 80}, s, 0x11);
      quantize_reference(in, ref.layout, s, NonFinitePolicy::Zero, ref.buffers());
      std::string ref_msg;
      try {
        quantize_reference(in, ref.layout, s, NonFinitePolicy::Error, ref.buffers());
      } catch (const Error& e) {
        ref_msg = e.what();
      }
      EXPECT_NE(ref_msg, "");
      for (CpuIsa isa : test::available_cpu_isas()) {
        test::CpuIsaScope level(isa);
        auto fast = make_output({96, 80}, s, 0xEE);
        quantize_cpu(in, fast.layout, s, NonFinitePolicy::Zero, fast.buffers(), 2);
        EXPECT_EQ(fast.codes, ref.codes) << "axis " << axis << " " << cpu_isa_name(isa);
        EXPECT_EQ(fast.scales, ref.scales) << "axis " << axis << " " << cpu_isa_name(isa);
        EXPECT_EQ(fast.zeros, ref.zeros) << "axis " << axis << " " << cpu_isa_name(isa);
        std::string cpu_msg;
        try {
          quantize_cpu(in, fast.layout, s, NonFinitePolicy::Error, fast.buffers(), 2);
        } catch (const Error& e) {
          cpu_msg = e.what();
        }
        EXPECT_EQ(cpu_msg, ref_msg) << cpu_isa_name(isa);
      }
    }
}

// A range that does not fit the scale dtype fails as RTN's does.
TEST(QuantMethodsRules, RangeOverflowFailsAsRtn) {
  std::vector<float> x(64, 1.0f);
  x[3] = 1e6f;
  const auto src = to_source(x, DType::F32);
  QuantScheme s;
  s.axis = -1;
  s.method = QuantMethod::Search;
  auto q = make_output({1, 64}, s, 0);
  EXPECT_THROW(quantize_reference({src.data(), DType::F32, "big"}, q.layout, s,
                                  NonFinitePolicy::Error, q.buffers()),
               Error);
  EXPECT_THROW(quantize_cpu({src.data(), DType::F32, "big"}, q.layout, s, NonFinitePolicy::Error,
                            q.buffers(), 2),
               Error);
}

// The same inside a batch of groups (32 rows or columns of 64): the first
// overflowing group is named, as by the reference.
TEST(QuantMethodsRules, RangeOverflowInABatchNamesTheReferenceGroup) {
  for (int axis : {0, -1}) {
    std::vector<float> x(64 * 64, 1.0f);
    for (size_t k = 0; k < x.size(); ++k) x[k] = 0.01f * float(k % 37);
    x[64 * 9 + 20] = 1e6f;
    x[64 * 30 + 3] = -1e6f;
    const auto src = to_source(x, DType::F32);
    QuantScheme s;
    s.axis = axis;
    s.method = QuantMethod::Search;
    auto q = make_output({64, 64}, s, 0);
    std::string ref_msg, cpu_msg;
    try {
      quantize_reference({src.data(), DType::F32, "big"}, q.layout, s, NonFinitePolicy::Error,
                         q.buffers());
    } catch (const Error& e) {
      ref_msg = e.what();
    }
    EXPECT_NE(ref_msg, "") << "axis " << axis;
    for (CpuIsa isa : test::available_cpu_isas()) {
      test::CpuIsaScope level(isa);
      cpu_msg.clear();
      try {
        quantize_cpu({src.data(), DType::F32, "big"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers(), 2);
      } catch (const Error& e) {
        cpu_msg = e.what();
      }
      EXPECT_EQ(cpu_msg, ref_msg) << "axis " << axis << " " << cpu_isa_name(isa);
    }
  }
}

}  // namespace
