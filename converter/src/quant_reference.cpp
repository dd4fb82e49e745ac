// The scalar reference of docs/quantization.md: one group at a time, one
// element at a time, in the spec's order of operations. Clarity over speed;
// every fast path is tested byte for byte against this file.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/thread_pool.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/two_level.hpp"
#include "qpack/spec/group_methods.hpp"
#include "qpack/spec/group_params.hpp"
#include "quant_detail.hpp"

namespace qpack {
namespace detail {

int64_t find_first_nonfinite(const uint8_t* data, DType dtype, int64_t n, int threads) {
  constexpr int64_t kChunk = 1 << 14;
  const int nt = threads > 1 ? threads : 1;
  std::vector<int64_t> first(size_t(nt), INT64_MAX);
  cpu::parallel_chunks(nt, (n + kChunk - 1) / kChunk, [&](int64_t c0, int64_t c1, int t) {
    for (int64_t c = c0; c < c1 && first[size_t(t)] == INT64_MAX; ++c) {
      const int64_t e = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
      for (int64_t i = c * kChunk; i < e; ++i)
        if (!spec::is_finite_f32(load_as_f32(data, dtype, uint64_t(i)))) {
          first[size_t(t)] = i;
          break;
        }
    }
  });
  // Chunks are in index order: the first task that found one has the answer.
  for (const int64_t f : first)
    if (f != INT64_MAX) return f;
  return -1;
}

void throw_nonfinite(const QuantInput& in, const GroupLayout& layout, int64_t flat) {
  const float v = load_as_f32(in.data, in.dtype, uint64_t(flat));
  // Named by flat index and its (outer, axis, inner) coordinates, which is
  // what the grouping sees.
  const int64_t i = flat % layout.inner, a = (flat / layout.inner) % layout.axis_len,
                o = flat / layout.inner / layout.axis_len;
  throw Error(ErrorCode::NonFinite, "", in.name,
              std::string(std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf")) + " at flat index " +
                  std::to_string(flat) + " (outer " + std::to_string(o) + ", axis " +
                  std::to_string(a) + ", inner " + std::to_string(i) +
                  "); pass --nonfinite=zero to quantize such values as 0");
}

void throw_range_overflow(const QuantInput& in, const GroupLayout& layout,
                          const QuantScheme& scheme, int64_t group_linear) {
  const int64_t i = group_linear % layout.inner;
  const int64_t g = (group_linear / layout.inner) % layout.groups_per_axis;
  const int64_t o = group_linear / layout.inner / layout.groups_per_axis;
  throw Error(ErrorCode::RangeOverflow, "", in.name,
              std::string("group (outer ") + std::to_string(o) + ", group " + std::to_string(g) +
                  ", inner " + std::to_string(i) + ") has a range too wide for " +
                  dtype_name(scheme.scale_dtype) +
                  " scales/zero-points; use --scale-dtype bf16 or f32 for this tensor");
}

}  // namespace detail

namespace detail {

int quantize_group(const QuantInput& in, const GroupLayout& L, const QuantScheme& scheme,
                   NonFinitePolicy policy, const QuantBuffers& out, int64_t o, int64_t g, int64_t i,
                   float* x) {
  const DType sd = scheme.scale_dtype;
  const int64_t len = L.group_len(g);
  // Gather the group's real elements (padding takes no part).
  for (int64_t k = 0; k < len; ++k) {
    const int64_t flat = (o * L.axis_len + g * L.group_size + k) * L.inner + i;
    float v = load_as_f32(in.data, in.dtype, uint64_t(flat));
    if (!spec::is_finite_f32(v)) {
      if (policy == NonFinitePolicy::Error) return kGroupNonFinite;
      v = 0.0f;
    }
    x[k] = v;
  }
  spec::GroupParams p;
  if (scheme.symmetric) {
    float amax = 0.0f;
    for (int64_t k = 0; k < len; ++k) amax = std::fmax(amax, std::fabs(x[k]));
    p = spec::params_sym(amax, scheme.bits, sd);
  } else if (scheme.method != QuantMethod::Rtn) {
    // validate_scheme admits search for both zero-point rules, refit for float.
    p = spec::params_asym_method(spec::GroupValues{x, nullptr}, len, scheme.bits, sd, scheme.method,
                                 has_integer_zero(scheme));
  } else {
    float mn = x[0], mx = x[0];
    for (int64_t k = 1; k < len; ++k) {
      mn = std::fmin(mn, x[k]);
      mx = std::fmax(mx, x[k]);
    }
    p = has_integer_zero(scheme) ? spec::params_asym_int(mn, mx, scheme.bits, sd)
                                 : spec::params_asym(mn, mx, scheme.bits, sd);
  }
  if (p.overflow) return kGroupOverflow;
  const int64_t pi = (o * L.groups_per_axis + g) * L.inner + i;
  spec::store_param(out.scales, pi, sd, p.scale, p.scale_bits16);
  if (!scheme.symmetric) spec::store_param(out.zeros, pi, sd, p.zero, p.zero_bits16);
  uint8_t* base = out.codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i;
  for (int64_t k = 0; k < len; ++k) {
    const uint32_t c = scheme.symmetric           ? spec::encode_sym(x[k], p, scheme.bits)
                       : has_integer_zero(scheme) ? spec::encode_asym_int(x[k], p, scheme.bits)
                                                  : spec::encode_asym(x[k], p, scheme.bits);
    spec::put_code(base, L.inner, k, scheme.bits, c);
  }
  return kGroupOk;
}

}  // namespace detail

void quantize_reference(const QuantInput& in, const GroupLayout& L, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out) {
  if (has_two_level(scheme))
    return detail::quantize_two_level(in, L, scheme, policy, out, 1, CpuIsa::Scalar);
  if (policy == NonFinitePolicy::Error) {
    const int64_t bad = detail::find_first_nonfinite(in.data, in.dtype, L.num_elements(), 1);
    if (bad >= 0) detail::throw_nonfinite(in, L, bad);
  }
  if (L.codes_bytes() > 0) std::memset(out.codes, 0, L.codes_bytes());
  std::vector<float> scratch(size_t(L.group_size));
  for (int64_t o = 0; o < L.outer; ++o)
    for (int64_t g = 0; g < L.groups_per_axis; ++g)
      for (int64_t i = 0; i < L.inner; ++i) {
        const int r = detail::quantize_group(in, L, scheme, policy, out, o, g, i, scratch.data());
        if (r == detail::kGroupOverflow)
          detail::throw_range_overflow(in, L, scheme, (o * L.groups_per_axis + g) * L.inner + i);
      }
}

void dequantize_reference(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                          const GroupLayout& L, const QuantScheme& scheme, float* out) {
  if (has_two_level(scheme)) {  // §T4: exact per-group (S, M), then §6
    const ExpandedParams e = expand_two_level(L, scheme, scales, zeros);
    return dequantize_reference(codes, e.scales.data(), e.zeros.data(), e.layout, e.scheme, out);
  }
  const DType sd = scheme.scale_dtype;
  for (int64_t o = 0; o < L.outer; ++o)
    for (int64_t g = 0; g < L.groups_per_axis; ++g)
      for (int64_t i = 0; i < L.inner; ++i) {
        const int64_t pi = (o * L.groups_per_axis + g) * L.inner + i;
        const float s = spec::load_param(scales, pi, sd);
        const float m = scheme.symmetric ? 0.0f : spec::load_param(zeros, pi, sd);
        const uint8_t* base = codes + (o * L.groups_per_axis + g) * L.bytes_per_group * L.inner + i;
        for (int64_t k = 0; k < L.group_len(g); ++k) {
          const uint32_t c = spec::get_code(base, L.inner, k, scheme.bits);
          out[(o * L.axis_len + g * L.group_size + k) * L.inner + i] =
              spec::decode_scheme(c, s, m, scheme.symmetric, has_integer_zero(scheme), scheme.bits);
        }
      }
}

}  // namespace qpack
