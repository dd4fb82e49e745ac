#include "device.hpp"

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/format/error.hpp"

namespace qpack::cli {

CLI::Option* add_device_option(CLI::App* sub, DeviceOption* option, const std::string& what) {
  const CLI::Validator spelling(
      [](std::string& text) {
        try {
          (void)parse_device(text);
          return std::string();
        } catch (const Error& e) {
          return e.reason();
        }
      },
      "cpu|cuda|cuda:N|auto");
  return sub
      ->add_option("--device", option->text,
                   "where " + what +
                       " runs: cpu, cuda (device 0), cuda:N, or auto (default: CUDA device 0 "
                       "when usable, else the CPU; the output is the same either way)")
      ->default_str(option->text)
      ->check(spelling);
}

std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceSelection& device, int threads) {
  const DeviceSelection d = resolve_device(device);
  if (d.kind == DeviceKind::Cuda) return make_cuda_quantizer(d.index);
  return make_cpu_quantizer(threads);
}

}  // namespace qpack::cli
