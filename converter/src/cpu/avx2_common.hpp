// The AVX2+F16C building blocks of the CPU quantizer (quant_cpu.cpp): loads
// and conversions, the vector form of the group-parameter and encode steps
// of qpack/spec/group_params.hpp, code packing, and the 16-bit integer
// statistics (Stats16), and the steps the methods share (nearest codes,
// the encode, the binary64 error terms). Internal to converter/src; included
// by the cpu/quant_*_avx2.hpp kernels, compiled in quant_cpu.cpp and
// quant_two_level.cpp.
#pragma once

#include <immintrin.h>

#include <climits>
#include <cstdint>
#include <cstring>

#include "qpack/converter/quantize.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/group_params.hpp"

// Internal linkage: each translation unit that includes this header gets its
// own copy (every function is inline or a template).
namespace qpack::cpu {
namespace {

// Errors found inside a parallel region; thrown after it.
struct Failure {
  bool nonfinite = false;
  int64_t overflow_group = INT64_MAX;
};

// ---------------------------------------------------------------- AVX2 ----
#define QPACK_AVX2 __attribute__((target("avx2,f16c")))

template <DType T>
QPACK_AVX2 inline __m256 load8(const uint8_t* base, int64_t elem) {
  if constexpr (T == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * elem)));
  } else if constexpr (T == DType::BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * elem));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(base + 4 * elem));
  }
}

// Lanes holding NaN or +-Inf.
QPACK_AVX2 inline __m256 nonfinite_mask(__m256 x) {
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  return _mm256_cmp_ps(ax, _mm256_set1_ps(__builtin_inff()), _CMP_NLT_UQ);
}

// Rounds 8 floats to the scale dtype: returns the rounded values as float32
// and (F16/BF16) their 16-bit patterns.
QPACK_AVX2 inline __m256 round_to_scale(__m256 v, DType sd, __m128i* bits16) {
  if (sd == DType::F16) {
    *bits16 = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtph_ps(*bits16);
  }
  if (sd == DType::BF16) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    *bits16 = _mm256_castsi256_si128(packed);
    return _mm256_castsi256_ps(_mm256_slli_epi32(r, 16));
  }
  *bits16 = _mm_setzero_si128();
  return v;
}

QPACK_AVX2 inline __m256 finite_mask(__m256 v) {
  const __m256 av = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_cmp_ps(av, _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ);
}

// Group parameters of 8 groups at once (spec::params_asym, params_asym_int,
// params_sym, lane-wise). Returns the lanes whose scale or zero overflowed.
// `zero` is the stored zero-point (M, or the integer z as a float); `add`
// is z as int32 (integer rule only). The asymmetric encode is
// rint(fl(fl(x - M) * inv)) (float rule) or rint(fl(x * inv)) + z (integer
// rule: round first, then add z in integers, as encode_asym_int); kernels
// pick one at compile time (INTZ), so that the float rule's loops keep their
// registers.
struct Params8 {
  __m256 scale, zero, inv;
  __m256i add;
  __m128i scale16, zero16;
};

__attribute__((always_inline)) QPACK_AVX2 inline int params8(__m256 mn_or_amax, __m256 mx,
                                                             const QuantScheme& s, Params8* p) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 s32;
  int overflow;
  p->zero16 = _mm_setzero_si128();  // set below by every rule; said here for GCC's flow analysis
  if (s.symmetric) {
    s32 = _mm256_div_ps(mn_or_amax, _mm256_set1_ps(float(qmax_sym(s.bits))));
    p->scale = round_to_scale(s32, s.scale_dtype, &p->scale16);
    p->zero = zero;
    p->zero16 = _mm_setzero_si128();
    overflow = ~_mm256_movemask_ps(finite_mask(p->scale)) & 0xff;
  } else if (has_integer_zero(s)) {
    // min(mn, +0) and max(mx, +0): minps/maxps return the second operand
    // unless the first is strictly smaller/larger, so -0 gives +0 as well.
    const __m256 mn = _mm256_add_ps(_mm256_min_ps(mn_or_amax, zero), zero);
    const __m256 mxc = _mm256_add_ps(_mm256_max_ps(mx, zero), zero);
    s32 = _mm256_div_ps(_mm256_sub_ps(mxc, mn), _mm256_set1_ps(float(qmax_asym(s.bits))));
    p->scale = round_to_scale(s32, s.scale_dtype, &p->scale16);
    p->zero = _mm256_xor_ps(mn, _mm256_set1_ps(-0.0f));  // -mn, until z is known (below)
    overflow = ~_mm256_movemask_ps(finite_mask(p->scale)) & 0xff;
  } else {
    const __m256 mn = _mm256_add_ps(mn_or_amax, zero);  // -0 -> +0
    const __m256 mxc = _mm256_add_ps(mx, zero);
    s32 = _mm256_div_ps(_mm256_sub_ps(mxc, mn), _mm256_set1_ps(float(qmax_asym(s.bits))));
    p->scale = round_to_scale(s32, s.scale_dtype, &p->scale16);
    p->zero = round_to_scale(mn, s.scale_dtype, &p->zero16);
    overflow =
        ~_mm256_movemask_ps(_mm256_and_ps(finite_mask(p->scale), finite_mask(p->zero))) & 0xff;
  }
  // Degenerate (S < 2^-126, or overflowed): S = +0, inv = 0.
  const __m256 ok =
      _mm256_and_ps(finite_mask(p->scale),
                    _mm256_cmp_ps(p->scale, _mm256_set1_ps(spec::kMinNormalF32), _CMP_GE_OQ));
  p->scale = _mm256_and_ps(p->scale, ok);
  p->inv = _mm256_and_ps(
      _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_blendv_ps(_mm256_set1_ps(1.0f), p->scale, ok)),
      ok);
  const __m128i ok16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(ok)),
                                       _mm256_extracti128_si256(_mm256_castps_si256(ok), 1));
  p->scale16 = _mm_and_si128(p->scale16, ok16);
  if (!s.symmetric && has_integer_zero(s)) {
    // z = min(max(rint(fl(-mn * inv)), +0), Q); -0 from mn = +0 becomes +0.
    const __m256 t = _mm256_round_ps(_mm256_mul_ps(p->zero, p->inv),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 z =
        _mm256_min_ps(_mm256_max_ps(t, zero), _mm256_set1_ps(float(qmax_asym(s.bits))));
    p->zero = round_to_scale(z, s.scale_dtype, &p->zero16);  // exact: an integer <= 255
    p->add = _mm256_cvttps_epi32(z);
  } else {
    p->add = _mm256_setzero_si256();
  }
  return overflow;
}

__attribute__((always_inline)) QPACK_AVX2 inline void store_params8(const QuantBuffers& out,
                                                                    int64_t index,
                                                                    const QuantScheme& s,
                                                                    const Params8& p, int lanes) {
  if (lanes == 8) {  // the common case: fixed-size stores, no memcpy calls
    if (s.scale_dtype == DType::F32) {
      _mm256_storeu_ps(reinterpret_cast<float*>(out.scales + 4 * index), p.scale);
      if (!s.symmetric) _mm256_storeu_ps(reinterpret_cast<float*>(out.zeros + 4 * index), p.zero);
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out.scales + 2 * index), p.scale16);
      if (!s.symmetric)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out.zeros + 2 * index), p.zero16);
    }
    return;
  }
  if (s.scale_dtype == DType::F32) {
    alignas(32) float sc[8], ze[8];
    _mm256_store_ps(sc, p.scale);
    _mm256_store_ps(ze, p.zero);
    std::memcpy(out.scales + 4 * index, sc, size_t(4 * lanes));
    if (!s.symmetric) std::memcpy(out.zeros + 4 * index, ze, size_t(4 * lanes));
  } else {
    alignas(16) uint16_t sc[8], ze[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(sc), p.scale16);
    _mm_store_si128(reinterpret_cast<__m128i*>(ze), p.zero16);
    std::memcpy(out.scales + 2 * index, sc, size_t(2 * lanes));
    if (!s.symmetric) std::memcpy(out.zeros + 2 * index, ze, size_t(2 * lanes));
  }
}

// Constants of one scheme, hoisted out of the loops (stores through uint8_t*
// may alias anything, so the compiler would otherwise reload them).
struct EncodeConsts {
  __m256i lo, hi, offset;
  __m256i lo8, hi8;  // the same clamp on stored codes, per byte
};

QPACK_AVX2 inline EncodeConsts encode_consts(const QuantScheme& s) {
  EncodeConsts c;
  if (s.symmetric) {
    c.lo = _mm256_set1_epi32(-qmax_sym(s.bits));
    c.hi = _mm256_set1_epi32(qmax_sym(s.bits));
    c.offset = _mm256_set1_epi32(sym_offset(s.bits));
    c.lo8 = _mm256_set1_epi8(char(sym_offset(s.bits) - qmax_sym(s.bits)));
    c.hi8 = _mm256_set1_epi8(char(sym_offset(s.bits) + qmax_sym(s.bits)));
  } else {
    c.lo = _mm256_setzero_si256();
    c.hi = _mm256_set1_epi32(qmax_asym(s.bits));
    c.offset = _mm256_setzero_si256();
    c.lo8 = _mm256_setzero_si256();
    c.hi8 = _mm256_set1_epi8(char(qmax_asym(s.bits)));
  }
  return c;
}

// Codes of 8 elements (int32 lanes) given their group's parameters.
// vcvtps2dq rounds to nearest even (the default MXCSR mode, which qpack never
// changes): the same as rint() followed by the clamp done in integers, since
// |t| stays far below 2^31 for elements of the group.
template <bool SYM, bool INTZ = false>
QPACK_AVX2 inline __m256i encode8(__m256 x, const Params8& p, const EncodeConsts& c) {
  if constexpr (SYM) {
    const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(x, p.inv));
    return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(t, c.lo), c.hi), c.offset);
  } else if constexpr (INTZ) {
    const __m256i t = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x, p.inv)), p.add);
    return _mm256_min_epi32(_mm256_max_epi32(t, c.lo), c.hi);
  } else {
    const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x, p.zero), p.inv));
    return _mm256_min_epi32(_mm256_max_epi32(t, c.lo), c.hi);
  }
}

// Low bytes of 4x8 int32 lanes, in lane order, as 32 contiguous bytes.
QPACK_AVX2 inline __m256i low_bytes32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
  const __m256i m = _mm256_set1_epi32(0xff);
  const __m256i p01 = _mm256_packus_epi32(_mm256_and_si256(a0, m), _mm256_and_si256(a1, m));
  const __m256i p23 = _mm256_packus_epi32(_mm256_and_si256(a2, m), _mm256_and_si256(a3, m));
  const __m256i b = _mm256_packus_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Stored codes of 32 elements as 32 bytes in element order. The clamp of the
// spec is applied after narrowing: vpackusdw/vpackuswb saturate negatives to
// 0 (and |t| is far below 2^15 for a group's own elements), then a byte
// min/max clamps to the code range. Equal to encode8 + low_bytes32, with
// fewer operations per element.
template <bool SYM, bool INTZ = false>
QPACK_AVX2 inline __m256i codes32(__m256 x0, __m256 x1, __m256 x2, __m256 x3, const Params8& p0,
                                  const Params8& p1, const Params8& p2, const Params8& p3,
                                  const EncodeConsts& c) {
  __m256i t0, t1, t2, t3;
  if constexpr (SYM) {
    t0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x0, p0.inv)), c.offset);
    t1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x1, p1.inv)), c.offset);
    t2 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x2, p2.inv)), c.offset);
    t3 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x3, p3.inv)), c.offset);
  } else {
    // integer rule: + z; a sum above 255 saturates below, then clamps to Q.
    if constexpr (INTZ) {
      t0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x0, p0.inv)), p0.add);
      t1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x1, p1.inv)), p1.add);
      t2 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x2, p2.inv)), p2.add);
      t3 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x3, p3.inv)), p3.add);
    } else {
      t0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x0, p0.zero), p0.inv));
      t1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x1, p1.zero), p1.inv));
      t2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x2, p2.zero), p2.inv));
      t3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x3, p3.zero), p3.inv));
    }
  }
  __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(t0, t1), _mm256_packus_epi32(t2, t3));
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  if constexpr (SYM) b = _mm256_max_epu8(b, c.lo8);
  return _mm256_min_epu8(b, c.hi8);
}

// One element vector of the source, with NaN/Inf replaced by +0 when the
// policy asks for it.
template <DType T, bool ZERO_NF>
QPACK_AVX2 inline __m256 load_x(const uint8_t* base, int64_t elem) {
  __m256 x = load8<T>(base, elem);
  if constexpr (ZERO_NF) x = _mm256_andnot_ps(nonfinite_mask(x), x);
  return x;
}

// Statistics update of one vector: min/max (asymmetric) or max |x|
// (symmetric). NaN is recorded in `nan`; +-Inf shows in the statistics
// themselves and is caught after the loop.
template <bool SYM>
QPACK_AVX2 inline void stats8(__m256 x, __m256& lo, __m256& hi, __m256& sum) {
  // A running sum is NaN or infinite after any NaN or Inf (one add, not a
  // compare and an or). It can also overflow on huge finite F32/BF16 values:
  // a flagged block is re-checked exactly before anything is reported.
  sum = _mm256_add_ps(sum, x);
  if constexpr (SYM) {
    lo = _mm256_max_ps(lo, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x));
  } else {
    lo = _mm256_min_ps(lo, x);
    hi = _mm256_max_ps(hi, x);
  }
}

// True when a NaN was seen or a statistic is infinite.
template <bool SYM>
QPACK_AVX2 inline bool stats_nonfinite(__m256 lo, __m256 hi, __m256 sum) {
  __m256 bad = _mm256_or_ps(nonfinite_mask(sum), nonfinite_mask(lo));
  if constexpr (!SYM) bad = _mm256_or_ps(bad, nonfinite_mask(hi));
  return _mm256_movemask_ps(bad) != 0;
}

// ------------------------------------------- 16-bit statistics, in integers
// F16 and BF16 are sign-magnitude: as signed int16, non-negative values are
// ordered like their floats; as unsigned, every negative value (including
// -0) sits above every non-negative one and negatives grow with magnitude.
// So three integer accumulators give a group's exact float min and max
// without converting anything:
//   smax = max signed:   the true max if any x >= +0;
//   umax = max unsigned: the true min if any x is negative;
//   smin = min signed:   the true min if none is negative, the true max if
//                        all are.
// NaN and Inf also fall out: a positive one is the largest signed value, a
// negative one the largest unsigned, so the group holds one exactly when
// smax > +max_finite (signed) or umax > -max_finite (unsigned). Symmetric
// groups need only max(|x| bits), where the same threshold applies.
template <DType T>
struct Bits16 {
  static constexpr uint16_t kMaxFinite = T == DType::F16 ? 0x7bff : 0x7f7f;
};

template <bool SYM>
struct Stats16 {
  __m256i smax, umax, smin;  // SYM: smax holds max(|x| bits)
};

// The accumulators before any element: the identities of their operations
// (starting from a first element instead makes the compiler copy registers
// around the loop).
template <bool SYM>
QPACK_AVX2 inline Stats16<SYM> stats16_empty() {
  Stats16<SYM> a;
  a.smax = SYM ? _mm256_setzero_si256() : _mm256_set1_epi16(short(0x8000));
  a.umax = _mm256_setzero_si256();
  a.smin = _mm256_set1_epi16(0x7fff);
  return a;
}
template <bool SYM>
QPACK_AVX2 inline void stats16_add(Stats16<SYM>& a, __m256i v) {
  if constexpr (SYM) {
    a.smax = _mm256_max_epu16(a.smax, _mm256_and_si256(v, _mm256_set1_epi16(0x7fff)));
  } else {
    a.smax = _mm256_max_epi16(a.smax, v);
    a.umax = _mm256_max_epu16(a.umax, v);
    a.smin = _mm256_min_epi16(a.smin, v);
  }
}

// 16 raw 16-bit elements; with ZERO_NF, NaN and +-Inf become +0.
template <DType T, bool ZERO_NF>
QPACK_AVX2 inline __m256i load16_bits(const uint8_t* base, int64_t elem) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 2 * elem));
  if constexpr (ZERO_NF) {
    const __m256i mag = _mm256_and_si256(v, _mm256_set1_epi16(0x7fff));
    v = _mm256_andnot_si256(_mm256_cmpgt_epi16(mag, _mm256_set1_epi16(Bits16<T>::kMaxFinite)), v);
  }
  return v;
}

// Per lane: the group's min and max bit patterns (SYM: max |x| in `lo`) and
// a mask of lanes that saw NaN or Inf.
template <DType T, bool SYM>
QPACK_AVX2 inline void stats16_finish(const Stats16<SYM>& a, __m256i* lo, __m256i* hi,
                                      __m256i* bad) {
  const __m256i top = _mm256_set1_epi16(Bits16<T>::kMaxFinite);
  if constexpr (SYM) {
    *lo = a.smax;
    *hi = a.smax;
    *bad = _mm256_cmpgt_epi16(a.smax, top);
  } else {
    *lo = _mm256_blendv_epi8(a.smin, a.umax, _mm256_srai_epi16(a.umax, 15));
    *hi = _mm256_blendv_epi8(a.smax, a.smin, _mm256_srai_epi16(a.smax, 15));
    // umax > (0x8000 | max_finite) as unsigned  <=>  max_epu16 differs from the bound.
    const __m256i neg_top = _mm256_set1_epi16(short(0x8000 | Bits16<T>::kMaxFinite));
    const __m256i neg_bad = _mm256_andnot_si256(
        _mm256_cmpeq_epi16(_mm256_max_epu16(a.umax, neg_top), neg_top), _mm256_set1_epi16(-1));
    *bad = _mm256_or_si256(_mm256_cmpgt_epi16(a.smax, top), neg_bad);
  }
}

// 8 bit patterns (the low or high half of a vector of 16) as float32.
template <DType T>
QPACK_AVX2 inline __m256 bits16_to_ps(__m128i h) {
  if constexpr (T == DType::F16) {
    return _mm256_cvtph_ps(h);
  } else {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// 32 groups side by side: columns i0..i0+31 of group row (o, g).
// How many blocks ahead of the statistics loads the software prefetch runs
// (each of a group's rows is its own stream, too many for the hardware
// prefetcher). Measured: 1 block ahead was clearly slower than 2, and 3 or 4
// slightly slower (docs/performance.md).
constexpr int kRunAhead = 2;

// Statistics of the 32 columns at x (a = columns 0-15, b = 16-31).
template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline void run_stats(const uint8_t* x, int64_t stride, int64_t len, bool prefetch,
                                 Stats16<SYM>& a, Stats16<SYM>& b) {
  a = stats16_empty<SYM>();
  b = stats16_empty<SYM>();
  for (int64_t k = 0; k < len; ++k, x += stride) {
    if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(x + 64 * kRunAhead), _MM_HINT_T0);
    stats16_add<SYM>(a, load16_bits<T, ZERO_NF>(x, 0));
    stats16_add<SYM>(b, load16_bits<T, ZERO_NF>(x, 16));
  }
}

// Parameters of a block from its statistics; stores them. False (with the
// failure recorded) when the block holds NaN/Inf or overflows.
template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline bool run_params(const Stats16<SYM>& a, const Stats16<SYM>& b,
                                  const QuantScheme& s, const QuantBuffers& out, int64_t pi,
                                  Params8* p, Failure* fail) {
  __m256i lo_a, hi_a, bad_a, lo_b, hi_b, bad_b;
  stats16_finish<T, SYM>(a, &lo_a, &hi_a, &bad_a);
  stats16_finish<T, SYM>(b, &lo_b, &hi_b, &bad_b);
  if (!ZERO_NF &&
      !_mm256_testz_si256(_mm256_or_si256(bad_a, bad_b), _mm256_or_si256(bad_a, bad_b))) {
    fail->nonfinite = true;
    return false;
  }
  const int ov = params8(bits16_to_ps<T>(_mm256_castsi256_si128(lo_a)),
                         bits16_to_ps<T>(_mm256_castsi256_si128(hi_a)), s, &p[0]) |
                 params8(bits16_to_ps<T>(_mm256_extracti128_si256(lo_a, 1)),
                         bits16_to_ps<T>(_mm256_extracti128_si256(hi_a, 1)), s, &p[1])
                     << 8 |
                 params8(bits16_to_ps<T>(_mm256_castsi256_si128(lo_b)),
                         bits16_to_ps<T>(_mm256_castsi256_si128(hi_b)), s, &p[2])
                     << 16 |
                 params8(bits16_to_ps<T>(_mm256_extracti128_si256(lo_b, 1)),
                         bits16_to_ps<T>(_mm256_extracti128_si256(hi_b, 1)), s, &p[3])
                     << 24;
  if (ov) {
    fail->overflow_group = std::min(fail->overflow_group, pi + __builtin_ctz(unsigned(ov)));
    return false;
  }
  for (int q = 0; q < 4; ++q) store_params8(out, pi + 8 * q, s, p[q], 8);
  return true;
}

// Stored codes of the 32 elements at x (one row of a column block).
template <DType T, bool SYM, bool ZERO_NF, bool INTZ = false>
QPACK_AVX2 inline __m256i row_codes32(const uint8_t* x, const Params8& p0, const Params8& p1,
                                      const Params8& p2, const Params8& p3,
                                      const EncodeConsts& ec) {
  return codes32<SYM, INTZ>(load_x<T, ZERO_NF>(x, 0), load_x<T, ZERO_NF>(x, 8),
                            load_x<T, ZERO_NF>(x, 16), load_x<T, ZERO_NF>(x, 24), p0, p1, p2, p3,
                            ec);
}

template <int BITS>
QPACK_AVX2 inline void pack32(__m256i c, uint8_t* dst) {
  if constexpr (BITS == 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), c);
  } else if constexpr (BITS == 4) {  // byte k = c[2k] | c[2k+1] << 4, as c[2k]*1 + c[2k+1]*16
    __m256i t = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x1001));
    t = _mm256_permute4x64_epi64(_mm256_packus_epi16(t, t), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(t));
  } else {  // BITS == 2: byte k = c[4k] | c[4k+1] << 2 | c[4k+2] << 4 | c[4k+3] << 6
    __m256i t = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x0401));  // c0 + 4 c1
    t = _mm256_madd_epi16(t, _mm256_set1_epi32(0x00100001));         // + 16 (c2 + 4 c3)
    t = _mm256_packus_epi32(t, t);
    t = _mm256_packus_epi16(t, t);
    const uint32_t lo = uint32_t(_mm256_extract_epi32(t, 0)),
                   hi = uint32_t(_mm256_extract_epi32(t, 4));
    std::memcpy(dst, &lo, 4);
    std::memcpy(dst + 4, &hi, 4);
  }
}
QPACK_AVX2 inline void pack32(__m256i c, int bits, uint8_t* dst) {
  if (bits == 8)
    pack32<8>(c, dst);
  else if (bits == 4)
    pack32<4>(c, dst);
  else
    pack32<2>(c, dst);
}

QPACK_AVX2 inline float hmin8(__m256 v) {
  __m256 m = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
  m = _mm256_min_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
  m = _mm256_min_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
  return _mm256_cvtss_f32(m);
}
QPACK_AVX2 inline float hmax8(__m256 v) {
  __m256 m = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
  return _mm256_cvtss_f32(m);
}

struct MaxS16 {
  QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_max_epi16(x, y); }
};
struct MaxU16 {
  QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_max_epu16(x, y); }
};
struct MinS16 {
  QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_min_epi16(x, y); }
};

// Lane g of the result: the reduction by `op` of the 8 lanes of v[g]. A
// transpose folded into the reduction: 21 operations for 8 groups, against
// 6 per group for separate horizontal reductions.
template <class Op>
QPACK_AVX2 inline __m128i reduce8x8_epi16(const __m128i v[8], Op op) {
  __m128i t[4];
  for (int i = 0; i < 4; ++i)
    t[i] =
        op(_mm_unpacklo_epi16(v[2 * i], v[2 * i + 1]), _mm_unpackhi_epi16(v[2 * i], v[2 * i + 1]));
  const __m128i u0 = op(_mm_unpacklo_epi32(t[0], t[1]), _mm_unpackhi_epi32(t[0], t[1]));
  const __m128i u1 = op(_mm_unpacklo_epi32(t[2], t[3]), _mm_unpackhi_epi32(t[2], t[3]));
  return op(_mm_unpacklo_epi64(u0, u1), _mm_unpackhi_epi64(u0, u1));
}

// Folds one group's 16-lane accumulators to 8 lanes, into slot l.
template <bool SYM>
QPACK_AVX2 inline void fold_stats16(const Stats16<SYM>& a, int l, __m128i* smax, __m128i* umax,
                                    __m128i* smin) {
  const __m128i lo_h = _mm256_castsi256_si128(a.smax), hi_h = _mm256_extracti128_si256(a.smax, 1);
  if constexpr (SYM) {
    smax[l] = _mm_max_epu16(lo_h, hi_h);
  } else {
    smax[l] = _mm_max_epi16(lo_h, hi_h);
    umax[l] = _mm_max_epu16(_mm256_castsi256_si128(a.umax), _mm256_extracti128_si256(a.umax, 1));
    smin[l] = _mm_min_epi16(_mm256_castsi256_si128(a.smin), _mm256_extracti128_si256(a.smin, 1));
  }
}

// The 8 slots' statistics as float32 min/max (SYM: max |x|) per lane.
// Returns false when a lane saw NaN or Inf (never with ZERO_NF, which
// replaced them).

// ------------------------------------------- the methods' common steps ----
// Shared by the search (quant_search_avx2.hpp) and two-level scales
// (quant_two_level_avx2.hpp). Only the decode's fma is fused, as the spec
// says; everything else is a single rounded operation (-ffp-contract=off).
#define QPACK_AVX2_FMA __attribute__((target("avx2,f16c,fma")))

// ggml's nearest_int on 8 lanes: NaN -> 0, else the low 23 bits of
// fl(v + 1.5 * 2^23) minus 2^22; then clamped to [0, nmax].
QPACK_AVX2 inline __m256i search_code8(__m256 v, __m256i nmax) {
  const __m256 t = _mm256_add_ps(v, _mm256_set1_ps(12582912.0f));
  __m256i r =
      _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x7fffff)),
                       _mm256_set1_epi32(0x400000));
  r = _mm256_and_si256(r, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_ORD_Q)));
  return _mm256_max_epi32(_mm256_min_epi32(r, nmax), _mm256_setzero_si256());
}

// encode_asym on 8 lanes, the clamp done in float as the spec does it
// (t < 0 -> 0, t > Q -> Q), then converted.
QPACK_AVX2 inline __m256 encode_asym8(__m256 x, __m256 zero, __m256 inv, __m256 q) {
  const __m256 t = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(x, zero), inv),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), q);  // max: +0 for -0 and NaN
}

// Adds sum over k of (fl(fma(q_k, S, M)) - x_k)^2 in binary64 to e_lo/e_hi
// (lanes 0-3, 4-7) for one vector of lanes: group_error's terms.
QPACK_AVX2_FMA inline void error_terms8(__m256 x, __m256 zero, __m256 inv, __m256 scale, __m256 q,
                                        __m256d& e_lo, __m256d& e_hi) {
  const __m256 xh = _mm256_fmadd_ps(encode_asym8(x, zero, inv, q), scale, zero);
  const __m256d d_lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xh)),
                                     _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
  const __m256d d_hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1)),
                                     _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
  e_lo = _mm256_add_pd(e_lo, _mm256_mul_pd(d_lo, d_lo));
  e_hi = _mm256_add_pd(e_hi, _mm256_mul_pd(d_hi, d_hi));
}

}  // namespace
}  // namespace qpack::cpu
