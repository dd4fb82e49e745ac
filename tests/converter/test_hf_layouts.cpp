// The compressed-tensors and GPTQ layouts (converter/src/export/*_layout.*)
// against element-by-element constructions written from the formats'
// definitions (docs/hf-quantized.md): each code is read out of qpack's codes
// section by docs/quantization.md §8's bit stream and placed at the bit its
// target format names. Real codes from quantize_reference of fresh random
// tensors at awkward sizes, into poisoned buffers.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "compressed_tensors_layout.hpp"
#include "gptq_layout.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

constexpr uint8_t kPoison = 0xa5;

struct Quantized {
  GroupLayout L;
  std::vector<uint8_t> codes, scales;
};

// A [rows, cols] F32 tensor of random values quantized symmetric along axis -1.
Quantized quantize_random(int64_t rows, int64_t cols, int bits, int64_t group, DType sd,
                          std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = normal(rng);
  QuantScheme s;
  s.bits = bits;
  s.group_size = group;
  s.axis = -1;
  s.symmetric = true;
  s.scale_dtype = sd;
  Quantized q;
  q.L = make_layout({rows, cols}, s);
  q.codes.assign(q.L.codes_bytes(), kPoison);
  q.scales.assign(q.L.params_bytes(sd), kPoison);
  quantize_reference({reinterpret_cast<const uint8_t*>(x.data()), DType::F32, "t"}, q.L, s,
                     NonFinitePolicy::Error, {q.codes.data(), q.scales.data(), nullptr});
  return q;
}

// Code of element (row, k) by docs/quantization.md §8 (axis -1, inner 1).
uint32_t code_at(const Quantized& q, int64_t row, int64_t k) {
  const int64_t g = k / q.L.group_size, j = k % q.L.group_size;
  const uint8_t* group = q.codes.data() + (row * q.L.groups_per_axis + g) * q.L.bytes_per_group;
  uint32_t c = 0;
  for (int t = 0; t < q.L.bits; ++t) {
    const int64_t bit = j * q.L.bits + t;
    c |= uint32_t((group[bit / 8] >> (bit % 8)) & 1) << t;
  }
  return c;
}

uint32_t word_at(const std::vector<uint8_t>& v, uint64_t i) {
  return uint32_t(v[4 * i]) | uint32_t(v[4 * i + 1]) << 8 | uint32_t(v[4 * i + 2]) << 16 |
         uint32_t(v[4 * i + 3]) << 24;
}

struct Case {
  int64_t rows, cols;
  int bits;
  int64_t group;  // 0: channel
};

// compressed-tensors: element i of a row at bits i*b of its little-endian
// int32 stream, ceil(in*b/32) words per row.
TEST(CompressedTensorsLayout, WeightPackedIsTheRowBitStream) {
  std::mt19937_64 rng(test::test_seed());
  const Case cases[] = {{1, 32, 4, 32},  {7, 96, 4, 32},    {33, 192, 4, 64}, {5, 256, 8, 128},
                        {3, 160, 2, 32}, {9, 40, 4, 0},     {4, 36, 4, 0},    {6, 38, 2, 0},
                        {2, 44, 8, 0},   {17, 384, 2, 128}, {1, 8, 4, 0},     {3, 10, 8, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << c.rows << "x" << c.cols << " b" << c.bits << " g" << c.group);
    const Quantized q = quantize_random(c.rows, c.cols, c.bits, c.group, DType::BF16, rng);
    const int64_t words = compressed_tensors::packed_words_per_row(c.cols, c.bits);
    EXPECT_EQ(words, (c.cols * c.bits + 31) / 32);
    std::vector<uint8_t> got(size_t(c.rows * words * 4) + 16, kPoison);
    compressed_tensors::pack_weight_rows(q.codes.data(), q.L, got.data());
    for (size_t i = size_t(c.rows * words * 4); i < got.size(); ++i) ASSERT_EQ(got[i], kPoison);
    for (int64_t r = 0; r < c.rows; ++r) {
      std::vector<uint32_t> want(size_t(words), 0);
      for (int64_t i = 0; i < c.cols; ++i) {
        const int64_t bit = i * c.bits;
        want[size_t(bit / 32)] |= code_at(q, r, i) << (bit % 32);  // b divides 32: no straddling
      }
      for (int64_t w = 0; w < words; ++w)
        ASSERT_EQ(word_at(got, uint64_t(r * words + w)), want[size_t(w)]) << "row " << r;
    }
  }
}

// weight_zero_point: int32 packed along dim 0, row r*(32/b)+i at bits i*b.
TEST(CompressedTensorsLayout, ZeroPointsPackAlongDimZero) {
  std::mt19937_64 rng(test::test_seed());
  for (int bits : {2, 4, 8}) {
    for (DType sd : {DType::F16, DType::BF16, DType::F32}) {
      for (int64_t rows : {1, 7, 16, 33, 64, 100}) {
        const int64_t groups = 1 + int64_t(rng() % 5);
        std::uniform_int_distribution<int> zd(0, (1 << bits) - 1);
        std::vector<int> z(size_t(rows * groups));
        std::vector<uint8_t> zeros(size_t(rows * groups) * size_t(scale_bytes(sd)));
        for (size_t i = 0; i < z.size(); ++i) {
          z[i] = zd(rng);
          const float v = float(z[i]);
          if (sd == DType::F32) {
            std::memcpy(&zeros[4 * i], &v, 4);
          } else {
            const uint16_t h = sd == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
            std::memcpy(&zeros[2 * i], &h, 2);
          }
        }
        const int64_t zr = compressed_tensors::zero_point_rows(rows, bits);
        ASSERT_EQ(zr, (rows * bits + 31) / 32);
        std::vector<uint8_t> got(size_t(zr * groups * 4) + 8, kPoison);
        compressed_tensors::pack_zero_points(zeros.data(), sd, rows, groups, bits, got.data());
        for (size_t i = size_t(zr * groups * 4); i < got.size(); ++i) ASSERT_EQ(got[i], kPoison);
        for (int64_t w = 0; w < zr; ++w)
          for (int64_t g = 0; g < groups; ++g) {
            uint32_t want = 0;
            for (int64_t r = 0; r < rows; ++r)
              if (r * bits / 32 == w)
                want |= uint32_t(z[size_t(r * groups + g)]) << (r * bits % 32);
            ASSERT_EQ(word_at(got, uint64_t(w * groups + g)), want)
                << "bits " << bits << " rows " << rows << " word " << w << " group " << g;
          }
      }
    }
  }
  // A stored value that is no code is refused, not truncated.
  const float bad[2] = {3.5f, 1.0f};
  std::vector<uint8_t> out(8);
  EXPECT_THROW(compressed_tensors::pack_zero_points(reinterpret_cast<const uint8_t*>(bad),
                                                    DType::F32, 2, 1, 4, out.data()),
               Error);
}

TEST(CompressedTensorsLayout, ConfigAsLlmCompressorWritesIt) {
  const auto c = compressed_tensors::quantization_config(4, 32, false, {"lm_head"});
  EXPECT_EQ(
      c.dump(),
      R"({"config_groups":{"group_0":{"format":"pack-quantized","input_activations":null,)"
      R"("output_activations":null,"targets":["Linear"],"weights":{"dynamic":false,)"
      R"("group_size":32,"num_bits":4,"strategy":"group","symmetric":false,"type":"int"}}},)"
      R"("format":"pack-quantized","global_compression_ratio":null,"ignore":["lm_head"],)"
      R"("kv_cache_scheme":null,"moe_sparsity_config":null,"quant_method":"compressed-tensors",)"
      R"("quantization_status":"compressed","sparsity_config":{},"transform_config":{},)"
      R"("version":"0.20.1"})");
  const auto ch = compressed_tensors::quantization_config(8, 0, true, {});
  EXPECT_EQ(ch["config_groups"]["group_0"]["weights"]["strategy"], "channel");
  EXPECT_TRUE(ch["config_groups"]["group_0"]["weights"]["group_size"].is_null());
  EXPECT_TRUE(ch["ignore"].is_array());
}

// GPTQ qweight: [in*b/32, out], word (r, n) = codes of in-features
// r*(32/b)+i of out-feature n at bits i*b.
TEST(GptqLayout, QweightPacksAlongIn) {
  std::mt19937_64 rng(test::test_seed());
  const Case cases[] = {{1, 32, 4, 32},    {7, 96, 4, 32}, {33, 192, 4, 64}, {5, 256, 8, 128},
                        {3, 160, 2, 32},   {9, 40, 4, 0},  {4, 36, 8, 0},    {6, 48, 2, 0},
                        {13, 384, 4, 128}, {2, 8, 4, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << c.rows << "x" << c.cols << " b" << c.bits << " g" << c.group);
    const Quantized q = quantize_random(c.rows, c.cols, c.bits, c.group, DType::F16, rng);
    const int cpw = gptq::codes_per_word(c.bits);
    ASSERT_EQ(c.cols % cpw, 0);
    const int64_t qrows = c.cols / cpw;
    std::vector<uint8_t> got(size_t(qrows * c.rows * 4) + 12, kPoison);
    gptq::pack_qweight_block(q.codes.data(), q.L, got.data());
    for (size_t i = size_t(qrows * c.rows * 4); i < got.size(); ++i) ASSERT_EQ(got[i], kPoison);
    for (int64_t r = 0; r < qrows; ++r)
      for (int64_t n = 0; n < c.rows; ++n) {
        uint32_t want = 0;
        for (int i = 0; i < cpw; ++i) want |= code_at(q, n, r * cpw + i) << (i * c.bits);
        ASSERT_EQ(word_at(got, uint64_t(r * c.rows + n)), want) << "word " << r << "," << n;
      }
    // scales [out][in/G] -> [in/G][out], element by element.
    const int64_t P = q.L.groups_per_axis;
    std::vector<uint8_t> st(size_t(P * c.rows * 2) + 6, kPoison);
    gptq::transpose(q.scales.data(), c.rows, P, 2, st.data());
    for (size_t i = size_t(P * c.rows * 2); i < st.size(); ++i) ASSERT_EQ(st[i], kPoison);
    for (int64_t g = 0; g < P; ++g)
      for (int64_t n = 0; n < c.rows; ++n)
        ASSERT_EQ(std::memcmp(&st[size_t(g * c.rows + n) * 2], &q.scales[size_t(n * P + g) * 2], 2),
                  0);
  }
}

TEST(GptqLayout, QzerosStoreZeroMinusOne) {
  // Symmetric 4-bit: z = 8 everywhere, so every word is 0x77777777.
  std::vector<int32_t> z(24, 8);
  std::vector<uint8_t> out(3 * 4 + 4, kPoison);
  gptq::pack_qzeros_row(z.data(), 24, 4, out.data());
  for (int w = 0; w < 3; ++w) EXPECT_EQ(word_at(out, w), 0x77777777u);
  EXPECT_EQ(out[12], kPoison);
  // The design note's AutoGPTQ word: zeros 8,7,7,8,8,7,7,7 -> 0x66677667.
  const int32_t mixed[8] = {8, 7, 7, 8, 8, 7, 7, 7};
  gptq::pack_qzeros_row(mixed, 8, 4, out.data());
  EXPECT_EQ(word_at(out, 0), 0x66677667u);
  // 8-bit symmetric: z = 128 -> 0x7F7F7F7F; 2-bit: z = 2 -> 0x55555555.
  std::vector<int32_t> z8(4, 128), z2(16, 2);
  gptq::pack_qzeros_row(z8.data(), 4, 8, out.data());
  EXPECT_EQ(word_at(out, 0), 0x7F7F7F7Fu);
  gptq::pack_qzeros_row(z2.data(), 16, 2, out.data());
  EXPECT_EQ(word_at(out, 0), 0x55555555u);
  // v1 cannot store z = 0 (z - 1 = -1 would spill into the neighbours).
  std::vector<int32_t> z0(8, 8);
  z0[3] = 0;
  EXPECT_THROW(gptq::pack_qzeros_row(z0.data(), 8, 4, out.data()), Error);
}

TEST(GptqLayout, GroupIndexAndConfig) {
  std::vector<int32_t> g(200, -7);
  gptq::group_index(192, 64, g.data());
  for (int k = 0; k < 192; ++k) ASSERT_EQ(g[size_t(k)], k / 64);
  EXPECT_EQ(g[192], -7);
  gptq::group_index(40, 0, g.data());
  for (int k = 0; k < 40; ++k) ASSERT_EQ(g[size_t(k)], 0);
  const auto c = gptq::quantize_config(4, 128);
  EXPECT_EQ(c["bits"], 4);
  EXPECT_EQ(c["group_size"], 128);
  EXPECT_EQ(c["desc_act"], false);
  EXPECT_EQ(c["sym"], true);
  EXPECT_EQ(c["quant_method"], "gptq");
  EXPECT_EQ(c["checkpoint_format"], "gptq");
  EXPECT_EQ(gptq::quantize_config(8, 0)["group_size"], -1);
}

}  // namespace
}  // namespace qpack
