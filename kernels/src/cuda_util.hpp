// CUDA runtime error handling shared by the host code of kernels/: every
// runtime call goes through QPACK_CUDA_TRY (returns a Status from the
// enclosing function) or cuda_status (builds one).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "qpack/cuda_quant.hpp"

namespace qpack::cuda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return {};
  Status s;
  switch (err) {
    case cudaErrorMemoryAllocation: s.code = StatusCode::OutOfMemory; break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice: s.code = StatusCode::NoDevice; break;
    default: s.code = StatusCode::CudaError; break;
  }
  s.message = std::string(what) + ": " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")";
  return s;
}

inline Status invalid(std::string message) {
  Status s;
  s.code = StatusCode::InvalidArgument;
  s.message = std::move(message);
  return s;
}

}  // namespace qpack::cuda

#define QPACK_CUDA_TRY(call)                                                     \
  do {                                                                           \
    const cudaError_t qpack_err_ = (call);                                       \
    if (qpack_err_ != cudaSuccess) return ::qpack::cuda::cuda_status(qpack_err_, #call); \
  } while (0)
