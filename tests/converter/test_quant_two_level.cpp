// Two-level scales (docs/quantization.md §T): the CPU path against the scalar
// reference byte for byte (poisoned buffers, 1-3 threads, tensors whose axis
// is not a multiple of 256 so the last super-block and group are partial);
// the sections read back independently of the spec's loaders (6-bit codes by
// hand, S = d*sc and M = -dmin*m in float64, which must be binary32 values),
// the decode as fma(q, S, M), the super-scale rule, zero padding bits, every
// code the nearest grid point and every element within §T6's bound; the
// non-finite and overflow errors; the scheme refused where it does not apply;
// the container (version 3, quant.two_level, refused in a 2.x file).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_isa_levels.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/error_bound.hpp"
#include "qpack/spec/two_level.hpp"
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

// Weight-like values with outliers, zeros of both signs, a constant run and
// one all-positive stretch (groups whose minimum Q4_K's rule clamps to 0).
std::vector<float> weights(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::uniform_int_distribution<int> pick(0, 999);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const int p = pick(rng);
    x = nd(rng);
    if (p < 8) x *= 12.0f;
    if (p >= 990) x = p % 2 ? 0.0f : -0.0f;
  }
  if (n >= 200) {
    for (int k = 0; k < 16; ++k) v[size_t(20 + k)] = 0.0123f;
    for (int k = 0; k < 64; ++k) v[size_t(100 + k)] = std::fabs(v[size_t(100 + k)]) + 0.05f;
  }
  return v;
}

// 6-bit code p of a little-endian bit stream, read without the spec.
uint32_t code6(const std::vector<uint8_t>& b, int64_t p) {
  uint32_t v = 0;
  for (int k = 0; k < 6; ++k) {
    const int64_t bit = 6 * p + k;
    v |= uint32_t((b[size_t(bit / 8)] >> (bit % 8)) & 1u) << k;
  }
  return v;
}
double super_value(const std::vector<uint8_t>& b, uint64_t off, int64_t s, DType sd) {
  uint16_t h;
  std::memcpy(&h, b.data() + off + 2 * s, 2);
  return sd == DType::F16 ? double(f16_to_f32(h)) : double(bf16_to_f32(h));
}

struct Case {
  std::vector<int64_t> shape;
  int axis;
  int64_t group;
  int bits;
  DType sd, src;
};
const Case kCases[] = {
    {{300, 40}, 0, 32, 4, DType::F16, DType::F32},
    {{37, 520}, -1, 32, 4, DType::F16, DType::BF16},
    {{520, 3}, 0, 32, 3, DType::BF16, DType::F16},
    {{2, 3, 777}, -1, 32, 2, DType::F16, DType::F32},
    {{64, 40}, 0, 64, 8, DType::F16, DType::F16},
    {{3, 70, 5}, 1, 16, 4, DType::BF16, DType::F32},
    {{40, 33}, 0, 0, 4, DType::F16, DType::F32},
    {{256, 64}, 0, 32, 4, DType::F16, DType::F16},
    // The AVX2 batches: rows of whole super-blocks (inner 1) with a partial
    // last one, and adjacent columns with a remainder, from every dtype.
    {{16, 1024}, -1, 32, 4, DType::F16, DType::F16},
    {{8, 2080}, -1, 64, 4, DType::BF16, DType::F16},
    {{96, 24}, 0, 32, 3, DType::BF16, DType::BF16},
    {{70, 17}, 0, 32, 8, DType::F16, DType::BF16},
};

class TwoLevel : public ::testing::TestWithParam<QuantMethod> {};

TEST_P(TwoLevel, CpuMatchesReferenceAndSectionsDecodeIndependently) {
  std::mt19937 rng(unsigned(test::test_seed()));
  int64_t checked = 0, clipped = 0;
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << "shape[0] " << c.shape[0] << " axis " << c.axis << " g"
                                    << c.group << " b" << c.bits);
    QuantScheme s;
    s.bits = c.bits;
    s.group_size = c.group;
    s.axis = c.axis;
    s.scale_dtype = c.sd;
    s.method = GetParam();
    s.super_block = kSuperBlockGroups;
    ASSERT_EQ(validate_scheme(s), "");
    int64_t n = 1;
    for (auto d : c.shape) n *= d;
    std::vector<float> x = weights(n, rng);
    const auto src = to_source(x, c.src);
    const QuantInput in{src.data(), c.src, "t"};

    auto ref = make_output(c.shape, s, 0xA5);
    quantize_reference(in, ref.layout, s, NonFinitePolicy::Error, ref.buffers());
    // Every ISA level this CPU has (the scalar text, the AVX2 and AVX-512
    // batches), each thread count.
    for (CpuIsa isa : test::available_cpu_isas())
      for (int threads : {1, 2, 3}) {
        test::CpuIsaScope level(isa);
        auto fast = make_output(c.shape, s, uint8_t(0x3C + threads));
        quantize_cpu(in, fast.layout, s, NonFinitePolicy::Error, fast.buffers(), threads);
        EXPECT_EQ(fast.codes, ref.codes) << cpu_isa_name(isa) << ", " << threads << " threads";
        EXPECT_EQ(fast.scales, ref.scales) << cpu_isa_name(isa) << ", " << threads << " threads";
        EXPECT_EQ(fast.zeros, ref.zeros) << cpu_isa_name(isa) << ", " << threads << " threads";
      }
    const GroupLayout& L = ref.layout;
    const uint64_t off = L.sub_codes_bytes();
    ASSERT_EQ(off % 4, 0u);
    ASSERT_EQ(ref.scales.size(), off + 2 * uint64_t(L.num_supers()));
    // Padding bits after the last 6-bit code are zero.
    for (uint64_t bit = 6 * uint64_t(L.num_groups()); bit < 8 * off; ++bit) {
      ASSERT_EQ((ref.scales[bit / 8] >> (bit % 8)) & 1, 0) << "bit " << bit;
      ASSERT_EQ((ref.zeros[bit / 8] >> (bit % 8)) & 1, 0) << "bit " << bit;
    }
    std::vector<float> xh(static_cast<size_t>(n)), xc(static_cast<size_t>(n));
    dequantize_reference(ref.codes.data(), ref.scales.data(), ref.zeros.data(), L, s, xh.data());
    dequantize_cpu(ref.codes.data(), ref.scales.data(), ref.zeros.data(), L, s, xc.data(), 2);
    ASSERT_EQ(0, std::memcmp(xh.data(), xc.data(), xh.size() * 4));
    const int64_t PS = L.supers_per_axis();
    const double Q = double((1 << c.bits) - 1);
    QuantScheme bound_scheme = s;  // §T6: §M4 with F32 parameters
    bound_scheme.super_block = 0;
    bound_scheme.scale_dtype = DType::F32;
    bound_scheme.method = QuantMethod::Search;
    for (int64_t o = 0; o < L.outer; ++o)
      for (int64_t sb = 0; sb < PS; ++sb)
        for (int64_t i = 0; i < L.inner; ++i) {
          const int64_t si = (o * PS + sb) * L.inner + i;
          const double d = super_value(ref.scales, off, si, c.sd);
          const double dmin = super_value(ref.zeros, off, si, c.sd);
          ASSERT_GE(d, 0.0);
          ASSERT_GE(dmin, 0.0);
          float smax = 0.0f;
          for (int64_t g = sb * L.super_block;
               g < std::min((sb + 1) * L.super_block, L.groups_per_axis); ++g) {
            const int64_t p = (o * L.groups_per_axis + g) * L.inner + i;
            const uint32_t sc = code6(ref.scales, p), m = code6(ref.zeros, p);
            const double S = d * sc, M = -(dmin * m);
            ASSERT_EQ(double(float(S)), S) << "S not exact";
            ASSERT_EQ(double(float(M)), M) << "M not exact";
            // RTN's first level, recomputed: fl((mx - min(mn, 0)) / Q).
            float mn = 0.0f, mx = -INFINITY;
            for (int64_t k = 0; k < L.group_len(g); ++k) {
              const float v = x[size_t((o * L.axis_len + g * L.group_size + k) * L.inner + i)];
              mn = std::min(mn, v);
              mx = std::max(mx, v);
            }
            const float s_rtn = (mx - mn) / float(Q);
            if (GetParam() == QuantMethod::Rtn) smax = std::max(smax, s_rtn);
            for (int64_t k = 0; k < L.group_len(g); ++k) {
              const size_t f = size_t((o * L.axis_len + g * L.group_size + k) * L.inner + i);
              const uint32_t q = spec::get_code(
                  ref.codes.data() + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i,
                  L.inner, k, c.bits);
              ASSERT_EQ(spec::f32_bits(xh[f]),
                        spec::f32_bits(std::fma(float(q), float(S), float(M))))
                  << "flat " << f;
              // The nearest grid point (up to the binary32 code arithmetic).
              const double e = std::fabs(double(xh[f]) - x[f]);
              for (int dq : {-1, 1}) {
                const double q2 = double(q) + dq;
                if (q2 < 0 || q2 > Q || S == 0.0) continue;
                ASSERT_LE(e, std::fabs(q2 * S + M - x[f]) + 1e-6 * (std::fabs(x[f]) + S))
                    << "flat " << f;
              }
              // §T6: §7's bound with F32 ulps plus the distance outside
              // [M, M + Q*S] (§M4), independently and as verify evaluates it.
              const double out = std::max({0.0, M - x[f], x[f] - (M + Q * S)});
              ASSERT_LE(e, test::reference_error_bound(x[f], S, M, bound_scheme) + out)
                  << "flat " << f;
              ASSERT_LE(e, spec::error_bound(x[f], S, M, bound_scheme)) << "flat " << f;
              if (out > 0.0) ++clipped;
              ++checked;
            }
          }
          if (GetParam() == QuantMethod::Rtn) {
            // §T3.1: d = round_sd(fl(max s / 63)).
            const float dd = smax / 63.0f;
            const double want = c.sd == DType::F16 ? double(f16_to_f32(f32_to_f16_rne(dd)))
                                                   : double(bf16_to_f32(f32_to_bf16_rne(dd)));
            ASSERT_EQ(d, want);
          }
        }
  }
  EXPECT_GT(checked, 50000);
  EXPECT_GT(clipped, 0);  // quantized scales do clip: the bound's extra term is needed
}

TEST_P(TwoLevel, LowerErrorThanOneLevelAtTheSameBytes) {
  std::mt19937 rng(unsigned(test::test_seed()));
  QuantScheme s;
  s.group_size = 32;
  s.method = GetParam();
  s.super_block = kSuperBlockGroups;
  QuantScheme one;  // the default: g64, F16 scale and minimum
  std::vector<float> x = weights(512 * 96, rng);
  const auto src = to_source(x, DType::F32);
  const QuantInput in{src.data(), DType::F32, "t"};
  auto a = make_output({512, 96}, s, 0);
  auto b = make_output({512, 96}, one, 0);
  EXPECT_EQ(a.codes.size() + 2 * a.scales.size(), b.codes.size() + 2 * b.scales.size());
  quantize_cpu(in, a.layout, s, NonFinitePolicy::Error, a.buffers(), 2);
  quantize_cpu(in, b.layout, one, NonFinitePolicy::Error, b.buffers(), 2);
  std::vector<float> xa(x.size()), xb(x.size());
  dequantize_reference(a.codes.data(), a.scales.data(), a.zeros.data(), a.layout, s, xa.data());
  dequantize_reference(b.codes.data(), b.scales.data(), b.zeros.data(), b.layout, one, xb.data());
  double ea = 0, eb = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    ea += (double(xa[k]) - x[k]) * (double(xa[k]) - x[k]);
    eb += (double(xb[k]) - x[k]) * (double(xb[k]) - x[k]);
  }
  EXPECT_LT(ea, 0.9 * eb);
}

INSTANTIATE_TEST_SUITE_P(Methods, TwoLevel,
                         ::testing::Values(QuantMethod::Rtn, QuantMethod::Search));

// On the scalar layout (4 columns) and both AVX2 batch layouts (16
// columns; rows of 512): the same errors, naming the same element or group,
// as the reference.
TEST(TwoLevelErrors, NonFiniteAndOverflow) {
  struct Shape {
    std::vector<int64_t> shape;
    int axis;
  };
  for (CpuIsa isa : test::available_cpu_isas())
    for (const Shape& c : {Shape{{300, 4}, 0}, Shape{{300, 16}, 0}, Shape{{4, 512}, -1}}) {
      test::CpuIsaScope level(isa);
      SCOPED_TRACE(testing::Message()
                   << cpu_isa_name(isa) << ", shape " << c.shape[0] << "x" << c.shape[1]);
      QuantScheme s;
      s.group_size = 32;
      s.axis = c.axis;
      s.super_block = kSuperBlockGroups;
      std::vector<float> x(size_t(c.shape[0] * c.shape[1]), 0.25f);
      for (size_t k = 0; k < x.size(); ++k) x[k] = float(k % 7) * 0.01f;
      x[777] = NAN;
      auto src = to_source(x, DType::F32);
      auto q = make_output(c.shape, s, 0x5A);
      try {
        quantize_cpu({src.data(), DType::F32, "w"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers(), 2);
        FAIL() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::NonFinite);
        EXPECT_NE(std::string(e.what()).find("777"), std::string::npos) << e.what();
      }
      // Zero policy: the same bytes as the tensor with a zero there.
      auto z1 = make_output(c.shape, s, 0x11), z2 = make_output(c.shape, s, 0x22);
      quantize_cpu({src.data(), DType::F32, "w"}, z1.layout, s, NonFinitePolicy::Zero, z1.buffers(),
                   3);
      x[777] = 0.0f;
      auto src0 = to_source(x, DType::F32);
      quantize_reference({src0.data(), DType::F32, "w"}, z2.layout, s, NonFinitePolicy::Error,
                         z2.buffers());
      EXPECT_EQ(z1.codes, z2.codes);
      EXPECT_EQ(z1.scales, z2.scales);
      EXPECT_EQ(z1.zeros, z2.zeros);
      // A super-scale beyond F16: max s / 63 > 65504, in two super-blocks.
      x[500] = 1e8f;
      x[1100] = -1e8f;
      auto big = to_source(x, DType::F32);
      std::string want;
      try {
        quantize_reference({big.data(), DType::F32, "w"}, q.layout, s, NonFinitePolicy::Error,
                           q.buffers());
        FAIL() << "no error from the reference";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::RangeOverflow) << e.what();
        want = e.what();
      }
      for (int threads : {1, 2}) {
        try {
          quantize_cpu({big.data(), DType::F32, "w"}, q.layout, s, NonFinitePolicy::Error,
                       q.buffers(), threads);
          FAIL() << "no error";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::RangeOverflow) << e.what();
          EXPECT_EQ(std::string(e.what()), want);
        }
      }
      // BF16 super-scales hold it.
      QuantScheme sb = s;
      sb.scale_dtype = DType::BF16;
      auto qb = make_output(c.shape, sb, 0);
      EXPECT_NO_THROW(quantize_cpu({big.data(), DType::F32, "w"}, qb.layout, sb,
                                   NonFinitePolicy::Error, qb.buffers(), 2));
    }
}

TEST(TwoLevelErrors, RefusedWhereItDoesNotApply) {
  QuantScheme s;
  s.super_block = kSuperBlockGroups;
  EXPECT_EQ(validate_scheme(s), "");
  QuantScheme t = s;
  t.symmetric = true;
  EXPECT_NE(validate_scheme(t), "");
  t = s;
  t.zero_point = ZeroPoint::Integer;
  EXPECT_NE(validate_scheme(t), "");
  t = s;
  t.scale_dtype = DType::F32;
  EXPECT_NE(validate_scheme(t), "");
  t = s;
  t.method = QuantMethod::Refit;
  EXPECT_NE(validate_scheme(t), "");
  t = s;
  t.super_block = 4;
  EXPECT_NE(validate_scheme(t), "");
}

TEST(TwoLevelContainer, VersionThreeAndRefusedAsTwo) {
  test::TempDir dir;
  const std::string path = dir.file("t.qpack");
  QuantScheme s;
  s.group_size = 32;
  s.super_block = kSuperBlockGroups;
  std::mt19937 rng(7);
  std::vector<float> x = weights(300 * 8, rng);
  const auto src = to_source(x, DType::F32);
  auto q = make_output({300, 8}, s, 0);
  quantize_cpu({src.data(), DType::F32, "w"}, q.layout, s, NonFinitePolicy::Error, q.buffers(), 2);
  {
    QpackWriter w(path, WriterOptions{});
    w.set_source(nlohmann::json::object(), nullptr);
    QuantScheme rs = s;
    rs.group_size = q.layout.group_size;
    w.add_quantized("w", DType::F32, {300, 8}, rs, q.codes.data(), q.scales.data(), q.zeros.data());
    w.commit();
  }
  {
    auto f = QpackFile::open(path);
    EXPECT_EQ(f->version_major(), kQpackVersionMajorTwoLevel);
    const QpackTensor& t = f->tensors().at(0);
    EXPECT_EQ(t.scheme.super_block, kSuperBlockGroups);
    EXPECT_EQ(t.scales.raw_size, q.scales.size());
    const SectionBytes b = f->read(t, t.scales);
    EXPECT_EQ(0, std::memcmp(b.data, q.scales.data(), q.scales.size()));
    f->check_all();
  }
  // The same manifest under a 2.x header: two_level needs version 3.
  std::vector<uint8_t> bytes = test::read_file(path);
  QpackHeader h = QpackHeader::load(bytes.data());
  h.version_major = 2;
  h.seal();
  h.encode(bytes.data());
  auto refused = [&](ErrorCode want) {
    try {
      QpackFile::from_memory(bytes.data(), bytes.size(), "t.qpack");
      ADD_FAILURE() << "opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), want) << e.what();
    }
  };
  refused(ErrorCode::ManifestMismatch);
  // A reader that knows only majors up to 2 refuses 3 at its step 2, as
  // this one refuses 4.
  h.version_major = 4;
  h.seal();
  h.encode(bytes.data());
  refused(ErrorCode::UnsupportedVersion);
}

TEST(TwoLevelCli, ConvertVerifyDequantize) {
  test::TempDir dir;
  test::run_testgen("llama " + dir.file("m") +
                    " --layers 1 --hidden 256 --intermediate 520 --vocab 300");
  const std::string m = dir.file("m/model.safetensors"), q = dir.file("m.qpack");
  auto r =
      test::run_qpack("convert " + m + " " + q + " -q -g 32 --scales two-level --method search");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_qpack("inspect " + q);
  EXPECT_NE(r.output.find("two-level"), std::string::npos) << r.output;
  r = test::run_qpack("verify " + q + " " + m + " --device cpu --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"bound_violations\": 0"), std::string::npos)
      << r.output.substr(0, 2000);
  r = test::run_qpack("dequantize " + q + " " + dir.file("d.safetensors") + " -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = test::run_qpack("convert " + m + " " + dir.file("x.qpack") + " -q --scales three-level");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = test::run_qpack("convert " + m + " " + dir.file("x.qpack") +
                      " -q --scales two-level --symmetric");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
