// The parts of qpack/kernels/cuda_quant.hpp that need no CUDA, and the device
// selection of qpack/kernels/device.hpp: built with and without
// QPACK_ENABLE_CUDA.
#include <algorithm>
#include <cstdio>
#include <string>

#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/device.hpp"

namespace qpack::cuda {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::Ok:
      return "ok";
    case StatusCode::InvalidArgument:
      return "invalid argument";
    case StatusCode::NoDevice:
      return "no device";
    case StatusCode::OutOfMemory:
      return "out of device memory";
    case StatusCode::CudaError:
      return "CUDA error";
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
         std::to_string(d.cc_minor) + ", " + std::to_string(d.multiprocessors) + " SMs, " + mem +
         ")";
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

namespace qpack {

const char* device_kind_name(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::Cpu:
      return "cpu";
    case DeviceKind::Cuda:
      return "cuda";
    case DeviceKind::Auto:
      return "auto";
  }
  return "auto";
}

DeviceSelection parse_device(const std::string& text) {
  if (text == "cpu") return {DeviceKind::Cpu, 0};
  if (text == "auto") return {DeviceKind::Auto, 0};
  if (text == "cuda") return {DeviceKind::Cuda, 0};
  if (text.size() > 5 && text.compare(0, 5, "cuda:") == 0) {
    long long index = 0;
    bool digits = true;
    for (size_t i = 5; i < text.size() && digits; ++i) {
      digits = text[i] >= '0' && text[i] <= '9';
      index = index * 10 + (text[i] - '0');
      if (index > 0x7fffffff) digits = false;
    }
    if (digits) return {DeviceKind::Cuda, int(index)};
  }
  throw Error(ErrorCode::InvalidArgument, "", "",
              "unknown device '" + text + "' (expected cpu, cuda, cuda:N or auto)");
}

std::string device_name(const DeviceSelection& d) {
  if (d.kind == DeviceKind::Cuda) return "cuda:" + std::to_string(d.index);
  return device_kind_name(d.kind);
}

DeviceSelection resolve_device(const DeviceSelection& d) {
  if (d.kind == DeviceKind::Cpu) return {DeviceKind::Cpu, 0};
  std::string why;
  const bool usable = cuda::cuda_available(&why);
  if (d.kind == DeviceKind::Auto) return {usable ? DeviceKind::Cuda : DeviceKind::Cpu, 0};
  // One message for every command and every cause (no driver, a driver
  // too old for the runtime, a build without CUDA, an index past the count):
  // what to do first, the cause after it.
  if (!usable)
    throw Error(ErrorCode::NoDevice, "", "",
                "no usable CUDA device (use --device cpu): " + device_name(d) + ": " + why);
  const int n = cuda::device_count();
  if (d.index >= n)
    throw Error(ErrorCode::NoDevice, "", "",
                "no usable CUDA device (use --device cpu): " + device_name(d) + ": only " +
                    std::to_string(n) + " CUDA device(s) visible");
  return d;
}

bool is_device_list(const std::string& text) {
  return text == "cuda:all" ||
         (text.compare(0, 5, "cuda:") == 0 && text.find(',') != std::string::npos);
}

std::vector<int> resolve_device_list(const std::string& text) {
  if (!is_device_list(text))
    throw Error(ErrorCode::InvalidArgument, "", "",
                "'" + text + "' is no device list (expected cuda:all or cuda:N,M,...)");
  std::vector<int> ids;
  if (text != "cuda:all") {
    size_t at = 5;
    while (at <= text.size()) {
      const size_t end = std::min(text.find(',', at), text.size());
      const std::string item = text.substr(at, end - at);
      DeviceSelection one{};
      try {
        one = parse_device("cuda:" + item);
      } catch (const Error&) {
        throw Error(ErrorCode::InvalidArgument, "", "",
                    "bad device list '" + text + "': '" + item + "' is no CUDA ordinal");
      }
      if (std::find(ids.begin(), ids.end(), one.index) != ids.end())
        throw Error(ErrorCode::InvalidArgument, "", "",
                    "bad device list '" + text + "': cuda:" + item + " is named twice");
      ids.push_back(one.index);
      at = end + 1;
    }
  }
  std::string why;
  if (!cuda::cuda_available(&why))
    throw Error(ErrorCode::NoDevice, "", "",
                "no usable CUDA device (use --device cpu): " + text + ": " + why);
  const int n = cuda::device_count();
  if (ids.empty())
    for (int i = 0; i < n; ++i) ids.push_back(i);
  for (int id : ids)
    if (id >= n)
      throw Error(ErrorCode::NoDevice, "", "",
                  "no usable CUDA device (use --device cpu): cuda:" + std::to_string(id) +
                      ": only " + std::to_string(n) + " CUDA device(s) visible");
  return ids;
}

}  // namespace qpack
