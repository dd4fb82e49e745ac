// Which processor runs a piece of work: the CPU, a CUDA device, or CUDA when
// one is usable (auto). The converter, the verifier and the exporters take a
// DeviceSelection; every subcommand's --device is parse_device() of its text
// (through tools/qpack/device.hpp). docs/cli.md documents the spellings and
// the one default, auto: a choice that changes only the speed, since the CPU
// and CUDA paths give the same bytes and the same reports.
#pragma once

#include <string>
#include <vector>

namespace qpack {

enum class DeviceKind { Cpu, Cuda, Auto };

struct DeviceSelection {
  DeviceKind kind = DeviceKind::Auto;
  int index = 0;  // CUDA device ordinal of cuda:N; 0 for cpu, auto and plain cuda

  bool operator==(const DeviceSelection& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const DeviceSelection& o) const { return !(*this == o); }
};

// "cpu", "cuda", "auto".
const char* device_kind_name(DeviceKind kind);

// Exactly "cpu", "cuda" (device 0), "cuda:N" (N decimal digits, < 2^31) or
// "auto". Anything else ("gpu", "CUDA", "cuda:", "cuda:-1", "cuda:1x") throws
// Error(InvalidArgument): "unknown device 'gpu' (expected cpu, cuda, cuda:N
// or auto)".
DeviceSelection parse_device(const std::string& text);

// "cpu", "cuda:N" or "auto": parse_device reads it back.
std::string device_name(const DeviceSelection& device);

// What a selection means on this machine and build; the result is Cpu or
// Cuda. Cpu stays Cpu. Auto is CUDA device 0 when cuda::cuda_available(), and
// the CPU otherwise. Cuda throws Error(NoDevice) when no CUDA device is usable
// (saying why, e.g. a build without CUDA) or when the index is not below
// cuda::device_count().
DeviceSelection resolve_device(const DeviceSelection& device);

// Several CUDA devices for one conversion (`convert --device`): "cuda:all",
// every visible device, or "cuda:N,M,..." (two or more ordinals, comma-
// separated, no spaces). is_device_list says whether `text` is spelt as one
// (it is then never a parse_device spelling); resolve_device_list gives the
// ordinals (ascending for "cuda:all", as written otherwise) and throws
// Error(InvalidArgument) for a malformed or repeated ordinal and
// Error(NoDevice), worded as resolve_device's, when CUDA is unusable or an
// ordinal is not below cuda::device_count().
bool is_device_list(const std::string& text);
std::vector<int> resolve_device_list(const std::string& text);

}  // namespace qpack
