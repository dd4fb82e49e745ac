// GgmlBlocksDeviceEncoder (qpack/kernels/ggml_blocks.hpp), the host-to-host
// GGUF block quantizer that `qpack convert ... OUT.gguf --device cuda` uses:
// for every ggml block type, the same bytes as the spec's per-block scalar
// reference (qpack/spec/ggml_block_types.hpp) whatever the chunk size and
// the number of chunks in flight, including counts that end one block past
// a chunk or fill every lane several times over; nothing written past the
// output; bad arguments refused with an Error naming the tensor. The same
// for --method search and refit on Q4_1/Q5_1 (docs/quantization.md §G9,
// qpack/spec/ggml_legacy_methods.hpp). Then the whole converter: the GGUF
// written with --device cuda is byte for byte the one written on the CPU,
// with and without a method. Skipped without a usable device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy_methods.hpp"
#include "require_gpu.hpp"
#include "testutil.hpp"

namespace qpack {
namespace {

using spec::ggml::GgmlBlockType;
namespace gl = spec::ggml;

constexpr GgmlBlockType kTypes[] = {GgmlBlockType::Q4_0, GgmlBlockType::Q4_1, GgmlBlockType::Q5_0,
                                    GgmlBlockType::Q5_1, GgmlBlockType::Q8_0, GgmlBlockType::Q2_K,
                                    GgmlBlockType::Q3_K, GgmlBlockType::Q4_K, GgmlBlockType::Q5_K,
                                    GgmlBlockType::Q6_K};
constexpr size_t kGuard = 64;
constexpr uint8_t kPoison = 0x5a;

// n elements in `dtype` (raw bytes) and the floats they are exactly: blocks
// of varied scale, some all zero, some constant, some with an outlier (the
// blocks the methods change).
void make_source(DType dtype, int64_t n, std::mt19937_64& rng, std::vector<uint8_t>* bytes,
                 std::vector<float>* values) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-12, 6), kind(0, 9);
  values->assign(size_t(n), 0.0f);
  bytes->assign(size_t(n) * (dtype == DType::F32 ? 4 : 2), 0);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float scale = std::ldexp(1.0f, expo(rng));
    const int k = kind(rng);
    for (int j = 0; j < 32; ++j) {
      float x = k == 0 ? 0.0f : k == 1 ? 0.5f * scale : normal(rng) * scale;
      if (k >= 7 && j == (b * 7) % 32) x = (k == 8 ? -20.0f : 14.0f) * scale;
      const size_t i = size_t(b * 32 + j);
      if (dtype == DType::F32) {
        std::memcpy(bytes->data() + 4 * i, &x, 4);
      } else {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16_rne(x) : f32_to_bf16_rne(x);
        x = dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        std::memcpy(bytes->data() + 2 * i, &h, 2);
      }
      (*values)[i] = x;
    }
  }
}

std::vector<uint8_t> reference_blocks(GgmlBlockType t, const std::vector<float>& x) {
  const int be = gl::block_elements(t), bb = gl::block_bytes(t);
  std::vector<uint8_t> out(x.size() / size_t(be) * size_t(bb));
  for (size_t b = 0; b < x.size() / size_t(be); ++b)
    gl::quantize_block(t, x.data() + b * size_t(be), out.data() + b * size_t(bb));
  return out;
}

TEST(CudaGgmlEncoder, SameBytesAsTheReferenceAtAnyChunkingAndLaneCount) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed());
  // Chunks of 1 and 3 super-blocks (of F32: 1 KiB each), with 1, 2 and 3
  // lanes, and the default; counts from one block to many chunks per lane.
  struct Setup {
    size_t chunk_bytes;
    int lanes;
  };
  const Setup setups[] = {{1024, 1}, {1024, 2}, {3 * 1024, 3}, {size_t(16) << 20, 3}};
  for (const Setup& st : setups) {
    cuda::GgmlBlocksDeviceEncoder enc(0, st.chunk_bytes, st.lanes);
    for (GgmlBlockType t : kTypes) {
      const int64_t be = gl::block_elements(t);
      for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        for (int64_t n :
             {be, 256 + be, int64_t(3 * 256), int64_t(7 * 256 + 32), int64_t(41 * 256)}) {
          if (n % be != 0) continue;  // 7 * 256 + 32: the legacy types only
          SCOPED_TRACE(std::string(gl::type_name(t)) + " " + dtype_name(dt) +
                       " n=" + std::to_string(n) + " chunk=" + std::to_string(st.chunk_bytes) +
                       " lanes=" + std::to_string(st.lanes));
          std::vector<uint8_t> src;
          std::vector<float> values;
          make_source(dt, n, rng, &src, &values);
          const std::vector<uint8_t> want = reference_blocks(t, values);
          std::vector<uint8_t> got(want.size() + kGuard, kPoison);
          enc.quantize(uint32_t(t), src.data(), dt, n, got.data(), "w");
          size_t first = want.size();
          for (size_t i = 0; i < want.size(); ++i)
            if (got[i] != want[i]) {
              first = i;
              break;
            }
          ASSERT_EQ(first, want.size()) << "first differing byte " << first << ", block "
                                        << first / size_t(gl::block_bytes(t));
          for (size_t i = want.size(); i < got.size(); ++i)
            ASSERT_EQ(got[i], kPoison) << "written past the output at byte " << i;
        }
      }
    }
  }
}

TEST(CudaGgmlEncoder, SearchAndRefitBlocksEqualTheReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 7);
  struct Setup {
    size_t chunk_bytes;
    int lanes;
  };
  const Setup setups[] = {{1024, 2}, {size_t(16) << 20, 3}};
  for (const Setup& st : setups) {
    cuda::GgmlBlocksDeviceEncoder enc(0, st.chunk_bytes, st.lanes);
    for (const gl::GgmlLegacyType t : {gl::GgmlLegacyType::Q4_1, gl::GgmlLegacyType::Q5_1}) {
      for (const QuantMethod m : {QuantMethod::Search, QuantMethod::Refit}) {
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
          for (int64_t n : {int64_t(32), int64_t(7 * 256 + 32), int64_t(41 * 256 + 96)}) {
            SCOPED_TRACE(std::string(gl::type_name(t)) +
                         (m == QuantMethod::Search ? " search " : " refit ") + dtype_name(dt) +
                         " n=" + std::to_string(n) + " chunk=" + std::to_string(st.chunk_bytes));
            std::vector<uint8_t> src;
            std::vector<float> values;
            make_source(dt, n, rng, &src, &values);
            std::vector<uint8_t> want(size_t(n / 32) * size_t(gl::block_bytes(t)));
            ASSERT_TRUE(gl::quantize_row_method(t, m, values.data(), n, want.data()));
            std::vector<uint8_t> llama(want.size());
            ASSERT_TRUE(gl::quantize_row(t, values.data(), n, llama.data()));
            if (n > 1024) {
              ASSERT_NE(want, llama) << "no block changed: the test tests nothing";
            }
            std::vector<uint8_t> got(want.size() + kGuard, kPoison);
            enc.quantize(uint32_t(t), src.data(), dt, n, got.data(), "w", m);
            size_t first = want.size();
            for (size_t i = 0; i < want.size(); ++i)
              if (got[i] != want[i]) {
                first = i;
                break;
              }
            ASSERT_EQ(first, want.size()) << "first differing byte " << first << ", block "
                                          << first / size_t(gl::block_bytes(t));
            for (size_t i = want.size(); i < got.size(); ++i)
              ASSERT_EQ(got[i], kPoison) << "written past the output at byte " << i;
          }
        }
      }
    }
  }
  // A method on a type without a float minimum is refused, naming the tensor.
  std::vector<uint8_t> src(1024), out(1024);
  try {
    cuda::GgmlBlocksDeviceEncoder enc(0);
    enc.quantize(uint32_t(GgmlBlockType::Q4_K), src.data(), DType::F32, 256, out.data(), "t",
                 QuantMethod::Search);
    FAIL() << "Q4_K took --method search";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_EQ(e.tensor(), "t");
  }
}

TEST(CudaGgmlEncoder, BadArgumentsAreErrorsNamingTheTensor) {
  REQUIRE_GPU();
  cuda::GgmlBlocksDeviceEncoder enc(0);
  std::vector<uint8_t> src(4096), out(4096, kPoison);
  const auto reason = [&](uint32_t type, DType dt, int64_t n) {
    try {
      enc.quantize(type, src.data(), dt, n, out.data(), "blk.3.ffn_up.weight");
    } catch (const Error& e) {
      EXPECT_EQ(e.tensor(), "blk.3.ffn_up.weight");
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      return e.reason();
    }
    return std::string("no error");
  };
  EXPECT_NE(reason(uint32_t(GgmlBlockType::Q4_K), DType::F32, 224).find("256-element"),
            std::string::npos);
  EXPECT_NE(reason(uint32_t(GgmlBlockType::Q4_0), DType::F32, 33).find("32-element"),
            std::string::npos);
  EXPECT_NE(reason(uint32_t(GgmlBlockType::Q8_0), DType::I8, 32).find("I8"), std::string::npos);
  EXPECT_NE(reason(15u, DType::F32, 256).find("GGUF type 15"), std::string::npos);
  for (uint8_t b : out) ASSERT_EQ(b, kPoison);
}

// The converter end to end: the same GGUF from the GPU as from the CPU, for a
// K-quant mix (Q4_K_M: Q4_K, Q6_K and the fallbacks of rows that hold no
// whole super-block) and a legacy type.
TEST(CudaGgmlEncoder, ConvertWritesTheCpuBytesOnTheDevice) {
  REQUIRE_GPU();
  test::TempDir dir;
  const std::string model = dir.file("m");
  test::run_testgen("llama '" + model +
                    "' --hidden 256 --intermediate 704 --layers 2 --vocab 1000 --heads 8"
                    " --kv-heads 2 --dtype bf16 --seed " +
                    std::to_string(test::test_seed() % 100000));
  for (const char* type :
       {"Q4_K_M", "Q4_1 --pure", "Q3_K_M", "Q8_0 --pure", "Q4_1 --pure --method search",
        "Q5_1 --pure --method refit", "Q5_1 --method search"}) {
    SCOPED_TRACE(type);
    const std::string cpu = dir.file("cpu.gguf"), gpu = dir.file("gpu.gguf");
    auto r = test::run_qpack("convert '" + model + "' '" + cpu + "' --type " + type +
                             " --device cpu -q --force");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = test::run_qpack("convert '" + model + "' '" + gpu + "' --type " + type +
                        " --device cuda -q --force --json");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("\"device\": \"cuda:0\""), std::string::npos) << r.output;
    const std::vector<uint8_t> a = test::read_file(cpu), b = test::read_file(gpu);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_TRUE(a == b) << "the GPU's GGUF differs from the CPU's";
  }
}

}  // namespace
}  // namespace qpack
