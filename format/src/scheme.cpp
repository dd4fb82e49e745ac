#include "qpack/scheme.hpp"

#include <cmath>

#include "qpack/error.hpp"

namespace qpack {

std::string validate_scheme(const QuantScheme& s) {
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8)
    return "bits must be 2, 3, 4 or 8 (got " + std::to_string(s.bits) + ")";
  if (s.group_size < 0 || (s.group_size > 0 && s.group_size < 8) || s.group_size % 2 != 0)
    return "group size must be an even number >= 8, or 0 for the whole axis (got " +
           std::to_string(s.group_size) + ")";
  if (!is_scale_dtype(s.scale_dtype))
    return std::string("scale dtype must be F16, BF16 or F32 (got ") + dtype_name(s.scale_dtype) + ")";
  return {};
}

GroupLayout GroupLayout::make(const std::vector<int64_t>& shape, const QuantScheme& scheme,
                              const std::string& tensor) {
  if (shape.empty())
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "cannot group-quantize a 0-d tensor");
  // Only bits, scale dtype and a non-negative group size are checked here: a
  // resolved scheme read back from a file may carry a group size equal to an
  // odd axis length. The "even and >= 8" rule is for requested schemes
  // (validate_scheme).
  if (scheme.bits != 2 && scheme.bits != 3 && scheme.bits != 4 && scheme.bits != 8)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor,
                "bits must be 2, 3, 4 or 8 (got " + std::to_string(scheme.bits) + ")");
  if (scheme.group_size < 0)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "negative group size");
  if (!is_scale_dtype(scheme.scale_dtype))
    throw Error(ErrorCode::UnsupportedScheme, "", tensor, "scale dtype must be F16, BF16 or F32");
  const int rank = static_cast<int>(shape.size());
  int axis = scheme.axis < 0 ? scheme.axis + rank : scheme.axis;
  if (axis < 0 || axis >= rank)
    throw Error(ErrorCode::UnsupportedScheme, "", tensor,
                "group axis " + std::to_string(scheme.axis) + " is out of range for a " +
                    std::to_string(rank) + "-d tensor");
  GroupLayout g;
  g.axis = axis;
  g.bits = scheme.bits;
  unsigned long long outer = 1, inner = 1;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] < 0)
      throw Error(ErrorCode::ShapeMismatch, "", tensor, "negative dimension");
    if (d < axis && mul_overflows_u64(outer, (unsigned long long)shape[d], &outer))
      throw Error(ErrorCode::ShapeMismatch, "", tensor, "element count overflows");
    if (d > axis && mul_overflows_u64(inner, (unsigned long long)shape[d], &inner))
      throw Error(ErrorCode::ShapeMismatch, "", tensor, "element count overflows");
  }
  g.outer = static_cast<int64_t>(outer);
  g.inner = static_cast<int64_t>(inner);
  g.axis_len = shape[axis];
  int64_t gs = scheme.group_size;
  if (gs == 0 || gs > g.axis_len) gs = g.axis_len;  // the whole axis is one group
  if (gs == 0) gs = 1;                              // empty axis: no groups at all
  g.group_size = gs;
  g.groups_per_axis = (g.axis_len + gs - 1) / gs;
  g.bytes_per_group = (gs * scheme.bits + 7) / 8;
  unsigned long long check;
  if (mul_overflows_u64(outer, (unsigned long long)g.axis_len, &check) ||
      mul_overflows_u64(check, inner, &check) || check > (1ull << 62))
    throw Error(ErrorCode::ShapeMismatch, "", tensor, "element count overflows");
  return g;
}

double ulp_in_dtype(double v, DType dtype) {
  int mant_bits, emin;
  switch (dtype) {
    case DType::F16: mant_bits = 10; emin = -14; break;
    case DType::BF16: mant_bits = 7; emin = -126; break;
    default: mant_bits = 23; emin = -126; break;
  }
  v = std::fabs(v);
  int e = emin;
  if (v > 0) {
    int ex;
    std::frexp(v, &ex);  // v = f * 2^ex, f in [0.5, 1)
    e = ex - 1;
    if (e < emin) e = emin;
  }
  return std::ldexp(1.0, e - mant_bits);
}

double error_bound(double x, double s, double m, const QuantScheme& scheme) {
  const double q = scheme.symmetric ? qmax_sym(scheme.bits) : qmax_asym(scheme.bits);
  const double eps_arith = std::ldexp(1.0, -21);
  const double min_normal = std::ldexp(1.0, -126);
  double b = 0.5 * s + q * (ulp_in_dtype(s, scheme.scale_dtype) + std::ldexp(s, -22) + min_normal);
  if (!scheme.symmetric) b += ulp_in_dtype(m, scheme.scale_dtype);
  b += eps_arith * (std::fabs(x) + std::fabs(m) + q * s);
  return b;
}

std::string scheme_to_string(const QuantScheme& s) {
  std::string r = std::to_string(s.bits) + "b g";
  r += s.group_size == 0 ? std::string("all") : std::to_string(s.group_size);
  r += " ax" + std::to_string(s.axis);
  r += s.symmetric ? " sym" : " asym";
  r += std::string(" ") + dtype_name(s.scale_dtype);
  return r;
}

}  // namespace qpack
