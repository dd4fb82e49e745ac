// ggml's K-quant reference quantizers Q2_K..Q6_K (qpack/spec/ggml_kquants.hpp,
// docs/quantization.md Part III) and the ten-type dispatch of
// ggml_block_types.hpp: ggml's own bytes and floats committed under
// tests/data/ggml_kquants (made by tests/format/make_kquant_golden.py from
// llama-cpp-python's libggml-base.so), one hand-computed block, and
// properties that follow from the rules (every code the nearest level of its
// sub-block, or the clamped end; blocks of zeros give zero bytes; the 6-bit
// scale packing is a bijection). Fresh random inputs against libggml run as
// the `llama`-labelled ggml_kquant_llama_check.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qpack/format/gguf.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

namespace gl = spec::ggml;
using gl::GgmlBlockType;

constexpr GgmlBlockType kKquants[] = {GgmlBlockType::Q2_K, GgmlBlockType::Q3_K, GgmlBlockType::Q4_K,
                                      GgmlBlockType::Q5_K, GgmlBlockType::Q6_K};
constexpr GgmlBlockType kAllTypes[] = {
    GgmlBlockType::Q4_0, GgmlBlockType::Q4_1, GgmlBlockType::Q5_0, GgmlBlockType::Q5_1,
    GgmlBlockType::Q8_0, GgmlBlockType::Q2_K, GgmlBlockType::Q3_K, GgmlBlockType::Q4_K,
    GgmlBlockType::Q5_K, GgmlBlockType::Q6_K};
constexpr int kN = gl::kSuperBlockElements;

// The golden files' shape (make_kquant_golden.py).
constexpr int kGoldenBlocks = 128;
constexpr int kBlocksPerFamily = 14;  // 8 families, then 16 rare-path blocks
constexpr int kDequantBlocks = 40;

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
  }
  return s;
}
std::string golden(const std::string& name) {
  return test::source_dir() + "/tests/data/ggml_kquants/" + name;
}
std::vector<float> read_floats(const std::string& path) {
  const std::vector<uint8_t> b = test::read_file(path);
  std::vector<float> f(b.size() / 4);
  if (!f.empty()) std::memcpy(f.data(), b.data(), f.size() * 4);
  return f;
}
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(GgmlBlockTypes, IdsNamesAndSizesMatchTheGgufTypeTable) {
  for (GgmlBlockType t : kAllTypes) {
    SCOPED_TRACE(gl::type_name(t));
    const GgmlTypeInfo* info = ggml_type_info(uint32_t(t));
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(std::string(gl::type_name(t)), info->name);
    EXPECT_EQ(uint32_t(gl::block_elements(t)), info->block_size);
    EXPECT_EQ(uint32_t(gl::block_bytes(t)), info->type_size);
    EXPECT_TRUE(gl::is_block_type(t));
    EXPECT_EQ(gl::is_kquant(t), info->block_size == 256u);
  }
  // Every other number below 64 is none of ours.
  int ours = 0;
  for (uint32_t v = 0; v < 64; ++v) {
    const auto t = GgmlBlockType(v);
    if (!gl::is_block_type(t)) {
      EXPECT_EQ(gl::block_bytes(t), 0) << v;
      EXPECT_EQ(gl::block_elements(t), 0) << v;
      EXPECT_FALSE(gl::is_kquant(t)) << v;
    } else {
      ++ours;
    }
  }
  EXPECT_EQ(ours, 10);
}

TEST(GgmlBlockTypes, LegacyDispatchIsTheLegacyReference) {
  std::mt19937 rng(uint32_t(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(256);
  for (float& v : x) v = nd(rng);
  for (GgmlBlockType t : kAllTypes) {
    if (gl::is_kquant(t)) continue;
    const auto lt = gl::GgmlLegacyType(uint32_t(t));
    std::vector<uint8_t> a(8 * size_t(gl::block_bytes(t)), 0xa5), b(a.size(), 0x5a);
    ASSERT_TRUE(gl::quantize_row(t, x.data(), 256, a.data()));
    ASSERT_TRUE(gl::quantize_row(lt, x.data(), 256, b.data()));
    EXPECT_EQ(a, b) << gl::type_name(t);
  }
}

TEST(GgmlBlockTypes, RowLengthMustBeAWholeNumberOfBlocks) {
  std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(2 * 210, 0xa5);
  for (GgmlBlockType t : kKquants) {
    EXPECT_FALSE(gl::quantize_row(t, x.data(), 32, out.data())) << gl::type_name(t);
    EXPECT_FALSE(gl::quantize_row(t, x.data(), 257, out.data())) << gl::type_name(t);
    EXPECT_FALSE(gl::quantize_row(t, x.data(), -256, out.data())) << gl::type_name(t);
    EXPECT_FALSE(gl::dequantize_row(t, out.data(), 128, x.data())) << gl::type_name(t);
    EXPECT_TRUE(gl::quantize_row(t, x.data(), 0, out.data())) << gl::type_name(t);
  }
  EXPECT_FALSE(gl::quantize_row(GgmlBlockType(15), x.data(), 256, out.data()));  // Q8_K
  EXPECT_EQ(out, std::vector<uint8_t>(2 * 210, 0xa5)) << "a refused row wrote something";
  EXPECT_EQ(x, std::vector<float>(512, 1.0f));
}

// ------------------------------------------------------------ ggml's own bytes

TEST(GgmlKquantsGolden, SameBytesAsGgml) {
  const std::vector<float> x = read_floats(golden("input.f32"));
  ASSERT_EQ(x.size(), size_t(kGoldenBlocks) * kN) << "tests/data/ggml_kquants/input.f32";
  for (GgmlBlockType t : kKquants) {
    SCOPED_TRACE(gl::type_name(t));
    const size_t bytes = size_t(gl::block_bytes(t));
    const std::vector<uint8_t> want =
        test::read_file(golden(std::string("quantized.") + gl::type_name(t)));
    ASSERT_EQ(want.size(), kGoldenBlocks * bytes);
    std::vector<uint8_t> got(want.size(), 0xa5);  // poisoned
    ASSERT_TRUE(gl::quantize_row(t, x.data(), int64_t(x.size()), got.data()));
    int differ = 0;
    for (int b = 0; b < kGoldenBlocks; ++b) {
      if (std::memcmp(&got[b * bytes], &want[b * bytes], bytes) == 0) continue;
      if (++differ <= 3)
        ADD_FAILURE() << "block " << b << " (input family "
                      << (b < 8 * kBlocksPerFamily ? std::to_string(b / kBlocksPerFamily)
                                                   : std::string("rare"))
                      << ")\n ggml  " << hex(&want[b * bytes], bytes) << "\n qpack "
                      << hex(&got[b * bytes], bytes);
    }
    EXPECT_EQ(differ, 0);
  }
}

TEST(GgmlKquantsGolden, SameDequantizedBitsAsGgml) {
  for (GgmlBlockType t : kKquants) {
    SCOPED_TRACE(gl::type_name(t));
    const std::vector<uint8_t> blocks =
        test::read_file(golden(std::string("dequant_blocks.") + gl::type_name(t)));
    const std::vector<float> want = read_floats(golden(std::string("dequant.") + gl::type_name(t)));
    ASSERT_EQ(blocks.size(), size_t(kDequantBlocks) * size_t(gl::block_bytes(t)));
    ASSERT_EQ(want.size(), size_t(kDequantBlocks) * kN);
    std::vector<float> got(want.size(), std::nanf(""));
    ASSERT_TRUE(gl::dequantize_row(t, blocks.data(), int64_t(got.size()), got.data()));
    int differ = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (bits(got[i]) == bits(want[i])) continue;
      if (++differ <= 3)
        ADD_FAILURE() << "element " << i << " of block " << i / kN << ": ggml " << want[i]
                      << ", qpack " << got[i];
    }
    EXPECT_EQ(differ, 0);
  }
}

// ------------------------------------------------------------ hand-checked

TEST(GgmlKquants, NearestIntRoundsHalfToEven) {
  namespace kq = gl::kquant;
  EXPECT_EQ(kq::nearest_int(2.5f), 2);
  EXPECT_EQ(kq::nearest_int(3.5f), 4);
  EXPECT_EQ(kq::nearest_int(-2.5f), -2);
  EXPECT_EQ(kq::nearest_int(-0.4f), 0);
  EXPECT_EQ(kq::nearest_int(-0.0f), 0);
  EXPECT_EQ(kq::nearest_int(14.999999f), 15);
  EXPECT_EQ(kq::nearest_int(-4194303.0f), -4194303);
  EXPECT_EQ(kq::nearest_int(4194303.0f), 4194303);
}

TEST(GgmlKquants, SixBitScalePackingIsABijection) {
  namespace kq = gl::kquant;
  std::mt19937 rng(uint32_t(test::test_seed()));
  for (int trial = 0; trial < 2000; ++trial) {
    int ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      ls[j] = int(rng() % 64);
      lm[j] = int(rng() % 64);
    }
    uint8_t q[12];
    kq::pack_scale_min_k4(ls, lm, q);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      kq::unpack_scale_min_k4(j, q, &sc, &m);
      ASSERT_EQ(sc, ls[j]) << j;
      ASSERT_EQ(m, lm[j]) << j;
    }
  }
  // And every one of the 2^96 byte patterns is some (ls, lm): the 12 bytes
  // hold 16 six-bit fields exactly.
  uint8_t q[12];
  for (int bit = 0; bit < 96; ++bit) {
    std::memset(q, 0, 12);
    q[bit / 8] = uint8_t(1u << (bit % 8));
    int set = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      kq::unpack_scale_min_k4(j, q, &sc, &m);
      set += __builtin_popcount(unsigned(sc)) + __builtin_popcount(unsigned(m));
    }
    EXPECT_EQ(set, 1) << "bit " << bit << " feeds " << set << " fields";
  }
}

// Q4_K of sub-blocks 0, 1, ..., 15, 0, ..., 15 (every sub-block alike). By
// Part III: min = +0, max = 15, iscale = 15/15 = 1, scale 1 and the first
// candidate fits exactly (error 0, which no later candidate beats strictly),
// the_min = -0. max_scale = 1, max_min = 0 (-0 > 0 fails): inv_scale = 63,
// inv_min = 0, ls = 63, lm = 0. d = f16(1/63) = 0x2410 (2^-6 * 1040/1024),
// dmin = f16(0) = 0. Sub-block scale d*63 = 4095/4096: codes nearest_int(x *
// 4096/4095) = x. Scale bytes: 0..3 = 63 | (ls[4..7] >> 4) << 6 = 0xFF,
// 4..7 = 0 | (lm >> 4) << 6 = 0, 8..11 = (63 & 15) | (0 & 15) << 4 = 0x0F.
// Code byte 32c + l = (l % 16) | (l % 16) << 4.
TEST(GgmlKquants, Q4_KByHand) {
  std::vector<float> x(kN);
  for (int i = 0; i < kN; ++i) x[i] = float(i % 16);
  std::vector<uint8_t> want = {0x10, 0x24, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
                               0x00, 0x00, 0x00, 0x00, 0x0f, 0x0f, 0x0f, 0x0f};
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) want.push_back(uint8_t((l % 16) * 0x11));
  std::vector<uint8_t> got(gl::kQ4_KBlockBytes, 0xa5);
  gl::quantize_block_q4_k(x.data(), got.data());
  EXPECT_EQ(hex(got.data(), got.size()), hex(want.data(), want.size()));
  float y[kN];
  gl::dequantize_block_q4_k(want.data(), y);
  for (int i = 0; i < kN; ++i) ASSERT_EQ(y[i], float(i % 16) * (4095.0f / 4096.0f)) << i;
}

TEST(GgmlKquants, BlocksOfZerosAreZeroBytes) {
  for (float zero : {0.0f, -0.0f}) {
    const std::vector<float> x(kN, zero);
    for (GgmlBlockType t : kKquants) {
      std::vector<uint8_t> got(size_t(gl::block_bytes(t)), 0xa5);
      gl::quantize_block(t, x.data(), got.data());
      EXPECT_EQ(got, std::vector<uint8_t>(got.size(), 0)) << gl::type_name(t) << " " << zero;
      float y[kN];
      gl::dequantize_block(t, got.data(), y);
      for (int i = 0; i < kN; ++i) ASSERT_EQ(y[i], 0.0f) << gl::type_name(t) << " " << i;
    }
  }
}

// ------------------------------------------------------------ properties

// The dequantized levels of sub-block s of a block: level(q) for every code
// the type can store there, evaluated as Part III's dequantization does.
struct Levels {
  int sub_elements;
  std::vector<float> level;  // by code
  bool searched;             // sub-block scale 0: codes from the search, not re-derived
};

Levels levels(GgmlBlockType t, const uint8_t* b, int s) {
  namespace kq = gl::kquant;
  Levels r;
  auto f16 = [&](int off) { return f16_to_f32(uint16_t(b[off] | (b[off + 1] << 8))); };
  switch (t) {
    case GgmlBlockType::Q2_K: {
      r.sub_elements = 16;
      const float dl = f16(80) * float(b[s] & 0xf);
      const float ml = f16(82) * float(b[s] >> 4);
      for (int q = 0; q < 4; ++q) r.level.push_back(dl * float(q) - ml);
      r.searched = dl == 0.0f;
      break;
    }
    case GgmlBlockType::Q3_K: {
      r.sub_elements = 16;
      const float dl = f16(108) * float(kq::q3_k_scale(b + 96, s) - 32);
      for (int q = -4; q < 4; ++q) r.level.push_back(dl * float(q));
      r.searched = dl == 0.0f;
      break;
    }
    case GgmlBlockType::Q4_K:
    case GgmlBlockType::Q5_K: {
      r.sub_elements = 32;
      int sc, m;
      kq::unpack_scale_min_k4(s, b + 4, &sc, &m);
      const float d1 = f16(0) * float(sc);
      const float m1 = f16(2) * float(m);
      const int top = t == GgmlBlockType::Q4_K ? 16 : 32;
      for (int q = 0; q < top; ++q) r.level.push_back(d1 * float(q) - m1);
      r.searched = d1 == 0.0f;
      break;
    }
    default: {  // Q6_K
      r.sub_elements = 16;
      const float d = f16(208) * float(int8_t(b[192 + s]));
      for (int q = -32; q < 32; ++q) r.level.push_back(d * float(q));
      r.searched = d == 0.0f;
      break;
    }
  }
  return r;
}

// Every element's value is a level of its sub-block and, where the sub-block
// scale is not 0, the one nearest the input (to within the rounding of the
// division x / d; the clamp makes out-of-range inputs take the end level,
// which is then also the nearest).
TEST(GgmlKquants, EveryCodeIsTheNearestLevelOfItsSubBlock) {
  std::mt19937 rng(uint32_t(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::student_t_distribution<float> td(3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> x(kN);
    const float scale = std::ldexp(1.0f, int(rng() % 20) - 10);
    const float offset = trial % 3 == 0 ? nd(rng) * 2.0f : 0.0f;
    for (float& v : x) v = (trial % 2 ? td(rng) : nd(rng)) * scale + offset;
    for (GgmlBlockType t : kKquants) {
      SCOPED_TRACE(gl::type_name(t));
      std::vector<uint8_t> b(size_t(gl::block_bytes(t)), 0xa5);
      gl::quantize_block(t, x.data(), b.data());
      float y[kN];
      gl::dequantize_block(t, b.data(), y);
      const int subs = t == GgmlBlockType::Q4_K || t == GgmlBlockType::Q5_K ? 8 : 16;
      for (int s = 0; s < subs; ++s) {
        const Levels lv = levels(t, b.data(), s);
        const float step = std::fabs(lv.level[1] - lv.level[0]);
        for (int i = s * lv.sub_elements; i < (s + 1) * lv.sub_elements; ++i) {
          bool is_level = false;
          float best = INFINITY;
          for (float l : lv.level) {
            is_level = is_level || bits(l) == bits(y[i]) || (l == 0.0f && y[i] == 0.0f);
            best = std::fmin(best, std::fabs(x[i] - l));
          }
          ASSERT_TRUE(is_level) << "element " << i << " = " << y[i] << " is no level";
          if (lv.searched) continue;
          const float err = std::fabs(x[i] - y[i]);
          ASSERT_LE(err, best + 1e-5f * step + 1e-6f * std::fabs(x[i]))
              << "element " << i << ": x " << x[i] << " got " << y[i] << ", a level is " << best
              << " away (trial " << trial << ")";
        }
      }
    }
  }
}

// Round-trip error of normal inputs, relative to the block's RMS: what each
// type's bits buy, measured once and bounded loosely (a broken search or a
// swapped nibble moves these by far more).
TEST(GgmlKquants, RoundTripErrorIsWhatTheBitsBuy) {
  std::mt19937 rng(uint32_t(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int blocks = 64;
  std::vector<float> x(size_t(blocks) * kN);
  for (float& v : x) v = nd(rng);
  // Upper bounds on RMS error / RMS value (measured with ggml: 0.29, 0.15, 0.072, 0.036, 0.018).
  const double bound[] = {0.40, 0.21, 0.11, 0.055, 0.028};
  int k = 0;
  for (GgmlBlockType t : kKquants) {
    std::vector<uint8_t> b(size_t(blocks) * size_t(gl::block_bytes(t)));
    std::vector<float> y(x.size());
    ASSERT_TRUE(gl::quantize_row(t, x.data(), int64_t(x.size()), b.data()));
    ASSERT_TRUE(gl::dequantize_row(t, b.data(), int64_t(y.size()), y.data()));
    double e2 = 0, x2 = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      e2 += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
      x2 += double(x[i]) * x[i];
    }
    const double rel = std::sqrt(e2 / x2);
    EXPECT_LT(rel, bound[k]) << gl::type_name(t);
    EXPECT_GT(rel, bound[k] / 8) << gl::type_name(t) << ": suspiciously exact";
    ++k;
  }
}

}  // namespace
}  // namespace qpack
