// CUDA quantize/dequantize against the scalar reference, byte for byte, on
// random and adversarial inputs; the streaming TensorQuantizer (tiny chunks
// too); errors with the reference's codes and messages; a whole checkpoint
// converted on the CPU and on the GPU giving the same file. Every test skips
// when no CUDA device is usable, so CI machines without a GPU pass.
//
// QPACK_GPU_TEST_QUICK=1 (set by tools/gpu_check.sh under compute-sanitizer)
// runs a random quarter of each sweep.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/converter/convert.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/dtype.hpp"
#include "quant_detail.hpp"
#include "require_gpu.hpp"
#include "testutil.hpp"

using namespace qpack;

namespace {

bool quick() {
  const char* q = std::getenv("QPACK_GPU_TEST_QUICK");
  return q && *q && *q != '0';
}

int esize(DType t) { return t == DType::F32 ? 4 : 2; }

// Encodes float values as the bytes of a tensor of dtype t (values are first
// rounded to t, so the source holds exactly representable values).
std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * size_t(esize(t)));
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

struct Outputs {
  std::vector<uint8_t> codes, scales, zeros;
  QuantBuffers buffers() {
    return {codes.data(), scales.data(), zeros.empty() ? nullptr : zeros.data()};
  }
};

Outputs make_outputs(const GroupLayout& L, const QuantScheme& s, uint8_t poison) {
  Outputs o;
  o.codes.assign(L.codes_bytes(), poison);
  o.scales.assign(size_t(L.params_bytes(s.scale_dtype)), poison);
  if (!s.symmetric) o.zeros.assign(o.scales.size(), poison);
  return o;
}

std::string describe(const std::vector<int64_t>& shape, DType dt, const QuantScheme& s) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) r += (i ? "," : "") + std::to_string(shape[i]);
  return r + "] " + dtype_name(dt) + " " + scheme_label(s);
}

// Index of the first differing byte, or -1.
int64_t first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return int64_t(i);
  return -1;
}

void expect_same(const Outputs& got, const Outputs& want, const std::string& what) {
  EXPECT_EQ(first_diff(got.codes, want.codes), -1) << what << ": codes differ";
  EXPECT_EQ(first_diff(got.scales, want.scales), -1) << what << ": scales differ";
  EXPECT_EQ(first_diff(got.zeros, want.zeros), -1) << what << ": zeros differ";
}

// ------------------------------------------------------------ value generators

enum class Dist { Normal, Wide, Ties, Constant, Tiny, Zeros };

// Values for a tensor viewed as (outer, L, inner); some distributions are
// built per group so they hit exact rounding ties, constant groups etc.
std::vector<float> make_values(const GroupLayout& L, const QuantScheme& s, Dist d,
                               std::mt19937_64& rng) {
  const int64_t n = L.num_elements();
  std::vector<float> v(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  switch (d) {
    case Dist::Normal: {
      const float scale = std::ldexp(1.0f, int(rng() % 12) - 8), shift = normal(rng) * scale;
      for (auto& x : v) x = normal(rng) * scale + shift;
      break;
    }
    case Dist::Wide:  // magnitudes over many binades, with outliers, both signs
      for (auto& x : v) {
        const float m = std::ldexp(1.0f + uni(rng), int(rng() % 40) - 20);
        x = (rng() & 1) ? -m : m;
        if (rng() % 97 == 0) x *= 1000.0f;
      }
      break;
    case Dist::Tiny:  // subnormals of every source dtype, signed zeros
      for (auto& x : v) {
        const int pick = int(rng() % 5);
        const float m = pick == 0   ? std::ldexp(float(rng() % 1024), -24 - 10)  // f16 subnormals
                        : pick == 1 ? std::ldexp(float(rng() % 128), -133)   // bf16/f32 subnormals
                        : pick == 2 ? std::ldexp(float(rng() % 4096), -149)  // f32 subnormals
                        : pick == 3 ? -0.0f
                                    : std::ldexp(1.0f + uni(rng), -14 - int(rng() % 10));
        x = (rng() & 1) ? -m : m;
      }
      break;
    case Dist::Zeros:
      for (auto& x : v) x = (rng() & 1) ? -0.0f : 0.0f;
      break;
    case Dist::Constant:
    case Dist::Ties: {
      // Per group: either a constant, or values (k + 1/2) * 2^e with the
      // group's range making S = 2^e exactly, so (x - M) / S lands on .5 ties.
      const int q = s.symmetric ? qmax_sym(s.bits) : qmax_asym(s.bits);
      for (int64_t o = 0; o < L.outer; ++o)
        for (int64_t g = 0; g < L.groups_per_axis; ++g)
          for (int64_t i = 0; i < L.inner; ++i) {
            const int64_t len = L.group_len(g);
            const float e = std::ldexp(1.0f, int(rng() % 8) - 6);
            const float c = normal(rng);
            const bool constant = d == Dist::Constant && rng() % 4 != 0;
            for (int64_t k = 0; k < len; ++k) {
              float x;
              if (constant) {
                x = c;
              } else if (s.symmetric) {
                const int kk = int(rng() % uint64_t(2 * q)) - q;  // -q .. q-1
                x = (float(kk) + 0.5f) * e;
                if (k == 0) x = float(q) * e;  // amax = q * 2^e -> S = 2^e
              } else {
                const int kk = int(rng() % uint64_t(q));
                x = (float(kk) + 0.5f) * e;
                if (k == 0) x = 0.0f;
                if (k == 1 && len > 1) x = float(q) * e;
              }
              v[size_t((o * L.axis_len + g * L.group_size + k) * L.inner + i)] = x;
            }
          }
      break;
    }
  }
  return v;
}

struct Case {
  std::vector<int64_t> shape;
  int axis;
  int64_t group;
};

// Shapes that reach every kernel path: column groups with 16-byte vectors
// and with scalar access (odd inner), one slice per thread and several,
// fewer lanes than columns; contiguous groups, aligned and not, short and
// longer than 32 chunks; partial last groups, odd resolved group sizes, one
// element, rank 1..4.
std::vector<Case> cases() {
  return {
      {{1}, 0, 64},
      {{7}, 0, 0},
      {{10}, -1, 8},
      {{1, 10}, -1, 8},
      {{33, 17}, 0, 8},
      {{33, 17}, -1, 8},
      {{64, 40}, 0, 64},
      {{130, 24}, 0, 64},
      {{24, 130}, -1, 64},
      {{24, 128}, -1, 64},
      {{3, 5, 40}, 1, 0},
      {{3, 5, 40}, 2, 16},
      {{3, 5, 40}, 0, 8},
      {{5, 2, 7, 3}, 2, 10},
      {{300, 16}, 0, 256},
      {{300, 16}, 0, 0},
      {{600, 8}, 0, 0},
      {{8, 600}, -1, 0},
      {{96, 64}, 0, 32},
      {{16, 64}, 0, 8},
      {{16, 64}, 0, 16},
      {{8, 264}, -1, 264},
      {{256, 48}, 0, 128},
      {{70, 36}, 0, 48},
      {{2, 66, 24}, 1, 64},
      {{1, 1}, 0, 8},
      {{40, 64}, -1, 32},
      {{33, 16}, -1, 8},
      {{37, 128}, -1, 64},
      {{5, 3, 64}, 2, 16},
      // Contiguous whole groups of 8 * 2^k elements (coalesced-window quantize
      // kernel for 16-bit sources, whole-group dequantize): windows of 32
      // groups and of fewer (G' = 128, 256), partial last windows.
      {{48, 256}, -1, 128},
      {{20, 512}, -1, 256},
      {{300, 64}, -1, 64},
      {{3, 7, 48}, 2, 16},
  };
}

struct Config {
  DType dtype;
  QuantScheme scheme;
};

std::vector<Config> configs() {
  std::vector<Config> out;
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int bits : {2, 3, 4, 8})
      for (int kind = 0; kind < 3; ++kind)  // float zero-points, symmetric, integer zero-points
        for (DType sd : {DType::F16, DType::BF16, DType::F32}) {
          QuantScheme s;
          s.bits = bits;
          s.symmetric = kind == 1;
          if (kind == 2) s.zero_point = ZeroPoint::Integer;
          s.scale_dtype = sd;
          out.push_back({dt, s});
        }
  return out;
}

// ------------------------------------------------------------ device-level API

struct DeviceRun {
  Outputs out;
  std::vector<float> deq;
  cuda::QuantFlags flags;
};

// Uploads, quantizes with the device API (whole tensor), downloads; then
// dequantizes those codes on the device too.
DeviceRun run_device(const std::vector<uint8_t>& src, DType dt, const GroupLayout& L,
                     const QuantScheme& s, NonFinitePolicy policy) {
  DeviceRun r;
  r.out = make_outputs(L, s, 0xA5);
  cuda::DeviceBuffer d_src, d_codes, d_scales, d_zeros, d_flags, d_deq;
  cuda::throw_if_failed(d_src.allocate(src.size()));
  cuda::throw_if_failed(d_codes.allocate(r.out.codes.size()));
  cuda::throw_if_failed(d_scales.allocate(r.out.scales.size()));
  cuda::throw_if_failed(d_zeros.allocate(r.out.zeros.size()));
  cuda::throw_if_failed(d_flags.allocate(sizeof(cuda::QuantFlags)));
  cuda::throw_if_failed(d_deq.allocate(size_t(L.num_elements()) * 4));
  // Poison the outputs: every byte must be written by the kernel.
  cuda::throw_if_failed(cuda::fill_device(d_codes.data(), 0xA5, d_codes.size(), nullptr));
  cuda::throw_if_failed(cuda::fill_device(d_scales.data(), 0xA5, d_scales.size(), nullptr));
  cuda::throw_if_failed(cuda::fill_device(d_zeros.data(), 0xA5, d_zeros.size(), nullptr));
  cuda::throw_if_failed(cuda::copy_to_device(d_src.data(), src.data(), src.size(), nullptr));
  cuda::throw_if_failed(cuda::reset_flags(d_flags.as<cuda::QuantFlags>(), nullptr));
  cuda::DeviceQuantOutput o;
  o.codes = d_codes.as<uint8_t>();
  o.scales = d_scales.as<uint8_t>();
  o.zeros = s.symmetric ? nullptr : d_zeros.as<uint8_t>();
  cuda::throw_if_failed(
      cuda::quantize(d_src.data(), dt, L, s, policy, o, d_flags.as<cuda::QuantFlags>(), nullptr));
  cuda::throw_if_failed(cuda::dequantize(d_codes.as<uint8_t>(), d_scales.as<uint8_t>(),
                                         d_zeros.as<uint8_t>(), L, s, d_deq.data(), DType::F32,
                                         nullptr));
  cuda::throw_if_failed(
      cuda::copy_to_host(r.out.codes.data(), d_codes.data(), r.out.codes.size(), nullptr));
  cuda::throw_if_failed(
      cuda::copy_to_host(r.out.scales.data(), d_scales.data(), r.out.scales.size(), nullptr));
  cuda::throw_if_failed(
      cuda::copy_to_host(r.out.zeros.data(), d_zeros.data(), r.out.zeros.size(), nullptr));
  cuda::throw_if_failed(cuda::copy_to_host(&r.flags, d_flags.data(), sizeof r.flags, nullptr));
  r.deq.assign(size_t(L.num_elements()), 0.0f);
  cuda::throw_if_failed(cuda::copy_to_host(r.deq.data(), d_deq.data(), r.deq.size() * 4, nullptr));
  cuda::throw_if_failed(cuda::synchronize(nullptr));
  return r;
}

Outputs run_reference(const std::vector<uint8_t>& src, DType dt, const GroupLayout& L,
                      const QuantScheme& s, NonFinitePolicy policy) {
  Outputs o = make_outputs(L, s, 0);
  quantize_reference({src.data(), dt, "t"}, L, s, policy, o.buffers());
  return o;
}

std::vector<uint8_t> float_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// The message the host would build from the device's flags, through the
// reference's own helpers; empty when the flags report nothing.
std::string message_from_flags(const cuda::QuantFlags& f, const std::vector<uint8_t>& src, DType dt,
                               const GroupLayout& L, const QuantScheme& s, NonFinitePolicy policy) {
  const QuantInput in{src.data(), dt, "t"};
  try {
    if (policy == NonFinitePolicy::Error && f.first_nonfinite != cuda::kNoIndex)
      detail::throw_nonfinite(in, L, int64_t(f.first_nonfinite));
    if (f.first_overflow_group != cuda::kNoIndex)
      detail::throw_range_overflow(in, L, s, int64_t(f.first_overflow_group));
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(CudaQuant, DeviceApiMatchesReferenceEverywhere) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed());
  const Dist dists[] = {Dist::Normal,   Dist::Wide, Dist::Ties,
                        Dist::Constant, Dist::Tiny, Dist::Zeros};
  int checked = 0, errors = 0;
  for (const Case& c : cases())
    for (const Config& cfg : configs()) {
      if (quick() && rng() % 4 != 0) continue;
      QuantScheme s = cfg.scheme;
      s.axis = c.axis;
      s.group_size = c.group;
      const GroupLayout L = make_layout(c.shape, s, "t");
      const Dist d = dists[rng() % 6];
      const std::vector<uint8_t> src = encode(make_values(L, s, d, rng), cfg.dtype);
      for (NonFinitePolicy policy : {NonFinitePolicy::Error, NonFinitePolicy::Zero}) {
        const std::string what = describe(c.shape, cfg.dtype, s) + " dist " +
                                 std::to_string(int(d)) +
                                 (policy == NonFinitePolicy::Zero ? " nonfinite=zero" : "");
        SCOPED_TRACE(what);
        Outputs want;
        std::string want_error;
        try {
          want = run_reference(src, cfg.dtype, L, s, policy);
        } catch (const Error& e) {
          want_error = e.what();  // NaN/Inf from F16 overflow of Wide values, or range overflow
        }
        {
          DeviceRun r = run_device(src, cfg.dtype, L, s, policy);
          const std::string& w = what;
          EXPECT_EQ(message_from_flags(r.flags, src, cfg.dtype, L, s, policy), want_error) << w;
          if (!want_error.empty()) {
            ++errors;
          } else {
            expect_same(r.out, want, w);
            std::vector<float> deq(size_t(L.num_elements()));
            dequantize_reference(want.codes.data(), want.scales.data(),
                                 want.zeros.empty() ? nullptr : want.zeros.data(), L, s,
                                 deq.data());
            EXPECT_EQ(first_diff(float_bytes(r.deq), float_bytes(deq)), -1)
                << w << ": dequantized floats differ";
            ++checked;
          }
          if (HasFailure()) return;  // one detailed failure is enough
        }
      }
    }
  std::printf("checked %d tensors byte for byte, %d error outcomes\n", checked, errors);
  EXPECT_GT(checked, 100);
}

// Same bytes, except that any NaN matches any NaN (the device's FMA returns
// the canonical NaN, the host's keeps a payload): element size esz.
int64_t first_diff_nan(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, DType t) {
  if (got.size() != want.size()) return 0;
  const size_t esz = size_t(esize(t));
  for (size_t i = 0; i < got.size(); i += esz) {
    if (std::memcmp(&got[i], &want[i], esz) == 0) continue;
    float a, b;
    if (t == DType::F32) {
      std::memcpy(&a, &got[i], 4);
      std::memcpy(&b, &want[i], 4);
    } else {
      uint16_t ha, hb;
      std::memcpy(&ha, &got[i], 2);
      std::memcpy(&hb, &want[i], 2);
      a = t == DType::F16 ? f16_to_f32(ha) : bf16_to_f32(ha);
      b = t == DType::F16 ? f16_to_f32(hb) : bf16_to_f32(hb);
    }
    if (!(std::isnan(a) && std::isnan(b))) return int64_t(i / esz);
  }
  return -1;
}

TEST(CudaQuant, DequantizeToHalfTypesRoundsLikeTheHost) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 1);
  for (const Case& c : cases())
    for (int bits : {2, 3, 4, 8})
      for (DType out_dt : {DType::F16, DType::BF16, DType::F32}) {
        QuantScheme s;
        s.bits = bits;
        s.axis = c.axis;
        s.group_size = c.group;
        s.symmetric = rng() & 1;
        if (rng() & 1) s.zero_point = ZeroPoint::Integer;  // asymmetric: (q - z) * S
        s.scale_dtype = rng() & 1 ? DType::F32 : DType::F16;
        const GroupLayout L = make_layout(c.shape, s, "t");
        // Arbitrary codes (padding bits included) and finite parameters.
        Outputs q = make_outputs(L, s, 0);
        for (auto& b : q.codes) b = uint8_t(rng());
        std::normal_distribution<float> normal(0.0f, 3.0f);
        const std::vector<uint8_t> sc = encode(
            [&] {
              std::vector<float> v(size_t(L.num_groups()));
              for (auto& x : v) x = normal(rng);
              return v;
            }(),
            s.scale_dtype);
        q.scales = sc;
        if (!s.symmetric)
          q.zeros = encode(
              [&] {
                std::vector<float> v(size_t(L.num_groups()));
                for (auto& x : v) x = normal(rng) * 10.0f;
                return v;
              }(),
              s.scale_dtype);
        std::vector<float> ref(size_t(L.num_elements()));
        dequantize_reference(q.codes.data(), q.scales.data(),
                             q.zeros.empty() ? nullptr : q.zeros.data(), L, s, ref.data());
        std::vector<uint8_t> want;
        if (out_dt == DType::F32) {
          want = float_bytes(ref);
        } else {
          want = encode(ref, out_dt);
        }
        std::vector<uint8_t> got(ref.size() * size_t(esize(out_dt)), 0x5A);
        cuda::dequantize_on_device(0, q.codes.data(), q.scales.data(),
                                   q.zeros.empty() ? nullptr : q.zeros.data(), L, s, got.data(),
                                   out_dt);
        ASSERT_EQ(first_diff(got, want), -1)
            << describe(c.shape, DType::F32, s) << " -> " << dtype_name(out_dt);

        // Non-finite parameters (the kernels' general path): +-Inf and NaN
        // scales and zero-points among finite ones, output equal up to NaN
        // payloads.
        const std::vector<float> specials = {INFINITY, -INFINITY, std::nanf("")};
        for (int k = 0; k < 3; ++k) {
          const size_t gidx = size_t(rng() % uint64_t(L.num_groups()));
          std::vector<uint8_t>& arr = (!s.symmetric && (rng() & 1)) ? q.zeros : q.scales;
          const std::vector<uint8_t> one = encode({specials[rng() % 3]}, s.scale_dtype);
          std::memcpy(&arr[gidx * one.size()], one.data(), one.size());
        }
        dequantize_reference(q.codes.data(), q.scales.data(),
                             q.zeros.empty() ? nullptr : q.zeros.data(), L, s, ref.data());
        want = out_dt == DType::F32 ? float_bytes(ref) : encode(ref, out_dt);
        cuda::dequantize_on_device(0, q.codes.data(), q.scales.data(),
                                   q.zeros.empty() ? nullptr : q.zeros.data(), L, s, got.data(),
                                   out_dt);
        ASSERT_EQ(first_diff_nan(got, want, out_dt), -1)
            << describe(c.shape, DType::F32, s) << " -> " << dtype_name(out_dt)
            << " (non-finite parameters)";
      }
}

// ------------------------------------------------------------ TensorQuantizer

std::unique_ptr<TensorQuantizer> quantizer(size_t chunk_bytes, int streams = 3) {
  cuda::QuantizerOptions o;
  o.chunk_bytes = chunk_bytes;
  o.streams = streams;
  o.host_threads = 2;
  return make_cuda_quantizer(0, o);
}

TEST(CudaQuantizer, MatchesReferenceWithAnyChunkSize) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 2);
  // Default chunks, a few hundred bytes (several group rows per chunk), and
  // 1 byte (one group column per chunk: column tiles, one-column tiles).
  auto big = quantizer(size_t(64) << 20), small = quantizer(700, 2), tiny = quantizer(1);
  EXPECT_NE(big->description().find("cuda:0"), std::string::npos);
  for (const Case& c : cases())
    for (const Config& cfg : configs()) {
      if (rng() % (quick() ? 16 : 4) != 0) continue;
      QuantScheme s = cfg.scheme;
      s.axis = c.axis;
      s.group_size = c.group;
      const GroupLayout L = make_layout(c.shape, s, "t");
      const std::vector<uint8_t> src = encode(make_values(L, s, Dist(rng() % 6), rng), cfg.dtype);
      const std::string what = describe(c.shape, cfg.dtype, s);
      SCOPED_TRACE(what);
      Outputs want;
      try {
        want = run_reference(src, cfg.dtype, L, s, NonFinitePolicy::Error);
      } catch (const Error&) {
        continue;  // overflow: covered by the error tests
      }
      for (TensorQuantizer* q : {big.get(), small.get(), tiny.get()}) {
        Outputs got = make_outputs(L, s, 0xA5);
        q->quantize({src.data(), cfg.dtype, "t"}, L, s, NonFinitePolicy::Error, got.buffers());
        expect_same(got, want, what);
        if (HasFailure()) return;
      }
    }
}

TEST(CudaQuantizer, LargeTensorsManyChunksBothStreamsCounts) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 3);
  const int64_t rows = quick() ? 512 : 2048, cols = quick() ? 264 : 1032;
  for (int axis : {0, -1})
    for (int streams : {2, 4}) {
      QuantScheme s;
      s.axis = axis;
      s.bits = axis == 0 ? 4 : 3;
      s.group_size = 64;
      const GroupLayout L = make_layout({rows, cols}, s, "big");
      const std::vector<uint8_t> src = encode(make_values(L, s, Dist::Normal, rng), DType::BF16);
      const Outputs want = run_reference(src, DType::BF16, L, s, NonFinitePolicy::Error);
      Outputs got = make_outputs(L, s, 0xA5);
      quantizer(src.size() / 7, streams)
          ->quantize({src.data(), DType::BF16, "big"}, L, s, NonFinitePolicy::Error, got.buffers());
      expect_same(got, want, "axis " + std::to_string(axis));
    }
}

TEST(CudaQuantizer, PinnedSourceIsCopiedDirectly) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 6);
  for (int axis : {0, -1}) {
    QuantScheme s;
    s.axis = axis;
    s.group_size = 64;
    const GroupLayout L = make_layout({520, 136}, s, "p");
    const std::vector<uint8_t> src = encode(make_values(L, s, Dist::Normal, rng), DType::F16);
    cuda::PinnedBuffer pinned;
    cuda::throw_if_failed(pinned.allocate(src.size()));
    std::memcpy(pinned.data(), src.data(), src.size());
    const Outputs want = run_reference(src, DType::F16, L, s, NonFinitePolicy::Error);
    for (size_t chunk : {size_t(1) << 20, size_t(5000), size_t(1)}) {
      Outputs got = make_outputs(L, s, 0xA5);
      quantizer(chunk)->quantize({pinned.data(), DType::F16, "p"}, L, s, NonFinitePolicy::Error,
                                 got.buffers());
      expect_same(got, want, "pinned, chunk " + std::to_string(chunk));
    }
  }
}

// Pageable sources at odd offsets, in anonymous memory and in a read-only
// mapping of a file (as the converter reads checkpoints), cut into chunks of
// whole rows whose boundaries (rows of 2000 bytes) fall anywhere in a page.
TEST(CudaQuantizer, PageableSourcesAtOddOffsetsMatchTheReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 8);
  test::TempDir dir;
  for (int64_t rows : {quick() ? int64_t(1500) : int64_t(3000), int64_t(200)})
    for (int axis : {0, -1}) {
      QuantScheme s;
      s.axis = axis;
      s.group_size = 64;
      s.bits = axis == 0 ? 4 : 3;
      const GroupLayout L = make_layout({rows, 1000}, s, "r");
      const std::vector<uint8_t> src = encode(make_values(L, s, Dist::Normal, rng), DType::F16);
      const Outputs want = run_reference(src, DType::F16, L, s, NonFinitePolicy::Error);
      const size_t at = 1000 + 2 * size_t(rng() % 2000);
      std::vector<uint8_t> bytes(at + src.size(), 0x5a);
      std::memcpy(bytes.data() + at, src.data(), src.size());
      const std::string path = dir.file("t" + std::to_string(rows) + "_" + std::to_string(axis));
      test::write_file(path, bytes.data(), bytes.size());
      const MappedFile file(path);
      for (const uint8_t* base : {static_cast<const uint8_t*>(bytes.data()) + at, file.data() + at})
        for (size_t chunk : {size_t(1) << 20, size_t(2) << 20, (size_t(3) << 20) + 12345}) {
          const std::string what = std::string(base == file.data() + at ? "file" : "anon") +
                                   " axis " + std::to_string(axis) + " rows " +
                                   std::to_string(rows) + " chunk " + std::to_string(chunk);
          SCOPED_TRACE(what);
          cuda::QuantizerOptions o;
          o.chunk_bytes = chunk;
          o.host_threads = 4;
          Outputs got = make_outputs(L, s, 0xA5);
          make_cuda_quantizer(0, o)->quantize({base, DType::F16, "r"}, L, s, NonFinitePolicy::Error,
                                              got.buffers());
          expect_same(got, want, what);
          if (HasFailure()) return;
        }
    }
}

// Tensors of several waves of blocks, on both axes.
TEST(CudaQuant, LargeTensorsMatchTheReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 7);
  for (int axis : {0, -1})
    for (int kind = 0; kind < 3; ++kind) {  // float zero-points, symmetric, integer zero-points
      const bool sym = kind == 1;
      QuantScheme s;
      s.axis = axis;
      s.symmetric = sym;
      if (kind == 2) s.zero_point = ZeroPoint::Integer;
      s.bits = sym ? 8 : 4;
      s.group_size = axis == 0 ? 64 : 32;
      const GroupLayout L = make_layout({quick() ? 2048 : 4096, 2048}, s, "m");
      const std::vector<uint8_t> src = encode(make_values(L, s, Dist::Normal, rng), DType::BF16);
      const Outputs want = run_reference(src, DType::BF16, L, s, NonFinitePolicy::Error);
      DeviceRun r = run_device(src, DType::BF16, L, s, NonFinitePolicy::Error);
      expect_same(r.out, want, "axis " + std::to_string(axis));
    }
}

TEST(CudaQuantizer, EmptyTensorsDoNothing) {
  REQUIRE_GPU();
  auto q = quantizer(1024);
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{0}, {0, 64}, {64, 0}, {3, 0, 5}}) {
    QuantScheme s;
    const GroupLayout L = make_layout(shape, s, "e");
    uint8_t dummy = 0;
    q->quantize({&dummy, DType::F16, "e"}, L, s, NonFinitePolicy::Error, {&dummy, &dummy, &dummy});
  }
}

// Tensors submitted ahead of their waits share one pipeline: chunks of the
// next tensor are staged and enqueued while the previous one's are still on
// the device, across every chunk size, pageable and pinned sources mixed,
// empty tensors, tensors that grow the staging buffers mid-stream, and
// tensors that fail (their wait throws the reference's error; the others
// are unaffected). Waited in submission order with one tensor ahead (the
// converter's pattern) and all at once in reverse order.
TEST(CudaQuantizer, SubmittedTensorsShareThePipelineAndMatchTheReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 9);
  struct Item {
    std::vector<uint8_t> src;
    cuda::PinnedBuffer pinned;
    DType dtype;
    QuantScheme scheme;
    GroupLayout L;
    NonFinitePolicy policy;
    Outputs want, got;
    std::string want_error;  // empty: the reference succeeds
    std::string what;
    const uint8_t* data() const { return pinned.data() ? pinned.data() : src.data(); }
  };
  const std::vector<Case> cs = cases();
  const std::vector<Config> cfgs = configs();
  const int rounds = quick() ? 2 : 6;
  for (int round = 0; round < rounds; ++round) {
    const size_t chunk = std::vector<size_t>{size_t(64) << 20, 700, 1, 5000}[size_t(round % 4)];
    std::vector<std::unique_ptr<Item>> items;
    const int n = 6 + int(rng() % 10);
    for (int i = 0; i < n; ++i) {
      auto it = std::make_unique<Item>();
      const Case& c = cs[rng() % cs.size()];
      const Config& cfg = cfgs[rng() % cfgs.size()];
      it->dtype = cfg.dtype;
      it->scheme = cfg.scheme;
      it->scheme.axis = c.axis;
      it->scheme.group_size = c.group;
      std::vector<int64_t> shape = c.shape;
      if (rng() % 8 == 0) shape[0] = 0;                               // empty
      if (chunk > 1 && rng() % 4 == 0) shape[0] = shape[0] * 37 + 5;  // more chunks, bigger buffers
      it->L = make_layout(shape, it->scheme, "t" + std::to_string(i));
      std::vector<float> v = make_values(it->L, it->scheme, Dist(rng() % 6), rng);
      it->policy = rng() % 2 ? NonFinitePolicy::Error : NonFinitePolicy::Zero;
      if (!v.empty() && rng() % 5 == 0) v[size_t(rng() % v.size())] = std::nanf("");
      it->src = encode(v, it->dtype);
      if (!it->src.empty() && rng() % 3 == 0) {
        cuda::throw_if_failed(it->pinned.allocate(it->src.size()));
        std::memcpy(it->pinned.data(), it->src.data(), it->src.size());
      }
      it->what = "item " + std::to_string(i) + " " + describe(shape, it->dtype, it->scheme) +
                 (it->pinned.data() ? " pinned" : "");
      const std::string name = "t" + std::to_string(i);
      it->want = make_outputs(it->L, it->scheme, 0);
      try {
        quantize_reference({it->src.data(), it->dtype, name}, it->L, it->scheme, it->policy,
                           it->want.buffers());
      } catch (const Error& e) {
        it->want_error = e.what();
      }
      it->got = make_outputs(it->L, it->scheme, 0xA5);
      items.push_back(std::move(it));
    }
    auto q = quantizer(chunk, 2 + round % 3);
    auto submit = [&](size_t i) {
      Item& it = *items[i];
      return q->submit({it.data(), it.dtype, "t" + std::to_string(i)}, it.L, it.scheme, it.policy,
                       it.got.buffers());
    };
    auto check_wait = [&](size_t i, TensorQuantizer::Ticket t) {
      Item& it = *items[i];
      SCOPED_TRACE(it.what + ", chunk " + std::to_string(chunk));
      try {
        q->wait(t);
        EXPECT_EQ(it.want_error, "") << "the GPU succeeded";
        if (it.want_error.empty()) expect_same(it.got, it.want, it.what);
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), it.want_error);
      }
    };
    if (round % 2 == 0) {  // one ahead, waited in order
      TensorQuantizer::Ticket prev = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        const TensorQuantizer::Ticket t = submit(i);
        if (i > 0) check_wait(i - 1, prev);
        prev = t;
      }
      check_wait(items.size() - 1, prev);
    } else {  // all ahead, waited in reverse
      std::vector<TensorQuantizer::Ticket> ts;
      for (size_t i = 0; i < items.size(); ++i) ts.push_back(submit(i));
      for (size_t i = items.size(); i-- > 0;) check_wait(i, ts[i]);
    }
    if (HasFailure()) return;
  }
}

// cancel() with tensors in flight stops them (their tickets are spent), and
// the quantizer then works as new; an unknown ticket is an argument error.
TEST(CudaQuantizer, CancelStopsTensorsInFlight) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 10);
  QuantScheme s;
  const GroupLayout L = make_layout({4096, 520}, s, "c");
  const std::vector<uint8_t> src = encode(make_values(L, s, Dist::Normal, rng), DType::F16);
  const Outputs want = run_reference(src, DType::F16, L, s, NonFinitePolicy::Error);
  auto q = quantizer(20000);
  std::vector<Outputs> outs(4, make_outputs(L, s, 0xA5));
  std::vector<TensorQuantizer::Ticket> ts;
  for (Outputs& o : outs)
    ts.push_back(
        q->submit({src.data(), DType::F16, "c"}, L, s, NonFinitePolicy::Error, o.buffers()));
  q->cancel();
  for (TensorQuantizer::Ticket t : ts) {
    try {
      q->wait(t);
      ADD_FAILURE() << "a cancelled ticket was waited";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    }
  }
  Outputs got = make_outputs(L, s, 0xA5);
  q->quantize({src.data(), DType::F16, "c"}, L, s, NonFinitePolicy::Error, got.buffers());
  expect_same(got, want, "after cancel");
  // Tensors left in flight when the quantizer goes away are stopped by it.
  for (Outputs& o : outs)
    q->submit({src.data(), DType::F16, "c"}, L, s, NonFinitePolicy::Error, o.buffers());
  q.reset();
}

// A conversion whose third tensor holds a NaN, with the next tensors already
// submitted when its wait fails: the GPU converter fails with the CPU's
// error (file, tensor and index) and leaves no output file.
TEST(CudaConvert, FailureWithTensorsInFlightLeavesNothing) {
  REQUIRE_GPU();
  test::TempDir dir;
  const std::string src = dir.file("m.safetensors");
  test::write_model_with_nan(src, 96, test::test_seed() + 11);
  ConvertOptions o;
  std::string cpu_error, gpu_error;
  try {
    convert_checkpoint(src, dir.file("cpu.qpack"), o, *make_cpu_quantizer(2));
  } catch (const Error& e) {
    cpu_error = e.what();
  }
  try {
    convert_checkpoint(src, dir.file("gpu.qpack"), o, *quantizer(4096));
  } catch (const Error& e) {
    gpu_error = e.what();
  }
  EXPECT_NE(cpu_error.find("layers.2.w.weight"), std::string::npos) << cpu_error;
  EXPECT_EQ(gpu_error, cpu_error);
  EXPECT_FALSE(std::filesystem::exists(dir.file("gpu.qpack")));
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    files += e.path() != src ? 1 : 0;
  EXPECT_EQ(files, 0u) << "a temporary file was left behind";
}

// ------------------------------------------------------------ errors

// Runs the reference and the GPU quantizer (default and tiny chunks); both
// must throw the same code and message, or both succeed with the same bytes.
void expect_same_outcome(const std::vector<uint8_t>& src, DType dt,
                         const std::vector<int64_t>& shape, const QuantScheme& s,
                         NonFinitePolicy policy, ErrorCode expected) {
  const GroupLayout L = make_layout(shape, s, "bad.weight");
  std::string want_msg;
  ErrorCode want_code = ErrorCode::Internal;
  Outputs want = make_outputs(L, s, 0);
  bool want_ok = true;
  try {
    quantize_reference({src.data(), dt, "bad.weight"}, L, s, policy, want.buffers());
  } catch (const Error& e) {
    want_ok = false;
    want_msg = e.what();
    want_code = e.code();
  }
  if (expected == ErrorCode::Internal) {
    ASSERT_TRUE(want_ok) << want_msg;
  } else {
    ASSERT_FALSE(want_ok);
    ASSERT_EQ(want_code, expected);
  }
  for (size_t chunk : {size_t(64) << 20, size_t(300)}) {
    Outputs got = make_outputs(L, s, 0xA5);
    try {
      quantizer(chunk)->quantize({src.data(), dt, "bad.weight"}, L, s, policy, got.buffers());
      EXPECT_TRUE(want_ok) << "GPU succeeded, reference failed with: " << want_msg;
      if (want_ok) expect_same(got, want, "chunk " + std::to_string(chunk));
    } catch (const Error& e) {
      EXPECT_FALSE(want_ok) << "GPU failed: " << e.what();
      EXPECT_EQ(e.code(), want_code);
      EXPECT_EQ(std::string(e.what()), want_msg);
    }
  }
}

TEST(CudaQuantizerErrors, NonFiniteFirstIndexAndPolicies) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 4);
  const float specials[] = {std::nanf(""), INFINITY, -INFINITY};
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (int axis : {0, -1, -2})  // -2: axis -1 of a [96, 64] tensor (whole groups)
      for (float special : specials) {
        const std::vector<int64_t> shape =
            axis == -2 ? std::vector<int64_t>{96, 64} : std::vector<int64_t>{96, 40};
        QuantScheme s;
        s.axis = axis == -2 ? -1 : axis;
        s.group_size = 32;
        s.symmetric = rng() & 1;
        std::vector<float> v(size_t(shape[0] * shape[1]));
        std::normal_distribution<float> normal;
        for (auto& x : v) x = normal(rng);
        // Several bad values; the first in flat order must be named.
        for (int k = 0; k < 3; ++k) v[size_t(rng() % v.size())] = special;
        v[size_t(500 + rng() % 1000)] = special;
        const std::vector<uint8_t> src = encode(v, dt);
        SCOPED_TRACE(std::string(dtype_name(dt)) + " axis " + std::to_string(axis));
        expect_same_outcome(src, dt, shape, s, NonFinitePolicy::Error, ErrorCode::NonFinite);
        expect_same_outcome(src, dt, shape, s, NonFinitePolicy::Zero, ErrorCode::Internal);
      }
}

TEST(CudaQuantizerErrors, RangeOverflowNamesTheFirstGroup) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::test_seed() + 5);
  for (int axis : {0, -1})
    for (bool sym : {false, true}) {
      QuantScheme s;
      s.axis = axis;
      s.group_size = 16;
      s.symmetric = sym;
      s.scale_dtype = DType::F16;
      std::vector<float> v(64 * 48);
      std::normal_distribution<float> normal;
      for (auto& x : v) x = normal(rng);
      // Beyond F16's range: the zero-point (asymmetric) or the scale overflows.
      for (int k = 0; k < 4; ++k) v[size_t(rng() % v.size())] = sym ? 3.0e6f : -1.0e5f;
      const std::vector<uint8_t> src = encode(v, DType::F32);
      expect_same_outcome(src, DType::F32, {64, 48}, s, NonFinitePolicy::Error,
                          ErrorCode::RangeOverflow);
      // A NaN anywhere wins over the overflow, as in the reference.
      std::vector<float> w = v;
      w[w.size() - 1] = std::nanf("");
      expect_same_outcome(encode(w, DType::F32), DType::F32, {64, 48}, s, NonFinitePolicy::Error,
                          ErrorCode::NonFinite);
      // With BF16 scales the same values are fine.
      s.scale_dtype = DType::BF16;
      expect_same_outcome(src, DType::F32, {64, 48}, s, NonFinitePolicy::Error,
                          ErrorCode::Internal);
    }
}

TEST(CudaApi, ValidatesArguments) {
  REQUIRE_GPU();
  QuantScheme s;
  const GroupLayout L = make_layout({64, 64}, s, "t");
  cuda::DeviceBuffer buf;
  cuda::throw_if_failed(buf.allocate(1 << 16));
  cuda::DeviceQuantOutput o;
  o.codes = o.scales = o.zeros = buf.as<uint8_t>();
  // No flags.
  EXPECT_EQ(
      cuda::quantize(buf.data(), DType::F16, L, s, NonFinitePolicy::Error, o, nullptr, nullptr)
          .code,
      cuda::StatusCode::InvalidArgument);
  // Layout of another scheme.
  QuantScheme s8 = s;
  s8.bits = 8;
  auto* flags = reinterpret_cast<cuda::QuantFlags*>(buf.as<uint8_t>() + 60000);
  EXPECT_EQ(
      cuda::quantize(buf.data(), DType::F16, L, s8, NonFinitePolicy::Error, o, flags, nullptr).code,
      cuda::StatusCode::InvalidArgument);
  // Non-float source, tile out of range, null output.
  EXPECT_EQ(
      cuda::quantize(buf.data(), DType::I32, L, s, NonFinitePolicy::Error, o, flags, nullptr).code,
      cuda::StatusCode::InvalidArgument);
  cuda::Tile t;
  t.col_end = 65;
  EXPECT_EQ(
      cuda::quantize(buf.data(), DType::F16, L, s, NonFinitePolicy::Error, o, flags, nullptr, t)
          .code,
      cuda::StatusCode::InvalidArgument);
  cuda::DeviceQuantOutput bad = o;
  bad.scales = nullptr;
  EXPECT_EQ(
      cuda::quantize(buf.data(), DType::F16, L, s, NonFinitePolicy::Error, bad, flags, nullptr)
          .code,
      cuda::StatusCode::InvalidArgument);
  EXPECT_EQ(cuda::dequantize(buf.as<uint8_t>(), buf.as<uint8_t>(), buf.as<uint8_t>(), L, s,
                             buf.data(), DType::I8, nullptr)
                .code,
            cuda::StatusCode::InvalidArgument);
  const cuda::Status st =
      cuda::quantize(buf.data(), DType::F16, L, s, NonFinitePolicy::Error, o, nullptr, nullptr);
  EXPECT_THROW(cuda::throw_if_failed(st, "t"), Error);
}

TEST(CudaApi, DeviceInfo) {
  REQUIRE_GPU();
  EXPECT_GE(cuda::device_count(), 1);
  cuda::DeviceInfo info;
  const cuda::Status st = cuda::query_device(0, &info);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_GT(info.total_memory, size_t(1) << 30);
  EXPECT_NE(cuda::describe(info).find("cuda:0"), std::string::npos);
  EXPECT_EQ(cuda::query_device(cuda::device_count(), &info).code, cuda::StatusCode::NoDevice);
}

// Runs everywhere: without a GPU (or without CUDA) the factory must say so.
TEST(CudaApi, FactoryReportsNoDevice) {
  std::string why;
  const int bad_device = cuda::cuda_available(&why) ? cuda::device_count() + 3 : 0;
  try {
    auto q = make_cuda_quantizer(bad_device);
    FAIL() << "expected Error(NoDevice)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NoDevice);
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

// ------------------------------------------------------------ whole checkpoint

TEST(CudaConvert, CheckpointOnGpuIsTheSameFileAsOnCpu) {
  REQUIRE_GPU();
  test::TempDir dir;
  const std::string model = dir.file("model");
  std::filesystem::create_directories(model);
  test::run_testgen("llama " + model +
                    " --hidden 200 --intermediate 72 --layers 2 --vocab 130 "
                    "--shard-bytes 150000 --seed 11 --dtype bf16");
  struct Variant {
    const char* name;
    Recipe recipe;
  };
  Recipe axis0;
  Recipe axis1;
  axis1.defaults.axis = -1;
  axis1.defaults.bits = 3;
  axis1.defaults.symmetric = true;
  axis1.defaults.group_size = 48;
  axis1.defaults.scale_dtype = DType::BF16;
  for (const Variant& v : {Variant{"default", axis0}, Variant{"axis-1 sym 3b", axis1}}) {
    SCOPED_TRACE(v.name);
    ConvertOptions o;
    o.recipe = v.recipe;
    o.overwrite = true;
    auto cpu = make_cpu_quantizer(2);
    const std::string a = dir.file("cpu.qpack"), b = dir.file("gpu.qpack"),
                      c = dir.file("gpu-tiny.qpack");
    convert_checkpoint(model, a, o, *cpu);
    convert_checkpoint(model, b, o, *make_cuda_quantizer(0));
    convert_checkpoint(model, c, o, *quantizer(4096));
    const auto fa = test::read_file(a);
    EXPECT_EQ(fa, test::read_file(b));
    EXPECT_EQ(fa, test::read_file(c));
  }
  // And through the CLI.
  const std::string x = dir.file("x.qpack"), y = dir.file("y.qpack");
  auto r1 = test::run_qpack("convert " + model + " " + x + " -q --device cpu");
  auto r2 = test::run_qpack("convert " + model + " " + y + " -q --device cuda:0");
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_EQ(test::read_file(x), test::read_file(y));
}

}  // namespace
