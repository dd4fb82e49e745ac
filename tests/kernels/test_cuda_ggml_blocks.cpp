// The CUDA kernels for ggml's block types (qpack/kernels/ggml_blocks.hpp),
// legacy and K-quants, against the spec's scalar reference (qpack/spec/
// ggml_block_types.hpp; itself checked against gguf-py in
// format_ggml_legacy_test and against ggml's C in format_ggml_kquants_test):
// the same bytes from the same F32/F16/BF16 sources and the same float bits
// back, at block counts around the kernels' CTAs (128 legacy blocks, 32
// super-blocks), into poisoned buffers with a guard region that must stay
// untouched. Skipped without a usable device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "require_gpu.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using spec::ggml::GgmlBlockType;
using spec::ggml::GgmlLegacyType;
namespace gl = spec::ggml;

#define ASSERT_OK(status)                                                          \
  do {                                                                             \
    const cuda::Status s_ = (status);                                              \
    ASSERT_TRUE(s_.ok()) << cuda::status_code_name(s_.code) << ": " << s_.message; \
  } while (0)

constexpr GgmlBlockType kTypes[] = {GgmlBlockType::Q4_0, GgmlBlockType::Q4_1, GgmlBlockType::Q5_0,
                                    GgmlBlockType::Q5_1, GgmlBlockType::Q8_0, GgmlBlockType::Q2_K,
                                    GgmlBlockType::Q3_K, GgmlBlockType::Q4_K, GgmlBlockType::Q5_K,
                                    GgmlBlockType::Q6_K};
constexpr size_t kGuard = 64;  // bytes after the output that must stay poisoned
constexpr uint8_t kPoison = 0xa5;

// Source elements in `dtype` (raw bytes) and the floats they are exactly:
// blocks of varied scale and sign, and awkward blocks among them (zeros, one
// non-zero, a tie between +max and -max, huge values, subnormals).
struct Source {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

Source make_source(DType dtype, int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 15), expo(-20, 10);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 32; ++b) {
    float* p = x.data() + b * 32;
    const float scale = std::ldexp(1.0f, expo(rng));
    for (int j = 0; j < 32; ++j) p[j] = normal(rng) * scale;
    switch (kind(rng)) {
      case 0:
        for (int j = 0; j < 32; ++j) p[j] = 0.0f;
        break;
      case 1:
        for (int j = 0; j < 32; ++j) p[j] = j == 5 ? -3.0f : 0.0f;
        break;
      case 2:
        p[3] = 8.0f * scale;
        p[20] = -8.0f * scale;
        break;
      case 3:
        // Large but finite in F16 too: an Inf source is outside the rule
        // (its NaN bits differ between host and device, as in ggml).
        for (int j = 0; j < 32; ++j)
          p[j] = std::fmax(-6.0e4f, std::fmin(6.0e4f, normal(rng) * 6.0e4f / 4.0f));
        break;
      case 4:
        for (int j = 0; j < 32; ++j) p[j] = normal(rng) * 1.0e-41f;
        break;
      case 5:
        for (int j = 0; j < 32; ++j) p[j] = float(j % 16) - 8.0f;  // codes land on ties
        break;
      default:
        break;
    }
  }
  // Whole super-blocks of one kind for the K-quants' searches: all zero,
  // one constant, one value among zeros, and a ramp.
  for (int64_t sb = 0; sb < n / 256; ++sb) {
    float* p = x.data() + sb * 256;
    switch (sb % 11) {
      case 1:
        for (int j = 0; j < 256; ++j) p[j] = 0.0f;
        break;
      case 3:
        for (int j = 0; j < 256; ++j) p[j] = 0.75f;
        break;
      case 5:
        for (int j = 0; j < 256; ++j) p[j] = j == 77 ? -2.5f : 0.0f;
        break;
      case 7:
        for (int j = 0; j < 256; ++j) p[j] = float(j - 128) / 64.0f;
        break;
      default:
        break;
    }
  }
  Source s;
  s.values.resize(x.size());
  s.bytes.resize(x.size() * (dtype == DType::F32 ? 4 : 2));
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == DType::F32) {
      s.values[i] = x[i];
      std::memcpy(s.bytes.data() + 4 * i, &x[i], 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(x[i]) : f32_to_bf16_rne(x[i]);
      s.values[i] = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      std::memcpy(s.bytes.data() + 2 * i, &h, 2);
    }
  }
  return s;
}

int64_t first_difference(const uint8_t* a, const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return int64_t(i);
  return -1;
}

// Byte offset of the first float whose bits differ, -1 if none. Two NaNs
// count as equal: a block whose stored scale is Inf decodes to NaN, and the
// NaN's bits are the hardware's (x86 0xFFC00000, CUDA 0x7FFFFFFF), which no
// rule fixes (docs/quantization.md §K8).
int64_t first_float_difference(const uint8_t* a, const float* b, size_t count) {
  for (size_t k = 0; k < count; ++k) {
    float x;
    std::memcpy(&x, a + 4 * k, 4);
    if (std::isnan(x) && std::isnan(b[k])) continue;
    if (std::memcmp(a + 4 * k, &b[k], 4) != 0) return int64_t(4 * k);
  }
  return -1;
}

TEST(CudaGgmlBlocks, SameBytesAndFloatsAsTheReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed());
  // Counts of 32-element blocks: one, a partial legacy CTA, exactly one, one
  // past it, several CTAs and a partial one, and a large odd count; the
  // K-quants use the multiples of 8 among them (one super-block, a partial
  // 32-super-block CTA, one, one past, several) and 8 * 40003.
  // QPACK_GPU_TEST_QUICK (the sanitizer runs) leaves out the large count.
  const char* quick = std::getenv("QPACK_GPU_TEST_QUICK");
  const bool is_quick = quick && *quick && *quick != '0';
  const int64_t block_counts[] = {1,   7,   8,    56,      128,    129,
                                  256, 264, 1000, 8 * 131, 100003, 8 * 40003};
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const int64_t nb : block_counts) {
      if (is_quick && nb > 8 * 131) continue;
      const int64_t n = nb * 32;
      const Source src = make_source(dtype, n, rng);
      cuda::DeviceBuffer d_src, d_blocks, d_out;
      ASSERT_OK(d_src.allocate(src.bytes.size()));
      ASSERT_OK(cuda::copy_to_device(d_src.data(), src.bytes.data(), src.bytes.size(), nullptr));
      for (const GgmlBlockType t : kTypes) {
        if (n % gl::block_elements(t) != 0) continue;
        if (!gl::is_kquant(t) && nb == 8 * 40003) continue;
        if (gl::is_kquant(t) && nb == 100003) continue;
        SCOPED_TRACE(std::string(gl::type_name(t)) + " from " + dtype_name(dtype) + ", " +
                     std::to_string(nb) + " x 32 elements");
        const int64_t blocks = n / gl::block_elements(t);
        const size_t bytes = size_t(blocks) * size_t(gl::block_bytes(t));
        std::vector<uint8_t> expected(bytes);
        ASSERT_TRUE(gl::quantize_row(t, src.values.data(), n, expected.data()));

        ASSERT_OK(d_blocks.allocate(bytes + kGuard));
        ASSERT_OK(cuda::fill_device(d_blocks.data(), kPoison, bytes + kGuard, nullptr));
        ASSERT_OK(
            cuda::quantize_ggml_blocks(t, d_src.data(), dtype, n, d_blocks.as<uint8_t>(), nullptr));
        std::vector<uint8_t> got(bytes + kGuard);
        ASSERT_OK(cuda::copy_to_host(got.data(), d_blocks.data(), got.size(), nullptr));
        ASSERT_OK(cuda::synchronize(nullptr));
        const int64_t at = first_difference(got.data(), expected.data(), bytes);
        ASSERT_EQ(at, -1) << "first differing byte " << at << " (block " << at / gl::block_bytes(t)
                          << ")";
        for (size_t i = bytes; i < got.size(); ++i)
          ASSERT_EQ(got[i], kPoison) << "wrote past the last block at byte " << i;

        // Back: the device's floats for the reference's bytes.
        std::vector<float> want(static_cast<size_t>(n));
        ASSERT_TRUE(gl::dequantize_row(t, expected.data(), n, want.data()));
        ASSERT_OK(d_out.allocate(size_t(n) * 4 + kGuard));
        ASSERT_OK(cuda::fill_device(d_out.data(), kPoison, size_t(n) * 4 + kGuard, nullptr));
        ASSERT_OK(
            cuda::dequantize_ggml_blocks(t, d_blocks.as<uint8_t>(), n, d_out.as<float>(), nullptr));
        std::vector<uint8_t> back(size_t(n) * 4 + kGuard);
        ASSERT_OK(cuda::copy_to_host(back.data(), d_out.data(), back.size(), nullptr));
        ASSERT_OK(cuda::synchronize(nullptr));
        const int64_t fat = first_float_difference(back.data(), want.data(), size_t(n));
        if (fat >= 0) {
          const size_t k = size_t(fat / 4);
          uint32_t gb, wb;
          std::memcpy(&gb, back.data() + 4 * k, 4);
          std::memcpy(&wb, &want[k], 4);
          const size_t be = size_t(gl::block_elements(t));
          const size_t blk = k / be * size_t(gl::block_bytes(t));
          FAIL() << "float " << k << " (block " << k / be << "): device bits 0x" << std::hex << gb
                 << ", reference 0x" << wb << ", block bytes " << std::dec
                 << unsigned(expected[blk]) << "," << unsigned(expected[blk + 1]) << ","
                 << unsigned(expected[blk + 2]);
        }
        for (size_t i = size_t(n) * 4; i < back.size(); ++i)
          ASSERT_EQ(back[i], kPoison) << "wrote past the last float at byte " << i;
      }
    }
  }
}

// Sources at element offsets that are not a multiple of a CTA (a tensor
// inside a larger staging buffer): the kernels must not assume alignment
// beyond the element's own.
TEST(CudaGgmlBlocks, UnalignedSourcesAndOutputsGiveTheSameBytes) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 1);
  const int64_t n = 300 * 256;
  const Source src = make_source(DType::F16, n + 32, rng);
  cuda::DeviceBuffer d_src, d_blocks;
  ASSERT_OK(d_src.allocate(src.bytes.size()));
  ASSERT_OK(cuda::copy_to_device(d_src.data(), src.bytes.data(), src.bytes.size(), nullptr));
  for (const GgmlBlockType t : kTypes) {
    SCOPED_TRACE(gl::type_name(t));
    const size_t bytes = size_t(n / gl::block_elements(t)) * size_t(gl::block_bytes(t));
    std::vector<uint8_t> expected(bytes);
    ASSERT_TRUE(gl::quantize_row(t, src.values.data() + 32, n, expected.data()));
    ASSERT_OK(d_blocks.allocate(bytes + 3 + kGuard));
    ASSERT_OK(cuda::fill_device(d_blocks.data(), kPoison, bytes + 3 + kGuard, nullptr));
    // Source 32 elements (64 bytes) in; output 3 bytes in: not 4-aligned.
    ASSERT_OK(cuda::quantize_ggml_blocks(t, d_src.as<uint8_t>() + 64, DType::F16, n,
                                         d_blocks.as<uint8_t>() + 3, nullptr));
    std::vector<uint8_t> got(bytes + 3 + kGuard);
    ASSERT_OK(cuda::copy_to_host(got.data(), d_blocks.data(), got.size(), nullptr));
    ASSERT_OK(cuda::synchronize(nullptr));
    for (int i = 0; i < 3; ++i) ASSERT_EQ(got[size_t(i)], kPoison);
    ASSERT_EQ(first_difference(got.data() + 3, expected.data(), bytes), -1);
    for (size_t i = bytes + 3; i < got.size(); ++i) ASSERT_EQ(got[i], kPoison);
    // And back from the unaligned blocks.
    std::vector<float> want(static_cast<size_t>(n)), back(static_cast<size_t>(n));
    ASSERT_TRUE(gl::dequantize_row(t, expected.data(), n, want.data()));
    cuda::DeviceBuffer d_out;
    ASSERT_OK(d_out.allocate(size_t(n) * 4));
    ASSERT_OK(
        cuda::dequantize_ggml_blocks(t, d_blocks.as<uint8_t>() + 3, n, d_out.as<float>(), nullptr));
    ASSERT_OK(cuda::copy_to_host(back.data(), d_out.data(), size_t(n) * 4, nullptr));
    ASSERT_OK(cuda::synchronize(nullptr));
    ASSERT_EQ(first_float_difference(reinterpret_cast<const uint8_t*>(back.data()), want.data(),
                                     size_t(n)),
              -1);
  }
}

// Every finite F16 value (subnormals and -0 included) as its own constant
// 32-element block, quantized to Q4_1 from F16: a constant block stores its
// value as the block minimum m, so the bytes show each element's conversion
// to float bit for bit (the kernels convert F16 in hardware, the reference
// in software). Q8_0 and Q4_0 of the same blocks store the value's scale.
// Non-finite patterns are left out (their blocks hold zeros): Inf - Inf and
// NaN arithmetic give NaNs whose bits are the hardware's.
TEST(CudaGgmlBlocks, EveryFiniteF16ValueConvertsExactly) {
  REQUIRE_GPU();
  const int64_t nb = 65536, n = nb * 32;
  std::vector<uint16_t> bits(static_cast<size_t>(n));
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t b = 0; b < nb; ++b)
    for (int j = 0; j < 32; ++j) {
      const uint16_t h = (b & 0x7c00) == 0x7c00 ? uint16_t(0) : uint16_t(b);
      bits[size_t(b * 32 + j)] = h;
      values[size_t(b * 32 + j)] = f16_to_f32(h);
    }
  cuda::DeviceBuffer d_src, d_blocks;
  ASSERT_OK(d_src.allocate(size_t(n) * 2));
  ASSERT_OK(cuda::copy_to_device(d_src.data(), bits.data(), size_t(n) * 2, nullptr));
  for (const GgmlBlockType t : {GgmlBlockType::Q4_1, GgmlBlockType::Q8_0, GgmlBlockType::Q4_0}) {
    SCOPED_TRACE(gl::type_name(t));
    const size_t bytes = size_t(nb) * size_t(gl::block_bytes(t));
    std::vector<uint8_t> expected(bytes), got(bytes);
    ASSERT_TRUE(gl::quantize_row(t, values.data(), n, expected.data()));
    ASSERT_OK(d_blocks.allocate(bytes));
    ASSERT_OK(cuda::fill_device(d_blocks.data(), kPoison, bytes, nullptr));
    ASSERT_OK(cuda::quantize_ggml_blocks(t, d_src.data(), DType::F16, n, d_blocks.as<uint8_t>(),
                                         nullptr));
    ASSERT_OK(cuda::copy_to_host(got.data(), d_blocks.data(), bytes, nullptr));
    ASSERT_OK(cuda::synchronize(nullptr));
    const int64_t at = first_difference(got.data(), expected.data(), bytes);
    ASSERT_EQ(at, -1) << "first differing byte " << at << ": the block of F16 bits 0x" << std::hex
                      << at / gl::block_bytes(t);
  }
}

TEST(CudaGgmlBlocks, ArgumentsAreChecked) {
  REQUIRE_GPU();
  cuda::DeviceBuffer d;
  ASSERT_OK(d.allocate(4096));
  uint8_t* p = d.as<uint8_t>();
  const auto code = [](const cuda::Status& s) { return s.code; };
  using cuda::StatusCode;
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, p, DType::F32, 33, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, p, DType::F32, -32, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(
      code(cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, nullptr, DType::F32, 32, p, nullptr)),
      StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, p, DType::I8, 32, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlLegacyType(4), p, DType::F32, 32, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::dequantize_ggml_blocks(GgmlLegacyType::Q8_0, p, 48, d.as<float>(), nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_TRUE(
      cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, nullptr, DType::F32, 0, nullptr, nullptr)
          .ok());
  // --method search / refit take Q4_1 and Q5_1 only (docs/quantization.md §G9).
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlLegacyType::Q4_0, p, DType::F32, 32, p, nullptr,
                                            QuantMethod::Search)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlBlockType::Q4_K, p, DType::F32, 256, p, nullptr,
                                            QuantMethod::Refit)),
            StatusCode::InvalidArgument);
  // The K-quants: whole super-blocks only, no other dtype, no unknown type.
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlBlockType::Q4_K, p, DType::F32, 224, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlBlockType::Q6_K, p, DType::I8, 256, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(code(cuda::quantize_ggml_blocks(GgmlBlockType(15), p, DType::F32, 256, p, nullptr)),
            StatusCode::InvalidArgument);
  EXPECT_EQ(
      code(cuda::dequantize_ggml_blocks(GgmlBlockType::Q2_K, p, 512 + 32, d.as<float>(), nullptr)),
      StatusCode::InvalidArgument);
  EXPECT_EQ(
      code(cuda::dequantize_ggml_blocks(GgmlBlockType::Q3_K, nullptr, 256, d.as<float>(), nullptr)),
      StatusCode::InvalidArgument);
  EXPECT_TRUE(
      cuda::quantize_ggml_blocks(GgmlBlockType::Q5_K, nullptr, DType::F32, 0, nullptr, nullptr)
          .ok());
}

}  // namespace
}  // namespace qpack
