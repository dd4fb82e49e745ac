// Two-level scales (docs/quantization.md §T) on the GPU: one thread per
// super-block (o, b, i) running the spec's text (spec/two_level.hpp), as
// converter/src/quant_two_level.cpp does on the CPU, so the bytes are the
// reference's; then one thread per four groups packs the 6-bit codes (four
// codes fill three bytes, so no two threads share a byte). Adjacent threads
// take adjacent columns i, so along axis 0 their loads are coalesced.
#include <cuda_runtime.h>

#include <string>

#include "qpack/kernels/cuda_status.hpp"
#include "qpack/kernels/two_level.hpp"
#include "qpack/spec/two_level.hpp"

namespace qpack::cuda {
namespace {

constexpr int kThreads = 128;

template <DType D>
__device__ __forceinline__ float load_element(const uint8_t* src, int64_t idx) {
  if constexpr (D == DType::F32) {
    return reinterpret_cast<const float*>(src)[idx];
  } else {
    const uint16_t h = reinterpret_cast<const uint16_t*>(src)[idx];
    return D == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

// A group's elements (first, first + pitch, ...); non-finite values read as
// +0 (policy Zero; under policy Error the unit returns before). Unit weights.
template <DType D>
struct DeviceGroup {
  const uint8_t* src;
  int64_t first, pitch;
  __device__ __forceinline__ float x(int64_t k) const {
    const float v = load_element<D>(src, first + k * pitch);
    return spec::is_finite_f32(v) ? v : 0.0f;
  }
  __device__ __forceinline__ float w(int64_t) const { return 1.0f; }
};

struct Args {
  const uint8_t* src;
  GroupLayout L;
  int bits;
  DType sd;
  QuantMethod method;
  bool zero_nonfinite;
  uint8_t *codes, *scales, *zeros, *sub;  // sub: [sc codes | m codes], one byte each
  QuantFlags* flags;
};

template <DType D>
__global__ void two_level_units(Args a) {
  const GroupLayout& L = a.L;
  const int64_t K = L.super_block, PS = L.supers_per_axis(), units = L.num_supers();
  const int64_t groups = L.num_groups();
  const uint64_t off = L.sub_codes_bytes();
  for (int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = u % L.inner, sb = (u / L.inner) % PS, o = u / L.inner / PS;
    const int64_t g0 = sb * K, g1 = g0 + K < L.groups_per_axis ? g0 + K : L.groups_per_axis;
    const auto group = [&](int64_t g) {
      return DeviceGroup<D>{a.src, (o * L.axis_len + g * L.group_size) * L.inner + i, L.inner};
    };
    if (!a.zero_nonfinite) {
      bool bad = false;
      for (int64_t g = g0; g < g1 && !bad; ++g) {
        const int64_t first = (o * L.axis_len + g * L.group_size) * L.inner + i;
        for (int64_t k = 0; k < L.group_len(g) && !bad; ++k)
          if (!spec::is_finite_f32(load_element<D>(a.src, first + k * L.inner))) {
            atomicMin(&a.flags->first_nonfinite,
                      static_cast<unsigned long long>(first + k * L.inner));
            bad = true;
          }
      }
      if (bad) continue;
    }
    spec::FirstLevel f[kSuperBlockGroups];
    float smax = 0.0f, mmax = 0.0f;
    bool bad = false;
    for (int64_t g = g0; g < g1; ++g) {
      spec::FirstLevel& fl = f[g - g0];
      fl = spec::first_level(group(g), L.group_len(g), a.bits, a.method);
      if (fl.overflow) {
        atomicMin(&a.flags->first_overflow_group,
                  static_cast<unsigned long long>((o * L.groups_per_axis + g) * L.inner + i));
        bad = true;
        break;
      }
      if (fl.s > smax) smax = fl.s;
      if (fl.mneg > mmax) mmax = fl.mneg;
    }
    if (bad) continue;
    const spec::SuperValue d = spec::super_value(smax, a.sd), dm = spec::super_value(mmax, a.sd);
    if (d.overflow || dm.overflow) {
      atomicMin(&a.flags->first_overflow_group,
                static_cast<unsigned long long>((o * L.groups_per_axis + g0) * L.inner + i));
      continue;
    }
    const int64_t si = (o * PS + sb) * L.inner + i;
    reinterpret_cast<uint16_t*>(a.scales + off)[si] = d.bits16;
    reinterpret_cast<uint16_t*>(a.zeros + off)[si] = dm.bits16;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t p = (o * L.groups_per_axis + g) * L.inner + i, len = L.group_len(g);
      const DeviceGroup<D> grp = group(g);
      const spec::SubCodes c =
          spec::choose_sub_codes(grp, len, a.bits, f[g - g0], d.value, dm.value);
      a.sub[p] = uint8_t(c.sc);
      a.sub[groups + p] = uint8_t(c.m);
      const spec::GroupParams gp = spec::effective_params(d.value, c.sc, dm.value, c.m);
      uint8_t* base = a.codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i;
      for (int64_t k = 0; k < len; ++k)
        spec::put_code(base, L.inner, k, a.bits, spec::encode_asym(grp.x(k), gp, a.bits));
    }
  }
}

__global__ void two_level_pack(const uint8_t* sub, int64_t groups, uint8_t* scales,
                               uint8_t* zeros) {
  const int64_t chunks = (groups + 3) / 4;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x)
    for (int64_t p = 4 * c; p < 4 * c + 4 && p < groups; ++p) {
      spec::put_code(scales, 1, p, kSubScaleBits, sub[p]);
      spec::put_code(zeros, 1, p, kSubScaleBits, sub[groups + p]);
    }
}

int blocks_for(int64_t tasks) {
  const int64_t b = (tasks + kThreads - 1) / kThreads;
  return int(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

}  // namespace

Status quantize_two_level(const void* d_src, DType src_dtype, const GroupLayout& L,
                          const QuantScheme& scheme, NonFinitePolicy policy,
                          const DeviceQuantOutput& out, uint8_t* d_scratch, QuantFlags* d_flags,
                          cudaStream_t stream) {
  if (!has_two_level(scheme) || L.super_block != scheme.super_block || L.bits != scheme.bits)
    return invalid("quantize_two_level: the scheme and layout must be two-level and agree");
  if (const std::string why = validate_scheme(scheme); !why.empty()) return invalid(why);
  if (!is_quantizable(src_dtype))
    return invalid(std::string("source dtype must be F16, BF16 or F32 (got ") +
                   dtype_name(src_dtype) + ")");
  if (!d_flags) return invalid("quantize_two_level: null flags");
  if (L.num_elements() == 0 || L.num_groups() == 0) return {};
  if (!d_src || !out.codes || !out.scales || !out.zeros || !d_scratch)
    return invalid("quantize_two_level: null source, output or scratch pointer");
  const uint64_t pbytes = L.params_bytes(scheme.scale_dtype);
  QPACK_CUDA_TRY(cudaMemsetAsync(out.codes, 0, L.codes_bytes(), stream));
  QPACK_CUDA_TRY(cudaMemsetAsync(out.scales, 0, pbytes, stream));
  QPACK_CUDA_TRY(cudaMemsetAsync(out.zeros, 0, pbytes, stream));
  Args a;
  a.src = static_cast<const uint8_t*>(d_src);
  a.L = L;
  a.bits = scheme.bits;
  a.sd = scheme.scale_dtype;
  a.method = scheme.method;
  a.zero_nonfinite = policy == NonFinitePolicy::Zero;
  a.codes = out.codes;
  a.scales = out.scales;
  a.zeros = out.zeros;
  a.sub = d_scratch;
  a.flags = d_flags;
  const int blocks = blocks_for(L.num_supers());
  switch (src_dtype) {
    case DType::F16:
      two_level_units<DType::F16><<<blocks, kThreads, 0, stream>>>(a);
      break;
    case DType::BF16:
      two_level_units<DType::BF16><<<blocks, kThreads, 0, stream>>>(a);
      break;
    default:
      two_level_units<DType::F32><<<blocks, kThreads, 0, stream>>>(a);
      break;
  }
  QPACK_CUDA_TRY(cudaGetLastError());
  two_level_pack<<<blocks_for((L.num_groups() + 3) / 4), kThreads, 0, stream>>>(
      d_scratch, L.num_groups(), out.scales, out.zeros);
  QPACK_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace qpack::cuda
