// ggml's K-quants Q2_K..Q6_K over whole tensors on the CPU
// (ggml_kquants_cpu.hpp): threads take contiguous runs of 256-element
// super-blocks (OpenMP static schedule); each converts its source elements to
// float exactly and calls the spec's reference (qpack/spec/ggml_kquants.hpp),
// so the bytes do not depend on the thread count.
//
// This file builds at -O2, not the -O3 of ggml_blocks_cpu.cpp: GCC 12's -O3
// vectorizes the searches' short loops around their sequential float sums,
// and Q6_K then took 1.2-1.9x the time of ggml's own C in interleaved runs
// on one core (0.8-1.35x at -O2; the other types were within noise).
#include "ggml_kquants_cpu.hpp"

#include <omp.h>

#include <cstring>

#include "qpack/format/error.hpp"

namespace qpack::detail {
namespace {

namespace gl = spec::ggml;

int thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Element j of super-block b as float, exactly (F16 and BF16 are subsets of F32).
template <DType S>
void load_super_block(const uint8_t* src, int64_t b, float* x) {
  constexpr int kBytes = S == DType::F32 ? 4 : 2;
  const uint8_t* p = src + b * gl::kSuperBlockElements * kBytes;
  for (int j = 0; j < gl::kSuperBlockElements; ++j) {
    if constexpr (S == DType::F32) {
      std::memcpy(&x[j], p + 4 * j, 4);
    } else {
      const uint16_t h = uint16_t(p[2 * j] | (uint32_t(p[2 * j + 1]) << 8));
      x[j] = S == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
}

void check_kquant_length(gl::GgmlBlockType type, int64_t n, const std::string& tensor,
                         const char* what) {
  if (n < 0 || n % gl::kSuperBlockElements != 0)
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                std::string(what) + " " + gl::type_name(type) + ": " + std::to_string(n) +
                    " elements is not a whole number of 256-element ggml super-blocks");
}

template <DType S>
void quantize_kquant_all(gl::GgmlBlockType type, const uint8_t* src, int64_t nblocks, uint8_t* out,
                         int threads) {
  const int64_t bytes = gl::block_bytes(type);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < nblocks; ++b) {
    float x[gl::kSuperBlockElements];
    load_super_block<S>(src, b, x);
    gl::quantize_block(type, x, out + b * bytes);
  }
}

}  // namespace

void quantize_kquant_cpu(gl::GgmlBlockType type, const void* src, DType src_dtype, int64_t n,
                         uint8_t* out, int threads, const std::string& tensor) {
  check_kquant_length(type, n, tensor, "quantize to");
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t nblocks = n / gl::kSuperBlockElements;
  const int t = thread_count(threads);
  switch (src_dtype) {
    case DType::F32:
      return quantize_kquant_all<DType::F32>(type, s, nblocks, out, t);
    case DType::F16:
      return quantize_kquant_all<DType::F16>(type, s, nblocks, out, t);
    case DType::BF16:
      return quantize_kquant_all<DType::BF16>(type, s, nblocks, out, t);
    default:
      throw Error(ErrorCode::InvalidArgument, "", tensor,
                  std::string("a ggml block type is made from F16, BF16 or F32, not ") +
                      dtype_name(src_dtype));
  }
}

void dequantize_kquant_cpu(gl::GgmlBlockType type, const uint8_t* blocks, int64_t n, float* out,
                           int threads, const std::string& tensor) {
  check_kquant_length(type, n, tensor, "dequantize");
  const int64_t nblocks = n / gl::kSuperBlockElements;
  const int64_t bytes = gl::block_bytes(type);
#pragma omp parallel for schedule(static) num_threads(thread_count(threads))
  for (int64_t b = 0; b < nblocks; ++b)
    gl::dequantize_block(type, blocks + b * bytes, out + b * gl::kSuperBlockElements);
}

}  // namespace qpack::detail
