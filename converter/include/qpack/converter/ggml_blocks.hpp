// ggml's GGUF block types on the CPU: the legacy Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0 (qpack/spec/ggml_legacy.hpp, docs/quantization.md Part II) and the
// K-quants Q2_K..Q6_K (qpack/spec/ggml_kquants.hpp, Part III), the spec's
// scalar reference over whole tensors, from F16/BF16/F32 sources, on several
// threads. Blocks are independent and each is computed by the reference's
// own code, so the bytes do not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>

#include "qpack/format/gguf.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {

// Bytes of the blocks of `n` elements (n a multiple of 32).
uint64_t ggml_blocks_bytes(spec::ggml::GgmlLegacyType type, int64_t n);

// Quantizes `n` elements (a multiple of 32) of `src_dtype` at `src` (little-
// endian) into ggml_blocks_bytes(type, n) bytes at `out`. threads: 0 = all
// cores. method: Rtn (the default) is llama.cpp's bytes; Search and Refit
// choose Q4_1 / Q5_1 blocks by docs/quantization.md §G9
// (qpack/spec/ggml_legacy_methods.hpp). Throws qpack::Error (InvalidArgument
// naming `tensor`) for an n that is not a whole number of blocks, a dtype
// that is not F16, BF16 or F32, or a method other than Rtn for a type other
// than Q4_1 and Q5_1.
void quantize_ggml_blocks_cpu(spec::ggml::GgmlLegacyType type, const void* src, DType src_dtype,
                              int64_t n, uint8_t* out, int threads = 0,
                              const std::string& tensor = {},
                              QuantMethod method = QuantMethod::Rtn);

// Dequantizes n/32 blocks at `blocks` into `n` floats (ggml's dequantize_row_*).
void dequantize_ggml_blocks_cpu(spec::ggml::GgmlLegacyType type, const uint8_t* blocks, int64_t n,
                                float* out, int threads = 0, const std::string& tensor = {});

// The same over any ggml block type qpack writes, named by its GGUF type
// number (what an exporter and a GGUF reader hold). ggml_blocks_supported
// says which: the five legacy types (32-element blocks) and the K-quants
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-blocks, ggml's reference
// quantizers without an importance matrix: qpack/spec/ggml_kquants.hpp,
// docs/quantization.md Part III).
bool ggml_blocks_supported(GgmlType type);
// Bytes of `n` elements (a whole number of the type's blocks) in `type`.
// Throws Error(InvalidArgument) for a type ggml_blocks_supported refuses.
uint64_t ggml_blocks_bytes(GgmlType type, int64_t n);
// Throws Error(InvalidArgument naming `tensor`) for a type that
// ggml_blocks_supported refuses, an n that is not a whole number of the
// type's blocks (32 or 256 elements), a source dtype other than F16,
// BF16, F32, and a method other than Rtn for a type other than Q4_1, Q5_1.
void quantize_ggml_blocks_cpu(GgmlType type, const void* src, DType src_dtype, int64_t n,
                              uint8_t* out, int threads = 0, const std::string& tensor = {},
                              QuantMethod method = QuantMethod::Rtn);
// True for the GGUF types whose blocks --method search / refit can choose
// (Q4_1, Q5_1: a per-block float scale and minimum).
bool ggml_type_takes_method(GgmlType type);
void dequantize_ggml_blocks_cpu(GgmlType type, const uint8_t* blocks, int64_t n, float* out,
                                int threads = 0, const std::string& tensor = {});

}  // namespace qpack
