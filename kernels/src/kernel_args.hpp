// Arguments of the quantize/dequantize kernels, resolved on the host from a
// GroupLayout, a QuantScheme and a Tile (cuda_quant.cu), and the launchers
// each per-dtype translation unit provides. Internal to kernels/.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack::kernels {

// Every kernel works on slices of kSliceRows consecutive elements along the
// group axis: 8 codes of any width (2, 3, 4, 8 bits) fill whole bytes, so a
// slice owns `bits` bytes of its group's bit stream and threads never share
// an output byte.
constexpr int kSliceRows = 8;
constexpr int kBlockThreads = 256;
// quantize_rows: chunks of 8 elements each lane keeps in registers.
constexpr int kRowChunks = 8;
// dequantize_rows_whole: items (slices or half-slices) per thread.
constexpr int kRowItems = 4;
// dequantize with F32 output: elements (rows kernel) or columns (cols kernel)
// per thread, so that one store instruction of a warp is 512 contiguous bytes.
constexpr int kF32Part = 4;

// n / d for 32-bit n by a multiply-high and a shift (Granlund-Montgomery
// with a round-up magic number); exact for every n < 2^32 and 1 <= d < 2^32.
// A 64-bit division is a ~70-instruction subroutine on the GPU, so kernels
// index with 32-bit local counters and divide with these.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    while ((uint64_t(1) << s) < d) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
#if defined(__CUDACC__)
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return uint32_t((uint64_t(__umulhi(n, m)) + n) >> s);
  }
#endif
};

// One launch covers a tile of group rows x columns whose buffers start at
// the tile's first group row. Local counters (group rows, tasks) fit in 31
// bits; the host splits larger tiles into several launches.
struct TileGeometry {
  int64_t axis_len;   // L
  int64_t group;      // G' (resolved group size)
  int64_t bytes;      // B (bytes per group)
  int64_t inner;      // inner of the whole tensor (for flat indices)
  int64_t gr_begin;   // global group row of the launch's first group row
  int64_t o_begin;    // its outer index ...
  uint32_t gi_begin;  // ... and group index along the axis (< P)
  uint32_t n_gr;      // group rows in the launch
  int64_t row_begin;  // first tensor row of the launch
  int64_t col_begin;  // first inner column of the tile
  int64_t ncols;      // columns in the tile: the row pitch of every tile buffer
  FastDiv groups;     // P (groups per axis)
  int nslices;        // ceil(G' / kSliceRows)
  int lanes;  // lanes that share one group (column kernels: one column chunk); power of 2 <= 32
  uint32_t tasks;  // work items of the launch (warps for quantize, threads for dequantize)
  FastDiv per_gr;  // work items per group row
  FastDiv chunks;  // dequantize_cols: column chunks per group-row slice
};

struct QuantArgs {
  TileGeometry geo;
  const void* src;
  uint8_t* codes;
  uint8_t* scales;
  uint8_t* zeros;
  cuda::QuantFlags* flags;
  DType scale_dtype;
  bool zero_nonfinite;  // NonFinitePolicy::Zero
  bool integer_zero;    // asymmetric with integer zero-points (spec::params_asym_int)
  QuantMethod method;   // quantization.md §M: not Rtn only in quantize_methods.cu
};

struct DequantArgs {
  TileGeometry geo;
  const uint8_t* codes;
  const uint8_t* scales;
  const uint8_t* zeros;
  void* out;
  DType scale_dtype;
  bool symmetric;
  bool integer_zero;  // asymmetric with integer zero-points: spec::decode_int
  int bits;
};

// Launch shapes chosen by the host. `vector` selects the 16-byte-access
// instantiation (the host checked divisibility and alignment).
struct Launch {
  int blocks;
  cudaStream_t stream;
  bool rows;  // inner-contiguous groups (tile of one column): the row kernels
  bool vector;
  bool window;  // rows, whole groups: quantize_rows_window (16-bit source,
                // G' = 8 * 2^k <= 256) and dequantize_rows_whole
};
constexpr int kWindowUnits =
    256;  // quantize_rows_window: 16-byte units per warp window (8 per lane)

#if defined(__CUDACC__)
// Programmatic dependent launch: every kernel here is launched so that it may
// be scheduled while the previous kernel of its stream drains; it waits for
// that kernel's completion (and memory) before touching global memory, and
// lets its own successor be scheduled as soon as all its blocks are running.
// This hides the launch gap between back-to-back kernels (a measurable part
// of a 4096x4096 kernel's time: docs/kernels.md); stream order and memory
// visibility are those of an ordinary launch.
__device__ __forceinline__ void pdl_prologue() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// Any parameter list: the quantize and dequantize kernels take one struct,
// the compare kernels (compare_args.hpp) several parameters.
template <class... Params, class... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), int blocks, int threads, const Launch& l,
                          const Args&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(blocks));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = 0;
  cfg.stream = l.stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}
#endif

// One per source dtype (quantize_instances_{f16,bf16,f32}.cu); each
// returns cudaGetLastError() of its launch as an int (0 = success).
int launch_quantize_f16(const QuantArgs& a, int bits, bool symmetric, const Launch& l);
int launch_quantize_bf16(const QuantArgs& a, int bits, bool symmetric, const Launch& l);
int launch_quantize_f32(const QuantArgs& a, int bits, bool symmetric, const Launch& l);
// quantize_methods.cu: the parameter methods (search, refit), one thread per
// group, any source dtype and width; a.geo.tasks = group rows x columns.
int launch_quantize_method(const QuantArgs& a, DType src_dtype, int bits, const Launch& l);
// dequant.cu
int launch_dequantize(const DequantArgs& a, DType out_dtype, const Launch& l);

}  // namespace qpack::kernels
