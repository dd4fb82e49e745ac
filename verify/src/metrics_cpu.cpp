// The CPU path of the fused dequantize-and-compare pass, the host reduction
// shared with the CUDA path, and the CudaMetricsEngine wrapper.
#include <omp.h>

#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/spec/error_sums.hpp"
#include "qpack/verify/metrics.hpp"

#if defined(QPACK_VERIFY_CUDA)
#include "metrics_cuda.hpp"
#endif

namespace qpack {

namespace {

using spec::PartialSums;

template <DType kSrc>
inline void eval_block(const spec::CompareGeometry& g, const spec::ChunkView& v, int64_t b,
                       PartialSums* out) {
  PartialSums slots[spec::kBlockUnits];
  for (int t = 0; t < spec::kBlockUnits; ++t) {
    spec::partial_init(slots[t]);
    int64_t sr, col;
    if (spec::unit_of(g, b, t, &sr, &col)) spec::eval_unit<kSrc>(g, v, sr, col, slots[t]);
  }
  spec::block_tree_host(slots);
  *out = slots[0];
}

template <DType kSrc>
void eval_blocks_generic(const spec::CompareGeometry& g, const spec::ChunkView& v, PartialSums* out,
                         int threads) {
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t b = 0; b < g.blocks; ++b) eval_block<kSrc>(g, v, b, out + b);
}

// The same loop compiled for FMA hardware: the dequantization fma (std::fma,
// a libm call on baseline x86-64) becomes one instruction. An FMA is
// correctly rounded either way, so the results are the same bits.
template <DType kSrc>
__attribute__((target("avx2,fma"), flatten)) void eval_blocks_fma(const spec::CompareGeometry& g,
                                                                  const spec::ChunkView& v,
                                                                  PartialSums* out, int threads) {
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t b = 0; b < g.blocks; ++b) eval_block<kSrc>(g, v, b, out + b);
}

template <DType kSrc>
void eval_blocks(const spec::CompareGeometry& g, const spec::ChunkView& v, PartialSums* out,
                 int threads) {
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (fma)
    eval_blocks_fma<kSrc>(g, v, out, threads);
  else
    eval_blocks_generic<kSrc>(g, v, out, threads);
}

void check_view(const QuantTensorView& view) {
  if (!is_quantizable(view.source_dtype))
    throw Error(ErrorCode::UnsupportedDtype, "", view.name,
                std::string("cannot compare a quantized tensor with a ") +
                    dtype_name(view.source_dtype) + " source");
  if (view.layout.num_elements() > 0 &&
      (!view.source || !view.codes || !view.scales || (!view.scheme.symmetric && !view.zeros)))
    throw Error(ErrorCode::Internal, "", view.name, "missing buffer in the tensor view");
}

}  // namespace

// Sequential sum of the block partials in block order: the last step of the
// fixed order, the same for both paths.
ErrorSums reduce_block_partials(const PartialSums* blocks, int64_t n) {
  PartialSums acc;
  spec::partial_init(acc);
  for (int64_t b = 0; b < n; ++b) spec::partial_merge(acc, blocks[b]);
  ErrorSums s;
  s.count = acc.count;
  s.nonfinite = acc.nonfinite;
  s.sum_sq_err = acc.sq_err;
  s.sum_abs_err = acc.abs_err;
  s.sum_sq_ref = acc.sq_ref;
  s.sum_sq_hat = acc.sq_hat;
  s.sum_dot = acc.dot;
  if (acc.count > 0) {
    s.max_abs_err = acc.max_abs;
    s.max_abs_index = acc.max_index;
  }
  s.bound_violations = acc.violations;
  s.first_violation_index = acc.first_violation == spec::kNoIndex ? -1 : acc.first_violation;
  return s;
}

int64_t error_sums_block_count(const GroupLayout& layout) {
  QuantScheme s;
  s.bits = layout.bits;
  return spec::make_geometry(layout, s, DType::F32).blocks;
}

ErrorSums compute_error_sums_cpu(const QuantTensorView& view, int threads) {
  check_view(view);
  const spec::CompareGeometry g = spec::make_geometry(view.layout, view.scheme, view.source_dtype);
  std::vector<PartialSums> blocks(static_cast<size_t>(g.blocks));
  const spec::ChunkView v{view.source, view.codes, view.scales, view.zeros,       0,
                          0,           0,          0,           view.layout.inner};
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  switch (view.source_dtype) {
    case DType::F16:
      eval_blocks<DType::F16>(g, v, blocks.data(), nt);
      break;
    case DType::BF16:
      eval_blocks<DType::BF16>(g, v, blocks.data(), nt);
      break;
    default:
      eval_blocks<DType::F32>(g, v, blocks.data(), nt);
      break;
  }
  return reduce_block_partials(blocks.data(), g.blocks);
}

// ------------------------------------------------------------- CUDA wrapper

#if defined(QPACK_VERIFY_CUDA)

struct CudaMetricsEngine::Impl {
  vcuda::DeviceState* state = nullptr;
  ~Impl() { vcuda::destroy(state); }
};

bool verify_cuda_available() { return vcuda::available(0, nullptr); }

std::unique_ptr<CudaMetricsEngine> CudaMetricsEngine::create(uint64_t chunk_bytes, int device) {
  auto impl = std::make_unique<Impl>();
  impl->state = vcuda::create(device, chunk_bytes);
  return std::unique_ptr<CudaMetricsEngine>(new CudaMetricsEngine(std::move(impl)));
}

ErrorSums CudaMetricsEngine::compute(const QuantTensorView& view) {
  check_view(view);
  const spec::CompareGeometry g = spec::make_geometry(view.layout, view.scheme, view.source_dtype);
  std::vector<PartialSums> blocks(static_cast<size_t>(g.blocks));
  const spec::ChunkView v{view.source, view.codes, view.scales, view.zeros,       0,
                          0,           0,          0,           view.layout.inner};
  if (g.blocks > 0) vcuda::compute_host(impl_->state, g, v, blocks.data(), view.name);
  return reduce_block_partials(blocks.data(), g.blocks);
}

ErrorSums CudaMetricsEngine::compute_device(const QuantTensorView& view, float* kernel_ms) {
  check_view(view);
  const spec::CompareGeometry g = spec::make_geometry(view.layout, view.scheme, view.source_dtype);
  if (kernel_ms) *kernel_ms = 0.0f;
  std::vector<PartialSums> blocks(static_cast<size_t>(g.blocks));
  const spec::ChunkView v{view.source, view.codes, view.scales, view.zeros,       0,
                          0,           0,          0,           view.layout.inner};
  if (g.blocks > 0) vcuda::compute_device(impl_->state, g, v, blocks.data(), kernel_ms, view.name);
  return reduce_block_partials(blocks.data(), g.blocks);
}

std::string CudaMetricsEngine::description() const { return vcuda::description(impl_->state); }

#else  // built without CUDA

struct CudaMetricsEngine::Impl {};

bool verify_cuda_available() { return false; }

std::unique_ptr<CudaMetricsEngine> CudaMetricsEngine::create(uint64_t, int) {
  throw Error(ErrorCode::NoDevice, "", "",
              "this qpack was built without CUDA (QPACK_ENABLE_CUDA=OFF); use --device cpu");
}
ErrorSums CudaMetricsEngine::compute(const QuantTensorView&) {
  throw Error(ErrorCode::NoDevice, "", "", "built without CUDA");
}
ErrorSums CudaMetricsEngine::compute_device(const QuantTensorView&, float*) {
  throw Error(ErrorCode::NoDevice, "", "", "built without CUDA");
}
std::string CudaMetricsEngine::description() const { return "none"; }

#endif

CudaMetricsEngine::CudaMetricsEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaMetricsEngine::~CudaMetricsEngine() = default;

}  // namespace qpack
