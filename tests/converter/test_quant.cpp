// The quantization core: the scalar reference against the spec (golden bytes,
// float64 error bound, independent conversions), and the fast CPU path
// against the reference, byte for byte, over random and adversarial inputs.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_isa_levels.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/format/text.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/group_params.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

struct Quantized {
  GroupLayout layout;
  std::vector<uint8_t> codes, scales, zeros;
  QuantBuffers buffers() {
    return {codes.data(), scales.data(), zeros.empty() ? nullptr : zeros.data()};
  }
};

Quantized make_output(const std::vector<int64_t>& shape, const QuantScheme& s, uint8_t poison) {
  Quantized q;
  q.layout = make_layout(shape, s);
  q.codes.assign(q.layout.codes_bytes(), poison);
  q.scales.assign(size_t(q.layout.params_bytes(s.scale_dtype)), poison);
  if (!s.symmetric) q.zeros.assign(q.scales.size(), poison);
  return q;
}

// Source tensor bytes in `dtype` from float values (rounded as the dtype requires).
std::vector<uint8_t> encode_source(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> b(v.size() * (dtype == DType::F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&b[4 * i], &v[i], 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(v[i]) : f32_to_bf16_rne(v[i]);
      std::memcpy(&b[2 * i], &h, 2);
    }
  }
  return b;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

__attribute__((target("f16c"))) uint16_t hardware_f16(float f) {
  return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hardware_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

// --------------------------------------------------------------- golden ----

TEST(QuantGolden, SpecWorkedExample) {
  // docs/quantization.md §8 "Worked example".
  const std::vector<float> x = {0, 1, 2, 3, 4, 5, 6, 7.5f, -1, 1};
  const auto src = encode_source(x, DType::F16);
  QuantScheme s;
  s.bits = 4;
  s.group_size = 8;
  s.axis = -1;
  auto q = make_output({1, 10}, s, 0xAB);
  quantize_reference({src.data(), DType::F16, "example"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers());
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x20, 0x64, 0xA8, 0xFC, 0xF0, 0x00, 0x00, 0x00}));
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x00, 0x38, 0x44, 0x30}));
  EXPECT_EQ(q.zeros, (std::vector<uint8_t>{0x00, 0x00, 0x00, 0xBC}));
  std::vector<float> out(10);
  dequantize_reference(q.codes.data(), q.scales.data(), q.zeros.data(), q.layout, s, out.data());
  EXPECT_EQ(out[9], 0.99951171875f);
  EXPECT_EQ(out[7], 7.5f);
}

TEST(QuantGolden, ThreeBitPackingOrder) {
  // Codes 0..7 of one 8-element group along axis -1 with scale 1, min 0:
  // the stream is q0 | q1<<3 | q2<<6 ...
  std::vector<float> x = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto src = encode_source(x, DType::F32);
  QuantScheme s;
  s.bits = 3;
  s.group_size = 8;
  s.axis = -1;
  auto q = make_output({8}, s, 0);
  quantize_reference({src.data(), DType::F32, "t"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers());
  uint32_t stream = 0;
  for (uint32_t k = 0; k < 8; ++k) stream |= k << (3 * k);
  EXPECT_EQ(q.codes,
            (std::vector<uint8_t>{uint8_t(stream), uint8_t(stream >> 8), uint8_t(stream >> 16)}));
}

TEST(QuantGolden, DefaultAxisZeroLayout) {
  // Axis 0 on [rows, cols]: byte plane j of a group row holds rows 2j, 2j+1
  // of every column (FlexLLMGen's layout).
  const int64_t rows = 64, cols = 3;
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols + c)] = float((r + c) % 16);
  const auto src = encode_source(x, DType::F16);
  QuantScheme s;  // defaults: 4 bits, G 64, axis 0, asym, F16
  auto q = make_output({rows, cols}, s, 0);
  quantize_reference({src.data(), DType::F16, "w"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers());
  ASSERT_EQ(q.codes.size(), size_t(32 * cols));
  for (int64_t j = 0; j < 32; ++j)
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t want = uint8_t(((2 * j + c) % 16) | (((2 * j + 1 + c) % 16) << 4));
      ASSERT_EQ(q.codes[size_t(j * cols + c)], want) << "plane " << j << " col " << c;
    }
}

// ------------------------------------------- conversions (independent) ----

TEST(QuantConversions, F16RoundingMatchesHardwareAndDouble) {
  // Every binary16 round-trips; random and boundary binary32 values round as
  // the CPU's F16C unit does (an independent implementation).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16_rne(f), h);
  }
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C to compare with";
  // Decoding: every binary16 value, bit for bit, against the hardware.
  // (NaNs excluded: the hardware quiets signalling NaNs, qpack never stores one.)
  for (uint32_t h = 0; h < 65536; ++h)
    if ((h & 0x7c00u) != 0x7c00u || (h & 0x3ffu) == 0) {
      ASSERT_EQ(spec::f32_bits(f16_to_f32(uint16_t(h))),
                spec::f32_bits(hardware_f16_to_f32(uint16_t(h))))
          << h;
    }
  std::mt19937_64 rng(test::test_seed());
  auto check = [](uint32_t bits) {
    const float f = spec::f32_from_bits(bits);
    if (std::isnan(f)) return;
    const uint16_t hw = hardware_f16(f);
    ASSERT_EQ(f32_to_f16_rne(f), hw) << std::hexfloat << f;
  };
  for (int i = 0; i < 2000000; ++i) check(uint32_t(rng()));
  // Half-way points between adjacent binary16 values, and their neighbours.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double a = f16_to_f32(uint16_t(h)), b = f16_to_f32(uint16_t(h + 1));
    const float mid = float((a + b) / 2);
    for (int d = -2; d <= 2; ++d) check(spec::f32_bits(mid) + uint32_t(d));
  }
}

TEST(QuantConversions, BF16RoundingMatchesDouble) {
  std::mt19937_64 rng(test::test_seed() + 1);
  for (int i = 0; i < 2000000; ++i) {
    const float f = spec::f32_from_bits(uint32_t(rng()));
    if (!std::isfinite(f)) continue;
    const uint16_t b = f32_to_bf16_rne(f);
    // Nearest-even by float64 arithmetic: compare the two candidates.
    const uint32_t u = spec::f32_bits(f);
    const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    const double dlo = std::fabs(double(bf16_to_f32(lo)) - f);
    // Rounding past the largest finite value goes to Inf: for the distance,
    // Inf stands at 2^128 (where the next binade would start).
    const double vhi = std::isfinite(bf16_to_f32(hi)) ? double(bf16_to_f32(hi))
                                                      : std::copysign(std::ldexp(1.0, 128), f);
    const double dhi = std::fabs(vhi - f);
    uint16_t want = dlo < dhi ? lo : (dhi < dlo ? hi : ((lo & 1) ? hi : lo));
    if ((u & 0xffff) == 0) want = lo;
    ASSERT_EQ(b, want) << std::hexfloat << f;
  }
}

// ------------------------------------------------- random configurations ----

struct Case {
  std::vector<int64_t> shape;
  QuantScheme scheme;
  DType src = DType::F16;
  // 0 normal, 1 ties, 2 constant groups, 3 tiny/denormal, 4 mixed signs/zeros,
  // 5 all negative, 6 all non-negative (the fast path's min/max work on sign
  // and magnitude bits, where these are separate cases)
  int pattern = 0;
};

std::vector<float> make_values(const Case& c, std::mt19937_64& rng) {
  const int64_t n = numel(c.shape);
  std::vector<float> v(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-8, 8);
  const float amp = std::ldexp(1.0f, int(rng() % 12) - 6);
  for (int64_t i = 0; i < n; ++i) {
    float x;
    switch (c.pattern) {
      case 1:
        x = 0.5f * float(small(rng)) * 0.25f;
        break;  // many exact ties
      case 2:
        x = (i / 7) % 3 == 0 ? 1.25f : amp * normal(rng);
        break;
      case 3:
        x = std::ldexp(normal(rng), -(int(rng() % 40)) - 100);
        break;
      case 4:
        x = (rng() % 3 == 0) ? ((rng() & 1) ? -0.0f : 0.0f) : amp * normal(rng);
        break;
      case 5:
        x = -std::fabs(amp * normal(rng)) - (rng() % 9 == 0 ? 0.0f : amp);
        break;
      case 6:
        x = std::fabs(amp * normal(rng));
        break;
      default:
        x = amp * normal(rng) + (rng() % 5 == 0 ? amp : 0.0f);
        break;
    }
    v[size_t(i)] = x;
  }
  if (c.pattern == 2 && n > 0) std::fill(v.begin(), v.begin() + std::min<int64_t>(n, 200), -3.5f);
  return v;
}

Case random_case(std::mt19937_64& rng) {
  Case c;
  const int rank = 1 + int(rng() % 3);
  const int64_t dims[] = {1, 2, 3, 7, 8, 13, 31, 32, 33, 63, 64, 65, 100, 127, 130, 257};
  int64_t budget = 1;
  for (int d = 0; d < rank; ++d) {
    int64_t v = dims[rng() % (sizeof dims / sizeof dims[0])];
    if (budget * v > 60000) v = 1 + int64_t(rng() % 3);
    c.shape.push_back(v);
    budget *= v;
  }
  const int bits[] = {2, 3, 4, 8};
  c.scheme.bits = bits[rng() % 4];
  const int64_t gs[] = {0, 8, 10, 16, 32, 64, 66, 128};
  c.scheme.group_size = gs[rng() % 8];
  c.scheme.axis = int(rng() % uint64_t(2 * rank)) - rank;
  c.scheme.symmetric = rng() % 3 == 0;
  if (rng() % 2 == 0) c.scheme.zero_point = ZeroPoint::Integer;  // ignored when symmetric
  const DType sd[] = {DType::F16, DType::BF16, DType::F32};
  c.scheme.scale_dtype = sd[rng() % 3];
  c.src = sd[rng() % 3];
  c.pattern = int(rng() % 7);
  if (c.pattern == 3 && c.src == DType::F16) c.pattern = 0;  // F16 has no such tiny values
  return c;
}

std::string describe(const Case& c) {
  std::string s = "shape [";
  for (size_t i = 0; i < c.shape.size(); ++i) s += (i ? "," : "") + std::to_string(c.shape[i]);
  return s + "] " + scheme_label(c.scheme) + " src " + dtype_name(c.src) + " pattern " +
         std::to_string(c.pattern);
}

// Checks fast == reference (codes, scales, zeros, dequantized bits) and the
// error bound for every element. Returns false on the first mismatch.
void check_case(const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c));
  const auto values = make_values(c, rng);
  const auto src = encode_source(values, c.src);
  const QuantInput in{src.data(), c.src, "t"};
  auto ref = make_output(c.shape, c.scheme, 0x5A);
  try {
    quantize_reference(in, ref.layout, c.scheme, NonFinitePolicy::Error, ref.buffers());
  } catch (const Error& e) {
    // Only a range overflow is legitimate here (F16 scales on wide BF16/F32 data).
    ASSERT_EQ(e.code(), ErrorCode::RangeOverflow) << e.what();
    auto fast = make_output(c.shape, c.scheme, 0xA5);
    try {
      quantize_cpu(in, fast.layout, c.scheme, NonFinitePolicy::Error, fast.buffers(), 2);
      FAIL() << "fast path did not report the overflow";
    } catch (const Error& e2) {
      EXPECT_STREQ(e.what(), e2.what());
    }
    return;
  }
  // Every ISA level this CPU has (quantize.hpp's CpuIsa), each thread count.
  for (CpuIsa isa : test::available_cpu_isas()) {
    test::CpuIsaScope level(isa);
    for (int threads : {1, 2}) {
      auto fast = make_output(c.shape, c.scheme, 0xA5);  // different poison: unwritten bytes show
      quantize_cpu(in, fast.layout, c.scheme, NonFinitePolicy::Error, fast.buffers(), threads);
      ASSERT_EQ(fast.codes, ref.codes)
          << "codes differ, " << cpu_isa_name(isa) << ", threads " << threads;
      ASSERT_EQ(fast.scales, ref.scales)
          << "scales differ, " << cpu_isa_name(isa) << ", threads " << threads;
      ASSERT_EQ(fast.zeros, ref.zeros)
          << "zeros differ, " << cpu_isa_name(isa) << ", threads " << threads;
    }
  }
  const int64_t n = numel(c.shape);
  std::vector<float> deq_ref(size_t(n), std::nanf("")), deq_fast(size_t(n), std::nanf(""));
  dequantize_reference(ref.codes.data(), ref.scales.data(), ref.zeros.data(), ref.layout, c.scheme,
                       deq_ref.data());
  dequantize_cpu(ref.codes.data(), ref.scales.data(), ref.zeros.data(), ref.layout, c.scheme,
                 deq_fast.data(), 2);
  if (n > 0) {
    ASSERT_EQ(0, std::memcmp(deq_ref.data(), deq_fast.data(), deq_ref.size() * 4));
  }
  // The spec's bound, in float64, for every element.
  const GroupLayout& L = ref.layout;
  for (int64_t flat = 0; flat < n; ++flat) {
    const int64_t i = flat % L.inner, a = (flat / L.inner) % L.axis_len,
                  o = flat / L.inner / L.axis_len;
    const int64_t p = (o * L.groups_per_axis + a / L.group_size) * L.inner + i;
    const double S = spec::load_param(ref.scales.data(), p, c.scheme.scale_dtype);
    const double M =
        c.scheme.symmetric ? 0.0 : spec::load_param(ref.zeros.data(), p, c.scheme.scale_dtype);
    const double x = load_as_f32(src.data(), c.src, uint64_t(flat));
    const double err = std::fabs(x - double(deq_ref[size_t(flat)]));
    ASSERT_LE(err, test::reference_error_bound(x, S, M, c.scheme))
        << "element " << flat << " x " << x << " xhat " << deq_ref[size_t(flat)] << " S " << S
        << " M " << M;
  }
}

TEST(QuantParity, RandomConfigurationsMatchReference) {
  std::mt19937_64 rng(test::test_seed() + 2);
  for (int t = 0; t < 400; ++t) {
    const Case c = random_case(rng);
    check_case(c, rng);
    if (HasFatalFailure()) return;
  }
}

TEST(QuantParity, VectorLayoutsAllBitsAxesAndDtypes) {
  // Shapes that hit the column-block kernel (inner >= 32 with a tail), the
  // row-group kernel (inner == 1, partial groups, lanes < 8) and the
  // whole-row kernel (axis -1, every group whole, a partial batch of 8 last).
  std::mt19937_64 rng(test::test_seed() + 3);
  struct Shape {
    std::vector<int64_t> dims;
    int64_t group;
  };
  const Shape shapes[] = {{{130, 77}, 64}, {{37, 128}, 32}, {{21, 192}, 64}, {{19, 256}, 128}};
  for (const Shape& sh : shapes)
    for (int bits : {2, 3, 4, 8})
      for (bool sym : {false, true})
        for (DType sd : {DType::F16, DType::BF16, DType::F32})
          for (DType src : {DType::F16, DType::BF16, DType::F32})
            for (int axis : {0, -1})
              for (ZeroPoint zp : {ZeroPoint::Float, ZeroPoint::Integer}) {
                if (sym && zp == ZeroPoint::Integer) continue;
                Case c;
                c.shape = sh.dims;
                c.scheme = {bits, sh.group, axis, sym, sd, zp};
                c.src = src;
                c.pattern = int(rng() % 7);
                if (c.pattern == 3 && src == DType::F16) c.pattern = 1;
                check_case(c, rng);
                if (HasFatalFailure()) return;
              }
}

TEST(QuantParity, OneElementAndEmptyTensors) {
  std::mt19937_64 rng(test::test_seed() + 4);
  for (auto shape : std::vector<std::vector<int64_t>>{{1}, {1, 1}, {1, 1, 1}, {0, 5}, {5, 0}}) {
    for (int axis : {0, -1}) {
      Case c;
      c.shape = shape;
      c.scheme.axis = axis;
      check_case(c, rng);
    }
  }
}

TEST(QuantParity, HugeFiniteValuesAreNotMistakenForNonFinite) {
  // The fast path screens for NaN/Inf with a running sum, which overflows on
  // values like these; they must still quantize, exactly as the reference does.
  std::mt19937_64 rng(test::test_seed() + 6);
  std::uniform_real_distribution<float> u(3.0e38f, 3.3e38f);
  for (int axis : {0, -1})
    for (DType sd : {DType::BF16, DType::F32}) {
      std::vector<float> x(130 * 96);
      for (auto& v : x) v = u(rng);
      const auto src = encode_source(x, DType::F32);
      QuantScheme s;
      s.axis = axis;
      s.scale_dtype = sd;
      auto ref = make_output({130, 96}, s, 1), fast = make_output({130, 96}, s, 2);
      quantize_reference({src.data(), DType::F32, "huge"}, ref.layout, s, NonFinitePolicy::Error,
                         ref.buffers());
      quantize_cpu({src.data(), DType::F32, "huge"}, fast.layout, s, NonFinitePolicy::Error,
                   fast.buffers(), 2);
      EXPECT_EQ(ref.codes, fast.codes);
      EXPECT_EQ(ref.scales, fast.scales);
      EXPECT_EQ(ref.zeros, fast.zeros);
    }
}

TEST(QuantSemantics, ConstantGroupReconstructsExactly) {
  std::vector<float> x(64, 0.3125f);
  const auto src = encode_source(x, DType::F32);
  QuantScheme s;
  auto q = make_output({64}, s, 0x77);
  quantize_reference({src.data(), DType::F32, "c"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers());
  std::vector<float> out(64);
  dequantize_reference(q.codes.data(), q.scales.data(), q.zeros.data(), q.layout, s, out.data());
  for (float v : out) EXPECT_EQ(v, 0.3125f);
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0, 0}));
}

TEST(QuantSemantics, NegativeZeroDoesNotChangeBytes) {
  std::vector<float> a(16, 0.0f), b(16, 0.0f);
  for (size_t i = 0; i < 16; i += 2) b[i] = -0.0f;
  QuantScheme s;
  s.group_size = 16;
  for (DType sd : {DType::F16, DType::BF16, DType::F32}) {
    s.scale_dtype = sd;
    auto qa = make_output({16}, s, 0), qb = make_output({16}, s, 0);
    const auto sa = encode_source(a, DType::F32), sb = encode_source(b, DType::F32);
    quantize_cpu({sa.data(), DType::F32, "a"}, qa.layout, s, NonFinitePolicy::Error, qa.buffers(),
                 1);
    quantize_cpu({sb.data(), DType::F32, "b"}, qb.layout, s, NonFinitePolicy::Error, qb.buffers(),
                 1);
    EXPECT_EQ(qa.scales, qb.scales);
    EXPECT_EQ(qa.zeros, qb.zeros);
    EXPECT_EQ(qa.codes, qb.codes);
  }
}

TEST(QuantSemantics, PartialGroupUsesOnlyRealElements) {
  // 70 elements, G = 64: the last group holds 6 values in [10, 11]; with
  // zero padding (FlexLLMGen) its minimum would be 0.
  std::vector<float> x(70, 1.0f);
  for (int i = 64; i < 70; ++i) x[size_t(i)] = 10.0f + float(i - 64) * 0.2f;
  const auto src = encode_source(x, DType::F32);
  QuantScheme s;
  s.axis = 0;
  auto q = make_output({70}, s, 0);
  quantize_reference({src.data(), DType::F32, "p"}, q.layout, s, NonFinitePolicy::Error,
                     q.buffers());
  EXPECT_EQ(spec::load_param(q.zeros.data(), 1, DType::F16), 10.0f);
}

TEST(QuantErrors, NonFiniteNamesTensorAndFirstIndex) {
  std::vector<float> x(300, 1.0f);
  x[123] = std::nanf("");
  x[200] = INFINITY;
  for (DType src : {DType::F32, DType::F16, DType::BF16}) {
    const auto b = encode_source(x, src);
    QuantScheme s;
    s.axis = -1;
    for (int impl = 0; impl < 3; ++impl) {
      auto q = make_output({3, 100}, s, 0);
      try {
        const QuantInput in{b.data(), src, "model.layers.0.mlp.up_proj.weight"};
        if (impl == 0)
          quantize_reference(in, q.layout, s, NonFinitePolicy::Error, q.buffers());
        else
          quantize_cpu(in, q.layout, s, NonFinitePolicy::Error, q.buffers(), impl);
        FAIL() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::NonFinite);
        EXPECT_EQ(e.tensor(), "model.layers.0.mlp.up_proj.weight");
        EXPECT_NE(std::string(e.what()).find("NaN at flat index 123"), std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(QuantErrors, EveryNonFiniteKindIsFoundByEveryKernel) {
  // +-NaN and +-Inf, alone in an otherwise finite tensor, in the column
  // kernel (axis 0, inner >= 32), the row kernel (axis -1) and the generic
  // path (inner 3), for every source dtype: the fast path must report the
  // same first index as the reference, and --nonfinite=zero the same bytes.
  std::mt19937_64 rng(test::test_seed() + 7);
  std::normal_distribution<float> nd;
  const float kinds[] = {std::nanf(""), -std::nanf(""), INFINITY, -INFINITY};
  for (DType src : {DType::F32, DType::F16, DType::BF16})
    for (int kind = 0; kind < 4; ++kind)
      for (auto shape : std::vector<std::vector<int64_t>>{{70, 96}, {96, 70}, {70, 3}})
        for (int axis : {0, -1})
          for (bool sym : {false, true}) {
            std::vector<float> x(size_t(shape[0] * shape[1]));
            for (auto& v : x) v = (rng() % 4 == 0 ? -1.0f : 1.0f) * std::fabs(nd(rng));
            const size_t at = size_t(rng() % x.size());
            x[at] = kinds[kind];
            SCOPED_TRACE("src " + std::string(dtype_name(src)) + " kind " + std::to_string(kind) +
                         " at " + std::to_string(at) + " axis " + std::to_string(axis) + " inner " +
                         std::to_string(shape[1]) + (sym ? " sym" : " asym"));
            const auto b = encode_source(x, src);
            QuantScheme s;
            s.axis = axis;
            s.symmetric = sym;
            for (int threads : {1, 2}) {
              auto q = make_output(shape, s, 0);
              try {
                quantize_cpu({b.data(), src, "w"}, q.layout, s, NonFinitePolicy::Error, q.buffers(),
                             threads);
                ADD_FAILURE() << "no error";
              } catch (const Error& e) {
                EXPECT_EQ(e.code(), ErrorCode::NonFinite);
                EXPECT_NE(std::string(e.what()).find("at flat index " + std::to_string(at) + " "),
                          std::string::npos)
                    << e.what();
              }
            }
            auto r = make_output(shape, s, 1), f = make_output(shape, s, 2);
            quantize_reference({b.data(), src, "w"}, r.layout, s, NonFinitePolicy::Zero,
                               r.buffers());
            quantize_cpu({b.data(), src, "w"}, f.layout, s, NonFinitePolicy::Zero, f.buffers(), 2);
            EXPECT_EQ(f.codes, r.codes);
            EXPECT_EQ(f.scales, r.scales);
            EXPECT_EQ(f.zeros, r.zeros);
          }
}

TEST(QuantErrors, NonFiniteZeroPolicyMatchesZeros) {
  std::mt19937_64 rng(test::test_seed() + 5);
  std::normal_distribution<float> nd;
  std::vector<float> x(4096), clean;
  for (auto& v : x) v = nd(rng);
  clean = x;
  for (int i = 0; i < 40; ++i) {
    const size_t at = size_t(rng() % x.size());
    x[at] = (i % 3 == 0) ? std::nanf("") : (i % 3 == 1 ? INFINITY : -INFINITY);
    clean[at] = 0.0f;
  }
  for (int axis : {0, -1}) {
    QuantScheme s;
    s.axis = axis;
    const auto b = encode_source(x, DType::F32), bc = encode_source(clean, DType::F32);
    auto q1 = make_output({64, 64}, s, 1), q2 = make_output({64, 64}, s, 2),
         q3 = make_output({64, 64}, s, 3);
    quantize_reference({b.data(), DType::F32, "z"}, q1.layout, s, NonFinitePolicy::Zero,
                       q1.buffers());
    quantize_cpu({b.data(), DType::F32, "z"}, q2.layout, s, NonFinitePolicy::Zero, q2.buffers(), 2);
    quantize_reference({bc.data(), DType::F32, "z"}, q3.layout, s, NonFinitePolicy::Error,
                       q3.buffers());
    EXPECT_EQ(q1.codes, q3.codes);
    EXPECT_EQ(q1.scales, q3.scales);
    EXPECT_EQ(q2.codes, q3.codes);
    EXPECT_EQ(q2.zeros, q3.zeros);
  }
}

TEST(QuantErrors, RangeTooWideForF16SuggestsWiderScale) {
  std::vector<float> x(128, 0.0f);
  x[70] = 1.0e6f;  // the second group along axis -1 cannot hold this in F16
  const auto b = encode_source(x, DType::F32);
  QuantScheme s;
  s.axis = -1;
  for (int impl = 0; impl < 2; ++impl) {
    auto q = make_output({128}, s, 0);
    try {
      const QuantInput in{b.data(), DType::F32, "big"};
      if (impl == 0)
        quantize_reference(in, q.layout, s, NonFinitePolicy::Error, q.buffers());
      else
        quantize_cpu(in, q.layout, s, NonFinitePolicy::Error, q.buffers(), 2);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::RangeOverflow);
      const std::string m = e.what();
      EXPECT_NE(m.find("group 1"), std::string::npos) << m;
      EXPECT_NE(m.find("bf16 or f32"), std::string::npos) << m;
    }
  }
  s.scale_dtype = DType::BF16;
  auto q = make_output({128}, s, 0);
  EXPECT_NO_THROW(quantize_cpu({b.data(), DType::F32, "big"}, q.layout, s, NonFinitePolicy::Error,
                               q.buffers(), 2));
}

TEST(QuantErrors, OverflowAndNaNReportedAsTheReferenceDoesInEveryKernel) {
  // Wide BF16 values under F16 scales, in the column run (axis 0, several
  // blocks per row, split between threads mid-row), the whole-group row
  // kernel and the generic path: the same first group, and NaN before
  // overflow wherever both occur, exactly as the reference reports them.
  std::mt19937_64 rng(test::test_seed() + 8);
  std::normal_distribution<float> nd;
  for (auto shape : std::vector<std::vector<int64_t>>{{128, 160}, {96, 128}, {70, 3}})
    for (int axis : {0, -1})
      for (int with_nan = 0; with_nan < 2; ++with_nan)
        for (int trial = 0; trial < 4; ++trial) {
          std::vector<float> x(size_t(shape[0] * shape[1]));
          for (auto& v : x) v = nd(rng);
          for (int k = 0; k < 2; ++k) x[size_t(rng() % x.size())] = (rng() & 1) ? 3.0e6f : -3.0e6f;
          if (with_nan) x[size_t(rng() % x.size())] = std::nanf("");
          const auto b = encode_source(x, DType::BF16);
          QuantScheme s;
          s.axis = axis;
          std::string want;
          auto r = make_output(shape, s, 0);
          try {
            quantize_reference({b.data(), DType::BF16, "w"}, r.layout, s, NonFinitePolicy::Error,
                               r.buffers());
          } catch (const Error& e) {
            want = e.what();
          }
          ASSERT_FALSE(want.empty());
          for (int threads : {1, 2}) {
            auto q = make_output(shape, s, 0);
            std::string got;
            try {
              quantize_cpu({b.data(), DType::BF16, "w"}, q.layout, s, NonFinitePolicy::Error,
                           q.buffers(), threads);
            } catch (const Error& e) {
              got = e.what();
            }
            EXPECT_EQ(got, want) << "threads " << threads << " axis " << axis << " inner "
                                 << shape[1];
          }
        }
}

TEST(QuantLayout, GroupSizesAndSizes) {
  QuantScheme s;
  auto L = make_layout({4096, 11008}, s);
  EXPECT_EQ(L.outer, 1);
  EXPECT_EQ(L.inner, 11008);
  EXPECT_EQ(L.groups_per_axis, 64);
  EXPECT_EQ(L.codes_bytes(), uint64_t(4096) * 11008 / 2);
  s.axis = -1;
  s.group_size = 0;
  L = make_layout({3, 5}, s);
  EXPECT_EQ(L.group_size, 5);
  EXPECT_EQ(L.bytes_per_group, 3);
  s.group_size = 64;
  L = make_layout({2, 70}, s);
  EXPECT_EQ(L.groups_per_axis, 2);
  EXPECT_EQ(L.group_len(1), 6);
  EXPECT_THROW(make_layout({}, s), Error);
  s.axis = 2;
  EXPECT_THROW(make_layout({2, 3}, s), Error);
  EXPECT_FALSE(validate_scheme({5, 64, 0, false, DType::F16}).empty());
  EXPECT_FALSE(validate_scheme({4, 6, 0, false, DType::F16}).empty());
  EXPECT_FALSE(validate_scheme({4, 65, 0, false, DType::F16}).empty());
  EXPECT_FALSE(validate_scheme({4, 64, 0, false, DType::I8}).empty());
  EXPECT_TRUE(validate_scheme({3, 10, -2, true, DType::BF16}).empty());
}

}  // namespace
