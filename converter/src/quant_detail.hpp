// Pieces shared by the reference, the fast CPU path and the CUDA backend that
// are not arithmetic: locating non-finite inputs and reporting them and range
// overflows with the same message. Internal to the converter.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/spec/codes.hpp"
#include "qpack/spec/group_params.hpp"

namespace qpack::detail {

// Flat index of the first NaN/Inf in the tensor, or -1. `threads` > 1 scans
// in parallel (the answer is the same: the smallest index).
int64_t find_first_nonfinite(const uint8_t* data, DType dtype, int64_t n, int threads);

[[noreturn]] void throw_nonfinite(const QuantInput& in, const GroupLayout& layout, int64_t flat);
[[noreturn]] void throw_range_overflow(const QuantInput& in, const GroupLayout& layout,
                                       const QuantScheme& scheme, int64_t group_linear);

enum GroupResult : int { kGroupOk = 0, kGroupOverflow = 1, kGroupNonFinite = 2 };

// Quantizes group (o, g, i) exactly as the spec's steps read, one element at a
// time. `scratch` holds at least layout.group_size floats. Does not throw (it
// runs inside the thread pool's tasks): returns kGroupNonFinite when the group holds a
// NaN/Inf and the policy is Error, kGroupOverflow when its scale or
// zero-point does not fit the scale dtype. The group's code bytes must be
// zero beforehand (codes are OR-ed in).
int quantize_group(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                   NonFinitePolicy policy, const QuantBuffers& out, int64_t o, int64_t g, int64_t i,
                   float* scratch);

// Two-level scales (quantization.md §T, quant_two_level.cpp): the whole
// tensor on `threads` pool threads, with the AVX2 (and AVX-512) batches
// at those `isa` levels (the reference: 1 thread, Scalar); the same bytes for
// any count and level. Throws Error(NonFinite / RangeOverflow) naming the
// tensor.
void quantize_two_level(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out, int threads, CpuIsa isa);

}  // namespace qpack::detail
