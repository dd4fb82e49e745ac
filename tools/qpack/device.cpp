#include "device.hpp"

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/format/error.hpp"

namespace qpack::cli {

DeviceChoice resolve_device(const std::string& spec) {
  DeviceChoice d;
  if (spec == "cpu") return d;
  if (spec == "auto") {
    d.cuda = cuda::cuda_available(nullptr);
    return d;
  }
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (spec.size() > 5) {
      try {
        size_t used = 0;
        d.index = std::stoi(spec.substr(5), &used);
        if (used != spec.size() - 5 || d.index < 0) throw std::invalid_argument(spec);
      } catch (const std::exception&) {
        throw Error(ErrorCode::InvalidArgument, "", "", "bad --device '" + spec + "' (cuda:N, N >= 0)");
      }
    }
    std::string why;
    if (!cuda::cuda_available(&why))
      throw Error(ErrorCode::NoDevice, "", "", "--device " + spec + " needs a CUDA GPU: " + why);
    if (d.index >= cuda::device_count())
      throw Error(ErrorCode::NoDevice, "", "",
                  "--device " + spec + ": only " + std::to_string(cuda::device_count()) + " CUDA device(s)");
    d.cuda = true;
    return d;
  }
  throw Error(ErrorCode::InvalidArgument, "", "", "unknown --device '" + spec + "' (cpu, cuda, cuda:N, auto)");
}

std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceChoice& d, int threads) {
  if (d.cuda) return make_cuda_quantizer(d.index);
  return make_cpu_quantizer(threads);
}

}  // namespace qpack::cli
