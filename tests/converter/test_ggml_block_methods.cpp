// --method search / refit for the GGUF types with a float minimum, Q4_1 and
// Q5_1 (docs/quantization.md §G9, qpack/spec/ggml_legacy_methods.hpp):
//  - the spec's rule, checked against a restatement in this file (ggml's
//    decode written out, a float64 block error, §4.6's encode): a block is
//    llama.cpp's or a proposal whose codes are that encode's, and its error
//    never exceeds llama.cpp's; the search and the refit each change many
//    blocks of weights with outliers;
//  - Rtn is llama.cpp's block exactly, for every type;
//  - the CPU path (threads, AVX2 for llama.cpp's block) writes the scalar
//    reference's bytes at 1-3 threads on awkward lengths, from F32/F16/BF16;
//  - the other types refuse a method, naming the tensor.
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
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/ggml_legacy_methods.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using spec::ggml::GgmlLegacyType;
namespace gl = spec::ggml;

constexpr GgmlLegacyType kMethodTypes[] = {GgmlLegacyType::Q4_1, GgmlLegacyType::Q5_1};
constexpr QuantMethod kMethods[] = {QuantMethod::Search, QuantMethod::Refit};
constexpr size_t kGuard = 29;
constexpr uint8_t kPoison = 0x5a;

// Weights with outliers: normal blocks at random scales, some with one or a
// few elements 8-30 sigma out (the blocks a min-max rule spends its range
// on), some skewed, some constant, plus a few NaN/Inf blocks (llama.cpp's
// bytes stay there).
void make_source(DType dtype, int64_t n, std::mt19937_64& rng, std::vector<uint8_t>* bytes,
                 std::vector<float>* values) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 15), expo(-14, 6), pos(0, 31);
  std::uniform_real_distribution<float> out(8.0f, 30.0f);
  const size_t esize = dtype == DType::F32 ? 4 : 2;
  bytes->assign(size_t(n) * esize, 0);
  values->assign(size_t(n), 0.0f);
  for (int64_t b = 0; b < n / 32; ++b) {
    const int k = kind(rng);
    const float scale = std::ldexp(1.0f, expo(rng));
    const int p1 = pos(rng), p2 = pos(rng);
    for (int j = 0; j < 32; ++j) {
      float v = normal(rng) * scale;
      if (k <= 4 && j == p1) v = (b % 2 ? -1.0f : 1.0f) * out(rng) * scale;  // one outlier
      if (k == 5 && (j == p1 || j == p2)) v = out(rng) * scale;              // two, one side
      if (k == 6) v = std::abs(v) + 3.0f * scale;                            // all positive
      if (k == 7) v = 0.25f * scale;                                         // constant
      if (k == 8 && j == 5) v = b % 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
      if (k == 9) v *= 0x1p-20f;  // tiny: F16 subnormal scales
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

bool finite_block(const float* x) {
  for (int j = 0; j < 32; ++j)
    if (!std::isfinite(x[j])) return false;
  return true;
}

// The restatement: ggml's decode fl(fl(c*D) + M) (host code builds with
// -ffp-contract=off: two roundings) and the float64 error of §G9.
struct Decoded {
  float d, m;
  int c[32];
};
Decoded read_block(GgmlLegacyType t, const uint8_t* blk) {
  Decoded r;
  uint16_t d16, m16;
  std::memcpy(&d16, blk, 2);
  std::memcpy(&m16, blk + 2, 2);
  r.d = f16_to_f32(d16);
  r.m = f16_to_f32(m16);
  uint32_t qh = 0;
  const uint8_t* qs = blk + 4;
  if (t == GgmlLegacyType::Q5_1) {
    std::memcpy(&qh, blk + 4, 4);
    qs = blk + 8;
  }
  for (int j = 0; j < 32; ++j) {
    const int lo = j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4);
    r.c[j] = lo | int(((qh >> j) & 1u) << 4);
  }
  return r;
}
double error_of(GgmlLegacyType t, const float* x, const uint8_t* blk) {
  const Decoded r = read_block(t, blk);
  double e = 0.0;
  for (int j = 0; j < 32; ++j) {
    const float cd = float(r.c[j]) * r.d;  // no fma: the tests build with -ffp-contract=off
    const float y = cd + r.m;
    const double diff = double(y) - double(x[j]);
    e += diff * diff;
  }
  return e;
}

TEST(GgmlBlockMethods, BlocksAreLlamasOrNeverWorseProposalsWithPartIsCodes) {
  std::mt19937_64 rng(test::test_seed());
  const int64_t nb = 6000;
  std::vector<uint8_t> src;
  std::vector<float> x;
  make_source(DType::F32, nb * 32, rng, &src, &x);
  for (const GgmlLegacyType t : kMethodTypes) {
    const int bb = gl::block_bytes(t), top = t == GgmlLegacyType::Q5_1 ? 31 : 15;
    for (const QuantMethod m : kMethods) {
      SCOPED_TRACE(std::string(gl::type_name(t)) +
                   (m == QuantMethod::Search ? " search" : " refit"));
      int64_t changed = 0;
      double sum_llama = 0, sum_method = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x.data() + b * 32;
        uint8_t llama[24], got[24];
        gl::quantize_block(t, xb, llama);
        gl::quantize_block_method(t, m, xb, got);
        if (std::memcmp(llama, got, size_t(bb)) == 0) continue;
        ++changed;
        ASSERT_TRUE(finite_block(xb)) << "block " << b << ": a non-finite block changed";
        const double el = error_of(t, xb, llama), eg = error_of(t, xb, got);
        ASSERT_LT(eg, el) << "block " << b << ": replaced without a strictly lower error";
        EXPECT_EQ(eg, gl::block_error(t, xb, got));
        sum_llama += el;
        sum_method += eg;
        // The codes are §4.6's encode under the stored D and M.
        const Decoded r = read_block(t, got);
        ASSERT_GT(r.d, 0.0f);
        ASSERT_TRUE(std::isfinite(r.m));
        const float inv = 1.0f / r.d;
        for (int j = 0; j < 32; ++j) {
          const float v = std::nearbyint((xb[j] - r.m) * inv);
          const int want = v > float(top) ? top : (v > 0.0f ? int(v) : 0);
          ASSERT_EQ(r.c[j], want) << "block " << b << " element " << j;
        }
      }
      // Most blocks with outliers improve; the changed ones by a margin.
      EXPECT_GT(changed, nb / 10) << changed << " of " << nb << " blocks changed";
      EXPECT_LT(sum_method, 0.97 * sum_llama);
      std::printf("%s %s: %lld of %lld blocks changed, their error %.4g -> %.4g\n",
                  gl::type_name(t), m == QuantMethod::Search ? "search" : "refit",
                  static_cast<long long>(changed), static_cast<long long>(nb), sum_llama,
                  sum_method);
    }
  }
}

TEST(GgmlBlockMethods, RtnAndTypesWithoutAMinimumAreLlamasBytes) {
  std::mt19937_64 rng(test::test_seed() + 1);
  const int64_t nb = 500;
  std::vector<uint8_t> src;
  std::vector<float> x;
  make_source(DType::F32, nb * 32, rng, &src, &x);
  for (const GgmlLegacyType t : {GgmlLegacyType::Q4_0, GgmlLegacyType::Q4_1, GgmlLegacyType::Q5_0,
                                 GgmlLegacyType::Q5_1, GgmlLegacyType::Q8_0}) {
    for (const QuantMethod m : {QuantMethod::Rtn, QuantMethod::Search, QuantMethod::Refit}) {
      if (m != QuantMethod::Rtn && gl::takes_method(t)) continue;
      std::vector<uint8_t> want(size_t(nb) * size_t(gl::block_bytes(t)));
      std::vector<uint8_t> got(want.size());
      ASSERT_TRUE(gl::quantize_row(t, x.data(), nb * 32, want.data()));
      ASSERT_TRUE(gl::quantize_row_method(t, m, x.data(), nb * 32, got.data()));
      EXPECT_EQ(want, got) << gl::type_name(t);
    }
  }
  EXPECT_FALSE(
      gl::quantize_row_method(GgmlLegacyType::Q4_1, QuantMethod::Search, x.data(), 33, nullptr));
}

TEST(GgmlBlockMethods, CpuPathWritesTheReferencesBytesAtEveryThreadCount) {
  std::mt19937_64 rng(test::test_seed() + 2);
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const int64_t nb : {int64_t(1), int64_t(7), int64_t(9), int64_t(1001), int64_t(4099)}) {
      const int64_t n = nb * 32;
      std::vector<uint8_t> src;
      std::vector<float> values;
      make_source(dtype, n, rng, &src, &values);
      for (const GgmlLegacyType t : kMethodTypes) {
        for (const QuantMethod m : kMethods) {
          const size_t bytes = size_t(ggml_blocks_bytes(t, n));
          std::vector<uint8_t> want(bytes);
          ASSERT_TRUE(gl::quantize_row_method(t, m, values.data(), n, want.data()));
          for (const int threads : {1, 2, 3}) {
            SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " + std::to_string(nb) + " blocks, " +
                         std::to_string(threads) + " threads, " + gl::type_name(t) +
                         (m == QuantMethod::Search ? " search" : " refit"));
            std::vector<uint8_t> got(bytes + kGuard, kPoison);
            quantize_ggml_blocks_cpu(t, src.data(), dtype, n, got.data(), threads, "w", m);
            ASSERT_EQ(std::memcmp(got.data(), want.data(), bytes), 0);
            for (size_t i = bytes; i < got.size(); ++i) ASSERT_EQ(got[i], kPoison) << i;
            // The GGUF-type-number overload is the same quantizer.
            std::vector<uint8_t> by_number(bytes);
            quantize_ggml_blocks_cpu(GgmlType(uint32_t(t)), src.data(), dtype, n, by_number.data(),
                                     threads, "w", m);
            ASSERT_EQ(by_number, want);
          }
        }
      }
    }
  }
}

TEST(GgmlBlockMethods, OtherTypesRefuseAMethodNamingTheTensor) {
  std::vector<uint8_t> buf(1 << 12, 0);
  for (const GgmlType t :
       {GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(ggml_type_name(t));
    EXPECT_FALSE(ggml_type_takes_method(t));
    try {
      quantize_ggml_blocks_cpu(t, buf.data(), DType::F32, 256, buf.data(), 1, "blk.1.ffn_up.weight",
                               QuantMethod::Search);
      FAIL() << "a method accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_EQ(e.tensor(), "blk.1.ffn_up.weight");
      EXPECT_NE(std::string(e.what()).find("Q4_1 and Q5_1"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(ggml_type_takes_method(GgmlType::Q4_1));
  EXPECT_TRUE(ggml_type_takes_method(GgmlType::Q5_1));
}

}  // namespace
}  // namespace qpack
