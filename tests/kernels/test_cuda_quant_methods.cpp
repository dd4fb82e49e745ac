// The parameter methods (docs/quantization.md §M: search and refit, and the
// integer zero-point search of §M5) on the GPU against the
// scalar reference, byte for byte: axis 0 and -1, partial groups, every
// width and scale dtype, F16/BF16/F32 sources, tiny chunks (many tiles and
// column splits), non-finite values zeroed, and the reference's errors for
// a NaN (policy Error) and a range overflow. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "require_gpu.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * (t == DType::F32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t h = t == DType::F16 ? f32_to_f16_rne(v[i]) : f32_to_bf16_rne(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

struct Out {
  std::vector<uint8_t> codes, scales, zeros;
  Out(const GroupLayout& L, const QuantScheme& s, uint8_t poison)
      : codes(L.codes_bytes(), poison),
        scales(size_t(L.params_bytes(s.scale_dtype)), poison),
        zeros(scales.size(), uint8_t(poison ^ 0xff)) {}
  QuantBuffers buffers() { return {codes.data(), scales.data(), zeros.data()}; }
};

struct Case {
  std::vector<int64_t> shape;
  int axis;
  int64_t group;
  int bits;
  DType sd, src;
};

TEST(CudaQuantMethods, MatchReferenceByteForByte) {
  REQUIRE_GPU();
  std::mt19937 rng(unsigned(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const Case cases[] = {
      {{256, 512}, 0, 64, 4, DType::F16, DType::F16},
      {{130, 77}, 0, 64, 4, DType::F16, DType::F32},
      {{96, 200}, -1, 64, 4, DType::F16, DType::BF16},
      {{7, 300}, -1, 32, 3, DType::BF16, DType::F16},
      {{72, 33}, 0, 16, 2, DType::F32, DType::F32},
      {{3, 100, 7}, 1, 24, 8, DType::F16, DType::F32},
      {{64, 96}, 0, 0, 4, DType::BF16, DType::BF16},
      {{11, 90}, -1, 0, 2, DType::F16, DType::F16},
  };
  const std::pair<QuantMethod, ZeroPoint> methods[] = {{QuantMethod::Search, ZeroPoint::Float},
                                                       {QuantMethod::Refit, ZeroPoint::Float},
                                                       {QuantMethod::Search, ZeroPoint::Integer}};
  for (const auto& [m, zp] : methods)
    for (const Case& c : cases)
      for (size_t chunk : {size_t(32) << 20, size_t(4096)}) {
        SCOPED_TRACE(testing::Message()
                     << "method " << int(m) << " zero-point " << int(zp) << " axis " << c.axis
                     << " g" << c.group << " b" << c.bits << " chunk " << chunk);
        QuantScheme s;
        s.bits = c.bits;
        s.group_size = c.group;
        s.axis = c.axis;
        s.scale_dtype = c.sd;
        s.method = m;
        s.zero_point = zp;
        const GroupLayout L = make_layout(c.shape, s);
        std::vector<float> x(size_t(L.num_elements()));
        for (size_t k = 0; k < x.size(); ++k) x[k] = nd(rng) * (k % 101 == 0 ? 20.0f : 1.0f);
        x[x.size() / 2] = std::nanf("");  // zeroed under NonFinitePolicy::Zero
        const auto src = encode(x, c.src);
        const QuantInput in{src.data(), c.src, "t"};
        Out ref(L, s, 0x5A), gpu(L, s, 0xC3);
        quantize_reference(in, L, s, NonFinitePolicy::Zero, ref.buffers());
        cuda::QuantizerOptions o;
        o.chunk_bytes = chunk;
        auto q = make_cuda_quantizer(0, o);
        q->quantize(in, L, s, NonFinitePolicy::Zero, gpu.buffers());
        EXPECT_EQ(gpu.codes, ref.codes);
        EXPECT_EQ(gpu.scales, ref.scales);
        EXPECT_EQ(gpu.zeros, ref.zeros);
      }
}

class CudaQuantMethodsErrors : public ::testing::TestWithParam<ZeroPoint> {};

TEST_P(CudaQuantMethodsErrors, ErrorsAsReference) {
  REQUIRE_GPU();
  QuantScheme s;
  s.method = QuantMethod::Search;
  s.zero_point = GetParam();
  const GroupLayout L = make_layout({128, 64}, s);
  std::vector<float> x(size_t(L.num_elements()), 0.5f);
  x[300] = std::nanf("");
  x[200] = std::nanf("");
  auto src = encode(x, DType::F32);
  Out out(L, s, 0);
  auto q = make_cuda_quantizer(0);
  try {
    q->quantize({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, out.buffers());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NonFinite);
    EXPECT_NE(std::string(e.what()).find("flat index 200"), std::string::npos) << e.what();
  }
  x[300] = x[200] = 1e6f;  // beyond F16 scales
  src = encode(x, DType::F32);
  EXPECT_THROW(
      q->quantize({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, out.buffers()),
      Error);
}

INSTANTIATE_TEST_SUITE_P(ZeroPoints, CudaQuantMethodsErrors,
                         ::testing::Values(ZeroPoint::Float, ZeroPoint::Integer),
                         [](const auto& info) {
                           return std::string(info.param == ZeroPoint::Integer ? "integer_zero"
                                                                               : "float_zero");
                         });

}  // namespace
