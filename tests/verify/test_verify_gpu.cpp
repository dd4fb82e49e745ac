// The CUDA path gives the CPU path's bits: per tensor (whole, and staged in
// tiny chunks, including column-split segment rows), on device-resident
// buffers, and for a whole verify() report. Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include "qpack/format/text.hpp"
#include "qpack/verify/metrics.hpp"
#include "qpack/verify/report.hpp"
#include "qpack/verify/verify.hpp"
#include "testutil.hpp"
#include "verify/verify_fixtures.hpp"

namespace qpack {
namespace {

using vtest::HostTensor;
using vtest::Quantized;
using vtest::view_of;

#define SKIP_WITHOUT_GPU() \
  if (!verify_cuda_available()) GTEST_SKIP() << "no usable CUDA device"

bool identical(const ErrorSums& a, const ErrorSums& b) {
  auto eq = [](double x, double y) { return std::memcmp(&x, &y, 8) == 0; };
  return a.count == b.count && a.nonfinite == b.nonfinite && eq(a.sum_sq_err, b.sum_sq_err) &&
         eq(a.sum_abs_err, b.sum_abs_err) && eq(a.sum_sq_ref, b.sum_sq_ref) &&
         eq(a.sum_sq_hat, b.sum_sq_hat) && eq(a.sum_dot, b.sum_dot) &&
         eq(a.max_abs_err, b.max_abs_err) && a.max_abs_index == b.max_abs_index &&
         a.bound_violations == b.bound_violations &&
         a.first_violation_index == b.first_violation_index;
}

TEST(VerifyGpu, SameBitsAsCpuForEverySchemeAndChunking) {
  SKIP_WITHOUT_GPU();
  auto whole = CudaMetricsEngine::create(256ull << 20);
  auto tiny = CudaMetricsEngine::create(4096);  // forces many chunks and column splits
  std::mt19937_64 rng(test::test_seed());
  const std::vector<std::vector<int64_t>> shapes = {
      {1},      {7},       {3, 5},     {65, 3},   {2, 3, 130}, {70, 300}, {5, 100, 3},
      {129, 2}, {1, 1000}, {33, 1000}, {4, 5000}, {300, 64},   {0, 5}};
  const int64_t groups[] = {8, 64, 0, 96, 128, 10};
  // Under the CUDA sanitizers (tools/gpu_check.sh) a quarter of the sweep.
  const bool quick = std::getenv("QPACK_GPU_TEST_QUICK") != nullptr;
  int case_index = 0;
  // Kinds: float zero-points, symmetric, integer zero-points, and integer
  // zero-points under --method search (§M5: the clipped-range bound).
  for (int bits : {2, 3, 4, 8})
    for (int kind = 0; kind < 4; ++kind)
      for (DType sd : {DType::F16, DType::BF16, DType::F32})
        for (const auto& shape : shapes) {
          if (quick && case_index++ % 4 != 0) continue;
          const bool sym = kind == 1;
          QuantScheme s;
          s.bits = bits;
          s.symmetric = sym;
          if (kind >= 2) s.zero_point = ZeroPoint::Integer;
          if (kind == 3) s.method = QuantMethod::Search;
          s.scale_dtype = sd;
          s.group_size = groups[rng() % std::size(groups)];
          s.axis = int(rng() % shape.size());
          const DType src = std::array<DType, 3>{DType::F32, DType::F16, DType::BF16}[rng() % 3];
          HostTensor t = vtest::random_tensor("t", src, shape, rng);
          if (t.numel() > 10) vtest::set_value(t, 3, std::numeric_limits<float>::quiet_NaN());
          const Quantized q = vtest::quantize(t, s, NonFinitePolicy::Zero);
          const ErrorSums cpu = compute_error_sums_cpu(view_of(t, q), 2);
          const std::string what = scheme_label(q.scheme) + " " + dtype_name(src) + " numel " +
                                   std::to_string(t.numel());
          EXPECT_TRUE(identical(cpu, whole->compute(view_of(t, q)))) << what;
          EXPECT_TRUE(identical(cpu, tiny->compute(view_of(t, q)))) << what << " (4 KiB chunks)";
        }
}

// The two fast layouts (inner >= 256 with inner % 4 == 0: four columns per
// thread; inner == 1 with whole groups of 32 or of 64 times a power of two:
// contiguous rows of 32- or 64-element units), the general kernel for the
// other shapes, and the fast kernels' rare paths, which redo a whole unit
// with the exact rule: non-finite source values (F16 found by the sum of
// squares, BF16 through the error bound, F32 through NaN sums), tampered codes
// and scales (elements beyond the bound, so violation counts and the first
// violating index), huge values (scales past the fast path's range), partial
// last groups (columns: segments of 8 rows, odd slice counts, segments not a
// multiple of 8), partial last blocks, idle columns, and every bit width (the
// shared-memory tables for 2, 3, 4 bits, the direct decode for 8), scale
// dtype and source dtype.
TEST(VerifyGpu, FastLayoutsGiveTheSameBits) {
  SKIP_WITHOUT_GPU();
  auto whole = CudaMetricsEngine::create(256ull << 20);
  auto tiny = CudaMetricsEngine::create(4096);
  std::mt19937_64 rng(test::test_seed() + 17);
  struct Shape {
    std::vector<int64_t> shape;
    int axis;
    int64_t group;
  };
  const std::vector<Shape> shapes = {
      {{136, 520},
       0,
       64},  // columns: a partial last group (136 = 2*64 + 8), idle columns in the last block
      {{130, 260}, 0, 128},   // columns: two segments per group, 260 = 256 + 4 columns
      {{3, 96, 512}, 1, 0},   // columns, outer > 1, whole-axis groups
      {{37, 200}, 1, 64},     // inner 1, a partial last group: the general kernel
      {{700, 128}, -1, 32},   // rows of 32-element units: 2800 units (a partial last block)
      {{9, 1, 136}, 2, 8},    // inner 1, groups of 8: the general kernel
      {{40, 40}, -1, 16},     // inner 1, groups of 16, 16, 8: the general kernel
      {{130, 512}, -1, 64},   // rows of 64-element units: 1040 units (a partial last block)
      {{96, 1024}, -1, 128},  // rows, two units per group: 1536 units, whole blocks only
      {{64, 1024}, -1, 256},  // rows, four units per group (parameter row = unit >> 2)
      {{20, 768}, -1, 192},   // inner 1, three units per group: the general kernel
      {{256, 96}, -1, 48},    // inner 1, groups of 48: the general kernel
  };
  const bool quick = std::getenv("QPACK_GPU_TEST_QUICK") != nullptr;
  int case_index = 0;
  for (int bits : {2, 3, 4, 8})
    for (int kind = 0; kind < 3; ++kind)  // float zero-points, symmetric, integer zero-points
      for (DType sd : {DType::F16, DType::BF16, DType::F32})
        for (const Shape& sh : shapes)
          for (int variant = 0; variant < 6; ++variant) {
            const int ci = case_index++;
            const DType src = std::array<DType, 3>{DType::F32, DType::F16, DType::BF16}[ci % 3];
            if (quick && ci % 8 != 0) continue;
            const bool sym = kind == 1;
            QuantScheme s;
            s.bits = bits;
            s.symmetric = sym;
            if (kind == 2) s.zero_point = ZeroPoint::Integer;
            s.scale_dtype = sd;
            s.group_size = sh.group;
            s.axis = sh.axis;
            // variant 3: values near the top of the scale dtype's range, so
            // that F32/BF16 scales pass 2^118 (the exact path); F16 scales
            // cannot hold them, so F16 scales use ordinary values there.
            // F16 sources get values of a few thousand instead: units whose
            // sum of squares passes 2^32 take the exact path, the others not.
            const bool huge = variant == 3 && sd != DType::F16 && src != DType::F16;
            const double sigma = huge ? 1e37 : variant == 3 && src == DType::F16 ? 8e3 : 0.02;
            HostTensor t = vtest::random_tensor("t", src, sh.shape, rng, sigma);
            const uint64_t n = t.numel();
            if (variant == 4) {  // all zero: every error is 0, the maximum is element 0's
              std::fill(t.bytes.begin(), t.bytes.end(), uint8_t(0));
            }
            if (variant == 5) {  // every unit the same values: the largest error ties across units
              const size_t esz = src == DType::F32 ? 4 : 2;
              const size_t axis = size_t(sh.axis < 0 ? int(sh.shape.size()) + sh.axis : sh.axis);
              int64_t inner = 1;
              for (size_t d = axis + 1; d < sh.shape.size(); ++d) inner *= sh.shape[d];
              const int64_t len = sh.shape[axis];
              for (uint64_t i = 0; i < n; ++i) {
                const uint64_t rep = uint64_t((int64_t(i) / inner % len) % 64 * inner);
                std::memcpy(&t.bytes[i * esz], &t.bytes[rep * esz], esz);
              }
            }
            if (variant == 1) {  // non-finite source values
              vtest::set_value(t, rng() % n, std::numeric_limits<float>::quiet_NaN());
              vtest::set_value(t, rng() % n, std::numeric_limits<float>::infinity());
              vtest::set_value(t, n - 1, -std::numeric_limits<float>::infinity());
            }
            Quantized q = vtest::quantize(t, s, NonFinitePolicy::Zero);
            if (variant == 2) {  // tampered codes and one scale: elements beyond the bound
              for (int i = 0; i < 40 && !q.codes.empty(); ++i)
                q.codes[rng() % q.codes.size()] ^= uint8_t(1u << (rng() % 8));
              if (!q.scales.empty()) q.scales[rng() % q.scales.size()] ^= 0x10;
            }
            const ErrorSums cpu = compute_error_sums_cpu(view_of(t, q), 2);
            const std::string what = scheme_label(q.scheme) + " " + dtype_name(src) + " shape " +
                                     std::to_string(sh.shape[0]) + "x.. variant " +
                                     std::to_string(variant);
            EXPECT_TRUE(identical(cpu, whole->compute(view_of(t, q)))) << what;
            if (variant == 0) {
              EXPECT_TRUE(identical(cpu, tiny->compute(view_of(t, q))))
                  << what << " (4 KiB chunks)";
            }
            if (variant == 2) {
              EXPECT_GT(cpu.bound_violations, 0u) << what;
            }
          }
}

TEST(VerifyGpu, DeviceResidentBuffersGiveTheSameBits) {
  SKIP_WITHOUT_GPU();
  auto eng = CudaMetricsEngine::create(64ull << 20);
  std::mt19937_64 rng(4);
  const HostTensor t = vtest::random_tensor("w", DType::BF16, {512, 1024}, rng, 0.02);
  const Quantized q = vtest::quantize(t, QuantScheme{});
  auto up = [](const std::vector<uint8_t>& v) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(v.size(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, v.data(), v.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return static_cast<uint8_t*>(d);
  };
  uint8_t *ds = up(t.bytes), *dc = up(q.codes), *dsc = up(q.scales), *dz = up(q.zeros);
  QuantTensorView v = view_of(t, q);
  v.source = ds;
  v.codes = dc;
  v.scales = dsc;
  v.zeros = dz;
  float ms = -1;
  const ErrorSums g = eng->compute_device(v, &ms);
  EXPECT_GE(ms, 0.0f);
  EXPECT_TRUE(identical(g, compute_error_sums_cpu(view_of(t, q), 2)));
  for (uint8_t* p : {ds, dc, dsc, dz}) cudaFree(p);
}

TEST(VerifyGpu, ReportMatchesCpuReport) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(test::test_seed());
  test::TempDir dir;
  const auto tensors = vtest::tiny_llama(rng, 3, DType::BF16);
  vtest::write_source(dir.file("m.safetensors"), tensors);
  vtest::write_qpack(dir.file("m.qpack"), tensors, vtest::quantize_matrices());
  VerifyOptions o;
  o.device = {DeviceKind::Cpu};
  const VerifyReport cpu = verify(dir.file("m.qpack"), dir.file("m.safetensors"), o);
  o.device = {DeviceKind::Cuda};
  o.gpu_chunk_bytes = 8192;
  const VerifyReport gpu = verify(dir.file("m.qpack"), dir.file("m.safetensors"), o);
  EXPECT_NE(gpu.device.find("cuda"), std::string::npos);
  auto strip = [](const VerifyReport& r) {
    nlohmann::json j = verify_report_json(r);
    j.erase("timing");
    j.erase("settings");
    return j.dump();
  };
  EXPECT_EQ(strip(cpu), strip(gpu));
  o.device = {DeviceKind::Auto};
  EXPECT_NE(verify(dir.file("m.qpack"), dir.file("m.safetensors"), o).device.find("cuda"),
            std::string::npos);
}

}  // namespace
}  // namespace qpack
