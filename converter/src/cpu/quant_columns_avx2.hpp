// "Column blocks" (inner >= 32, e.g. axis 0 of a [rows, cols] weight): 32
// adjacent groups side by side, one SIMD lane per group, so loads,
// statistics, codes and the byte planes of the output are all contiguous;
// and the pipelined column runs that carry one block's statistics into the
// next block's encoding. Internal to converter/src (quant_cpu.cpp).
#pragma once

#include "cpu/avx2_common.hpp"

// Internal linkage, as when these lived in quant_cpu.cpp itself: this header
// is included by that one translation unit only.
namespace qpack::cpu {
namespace {

template <DType T, bool SYM, bool ZERO_NF, int BITS, bool INTZ>
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
    if (!ZERO_NF &&
        (stats_nonfinite<SYM>(lo0, hi0, sum0) || stats_nonfinite<SYM>(lo1, hi1, sum1) ||
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
      __m256i acc = row_codes32<T, SYM, ZERO_NF, INTZ>(x, p0, p1, p2, p3, ec);
      x += stride;
      for (int r = 1; r < PER; ++r, x += stride)
        acc = _mm256_or_si256(
            acc,
            _mm256_slli_epi16(row_codes32<T, SYM, ZERO_NF, INTZ>(x, p0, p1, p2, p3, ec), r * BITS));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
    }
    if (k < len) {  // a partial group's last plane
      __m256i acc = _mm256_setzero_si256();
      for (int r = 0; k < len; ++r, ++k, x += stride)
        acc = _mm256_or_si256(
            acc, _mm256_sll_epi16(row_codes32<T, SYM, ZERO_NF, INTZ>(x, p0, p1, p2, p3, ec),
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
    a0 = _mm256_or_si256(
        a0, _mm256_sll_epi32(encode8<SYM, INTZ>(load_x<T, ZERO_NF>(src, e), p0, ec), sh));
    a1 = _mm256_or_si256(
        a1, _mm256_sll_epi32(encode8<SYM, INTZ>(load_x<T, ZERO_NF>(src, e + 8), p1, ec), sh));
    a2 = _mm256_or_si256(
        a2, _mm256_sll_epi32(encode8<SYM, INTZ>(load_x<T, ZERO_NF>(src, e + 16), p2, ec), sh));
    a3 = _mm256_or_si256(
        a3, _mm256_sll_epi32(encode8<SYM, INTZ>(load_x<T, ZERO_NF>(src, e + 24), p3, ec), sh));
    nbits += bits;
    while (nbits >= 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner),
                          low_bytes32(a0, a1, a2, a3));
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

// ------------------------------------------------ pipelined column blocks
// Blocks b0..b1-1 of one group row (16-bit sources, BITS 2, 4, 8): while
// the codes of block b are computed from rows that its statistics pass left
// in L1, the same loop reads block b+1's rows for its statistics. One loop
// over the group's rows does both, and the next block's memory reads overlap
// this block's arithmetic.

// Codes of the block at x into its byte planes; with NEXT, statistics of the
// block at x + 64 bytes (the next 32 columns) on the way.
template <DType T, bool SYM, bool ZERO_NF, int BITS, bool NEXT, bool INTZ>
QPACK_AVX2 inline void run_encode(const uint8_t* x, int64_t stride, int64_t len, const Params8* p,
                                  const EncodeConsts& ec, uint8_t* plane, int64_t inner,
                                  int64_t bpg, bool prefetch, Stats16<SYM>& na, Stats16<SYM>& nb) {
  constexpr int PER = 8 / BITS;
  if constexpr (NEXT) {
    na = stats16_empty<SYM>();
    nb = stats16_empty<SYM>();
  }
  int64_t k = 0, j = 0;
  auto row = [&](const uint8_t* r) QPACK_AVX2 {
    if constexpr (NEXT) {
      if (prefetch)
        _mm_prefetch(reinterpret_cast<const char*>(r + 64 * (1 + kRunAhead)), _MM_HINT_T0);
      stats16_add<SYM>(na, load16_bits<T, ZERO_NF>(r + 64, 0));
      stats16_add<SYM>(nb, load16_bits<T, ZERO_NF>(r + 64, 16));
    }
    return row_codes32<T, SYM, ZERO_NF, INTZ>(r, p[0], p[1], p[2], p[3], ec);
  };
  for (; k + PER <= len; k += PER, ++j) {
    __m256i acc = row(x);
    x += stride;
    for (int r = 1; r < PER; ++r, x += stride)
      acc = _mm256_or_si256(acc, _mm256_slli_epi16(row(x), r * BITS));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
  }
  if (k < len) {  // a partial group's last plane
    __m256i acc = _mm256_setzero_si256();
    for (int r = 0; k < len; ++r, ++k, x += stride)
      acc = _mm256_or_si256(acc, _mm256_sll_epi16(row(x), _mm_cvtsi32_si128(r * BITS)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), acc);
    ++j;
  }
  for (; j < bpg; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plane + j * inner), _mm256_setzero_si256());
}

template <DType T, bool SYM, bool ZERO_NF, int BITS, bool INTZ>
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
      if (ok)
        run_encode<T, SYM, ZERO_NF, BITS, false, INTZ>(x, stride, len, p, ec, plane, inner, bpg,
                                                       false, a, b);
    } else if (ok) {
      Stats16<SYM> na, nb;
      run_encode<T, SYM, ZERO_NF, BITS, true, INTZ>(x, stride, len, p, ec, plane, inner, bpg,
                                                    prefetch_ok(blk), na, nb);
      a = na;
      b = nb;
    } else {
      run_stats<T, SYM, ZERO_NF>(x + 64, stride, len, prefetch_ok(blk), a, b);
    }
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void column_run_bits(const QuantInput& in, const GroupLayout& L,
                                       const QuantScheme& s, NonFinitePolicy policy,
                                       const QuantBuffers& out, int64_t o, int64_t g, int64_t b0,
                                       int64_t b1, Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z)
      column_run<T, true, true, BITS, false>(in, L, s, out, o, g, b0, b1, f);
    else
      column_run<T, true, false, BITS, false>(in, L, s, out, o, g, b0, b1, f);
  } else if (has_integer_zero(s)) {
    if (z)
      column_run<T, false, true, BITS, true>(in, L, s, out, o, g, b0, b1, f);
    else
      column_run<T, false, false, BITS, true>(in, L, s, out, o, g, b0, b1, f);
  } else {
    if (z)
      column_run<T, false, true, BITS, false>(in, L, s, out, o, g, b0, b1, f);
    else
      column_run<T, false, false, BITS, false>(in, L, s, out, o, g, b0, b1, f);
  }
}

template <DType T, int BITS>
QPACK_AVX2 inline void column_block_bits(const QuantInput& in, const GroupLayout& L,
                                         const QuantScheme& s, NonFinitePolicy policy,
                                         const QuantBuffers& out, int64_t o, int64_t g, int64_t i0,
                                         Failure* f) {
  const bool z = policy == NonFinitePolicy::Zero;
  if (s.symmetric) {
    if (z)
      column_block<T, true, true, BITS, false>(in, L, s, out, o, g, i0, f);
    else
      column_block<T, true, false, BITS, false>(in, L, s, out, o, g, i0, f);
  } else if (has_integer_zero(s)) {
    if (z)
      column_block<T, false, true, BITS, true>(in, L, s, out, o, g, i0, f);
    else
      column_block<T, false, false, BITS, true>(in, L, s, out, o, g, i0, f);
  } else {
    if (z)
      column_block<T, false, true, BITS, false>(in, L, s, out, o, g, i0, f);
    else
      column_block<T, false, false, BITS, false>(in, L, s, out, o, g, i0, f);
  }
}

template <DType T>
QPACK_AVX2 inline void column_block_dispatch(const QuantInput& in, const GroupLayout& L,
                                             const QuantScheme& s, NonFinitePolicy policy,
                                             const QuantBuffers& out, int64_t o, int64_t g,
                                             int64_t i0, Failure* f) {
  switch (s.bits) {
    case 2:
      column_block_bits<T, 2>(in, L, s, policy, out, o, g, i0, f);
      break;
    case 3:
      column_block_bits<T, 3>(in, L, s, policy, out, o, g, i0, f);
      break;
    case 4:
      column_block_bits<T, 4>(in, L, s, policy, out, o, g, i0, f);
      break;
    default:
      column_block_bits<T, 8>(in, L, s, policy, out, o, g, i0, f);
      break;
  }
}

}  // namespace
}  // namespace qpack::cpu
