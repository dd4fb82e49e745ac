// GPTQ v1 tensors (what AutoGPTQ and GPTQModel write with checkpoint_format
// "gptq", and vLLM, transformers, TGI and ExLlamaV2 load) from qpack's axis
// -1 group sections; the layout is docs/hf-quantized.md's. GPTQ stores the
// weight transposed ([in, out] packed along in), so the exporter
// (export_gptq.cpp) feeds these functions column blocks of whole groups.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "qpack/spec/layout.hpp"

namespace qpack::gptq {

// Codes per int32 word: 32 / bits (bits 2, 4 or 8).
int codes_per_word(int bits);

// qweight rows of a block from the codes section of a [rows, kw] tensor
// grouped along axis -1 (rows = out-features n0.., kw = in-features k0..,
// kw and every group a multiple of codes_per_word): `out` receives
// [kw / codes_per_word][rows] little-endian int32 words, word (r, n) holding
// the code of in-feature r * codes_per_word + i of out-feature n at bits
// i*bits. Row r of the block is qweight row k0 / codes_per_word + r, columns
// n0..n0+rows. Symmetric codes u = q + 2^(b-1) are GPTQ's stored values.
void pack_qweight_block(const uint8_t* codes, const GroupLayout& L, uint8_t* out);

// A [rows][cols] matrix of `elem_bytes`-byte elements transposed into
// [cols][rows] (scales [out][in/G] -> GPTQ's [in/G][out]).
void transpose(const uint8_t* in, int64_t rows, int64_t cols, int elem_bytes, uint8_t* out);

// One qzeros row (a group) from the zero-points z[n] of `out_features`
// columns (out_features a multiple of codes_per_word): out_features /
// codes_per_word words, column n at bits (n % codes_per_word) * bits of
// word n / codes_per_word, storing z - 1 (GPTQ v1; loaders add the 1 back).
// Throws Error(Internal) for z outside 1..2^bits - 1, which v1 cannot hold.
void pack_qzeros_row(const int32_t* z, int64_t out_features, int bits, uint8_t* out);

// g_idx: the group of each in-feature, k / group_size (desc_act false).
void group_index(int64_t in_features, int64_t group_size, int32_t* out);

// quantize_config.json, also config.json's "quantization_config": symmetric,
// desc_act false, checkpoint_format "gptq"; group_size 0 is written -1
// (one group per output channel).
nlohmann::json quantize_config(int bits, int64_t group_size);

}  // namespace qpack::gptq
