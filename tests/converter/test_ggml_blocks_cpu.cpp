// The CPU path for ggml's block types (qpack/converter/ggml_blocks.hpp; for
// the legacy types AVX2 eight blocks at a time where the CPU has it, for the
// K-quants Q2_K..Q6_K one super-block per call, Q2_K's, Q4_K's and Q5_K's
// sub-block fits eight per AVX2 register) against the spec's scalar
// reference row functions: the same bytes from F32/F16/BF16 sources and the
// same float bits back, at every thread count, into poisoned buffers whose
// guard bytes must stay untouched. The sources mix awkward blocks (ties,
// tiny values, signed zeros, NaN and Inf, which take the reference's path)
// among random ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/error.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using spec::ggml::GgmlLegacyType;
namespace gl = spec::ggml;

constexpr GgmlLegacyType kTypes[] = {GgmlLegacyType::Q4_0, GgmlLegacyType::Q4_1,
                                     GgmlLegacyType::Q5_0, GgmlLegacyType::Q5_1,
                                     GgmlLegacyType::Q8_0};
constexpr size_t kGuard = 37;
constexpr uint8_t kPoison = 0xa5;

// Random source bytes in `dtype` and the floats they are; a few blocks of
// zeros and of exact ties among them.
void make_source(DType dtype, int64_t n, std::mt19937_64& rng, std::vector<uint8_t>* bytes,
                 std::vector<float>* values) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 11), expo(-12, 8);
  const size_t esize = dtype == DType::F32 ? 4 : 2;
  bytes->assign(static_cast<size_t>(n) * esize, 0);
  values->assign(static_cast<size_t>(n), 0.0f);
  for (int64_t b = 0; b < n / 32; ++b) {
    const int k = kind(rng);
    const float scale = std::ldexp(1.0f, expo(rng));
    for (int j = 0; j < 32; ++j) {
      float v = normal(rng) * scale;
      if (k == 0) v = 0.0f;
      if (k == 1) v = float(j % 16) - 8.0f;  // codes on exact ties
      if (k == 2) v *= 0x1p-130f;            // tiny: 1/d overflows (F32), zeros (F16)
      if (k == 3 && (j == 3 || j == 20)) v = j == 3 ? 7.0f * scale : -7.0f * scale;  // |max| tie
      if (k == 4) v = (j % 3 == 0) ? -0.0f : 0.0f;  // signed zeros, -0 first
      if (k == 5 && j == 11) v = b % 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
      if (k == 6) v = (float(j) - 15.5f) * scale;  // x*id near .5 for Q8_0
      const size_t i = size_t(b * 32 + j);
      if (dtype == DType::F32) {
        std::memcpy(bytes->data() + 4 * i, &v, 4);
        (*values)[i] = v;
      } else {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
        (*bytes)[2 * i] = uint8_t(h & 0xff);
        (*bytes)[2 * i + 1] = uint8_t(h >> 8);
        (*values)[i] = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    }
  }
}

TEST(GgmlBlocksCpu, SameBytesAndFloatsAsTheReferenceAtEveryThreadCount) {
  std::mt19937_64 rng(test::test_seed());
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const int64_t nb : {int64_t(0), int64_t(1), int64_t(7), int64_t(1001), int64_t(40009)}) {
      const int64_t n = nb * 32;
      std::vector<uint8_t> src;
      std::vector<float> values;
      make_source(dtype, n, rng, &src, &values);
      for (const GgmlLegacyType t : kTypes) {
        const size_t bytes = size_t(ggml_blocks_bytes(t, n));
        ASSERT_EQ(bytes, size_t(nb) * size_t(gl::block_bytes(t)));
        std::vector<uint8_t> want(bytes);
        ASSERT_TRUE(gl::quantize_row(t, values.data(), n, want.data()));
        std::vector<float> want_back(static_cast<size_t>(n));
        ASSERT_TRUE(gl::dequantize_row(t, want.data(), n, want_back.data()));
        for (const int threads : {1, 2, 3, 7}) {
          SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " + std::to_string(nb) + " blocks, " +
                       std::to_string(threads) + " threads, type " + std::to_string(unsigned(t)));
          std::vector<uint8_t> got(bytes + kGuard, kPoison);
          quantize_ggml_blocks_cpu(t, src.data(), dtype, n, got.data(), threads);
          if (bytes > 0) {  // an empty vector's data() may be null, which memcmp may not take
            ASSERT_EQ(std::memcmp(got.data(), want.data(), bytes), 0);
          }
          for (size_t i = bytes; i < got.size(); ++i) ASSERT_EQ(got[i], kPoison) << i;
          std::vector<uint8_t> back((static_cast<size_t>(n)) * 4 + kGuard, kPoison);
          dequantize_ggml_blocks_cpu(t, want.data(), n, reinterpret_cast<float*>(back.data()),
                                     threads);
          if (n > 0) {
            ASSERT_EQ(std::memcmp(back.data(), want_back.data(), size_t(n) * 4), 0);
          }
          for (size_t i = size_t(n) * 4; i < back.size(); ++i) ASSERT_EQ(back[i], kPoison) << i;
        }
      }
    }
  }
}

TEST(GgmlBlocksCpu, BadLengthsAndDtypesNameTheTensor) {
  std::vector<uint8_t> buf(4096, 0);
  try {
    quantize_ggml_blocks_cpu(GgmlLegacyType::Q4_1, buf.data(), DType::F16, 33, buf.data(), 1,
                             "blk.0.attn_q.weight");
    FAIL() << "33 elements accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_EQ(e.tensor(), "blk.0.attn_q.weight");
    EXPECT_NE(std::string(e.what()).find("32-element"), std::string::npos) << e.what();
  }
  try {
    quantize_ggml_blocks_cpu(GgmlLegacyType::Q8_0, buf.data(), DType::I8, 32, buf.data(), 1, "t");
    FAIL() << "I8 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("I8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dequantize_ggml_blocks_cpu(GgmlLegacyType::Q5_0, buf.data(), -32,
                                          reinterpret_cast<float*>(buf.data())),
               Error);
  EXPECT_THROW(quantize_ggml_blocks_cpu(GgmlLegacyType(5), buf.data(), DType::F32, 32, buf.data()),
               Error);
}

// The GGUF-type-number overloads are the legacy ones under another name, and
// refuse the types they do not handle (IQ4_NL here) naming the tensor.
TEST(GgmlBlocksCpu, GgufTypeNumbersReachTheSameQuantizer) {
  std::mt19937_64 rng(test::test_seed());
  const int64_t n = 37 * 32;
  std::vector<uint8_t> src;
  std::vector<float> values;
  make_source(DType::BF16, n, rng, &src, &values);
  for (const GgmlLegacyType t : kTypes) {
    const GgmlType g = GgmlType(uint32_t(t));
    ASSERT_TRUE(ggml_blocks_supported(g));
    ASSERT_EQ(ggml_blocks_bytes(g, n), ggml_blocks_bytes(t, n));
    std::vector<uint8_t> want(size_t(ggml_blocks_bytes(t, n))), got(want.size() + kGuard, kPoison);
    quantize_ggml_blocks_cpu(t, src.data(), DType::BF16, n, want.data(), 2);
    quantize_ggml_blocks_cpu(g, src.data(), DType::BF16, n, got.data(), 2);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0);
    for (size_t i = want.size(); i < got.size(); ++i) ASSERT_EQ(got[i], kPoison) << i;
  }
  std::vector<uint8_t> buf(4096, 0);
  EXPECT_FALSE(ggml_blocks_supported(GgmlType::IQ4_NL));
  try {
    quantize_ggml_blocks_cpu(GgmlType::IQ4_NL, buf.data(), DType::F32, 32, buf.data(), 1, "w");
    FAIL() << "IQ4_NL accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_EQ(e.tensor(), "w");
    EXPECT_NE(std::string(e.what()).find("IQ4_NL"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------ K-quants

constexpr GgmlType kKquants[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                                 GgmlType::Q6_K};
constexpr int kSuper = gl::kSuperBlockElements;

// Random super-blocks in `dtype` and the floats they are: normal at scales
// 2^-16..2^6, blocks and sub-blocks of zeros, a tie grid, constants, sparse
// and offset blocks, and sub-blocks of very different scales.
void make_kquant_source(DType dtype, int64_t n, std::mt19937_64& rng, std::vector<uint8_t>* bytes,
                        std::vector<float>* values) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 9), expo(-16, 6), sub_expo(-10, 2);
  const size_t esize = dtype == DType::F32 ? 4 : 2;
  bytes->assign(static_cast<size_t>(n) * esize, 0);
  values->assign(static_cast<size_t>(n), 0.0f);
  for (int64_t b = 0; b < n / kSuper; ++b) {
    const int k = kind(rng);
    const float scale = std::ldexp(1.0f, expo(rng));
    const float offset = normal(rng) * scale * 3.0f;
    float sub_scale[16];
    for (float& f : sub_scale) f = std::ldexp(1.0f, sub_expo(rng));
    const float constant = normal(rng);
    for (int j = 0; j < kSuper; ++j) {
      float v = normal(rng) * scale;
      if (k == 0) v = 0.0f;
      if (k == 1) v = float(j % 9 - 4) * 0.25f * scale;  // a grid: ties everywhere
      if (k == 2) v = constant;
      if (k == 3 && j % 7 != 0) v = 0.0f;  // sparse
      if (k == 4) v += offset;             // min > 0 or max < 0
      if (k == 5) v *= sub_scale[j / 16];
      if (k == 6 && (j / 32) % 3 == 1) v = (j % 2) ? -0.0f : 0.0f;  // zero sub-blocks
      const size_t i = size_t(b * kSuper + j);
      if (dtype == DType::F32) {
        std::memcpy(bytes->data() + 4 * i, &v, 4);
        (*values)[i] = v;
      } else {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
        (*bytes)[2 * i] = uint8_t(h & 0xff);
        (*bytes)[2 * i + 1] = uint8_t(h >> 8);
        (*values)[i] = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    }
  }
}

TEST(GgmlBlocksCpuKquants, SameBytesAndFloatsAsTheReferenceAtEveryThreadCount) {
  std::mt19937_64 rng(test::test_seed());
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const int64_t nb : {int64_t(0), int64_t(1), int64_t(2), int64_t(7), int64_t(603)}) {
      const int64_t n = nb * kSuper;
      std::vector<uint8_t> src;
      std::vector<float> values;
      make_kquant_source(dtype, n, rng, &src, &values);
      for (const GgmlType g : kKquants) {
        const auto t = gl::GgmlBlockType(uint32_t(g));
        ASSERT_TRUE(ggml_blocks_supported(g));
        const size_t bytes = size_t(ggml_blocks_bytes(g, n));
        ASSERT_EQ(bytes, size_t(nb) * size_t(gl::block_bytes(t)));
        std::vector<uint8_t> want(bytes);
        ASSERT_TRUE(gl::quantize_row(t, values.data(), n, want.data()));
        std::vector<float> want_back(static_cast<size_t>(n));
        ASSERT_TRUE(gl::dequantize_row(t, want.data(), n, want_back.data()));
        for (const int threads : {1, 2, 3, 7}) {
          SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " + std::to_string(nb) +
                       " super-blocks, " + std::to_string(threads) + " threads, " +
                       gl::type_name(t));
          std::vector<uint8_t> got(bytes + kGuard, kPoison);
          quantize_ggml_blocks_cpu(g, src.data(), dtype, n, got.data(), threads);
          if (bytes > 0) {
            ASSERT_EQ(std::memcmp(got.data(), want.data(), bytes), 0);
          }
          for (size_t i = bytes; i < got.size(); ++i) ASSERT_EQ(got[i], kPoison) << i;
          std::vector<uint8_t> back(static_cast<size_t>(n) * 4 + kGuard, kPoison);
          dequantize_ggml_blocks_cpu(g, want.data(), n, reinterpret_cast<float*>(back.data()),
                                     threads);
          if (n > 0) {
            ASSERT_EQ(std::memcmp(back.data(), want_back.data(), size_t(n) * 4), 0);
          }
          for (size_t i = size_t(n) * 4; i < back.size(); ++i) ASSERT_EQ(back[i], kPoison) << i;
        }
      }
    }
  }
}

// A large tensor (4099 super-blocks, over a million elements) at the default
// thread count and at 3: the same bytes.
TEST(GgmlBlocksCpuKquants, LargeTensorIndependentOfThreads) {
  std::mt19937_64 rng(test::test_seed() + 1);
  const int64_t n = int64_t(4099) * kSuper;
  std::vector<uint8_t> src;
  std::vector<float> values;
  make_kquant_source(DType::BF16, n, rng, &src, &values);
  for (const GgmlType g : {GgmlType::Q4_K, GgmlType::Q6_K}) {
    const size_t bytes = size_t(ggml_blocks_bytes(g, n));
    std::vector<uint8_t> a(bytes, kPoison), b(bytes, 0x5a), want(bytes);
    quantize_ggml_blocks_cpu(g, src.data(), DType::BF16, n, a.data(), 0);
    quantize_ggml_blocks_cpu(g, src.data(), DType::BF16, n, b.data(), 3);
    ASSERT_TRUE(gl::quantize_row(gl::GgmlBlockType(uint32_t(g)), values.data(), n, want.data()));
    EXPECT_TRUE(a == want) << ggml_type_name(g);
    EXPECT_TRUE(b == want) << ggml_type_name(g);
  }
}

// ggml's own bytes (tests/data/ggml_kquants, whose input holds blocks that
// take the searches' rare paths) from the CPU path itself, which on an AVX2
// machine runs Q2_K's, Q4_K's and Q5_K's fits eight sub-blocks per register.
TEST(GgmlBlocksCpuKquants, GgmlsOwnBytesFromTheCpuPath) {
  const std::string dir = test::source_dir() + "/tests/data/ggml_kquants/";
  const std::vector<uint8_t> x = test::read_file(dir + "input.f32");
  const int64_t n = int64_t(x.size() / 4);
  ASSERT_EQ(n, 128 * kSuper);
  for (const GgmlType g : kKquants) {
    SCOPED_TRACE(ggml_type_name(g));
    const std::vector<uint8_t> want = test::read_file(dir + "quantized." + ggml_type_name(g));
    ASSERT_EQ(want.size(), size_t(ggml_blocks_bytes(g, n)));
    for (const int threads : {1, 3}) {
      std::vector<uint8_t> got(want.size() + kGuard, kPoison);
      quantize_ggml_blocks_cpu(g, x.data(), DType::F32, n, got.data(), threads);
      const size_t bytes = want.size() / 128;
      int differ = 0;
      for (size_t b = 0; b < 128; ++b)
        differ += std::memcmp(&got[b * bytes], &want[b * bytes], bytes) != 0;
      EXPECT_EQ(differ, 0) << threads << " threads";
      for (size_t i = want.size(); i < got.size(); ++i) ASSERT_EQ(got[i], kPoison) << i;
    }
  }
}

TEST(GgmlBlocksCpuKquants, LengthsThatAreNoWholeSuperBlockAreRefused) {
  std::vector<uint8_t> buf(4 * 1024, 0);
  for (const GgmlType g : kKquants) {
    for (const int64_t n : {int64_t(32), int64_t(255), int64_t(257), int64_t(-256)}) {
      SCOPED_TRACE(std::string(ggml_type_name(g)) + " n=" + std::to_string(n));
      try {
        quantize_ggml_blocks_cpu(g, buf.data(), DType::F32, n, buf.data() + 1024, 2,
                                 "blk.3.ffn_down.weight");
        FAIL() << "accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
        EXPECT_EQ(e.tensor(), "blk.3.ffn_down.weight");
        EXPECT_NE(std::string(e.what()).find("256-element"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(ggml_type_name(g)), std::string::npos) << e.what();
      }
      EXPECT_THROW(dequantize_ggml_blocks_cpu(g, buf.data(), n,
                                              reinterpret_cast<float*>(buf.data() + 1024), 1, "t"),
                   Error);
    }
    try {
      quantize_ggml_blocks_cpu(g, buf.data(), DType::I8, 256, buf.data() + 1024, 1, "t");
      FAIL() << "I8 accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("I8"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(buf, std::vector<uint8_t>(4 * 1024, 0)) << "a refused call wrote something";
  // Q8_K (ggml's dot-product intermediate) and the IQ types stay refused.
  for (const GgmlType g : {GgmlType::Q8_K, GgmlType::IQ4_XS, GgmlType::F16}) {
    EXPECT_FALSE(ggml_blocks_supported(g)) << ggml_type_name(g);
    EXPECT_THROW(ggml_blocks_bytes(g, 256), Error) << ggml_type_name(g);
  }
}

}  // namespace
}  // namespace qpack
