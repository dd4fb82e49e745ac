// The fast CPU path: OpenMP threads over blocks of groups, AVX2+F16C inside,
// selected at run time (machines differ; the build targets plain x86-64).
//
// Vector kernels cover the layouts that matter:
//  - "column blocks" (inner >= 32, e.g. axis 0 of a [rows, cols] weight):
//    32 adjacent groups side by side, one SIMD lane per group, so loads,
//    statistics, codes and the byte planes of the output are all contiguous;
//  - "row groups" (inner == 1, e.g. axis -1): each group is contiguous; a
//    batch of 8 groups shares one vector evaluation of the scale arithmetic,
//    and "row_full" does the same without per-group bookkeeping when every
//    group is whole and a multiple of 32 elements long.
// Everything else (column tails, 1 < inner < 32, CPUs without AVX2) goes
// through detail::quantize_group, the reference's own per-group routine.
//
// F16 and BF16 statistics never convert: min and max come from three integer
// max/min operations on the raw bits (see Stats16), which also reveal NaN and
// Inf. Each element is converted to float32 once, in the encoding pass.
//
// Bit-exactness with the reference rests on: the same IEEE operations in the
// same order (sub, mul, div, round-to-nearest-even; -ffp-contract=off),
// min/max being exact and order-independent for finite values (with -0
// canonicalised), and F16C's vcvtps2ph rounding to nearest even exactly as
// f32_to_f16_rne does.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "qpack/format/error.hpp"
#include "quant_detail.hpp"
#include "qpack/spec/group_params.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"

namespace qpack {
namespace {

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return ok;
}

int resolve_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Errors found inside a parallel region; thrown after it.
struct Failure {
  bool nonfinite = false;
  int64_t overflow_group = INT64_MAX;
};

void raise(const Failure& f, const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
           int threads) {
  if (f.nonfinite) {
    const int64_t bad = detail::find_first_nonfinite(in.data, in.dtype, L.num_elements(), threads);
    if (bad >= 0) detail::throw_nonfinite(in, L, bad);
  }
  if (f.overflow_group != INT64_MAX) detail::throw_range_overflow(in, L, s, f.overflow_group);
}

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

// Group parameters of 8 groups at once (qp_params_asym / qp_params_sym,
// lane-wise). Returns the lanes whose scale or zero overflowed.
struct Params8 {
  __m256 scale, zero, inv;
  __m128i scale16, zero16;
};

__attribute__((always_inline)) QPACK_AVX2 inline int params8(__m256 mn_or_amax, __m256 mx, const QuantScheme& s, Params8* p) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 s32;
  int overflow;
  if (s.symmetric) {
    s32 = _mm256_div_ps(mn_or_amax, _mm256_set1_ps(float(qmax_sym(s.bits))));
    p->scale = round_to_scale(s32, s.scale_dtype, &p->scale16);
    p->zero = zero;
    p->zero16 = _mm_setzero_si128();
    overflow = ~_mm256_movemask_ps(finite_mask(p->scale)) & 0xff;
  } else {
    const __m256 mn = _mm256_add_ps(mn_or_amax, zero);  // -0 -> +0
    const __m256 mxc = _mm256_add_ps(mx, zero);
    s32 = _mm256_div_ps(_mm256_sub_ps(mxc, mn), _mm256_set1_ps(float(qmax_asym(s.bits))));
    p->scale = round_to_scale(s32, s.scale_dtype, &p->scale16);
    p->zero = round_to_scale(mn, s.scale_dtype, &p->zero16);
    overflow = ~_mm256_movemask_ps(_mm256_and_ps(finite_mask(p->scale), finite_mask(p->zero))) & 0xff;
  }
  // Degenerate (S < 2^-126, or overflowed): S = +0, inv = 0.
  const __m256 ok = _mm256_and_ps(finite_mask(p->scale),
                                  _mm256_cmp_ps(p->scale, _mm256_set1_ps(spec::kMinNormalF32), _CMP_GE_OQ));
  p->scale = _mm256_and_ps(p->scale, ok);
  p->inv = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_blendv_ps(_mm256_set1_ps(1.0f), p->scale, ok)), ok);
  const __m128i ok16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(ok)),
                                       _mm256_extracti128_si256(_mm256_castps_si256(ok), 1));
  p->scale16 = _mm_and_si128(p->scale16, ok16);
  return overflow;
}

__attribute__((always_inline)) QPACK_AVX2 inline void store_params8(const QuantBuffers& out, int64_t index, const QuantScheme& s,
                                     const Params8& p, int lanes) {
  if (lanes == 8) {  // the common case: fixed-size stores, no memcpy calls
    if (s.scale_dtype == DType::F32) {
      _mm256_storeu_ps(reinterpret_cast<float*>(out.scales + 4 * index), p.scale);
      if (!s.symmetric) _mm256_storeu_ps(reinterpret_cast<float*>(out.zeros + 4 * index), p.zero);
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out.scales + 2 * index), p.scale16);
      if (!s.symmetric) _mm_storeu_si128(reinterpret_cast<__m128i*>(out.zeros + 2 * index), p.zero16);
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
template <bool SYM>
QPACK_AVX2 inline __m256i encode8(__m256 x, __m256 zero, __m256 inv, const EncodeConsts& c) {
  if constexpr (SYM) {
    const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(x, inv));
    return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(t, c.lo), c.hi), c.offset);
  } else {
    const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x, zero), inv));
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
template <bool SYM>
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
    t0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x0, p0.zero), p0.inv));
    t1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x1, p1.zero), p1.inv));
    t2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x2, p2.zero), p2.inv));
    t3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x3, p3.zero), p3.inv));
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
QPACK_AVX2 inline void stats16_finish(const Stats16<SYM>& a, __m256i* lo, __m256i* hi, __m256i* bad) {
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
// prefetcher). On the 2-core EPYC: 1 block 25% slower than 2, 3 and 4
// slightly slower.
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
QPACK_AVX2 inline bool run_params(const Stats16<SYM>& a, const Stats16<SYM>& b, const QuantScheme& s,
                                  const QuantBuffers& out, int64_t pi, Params8* p, Failure* fail) {
  __m256i lo_a, hi_a, bad_a, lo_b, hi_b, bad_b;
  stats16_finish<T, SYM>(a, &lo_a, &hi_a, &bad_a);
  stats16_finish<T, SYM>(b, &lo_b, &hi_b, &bad_b);
  if (!ZERO_NF && !_mm256_testz_si256(_mm256_or_si256(bad_a, bad_b), _mm256_or_si256(bad_a, bad_b))) {
    fail->nonfinite = true;
    return false;
  }
  const int ov =
      params8(bits16_to_ps<T>(_mm256_castsi256_si128(lo_a)), bits16_to_ps<T>(_mm256_castsi256_si128(hi_a)), s, &p[0]) |
      params8(bits16_to_ps<T>(_mm256_extracti128_si256(lo_a, 1)), bits16_to_ps<T>(_mm256_extracti128_si256(hi_a, 1)), s, &p[1]) << 8 |
      params8(bits16_to_ps<T>(_mm256_castsi256_si128(lo_b)), bits16_to_ps<T>(_mm256_castsi256_si128(hi_b)), s, &p[2]) << 16 |
      params8(bits16_to_ps<T>(_mm256_extracti128_si256(lo_b, 1)), bits16_to_ps<T>(_mm256_extracti128_si256(hi_b, 1)), s, &p[3]) << 24;
  if (ov) {
    fail->overflow_group = std::min(fail->overflow_group, pi + __builtin_ctz(unsigned(ov)));
    return false;
  }
  for (int q = 0; q < 4; ++q) store_params8(out, pi + 8 * q, s, p[q], 8);
  return true;
}

// Stored codes of the 32 elements at x (one row of a column block).
template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline __m256i row_codes32(const uint8_t* x, const Params8& p0, const Params8& p1,
                                      const Params8& p2, const Params8& p3, const EncodeConsts& ec) {
  return codes32<SYM>(load_x<T, ZERO_NF>(x, 0), load_x<T, ZERO_NF>(x, 8), load_x<T, ZERO_NF>(x, 16),
                      load_x<T, ZERO_NF>(x, 24), p0, p1, p2, p3, ec);
}

template <DType T, bool SYM, bool ZERO_NF, int BITS>
QPACK_AVX2 void column_block(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                             const QuantBuffers& out, int64_t o, int64_t g, int64_t i0,
                             Failure* fail) {
  const uint8_t* const src = in.data;
  const int64_t inner = L.inner, len = L.group_len(g), bpg = L.bytes_per_group;
  constexpr int bits = BITS;
  const int64_t row0 = (o * L.axis_len + g * L.group_size) * inner + i0;
  const EncodeConsts ec = encode_consts(s);

  // Each of the group's rows is a separate stream, too many for the hardware
  // prefetcher to follow: fetch this row's bytes for the block after next.
  constexpr int64_t kEsize = T == DType::F32 ? 4 : 2;
  const int64_t ahead = i0 + 96 <= inner ? 64 * kEsize : 0;
  const int64_t pi = (o * L.groups_per_axis + g) * inner + i0;
  Params8 p[4];
  if constexpr (T != DType::F32) {
    Stats16<SYM> a, b;
    run_stats<T, SYM, ZERO_NF>(src + row0 * kEsize, inner * kEsize, len, ahead != 0, a, b);
    if (!run_params<T, SYM, ZERO_NF>(a, b, s, out, pi, p, fail)) return;
  } else {
    __m256 lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3;
    lo0 = lo1 = lo2 = lo3 = SYM ? _mm256_setzero_ps() : _mm256_set1_ps(__builtin_inff());
    hi0 = hi1 = hi2 = hi3 = _mm256_set1_ps(-__builtin_inff());
    __m256 sum0 = _mm256_setzero_ps(), sum1 = sum0, sum2 = sum0, sum3 = sum0;
    for (int64_t k = 0, e = row0; k < len; ++k, e += inner) {
      if (ahead) _mm_prefetch(reinterpret_cast<const char*>(src + e * kEsize + ahead), _MM_HINT_T0);
      stats8<SYM>(load_x<T, ZERO_NF>(src, e), lo0, hi0, sum0);
      stats8<SYM>(load_x<T, ZERO_NF>(src, e + 8), lo1, hi1, sum1);
      stats8<SYM>(load_x<T, ZERO_NF>(src, e + 16), lo2, hi2, sum2);
      stats8<SYM>(load_x<T, ZERO_NF>(src, e + 24), lo3, hi3, sum3);
    }
    if (!ZERO_NF && (stats_nonfinite<SYM>(lo0, hi0, sum0) || stats_nonfinite<SYM>(lo1, hi1, sum1) ||
                     stats_nonfinite<SYM>(lo2, hi2, sum2) || stats_nonfinite<SYM>(lo3, hi3, sum3))) {
      for (int64_t k = 0, e = row0; k < len; ++k, e += inner)
        for (int64_t c = 0; c < 32; ++c)
          if (!spec::is_finite_f32(load_as_f32(src, in.dtype, uint64_t(e + c)))) {
            fail->nonfinite = true;
            return;
          }
      // Only the running sum overflowed: the block is finite after all.
    }
    const int ov = params8(lo0, hi0, s, &p[0]) | params8(lo1, hi1, s, &p[1]) << 8 |
                   params8(lo2, hi2, s, &p[2]) << 16 | params8(lo3, hi3, s, &p[3]) << 24;
    if (ov) {
      fail->overflow_group = std::min(fail->overflow_group, pi + __builtin_ctz(unsigned(ov)));
      return;
    }
    for (int q = 0; q < 4; ++q) store_params8(out, pi + 8 * q, s, p[q], 8);
  }
  const Params8 &p0 = p[0], &p1 = p[1], &p2 = p[2], &p3 = p[3];

  uint8_t* plane = out.codes + (o * L.groups_per_axis + g) * bpg * inner + i0;
  int64_t j = 0;
  if constexpr (BITS != 3) {
    // Byte plane j holds rows j*PER .. j*PER+PER-1, each row's 32 codes
    // shifted into place (codes < 2^BITS, so shifts stay inside each byte).
    constexpr int PER = 8 / BITS;
    const int64_t stride = inner * kEsize;
    const uint8_t* x = src + row0 * kEsize;
    int64_t k = 0;
    for (; k + PER <= len; k += PER, ++j) {
      __m256i acc = row_codes32<T, SYM, ZERO_NF>(x, p0, p1, p2, p3, ec);
      x += stride;
      for (int r = 1; r < PER; ++r, x += stride)
        acc = _mm256_or_si256(acc, _mm256_slli_epi16(row_codes32<T, SYM, ZERO_NF>(x, p0, p1, p2, p3, ec), r * BITS));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
    }
    if (k < len) {  // a partial group's last plane
      __m256i acc = _mm256_setzero_si256();
      for (int r = 0; k < len; ++r, ++k, x += stride)
        acc = _mm256_or_si256(acc, _mm256_sll_epi16(row_codes32<T, SYM, ZERO_NF>(x, p0, p1, p2, p3, ec),
                                                    _mm_cvtsi32_si128(r * BITS)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
      ++j;
    }
    for (; j < bpg; ++j)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), _mm256_setzero_si256());
    return;
  }

  // 3 bits: each lane keeps a small bit buffer and byte plane j of all 32
  // groups is stored once it holds 8 bits.
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int nbits = 0;
  for (int64_t k = 0, e = row0; k < len; ++k, e += inner) {
    const __m128i sh = _mm_cvtsi32_si128(nbits);
    a0 = _mm256_or_si256(a0, _mm256_sll_epi32(encode8<SYM>(load_x<T, ZERO_NF>(src, e), p0.zero, p0.inv, ec), sh));
    a1 = _mm256_or_si256(a1, _mm256_sll_epi32(encode8<SYM>(load_x<T, ZERO_NF>(src, e + 8), p1.zero, p1.inv, ec), sh));
    a2 = _mm256_or_si256(a2, _mm256_sll_epi32(encode8<SYM>(load_x<T, ZERO_NF>(src, e + 16), p2.zero, p2.inv, ec), sh));
    a3 = _mm256_or_si256(a3, _mm256_sll_epi32(encode8<SYM>(load_x<T, ZERO_NF>(src, e + 24), p3.zero, p3.inv, ec), sh));
    nbits += bits;
    while (nbits >= 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), low_bytes32(a0, a1, a2, a3));
      a0 = _mm256_srli_epi32(a0, 8);
      a1 = _mm256_srli_epi32(a1, 8);
      a2 = _mm256_srli_epi32(a2, 8);
      a3 = _mm256_srli_epi32(a3, 8);
      nbits -= 8;
      ++j;
    }
  }
  if (nbits > 0) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), low_bytes32(a0, a1, a2, a3));
    ++j;
  }
  for (; j < bpg; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), _mm256_setzero_si256());
}

// Packs 32 codes held as bytes (in order) into 32*BITS/8 bytes at dst, for
// BITS 2, 4 and 8 (3 bits go through put_code).
template <int BITS>
QPACK_AVX2 inline void pack32(__m256i c, uint8_t* dst) {
  if constexpr (BITS == 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), c);
  } else if constexpr (BITS == 4) {  // byte k = c[2k] | c[2k+1] << 4, as c[2k]*1 + c[2k+1]*16
    __m256i t = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x1001));
    t = _mm256_permute4x64_epi64(_mm256_packus_epi16(t, t), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(t));
  } else {  // BITS == 2: byte k = c[4k] | c[4k+1] << 2 | c[4k+2] << 4 | c[4k+3] << 6
    __m256i t = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x0401));              // c0 + 4 c1
    t = _mm256_madd_epi16(t, _mm256_set1_epi32(0x00100001));                     // + 16 (c2 + 4 c3)
    t = _mm256_packus_epi32(t, t);
    t = _mm256_packus_epi16(t, t);
    const uint32_t lo = uint32_t(_mm256_extract_epi32(t, 0)), hi = uint32_t(_mm256_extract_epi32(t, 4));
    std::memcpy(dst, &lo, 4);
    std::memcpy(dst + 4, &hi, 4);
  }
}
QPACK_AVX2 inline void pack32(__m256i c, int bits, uint8_t* dst) {
  if (bits == 8) pack32<8>(c, dst);
  else if (bits == 4) pack32<4>(c, dst);
  else pack32<2>(c, dst);
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

struct MaxS16 { QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_max_epi16(x, y); } };
struct MaxU16 { QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_max_epu16(x, y); } };
struct MinS16 { QPACK_AVX2 __m128i operator()(__m128i x, __m128i y) const { return _mm_min_epi16(x, y); } };

// Lane g of the result: the reduction by `op` of the 8 lanes of v[g]. A
// transpose folded into the reduction: 21 operations for 8 groups, against
// 6 per group for separate horizontal reductions.
template <class Op>
QPACK_AVX2 inline __m128i reduce8x8_epi16(const __m128i v[8], Op op) {
  __m128i t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = op(_mm_unpacklo_epi16(v[2 * i], v[2 * i + 1]), _mm_unpackhi_epi16(v[2 * i], v[2 * i + 1]));
  const __m128i u0 = op(_mm_unpacklo_epi32(t[0], t[1]), _mm_unpackhi_epi32(t[0], t[1]));
  const __m128i u1 = op(_mm_unpacklo_epi32(t[2], t[3]), _mm_unpackhi_epi32(t[2], t[3]));
  return op(_mm_unpacklo_epi64(u0, u1), _mm_unpackhi_epi64(u0, u1));
}

// Folds one group's 16-lane accumulators to 8 lanes, into slot l.
template <bool SYM>
QPACK_AVX2 inline void fold_stats16(const Stats16<SYM>& a, int l, __m128i* smax, __m128i* umax, __m128i* smin) {
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
template <DType T, bool SYM, bool ZERO_NF>
QPACK_AVX2 inline bool finish_stats8x16(const __m128i* smax, const __m128i* umax, const __m128i* smin,
                                        __m256* lo, __m256* hi) {
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
QPACK_AVX2 inline bool row_stats16(const uint8_t* src, const int64_t* start, const int64_t* len, int lanes,
                                   __m256* lo, __m256* hi) {
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
template <DType T, bool SYM, bool ZERO_NF>
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
  _mm256_store_ps(zero, p.zero);
  _mm256_store_ps(inv, p.inv);
  _mm256_store_ps(scale, p.scale);
  for (int l = 0; l < lanes; ++l) {
    Params8 gp8;
    gp8.zero = _mm256_set1_ps(zero[l]);
    gp8.inv = _mm256_set1_ps(inv[l]);
    uint8_t* dst = out.codes + (p0 + l) * bpg;
    const int64_t n = len[l], b = start[l];
    int64_t k = 0;
    if (bits != 3) {
      for (; k + 32 <= n; k += 32) {
        const __m256i c = codes32<SYM>(load_x<T, ZERO_NF>(src, b + k), load_x<T, ZERO_NF>(src, b + k + 8),
                                       load_x<T, ZERO_NF>(src, b + k + 16), load_x<T, ZERO_NF>(src, b + k + 24),
                                       gp8, gp8, gp8, gp8, ec);
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
        spec::put_code(dst, 1, k, bits, SYM ? spec::encode_sym(x, gp, bits) : spec::encode_asym(x, gp, bits));
      }
    }
  }
}

// 8 whole groups of G contiguous 16-bit elements (inner == 1, G a multiple
// of 32, every group full), starting with group p0: row_groups without the
// per-group bookkeeping, for the layout of every axis -1 weight.
template <DType T, bool SYM, bool ZERO_NF, int BITS>
QPACK_AVX2 void row_full(const uint8_t* src, int64_t G, const QuantScheme& s, const QuantBuffers& out,
                         int64_t p0, Failure* fail) {
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
    gp.inv = _mm256_permutevar8x32_ps(p.inv, lane);
    int64_t k = 0;
    for (; k + 64 <= G; k += 64, x += 128, dst += 8 * BITS) {
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF>(x, gp, gp, gp, gp, ec), dst);
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF>(x + 64, gp, gp, gp, gp, ec), dst + 4 * BITS);
    }
    if (k < G) {  // G = 32 (mod 64)
      pack32<BITS>(row_codes32<T, SYM, ZERO_NF>(x, gp, gp, gp, gp, ec), dst);
      x += 64;
      dst += 4 * BITS;
    }
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void row_full_bits(const uint8_t* src, int64_t G, const QuantScheme& s,
                                     NonFinitePolicy policy, const QuantBuffers& out, int64_t p0, Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z) row_full<T, true, true, BITS>(src, G, s, out, p0, f);
    else row_full<T, true, false, BITS>(src, G, s, out, p0, f);
  } else {
    if (z) row_full<T, false, true, BITS>(src, G, s, out, p0, f);
    else row_full<T, false, false, BITS>(src, G, s, out, p0, f);
  }
}

// ------------------------------------------------ pipelined column blocks
// Blocks b0..b1-1 of one group row (16-bit sources, BITS 2, 4, 8): while
// the codes of block b are computed from rows that its statistics pass left
// in L1, the same loop reads block b+1's rows for its statistics. One loop
// over the group's rows does both, and the next block's memory reads overlap
// this block's arithmetic.

// Codes of the block at x into its byte planes; with NEXT, statistics of the
// block at x + 64 bytes (the next 32 columns) on the way.
template <DType T, bool SYM, bool ZERO_NF, int BITS, bool NEXT>
QPACK_AVX2 inline void run_encode(const uint8_t* x, int64_t stride, int64_t len, const Params8* p,
                                  const EncodeConsts& ec, uint8_t* plane, int64_t inner, int64_t bpg,
                                  bool prefetch, Stats16<SYM>& na, Stats16<SYM>& nb) {
  constexpr int PER = 8 / BITS;
  if constexpr (NEXT) {
    na = stats16_empty<SYM>();
    nb = stats16_empty<SYM>();
  }
  int64_t k = 0, j = 0;
  auto row = [&](const uint8_t* r) QPACK_AVX2 {
    if constexpr (NEXT) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(r + 64 * (1 + kRunAhead)), _MM_HINT_T0);
      stats16_add<SYM>(na, load16_bits<T, ZERO_NF>(r + 64, 0));
      stats16_add<SYM>(nb, load16_bits<T, ZERO_NF>(r + 64, 16));
    }
    return row_codes32<T, SYM, ZERO_NF>(r, p[0], p[1], p[2], p[3], ec);
  };
  for (; k + PER <= len; k += PER, ++j) {
    __m256i acc = row(x);
    x += stride;
    for (int r = 1; r < PER; ++r, x += stride) acc = _mm256_or_si256(acc, _mm256_slli_epi16(row(x), r * BITS));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
  }
  if (k < len) {  // a partial group's last plane
    __m256i acc = _mm256_setzero_si256();
    for (int r = 0; k < len; ++r, ++k, x += stride)
      acc = _mm256_or_si256(acc, _mm256_sll_epi16(row(x), _mm_cvtsi32_si128(r * BITS)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
    ++j;
  }
  for (; j < bpg; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), _mm256_setzero_si256());
}

template <DType T, bool SYM, bool ZERO_NF, int BITS>
QPACK_AVX2 void column_run(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                           const QuantBuffers& out, int64_t o, int64_t g, int64_t b0, int64_t b1,
                           Failure* fail) {
  const int64_t inner = L.inner, len = L.group_len(g), bpg = L.bytes_per_group;
  const int64_t stride = 2 * inner;
  const uint8_t* const row0 = in.data + 2 * (o * L.axis_len + g * L.group_size) * inner;
  const int64_t pbase = (o * L.groups_per_axis + g) * inner;
  uint8_t* const planes = out.codes + (o * L.groups_per_axis + g) * bpg * inner;
  const EncodeConsts ec = encode_consts(s);
  const int64_t blocks = inner / 32;
  // While block b + 1 is read, block b + 1 + kRunAhead is fetched (in the row).
  auto prefetch_ok = [blocks](int64_t b) { return b + 1 + kRunAhead < blocks; };
  Stats16<SYM> a, b;
  run_stats<T, SYM, ZERO_NF>(row0 + 64 * b0, stride, len, prefetch_ok(b0 - 1), a, b);
  for (int64_t blk = b0; blk < b1; ++blk) {
    Params8 p[4];
    const bool ok = run_params<T, SYM, ZERO_NF>(a, b, s, out, pbase + 32 * blk, p, fail);
    const uint8_t* x = row0 + 64 * blk;
    uint8_t* plane = planes + 32 * blk;
    if (blk + 1 == b1) {
      if (ok) run_encode<T, SYM, ZERO_NF, BITS, false>(x, stride, len, p, ec, plane, inner, bpg, false, a, b);
    } else if (ok) {
      Stats16<SYM> na, nb;
      run_encode<T, SYM, ZERO_NF, BITS, true>(x, stride, len, p, ec, plane, inner, bpg, prefetch_ok(blk), na, nb);
      a = na;
      b = nb;
    } else {
      run_stats<T, SYM, ZERO_NF>(x + 64, stride, len, prefetch_ok(blk), a, b);
    }
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void column_run_bits(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                                       NonFinitePolicy policy, const QuantBuffers& out, int64_t o,
                                       int64_t g, int64_t b0, int64_t b1, Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z) column_run<T, true, true, BITS>(in, L, s, out, o, g, b0, b1, f);
    else column_run<T, true, false, BITS>(in, L, s, out, o, g, b0, b1, f);
  } else {
    if (z) column_run<T, false, true, BITS>(in, L, s, out, o, g, b0, b1, f);
    else column_run<T, false, false, BITS>(in, L, s, out, o, g, b0, b1, f);
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void column_block_bits(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                                         NonFinitePolicy policy, const QuantBuffers& out, int64_t o,
                                         int64_t g, int64_t i0, Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z) column_block<T, true, true, BITS>(in, L, s, out, o, g, i0, f);
    else column_block<T, true, false, BITS>(in, L, s, out, o, g, i0, f);
  } else {
    if (z) column_block<T, false, true, BITS>(in, L, s, out, o, g, i0, f);
    else column_block<T, false, false, BITS>(in, L, s, out, o, g, i0, f);
  }
}

template <DType T>
QPACK_AVX2 inline void column_block_dispatch(const QuantInput& in, const GroupLayout& L,
                                             const QuantScheme& s, NonFinitePolicy policy,
                                             const QuantBuffers& out, int64_t o, int64_t g,
                                             int64_t i0, Failure* f) {
  switch (s.bits) {
    case 2: column_block_bits<T, 2>(in, L, s, policy, out, o, g, i0, f); break;
    case 3: column_block_bits<T, 3>(in, L, s, policy, out, o, g, i0, f); break;
    case 4: column_block_bits<T, 4>(in, L, s, policy, out, o, g, i0, f); break;
    default: column_block_bits<T, 8>(in, L, s, policy, out, o, g, i0, f); break;
  }
}

template <DType T>
QPACK_AVX2 inline void row_groups_dispatch(const QuantInput& in, const GroupLayout& L,
                                           const QuantScheme& s, NonFinitePolicy policy,
                                           const QuantBuffers& out, int64_t p0, int lanes, Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z) row_groups<T, true, true>(in, L, s, out, p0, lanes, f);
    else row_groups<T, true, false>(in, L, s, out, p0, lanes, f);
  } else {
    if (z) row_groups<T, false, true>(in, L, s, out, p0, lanes, f);
    else row_groups<T, false, false>(in, L, s, out, p0, lanes, f);
  }
}

template <DType T>
QPACK_AVX2 void quantize_avx2(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                              NonFinitePolicy policy, const QuantBuffers& out, int threads,
                              Failure* failure) {
  Failure total;
  if (L.inner >= 32) {
    const int64_t blocks_per_row = L.inner / 32;
    const int64_t tail0 = blocks_per_row * 32;
    const int64_t rows = L.outer * L.groups_per_axis;
    const int64_t work = rows * blocks_per_row;
    bool nonfinite = false;
    int64_t overflow = INT64_MAX;
#pragma omp parallel num_threads(threads) reduction(|| : nonfinite) reduction(min : overflow)
    {
      Failure f;
      std::vector<float> scratch(size_t(L.group_size));
      if (T != DType::F32 && s.bits != 3) {
        // A contiguous share of the blocks per thread (as schedule(static)
        // would give), walked as runs within each group row.
        const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t w0 = work * t / nt, w1 = work * (t + 1) / nt;
        for (int64_t w = w0; w < w1;) {
          const int64_t r = w / blocks_per_row, b0 = w % blocks_per_row;
          const int64_t b1 = std::min(blocks_per_row, b0 + (w1 - w));
          const int64_t o = r / L.groups_per_axis, g = r % L.groups_per_axis;
          if constexpr (T != DType::F32) {
            switch (s.bits) {
              case 2: column_run_bits<T, 2>(in, L, s, policy, out, o, g, b0, b1, &f); break;
              case 4: column_run_bits<T, 4>(in, L, s, policy, out, o, g, b0, b1, &f); break;
              default: column_run_bits<T, 8>(in, L, s, policy, out, o, g, b0, b1, &f); break;
            }
          }
          w += b1 - b0;
        }
#pragma omp barrier
      } else {
#pragma omp for schedule(static)
        for (int64_t w = 0; w < work; ++w) {
          const int64_t r = w / blocks_per_row, b = w % blocks_per_row;
          column_block_dispatch<T>(in, L, s, policy, out, r / L.groups_per_axis, r % L.groups_per_axis, b * 32, &f);
        }
      }
      if (tail0 < L.inner) {
        // Column tail: zero its code bytes, then the per-group routine.
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < L.bytes_per_group; ++j)
            std::memset(out.codes + (r * L.bytes_per_group + j) * L.inner + tail0, 0,
                        size_t(L.inner - tail0));
          for (int64_t i = tail0; i < L.inner; ++i) {
            const int res = detail::quantize_group(in, L, s, policy, out, r / L.groups_per_axis,
                                                   r % L.groups_per_axis, i, scratch.data());
            if (res == detail::kGroupNonFinite) f.nonfinite = true;
            if (res == detail::kGroupOverflow)
              f.overflow_group = std::min(f.overflow_group, r * L.inner + i);
          }
        }
      }
      nonfinite = nonfinite || f.nonfinite;
      overflow = std::min(overflow, f.overflow_group);
    }
    total.nonfinite = nonfinite;
    total.overflow_group = overflow;
  } else {  // inner == 1
    const int64_t groups = L.num_groups();
    const int64_t batches = (groups + 7) / 8;
    // Every group whole, 32-element aligned and 16-bit: the row_full layout.
    const bool whole = s.bits != 3 && L.group_size % 32 == 0 && L.axis_len % L.group_size == 0;
    bool nonfinite = false;
    int64_t overflow = INT64_MAX;
#pragma omp parallel num_threads(threads) reduction(|| : nonfinite) reduction(min : overflow)
    {
      Failure f;
#pragma omp for schedule(static)
      for (int64_t b = 0; b < batches; ++b) {
        const int lanes = int(std::min<int64_t>(8, groups - 8 * b));
        if constexpr (T != DType::F32) {
          if (whole && lanes == 8) {
            switch (s.bits) {
              case 2: row_full_bits<T, 2>(in.data, L.group_size, s, policy, out, 8 * b, &f); break;
              case 4: row_full_bits<T, 4>(in.data, L.group_size, s, policy, out, 8 * b, &f); break;
              default: row_full_bits<T, 8>(in.data, L.group_size, s, policy, out, 8 * b, &f); break;
            }
            continue;
          }
        }
        row_groups_dispatch<T>(in, L, s, policy, out, 8 * b, lanes, &f);
      }
      nonfinite = nonfinite || f.nonfinite;
      overflow = std::min(overflow, f.overflow_group);
    }
    total.nonfinite = nonfinite;
    total.overflow_group = overflow;
  }
  *failure = total;
}

// Any layout, any CPU: the reference's per-group routine, in parallel.
void quantize_generic(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                      NonFinitePolicy policy, const QuantBuffers& out, int threads, Failure* failure) {
  if (L.codes_bytes() > 0) std::memset(out.codes, 0, L.codes_bytes());
  const int64_t groups = L.num_groups();
  bool nonfinite = false;
  int64_t overflow = INT64_MAX;
#pragma omp parallel num_threads(threads) reduction(|| : nonfinite) reduction(min : overflow)
  {
    std::vector<float> scratch(size_t(L.group_size));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < groups; ++p) {
      const int64_t i = p % L.inner, r = p / L.inner;
      const int res = detail::quantize_group(in, L, s, policy, out, r / L.groups_per_axis,
                                             r % L.groups_per_axis, i, scratch.data());
      if (res == detail::kGroupNonFinite) nonfinite = true;
      if (res == detail::kGroupOverflow) overflow = std::min(overflow, p);
    }
  }
  failure->nonfinite = nonfinite;
  failure->overflow_group = overflow;
}

}  // namespace

void quantize_cpu(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                  NonFinitePolicy policy, const QuantBuffers& out, int threads) {
  threads = resolve_threads(threads);
  Failure f;
  if (L.num_groups() == 0) return;
  const bool vector_layout = L.inner >= 32 || L.inner == 1;
  if (cpu_has_avx2() && vector_layout) {
    switch (in.dtype) {
      case DType::F16: quantize_avx2<DType::F16>(in, L, s, policy, out, threads, &f); break;
      case DType::BF16: quantize_avx2<DType::BF16>(in, L, s, policy, out, threads, &f); break;
      default: quantize_avx2<DType::F32>(in, L, s, policy, out, threads, &f); break;
    }
  } else {
    quantize_generic(in, L, s, policy, out, threads, &f);
  }
  raise(f, in, L, s, threads);
}

void dequantize_cpu(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                    const GroupLayout& L, const QuantScheme& s, float* out, int threads) {
  threads = resolve_threads(threads);
  const int64_t rows = L.outer * L.groups_per_axis;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / L.groups_per_axis, g = r % L.groups_per_axis, len = L.group_len(g);
    for (int64_t i = 0; i < L.inner; ++i) {
      const int64_t pi = r * L.inner + i;
      const float sc = spec::load_param(scales, pi, s.scale_dtype);
      const float m = s.symmetric ? 0.0f : spec::load_param(zeros, pi, s.scale_dtype);
      const uint8_t* base = codes + r * L.bytes_per_group * L.inner + i;
      float* dst = out + (o * L.axis_len + g * L.group_size) * L.inner + i;
      for (int64_t k = 0; k < len; ++k)
        dst[k * L.inner] = spec::decode(spec::get_code(base, L.inner, k, s.bits), sc, m, s.symmetric, s.bits);
    }
  }
}

// ------------------------------------------------------ TensorQuantizer ----
namespace {
class CpuQuantizer final : public TensorQuantizer {
 public:
  explicit CpuQuantizer(int threads) : threads_(resolve_threads(threads)) {}
  void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    quantize_cpu(in, layout, scheme, policy, out, threads_);
  }
  std::string description() const override {
    return "cpu (" + std::to_string(threads_) + (threads_ == 1 ? " thread, " : " threads, ") +
           (cpu_has_avx2() ? "avx2+f16c" : "scalar") + ")";
  }

 private:
  int threads_;
};
}  // namespace

std::unique_ptr<TensorQuantizer> make_cpu_quantizer(int threads) {
  return std::make_unique<CpuQuantizer>(threads);
}

}  // namespace qpack
