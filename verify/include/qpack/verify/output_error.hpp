// The checks that look past the weights: the importance-weighted error (a
// llama.cpp importance matrix's per-channel weights) and the output error of
// a linear layer on sample inputs. docs/quantization.md section 11 defines
// both; every sum is float64, in the order written there, whatever the
// thread count. CPU only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qpack/spec/dtype.hpp"
#include "qpack/verify/metrics.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack {

// A tensor's reconstruction as float32, element for element in the tensor's
// own (row-major) order, by docs/quantization.md section 6's decode.
std::vector<float> reconstruct_qpack_tensor(const QuantTensorView& view, int threads);

// A weight of `rows` x `cols` (row-major; the source in `src_dtype`, the
// reconstruction float32) seen as `matrices` stacked matrices of rows /
// matrices rows each; `weights` holds matrices * cols values, matrix m's
// channel j at m * cols + j. Source elements that are not finite are left
// out (as in ErrorSums). Throws Error(InvalidArgument) when rows is not a
// multiple of matrices.
WeightedErrorSums importance_weighted_sums(const uint8_t* src, DType src_dtype, const float* hat,
                                           int64_t rows, int64_t cols, const double* weights,
                                           int64_t matrices, int threads);

// The output error of W [out, in] (source in `src_dtype`, reconstruction
// float32) on X [samples, in] (`x_dtype` F32, F16 or BF16, finite).
OutputErrorSums output_error_sums(const uint8_t* src, DType src_dtype, const float* hat,
                                  int64_t out, int64_t in, const uint8_t* x, DType x_dtype,
                                  int64_t samples, int threads);

}  // namespace qpack
