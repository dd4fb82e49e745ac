// ggml's block types over whole tensors on the CPU (qpack/converter/
// ggml_blocks.hpp). Threads take contiguous runs of blocks (the blocking pool of
// cpu/thread_pool.hpp, static chunks). Legacy types: with AVX2 eight blocks go at once, one per
// lane (cpu/ggml_blocks_avx2.hpp); otherwise each block converts its 32 source elements to float
// exactly and calls the spec's reference. --method search|refit (Q4_1/Q5_1, docs/quantization.md
// §G9) then runs the spec's scalar method step on each block, after llama.cpp's block from either
// path. K-quants go to ggml_kquants_cpu.cpp. Every path gives the reference's bytes, so every
// thread count and machine writes the same file.
#include "cpu/ggml_blocks_avx2.hpp"
#include "cpu/thread_pool.hpp"
#include "ggml_cpu_common.hpp"
#include "ggml_kquants_cpu.hpp"
#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/error.hpp"
#include "qpack/spec/ggml_block_types.hpp"
#include "qpack/spec/ggml_legacy_methods.hpp"

namespace qpack {
namespace {

namespace gl = spec::ggml;

void check_type(gl::GgmlLegacyType type, const std::string& tensor) {
  if (gl::block_bytes(type) == 0)
    throw Error(ErrorCode::InvalidArgument, "", tensor, "not a legacy ggml block type");
}

void check_method(gl::GgmlLegacyType type, QuantMethod method, const std::string& tensor) {
  if (method != QuantMethod::Rtn && !gl::takes_method(type))
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                std::string("--method search and refit choose Q4_1 and Q5_1 blocks only, not ") +
                    gl::type_name(type) + " (docs/quantization.md §G9)");
}

template <DType S>
void quantize_one(gl::GgmlLegacyType type, QuantMethod method, const uint8_t* src, int64_t b,
                  uint8_t* out) {
  float x[gl::kBlockElements];
  detail::load_ggml_block<S, gl::kBlockElements>(src, b, x);
  gl::quantize_block_method(type, method, x, out + b * gl::block_bytes(type));
}

// The method's step on blocks [b0, b1) that already hold llama.cpp's bytes
// (from the AVX2 encoder): the same text the reference runs after its own
// quantize_block, so the bytes are the reference's.
template <DType S>
void apply_method(gl::GgmlLegacyType type, QuantMethod method, const uint8_t* src, int64_t b0,
                  int64_t b1, uint8_t* out) {
  if (method == QuantMethod::Rtn) return;
  for (int64_t b = b0; b < b1; ++b) {
    float x[gl::kBlockElements];
    detail::load_ggml_block<S, gl::kBlockElements>(src, b, x);
    gl::apply_block_method(type, method, x, out + b * gl::block_bytes(type));
  }
}

bool has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return ok;
}

template <DType S>
void quantize_all(gl::GgmlLegacyType type, QuantMethod method, const uint8_t* src, int64_t nblocks,
                  uint8_t* out, int threads) {
  if (has_avx2() && !detail::ggml_scalar_forced()) {
    // Groups of eight blocks, one per AVX2 lane, then the method's step per
    // block; the last nblocks % 8 blocks and any group with a non-finite
    // element by the reference.
    const int64_t groups = nblocks / cpu::kLanes;
    cpu::parallel_for(threads, groups, [&](int64_t g) {
      const int64_t b0 = g * cpu::kLanes, b1 = b0 + cpu::kLanes;
      if (cpu::quantize_eight_blocks<S>(type, src, b0, out))
        apply_method<S>(type, method, src, b0, b1, out);
      else
        for (int64_t b = b0; b < b1; ++b) quantize_one<S>(type, method, src, b, out);
    });
    for (int64_t b = groups * cpu::kLanes; b < nblocks; ++b)
      quantize_one<S>(type, method, src, b, out);
    return;
  }
  cpu::parallel_for(threads, nblocks,
                    [&](int64_t b) { quantize_one<S>(type, method, src, b, out); });
}

}  // namespace

uint64_t ggml_blocks_bytes(gl::GgmlLegacyType type, int64_t n) {
  return uint64_t(n / gl::kBlockElements) * uint64_t(gl::block_bytes(type));
}

void quantize_ggml_blocks_cpu(gl::GgmlLegacyType type, const void* src, DType src_dtype, int64_t n,
                              uint8_t* out, int threads, const std::string& tensor,
                              QuantMethod method) {
  check_type(type, tensor);
  check_method(type, method, tensor);
  detail::check_ggml_length(n, gl::kBlockElements, tensor, "quantize to a ggml block type");
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t nblocks = n / gl::kBlockElements;
  const int t = detail::ggml_thread_count(threads);
  detail::dispatch_ggml_source(src_dtype, tensor, [&](auto tag) {
    quantize_all<decltype(tag)::value>(type, method, s, nblocks, out, t);
  });
}

void dequantize_ggml_blocks_cpu(gl::GgmlLegacyType type, const uint8_t* blocks, int64_t n,
                                float* out, int threads, const std::string& tensor) {
  check_type(type, tensor);
  detail::check_ggml_length(n, gl::kBlockElements, tensor, "dequantize a ggml block type");
  const int64_t nblocks = n / gl::kBlockElements;
  const int64_t bytes = gl::block_bytes(type);
  cpu::parallel_for(detail::ggml_thread_count(threads), nblocks, [&](int64_t b) {
    gl::dequantize_block(type, blocks + b * bytes, out + b * gl::kBlockElements);
  });
}

namespace {

// The block type a GGUF type number names, or an Error naming `tensor`.
gl::GgmlBlockType block_type(GgmlType type, const std::string& tensor) {
  if (!ggml_blocks_supported(type))
    throw Error(ErrorCode::InvalidArgument, "", tensor,
                std::string("qpack does not quantize or dequantize ggml type ") +
                    ggml_type_name(type) + " on the CPU");
  return gl::GgmlBlockType(uint32_t(type));
}

}  // namespace

bool ggml_blocks_supported(GgmlType type) {
  return gl::is_block_type(gl::GgmlBlockType(uint32_t(type)));
}

uint64_t ggml_blocks_bytes(GgmlType type, int64_t n) {
  const gl::GgmlBlockType t = block_type(type, {});
  return uint64_t(n / gl::block_elements(t)) * uint64_t(gl::block_bytes(t));
}

bool ggml_type_takes_method(GgmlType type) {
  return ggml_blocks_supported(type) && !gl::is_kquant(gl::GgmlBlockType(uint32_t(type))) &&
         gl::takes_method(gl::GgmlLegacyType(uint32_t(type)));
}

void quantize_ggml_blocks_cpu(GgmlType type, const void* src, DType src_dtype, int64_t n,
                              uint8_t* out, int threads, const std::string& tensor,
                              QuantMethod method) {
  const gl::GgmlBlockType t = block_type(type, tensor);
  if (gl::is_kquant(t)) {
    if (method != QuantMethod::Rtn)
      throw Error(ErrorCode::InvalidArgument, "", tensor,
                  std::string("--method search and refit choose Q4_1 and Q5_1 blocks only, not ") +
                      ggml_type_name(type) + " (its own fit is ggml's; docs/quantization.md §G9)");
    return detail::quantize_kquant_cpu(t, src, src_dtype, n, out, threads, tensor);
  }
  quantize_ggml_blocks_cpu(gl::GgmlLegacyType(uint32_t(t)), src, src_dtype, n, out, threads, tensor,
                           method);
}

void dequantize_ggml_blocks_cpu(GgmlType type, const uint8_t* blocks, int64_t n, float* out,
                                int threads, const std::string& tensor) {
  const gl::GgmlBlockType t = block_type(type, tensor);
  if (gl::is_kquant(t)) return detail::dequantize_kquant_cpu(t, blocks, n, out, threads, tensor);
  dequantize_ggml_blocks_cpu(gl::GgmlLegacyType(uint32_t(t)), blocks, n, out, threads, tensor);
}

}  // namespace qpack
