// The bound of docs/quantization.md §7 that every reconstructed element must
// meet: |x - x_hat| <= error_bound(x, S, M, scheme). It is evaluated in
// double precision, one IEEE operation at a time and in a fixed order, and
// without libm (no frexp/ldexp), so that the CPU verifier, the GPU verifier
// and the tests compute the same bits:
//   b  = 0.5*S + q*((ulp(S) + S*2^-22) + 2^-126)  [+ ulp(M) float zero-point]
//   b += 2^-21 * ((|x| + |M|) + q*S)
// Groups with an integer zero-point (§7) use M = 0 and no ulp(M) term: their
// clamping costs at most Q*|S - s_exact|, which the q*(...) term covers.
// Groups whose parameters come from a method other than RTN (§M4) add the
// distance from x to their stored range [M, M + Q*S]:
//   b += max(M - x, x - fl64(M + Q*S))   when that is > 0
// and with an integer zero-point z (§M5) the range [-z*S, (Q - z)*S]:
//   b += max(fl64(-z*S) - x, x - fl64((Q - z)*S))   when that is > 0
#pragma once

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/numerics.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::spec {

// Unit in the last place of |v| in dtype d (F16/BF16/F32), as a double; for 0
// the smallest subnormal: for |v| in [2^e, 2^(e+1)) it is 2^(max(e, emin) - mant).
QPACK_HD double ulp_in(double v, DType d) {
  int mant = 23, emin = -126;
  if (d == DType::F16) {
    mant = 10;
    emin = -14;
  } else if (d == DType::BF16) {
    mant = 7;
  }
  v = abs_f64(v);
  int e = emin;
  if (v > 0.0) {
    const int biased = static_cast<int>((f64_bits(v) >> 52) & 0x7ff);
    e = biased - 1023;  // a double subnormal gives < emin and is clamped below
    if (e < emin) e = emin;
  }
  return pow2_f64(e - mant);
}

// The element-independent part of the bound, computed once per group.
struct BoundTerms {
  double base;    // b before the element term
  double abs_m;   // |M|
  double q_s;     // q*S
  bool clipped;   // §M4: add the distance outside [lo, hi]
  double lo, hi;  // M and fl64(M + q*S) when clipped
};
// float_zero: the group has a float zero-point M (asymmetric, float rule);
// otherwise m must be 0 (symmetric, or an integer zero-point).
QPACK_HD BoundTerms bound_terms(double s, double m, double q, bool float_zero, DType sd) {
  BoundTerms t;
  const double inner = add_f64(add_f64(ulp_in(s, sd), mul_f64(s, 0x1p-22)), 0x1p-126);
  double b = add_f64(mul_f64(0.5, s), mul_f64(q, inner));
  if (float_zero) b = add_f64(b, ulp_in(m, sd));
  t.base = b;
  t.abs_m = abs_f64(m);
  t.q_s = mul_f64(q, s);
  t.clipped = false;
  t.lo = 0.0;
  t.hi = 0.0;
  return t;
}
// §M4: the bound of a method other than RTN also allows the distance from
// x to the stored range [M, M + Q*S] (an element the method left outside it
// gets the nearest end's code). The base is unchanged, so an error at or
// below it still passes without the element term.
QPACK_HD void add_clipped_range(BoundTerms& t, double s, double m, double q) {
  t.clipped = true;
  t.lo = m;
  t.hi = add_f64(m, mul_f64(q, s));
}
// §M5: the same for an integer zero-point z, whose stored range is
// [-z*S, (Q - z)*S] (both products exact: |q - z| <= 255, S a binary32).
QPACK_HD void add_clipped_range_int(BoundTerms& t, double s, double z, double q) {
  t.clipped = true;
  t.lo = mul_f64(sub_f64(0.0, z), s);
  t.hi = mul_f64(sub_f64(q, z), s);
}
// Either rule: m is the stored zero-point (M, or the integer z).
QPACK_HD void add_clipped_range(BoundTerms& t, double s, double m, double q, bool integer_zero) {
  if (integer_zero)
    add_clipped_range_int(t, s, m, q);
  else
    add_clipped_range(t, s, m, q);
}
QPACK_HD double bound_for(const BoundTerms& t, double x) {
  double b = add_f64(t.base, mul_f64(0x1p-21, add_f64(add_f64(abs_f64(x), t.abs_m), t.q_s)));
  if (t.clipped) {
    const double below = sub_f64(t.lo, x), above = sub_f64(x, t.hi);
    const double out = below > above ? below : above;
    if (out > 0.0) b = add_f64(b, out);
  }
  return b;
}

// The whole bound for one element. s and m are the stored scale and
// zero-point (ignored for symmetric and integer zero-points), as doubles.
QPACK_HD double error_bound(double x, double s, double m, const QuantScheme& scheme) {
  const bool float_zero = !scheme.symmetric && !has_integer_zero(scheme);
  BoundTerms t =
      bound_terms(s, float_zero ? m : 0.0, qmax_of(scheme), float_zero, scheme.scale_dtype);
  if (has_clipped_range(scheme))
    add_clipped_range(t, s, m, qmax_of(scheme), has_integer_zero(scheme));
  return bound_for(t, x);
}

}  // namespace qpack::spec
