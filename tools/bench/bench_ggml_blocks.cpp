// ggml's block types on the GPU (qpack/kernels/ggml_blocks.hpp), legacy and
// K-quants: quantize and dequantize throughput per type and source dtype, next to the
// device-to-device copy bandwidth measured in the same run (counted as
// NVIDIA's bandwidthTest counts it: 2 x bytes / time). A kernel's bytes are
// what it must move: source elements read plus blocks written (quantize),
// blocks read plus F32 written (dequantize). Before timing, the device's
// bytes are compared with the spec's scalar reference (the whole tensor for
// the legacy types, its first 2^20 elements for the K-quants, whose scalar
// reference takes seconds per tensor); a mismatch ends the run with exit 1.
//
//   qpack_bench_ggml_blocks [--rows R] [--cols C] [--iters N]
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/ggml_blocks.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/ggml_block_types.hpp"

using namespace qpack;
namespace gl = spec::ggml;

#define CK(call) bench::check_cuda((call), #call, 1)
#define CS(call) bench::check_status((call), #call, 1)

namespace {

// Best of `iters` timings of `work` (milliseconds), after one warm-up.
template <class F>
float best_ms(int iters, F&& work) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  work();
  CK(cudaDeviceSynchronize());
  float best = 1e30f;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(e0));
    work();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (ms < best) best = ms;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 11008, cols = 4096;
  int iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--rows"))
      rows = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--cols"))
      cols = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters"))
      iters = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--rows R] [--cols C] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  if (cols % 256 != 0 || rows <= 0 || cols <= 0 || iters <= 0) {
    std::fprintf(stderr, "cols must be a positive multiple of 256 (a K-quant super-block)\n");
    return 2;
  }
  std::string why;
  if (!cuda::cuda_available(&why)) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 6;
  }
  cuda::DeviceInfo info;
  CS(cuda::query_device(0, &info));
  const int64_t n = rows * cols;
  std::printf("device: %s; tensor [%lld, %lld]; best of %d\n", cuda::describe(info).c_str(),
              (long long)rows, (long long)cols, iters);

  // Source: normal values, in F32 and as F16/BF16.
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> f32(static_cast<size_t>(n));
  for (auto& v : f32) v = normal(rng);
  std::vector<uint16_t> f16(static_cast<size_t>(n)), bf16(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    f16[size_t(i)] = f32_to_f16_rne(f32[size_t(i)]);
    bf16[size_t(i)] = f32_to_bf16_rne(f32[size_t(i)]);
  }
  cuda::DeviceBuffer d_src, d_blocks, d_out, d_copy;
  CS(d_src.allocate(size_t(n) * 4));
  CS(d_blocks.allocate(size_t(n / 32) * gl::kQ8_0BlockBytes));
  CS(d_out.allocate(size_t(n) * 4));
  CS(d_copy.allocate(size_t(n) * 4));

  const size_t copy_bytes = size_t(n) * 2;
  const float copy_ms = best_ms(iters, [&] {
    CK(cudaMemcpyAsync(d_copy.data(), d_out.data(), copy_bytes, cudaMemcpyDeviceToDevice, 0));
  });
  const double copy_bw = 2.0 * double(copy_bytes) / (copy_ms * 1e-3);
  std::printf("device-to-device copy: %.1f GB/s (of %.0f MB)\n\n", copy_bw / 1e9, copy_bytes / 1e6);
  std::printf("%-6s %-5s %-10s %10s %10s %8s\n", "type", "src", "kernel", "ms", "GB/s", "of copy");

  int rc = 0;
  using gl::GgmlBlockType;
  const GgmlBlockType types[] = {GgmlBlockType::Q4_0, GgmlBlockType::Q4_1, GgmlBlockType::Q5_0,
                                 GgmlBlockType::Q5_1, GgmlBlockType::Q8_0, GgmlBlockType::Q2_K,
                                 GgmlBlockType::Q3_K, GgmlBlockType::Q4_K, GgmlBlockType::Q5_K,
                                 GgmlBlockType::Q6_K};
  for (const DType dt : {DType::F16, DType::BF16, DType::F32}) {
    const void* host = dt == DType::F32   ? static_cast<const void*>(f32.data())
                       : dt == DType::F16 ? static_cast<const void*>(f16.data())
                                          : static_cast<const void*>(bf16.data());
    const size_t src_bytes = size_t(n) * (dt == DType::F32 ? 4 : 2);
    CK(cudaMemcpy(d_src.data(), host, src_bytes, cudaMemcpyHostToDevice));
    std::vector<float> values(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      values[size_t(i)] = dt == DType::F32   ? f32[size_t(i)]
                          : dt == DType::F16 ? f16_to_f32(f16[size_t(i)])
                                             : bf16_to_f32(bf16[size_t(i)]);
    for (const GgmlBlockType t : types) {
      const int64_t be = gl::block_elements(t);
      const size_t block_bytes = size_t(n / be) * size_t(gl::block_bytes(t));
      CS(cuda::quantize_ggml_blocks(t, d_src.data(), dt, n, d_blocks.as<uint8_t>(), nullptr));
      const int64_t check_n = gl::is_kquant(t) && n > (int64_t(1) << 20) ? int64_t(1) << 20 : n;
      const size_t check_bytes = size_t(check_n / be) * size_t(gl::block_bytes(t));
      std::vector<uint8_t> got(check_bytes), want(check_bytes);
      CK(cudaMemcpy(got.data(), d_blocks.data(), check_bytes, cudaMemcpyDeviceToHost));
      gl::quantize_row(t, values.data(), check_n, want.data());
      const bool same = got == want;
      if (!same) rc = 1;
      const float qms = best_ms(iters, [&] {
        CS(cuda::quantize_ggml_blocks(t, d_src.data(), dt, n, d_blocks.as<uint8_t>(), nullptr));
      });
      const double qbw = double(src_bytes + block_bytes) / (qms * 1e-3);
      std::printf("%-6s %-5s %-10s %10.3f %10.1f %7.1f%%%s\n", gl::type_name(t), dtype_name(dt),
                  "quantize", qms, qbw / 1e9, 100.0 * qbw / copy_bw,
                  same ? "" : "  MISMATCH vs the reference");
      if (dt == DType::F16) {  // dequantize does not depend on the source dtype
        const float dms = best_ms(iters, [&] {
          CS(cuda::dequantize_ggml_blocks(t, d_blocks.as<uint8_t>(), n, d_out.as<float>(),
                                          nullptr));
        });
        const double dbw = double(block_bytes + size_t(n) * 4) / (dms * 1e-3);
        std::printf("%-6s %-5s %-10s %10.3f %10.1f %7.1f%%\n", gl::type_name(t), "", "dequant>f32",
                    dms, dbw / 1e9, 100.0 * dbw / copy_bw);
      }
    }
  }
  std::printf(
      "\npeer: none on the device in this build (ggml's CUDA quantizer is not built "
      "here); the CPU peer is gguf-py, see docs/performance.md\n");
  return rc;
}
