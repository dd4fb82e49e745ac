// ggml's K-quants Q2_K..Q6_K over whole tensors on the CPU
// (ggml_kquants_cpu.hpp): threads take contiguous runs of 256-element
// super-blocks (the blocking pool of cpu/thread_pool.hpp, static chunks); each converts its source
// elements to float exactly and calls the spec's reference (qpack/spec/ggml_kquants.hpp), or for
// Q2_K, Q4_K, Q5_K and Q6_K on a CPU with AVX2 the same rule with eight sub-block fits per register
// (cpu/ggml_kquants_avx2.hpp). Both give the reference's bytes, so the bytes depend neither on the
// thread count nor on the machine.
//
// This file builds at -O2, not the -O3 of ggml_blocks_cpu.cpp: GCC 12's -O3
// vectorizes the searches' short loops around their sequential float sums,
// and Q6_K then took 1.2-1.9x the time of ggml's own C in interleaved runs
// on one core (0.8-1.35x at -O2; the other types were within noise).
#include "ggml_kquants_cpu.hpp"

#include "cpu/ggml_kquants_avx2.hpp"
#include "cpu/thread_pool.hpp"
#include "ggml_cpu_common.hpp"
#include "qpack/format/error.hpp"

namespace qpack::detail {
namespace {

namespace gl = spec::ggml;

bool has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

using BlockQuantizer = void (*)(const float*, uint8_t*);

// The AVX2 form of the type's quantizer (the same bytes), or nullptr where
// there is none or the CPU lacks AVX2: Q2_K, Q4_K, Q5_K and Q6_K, whose
// sub-block fits run eight per register (Q3_K's descent has no such form yet).
BlockQuantizer avx2_quantizer(gl::GgmlBlockType type) {
  if (!has_avx2() || ggml_scalar_forced()) return nullptr;
  switch (type) {
    case gl::GgmlBlockType::Q2_K:
      return cpu::quantize_block_q2_k_avx2;
    case gl::GgmlBlockType::Q4_K:
      return cpu::quantize_block_q4_k_avx2;
    case gl::GgmlBlockType::Q5_K:
      return cpu::quantize_block_q5_k_avx2;
    case gl::GgmlBlockType::Q6_K:
      return cpu::quantize_block_q6_k_avx2;
    default:
      return nullptr;
  }
}

template <DType S>
void quantize_kquant_all(gl::GgmlBlockType type, const uint8_t* src, int64_t nblocks, uint8_t* out,
                         int threads) {
  const int64_t bytes = gl::block_bytes(type);
  const BlockQuantizer avx2 = avx2_quantizer(type);
  cpu::parallel_for(threads, nblocks, [&](int64_t b) {
    float x[gl::kSuperBlockElements];
    load_ggml_block<S, gl::kSuperBlockElements>(src, b, x);
    if (avx2 != nullptr)
      avx2(x, out + b * bytes);
    else
      gl::quantize_block(type, x, out + b * bytes);
  });
}

}  // namespace

void quantize_kquant_cpu(gl::GgmlBlockType type, const void* src, DType src_dtype, int64_t n,
                         uint8_t* out, int threads, const std::string& tensor) {
  check_ggml_length(n, gl::kSuperBlockElements, tensor,
                    std::string("quantize to ") + gl::type_name(type));
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t nblocks = n / gl::kSuperBlockElements;
  const int t = ggml_thread_count(threads);
  dispatch_ggml_source(src_dtype, tensor, [&](auto tag) {
    quantize_kquant_all<decltype(tag)::value>(type, s, nblocks, out, t);
  });
}

void dequantize_kquant_cpu(gl::GgmlBlockType type, const uint8_t* blocks, int64_t n, float* out,
                           int threads, const std::string& tensor) {
  check_ggml_length(n, gl::kSuperBlockElements, tensor,
                    std::string("dequantize ") + gl::type_name(type));
  const int64_t nblocks = n / gl::kSuperBlockElements;
  const int64_t bytes = gl::block_bytes(type);
  cpu::parallel_for(ggml_thread_count(threads), nblocks, [&](int64_t b) {
    gl::dequantize_block(type, blocks + b * bytes, out + b * gl::kSuperBlockElements);
  });
}

}  // namespace qpack::detail
