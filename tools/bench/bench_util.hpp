// What the CUDA benchmarks share: a benchmark stops at the first CUDA
// failure, naming the call, with the exit code the caller chooses (1 for
// qpack_bench_cuda, 6 -- qpack's "CUDA failure" code -- for qpack_bench_verify).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#include "qpack/kernels/cuda_quant.hpp"

namespace qpack::bench {

inline void check_cuda(cudaError_t e, const char* what, int exit_code) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(exit_code);
  }
}
inline void check_status(const cuda::Status& s, const char* what, int exit_code) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.message.c_str());
    std::exit(exit_code);
  }
}

}  // namespace qpack::bench
