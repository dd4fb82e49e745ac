// The parameter methods of docs/quantization.md §M (search, refit; the
// integer zero-point search of §M5 when a.integer_zero) on the
// GPU: one thread per group, calling the same header-only spec code as the
// scalar reference (spec/group_methods.hpp), so the bytes are the
// reference's. Adjacent threads take adjacent columns of a group row, so
// along axis 0 their loads are coalesced; a method reads its group about 50
// times (search) and the re-reads come from L1/L2.
#include "kernel_args.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/group_methods.hpp"

namespace qpack::kernels {
namespace {

template <DType D>
__device__ __forceinline__ float load_element(const uint8_t* src, int64_t idx) {
  if constexpr (D == DType::F32) {
    return reinterpret_cast<const float*>(src)[idx];
  } else {
    const uint16_t h = reinterpret_cast<const uint16_t*>(src)[idx];
    return D == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

// A group's elements in the tile's source rows (pitch: the tile's columns);
// non-finite values read as +0 (policy Zero; under policy Error a group
// holding one has returned before the method runs). Unit weights.
template <DType D>
struct DeviceGroup {
  const uint8_t* src;  // the tile's source
  int64_t first, pitch;
  __device__ __forceinline__ float x(int64_t k) const {
    const float v = load_element<D>(src, first + k * pitch);
    return spec::is_finite_f32(v) ? v : 0.0f;
  }
  __device__ __forceinline__ float w(int64_t) const { return 1.0f; }
};

__device__ __forceinline__ void store_param_device(uint8_t* dst, int64_t index, DType sd,
                                                   float value, uint16_t bits16) {
  if (sd == DType::F32)
    reinterpret_cast<float*>(dst)[index] = value;
  else
    reinterpret_cast<uint16_t*>(dst)[index] = bits16;
}

template <DType D>
__global__ void quantize_method_kernel(QuantArgs a, int bits) {
  pdl_prologue();
  const TileGeometry& g = a.geo;
  const int64_t ncols = g.ncols;
  const int64_t P = int64_t(g.groups.d);
  const uint8_t* src = static_cast<const uint8_t*>(a.src);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < int64_t(g.tasks);
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t gr_local = t / ncols, c = t % ncols;
    const int64_t gr = g.gr_begin + gr_local;
    const int64_t o = gr / P, gi = gr % P;
    const int64_t row0 = o * g.axis_len + gi * g.group;  // tensor row of element 0
    const int64_t len = g.axis_len - gi * g.group < g.group ? g.axis_len - gi * g.group : g.group;
    const int64_t first = (row0 - g.row_begin) * ncols + c;
    const int64_t col = g.col_begin + c;
    if (!a.zero_nonfinite) {
      bool bad = false;
      for (int64_t k = 0; k < len && !bad; ++k)
        if (!spec::is_finite_f32(load_element<D>(src, first + k * ncols))) {
          atomicMin(&a.flags->first_nonfinite,
                    static_cast<unsigned long long>((row0 + k) * g.inner + col));
          bad = true;
        }
      if (bad) continue;
    }
    const DeviceGroup<D> grp{src, first, ncols};
    const spec::GroupParams p =
        spec::params_asym_method(grp, len, bits, a.scale_dtype, a.method, a.integer_zero);
    if (p.overflow) {
      atomicMin(&a.flags->first_overflow_group,
                static_cast<unsigned long long>(gr * g.inner + col));
      continue;
    }
    const int64_t pi = gr_local * ncols + c;
    store_param_device(a.scales, pi, a.scale_dtype, p.scale, p.scale_bits16);
    store_param_device(a.zeros, pi, a.scale_dtype, p.zero, p.zero_bits16);
    // The bit stream of §8, each byte written once (padding codes 0).
    uint8_t* out = a.codes + gr_local * g.bytes * ncols + c;
    uint32_t buf = 0;
    int have = 0;
    int64_t j = 0;
    for (int64_t k = 0; k < len; ++k) {
      buf |= (a.integer_zero ? spec::encode_asym_int(grp.x(k), p, bits)
                             : spec::encode_asym(grp.x(k), p, bits))
             << have;
      have += bits;
      while (have >= 8) {
        out[j++ * ncols] = uint8_t(buf & 0xffu);
        buf >>= 8;
        have -= 8;
      }
    }
    if (have > 0) {
      out[j++ * ncols] = uint8_t(buf & 0xffu);
    }
    for (; j < g.bytes; ++j) out[j * ncols] = 0;
  }
}

}  // namespace

int launch_quantize_method(const QuantArgs& a, DType src_dtype, int bits, const Launch& l) {
  switch (src_dtype) {
    case DType::F16:
      return int(
          launch_kernel(quantize_method_kernel<DType::F16>, l.blocks, kBlockThreads, l, a, bits));
    case DType::BF16:
      return int(
          launch_kernel(quantize_method_kernel<DType::BF16>, l.blocks, kBlockThreads, l, a, bits));
    default:
      return int(
          launch_kernel(quantize_method_kernel<DType::F32>, l.blocks, kBlockThreads, l, a, bits));
  }
}

}  // namespace qpack::kernels
