// The geometry of a tensor's groups (docs/quantization.md §2), a pure
// function of (shape, scheme): the container, the CPU and CUDA paths and the
// verifier all size their buffers from GroupLayout, and nothing else computes
// a section size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/spec/scheme.hpp"

namespace qpack {

// Why a (shape, scheme) pair has no layout; the format library turns it
// into qpack::Error (make_layout in qpack/format/layout.hpp).
enum class LayoutFault { None, UnsupportedScheme, ShapeMismatch };

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
  int64_t super_block = 0;  // groups per super-block of two-level scales (§T); 0 = one level

  QPACK_HD int64_t num_elements() const { return outer * axis_len * inner; }
  QPACK_HD int64_t num_groups() const { return outer * groups_per_axis * inner; }
  // Bytes of the codes section.
  QPACK_HD uint64_t codes_bytes() const {
    return uint64_t(outer) * uint64_t(groups_per_axis) * uint64_t(bytes_per_group) *
           uint64_t(inner);
  }
  // Two-level scales (§T5): super-blocks along the axis, and the bytes of
  // the groups' 6-bit codes at the start of the scales and zeros sections
  // (padded with zero bits to a multiple of 4 bytes).
  QPACK_HD int64_t supers_per_axis() const {
    return super_block > 0 ? (groups_per_axis + super_block - 1) / super_block : 0;
  }
  QPACK_HD int64_t num_supers() const { return outer * supers_per_axis() * inner; }
  QPACK_HD uint64_t sub_codes_bytes() const {
    if (super_block == 0) return 0;
    const uint64_t b = (uint64_t(num_groups()) * uint64_t(kSubScaleBits) + 7) / 8;
    return (b + 3) / 4 * 4;
  }
  // Bytes of the scales section, and of the zeros section when there is one.
  QPACK_HD uint64_t params_bytes(DType scale_dtype) const {
    if (super_block > 0)
      return sub_codes_bytes() + uint64_t(num_supers()) * uint64_t(scale_bytes(scale_dtype));
    return uint64_t(num_groups()) * uint64_t(scale_bytes(scale_dtype));
  }
  // Elements in group number g along the axis (the last one may be partial).
  QPACK_HD int64_t group_len(int64_t g) const {
    const int64_t start = g * group_size;
    return axis_len - start < group_size ? axis_len - start : group_size;
  }

  // Resolves the layout of `shape` under `scheme`. Only bits, scale dtype and
  // a non-negative group size are checked: a resolved scheme read back from a
  // file may carry a group size equal to an odd axis length (the "even and
  // >= 8" rule is for requested schemes, validate_scheme). On failure returns
  // the fault and sets *why.
  static LayoutFault resolve(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                             GroupLayout* out, std::string* why);
};

inline LayoutFault GroupLayout::resolve(const std::vector<int64_t>& shape,
                                        const QuantScheme& scheme, GroupLayout* out,
                                        std::string* why) {
  const auto fail = [why](LayoutFault f, std::string reason) {
    *why = std::move(reason);
    return f;
  };
  // a * b for non-negative factors, false when it leaves 2^62 (every count
  // and byte offset must fit an int64 with room to add).
  const auto mul_ok = [](uint64_t a, uint64_t b, uint64_t* r) {
    if (a != 0 && b > (uint64_t(1) << 62) / a) return false;
    *r = a * b;
    return true;
  };
  if (shape.empty())
    return fail(LayoutFault::UnsupportedScheme, "cannot group-quantize a 0-d tensor");
  if (!is_valid_bits(scheme.bits))
    return fail(LayoutFault::UnsupportedScheme,
                "bits must be 2, 3, 4 or 8 (got " + std::to_string(scheme.bits) + ")");
  if (scheme.group_size < 0) return fail(LayoutFault::UnsupportedScheme, "negative group size");
  if (!is_scale_dtype(scheme.scale_dtype))
    return fail(LayoutFault::UnsupportedScheme, "scale dtype must be F16, BF16 or F32");
  const int rank = static_cast<int>(shape.size());
  const int axis = scheme.axis < 0 ? scheme.axis + rank : scheme.axis;
  if (axis < 0 || axis >= rank)
    return fail(LayoutFault::UnsupportedScheme, "group axis " + std::to_string(scheme.axis) +
                                                    " is out of range for a " +
                                                    std::to_string(rank) + "-d tensor");
  uint64_t outer = 1, inner = 1;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] < 0) return fail(LayoutFault::ShapeMismatch, "negative dimension");
    if (d < axis && !mul_ok(outer, uint64_t(shape[d]), &outer))
      return fail(LayoutFault::ShapeMismatch, "element count overflows");
    if (d > axis && !mul_ok(inner, uint64_t(shape[d]), &inner))
      return fail(LayoutFault::ShapeMismatch, "element count overflows");
  }
  uint64_t count;
  if (!mul_ok(outer, uint64_t(shape[axis]), &count) || !mul_ok(count, inner, &count))
    return fail(LayoutFault::ShapeMismatch, "element count overflows");
  GroupLayout g;
  g.axis = axis;
  g.bits = scheme.bits;
  g.outer = static_cast<int64_t>(outer);
  g.inner = static_cast<int64_t>(inner);
  g.axis_len = shape[axis];
  int64_t gs = scheme.group_size;
  if (gs == 0 || gs > g.axis_len) gs = g.axis_len;  // the whole axis is one group
  if (gs == 0) gs = 1;                              // empty axis: no groups at all
  g.group_size = gs;
  g.groups_per_axis = (g.axis_len + gs - 1) / gs;
  g.bytes_per_group = (gs * scheme.bits + 7) / 8;
  if (scheme.super_block < 0)
    return fail(LayoutFault::UnsupportedScheme, "negative super-block size");
  g.super_block = scheme.super_block;
  *out = g;
  return LayoutFault::None;
}

}  // namespace qpack
