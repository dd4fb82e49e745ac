// Every ggml block type qpack writes, by its GGUF type number: the legacy
// 32-element types (ggml_legacy.hpp, docs/quantization.md Part II) and the
// 256-element K-quants (ggml_kquants.hpp, Part III), with one dispatch for
// host and device code alike.
#pragma once

#include <cstdint>

#include "qpack/spec/ggml_kquants.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/numerics.hpp"

namespace qpack::spec::ggml {

// ggml's type ids (the values qpack/format/gguf.hpp's GgmlType gives them;
// the spec cannot include format, so a test checks that they agree).
enum class GgmlBlockType : uint32_t {
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
};

// Whether t is one of the ten types above (a GGUF type number may be anything).
QPACK_HD bool is_block_type(GgmlBlockType t) {
  switch (t) {
    case GgmlBlockType::Q4_0:
    case GgmlBlockType::Q4_1:
    case GgmlBlockType::Q5_0:
    case GgmlBlockType::Q5_1:
    case GgmlBlockType::Q8_0:
    case GgmlBlockType::Q2_K:
    case GgmlBlockType::Q3_K:
    case GgmlBlockType::Q4_K:
    case GgmlBlockType::Q5_K:
    case GgmlBlockType::Q6_K:
      return true;
  }
  return false;
}

QPACK_HD bool is_kquant(GgmlBlockType t) {
  switch (t) {
    case GgmlBlockType::Q2_K:
    case GgmlBlockType::Q3_K:
    case GgmlBlockType::Q4_K:
    case GgmlBlockType::Q5_K:
    case GgmlBlockType::Q6_K:
      return true;
    default:
      return false;
  }
}

// Elements per block: 32 (legacy), 256 (K-quants), 0 for no type of ours.
QPACK_HD int block_elements(GgmlBlockType t) {
  if (!is_block_type(t)) return 0;
  return is_kquant(t) ? kSuperBlockElements : kBlockElements;
}

// Bytes per block, 0 for no type of ours.
QPACK_HD int block_bytes(GgmlBlockType t) {
  switch (t) {
    case GgmlBlockType::Q4_0:
    case GgmlBlockType::Q4_1:
    case GgmlBlockType::Q5_0:
    case GgmlBlockType::Q5_1:
    case GgmlBlockType::Q8_0:
      return block_bytes(GgmlLegacyType(uint32_t(t)));
    case GgmlBlockType::Q2_K:
      return kQ2_KBlockBytes;
    case GgmlBlockType::Q3_K:
      return kQ3_KBlockBytes;
    case GgmlBlockType::Q4_K:
      return kQ4_KBlockBytes;
    case GgmlBlockType::Q5_K:
      return kQ5_KBlockBytes;
    case GgmlBlockType::Q6_K:
      return kQ6_KBlockBytes;
  }
  return 0;
}

// ggml's name of the type ("Q4_K"), as GGUF and llama.cpp spell it.
QPACK_HD const char* type_name(GgmlBlockType t) {
  switch (t) {
    case GgmlBlockType::Q4_0:
    case GgmlBlockType::Q4_1:
    case GgmlBlockType::Q5_0:
    case GgmlBlockType::Q5_1:
    case GgmlBlockType::Q8_0:
      return type_name(GgmlLegacyType(uint32_t(t)));
    case GgmlBlockType::Q2_K:
      return "Q2_K";
    case GgmlBlockType::Q3_K:
      return "Q3_K";
    case GgmlBlockType::Q4_K:
      return "Q4_K";
    case GgmlBlockType::Q5_K:
      return "Q5_K";
    case GgmlBlockType::Q6_K:
      return "Q6_K";
  }
  return "?";
}

// One block: x holds block_elements(t) floats, out block_bytes(t) bytes.
// Nothing happens for a t that is no type of ours.
QPACK_HD void quantize_block(GgmlBlockType t, const float* x, uint8_t* out) {
  switch (t) {
    case GgmlBlockType::Q4_0:
    case GgmlBlockType::Q4_1:
    case GgmlBlockType::Q5_0:
    case GgmlBlockType::Q5_1:
    case GgmlBlockType::Q8_0:
      quantize_block(GgmlLegacyType(uint32_t(t)), x, out);
      return;
    case GgmlBlockType::Q2_K:
      quantize_block_q2_k(x, out);
      return;
    case GgmlBlockType::Q3_K:
      quantize_block_q3_k(x, out);
      return;
    case GgmlBlockType::Q4_K:
      quantize_block_q4_k(x, out);
      return;
    case GgmlBlockType::Q5_K:
      quantize_block_q5_k(x, out);
      return;
    case GgmlBlockType::Q6_K:
      quantize_block_q6_k(x, out);
      return;
  }
}
QPACK_HD void dequantize_block(GgmlBlockType t, const uint8_t* in, float* y) {
  switch (t) {
    case GgmlBlockType::Q4_0:
    case GgmlBlockType::Q4_1:
    case GgmlBlockType::Q5_0:
    case GgmlBlockType::Q5_1:
    case GgmlBlockType::Q8_0:
      dequantize_block(GgmlLegacyType(uint32_t(t)), in, y);
      return;
    case GgmlBlockType::Q2_K:
      dequantize_block_q2_k(in, y);
      return;
    case GgmlBlockType::Q3_K:
      dequantize_block_q3_k(in, y);
      return;
    case GgmlBlockType::Q4_K:
      dequantize_block_q4_k(in, y);
      return;
    case GgmlBlockType::Q5_K:
      dequantize_block_q5_k(in, y);
      return;
    case GgmlBlockType::Q6_K:
      dequantize_block_q6_k(in, y);
      return;
  }
}

// n elements (a whole number of blocks) into n / block_elements(t) blocks.
// Returns false, writing nothing, for a negative n, one that is not a whole
// number of blocks, or a t that is no type of ours.
QPACK_HD bool quantize_row(GgmlBlockType t, const float* x, int64_t n, uint8_t* out) {
  const int64_t be = block_elements(t);
  if (be == 0 || n < 0 || n % be != 0) return false;
  const int64_t bytes = block_bytes(t);
  for (int64_t b = 0; b < n / be; ++b) quantize_block(t, x + b * be, out + b * bytes);
  return true;
}
QPACK_HD bool dequantize_row(GgmlBlockType t, const uint8_t* in, int64_t n, float* y) {
  const int64_t be = block_elements(t);
  if (be == 0 || n < 0 || n % be != 0) return false;
  const int64_t bytes = block_bytes(t);
  for (int64_t b = 0; b < n / be; ++b) dequantize_block(t, in + b * bytes, y + b * be);
  return true;
}

}  // namespace qpack::spec::ggml
