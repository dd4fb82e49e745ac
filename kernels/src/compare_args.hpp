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

}  // namespace qpack::kernels
