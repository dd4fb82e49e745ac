// The parts of qpack/cuda_quant.hpp that need no CUDA: built with and
// without QPACK_ENABLE_CUDA.
#include <algorithm>
#include <cstdio>
#include <string>

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/format/error.hpp"

namespace qpack::cuda {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::Ok: return "ok";
    case StatusCode::InvalidArgument: return "invalid argument";
    case StatusCode::NoDevice: return "no device";
    case StatusCode::OutOfMemory: return "out of device memory";
    case StatusCode::CudaError: return "CUDA error";
  }
  return "unknown";
}

void throw_if_failed(const Status& status, const std::string& tensor) {
  if (status.ok()) return;
  ErrorCode code = ErrorCode::Cuda;
  if (status.code == StatusCode::NoDevice) code = ErrorCode::NoDevice;
  if (status.code == StatusCode::InvalidArgument) code = ErrorCode::InvalidArgument;
  throw Error(code, "", tensor, status.message);
}

std::string describe(const DeviceInfo& d) {
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", double(d.total_memory) / double(1ull << 30));
  return "cuda:" + std::to_string(d.device) + " (" + d.name + ", sm_" + std::to_string(d.cc_major) +
         std::to_string(d.cc_minor) + ", " + std::to_string(d.multiprocessors) + " SMs, " + mem + ")";
}

int64_t tile_first_row(const GroupLayout& L, int64_t gr) {
  if (L.groups_per_axis <= 0) return 0;
  const int64_t o = gr / L.groups_per_axis, g = gr % L.groups_per_axis;
  return o * L.axis_len + g * L.group_size;
}

int64_t tile_end_row(const GroupLayout& L, int64_t gr_end) {
  if (gr_end <= 0 || L.groups_per_axis <= 0) return 0;
  const int64_t last = gr_end - 1;
  const int64_t o = last / L.groups_per_axis, g = last % L.groups_per_axis;
  return o * L.axis_len + std::min((g + 1) * L.group_size, L.axis_len);
}

}  // namespace qpack::cuda
