// Which quantize kernel runs a launch (the host chose the Launch shape in
// cuda_quant.cu); instantiated once per source dtype by
// quantize_instances_{f16,bf16,f32}.cu.
#pragma once

#include "quantize_cols.cuh"
#include "quantize_rows.cuh"

namespace qpack::kernels {

// INTZ: integer zero-points (QuantArgs::integer_zero), a compile-time
// variant so that the float rule's kernels carry no integer addend.
template <DType D, int BITS, bool SYM, bool INTZ>
cudaError_t launch_quantize_t(const QuantArgs& a, const Launch& l) {
  constexpr int kVec = 16 / Src<D>::kBytes;
  if (l.rows && l.window) {
    if constexpr (Src<D>::kBytes == 2) {
      return launch_kernel(quantize_rows_window<D, BITS, SYM, INTZ>, l.blocks, kBlockThreads, l, a);
    } else {
      return cudaErrorInvalidValue;  // the host selects it for 16-bit sources only
    }
  }
  if (l.rows) {
    if (l.vector)
      return launch_kernel(quantize_rows<D, BITS, SYM, true, INTZ>, l.blocks, kBlockThreads, l, a);
    return launch_kernel(quantize_rows<D, BITS, SYM, false, INTZ>, l.blocks, kBlockThreads, l, a);
  }
  if (l.vector)
    return launch_kernel(quantize_cols<D, BITS, SYM, kVec, INTZ>, l.blocks, kBlockThreads, l, a);
  return launch_kernel(quantize_cols<D, BITS, SYM, 1, INTZ>, l.blocks, kBlockThreads, l, a);
}

template <DType D>
int launch_quantize_dtype(const QuantArgs& a, int bits, bool sym, const Launch& l) {
  switch (bits) {
    case 2:
      return int(sym              ? launch_quantize_t<D, 2, true, false>(a, l)
                 : a.integer_zero ? launch_quantize_t<D, 2, false, true>(a, l)
                                  : launch_quantize_t<D, 2, false, false>(a, l));
    case 3:
      return int(sym              ? launch_quantize_t<D, 3, true, false>(a, l)
                 : a.integer_zero ? launch_quantize_t<D, 3, false, true>(a, l)
                                  : launch_quantize_t<D, 3, false, false>(a, l));
    case 4:
      return int(sym              ? launch_quantize_t<D, 4, true, false>(a, l)
                 : a.integer_zero ? launch_quantize_t<D, 4, false, true>(a, l)
                                  : launch_quantize_t<D, 4, false, false>(a, l));
    case 8:
      return int(sym              ? launch_quantize_t<D, 8, true, false>(a, l)
                 : a.integer_zero ? launch_quantize_t<D, 8, false, true>(a, l)
                                  : launch_quantize_t<D, 8, false, false>(a, l));
    default:
      return int(cudaErrorInvalidValue);
  }
}

}  // namespace qpack::kernels
