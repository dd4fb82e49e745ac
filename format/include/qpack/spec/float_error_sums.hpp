// The verifier's sums over a tensor whose reconstruction is already a float32
// array (a GGUF tensor decoded by ggml's rules), in a fixed order written
// once for the host and a device, so that every thread count and every
// device gives the same bits:
//   * a unit is 64 consecutive elements in flat order, accumulated in order;
//   * a block is 256 consecutive units (kFloatBlockElements elements; the
//     last block of a tensor may be short), its unit sums reduced by the fixed
//     tree of error_sums.hpp (strides 128, 64, ..., 1);
//   * the block sums are added in block order.
// The element rule is accumulate_element's without the §7 bound, which is a
// property of qpack's scheme and not of ggml's types.
#pragma once

#include <cstdint>

#include "qpack/spec/error_sums.hpp"

namespace qpack::spec {

constexpr int64_t kFloatUnitElements = 64;
constexpr int64_t kFloatBlockElements = kFloatUnitElements * kBlockUnits;

// Adds one element (source x, reconstruction xh, flat index) to a unit's
// sums; elements arrive in ascending flat order.
QPACK_HD void accumulate_float_element(PartialSums& acc, float x, float xh, int64_t flat) {
  if (!is_finite_f32(x)) {
    ++acc.nonfinite;
    return;
  }
  const double xd = x, hd = xh;
  const double e = sub_f64(xd, hd);
  const double ae = abs_f64(e);
  acc.sq_err = add_f64(acc.sq_err, mul_f64(e, e));
  acc.abs_err = add_f64(acc.abs_err, ae);
  acc.sq_ref = add_exact_product_f64(acc.sq_ref, xd, xd);
  acc.sq_hat = add_exact_product_f64(acc.sq_hat, hd, hd);
  acc.dot = add_exact_product_f64(acc.dot, xd, hd);
  ++acc.count;
  // A NaN error (a non-finite stored scale) ranks as the largest.
  const double rank = ae == ae ? ae : f64_from_bits(0x7ff0000000000000ull);
  if (rank > acc.max_abs) {
    acc.max_abs = rank;
    acc.max_index = flat;
  }
}

// The sums of one block: n (<= kFloatBlockElements) elements of ref and hat
// starting at flat index `flat0` (a multiple of kFloatBlockElements).
// `slots` is scratch of kBlockUnits entries; the result is in slots[0].
// Full units go four at a time, element k of each in turn: every unit still
// sees its own elements in order, so its sums are those of the plain loop
// (the four independent chains only run side by side); the tail units take
// the plain loop itself.
QPACK_HD void float_block_sums(const float* ref, const float* hat, int64_t n, int64_t flat0,
                               PartialSums* slots) {
  constexpr int kLanes = 4;
  const int64_t full_units = n / kFloatUnitElements;
  int t = 0;
  for (; t + kLanes <= full_units; t += kLanes) {
    // The lanes' sums as plain arrays (registers), each step without a
    // branch: a non-finite source element adds +0.0 to every sum (the sums
    // start at +0.0 and never become -0.0, so that is the plain loop's skip)
    // and is counted apart, as accumulate_float_element does.
    double sq_err[kLanes], abs_err[kLanes], sq_ref[kLanes], sq_hat[kLanes], dot[kLanes];
    double mx[kLanes];
    int64_t mx_at[kLanes];
    uint64_t count[kLanes];
    for (int u = 0; u < kLanes; ++u) {
      sq_err[u] = abs_err[u] = sq_ref[u] = sq_hat[u] = dot[u] = 0.0;
      mx[u] = -1.0;
      mx_at[u] = kNoIndex;
      count[u] = 0;
    }
    const int64_t base = int64_t(t) * kFloatUnitElements;
    for (int64_t k = 0; k < kFloatUnitElements; ++k)
    // Unrolled, so that the lane arrays live in registers.
#if defined(__CUDA_ARCH__)
#pragma unroll
#else
#pragma GCC unroll 4
#endif
      for (int u = 0; u < kLanes; ++u) {
        const int64_t i = base + int64_t(u) * kFloatUnitElements + k;
        const bool fin = is_finite_f32(ref[i]);
        const double xd = fin ? double(ref[i]) : 0.0;
        const double hd = fin ? double(hat[i]) : 0.0;
        const double e = sub_f64(xd, hd);
        const double ae = abs_f64(e);
        sq_err[u] = add_f64(sq_err[u], mul_f64(e, e));
        abs_err[u] = add_f64(abs_err[u], ae);
        sq_ref[u] = add_exact_product_f64(sq_ref[u], xd, xd);
        sq_hat[u] = add_exact_product_f64(sq_hat[u], hd, hd);
        dot[u] = add_exact_product_f64(dot[u], xd, hd);
        count[u] += fin ? 1u : 0u;
        const double rank = ae == ae ? ae : f64_from_bits(0x7ff0000000000000ull);
        const bool take = fin && rank > mx[u];
        mx[u] = take ? rank : mx[u];
        mx_at[u] = take ? flat0 + i : mx_at[u];
      }
    for (int u = 0; u < kLanes; ++u) {
      PartialSums& p = slots[t + u];
      partial_init(p);
      p.sq_err = sq_err[u];
      p.abs_err = abs_err[u];
      p.sq_ref = sq_ref[u];
      p.sq_hat = sq_hat[u];
      p.dot = dot[u];
      p.max_abs = mx[u];
      p.max_index = mx_at[u];
      p.count = count[u];
      p.nonfinite = uint64_t(kFloatUnitElements) - count[u];
    }
  }
  for (; t < kBlockUnits; ++t) {
    partial_init(slots[t]);
    const int64_t k0 = int64_t(t) * kFloatUnitElements;
    const int64_t k1 = k0 + kFloatUnitElements < n ? k0 + kFloatUnitElements : n;
    for (int64_t k = k0; k < k1; ++k) accumulate_float_element(slots[t], ref[k], hat[k], flat0 + k);
  }
  for (int stride = kBlockUnits / 2; stride > 0; stride >>= 1)
    for (int t2 = 0; t2 < stride; ++t2) partial_merge(slots[t2], slots[t2 + stride]);
}

}  // namespace qpack::spec
