// What the CPU drivers of ggml's block types share (ggml_blocks_cpu.cpp for
// the 32-element legacy blocks, ggml_kquants_cpu.cpp for the 256-element
// K-quant super-blocks): the thread count, the exact conversion of a block's
// source elements to float, the length check, the one switch over the source
// dtype, and the switches that pick the scalar reference over SIMD.
#pragma once

#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "qpack/format/error.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack::detail {

inline int ggml_thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Element j of block b (kElements elements of source dtype S) as float,
// exactly: F16 and BF16 are subsets of F32.
template <DType S, int kElements>
void load_ggml_block(const uint8_t* src, int64_t b, float* x) {
  constexpr int kBytes = S == DType::F32 ? 4 : 2;
  const uint8_t* p = src + b * kElements * kBytes;
  for (int j = 0; j < kElements; ++j) {
    if constexpr (S == DType::F32) {
      std::memcpy(&x[j], p + 4 * j, 4);
    } else {
      const uint16_t h = uint16_t(p[2 * j] | (uint32_t(p[2 * j + 1]) << 8));
      x[j] = S == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
}

// n must be a whole number of blocks of `block_elements`.
inline void check_ggml_length(int64_t n, int block_elements, const std::string& tensor,
                              const std::string& what) {
  if (n < 0 || n % block_elements != 0)
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                what + ": " + std::to_string(n) + " elements is not a whole number of " +
                    std::to_string(block_elements) + "-element ggml " +
                    (block_elements == 32 ? "blocks" : "super-blocks"));
}

template <DType S>
using SourceDType = std::integral_constant<DType, S>;

// Calls run(SourceDType<S>{}) for the source dtype S (a generic lambda reads
// it back as decltype(tag)::value), or throws for a dtype no ggml block type
// is made from.
template <class Run>
void dispatch_ggml_source(DType src_dtype, const std::string& tensor, Run&& run) {
  switch (src_dtype) {
    case DType::F32:
      return run(SourceDType<DType::F32>{});
    case DType::F16:
      return run(SourceDType<DType::F16>{});
    case DType::BF16:
      return run(SourceDType<DType::BF16>{});
    default:
      throw Error(ErrorCode::InvalidArgument, "", tensor,
                  std::string("a ggml block type is made from F16, BF16 or F32, not ") +
                      dtype_name(src_dtype));
  }
}

// QPACK_GGML_SCALAR=1 forces the scalar reference (for comparisons).
inline bool ggml_scalar_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("QPACK_GGML_SCALAR");
    return v && *v && *v != '0';
  }();
  return forced;
}

}  // namespace qpack::detail
