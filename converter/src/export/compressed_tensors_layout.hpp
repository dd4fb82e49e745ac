// compressed-tensors "pack-quantized" tensors (what llm-compressor writes and
// vLLM and transformers load) from qpack's axis -1 group sections; the layout
// is docs/hf-quantized.md's. Pure functions over byte buffers: the exporter
// (export_compressed_tensors.cpp) feeds them slices of rows.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/layout.hpp"

namespace qpack::compressed_tensors {

// The compressed-tensors version whose layout and config qpack writes.
inline constexpr const char* kVersion = "0.20.1";

// int32 words of one weight_packed row: ceil(in * bits / 32).
int64_t packed_words_per_row(int64_t in, int bits);
// int32 rows of weight_zero_point (packed along dim 0): ceil(out * bits / 32).
int64_t zero_point_rows(int64_t out, int bits);

// weight_packed rows from the codes section of a [rows, in] tensor grouped
// along axis -1 (L.inner == 1, L.axis == 1, every group a whole number of
// bytes): `out` receives rows * packed_words_per_row(in, bits) * 4 bytes,
// the little-endian int32 words. Both formats store a row's codes as one
// little-endian bit stream (element i at bits i*b), and qpack's symmetric
// codes u = q + 2^(b-1) and Integer zero-point codes are compressed-tensors'
// stored values, so each row is qpack's bytes followed by zero bytes up to
// the next word.
void pack_weight_rows(const uint8_t* codes, const GroupLayout& L, uint8_t* out);

// weight_zero_point words for `rows` consecutive rows starting at a
// multiple of 32/bits, from qpack's zeros section [rows][groups] holding
// each group's integer zero-point z as a value of `scale_dtype`: word
// (r, g) holds the zero-point of row r*(32/b) + i at bits i*b (the last
// word's unused bits 0). `out` receives zero_point_rows(rows, bits) *
// groups * 4 bytes. Throws Error(Internal) for a stored value that is not
// an integer code (a section not written by the Integer rule).
void pack_zero_points(const uint8_t* zeros, DType scale_dtype, int64_t rows, int64_t groups,
                      int bits, uint8_t* out);

// config.json's "quantization_config" (docs/hf-quantized.md): one config
// group targeting "Linear", format pack-quantized, `group_size` 0 meaning
// strategy "channel"; `ignore` the Linear modules kept as they are.
nlohmann::json quantization_config(int bits, int64_t group_size, bool symmetric,
                                   const std::vector<std::string>& ignore);

}  // namespace qpack::compressed_tensors
