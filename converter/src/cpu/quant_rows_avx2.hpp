// "Row groups" (inner == 1, e.g. axis -1): each group is contiguous; a batch
// of 8 groups shares one vector evaluation of the scale arithmetic, and
// row_full does the same without per-group bookkeeping when every group is
// whole and a multiple of 32 elements long. Internal to converter/src
// (quant_cpu.cpp).
#pragma once

#include "cpu/avx2_common.hpp"

// Internal linkage, as when these lived in quant_cpu.cpp itself: this header
// is included by that one translation unit only.
namespace qpack::cpu {
namespace {

template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline bool finish_stats8x16(const __m128i* smax, const __m128i* umax,
                                        const __m128i* smin, __m256* lo, __m256* hi) {
  Stats16<SYM> r;
  if constexpr (SYM) {
    r.smax = _mm256_castsi128_si256(reduce8x8_epi16(smax, MaxU16{}));
  } else {
    r.smax = _mm256_castsi128_si256(reduce8x8_epi16(smax, MaxS16{}));
    r.umax = _mm256_castsi128_si256(reduce8x8_epi16(umax, MaxU16{}));
    r.smin = _mm256_castsi128_si256(reduce8x8_epi16(smin, MinS16{}));
  }
  __m256i vlo, vhi, bad;
  stats16_finish<T, SYM>(r, &vlo, &vhi, &bad);  // only the low 8 lanes mean anything
  if (!ZERO_NF && _mm_movemask_epi8(_mm256_castsi256_si128(bad)) != 0) return false;
  *lo = bits16_to_ps<T>(_mm256_castsi256_si128(vlo));
  *hi = bits16_to_ps<T>(_mm256_castsi256_si128(vhi));
  return true;
}

// Statistics of up to 8 contiguous 16-bit groups (start/len per lane).
template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline bool row_stats16(const uint8_t* src, const int64_t* start, const int64_t* len,
                                   int lanes, __m256* lo, __m256* hi) {
  __m128i smax[8], umax[8], smin[8];
  for (int l = 0; l < 8; ++l) {
    const int src_l = l < lanes ? l : 0;  // unused lanes repeat lane 0
    const int64_t n = len[src_l], b = start[src_l];
    Stats16<SYM> a = stats16_empty<SYM>();
    if (n >= 16) {
      int64_t k = 0;
      for (; k + 16 <= n; k += 16) stats16_add<SYM>(a, load16_bits<T, ZERO_NF>(src, b + k));
      // The last 16 elements again: min and max do not mind repeats.
      if (k < n) stats16_add<SYM>(a, load16_bits<T, ZERO_NF>(src, b + n - 16));
    } else {
      // A short group, padded with its first element.
      alignas(32) uint16_t t[16];
      std::memcpy(t, src + 2 * b, size_t(2 * n));
      for (int64_t q = n; q < 16; ++q) t[q] = t[0];
      stats16_add<SYM>(a, load16_bits<T, ZERO_NF>(reinterpret_cast<const uint8_t*>(t), 0));
    }
    fold_stats16<SYM>(a, l, smax, umax, smin);
  }
  return finish_stats8x16<T, SYM, ZERO_NF>(smax, umax, smin, lo, hi);
}

// The same for 8 whole groups of G (a compile-time multiple of 16) elements
// back to back from x: the loops unroll completely.
template <DType T, bool SYM, bool ZERO_NF, int G>
QPACK_AVX2 inline bool row_stats16_fixed(const uint8_t* x, __m256* lo, __m256* hi) {
  static_assert(G % 16 == 0 && G >= 16, "whole 16-element vectors");
  __m128i smax[8], umax[8], smin[8];
  // Unrolled across groups, GCC hoists every load and spills them.
#pragma GCC unroll 1
  for (int l = 0; l < 8; ++l, x += 2 * G) {
    Stats16<SYM> a = stats16_empty<SYM>();
    for (int k = 0; k < G; k += 16) stats16_add<SYM>(a, load16_bits<T, ZERO_NF>(x, k));
    fold_stats16<SYM>(a, l, smax, umax, smin);
  }
  return finish_stats8x16<T, SYM, ZERO_NF>(smax, umax, smin, lo, hi);
}

// 8 contiguous groups (inner == 1) with linear indices p0..p0+lanes-1.
template <DType T, bool SYM, bool ZERO_NF, bool INTZ>
QPACK_AVX2 void row_groups(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                           const QuantBuffers& out, int64_t p0, int lanes, Failure* fail) {
  const uint8_t* const src = in.data;
  const int bits = s.bits;
  const int64_t bpg = L.bytes_per_group;
  const EncodeConsts ec = encode_consts(s);
  int64_t start[8], len[8];
  // One division per batch: (o, g) of the following groups step along.
  int64_t o = p0 / L.groups_per_axis, g = p0 % L.groups_per_axis;
  for (int l = 0; l < lanes; ++l) {
    start[l] = o * L.axis_len + g * L.group_size;
    len[l] = L.group_len(g);
    if (++g == L.groups_per_axis) {
      g = 0;
      ++o;
    }
  }
  __m256 vlo, vhi;
  if constexpr (T != DType::F32) {
    if (!row_stats16<T, SYM, ZERO_NF>(src, start, len, lanes, &vlo, &vhi)) {
      fail->nonfinite = true;
      return;
    }
  } else {
    alignas(32) float lo[8] = {}, hi[8] = {};
    for (int l = 0; l < lanes; ++l) {
      __m256 vlo = SYM ? _mm256_setzero_ps() : _mm256_set1_ps(__builtin_inff());
      __m256 vhi = _mm256_set1_ps(-__builtin_inff()), nan = _mm256_setzero_ps();
      // Two independent accumulator sets: min/max/add latency, not throughput,
      // would otherwise bound this loop.
      __m256 vlo2 = vlo, vhi2 = vhi, nan2 = nan;
      const int64_t n = len[l], b = start[l];
      int64_t k = 0;
      for (; k + 16 <= n; k += 16) {
        stats8<SYM>(load_x<T, ZERO_NF>(src, b + k), vlo, vhi, nan);
        stats8<SYM>(load_x<T, ZERO_NF>(src, b + k + 8), vlo2, vhi2, nan2);
      }
      for (; k + 8 <= n; k += 8) stats8<SYM>(load_x<T, ZERO_NF>(src, b + k), vlo, vhi, nan);
      vlo = SYM ? _mm256_max_ps(vlo, vlo2) : _mm256_min_ps(vlo, vlo2);
      vhi = _mm256_max_ps(vhi, vhi2);
      nan = _mm256_add_ps(nan, nan2);
      if (k < n) {
        // Tail: the remaining elements, padded by repeating the first element
        // of the group (neutral for min, max and max |x|).
        alignas(32) float t[8];
        for (int q = 0; q < 8; ++q) {
          float x = load_as_f32(src, in.dtype, uint64_t(b + (k + q < n ? k + q : 0)));
          if (ZERO_NF && !spec::is_finite_f32(x)) x = 0.0f;
          t[q] = x;
        }
        stats8<SYM>(_mm256_load_ps(t), vlo, vhi, nan);
      }
      if (!ZERO_NF && stats_nonfinite<SYM>(vlo, vhi, nan)) {
        for (int64_t q = 0; q < n; ++q)
          if (!spec::is_finite_f32(load_as_f32(src, in.dtype, uint64_t(b + q)))) {
            fail->nonfinite = true;
            return;
          }
        // Only the running sum overflowed: the group is finite after all.
      }
      lo[l] = SYM ? hmax8(vlo) : hmin8(vlo);
      hi[l] = hmax8(vhi);
    }
    vlo = _mm256_load_ps(lo);
    vhi = _mm256_load_ps(hi);
  }
  Params8 p;
  const int ov = params8(vlo, vhi, s, &p) & ((1 << lanes) - 1);
  if (ov) {
    fail->overflow_group = std::min(fail->overflow_group, p0 + __builtin_ctz(unsigned(ov)));
    return;
  }
  store_params8(out, p0, s, p, lanes);
  alignas(32) float zero[8], inv[8], scale[8];
  alignas(32) int32_t add[8];
  _mm256_store_ps(zero, p.zero);
  _mm256_store_si256(reinterpret_cast<__m256i*>(add), p.add);
  _mm256_store_ps(inv, p.inv);
  _mm256_store_ps(scale, p.scale);
  for (int l = 0; l < lanes; ++l) {
    Params8 gp8;
    gp8.zero = _mm256_set1_ps(zero[l]);
    gp8.add = _mm256_set1_epi32(add[l]);
    gp8.inv = _mm256_set1_ps(inv[l]);
    uint8_t* dst = out.codes + (p0 + l) * bpg;
    const int64_t n = len[l], b = start[l];
    int64_t k = 0;
    if (bits != 3) {
      for (; k + 32 <= n; k += 32) {
        const __m256i c =
            codes32<SYM, INTZ>(load_x<T, ZERO_NF>(src, b + k), load_x<T, ZERO_NF>(src, b + k + 8),
                               load_x<T, ZERO_NF>(src, b + k + 16),
                               load_x<T, ZERO_NF>(src, b + k + 24), gp8, gp8, gp8, gp8, ec);
        pack32(c, bits, dst + k * bits / 8);
      }
    }
    const int64_t done = k * bits / 8;
    if (done < bpg) std::memset(dst + done, 0, size_t(bpg - done));
    if (k < n) {
      spec::GroupParams gp;
      gp.scale = scale[l];
      gp.zero = zero[l];
      gp.inv = inv[l];
      for (; k < n; ++k) {
        float x = load_as_f32(src, in.dtype, uint64_t(b + k));
        if (!spec::is_finite_f32(x)) x = 0.0f;
        spec::put_code(dst, 1, k, bits,
                       SYM    ? spec::encode_sym(x, gp, bits)
                       : INTZ ? spec::encode_asym_int(x, gp, bits)
                              : spec::encode_asym(x, gp, bits));
      }
    }
  }
}

// 8 whole groups of G contiguous 16-bit elements (inner == 1, G a multiple
// of 32, every group full), starting with group p0: row_groups without the
// per-group bookkeeping, for the layout of every axis -1 weight.
template <DType T, bool SYM, bool ZERO_NF, int BITS, bool INTZ>
QPACK_AVX2 void row_full(const uint8_t* src, int64_t G, const QuantScheme& s,
                         const QuantBuffers& out, int64_t p0, Failure* fail) {
  const uint8_t* const x0 = src + 2 * p0 * G;
  __m256 vlo, vhi;
  bool finite;
  if (G == 64) {
    finite = row_stats16_fixed<T, SYM, ZERO_NF, 64>(x0, &vlo, &vhi);
  } else if (G == 128) {
    finite = row_stats16_fixed<T, SYM, ZERO_NF, 128>(x0, &vlo, &vhi);
  } else {
    int64_t start[8], len[8];
    for (int l = 0; l < 8; ++l) {
      start[l] = (p0 + l) * G;
      len[l] = G;
    }
    finite = row_stats16<T, SYM, ZERO_NF>(src, start, len, 8, &vlo, &vhi);
  }
  if (!finite) {
    fail->nonfinite = true;
    return;
  }
  Params8 p;
  if (const int ov = params8(vlo, vhi, s, &p)) {
    fail->overflow_group = std::min(fail->overflow_group, p0 + __builtin_ctz(unsigned(ov)));
    return;
  }
  store_params8(out, p0, s, p, 8);
  const EncodeConsts ec = encode_consts(s);
  const uint8_t* x = x0;
  uint8_t* dst = out.codes + p0 * (G * BITS / 8);
  for (int l = 0; l < 8; ++l) {
    Params8 gp;
    const __m256i lane = _mm256_set1_epi32(l);
    gp.zero = _mm256_permutevar8x32_ps(p.zero, lane);
    gp.add = _mm256_permutevar8x32_epi32(p.add, lane);
    gp.inv = _mm256_permutevar8x32_ps(p.inv, lane);
    int64_t k = 0;
    for (; k + 64 <= G; k += 64, x += 128, dst += 8 * BITS) {
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF, INTZ>(x, gp, gp, gp, gp, ec), dst);
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF, INTZ>(x + 64, gp, gp, gp, gp, ec), dst + 4 * BITS);
    }
    if (k < G) {  // G = 32 (mod 64)
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF, INTZ>(x, gp, gp, gp, gp, ec), dst);
      x += 64;
      dst += 4 * BITS;
    }
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void row_full_bits(const uint8_t* src, int64_t G, const QuantScheme& s,
                                     NonFinitePolicy policy, const QuantBuffers& out, int64_t p0,
                                     Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z)
      row_full<T, true, true, BITS, false>(src, G, s, out, p0, f);
    else
      row_full<T, true, false, BITS, false>(src, G, s, out, p0, f);
  } else if (has_integer_zero(s)) {
    if (z)
      row_full<T, false, true, BITS, true>(src, G, s, out, p0, f);
    else
      row_full<T, false, false, BITS, true>(src, G, s, out, p0, f);
  } else {
    if (z)
      row_full<T, false, true, BITS, false>(src, G, s, out, p0, f);
    else
      row_full<T, false, false, BITS, false>(src, G, s, out, p0, f);
  }
}

template <DType T>
QPACK_AVX2 inline void row_groups_dispatch(const QuantInput& in, const GroupLayout& L,
                                           const QuantScheme& s, NonFinitePolicy policy,
                                           const QuantBuffers& out, int64_t p0, int lanes,
                                           Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z)
      row_groups<T, true, true, false>(in, L, s, out, p0, lanes, f);
    else
      row_groups<T, true, false, false>(in, L, s, out, p0, lanes, f);
  } else if (has_integer_zero(s)) {
    if (z)
      row_groups<T, false, true, true>(in, L, s, out, p0, lanes, f);
    else
      row_groups<T, false, false, true>(in, L, s, out, p0, lanes, f);
  } else {
    if (z)
      row_groups<T, false, true, false>(in, L, s, out, p0, lanes, f);
    else
      row_groups<T, false, false, false>(in, L, s, out, p0, lanes, f);
  }
}

}  // namespace
}  // namespace qpack::cpu
