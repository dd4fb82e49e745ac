#include "device.hpp"

#include "qpack/converter/backend_cuda.hpp"
#include "qpack/format/error.hpp"

namespace qpack::cli {

CLI::Option* add_device_option(CLI::App* sub, DeviceOption* option, const std::string& what,
                               bool lists) {
  const CLI::Validator spelling(
      [lists](std::string& text) {
        try {
          if (lists && is_device_list(text)) return std::string();
          (void)parse_device(text);
          return std::string();
        } catch (const Error& e) {
          return e.reason();
        }
      },
      lists ? "cpu|cuda|cuda:N|cuda:all|cuda:N,M|auto" : "cpu|cuda|cuda:N|auto");
  return sub
      ->add_option("--device", option->text,
                   "where " + what + " runs: cpu, cuda (device 0), cuda:N, " +
                       (lists ? std::string("cuda:all or cuda:N,M,... (several GPUs, .qpack "
                                            "output), ")
                              : std::string()) +
                       "or auto (default: CUDA device 0 when usable, else the CPU; the output "
                       "is the same either way)")
      ->default_str(option->text)
      ->check(spelling);
}

std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceOption& device, int threads) {
  if (!device.is_list()) return make_quantizer(device.value(), threads);
  std::vector<std::unique_ptr<TensorQuantizer>> parts;
  for (int id : resolve_device_list(device.text)) parts.push_back(make_cuda_quantizer(id));
  return make_quantizer_set(std::move(parts));
}

std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceSelection& device, int threads) {
  const DeviceSelection d = resolve_device(device);
  if (d.kind == DeviceKind::Cuda) return make_cuda_quantizer(d.index);
  return make_cpu_quantizer(threads);
}

}  // namespace qpack::cli
