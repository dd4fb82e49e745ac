// Test inputs for the verifier: random tensors, safetensors sources and
// .qpack files written directly with QpackWriter + quantize_reference (no
// dependency on `qpack convert`), and an independent float64 reference of
// every metric.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/verify/metrics.hpp"

namespace qpack::vtest {

struct HostTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  uint64_t numel() const;
};

// N(0, sigma) values (F16/BF16/F32, rounded to the dtype), or random bytes
// for other dtypes.
HostTensor random_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                         std::mt19937_64& rng, double sigma = 1.0);
float get_value(const HostTensor& t, uint64_t i);
void set_value(HostTensor& t, uint64_t i, float v);

void write_source(const std::string& path, const std::vector<HostTensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A quantized tensor's sections, as quantize_reference produced them.
struct Quantized {
  QuantScheme scheme;  // resolved
  GroupLayout layout;
  std::vector<uint8_t> codes, scales, zeros;
};
Quantized quantize(const HostTensor& t, QuantScheme scheme,
                   NonFinitePolicy policy = NonFinitePolicy::Error);

// Writes a .qpack: each tensor is quantized with the scheme `choose` returns,
// or kept raw when it returns nullopt.
using SchemeChooser = std::function<std::optional<QuantScheme>(const HostTensor&)>;
void write_qpack(const std::string& path, const std::vector<HostTensor>& tensors,
                 const SchemeChooser& choose, NonFinitePolicy policy = NonFinitePolicy::Error,
                 const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
// Quantizes every F16/BF16/F32 tensor of rank >= 2 with `scheme`.
SchemeChooser quantize_matrices(QuantScheme scheme = {});

// The metrics computed the plain way: one float64 loop over
// dequantize_reference's output, in flat order, and error_bound() of
// format/src/scheme.cpp for the bound.
struct RefMetrics {
  uint64_t count = 0, nonfinite = 0, violations = 0;
  double sq_err = 0, abs_err = 0, sq_ref = 0, sq_hat = 0, dot = 0;
  double max_abs = 0;
  int64_t max_index = -1, first_violation = -1;
  double rmse() const;
  double rel() const;
  double snr_db() const;
  double cosine() const;
};
RefMetrics reference_metrics(const HostTensor& src, const Quantized& q);

// A small Llama-shaped model (HF names): embed, `layers` blocks of
// q/k/v/o/gate/up/down + norms, final norm, lm_head.
std::vector<HostTensor> tiny_llama(std::mt19937_64& rng, int layers = 2, DType dtype = DType::F32);

// Flips bits of one byte of a file in place.
void flip_byte(const std::string& path, uint64_t offset, uint8_t mask = 0x5a);

// The metrics engine's view of a source tensor and its quantized form.
QuantTensorView view_of(const HostTensor& t, const Quantized& q);

}  // namespace qpack::vtest
