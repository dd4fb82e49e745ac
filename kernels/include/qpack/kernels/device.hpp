// Which processor runs a piece of work: the CPU, a CUDA device, or CUDA when
// one is usable (auto). Converter, verifier and exporters take this; the CLI
// parses it from one vocabulary (tools/qpack/device.hpp).
#pragma once

namespace qpack {

enum class DeviceKind { Cpu, Cuda, Auto };

}  // namespace qpack
