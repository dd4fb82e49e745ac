// --device for the CLI: "cpu", "cuda", "cuda:N" or "auto" (a GPU when one is
// usable, otherwise the CPU).
#pragma once

#include <memory>
#include <string>

#include "qpack/converter/quantizer.hpp"

namespace qpack::cli {

struct DeviceChoice {
  bool cuda = false;
  int index = 0;
};

// Throws Error(InvalidArgument) for an unknown spelling and Error(NoDevice)
// when CUDA is asked for but unusable.
DeviceChoice resolve_device(const std::string& spec);
std::unique_ptr<TensorQuantizer> make_quantizer(const DeviceChoice& d, int threads);

}  // namespace qpack::cli
