// ggml's reference quantizers for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
// (qpack/spec/ggml_legacy.hpp, docs/quantization.md Part II): one
// hand-computed block per type, the round-trip error within the block's step,
// and gguf-py (PyPI `gguf`, byte-identical to ggml's C for these types) on
// the other side: the same bytes from the same floats, the same float bits
// from qpack's bytes (skipped where `import gguf` fails).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qpack/format/gguf.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using spec::ggml::GgmlLegacyType;
namespace gl = spec::ggml;

struct TypeCase {
  GgmlLegacyType type;
  const char* name;
};
constexpr TypeCase kTypes[] = {{GgmlLegacyType::Q4_0, "Q4_0"},
                               {GgmlLegacyType::Q4_1, "Q4_1"},
                               {GgmlLegacyType::Q5_0, "Q5_0"},
                               {GgmlLegacyType::Q5_1, "Q5_1"},
                               {GgmlLegacyType::Q8_0, "Q8_0"}};

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
  }
  return s;
}
std::vector<uint8_t> quantize(GgmlLegacyType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(x.size() / 32 * size_t(gl::block_bytes(t)), 0xa5);  // poisoned
  EXPECT_TRUE(gl::quantize_row(t, x.data(), int64_t(x.size()), out.data()));
  return out;
}

TEST(GgmlLegacy, TypeIdsAndBlockSizesMatchTheGgufTypeTable) {
  for (const TypeCase& c : kTypes) {
    SCOPED_TRACE(c.name);
    const GgmlTypeInfo* info = ggml_type_info(uint32_t(c.type));
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(std::string(info->name), c.name);
    EXPECT_EQ(std::string(gl::type_name(c.type)), info->name);
    EXPECT_EQ(info->block_size, uint32_t(gl::kBlockElements));
    EXPECT_EQ(info->type_size, uint32_t(gl::block_bytes(c.type)));
  }
}

TEST(GgmlLegacy, RowLengthMustBeAWholeNumberOfBlocks) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> out(4 * 34, 0xa5);
  for (const TypeCase& c : kTypes) {
    EXPECT_FALSE(gl::quantize_row(c.type, x.data(), 33, out.data())) << c.name;
    EXPECT_FALSE(gl::quantize_row(c.type, x.data(), -32, out.data())) << c.name;
    EXPECT_FALSE(gl::dequantize_row(c.type, out.data(), 48, x.data())) << c.name;
    EXPECT_TRUE(gl::quantize_row(c.type, x.data(), 0, out.data())) << c.name;
  }
  EXPECT_EQ(out, std::vector<uint8_t>(4 * 34, 0xa5)) << "a refused row wrote something";
  EXPECT_EQ(x, std::vector<float>(64, 1.0f));
}

// ------------------------------------------------------------ golden blocks
// Inputs chosen so that d is exactly +-1 and every step below is exact; the
// expected bytes are derived by hand from docs/quantization.md Part II.

TEST(GgmlLegacyGolden, Q4_0) {
  // x[j] = j - 8 for j < 16, except x[1] = 0.5 and x[2] = 7.9; x[16 + j] = 7 - j.
  // The largest |x| is 8, first at j = 0 (x[31] = -8 ties and does not
  // replace it): max = -8, d = -8 / -8 = 1 (f16 0x3C00), id = 1.
  // code = min(15, trunc(x + 8.5)): low half j (x[1]: 9.0 -> 9, where
  // round-to-nearest-even of 0.5 would give 8; x[2]: 16.4 -> 16 -> 15);
  // high half 15.5 - j -> 15 - j. Byte j = low | high << 4.
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) x[j] = float(j - 8);
  x[1] = 0.5f;
  x[2] = 7.9f;
  for (int j = 0; j < 16; ++j) x[16 + j] = float(7 - j);
  const std::vector<uint8_t> expected = {0x00, 0x3c, 0xf0, 0xe9, 0xdf, 0xc3, 0xb4, 0xa5, 0x96,
                                         0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q4_0, x).data(), 18), hex(expected.data(), 18));
  // Decode: (code - 8) * 1: x[1] comes back as 1, x[2] as 7.
  float y[32];
  gl::dequantize_block_q4_0(expected.data(), y);
  EXPECT_EQ(y[0], -8.0f);
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], 7.0f);
  EXPECT_EQ(y[31], -8.0f);
}

TEST(GgmlLegacyGolden, Q4_1) {
  // x[j] = j - 1 for j < 16 (min -1); x[16 + j] = 13.5 - j for j < 15 (every
  // one a tie), x[31] = -1. max = 14, min = -1: d = 15 / 15 = 1 (0x3C00),
  // m = -1 (0xBC00), id = 1. code = trunc((x + 1) + 0.5): low half j; high
  // half 15 - j (14.5 - j + 0.5 lands exactly on an integer; rint would round
  // the even ones down), x[31] -> 0.
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) x[j] = float(j - 1);
  for (int j = 0; j < 15; ++j) x[16 + j] = 13.5f - float(j);
  x[31] = -1.0f;
  const std::vector<uint8_t> expected = {0x00, 0x3c, 0x00, 0xbc, 0xf0, 0xe1, 0xd2,
                                         0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69,
                                         0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q4_1, x).data(), 20), hex(expected.data(), 20));
  float y[32];
  gl::dequantize_block_q4_1(expected.data(), y);
  EXPECT_EQ(y[0], -1.0f);   // 0 * 1 + -1
  EXPECT_EQ(y[16], 14.0f);  // 15 * 1 + -1: 13.5 rounded up
}

TEST(GgmlLegacyGolden, Q5_0) {
  // x[j] = 16 - j, except x[5] = -0.5. The largest |x| is x[0] = 16 (positive
  // dominant): d = 16 / -16 = -1 (0xBC00), id = -1. code = min(31,
  // trunc(-x + 16.5)) = j (x[5]: 0.5 + 16.5 = 17). Low nibbles: byte j =
  // (j & 15) | ((j + 16) & 15) << 4 = j * 0x11, byte 5 = 1 | 5 << 4 = 0x51.
  // qh: bit 4 of code j at bit j: bits 16..31 and bit 5 -> 0xFFFF0020,
  // little-endian 20 00 FF FF.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(16 - j);
  x[5] = -0.5f;
  const std::vector<uint8_t> expected = {0x00, 0xbc, 0x20, 0x00, 0xff, 0xff, 0x00, 0x11,
                                         0x22, 0x33, 0x44, 0x51, 0x66, 0x77, 0x88, 0x99,
                                         0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q5_0, x).data(), 22), hex(expected.data(), 22));
  float y[32];
  gl::dequantize_block_q5_0(expected.data(), y);
  EXPECT_EQ(y[0], 16.0f);  // (0 - 16) * -1
  EXPECT_EQ(y[5], -1.0f);  // (17 - 16) * -1
  EXPECT_EQ(y[31], -15.0f);
}

TEST(GgmlLegacyGolden, Q5_1) {
  // x[j] = j, except x[4] = 4.4999 and x[20] = 10.5. min 0, max 31: d = 1
  // (0x3C00), m = +0 (0x0000), id = 1. code = trunc(x + 0.5): j, x[4] -> 4,
  // x[20] -> 11 (a tie, rounded up). Byte j = (j & 15) | (code[j+16] & 15) << 4:
  // j * 0x11 except byte 4 = 4 | 11 << 4 = 0xB4. qh: bits 16..31 but 20 ->
  // 0xFFEF0000, little-endian 00 00 EF FF.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j);
  x[4] = 4.4999f;
  x[20] = 10.5f;
  const std::vector<uint8_t> expected = {0x00, 0x3c, 0x00, 0x00, 0x00, 0x00, 0xef, 0xff,
                                         0x00, 0x11, 0x22, 0x33, 0xb4, 0x55, 0x66, 0x77,
                                         0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q5_1, x).data(), 24), hex(expected.data(), 24));
  float y[32];
  gl::dequantize_block_q5_1(expected.data(), y);
  EXPECT_EQ(y[20], 11.0f);
  EXPECT_EQ(y[31], 31.0f);
}

TEST(GgmlLegacyGolden, Q8_0) {
  // x = 127, -127, 2.5, -2.5, 0.5, -0.5, 1.49, then x[j] = j - 20 for j >= 7.
  // amax = 127: d = 1 (0x3C00), id = 1. code = roundf(x): ties away from
  // zero, so 3, -3, 1, -1 (rint would give 2, -2, 0, -0), 1.49 -> 1;
  // j - 20 = -13 .. 11. int8 bytes: 7F 81 03 FD 01 FF 01 F3 .. FF 00 .. 0B.
  std::vector<float> x = {127.0f, -127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.49f};
  for (int j = 7; j < 32; ++j) x.push_back(float(j - 20));
  std::vector<uint8_t> expected = {0x00, 0x3c, 0x7f, 0x81, 0x03, 0xfd, 0x01, 0xff, 0x01};
  for (int j = 7; j < 32; ++j) expected.push_back(uint8_t(int8_t(j - 20)));
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q8_0, x).data(), 34), hex(expected.data(), 34));
  float y[32];
  gl::dequantize_block_q8_0(expected.data(), y);
  EXPECT_EQ(y[1], -127.0f);
  EXPECT_EQ(y[2], 3.0f);
}

TEST(GgmlLegacyGolden, BlocksOfZeros) {
  // Q4_0/Q5_0: max stays ggml's initial +0, d = +0 / -8 = -0 (f16 0x8000),
  // id = 0, so every x * 0 + 8.5 -> code 8 (16 for Q5_0: qh all ones). The
  // same with x[0] = -0: ggml's C compares |x| strictly, so -0 never replaces
  // the initial +0. (gguf-py takes the first element instead and writes 0x0000
  // there: the one input where it and ggml's C differ, so the gguf-py test
  // avoids it.) Q4_1/Q5_1: d = (+0 - +0) / 15 = +0, m = +0, codes 0.
  // Q8_0: d = +0, codes 0.
  std::vector<float> zeros(32, 0.0f);
  std::vector<float> minus_first = zeros;
  minus_first[0] = -0.0f;
  for (const auto& x : {zeros, minus_first}) {
    EXPECT_EQ(hex(quantize(GgmlLegacyType::Q4_0, x).data(), 18), "0080" + std::string(32, '8'));
    EXPECT_EQ(hex(quantize(GgmlLegacyType::Q5_0, x).data(), 22),
              "0080ffffffff" + std::string(32, '0'));
    EXPECT_EQ(hex(quantize(GgmlLegacyType::Q8_0, x).data(), 34), std::string(68, '0'));
  }
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q4_1, zeros).data(), 20), std::string(40, '0'));
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q5_1, zeros).data(), 24), std::string(48, '0'));
  // min and max are the first zero seen: -0 here, so m = -0 (0x8000) and
  // d = (-0 - -0) / 15 = +0.
  EXPECT_EQ(hex(quantize(GgmlLegacyType::Q4_1, minus_first).data(), 20),
            "00000080" + std::string(32, '0'));
}

// ------------------------------------------------------------ round-trip error

// |x - x_hat| for every element of random blocks against what the rule
// promises: half a step of the float32 scale d (a full step where Q4_0/Q5_0
// clamp code 16 / 32, near -max, to 15 / 31), plus what rounding d and min to f16
// moves the reconstruction, plus a few float32 roundings.
TEST(GgmlLegacy, RoundTripErrorWithinHalfAStep) {
  const uint64_t seed = test::test_seed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-12, 12);
  const int blocks = 2000;
  std::vector<float> x(size_t(blocks) * 32);
  for (int b = 0; b < blocks; ++b) {
    const float scale = std::ldexp(1.0f, exponent(rng));
    const float offset = (b % 3 == 0) ? 3.0f * scale : 0.0f;  // one-signed blocks for Q4_1/Q5_1
    for (int j = 0; j < 32; ++j) x[size_t(b) * 32 + size_t(j)] = offset + scale * normal(rng);
    if (b % 5 == 1) x[size_t(b) * 32 + 7] = -x[size_t(b) * 32 + 3];  // +-max in one block
  }
  for (const TypeCase& c : kTypes) {
    SCOPED_TRACE(std::string(c.name) + " seed " + std::to_string(seed));
    const std::vector<uint8_t> q = quantize(c.type, x);
    std::vector<float> y(x.size());
    ASSERT_TRUE(gl::dequantize_row(c.type, q.data(), int64_t(x.size()), y.data()));
    const bool has_min = c.type == GgmlLegacyType::Q4_1 || c.type == GgmlLegacyType::Q5_1;
    const int levels =
        c.type == GgmlLegacyType::Q8_0 ? 127 : (c.type == GgmlLegacyType::Q4_0 ? 8 : 16);
    const int asym_levels = c.type == GgmlLegacyType::Q4_1 ? 15 : 31;
    int64_t bad = 0;
    for (int b = 0; b < blocks; ++b) {
      const float* xb = x.data() + size_t(b) * 32;
      const uint8_t* qb = q.data() + size_t(b) * size_t(gl::block_bytes(c.type));
      uint16_t h;
      std::memcpy(&h, qb, 2);
      const double d16 = f16_to_f32(h);
      double lo = xb[0], hi = xb[0], amax = 0, signed_max = 0;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, double(xb[j]));
        hi = std::max(hi, double(xb[j]));
        if (std::fabs(double(xb[j])) > amax) signed_max = xb[j];
        amax = std::max(amax, std::fabs(double(xb[j])));
      }
      double d32, m_err = 0, n = 0;
      if (has_min) {
        d32 = (hi - lo) / asym_levels;
        std::memcpy(&h, qb + 2, 2);
        m_err = std::fabs(double(f16_to_f32(h)) - lo);
        n = asym_levels;
      } else {
        d32 = amax / levels;
        n = c.type == GgmlLegacyType::Q8_0 ? 127 : 2 * levels;
      }
      for (int j = 0; j < 32; ++j) {
        const double err = std::fabs(double(xb[j]) - double(y[size_t(b) * 32 + size_t(j)]));
        // Q4_0/Q5_0 have codes -8..7 / -16..15 around max = code 0: an
        // element of the other sign within half a step of -max rounds to 8 /
        // 16, which is clamped one step down.
        const bool clamped = !has_min && c.type != GgmlLegacyType::Q8_0 && xb[j] * signed_max < 0 &&
                             std::fabs(xb[j]) >= (levels - 0.5) * d32 * (1 - 1e-6);
        const double allowed = (clamped ? 1.0 : 0.5) * d32 + n * std::fabs(d16 - d32) + m_err +
                               1e-6 * (std::fabs(double(xb[j])) + n * d32);
        if (err > allowed && bad++ < 5)
          ADD_FAILURE() << "block " << b << " element " << j << ": x = " << xb[j]
                        << ", x_hat = " << y[size_t(b) * 32 + size_t(j)] << ", error " << err
                        << " > " << allowed;
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

// ------------------------------------------------------------ gguf-py on the other side

bool have_gguf_py() {
  static const bool ok =
      test::run_command(std::string(QPACK_PYTHON) + " -c 'import gguf, numpy' 2>/dev/null")
          .exit_code == 0;
  return ok;
}
#define REQUIRE_GGUF_PY() \
  if (!have_gguf_py())    \
  GTEST_SKIP() << "python3 cannot import gguf and numpy (pip install gguf numpy)"

// Rows of awkward and random content, each a whole number of blocks; rows
// are quantized one by one (quantize_row over n = 32 .. ~1e5) and their
// blocks concatenated, which is what gguf-py sees as one array (blocks are
// independent in both).
struct Rows {
  std::vector<std::string> names;
  std::vector<size_t> begin;  // element offset of each row
  std::vector<float> x;
  void add(const std::string& name, std::vector<float> v) {
    ASSERT_EQ(v.size() % 32, 0u) << name;
    names.push_back(name);
    begin.push_back(x.size());
    x.insert(x.end(), v.begin(), v.end());
  }
  std::string row_of(size_t element) const {
    size_t r = 0;
    while (r + 1 < begin.size() && begin[r + 1] <= element) ++r;
    return names[r] + " block " + std::to_string((element - begin[r]) / 32);
  }
};

Rows awkward_rows(uint64_t seed) {
  Rows rows;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto block = [](float v) { return std::vector<float>(32, v); };

  rows.add("zeros", block(0.0f));
  for (int pos : {0, 15, 16, 31}) {
    for (float v : {1.0f, -3.0f, 1e-3f}) {
      std::vector<float> b = block(0.0f);
      b[size_t(pos)] = v;
      rows.add("one nonzero " + std::to_string(v) + " at " + std::to_string(pos), b);
    }
  }
  // Ties: d = +-1 exactly, so x * id lands exactly on .5 (Q8_0's roundf) and
  // x * id + 8.5 / 16.5 or (x - min) * id + 0.5 exactly on an integer (the
  // truncating types).
  for (float top : {127.0f, -8.0f, 8.0f, -16.0f, 16.0f}) {
    std::vector<float> b(32);
    b[0] = top;
    b[1] = 0.0f;
    for (int j = 2; j < 32; ++j) {
      const float v = std::fmod(float(j / 2), std::fabs(top) - 1.0f) + 0.5f;
      b[size_t(j)] = j % 2 ? v : -v;
    }
    rows.add("ties around " + std::to_string(top), b);
  }
  for (float top : {15.0f, 31.0f}) {
    std::vector<float> b(32);
    b[0] = 0.0f;
    b[1] = top;
    for (int j = 2; j < 32; ++j) b[size_t(j)] = std::fmod(float(j), top) + 0.5f;
    rows.add("ties in [0, " + std::to_string(top) + "]", b);
  }
  // Blocks where fusing x * id + 8.5 (16.5) into one fma changes a code
  // (found by search): x * id rounds to exactly -6.5 (-7.5), the fused sum
  // falls just below the integer. ggml's C is two roundings.
  {
    std::vector<float> b = block(0.0f);
    b[0] = 0x1.257228p-1f;
    b[1] = 0x1.dcd982p-2f;  // Q4_0 code 2; fused: 1
    rows.add("fma-sensitive Q4_0", b);
    b[0] = 0x1.270516p+0f;
    b[1] = 0x1.1494c6p-1f;  // Q5_0 code 9; fused: 8
    rows.add("fma-sensitive Q5_0", b);
  }
  {
    std::vector<float> b = block(-0.0f);  // -0 alone (no +0 beside it) is not ambiguous
    b[7] = -2.0f;
    rows.add("one nonzero among -0", b);
  }
  // Negative- and positive-dominant maxima, and |max| ties of both signs.
  for (float sign : {1.0f, -1.0f}) {
    std::vector<float> b(32);
    for (auto& v : b) v = normal(rng);
    b[9] = sign * 10.0f;
    rows.add(sign > 0 ? "positive dominant" : "negative dominant", b);
    b[20] = -sign * 10.0f;
    rows.add(sign > 0 ? "+max then -max" : "-max then +max", b);
  }
  // Scales near f16's limits: d rounds to 65504 or overflows to inf, and
  // minima beyond f16's range.
  for (float amax : {65504.0f * 127.0f, 65519.0f * 127.0f, 65520.0f * 127.0f, 1e7f, 65504.0f * 8.0f,
                     65520.0f * 8.0f, 65520.0f * 16.0f, 6e4f * 31.0f}) {
    std::vector<float> b(32);
    for (auto& v : b) v = amax * uniform(rng);
    b[3] = amax;
    rows.add("large amax " + std::to_string(amax), b);
  }
  for (float mn : {65519.0f, 65520.0f, -65520.0f, -1e6f}) {
    std::vector<float> b(32);
    for (auto& v : b) v = mn + std::fabs(mn) * 1e-3f * std::fabs(uniform(rng));
    b[0] = mn;
    rows.add("min " + std::to_string(mn), b);
  }
  {
    std::vector<float> b(32 * 8);
    for (auto& v : b) v = 6e4f * uniform(rng);
    b[0] = 6e4f;
    b[1] = -6e4f;
    rows.add("huge +-6e4", b);
  }
  // Subnormal and tiny blocks: d subnormal, 1/d finite or overflowing to inf
  // (codes 0), d below f16's smallest subnormal.
  for (int e = -100; e >= -149; e -= 3) {
    std::vector<float> b(32);
    for (auto& v : b) v = std::ldexp(uniform(rng), e) + 0.0f;  // underflows to +0, never -0
    b[5] = std::ldexp(1.0f, e);
    rows.add("tiny 2^" + std::to_string(e), b);
  }
  // Where 1/d starts to overflow: |d| = 2^-128 gives 1/d = 2^128 = inf, the
  // next subnormal up a finite reciprocal (Q4_0: d = max / -8; Q8_0: amax / 127).
  for (float top :
       {0x1p-125f, 0x1p-125f + 0x1p-146f, 127.0f * 0x1p-128f, 127.0f * 0x1p-128f + 0x1p-140f}) {
    std::vector<float> b(32);
    for (int j = 0; j < 32; ++j) b[size_t(j)] = top * float(j - 16) / 16.0f + 0.0f;
    b[0] = -top;
    rows.add("1/d overflow boundary " + std::to_string(std::log2(double(top))), b);
  }
  {
    std::vector<float> b(32);
    for (auto& v : b) v = std::ldexp(normal(rng), -140) + 0.0f;
    b[0] = 1.5f;  // a normal element among subnormals
    rows.add("subnormals with one normal", b);
  }
  // Random rows of several lengths and scales, and one of 100000 elements.
  for (int k : {1, 2, 3, 7, 64}) {
    std::vector<float> b(size_t(32 * k));
    const float scale = std::ldexp(1.0f, int(rng() % 40) - 20);
    for (auto& v : b) v = scale * normal(rng);
    rows.add("random 32*" + std::to_string(k), b);
  }
  {
    std::vector<float> b(100000);
    std::uniform_int_distribution<int> exponent(-30, 12);
    for (size_t i = 0; i < b.size(); i += 32) {
      const float scale = std::ldexp(1.0f, exponent(rng));
      const float offset = (i / 32) % 4 == 0 ? scale * 2.0f : 0.0f;
      for (size_t j = i; j < i + 32; ++j) b[j] = offset + scale * normal(rng);
    }
    rows.add("random 100000", b);
  }
  return rows;
}

std::vector<float> read_floats(const std::string& path) {
  const std::vector<uint8_t> bytes = test::read_file(path);
  std::vector<float> v(bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

TEST(GgmlLegacyGgufPy, SameBytesAndSameDequantizedBits) {
  REQUIRE_GGUF_PY();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Rows rows = awkward_rows(seed);
  test::TempDir dir;
  test::write_file(dir.file("input.f32"), rows.x.data(), rows.x.size() * 4);
  std::vector<std::vector<uint8_t>> mine;
  for (const TypeCase& c : kTypes) {
    std::vector<uint8_t> all;
    for (size_t r = 0; r < rows.names.size(); ++r) {
      const size_t end = r + 1 < rows.begin.size() ? rows.begin[r + 1] : rows.x.size();
      const std::vector<float> row(rows.x.begin() + ptrdiff_t(rows.begin[r]),
                                   rows.x.begin() + ptrdiff_t(end));
      const std::vector<uint8_t> q = quantize(c.type, row);
      all.insert(all.end(), q.begin(), q.end());
    }
    test::write_file(dir.file(std::string("qpack.") + c.name), all.data(), all.size());
    mine.push_back(std::move(all));
  }
  const auto r = test::run_command(std::string(QPACK_PYTHON) + " " + test::source_dir() +
                                   "/tests/format/ggml_quant_tool.py " + dir.path() + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const size_t blocks = rows.x.size() / 32;
  for (size_t t = 0; t < std::size(kTypes); ++t) {
    const TypeCase& c = kTypes[t];
    SCOPED_TRACE(c.name);
    const size_t bb = size_t(gl::block_bytes(c.type));
    const std::vector<uint8_t> theirs = test::read_file(dir.file(std::string("gguf_py.") + c.name));
    ASSERT_EQ(theirs.size(), blocks * bb);
    int reported = 0;
    for (size_t b = 0; b < blocks && reported < 5; ++b) {
      if (std::memcmp(mine[t].data() + b * bb, theirs.data() + b * bb, bb) != 0) {
        ++reported;
        ADD_FAILURE() << rows.row_of(b * 32) << ": qpack " << hex(mine[t].data() + b * bb, bb)
                      << "\n  gguf-py " << hex(theirs.data() + b * bb, bb);
      }
    }
    // Dequantize qpack's bytes on both sides: the same float bits.
    std::vector<float> y(rows.x.size());
    ASSERT_TRUE(gl::dequantize_row(c.type, mine[t].data(), int64_t(y.size()), y.data()));
    const std::vector<float> yt = read_floats(dir.file(std::string("gguf_py_dequant.") + c.name));
    ASSERT_EQ(yt.size(), y.size());
    reported = 0;
    for (size_t i = 0; i < y.size() && reported < 5; ++i) {
      if (std::memcmp(&y[i], &yt[i], 4) != 0) {
        ++reported;
        ADD_FAILURE() << rows.row_of(i) << " element " << i % 32 << ": qpack " << y[i]
                      << ", gguf-py " << yt[i];
      }
    }
  }
}

}  // namespace
}  // namespace qpack
