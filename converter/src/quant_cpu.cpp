// The fast CPU path: threads over blocks of groups, AVX2+F16C inside,
// selected at run time (machines differ; the build targets plain x86-64).
//
// This file is the dispatch: it picks a kernel per layout and runs it over
// the blocking pool of cpu/thread_pool.hpp (not OpenMP, whose idle workers
// spin: that file says why); the kernels are in cpu/ (one header per layout family,
// cpu/avx2_common.hpp for what they share). Vector kernels cover the layouts
// that matter:
//  - "column blocks" (inner >= 32, e.g. axis 0 of a [rows, cols] weight):
//    32 adjacent groups side by side, one SIMD lane per group, so loads,
//    statistics, codes and the byte planes of the output are all contiguous;
//  - "row groups" (inner == 1, e.g. axis -1): each group is contiguous; a
//    batch of 8 groups shares one vector evaluation of the scale arithmetic,
//    and "row_full" does the same without per-group bookkeeping when every
//    group is whole and a multiple of 32 elements long.
// Everything else (column tails, 1 < inner < 32, CPUs without AVX2) goes
// through detail::quantize_group, the reference's own per-group routine.
//
// F16 and BF16 statistics never convert: min and max come from three integer
// max/min operations on the raw bits (see Stats16), which also reveal NaN and
// Inf. Each element is converted to float32 once, in the encoding pass.
//
// Integer zero-points (quantization.md §5a) run through the same kernels,
// instantiated with INTZ: codes rint(fl(x * inv)) + z instead of
// rint(fl(fl(x - M) * inv)) (Params8).
//
// Bit-exactness with the reference rests on: the same IEEE operations in the
// same order (sub, mul, div, round-to-nearest-even; -ffp-contract=off),
// min/max being exact and order-independent for finite values (with -0
// canonicalised), and F16C's vcvtps2ph rounding to nearest even exactly as
// f32_to_f16_rne does.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/avx2_common.hpp"
#include "cpu/quant_columns_avx2.hpp"
#include "cpu/quant_rows_avx2.hpp"
#include "cpu/quant_search_avx2.hpp"
#include "cpu/quant_search_avx512.hpp"
#include "cpu/thread_pool.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/text.hpp"
#include "qpack/format/two_level.hpp"
#include "qpack/spec/group_params.hpp"
#include "quant_detail.hpp"

namespace qpack {

// ------------------------------------------------------------ ISA level ----
CpuIsa cpu_isa_available() {
  static const CpuIsa best = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("f16c") ||
        !__builtin_cpu_supports("fma"))
      return CpuIsa::Scalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      return CpuIsa::Avx512;
    return CpuIsa::Avx2;
  }();
  return best;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar:
      return "scalar";
    case CpuIsa::Avx2:
      return "avx2";
    default:
      return "avx512";
  }
}

namespace {
CpuIsa clamp_isa(CpuIsa isa) { return isa < cpu_isa_available() ? isa : cpu_isa_available(); }

// QPACK_CPU_ISA=scalar|avx2|avx512 caps the level; unset or anything else:
// the best the CPU has.
CpuIsa isa_from_environment() {
  const char* v = std::getenv("QPACK_CPU_ISA");
  const std::string e = v ? v : "";
  if (e == "scalar") return CpuIsa::Scalar;
  if (e == "avx2") return clamp_isa(CpuIsa::Avx2);
  return cpu_isa_available();
}

std::atomic<int>& isa_setting() {
  static std::atomic<int> level{int(isa_from_environment())};
  return level;
}
}  // namespace

CpuIsa cpu_isa() { return CpuIsa(isa_setting().load(std::memory_order_relaxed)); }

CpuIsa set_cpu_isa(CpuIsa isa) {
  const CpuIsa used = clamp_isa(isa);
  isa_setting().store(int(used), std::memory_order_relaxed);
  return used;
}

namespace {

using namespace cpu;  // the AVX2 kernels (cpu/*.hpp)

int resolve_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

void raise(const Failure& f, const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
           int threads) {
  if (f.nonfinite) {
    const int64_t bad = detail::find_first_nonfinite(in.data, in.dtype, L.num_elements(), threads);
    if (bad >= 0) detail::throw_nonfinite(in, L, bad);
  }
  if (f.overflow_group != INT64_MAX) detail::throw_range_overflow(in, L, s, f.overflow_group);
}

// Per-task failures, combined in task order.
Failure combine(const std::vector<Failure>& fs) {
  Failure total;
  for (const Failure& f : fs) {
    total.nonfinite = total.nonfinite || f.nonfinite;
    total.overflow_group = std::min(total.overflow_group, f.overflow_group);
  }
  return total;
}

template <DType T>
QPACK_AVX2 void column_tasks(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                             NonFinitePolicy policy, const QuantBuffers& out, int64_t w0,
                             int64_t w1, Failure* f) {
  const int64_t blocks_per_row = L.inner / 32;
  if (T != DType::F32 && s.bits != 3) {
    // The share walked as runs within each group row.
    for (int64_t w = w0; w < w1;) {
      const int64_t r = w / blocks_per_row, b0 = w % blocks_per_row;
      const int64_t b1 = std::min(blocks_per_row, b0 + (w1 - w));
      const int64_t o = r / L.groups_per_axis, g = r % L.groups_per_axis;
      if constexpr (T != DType::F32) {
        switch (s.bits) {
          case 2:
            column_run_bits<T, 2>(in, L, s, policy, out, o, g, b0, b1, f);
            break;
          case 4:
            column_run_bits<T, 4>(in, L, s, policy, out, o, g, b0, b1, f);
            break;
          default:
            column_run_bits<T, 8>(in, L, s, policy, out, o, g, b0, b1, f);
            break;
        }
      }
      w += b1 - b0;
    }
  } else {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t r = w / blocks_per_row, b = w % blocks_per_row;
      column_block_dispatch<T>(in, L, s, policy, out, r / L.groups_per_axis, r % L.groups_per_axis,
                               b * 32, f);
    }
  }
}

// Column tail of group rows r0..r1-1: zero its code bytes, then the
// per-group routine.
void column_tail(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                 NonFinitePolicy policy, const QuantBuffers& out, int64_t r0, int64_t r1,
                 int64_t tail0, Failure* f) {
  std::vector<float> scratch(size_t(L.group_size));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t j = 0; j < L.bytes_per_group; ++j)
      std::memset(out.codes + (r * L.bytes_per_group + j) * L.inner + tail0, 0,
                  size_t(L.inner - tail0));
    for (int64_t i = tail0; i < L.inner; ++i) {
      const int res = detail::quantize_group(in, L, s, policy, out, r / L.groups_per_axis,
                                             r % L.groups_per_axis, i, scratch.data());
      if (res == detail::kGroupNonFinite) f->nonfinite = true;
      if (res == detail::kGroupOverflow)
        f->overflow_group = std::min(f->overflow_group, r * L.inner + i);
    }
  }
}

template <DType T>
QPACK_AVX2 void quantize_avx2(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                              NonFinitePolicy policy, const QuantBuffers& out, int threads,
                              Failure* failure) {
  std::vector<Failure> fs(static_cast<size_t>(threads));
  if (L.inner >= 32) {
    // A contiguous share of the 32-column blocks per thread, and of the
    // group rows for the column tail (other bytes than the blocks'); one
    // run of the pool does both.
    const int64_t blocks_per_row = L.inner / 32;
    const int64_t tail0 = blocks_per_row * 32;
    const int64_t rows = L.outer * L.groups_per_axis;
    const int64_t work = rows * blocks_per_row;
    cpu::run_tasks(threads, [&](int t) {
      Failure& f = fs[size_t(t)];
      column_tasks<T>(in, L, s, policy, out, work * t / threads, work * (t + 1) / threads, &f);
      if (tail0 < L.inner)
        column_tail(in, L, s, policy, out, rows * t / threads, rows * (t + 1) / threads, tail0, &f);
    });
  } else {  // inner == 1
    const int64_t groups = L.num_groups();
    const int64_t batches = (groups + 7) / 8;
    // Every group whole, 32-element aligned and 16-bit: the row_full layout.
    const bool whole = s.bits != 3 && L.group_size % 32 == 0 && L.axis_len % L.group_size == 0;
    cpu::parallel_chunks(threads, batches, [&](int64_t b0, int64_t b1, int t) QPACK_AVX2 {
      Failure& f = fs[size_t(t)];
      for (int64_t b = b0; b < b1; ++b) {
        const int lanes = int(std::min<int64_t>(8, groups - 8 * b));
        if constexpr (T != DType::F32) {
          if (whole && lanes == 8) {
            switch (s.bits) {
              case 2:
                row_full_bits<T, 2>(in.data, L.group_size, s, policy, out, 8 * b, &f);
                break;
              case 4:
                row_full_bits<T, 4>(in.data, L.group_size, s, policy, out, 8 * b, &f);
                break;
              default:
                row_full_bits<T, 8>(in.data, L.group_size, s, policy, out, 8 * b, &f);
                break;
            }
            continue;
          }
        }
        row_groups_dispatch<T>(in, L, s, policy, out, 8 * b, lanes, &f);
      }
    });
  }
  *failure = combine(fs);
}

// The search method (§M2): batches of W groups with equal lengths through
// cpu/quant_search_avx2.hpp (W = 16) or cpu/quant_search_avx512.hpp (W =
// 32): W adjacent columns, or W consecutive contiguous groups. Every other
// group goes through the reference's routine.
template <DType T, int W>
bool search_gather(const QuantInput& in, const GroupLayout& L, NonFinitePolicy policy, int64_t o,
                   int64_t g, int64_t i, int64_t p, float* xs) {
  if constexpr (W == kSearchLanes512)
    return gather32<T>(in, L, policy, o, g, i, p, xs);
  else
    return gather16<T>(in, L, policy, o, g, i, p, xs);
}

template <DType T, int W>
void quantize_search_batched(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                             NonFinitePolicy policy, const QuantBuffers& out, int threads,
                             Failure* failure) {
  constexpr int64_t kSearchLanes = W;
  if (L.codes_bytes() > 0) std::memset(out.codes, 0, L.codes_bytes());
  const int64_t groups = L.num_groups();
  const int64_t units = (groups + kSearchLanes - 1) / kSearchLanes;
  std::vector<Failure> fs(static_cast<size_t>(threads));
  cpu::parallel_chunks(threads, units, [&](int64_t u0, int64_t u1, int t) {
    Failure& f = fs[size_t(t)];
    std::vector<float> scratch(size_t(L.group_size));
    std::vector<float> xs(size_t(L.group_size * kSearchLanes)), ls(xs.size());
    spec::GroupParams params[W];
    const int64_t p_end = std::min(groups, u1 * kSearchLanes);
    for (int64_t p = u0 * kSearchLanes; p < p_end;) {
      const int64_t i = p % L.inner, r = p / L.inner;
      const int64_t o = r / L.groups_per_axis, g = r % L.groups_per_axis;
      bool batch = false;
      if (p + kSearchLanes <= p_end) {
        if (L.inner >= kSearchLanes)
          batch = i + kSearchLanes <= L.inner;
        else if (L.inner == 1)  // equal lengths: no partial last group among the 16
          batch = L.axis_len % L.group_size == 0 || g + kSearchLanes < L.groups_per_axis;
      }
      if (!batch) {
        const int res = detail::quantize_group(in, L, s, policy, out, o, g, i, scratch.data());
        if (res == detail::kGroupNonFinite) f.nonfinite = true;
        if (res == detail::kGroupOverflow) f.overflow_group = std::min(f.overflow_group, p);
        ++p;
        continue;
      }
      if (!search_gather<T, W>(in, L, policy, o, g, i, p, xs.data())) {
        f.nonfinite = true;
        p += kSearchLanes;
        continue;
      }
      const int64_t len = L.group_len(g);
      if constexpr (W == kSearchLanes512)
        search_params32(xs.data(), len, s.bits, s.scale_dtype, ls.data(), params);
      else
        search_params16(xs.data(), len, s.bits, s.scale_dtype, ls.data(), params);
      for (int l = 0; l < kSearchLanes; ++l) {
        const spec::GroupParams& gp = params[l];
        if (gp.overflow) {
          f.overflow_group = std::min(f.overflow_group, p + l);
          continue;
        }
        spec::store_param(out.scales, p + l, s.scale_dtype, gp.scale, gp.scale_bits16);
        spec::store_param(out.zeros, p + l, s.scale_dtype, gp.zero, gp.zero_bits16);
        // Group p + l's code bytes: (o, g, i + l) in the column layout, the
        // next group's in the row layout.
        const int64_t ql = p + l, il = ql % L.inner, rl = ql / L.inner;
        uint8_t* base = out.codes + rl * L.bytes_per_group * L.inner + il;
        for (int64_t k = 0; k < len; ++k)
          spec::put_code(base, L.inner, k, s.bits,
                         spec::encode_asym(xs[size_t(k * kSearchLanes + l)], gp, s.bits));
      }
      p += kSearchLanes;
    }
  });
  *failure = combine(fs);
}

// Any layout, any CPU: the reference's per-group routine, in parallel.
void quantize_generic(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                      NonFinitePolicy policy, const QuantBuffers& out, int threads,
                      Failure* failure) {
  if (L.codes_bytes() > 0) std::memset(out.codes, 0, L.codes_bytes());
  std::vector<Failure> fs(static_cast<size_t>(threads));
  cpu::parallel_chunks(threads, L.num_groups(), [&](int64_t p0, int64_t p1, int t) {
    Failure& f = fs[size_t(t)];
    std::vector<float> scratch(size_t(L.group_size));
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = p % L.inner, r = p / L.inner;
      const int res = detail::quantize_group(in, L, s, policy, out, r / L.groups_per_axis,
                                             r % L.groups_per_axis, i, scratch.data());
      if (res == detail::kGroupNonFinite) f.nonfinite = true;
      if (res == detail::kGroupOverflow) f.overflow_group = std::min(f.overflow_group, p);
    }
  });
  *failure = combine(fs);
}

template <int W>
void quantize_search(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                     NonFinitePolicy policy, const QuantBuffers& out, int threads, Failure* f) {
  switch (in.dtype) {
    case DType::F16:
      return quantize_search_batched<DType::F16, W>(in, L, s, policy, out, threads, f);
    case DType::BF16:
      return quantize_search_batched<DType::BF16, W>(in, L, s, policy, out, threads, f);
    default:
      return quantize_search_batched<DType::F32, W>(in, L, s, policy, out, threads, f);
  }
}

}  // namespace

void quantize_cpu(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                  NonFinitePolicy policy, const QuantBuffers& out, int threads) {
  threads = resolve_threads(threads);
  Failure f;
  if (L.num_groups() == 0) return;
  const CpuIsa isa = cpu_isa();
  if (has_two_level(s)) return detail::quantize_two_level(in, L, s, policy, out, threads, isa);
  const bool vector_layout = L.inner >= 32 || L.inner == 1;
  // RTN: the AVX2 kernels at the avx2 and avx512 levels. The search
  // (§M2): its AVX-512 or AVX2 batches. The other methods (refit, the
  // integer zero-point search of §M5) and the other layouts: the spec's
  // per-group routine, in parallel.
  const bool float_search = s.method == QuantMethod::Search && !has_integer_zero(s);
  if (isa >= CpuIsa::Avx2 && vector_layout && s.method == QuantMethod::Rtn) {
    switch (in.dtype) {
      case DType::F16:
        quantize_avx2<DType::F16>(in, L, s, policy, out, threads, &f);
        break;
      case DType::BF16:
        quantize_avx2<DType::BF16>(in, L, s, policy, out, threads, &f);
        break;
      default:
        quantize_avx2<DType::F32>(in, L, s, policy, out, threads, &f);
        break;
    }
  } else if (isa == CpuIsa::Avx512 && (L.inner >= kSearchLanes512 || L.inner == 1) &&
             float_search) {
    quantize_search<kSearchLanes512>(in, L, s, policy, out, threads, &f);
  } else if (isa >= CpuIsa::Avx2 && (L.inner >= kSearchLanes || L.inner == 1) && float_search) {
    quantize_search<kSearchLanes>(in, L, s, policy, out, threads, &f);
  } else {
    quantize_generic(in, L, s, policy, out, threads, &f);
  }
  raise(f, in, L, s, threads);
}

void dequantize_cpu(const uint8_t* codes, const uint8_t* scales, const uint8_t* zeros,
                    const GroupLayout& L, const QuantScheme& s, float* out, int threads) {
  if (has_two_level(s)) {  // §T4: exact per-group (S, M), then §6
    const ExpandedParams e = expand_two_level(L, s, scales, zeros);
    return dequantize_cpu(codes, e.scales.data(), e.zeros.data(), e.layout, e.scheme, out, threads);
  }
  threads = resolve_threads(threads);
  const int64_t rows = L.outer * L.groups_per_axis;
  cpu::parallel_for(threads, rows, [&](int64_t r) {
    const int64_t o = r / L.groups_per_axis, g = r % L.groups_per_axis, len = L.group_len(g);
    for (int64_t i = 0; i < L.inner; ++i) {
      const int64_t pi = r * L.inner + i;
      const float sc = spec::load_param(scales, pi, s.scale_dtype);
      const float m = s.symmetric ? 0.0f : spec::load_param(zeros, pi, s.scale_dtype);
      const uint8_t* base = codes + r * L.bytes_per_group * L.inner + i;
      float* dst = out + (o * L.axis_len + g * L.group_size) * L.inner + i;
      for (int64_t k = 0; k < len; ++k)
        dst[k * L.inner] = spec::decode_scheme(spec::get_code(base, L.inner, k, s.bits), sc, m,
                                               s.symmetric, has_integer_zero(s), s.bits);
    }
  });
}

// ------------------------------------------------------ TensorQuantizer ----
namespace {
class CpuQuantizer final : public TensorQuantizer {
 public:
  explicit CpuQuantizer(int threads) : threads_(resolve_threads(threads)) {}
  void quantize(const QuantInput& in, const GroupLayout& layout, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    quantize_cpu(in, layout, scheme, policy, out, threads_);
  }
  std::string description() const override {
    return "cpu (" + count_of(uint64_t(threads_), "thread") + ", " + cpu_isa_name(cpu_isa()) + ")";
  }

 private:
  int threads_;
};
}  // namespace

std::unique_ptr<TensorQuantizer> make_cpu_quantizer(int threads) {
  return std::make_unique<CpuQuantizer>(threads);
}

}  // namespace qpack
