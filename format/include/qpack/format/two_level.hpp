// A two-level tensor's parameters (docs/quantization.md §T) expanded to the
// ordinary form every decoder, verifier and exporter reads: one binary32
// scale and zero-point per group. Exact (§T4), so decoding the expansion
// with §6 is decoding the tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "qpack/spec/layout.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {

struct ExpandedParams {
  std::vector<uint8_t> scales, zeros;  // F32, [outer][P][inner]
  GroupLayout layout;                  // the tensor's, one level (super_block 0)
  // The tensor's scheme with F32 parameters and one level. Its method is
  // Search where the tensor's was RTN: §T6's bound is §M4's formula (the
  // clipped-range term), which has_clipped_range selects by the method.
  QuantScheme scheme;
};

// scales and zeros are the tensor's two sections as stored (§T5).
ExpandedParams expand_two_level(const GroupLayout& layout, const QuantScheme& scheme,
                                const uint8_t* scales, const uint8_t* zeros);

}  // namespace qpack
