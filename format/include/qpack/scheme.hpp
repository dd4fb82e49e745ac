// The quantization scheme of one tensor and the geometry of its groups, as
// docs/quantization.md defines them. Everything here is a pure function of
// (shape, scheme): the container, the CPU and CUDA paths and the verifier
// all size their buffers from GroupLayout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/dtype.hpp"

namespace qpack {

struct QuantScheme {
  int bits = 4;                 // 2, 3, 4 or 8
  int64_t group_size = 64;      // elements per group along `axis`; 0 = the whole axis
  int axis = 0;                 // negative counts from the end
  bool symmetric = false;
  DType scale_dtype = DType::F16;  // F16, BF16 or F32; also the zero-point's dtype

  bool operator==(const QuantScheme& o) const {
    return bits == o.bits && group_size == o.group_size && axis == o.axis &&
           symmetric == o.symmetric && scale_dtype == o.scale_dtype;
  }
};

// Checks bits, group size and scale dtype (not the axis, which needs a shape).
// Returns an empty string when valid, otherwise the reason.
std::string validate_scheme(const QuantScheme& s);

// A tensor of `shape` seen as (outer, groups_per_axis, group_size, inner) with
// the grouped axis split in groups. Codes are stored as
// [outer][groups_per_axis][bytes_per_group][inner]; scales and zero-points as
// [outer][groups_per_axis][inner].
struct GroupLayout {
  int64_t outer = 1;
  int64_t axis_len = 1;
  int64_t inner = 1;
  int64_t group_size = 1;       // resolved: never 0
  int64_t groups_per_axis = 1;  // ceil(axis_len / group_size)
  int64_t bytes_per_group = 1;  // ceil(group_size * bits / 8)
  int axis = 0;                 // resolved: 0 <= axis < rank
  int bits = 4;

  // Throws Error(InvalidArgument/UnsupportedScheme) naming `tensor`.
  static GroupLayout make(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                          const std::string& tensor = {});

  int64_t num_elements() const { return outer * axis_len * inner; }
  int64_t num_groups() const { return outer * groups_per_axis * inner; }
  uint64_t codes_bytes() const {
    return uint64_t(outer) * uint64_t(groups_per_axis) * uint64_t(bytes_per_group) * uint64_t(inner);
  }
  // Elements in group number g along the axis (the last one may be partial).
  int64_t group_len(int64_t g) const {
    const int64_t start = g * group_size;
    return axis_len - start < group_size ? axis_len - start : group_size;
  }
};

// Largest code magnitude: asymmetric codes are 0..qmax_asym, symmetric codes
// are -qmax_sym..qmax_sym stored with an offset of 2^(bits-1).
inline int qmax_asym(int bits) { return (1 << bits) - 1; }
inline int qmax_sym(int bits) { return (1 << (bits - 1)) - 1; }
inline int sym_offset(int bits) { return 1 << (bits - 1); }

// Scales below this (after rounding to the scale dtype) make a group
// degenerate: stored scale +0, all codes 0 (1/s would overflow float32).
constexpr float kMinNormalScale = 1.17549435e-38f;  // 2^-126

// Unit in the last place of |v| in `dtype` (F16/BF16/F32), as a double; for
// 0 the smallest subnormal. Used by the error bound.
double ulp_in_dtype(double v, DType dtype);

// The bound of docs/quantization.md §7 that every element must meet:
// |x - x_hat| <= error_bound(x, s, m, scheme). s and m are the stored scale
// and zero-point (m = 0 for symmetric), as doubles.
double error_bound(double x, double s, double m, const QuantScheme& scheme);

std::string scheme_to_string(const QuantScheme& s);

}  // namespace qpack
