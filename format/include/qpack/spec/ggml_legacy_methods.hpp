// The parameter methods of docs/quantization.md §M (`--method search` and
// `refit`) for the GGUF legacy types with a float minimum, Q4_1 and Q5_1
// (docs/quantization.md §G9): a block's (d, m) chosen by §M2's search or
// §M3's refit instead of ggml's min-max rule, kept only when the block's
// error under ggml's own decode is strictly smaller than llama.cpp's block.
// So a searched block is never worse than llama.cpp's, and the file is an
// ordinary Q4_1 / Q5_1 tensor that llama.cpp and gguf-py read unchanged.
//
// One text for the scalar reference, the CPU path and the CUDA kernel, as
// ggml_legacy.hpp is. The other legacy types (Q4_0, Q5_0, Q8_0) have no
// minimum to fit; their blocks are always ggml's (takes_method is false).
#pragma once

#include <cstdint>

#include "qpack/spec/ggml_kquants.hpp"
#include "qpack/spec/ggml_legacy.hpp"
#include "qpack/spec/group_methods.hpp"
#include "qpack/spec/numerics.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack::spec::ggml {

// True for the types whose blocks a method can change: Q4_1 and Q5_1.
QPACK_HD bool takes_method(GgmlLegacyType t) {
  return t == GgmlLegacyType::Q4_1 || t == GgmlLegacyType::Q5_1;
}
// The largest code of a type that takes a method (15 or 31).
QPACK_HD int method_max_code(GgmlLegacyType t) { return t == GgmlLegacyType::Q5_1 ? 31 : 15; }

// The block error of §G9: E = sum_j (x_hat_j - x_j)^2 in binary64, j = 0..31
// ascending from +0, one rounding per subtraction, product and sum, with
// x_hat_j ggml's decode of the block (dequantize_block: fl(fl(c*D) + M), two
// binary32 roundings, no fma) and x_hat_j - x_j taken as fl64(x_hat_j) -
// fl64(x_j). A block whose d or m is Inf in F16 has E = NaN or +Inf.
QPACK_HD double block_error(GgmlLegacyType t, const float* x, const uint8_t* block) {
  float y[kBlockElements];
  dequantize_block(t, block, y);
  double e = 0.0;
  for (int j = 0; j < kBlockElements; ++j) {
    const double d = sub_f64(double(y[j]), double(x[j]));
    e = add_f64(e, mul_f64(d, d));
  }
  return e;
}

// A method's binary32 (scale, offset) as the block stores it: D = f16(scale),
// M = f16(offset) (round to nearest even), inv = fl(1/D). valid is false
// unless D is finite and > 0 and M is finite: such a proposal is never taken.
struct BlockProposal {
  uint16_t d_bits, m_bits;
  float d, m, inv;
  bool valid;
};
QPACK_HD BlockProposal block_proposal(float scale, float offset) {
  BlockProposal p;
  p.d_bits = f32_to_f16_rne(scale);
  p.m_bits = f32_to_f16_rne(offset);
  p.d = f16_to_f32(p.d_bits);
  p.m = f16_to_f32(p.m_bits);
  p.valid = is_finite_f32(p.d) && p.d > 0.0f && is_finite_f32(p.m);
  p.inv = p.valid ? div_f32(1.0f, p.d) : 0.0f;
  return p;
}

// The code of x under a proposal: Part I §4.6's encode with the stored D
// and M, c = clamp(rint(fl(fl(x - M) * inv)), 0, N), ties to even, the clamp
// in binary32 (an infinite product clamps to an end). For finite x and a
// valid proposal the product is never NaN; a NaN element (outside the rule,
// its block's error is NaN and the proposal is never taken) gives 0.
QPACK_HD int proposal_code(const BlockProposal& p, float x, int max_code) {
  const float t = rint_f32(mul_f32(sub_f32(x, p.m), p.inv));
  const float n = float(max_code);
  return int(t > n ? n : (t > 0.0f ? t : 0.0f));
}

// The block bytes of a proposal: d, m, then the codes packed as ggml does.
QPACK_HD void write_proposal_block(GgmlLegacyType t, const BlockProposal& p, const float* x,
                                   uint8_t* out) {
  const int max_code = method_max_code(t);
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j) c[j] = proposal_code(p, x[j], max_code);
  detail::store_u16_le(out, p.d_bits);
  detail::store_u16_le(out + 2, p.m_bits);
  if (t == GgmlLegacyType::Q5_1)
    detail::pack_five_bits(c, out + 4, out + 8);
  else
    detail::pack_nibbles(c, out + 4);
}

// The code of element j in a Q4_1 / Q5_1 block.
QPACK_HD int block_code(GgmlLegacyType t, const uint8_t* block, int j) {
  return t == GgmlLegacyType::Q5_1 ? detail::five_bit_code(block + 4, block + 8, j)
                                   : detail::nibble_code(block + 4, j);
}

namespace detail {

// The largest block bytes of a type that takes a method (Q5_1's 24).
constexpr int kMethodBlockBytes = kQ5_1BlockBytes;

// Writes the proposal's block into `best` when it is valid and its block
// error is strictly below *best_error (a NaN error never wins). Returns
// whether it was written.
QPACK_HD bool take_if_better(GgmlLegacyType t, const BlockProposal& p, const float* x,
                             uint8_t* best, double* best_error) {
  if (!p.valid) return false;
  uint8_t cand[kMethodBlockBytes];
  write_proposal_block(t, p, x, cand);
  const double e = block_error(t, x, cand);
  if (!(e < *best_error)) return false;
  for (int k = 0; k < block_bytes(t); ++k) best[k] = cand[k];
  *best_error = e;
  return true;
}

}  // namespace detail

// §G9 search: `block` holds llama.cpp's block of x (quantize_block); it is
// replaced by the proposal of §M2's search on the block's 32 elements (unit
// weights, N = 15 or 31, rmin -1, rdelta 0.1, 20 steps, squared error, the
// offset of either sign) when that proposal's block error is strictly lower.
QPACK_HD void search_block(GgmlLegacyType t, const float* x, uint8_t* block) {
  double best_error = block_error(t, x, block);
  const kquant::ScaleMinFit f =
      kquant::search_scale_and_min(GroupValues{x, nullptr}, kBlockElements, method_max_code(t),
                                   kSearchRmin, kSearchRdelta, kSearchSteps, false, false);
  if (f.constant) return;  // every element equal: nothing to fit
  detail::take_if_better(t, block_proposal(f.scale, f.min), x, block, &best_error);
}

// §G9 refit: `block` holds llama.cpp's block of x. kRefitRounds least-squares
// fits of x ~ D*c + M (§M3's sums and formulas, unit weights, no clamp) to
// the codes of the current block (llama.cpp's first, then the last
// proposal's); a proposal replaces the best block when its block error is
// strictly lower. A round stops the refit when its fit fails (every code
// equal) or its proposal is not valid.
QPACK_HD void refit_block(GgmlLegacyType t, const float* x, uint8_t* block) {
  double best_error = block_error(t, x, block);
  float sum_w = 0.0f, sum_x = 0.0f;
  for (int j = 0; j < kBlockElements; ++j) {
    sum_w = add_f32(sum_w, 1.0f);
    sum_x = add_f32(sum_x, x[j]);  // fl(1 * x) = x
  }
  int c[kBlockElements];
  for (int j = 0; j < kBlockElements; ++j) c[j] = block_code(t, block, j);
  const int max_code = method_max_code(t);
  for (int r = 0; r < kRefitRounds; ++r) {
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int j = 0; j < kBlockElements; ++j) {
      const float l = float(c[j]);  // the weight is 1: wl = l exactly
      sum_l = add_f32(sum_l, l);
      sum_l2 = add_f32(sum_l2, mul_f32(l, l));
      sum_xl = add_f32(sum_xl, mul_f32(l, x[j]));
    }
    float scale, offset;
    if (!kquant::least_squares_scale_min(sum_w, sum_x, sum_l, sum_l2, sum_xl, false, &scale,
                                         &offset))
      return;
    const BlockProposal p = block_proposal(scale, offset);
    if (!p.valid) return;
    detail::take_if_better(t, p, x, block, &best_error);
    for (int j = 0; j < kBlockElements; ++j) c[j] = proposal_code(p, x[j], max_code);
  }
}

// The step after llama.cpp's block (what a SIMD path that already wrote
// ggml's block calls): for Q4_1 and Q5_1 under Search or Refit the method's
// block replaces `block` when it is strictly better; nothing for Rtn or a
// type without a minimum.
QPACK_HD void apply_block_method(GgmlLegacyType t, QuantMethod method, const float* x,
                                 uint8_t* block) {
  if (!takes_method(t)) return;
  if (method == QuantMethod::Search) search_block(t, x, block);
  if (method == QuantMethod::Refit) refit_block(t, x, block);
}

// One block by a method: llama.cpp's block (quantize_block), then
// apply_block_method. Rtn, and every type but Q4_1 and Q5_1, is llama.cpp's
// block exactly.
QPACK_HD void quantize_block_method(GgmlLegacyType t, QuantMethod method, const float* x,
                                    uint8_t* out) {
  quantize_block(t, x, out);
  apply_block_method(t, method, x, out);
}

// n elements (a multiple of 32) by a method; false, writing nothing, for a
// bad n (as quantize_row).
QPACK_HD bool quantize_row_method(GgmlLegacyType t, QuantMethod method, const float* x, int64_t n,
                                  uint8_t* out) {
  if (n < 0 || n % kBlockElements != 0) return false;
  const int64_t bytes = block_bytes(t);
  for (int64_t b = 0; b < n / kBlockElements; ++b)
    quantize_block_method(t, method, x + b * kBlockElements, out + b * bytes);
  return true;
}

}  // namespace qpack::spec::ggml
