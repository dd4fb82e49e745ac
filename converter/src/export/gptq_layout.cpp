#include "gptq_layout.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "qpack/format/error.hpp"

namespace qpack::gptq {

int codes_per_word(int bits) { return 32 / bits; }

namespace {

void store_u32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = uint8_t(v >> (8 * b));
}

}  // namespace

void pack_qweight_block(const uint8_t* codes, const GroupLayout& L, uint8_t* out) {
  // With whole groups that are multiples of codes_per_word, in-features
  // r*cpw .. r*cpw + cpw - 1 of a row are the four bytes at 4r of its
  // little-endian bit stream: the block is a transpose of 32-bit words.
  const int64_t rows = L.outer;
  const uint64_t row_bytes = uint64_t(L.groups_per_axis) * uint64_t(L.bytes_per_group);
  const int64_t words = int64_t(row_bytes / 4);
  // In 4 x 4 tiles of words transposed in registers (each reads 16
  // contiguous bytes of 4 rows and writes 16 contiguous bytes of 4 output
  // rows), grouped into 64 x 64 tiles so that the rows read and written stay
  // in the cache and the TLB (both strides are powers of two for the usual
  // widths: a word at a time along the rows, the strided writes missed the
  // cache on most words). The edges a word at a time.
  const int64_t rows4 = rows / 4 * 4, words4 = words / 4 * 4;
  const auto word = [&](int64_t n, int64_t r) {
    uint32_t w;
    std::memcpy(&w, codes + uint64_t(n) * row_bytes + 4 * uint64_t(r), 4);
    return w;
  };
  const auto put = [&](int64_t r, int64_t n, uint32_t w) {
    std::memcpy(out + (uint64_t(r) * uint64_t(rows) + uint64_t(n)) * 4, &w, 4);
  };
  constexpr int64_t kTile = 64;
  for (int64_t nt = 0; nt < rows4; nt += kTile)
    for (int64_t rt = 0; rt < words4; rt += kTile)
      for (int64_t n0 = nt; n0 < std::min(nt + kTile, rows4); n0 += 4)
        for (int64_t r0 = rt; r0 < std::min(rt + kTile, words4); r0 += 4) {
          const uint8_t* src = codes + uint64_t(n0) * row_bytes + 4 * uint64_t(r0);
          uint8_t* dst = out + (uint64_t(r0) * uint64_t(rows) + uint64_t(n0)) * 4;
          const uint64_t dst_stride = uint64_t(rows) * 4;
#if defined(__SSE2__)
          const __m128i a0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
          const __m128i a1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + row_bytes));
          const __m128i a2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * row_bytes));
          const __m128i a3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * row_bytes));
          const __m128i b0 = _mm_unpacklo_epi32(a0, a1), b1 = _mm_unpackhi_epi32(a0, a1);
          const __m128i b2 = _mm_unpacklo_epi32(a2, a3), b3 = _mm_unpackhi_epi32(a2, a3);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(b0, b2));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + dst_stride),
                           _mm_unpackhi_epi64(b0, b2));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * dst_stride),
                           _mm_unpacklo_epi64(b1, b3));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 3 * dst_stride),
                           _mm_unpackhi_epi64(b1, b3));
#else
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j)
              std::memcpy(dst + j * dst_stride + 4 * i, src + i * row_bytes + 4 * j, 4);
#endif
        }
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t r = n < rows4 ? words4 : 0; r < words; ++r) put(r, n, word(n, r));
}

void transpose(const uint8_t* in, int64_t rows, int64_t cols, int elem_bytes, uint8_t* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(out + (uint64_t(c) * rows + r) * elem_bytes,
                  in + (uint64_t(r) * cols + c) * elem_bytes, elem_bytes);
}

void pack_qzeros_row(const int32_t* z, int64_t out_features, int bits, uint8_t* out) {
  const int cpw = codes_per_word(bits);
  for (int64_t w = 0; w < out_features / cpw; ++w) {
    uint32_t word = 0;
    for (int i = 0; i < cpw; ++i) {
      const int32_t v = z[w * cpw + i];
      if (v < 1 || v > (1 << bits) - 1)
        throw Error(
            ErrorCode::Internal, "", "",
            "GPTQ v1 stores zero - 1, which cannot hold the zero-point " + std::to_string(v));
      word |= uint32_t(v - 1) << (i * bits);
    }
    store_u32(out + 4 * w, word);
  }
}

void group_index(int64_t in_features, int64_t group_size, int32_t* out) {
  for (int64_t k = 0; k < in_features; ++k) out[k] = int32_t(group_size > 0 ? k / group_size : 0);
}

nlohmann::json quantize_config(int bits, int64_t group_size) {
  return {{"bits", bits},
          {"group_size", group_size > 0 ? group_size : -1},
          {"desc_act", false},
          {"sym", true},
          {"lm_head", false},
          {"quant_method", "gptq"},
          {"checkpoint_format", "gptq"}};
}

}  // namespace qpack::gptq
