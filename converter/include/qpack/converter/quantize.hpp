// Group quantization of one tensor, as docs/quantization.md specifies.
//
// quantize_reference / dequantize_reference are the scalar reference: one
// element at a time, written to be read next to the spec. Every fast path
// (quantize_cpu, the CUDA kernels) must produce the same bytes; the tests
// compare them bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"

namespace qpack {

// Output buffers, sized by the layout: codes layout.codes_bytes(); scales and
// zeros layout.params_bytes(scale dtype); zeros null when symmetric.
struct QuantBuffers {
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  uint8_t* zeros = nullptr;
};

struct QuantInput {
  const uint8_t* data = nullptr;  // little-endian F16, BF16 or F32
  DType dtype = DType::F32;
  std::string name;  // for error messages
};

// Throws Error(NonFinite) or Error(RangeOverflow) naming the tensor; on error
// the output buffers hold unspecified bytes.
void quantize_reference(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                        NonFinitePolicy policy, const QuantBuffers& out);

// x_hat for every element, in the source tensor's element order.
void dequantize_reference(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                          const GroupLayout& layout, const QuantScheme& scheme, float* out);

// The instruction-set level of the CPU path's vector kernels, chosen at run
// time (docs/performance.md): scalar (the reference's per-group routine),
// avx2 (AVX2+F16C+FMA), avx512 (AVX-512 F/BW/DQ/VL: the search method's
// 32-group kernel; RTN runs its AVX2 kernels there). Every level gives the
// same bytes.
enum class CpuIsa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };
CpuIsa cpu_isa_available();  // the best this CPU supports
// The level in use: the best available, capped by QPACK_CPU_ISA
// (scalar|avx2|avx512, read once; other values are ignored) or by
// set_cpu_isa.
CpuIsa cpu_isa();
// Caps the level (tests, benchmarks); returns the level now in use, which
// is lower than asked when the CPU lacks it.
CpuIsa set_cpu_isa(CpuIsa isa);
const char* cpu_isa_name(CpuIsa isa);

// The fast CPU path: a blocking worker pool over groups, SIMD inside (the
// level above). Byte-identical to quantize_reference for every thread count
// and level. threads <= 0: omp_get_max_threads() (OMP_NUM_THREADS or all
// cores); no other OpenMP setting applies (the pool never spins).
void quantize_cpu(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                  NonFinitePolicy policy, const QuantBuffers& out, int threads);
void dequantize_cpu(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                    const GroupLayout& layout, const QuantScheme& scheme, float* out, int threads);

}  // namespace qpack
