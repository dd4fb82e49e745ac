// --device, declared the same way by every subcommand: the spellings are the
// kernels library's parse_device (cpu, cuda, cuda:N, auto) and the default
// is the library's (auto); docs/cli.md, "--device", documents both.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "qpack/converter/quantizer.hpp"
#include "qpack/kernels/device.hpp"

namespace qpack::cli {

struct DeviceOption {
  std::string text = device_name(DeviceSelection{});
  // One device; throws for a list (callers that take lists ask is_list first).
  DeviceSelection value() const { return parse_device(text); }
  bool is_list() const { return is_device_list(text); }  // cuda:all, cuda:N,M
};

// Declares --device on `sub`; `what` says what runs there ("the metrics
// pass"). A spelling parse_device refuses is a usage error (exit 2) with its
// message; with `lists`, the device lists of is_device_list are spellings
// too (convert).
CLI::Option* add_device_option(CLI::App* sub, DeviceOption* option, const std::string& what,
                               bool lists = false);

// convert: the quantizer for a selection. resolve_device first, so CUDA asked
// for but unusable is Error(NoDevice). A list gives one CUDA quantizer per
// device behind make_quantizer_set.
std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceSelection& device, int threads);
std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceOption& device, int threads);

}  // namespace qpack::cli
