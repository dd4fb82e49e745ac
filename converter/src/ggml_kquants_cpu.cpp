// ggml's K-quants Q2_K..Q6_K over whole tensors on the CPU
// (ggml_kquants_cpu.hpp): threads take contiguous runs of 256-element
// super-blocks (OpenMP static schedule); each converts its source elements to
// float exactly and calls the spec's reference (qpack/spec/ggml_kquants.hpp),
// or for Q2_K, Q4_K and Q5_K on a CPU with AVX2 the same rule with eight
// sub-block fits per register (cpu/ggml_kquants_avx2.hpp). Both give the
// reference's bytes, so the bytes depend neither on the thread count nor on
// the machine.
//
// This file builds at -O2, not the -O3 of ggml_blocks_cpu.cpp: GCC 12's -O3
// vectorizes the searches' short loops around their sequential float sums,
// and Q6_K then took 1.2-1.9x the time of ggml's own C in interleaved runs
// on one core (0.8-1.35x at -O2; the other types were within noise).
#include "ggml_kquants_cpu.hpp"

#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "cpu/ggml_kquants_avx2.hpp"
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

bool has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

// QPACK_GGML_SCALAR=1 forces the scalar reference (for comparisons).
bool scalar_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("QPACK_GGML_SCALAR");
    return v && *v && *v != '0';
  }();
  return forced;
}

using BlockQuantizer = void (*)(const float*, uint8_t*);

// The AVX2 form of the type's quantizer (the same bytes), or nullptr where
// there is none or the CPU lacks AVX2: Q2_K, Q4_K and Q5_K, whose
// asymmetric fits run eight sub-blocks per register.
BlockQuantizer avx2_quantizer(gl::GgmlBlockType type) {
  if (!has_avx2() || scalar_forced()) return nullptr;
  switch (type) {
    case gl::GgmlBlockType::Q2_K:
      return cpu::quantize_block_q2_k_avx2;
    case gl::GgmlBlockType::Q4_K:
      return cpu::quantize_block_q4_k_avx2;
    case gl::GgmlBlockType::Q5_K:
      return cpu::quantize_block_q5_k_avx2;
    default:
      return nullptr;
  }
}

template <DType S>
void quantize_kquant_all(gl::GgmlBlockType type, const uint8_t* src, int64_t nblocks, uint8_t* out,
                         int threads) {
  const int64_t bytes = gl::block_bytes(type);
  const BlockQuantizer avx2 = avx2_quantizer(type);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < nblocks; ++b) {
    float x[gl::kSuperBlockElements];
    load_super_block<S>(src, b, x);
    if (avx2 != nullptr)
      avx2(x, out + b * bytes);
    else
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
