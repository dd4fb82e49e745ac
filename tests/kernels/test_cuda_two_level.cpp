// Two-level scales (docs/quantization.md §T) on the GPU against the scalar
// reference, byte for byte, through the converter's CUDA quantizer (which
// runs cuda::quantize_two_level on the whole tensor): axis 0 and -1, partial
// super-blocks and groups, every width, F16/BF16 super-scales, F16/BF16/F32
// sources, rtn and search, poisoned outputs, non-finite values zeroed; and
// the reference's errors for a NaN (policy Error, the smallest flat index)
// and a super-scale overflow. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
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

TEST(CudaTwoLevel, MatchesReferenceByteForByte) {
  REQUIRE_GPU();
  std::mt19937 rng(unsigned(test::test_seed()));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const Case cases[] = {
      {{512, 384}, 0, 32, 4, DType::F16, DType::F16},
      {{300, 77}, 0, 32, 4, DType::F16, DType::F32},
      {{96, 520}, -1, 32, 4, DType::F16, DType::BF16},
      {{7, 777}, -1, 32, 3, DType::BF16, DType::F16},
      {{520, 33}, 0, 16, 2, DType::F16, DType::F32},
      {{3, 300, 7}, 1, 24, 8, DType::F16, DType::F32},
      {{64, 96}, 0, 0, 4, DType::BF16, DType::BF16},
      {{40, 9}, 0, 64, 4, DType::F16, DType::F16},
  };
  for (QuantMethod m : {QuantMethod::Rtn, QuantMethod::Search})
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message() << "method " << int(m) << " axis " << c.axis << " g"
                                      << c.group << " b" << c.bits);
      QuantScheme s;
      s.bits = c.bits;
      s.group_size = c.group;
      s.axis = c.axis;
      s.scale_dtype = c.sd;
      s.method = m;
      s.super_block = kSuperBlockGroups;
      const GroupLayout L = make_layout(c.shape, s);
      std::vector<float> x(size_t(L.num_elements()));
      for (size_t k = 0; k < x.size(); ++k) x[k] = nd(rng) * (k % 101 == 0 ? 20.0f : 1.0f);
      for (size_t k = 0; k < x.size() && k < 64; ++k) x[k] = std::fabs(x[k]) + 0.01f;
      x[x.size() / 2] = std::nanf("");  // zeroed under NonFinitePolicy::Zero
      const auto src = encode(x, c.src);
      const QuantInput in{src.data(), c.src, "t"};
      Out ref(L, s, 0x5A), gpu(L, s, 0xC3);
      quantize_reference(in, L, s, NonFinitePolicy::Zero, ref.buffers());
      auto q = make_cuda_quantizer(0);
      q->quantize(in, L, s, NonFinitePolicy::Zero, gpu.buffers());
      EXPECT_EQ(gpu.codes, ref.codes);
      EXPECT_EQ(gpu.scales, ref.scales);
      EXPECT_EQ(gpu.zeros, ref.zeros);
    }
}

TEST(CudaTwoLevel, ErrorsAsReference) {
  REQUIRE_GPU();
  QuantScheme s;
  s.group_size = 32;
  s.super_block = kSuperBlockGroups;
  const GroupLayout L = make_layout({300, 64}, s);
  std::vector<float> x(size_t(L.num_elements()), 0.5f);
  for (size_t k = 0; k < x.size(); ++k) x[k] = float(k % 9) * 0.01f;
  x[3000] = std::nanf("");
  x[2000] = std::nanf("");
  auto src = encode(x, DType::F32);
  Out out(L, s, 0);
  auto q = make_cuda_quantizer(0);
  try {
    q->quantize({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, out.buffers());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NonFinite);
    EXPECT_NE(std::string(e.what()).find("flat index 2000"), std::string::npos) << e.what();
  }
  x[3000] = 0.0f;
  x[2000] = 1e8f;  // a super-scale beyond F16
  src = encode(x, DType::F32);
  try {
    q->quantize({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, out.buffers());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::RangeOverflow) << e.what();
  }
  // The quantizer still works after an error.
  x[2000] = 0.25f;
  src = encode(x, DType::F32);
  Out ref(L, s, 1), gpu(L, s, 2);
  quantize_reference({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, ref.buffers());
  q->quantize({src.data(), DType::F32, "t"}, L, s, NonFinitePolicy::Error, gpu.buffers());
  EXPECT_EQ(gpu.codes, ref.codes);
  EXPECT_EQ(gpu.scales, ref.scales);
  EXPECT_EQ(gpu.zeros, ref.zeros);
}

}  // namespace
