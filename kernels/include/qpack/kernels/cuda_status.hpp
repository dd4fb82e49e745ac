// The one CUDA error idiom of qpack, for host code built against the CUDA
// runtime (kernels/src and the converter's CUDA backend): every runtime call
// goes through QPACK_CUDA_TRY (returns a Status from the enclosing function)
// or cuda_status (builds one). Needs the CUDA runtime headers, so it is only
// included where QPACK_ENABLE_CUDA is on.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "qpack/kernels/cuda_quant.hpp"

namespace qpack::cuda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return {};
  Status s;
  switch (err) {
    case cudaErrorMemoryAllocation:
      s.code = StatusCode::OutOfMemory;
      break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      s.code = StatusCode::NoDevice;
      break;
    default:
      s.code = StatusCode::CudaError;
      break;
  }
  s.message =
      std::string(what) + ": " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")";
  return s;
}

inline Status invalid(std::string message) {
  Status s;
  s.code = StatusCode::InvalidArgument;
  s.message = std::move(message);
  return s;
}

}  // namespace qpack::cuda

#define QPACK_CUDA_TRY(call)                                                             \
  do {                                                                                   \
    const cudaError_t qpack_err_ = (call);                                               \
    if (qpack_err_ != cudaSuccess) return ::qpack::cuda::cuda_status(qpack_err_, #call); \
  } while (0)
