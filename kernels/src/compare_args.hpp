// Arguments of the compare kernels, resolved on the host (compare.cpp), and
// the launcher each kernel family's translation unit provides
// (compare_general.cu, compare_cols.cu, compare_rows.cu). Internal to
// kernels/; compiles with a plain C++ compiler.
#pragma once

#include <cstdint>

#include "kernel_args.hpp"
#include "qpack/spec/error_sums.hpp"

namespace qpack::kernels {

// One launch: CTA i computes the partial of block block0 + i of the tensor
// of geometry `geo`, reading the buffers of `view`, into out[i]. The kernels
// take these fields as separate parameters, not as this struct: passed as one
// struct (measured with ptxas -v, nvcc 13.0, sm_90), ptxas allocated their
// registers differently, the general kernel spilling 8-32 bytes at its
// 80-register cap.
struct CompareArgs {
  spec::CompareGeometry geo;
  spec::ChunkView view;
  int64_t block0;
  spec::PartialSums* out;
  int seg_shift;  // compare_rows with 64-element units: log2(segments per group)
};

// Each returns the launch's cudaError_t as an int (0 = success); l.blocks
// CTAs on l.stream (the other fields of Launch are unused). They launch
// through launch_kernel (programmatic dependent launch), so every compare
// kernel starts with pdl_prologue().
int launch_compare_general(const CompareArgs& a, const Launch& l);
int launch_compare_cols(const CompareArgs& a, const Launch& l);
int launch_compare_rows(const CompareArgs& a, int unit_len, const Launch& l);  // unit_len: 32 or 64

// Calls launcher.template run<kSrc, BITS>() for the tensor's source dtype and
// code width: the one place the compare kernels' instantiations are chosen.
// compare_blocks checked both, so anything else is cudaErrorInvalidValue (1).
template <DType kSrc, class Launcher>
int dispatch_bits(int bits, const Launcher& launcher) {
  switch (bits) {
    case 2:
      return launcher.template run<kSrc, 2>();
    case 3:
      return launcher.template run<kSrc, 3>();
    case 4:
      return launcher.template run<kSrc, 4>();
    case 8:
      return launcher.template run<kSrc, 8>();
    default:
      return 1;
  }
}
template <class Launcher>
int dispatch_source_and_bits(const spec::CompareGeometry& geo, const Launcher& launcher) {
  switch (geo.source_dtype) {
    case DType::F16:
      return dispatch_bits<DType::F16>(geo.bits, launcher);
    case DType::BF16:
      return dispatch_bits<DType::BF16>(geo.bits, launcher);
    case DType::F32:
      return dispatch_bits<DType::F32>(geo.bits, launcher);
    default:
      return 1;
  }
}

}  // namespace qpack::kernels
