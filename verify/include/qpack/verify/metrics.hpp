// The fused dequantize-and-compare pass over one quantized tensor.
//
// Fixed summation order (the reason reports are bit-identical for any thread
// count and for the CPU and CUDA paths):
//   * a *unit* is one 64-element segment of one group along the group axis
//     (one column i of the (outer, axis, inner) view); its sums are
//     accumulated sequentially in axis order, in double;
//   * a *block* is 256 consecutive units (never straddling a segment row when
//     inner >= 256; whole segment rows when inner < 256); its 256 unit sums
//     are reduced by a fixed pairwise tree (strides 128, 64, ..., 1), idle
//     slots holding the identity;
//   * the host adds the block sums sequentially in block order.
// The CPU runs blocks on OpenMP threads; the GPU runs one CUDA block per
// block and returns the per-block sums; both end in the same host loop.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"
#include "qpack/spec/error_sums.hpp"
#include "qpack/verify/verify.hpp"

namespace qpack {

// A quantized tensor and its source, as host pointers (CPU path, GPU upload)
// or device pointers (CudaMetricsEngine::compute_device).
struct QuantTensorView {
  const uint8_t* source = nullptr;  // little-endian F16/BF16/F32, `source_dtype`
  DType source_dtype = DType::F32;
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;
  const uint8_t* zeros = nullptr;  // null for symmetric schemes
  GroupLayout layout;
  QuantScheme scheme;  // resolved
  std::string name;    // for error messages
};

// Host loop over blocks with OpenMP (threads <= 0: OpenMP default).
ErrorSums compute_error_sums_cpu(const QuantTensorView& view, int threads);

// The sums of a tensor whose reconstruction is a float32 array (GGUF
// tensors), in the fixed order of qpack/spec/float_error_sums.hpp: fed in
// flat order, one slice at a time, each slice but the last a whole number of
// spec::kFloatBlockElements elements. Blocks run on OpenMP threads; the
// result does not depend on the thread count or the slicing.
class FloatErrorAccumulator {
 public:
  FloatErrorAccumulator();
  void add(const float* ref, const float* hat, int64_t n, int threads);
  // For callers that compute a slice's block partials themselves (fused
  // with other per-block work): the flat index the next slice starts at, and
  // the partials of its ceil(n / kFloatBlockElements) blocks, in order.
  int64_t next_flat() const { return flat_; }
  void merge_blocks(const spec::PartialSums* blocks, int64_t n);
  ErrorSums sums() const;

 private:
  spec::PartialSums acc_;
  int64_t flat_ = 0;
  bool short_block_seen_ = false;
};

// Number of blocks of the fixed order for a layout (for tests and benches).
int64_t error_sums_block_count(const GroupLayout& layout);

// The CUDA path. Construction throws Error(NoDevice) when the build has no
// CUDA or no device is usable; every CUDA failure throws Error(Cuda).
class CudaMetricsEngine {
 public:
  // chunk_bytes bounds the device memory per staging buffer (two are used);
  // `device` is the CUDA device ordinal.
  static std::unique_ptr<CudaMetricsEngine> create(uint64_t chunk_bytes, int device = 0);
  ~CudaMetricsEngine();
  CudaMetricsEngine(const CudaMetricsEngine&) = delete;
  CudaMetricsEngine& operator=(const CudaMetricsEngine&) = delete;

  // Host pointers: uploads in chunks of whole blocks and reduces on the host.
  ErrorSums compute(const QuantTensorView& host_view);
  // Device pointers (whole tensor resident): one launch; for benchmarks.
  // *kernel_ms receives the kernel's time from CUDA events when non-null.
  ErrorSums compute_device(const QuantTensorView& device_view, float* kernel_ms);
  std::string description() const;

  struct Impl;

 private:
  explicit CudaMetricsEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpack
