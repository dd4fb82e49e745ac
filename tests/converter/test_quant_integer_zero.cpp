// The integer zero-point rule (docs/quantization.md §5a): the scalar reference
// against an independent float64 implementation of the rule, the decode
// against compressed-tensors' (q - z) * s rounded once in the scale dtype, the
// error bound of §7 on the groups where clamping costs the most, and the
// worked example. Parity of the CPU path with the reference is in
// test_quant.cpp (check_case draws integer zero-points too).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/format/text.hpp"
#include "qpack/spec/codes.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

// ---- the rule in float64, written from the spec's text, not from the spec
// header. A binary32 operation on binary32 operands is the double result
// rounded to float: binary64 holds every exact sum, difference and product
// of two floats' worth of bits closely enough that rounding twice gives
// the correctly rounded binary32 result (53 >= 2*24 + 2).
float f32(double v) { return static_cast<float>(v); }

// Round to the scale dtype, nearest even, with subnormals, via the quantum.
double round_sd(double v, DType sd) {
  if (sd == DType::F32) return f32(v);
  const int mant = sd == DType::F16 ? 10 : 7;
  const int emin = sd == DType::F16 ? -14 : -126;
  const double maxv = sd == DType::F16 ? 65504.0 : std::ldexp(255.0, 127 - 7);  // BF16 0x7F7F
  if (v == 0.0) return 0.0;
  int e;
  std::frexp(std::fabs(v), &e);  // |v| in [2^(e-1), 2^e)
  const double quantum = std::ldexp(1.0, std::max(e - 1, emin) - mant);
  const double r = std::nearbyint(v / quantum) * quantum;  // v/quantum exact: a power of 2
  if (std::fabs(r) > maxv) return v > 0 ? INFINITY : -INFINITY;
  return r;
}

struct Group64 {
  double S, z;
  std::vector<uint32_t> q;
  bool overflow = false;
};

Group64 rule_f64(const std::vector<float>& x, int bits, DType sd) {
  Group64 g;
  const double Q = double((1 << bits) - 1);
  double mn = 0.0, mx = 0.0;  // the range always includes +0
  for (float v : x) {
    mn = std::min(mn, double(v));
    mx = std::max(mx, double(v));
  }
  const float s32 = f32(double(f32(mx - mn)) / Q);
  g.S = round_sd(s32, sd);
  if (!std::isfinite(g.S)) {
    g.overflow = true;
    return g;
  }
  double inv = 0.0;
  if (g.S < std::ldexp(1.0, -126)) {
    g.S = 0.0;
  } else {
    inv = f32(1.0 / g.S);
  }
  g.z = std::min(Q, std::max(0.0, std::nearbyint(double(f32(-mn * inv)))));
  for (float v : x) {
    const double t = std::nearbyint(double(f32(double(v) * inv))) + g.z;
    g.q.push_back(uint32_t(std::min(Q, std::max(0.0, t))));
  }
  return g;
}

std::vector<uint8_t> to_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

QuantScheme int_scheme(int bits, int64_t group, DType sd) {
  QuantScheme s;
  s.bits = bits;
  s.group_size = group;
  s.axis = -1;
  s.scale_dtype = sd;
  s.zero_point = ZeroPoint::Integer;
  return s;
}

// Values of one group in one of the shapes that stress the rule.
std::vector<float> group_values(int kind, int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float amp = std::ldexp(1.0f, int(rng() % 16) - 8);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const float r = normal(rng);
    switch (kind) {
      case 0:  // mixed signs
        x = amp * r;
        break;
      case 1:  // all positive, away from 0 (the range is widened down to 0)
        x = amp * (4.0f + std::fabs(r));
        break;
      case 2:  // all negative
        x = -amp * (4.0f + std::fabs(r));
        break;
      case 3:  // constant
        x = -amp * 1.75f;
        break;
      case 4:  // zeros of both signs
        x = (rng() & 1) ? 0.0f : -0.0f;
        break;
      case 5:  // subnormal and tiny
        x = std::ldexp(r, -(int(rng() % 30)) - 120);
        break;
      case 6:  // huge: F16 scales overflow, BF16/F32 hold them
        x = std::ldexp(r, 60 + int(rng() % 60));
        break;
      default:  // skewed: the zero-point near one end
        x = (rng() % 16 == 0) ? -amp * 0.1f * std::fabs(r) : amp * std::fabs(r);
        break;
    }
  }
  return v;
}

}  // namespace

// The reference equals the float64 rule, group by group, for every width,
// scale dtype and kind of group; its decode is the exact (q - z) * S.
TEST(QuantIntegerZero, ReferenceEqualsFloat64Rule) {
  std::mt19937_64 rng(test::test_seed() + 41);
  int groups = 0, clamped_z = 0, overflows = 0;
  for (int bits : {2, 3, 4, 8})
    for (DType sd : {DType::F16, DType::BF16, DType::F32})
      for (int kind = 0; kind < 8; ++kind)
        for (int64_t n : {8, 10, 66, 8, 10, 66, 8, 10, 66, 130}) {
          const std::vector<float> x = group_values(kind, n, rng);
          const QuantScheme s = int_scheme(bits, n, sd);
          const GroupLayout L = make_layout({n}, s);
          std::vector<uint8_t> codes(L.codes_bytes(), 0xCD), scales(L.params_bytes(sd), 0xCD),
              zeros(L.params_bytes(sd), 0xCD);
          const auto src = to_bytes(x);
          const Group64 want = rule_f64(x, bits, sd);
          SCOPED_TRACE(scheme_label(s) + " kind " + std::to_string(kind));
          try {
            quantize_reference({src.data(), DType::F32, "g"}, L, s, NonFinitePolicy::Error,
                               {codes.data(), scales.data(), zeros.data()});
          } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::RangeOverflow);
            EXPECT_TRUE(want.overflow) << "the reference overflowed, the float64 rule did not";
            ++overflows;
            continue;
          }
          ASSERT_FALSE(want.overflow);
          ++groups;
          const double S = spec::load_param(scales.data(), 0, sd);
          const double z = spec::load_param(zeros.data(), 0, sd);
          ASSERT_EQ(S, want.S);
          ASSERT_EQ(z, want.z);
          // z is stored as +0, never -0.
          if (z == 0.0) {
            ASSERT_EQ(spec::load_param_bits(zeros.data(), 0, sd), 0u);
          }
          if (z == double((1 << bits) - 1) && kind != 3) ++clamped_z;
          std::vector<float> out(size_t(n), NAN);
          dequantize_reference(codes.data(), scales.data(), zeros.data(), L, s, out.data());
          for (int64_t k = 0; k < n; ++k) {
            ASSERT_EQ(spec::get_code(codes.data(), 1, k, bits), want.q[size_t(k)]) << "k " << k;
            // (q - z) * S exactly (F16/BF16) or rounded once to binary32 (F32)...
            const double exact = (double(want.q[size_t(k)]) - want.z) * want.S;
            ASSERT_EQ(double(out[size_t(k)]), sd == DType::F32 ? double(f32(exact)) : exact);
            // ...so in the scale dtype it is compressed-tensors' (q - z) * s,
            // one rounding of the exact product.
            ASSERT_EQ(round_sd(out[size_t(k)], sd), round_sd(exact, sd));
            const double err = std::fabs(double(x[size_t(k)]) - out[size_t(k)]);
            ASSERT_LE(err, test::reference_error_bound(x[size_t(k)], S, 0.0, s));
          }
        }
  EXPECT_GT(groups, 800);
  EXPECT_GT(overflows, 0);  // kind 6 with F16 scales
  EXPECT_GT(clamped_z, 0);  // all-negative groups put z at the top of the range
}

// Where clamping costs most: the scale rounds down in the scale dtype, so Q*S
// falls short of the range and the end codes clamp. The bound of §7 holds on
// groups built to round S down as far as BF16/F16 allow, and the error there
// does exceed S/2 (the bound's extra terms are needed, not decoration).
TEST(QuantIntegerZero, ClampedEndsStayWithinTheBound) {
  std::mt19937_64 rng(test::test_seed() + 42);
  std::uniform_real_distribution<double> frac(0.0, 1.0);
  int beyond_half = 0;
  for (int bits : {2, 3, 4, 8})
    for (DType sd : {DType::F16, DType::BF16})
      for (int t = 0; t < 400; ++t) {
        const double Q = double((1 << bits) - 1);
        // A target scale just below a rounding boundary of the scale dtype
        // (mantissa ...1 followed by 0111...): round_sd rounds it down.
        const int mant = sd == DType::F16 ? 10 : 7;
        const int e = int(rng() % 8) - 6;
        const double base = std::ldexp(1.0 + double(rng() % (1u << mant)) / (1u << mant), e);
        const double s_true = base + std::ldexp(0.5 - 1e-3 * frac(rng), e - mant);  // < half ulp
        const double range = s_true * Q;
        const double lo = -range * frac(rng);
        std::vector<float> x = {float(lo), float(lo + range)};
        for (int k = 2; k < 16; ++k) x.push_back(float(lo + range * frac(rng)));
        const QuantScheme s = int_scheme(bits, 16, sd);
        const GroupLayout L = make_layout({16}, s);
        std::vector<uint8_t> codes(L.codes_bytes()), scales(L.params_bytes(sd)),
            zeros(L.params_bytes(sd));
        const auto src = to_bytes(x);
        quantize_reference({src.data(), DType::F32, "g"}, L, s, NonFinitePolicy::Error,
                           {codes.data(), scales.data(), zeros.data()});
        std::vector<float> out(16);
        dequantize_reference(codes.data(), scales.data(), zeros.data(), L, s, out.data());
        const double S = spec::load_param(scales.data(), 0, sd);
        for (int k = 0; k < 16; ++k) {
          const double err = std::fabs(double(x[size_t(k)]) - out[size_t(k)]);
          ASSERT_LE(err, test::reference_error_bound(x[size_t(k)], S, 0.0, s))
              << scheme_label(s) << " x " << x[size_t(k)] << " S " << S;
          if (err > 0.5 * S * (1 + 1e-6)) ++beyond_half;
        }
      }
  EXPECT_GT(beyond_half, 0);
}

// docs/quantization.md §5a's worked example, byte for byte.
TEST(QuantIntegerZero, SpecWorkedExample) {
  const std::vector<float> x = {-1.0f, -0.5f, 0.0f, 0.25f, 1.0f, 2.0f, 3.0f, 3.5f};
  const QuantScheme s = int_scheme(4, 8, DType::F16);
  const GroupLayout L = make_layout({8}, s);
  std::vector<uint8_t> codes(L.codes_bytes(), 0xEE), scales(2, 0xEE), zeros(2, 0xEE);
  const auto src = to_bytes(x);
  quantize_reference({src.data(), DType::F32, "example"}, L, s, NonFinitePolicy::Error,
                     {codes.data(), scales.data(), zeros.data()});
  // S = f16(fl(4.5 / 15)) = 0.300048828125 (0x34CD), z = 3 (0x4200).
  EXPECT_EQ(scales, (std::vector<uint8_t>{0xCD, 0x34}));
  EXPECT_EQ(zeros, (std::vector<uint8_t>{0x00, 0x42}));
  // codes 0, 1, 3, 4, 6, 10, 13, 15
  EXPECT_EQ(codes, (std::vector<uint8_t>{0x10, 0x43, 0xA6, 0xFD}));
  std::vector<float> out(8);
  dequantize_reference(codes.data(), scales.data(), zeros.data(), L, s, out.data());
  EXPECT_EQ(out[0], -0.900146484375f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[7], 3.6005859375f);
}

// A group of zeros, any signs, is degenerate: S = 0, z = 0, codes 0, x_hat +0.
TEST(QuantIntegerZero, ZeroGroupIsDegenerate) {
  for (DType sd : {DType::F16, DType::BF16, DType::F32}) {
    const std::vector<float> x = {0.0f, -0.0f, 0.0f, -0.0f, -0.0f, 0.0f, 0.0f, 0.0f};
    const QuantScheme s = int_scheme(4, 8, sd);
    const GroupLayout L = make_layout({8}, s);
    const int sb = sd == DType::F32 ? 4 : 2;
    std::vector<uint8_t> codes(L.codes_bytes(), 0xEE), scales(size_t(sb), 0xEE),
        zeros(size_t(sb), 0xEE);
    const auto src = to_bytes(x);
    quantize_cpu({src.data(), DType::F32, "z"}, L, s, NonFinitePolicy::Error,
                 {codes.data(), scales.data(), zeros.data()}, 2);
    EXPECT_EQ(codes, std::vector<uint8_t>(codes.size(), 0));
    EXPECT_EQ(scales, std::vector<uint8_t>(scales.size(), 0));
    EXPECT_EQ(zeros, std::vector<uint8_t>(zeros.size(), 0));
    std::vector<float> out(8, NAN);
    dequantize_cpu(codes.data(), scales.data(), zeros.data(), L, s, out.data(), 2);
    for (float v : out) EXPECT_EQ(spec::f32_bits(v), 0u);
  }
}

// The CPU path (AVX2 kernels for column blocks, row groups and whole rows,
// the per-group routine for the rest; OpenMP) gives the reference's bytes
// for integer zero-points on the groups of group_values, in every layout,
// width and scale dtype, from every source dtype, with 1-3 threads and
// output buffers poisoned differently.
TEST(QuantIntegerZero, CpuPathMatchesReferenceOnHardGroups) {
  std::mt19937_64 rng(test::test_seed() + 43);
  struct Shape {
    std::vector<int64_t> dims;
    int64_t group;
    int axis;
  };
  const Shape shapes[] = {{{130, 77}, 64, 0},  {{37, 128}, 32, -1}, {{19, 256}, 128, -1},
                          {{3, 40, 5}, 16, 1}, {{70, 33}, 0, 0},    {{9, 66}, 10, -1}};
  int runs = 0;
  for (const Shape& sh : shapes)
    for (int bits : {2, 3, 4, 8})
      for (DType sd : {DType::F16, DType::BF16, DType::F32})
        for (DType src_dt : {DType::F16, DType::BF16, DType::F32}) {
          QuantScheme s = int_scheme(bits, sh.group, sd);
          s.axis = sh.axis;
          const GroupLayout L = make_layout(sh.dims, s);
          const int64_t n = L.num_elements();
          // Each run of 32 elements is one kind of group_values (groups along
          // axis 0 see mixtures, along -1 mostly one kind).
          std::vector<float> x;
          while (int64_t(x.size()) < n) {
            int kind = int(rng() % 8);
            if (kind == 6 && src_dt == DType::F16) kind = 0;  // F16 holds no huge values
            if (kind == 5 && src_dt == DType::F16) kind = 4;
            const auto v = group_values(kind, 32, rng);
            x.insert(x.end(), v.begin(), v.end());
          }
          x.resize(size_t(n));
          std::vector<uint8_t> src(size_t(n) * (src_dt == DType::F32 ? 4 : 2));
          for (int64_t i = 0; i < n; ++i) {
            if (src_dt == DType::F32) {
              std::memcpy(&src[size_t(4 * i)], &x[size_t(i)], 4);
            } else {
              const uint16_t h = src_dt == DType::F16 ? f32_to_f16_rne(x[size_t(i)])
                                                      : f32_to_bf16_rne(x[size_t(i)]);
              std::memcpy(&src[size_t(2 * i)], &h, 2);
            }
          }
          SCOPED_TRACE(scheme_label(s) + " src " + dtype_name(src_dt) + " shape " +
                       std::to_string(sh.dims[0]) + "x" + std::to_string(sh.dims[1]));
          const QuantInput in{src.data(), src_dt, "t"};
          std::vector<uint8_t> rc(L.codes_bytes(), 0x5A), rs(L.params_bytes(sd), 0x5A),
              rz(L.params_bytes(sd), 0x5A);
          bool overflow = false;
          try {
            quantize_reference(in, L, s, NonFinitePolicy::Error, {rc.data(), rs.data(), rz.data()});
          } catch (const Error& e) {
            ASSERT_EQ(e.code(), ErrorCode::RangeOverflow) << e.what();
            overflow = true;
          }
          for (int threads : {1, 2, 3}) {
            const uint8_t poison = uint8_t(0xA5 + threads);
            std::vector<uint8_t> fc(L.codes_bytes(), poison), fs(L.params_bytes(sd), poison),
                fz(L.params_bytes(sd), poison);
            if (overflow) {
              EXPECT_THROW(quantize_cpu(in, L, s, NonFinitePolicy::Error,
                                        {fc.data(), fs.data(), fz.data()}, threads),
                           Error);
              continue;
            }
            quantize_cpu(in, L, s, NonFinitePolicy::Error, {fc.data(), fs.data(), fz.data()},
                         threads);
            ASSERT_EQ(fc, rc) << "codes, threads " << threads;
            ASSERT_EQ(fs, rs) << "scales, threads " << threads;
            ASSERT_EQ(fz, rz) << "zeros, threads " << threads;
            ++runs;
          }
          if (overflow) continue;
          std::vector<float> dr(size_t(n), NAN), df(size_t(n), -1.0f);
          dequantize_reference(rc.data(), rs.data(), rz.data(), L, s, dr.data());
          dequantize_cpu(rc.data(), rs.data(), rz.data(), L, s, df.data(), 3);
          ASSERT_EQ(0, std::memcmp(dr.data(), df.data(), dr.size() * 4));
        }
  EXPECT_GT(runs, 400);
}
