#include "gptq_layout.hpp"

#include <algorithm>
#include <cstring>
#include <string>

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
  // In tiles, so that neither the reads nor the strided writes miss the
  // cache on every word.
  constexpr int64_t kTile = 32;
  for (int64_t n0 = 0; n0 < rows; n0 += kTile)
    for (int64_t r0 = 0; r0 < words; r0 += kTile)
      for (int64_t n = n0; n < std::min(n0 + kTile, rows); ++n) {
        const uint8_t* src = codes + uint64_t(n) * row_bytes;
        for (int64_t r = r0; r < std::min(r0 + kTile, words); ++r)
          std::memcpy(out + (uint64_t(r) * uint64_t(rows) + uint64_t(n)) * 4, src + 4 * r, 4);
      }
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
