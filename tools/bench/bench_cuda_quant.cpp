// qpack_bench_cuda: throughput of the CUDA quantize/dequantize kernels and of
// the streaming TensorQuantizer, each next to the limit measured in the same
// run (not a test; tools/gpu_check.sh runs it on the device machine).
//
//   kernels: 4096x4096 and 11008x4096 fp16, axis 0 and -1, 4 and 8 bits,
//     G = 64, asymmetric, F16 scales. GB/s counts bytes read + written; the
//     fraction is of the device-to-device cudaMemcpy bandwidth (also read +
//     written). CUDA events around each launch, warm-up, median of many
//     repetitions, random data, buffers rotated so the working set is well
//     past the 50 MB L2. Each configuration is first checked byte for byte
//     against quantize_cpu.
//   end to end: TensorQuantizer over a multi-GB set of tensors in pageable
//     and in pinned host memory, GB/s of source bytes, as a fraction of the
//     pinned host-to-device bandwidth.
//
//   qpack_bench_cuda [--quick] [--profile] [--e2e-gib N] [--json FILE]
//   (--profile: one launch of each kernel, for ncu; no timing worth reading)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "qpack/cuda_quant.hpp"
#include "qpack/dtype.hpp"
#include "qpack/error.hpp"
#include "qpack/quantize.hpp"
#include "qpack/quantizer.hpp"
#include "qpack/scheme.hpp"

using namespace qpack;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void ck(const cuda::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.message.c_str());
    std::exit(1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Random fp16 N(0, 0.02)-ish weights with a few outliers, filled in parallel
// (xorshift per thread; Irwin-Hall sum of 4 uniforms for the bell shape).
void fill_random_f16(uint8_t* dst, size_t n_elems, uint64_t seed) {
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([=] {
      uint64_t x = seed * 0x9e3779b97f4a7c15ull + t + 1;
      auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
      };
      const size_t b = n_elems * t / threads, e = n_elems * (t + 1) / threads;
      for (size_t i = b; i < e; ++i) {
        const uint64_t r = next();
        float u = 0;
        for (int k = 0; k < 4; ++k) u += float((r >> (16 * k)) & 0xffff) / 65536.0f;
        float v = (u - 2.0f) * 0.035f;
        if ((r & 0x3ff) == 0) v *= 20.0f;
        const uint16_t h = f32_to_f16_rne(v);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    });
  for (auto& th : pool) th.join();
}

struct Row {
  std::string name;
  double gbps = 0, frac = 0, ms = 0;
  std::string note;
};
std::vector<Row> rows;

void report(const std::string& name, double bytes, double ms, double ref_gbps, const std::string& note = {}) {
  Row r;
  r.name = name;
  r.ms = ms;
  r.gbps = bytes / (ms * 1e-3) / 1e9;
  r.frac = ref_gbps > 0 ? r.gbps / ref_gbps : 0;
  r.note = note;
  std::printf("  %-46s %9.3f ms %9.1f GB/s %6.1f%% %s\n", name.c_str(), ms, r.gbps, 100 * r.frac, note.c_str());
  std::fflush(stdout);
  rows.push_back(r);
}

// Median over `reps` samples of the time per launch of fn(i), each sample
// `batch` back-to-back launches between two events (so host launch overhead
// overlaps the GPU work, as in a real stream of tensors).
template <class F>
double time_ms(int warmup, int reps, F&& fn, int batch = 10) {
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event");
  ck(cudaEventCreate(&b), "event");
  for (int i = 0; i < warmup; ++i) fn(i);
  ck(cudaDeviceSynchronize(), "warmup");
  std::vector<double> t;
  int i = 0;
  for (int r = 0; r < reps; ++r) {
    ck(cudaEventRecord(a), "record");
    for (int k = 0; k < batch; ++k) fn(i++);
    ck(cudaEventRecord(b), "record");
    ck(cudaEventSynchronize(b), "sync");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(ms / batch);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

double d2d_copy_gbps(size_t bytes, int reps) {
  void *x = nullptr, *y = nullptr;
  ck(cudaMalloc(&x, bytes), "malloc");
  ck(cudaMalloc(&y, bytes), "malloc");
  ck(cudaMemset(x, 1, bytes), "memset");
  const double ms = time_ms(3, reps, [&](int) { ck(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice), "copy"); }, 1);
  cudaFree(x);
  cudaFree(y);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

double h2d_gbps(const void* host, size_t bytes, int reps) {
  void* d = nullptr;
  ck(cudaMalloc(&d, bytes), "malloc");
  const double ms = time_ms(1, reps, [&](int) { ck(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice), "h2d"); }, 1);
  cudaFree(d);
  return double(bytes) / (ms * 1e-3) / 1e9;
}

// profile: one launch of each kernel on 11008x4096, 4 bits (for ncu).
void bench_kernels(double copy_gbps, bool quick, bool profile) {
  std::printf("\nkernels (fp16 source, G=64, asymmetric, F16 scales; %% of D2D copy %.0f GB/s)\n", copy_gbps);
  const int reps = profile ? 1 : quick ? 5 : 20;  // samples of 10 launches each
  const int warm = profile ? 0 : 5;
  const size_t kWorkingSet = size_t(400) << 20;  // rotate well past the 50 MB L2
  const auto shapes = profile ? std::vector<std::vector<int64_t>>{{11008, 4096}}
                               : std::vector<std::vector<int64_t>>{{4096, 4096}, {11008, 4096}};
  for (const auto& shape : shapes) {
    const size_t n = size_t(shape[0] * shape[1]);
    std::vector<uint8_t> host(n * 2);
    fill_random_f16(host.data(), n, 42 + n);
    for (int axis : {0, -1})
      for (int bits : {4, 8}) {
        if (profile && bits != 4) continue;
        QuantScheme s;
        s.bits = bits;
        s.axis = axis;
        s.group_size = 64;
        const GroupLayout L = GroupLayout::make(shape, s, "w");
        const size_t codes = L.codes_bytes(), params = size_t(L.num_groups()) * 2;
        const size_t set_bytes = n * 2 + codes + 2 * params + n * 4;
        const int sets = profile ? 1 : int(std::max<size_t>(2, kWorkingSet / set_bytes + 1));
        std::vector<cuda::DeviceBuffer> src(sets), cod(sets), sc(sets), ze(sets), out(sets);
        cuda::DeviceBuffer flags;
        ck(flags.allocate(sizeof(cuda::QuantFlags)), "alloc");
        for (int i = 0; i < sets; ++i) {
          ck(src[i].allocate(n * 2), "alloc");
          ck(cod[i].allocate(codes), "alloc");
          ck(sc[i].allocate(params), "alloc");
          ck(ze[i].allocate(params), "alloc");
          ck(out[i].allocate(n * 4), "alloc");
          ck(cuda::copy_to_device(src[i].data(), host.data(), n * 2, nullptr), "upload");
        }
        ck(cuda::reset_flags(flags.as<cuda::QuantFlags>(), nullptr), "flags");
        auto quant = [&](int i) {
          const int k = i % sets;
          cuda::DeviceQuantOutput o{cod[k].as<uint8_t>(), sc[k].as<uint8_t>(), ze[k].as<uint8_t>()};
          ck(cuda::quantize(src[k].data(), DType::F16, L, s, NonFinitePolicy::Error, o,
                            flags.as<cuda::QuantFlags>(), nullptr),
             "quantize");
        };
        // Correctness first: the GPU bytes equal quantize_cpu's.
        quant(0);
        std::vector<uint8_t> gc(codes), gs(params), gz(params), rc(codes), rs(params), rz(params);
        ck(cuda::copy_to_host(gc.data(), cod[0].data(), codes, nullptr), "download");
        ck(cuda::copy_to_host(gs.data(), sc[0].data(), params, nullptr), "download");
        ck(cuda::copy_to_host(gz.data(), ze[0].data(), params, nullptr), "download");
        ck(cuda::synchronize(nullptr), "sync");
        if (!profile)
          quantize_cpu({host.data(), DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                       {rc.data(), rs.data(), rz.data()}, 0);
        const bool same = profile || (gc == rc && gs == rs && gz == rz);
        for (int i = 1; i < sets; ++i) quant(i);

        const std::string tag = std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + " axis " +
                                std::to_string(axis) + " " + std::to_string(bits) + "b";
        const double qms = time_ms(warm, reps, quant, profile ? 1 : 10);
        report("quantize   " + tag, double(n * 2 + codes + 2 * params), qms, copy_gbps,
               same ? "" : "MISMATCH vs quantize_cpu");
        for (DType od : {DType::F32, DType::F16}) {
          const double dms = time_ms(warm, reps, [&](int i) {
            const int k = i % sets;
            ck(cuda::dequantize(cod[k].as<uint8_t>(), sc[k].as<uint8_t>(), ze[k].as<uint8_t>(), L, s,
                                out[k].data(), od, nullptr),
               "dequantize");
          }, profile ? 1 : 10);
          report(std::string("dequant>") + (od == DType::F32 ? "f32 " : "f16 ") + tag,
                 double(codes + 2 * params + n * size_t(od == DType::F32 ? 4 : 2)), dms, copy_gbps);
        }
      }
  }
}

void bench_e2e(double e2e_gib, bool quick) {
  // 11008x4096 fp16 tensors (90 MB each) up to about e2e_gib GiB.
  const std::vector<int64_t> shape = {11008, 4096};
  const size_t tensor_bytes = size_t(shape[0] * shape[1]) * 2;
  const int count = std::max(1, int(e2e_gib * double(1ull << 30) / double(tensor_bytes)));
  const size_t total = tensor_bytes * size_t(count);
  std::printf("\nend to end: TensorQuantizer, %d tensors 11008x4096 fp16 = %.2f GB of source\n", count,
              double(total) / 1e9);
  std::vector<uint8_t> pageable(total);
  fill_random_f16(pageable.data(), total / 2, 7);
  cuda::PinnedBuffer pinned;
  ck(pinned.allocate(total), "cudaMallocHost");
  std::memcpy(pinned.data(), pageable.data(), total);
  const size_t probe = std::min(total, size_t(1) << 30);
  const double pinned_h2d = h2d_gbps(pinned.data(), probe, quick ? 3 : 5);
  const double pageable_h2d = h2d_gbps(pageable.data(), probe, quick ? 3 : 5);
  std::printf("  pinned H2D %.1f GB/s, pageable H2D %.1f GB/s (cudaMemcpy of %.2f GB)\n", pinned_h2d,
              pageable_h2d, double(probe) / 1e9);

  for (int axis : {0, -1}) {
    QuantScheme s;
    s.axis = axis;
    const GroupLayout L = GroupLayout::make(shape, s, "w");
    const size_t params = size_t(L.num_groups()) * 2;
    std::vector<uint8_t> codes(L.codes_bytes()), scales(params), zeros(params);
    std::memset(codes.data(), 1, codes.size());
    std::memset(scales.data(), 1, scales.size());
    std::memset(zeros.data(), 1, zeros.size());
    auto q = make_cuda_quantizer(0);
    if (axis == 0 && !quick) {
      // Chunk size: each tensor fills and drains the pipeline once.
      for (size_t mib : {2, 32}) {
        cuda::QuantizerOptions o;
        o.chunk_bytes = mib << 20;
        auto qc = make_cuda_quantizer(0, o);
        qc->quantize({pageable.data(), DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                     {codes.data(), scales.data(), zeros.data()});
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < count; ++i)
          qc->quantize({pageable.data() + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s,
                       NonFinitePolicy::Error, {codes.data(), scales.data(), zeros.data()});
        report("e2e pageable axis 0 4b, " + std::to_string(mib) + " MiB chunks",
               double(total), std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
               pinned_h2d);
      }
    }
    for (int pinned_src : {0, 1}) {
      const uint8_t* base = pinned_src ? pinned.data() : pageable.data();
      q->quantize({base, DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                  {codes.data(), scales.data(), zeros.data()});  // warm-up
      std::vector<double> runs;
      for (int rep = 0; rep < (quick ? 1 : 2); ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < count; ++i)
          q->quantize({base + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                      {codes.data(), scales.data(), zeros.data()});
        runs.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      report(std::string("e2e ") + (pinned_src ? "pinned  " : "pageable") + " axis " + std::to_string(axis) +
                 " 4b (vs pinned H2D)",
             double(total), *std::min_element(runs.begin(), runs.end()), pinned_h2d);
    }
  }
  // For scale: the CPU path over the first GB, all cores.
  {
    QuantScheme s;
    const GroupLayout L = GroupLayout::make(shape, s, "w");
    const size_t params = size_t(L.num_groups()) * 2;
    std::vector<uint8_t> codes(L.codes_bytes()), scales(params), zeros(params);
    const int n = std::min(count, 11);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
      quantize_cpu({pageable.data() + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                   {codes.data(), scales.data(), zeros.data()}, 0);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    report("quantize_cpu axis 0 4b, all cores (vs pinned H2D)", double(tensor_bytes) * n, ms, pinned_h2d);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, profile = false;
  double e2e_gib = 4.0;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--profile") {
      profile = true;
      e2e_gib = 0;
    } else if (a == "--e2e-gib" && i + 1 < argc) {
      e2e_gib = std::atof(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "usage: qpack_bench_cuda [--quick] [--profile] [--e2e-gib N] [--json FILE]\n");
      return 2;
    }
  }
  std::string why;
  if (!cuda::cuda_available(&why)) {
    std::printf("qpack_bench_cuda: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  try {
    cuda::DeviceInfo info;
    ck(cuda::query_device(0, &info), "query_device");
    std::printf("%s, driver %d, runtime %d\n", cuda::describe(info).c_str(), info.driver_version,
                info.runtime_version);
    const double copy = d2d_copy_gbps(size_t(1) << 30, quick || profile ? 3 : 30);
    std::printf("device-to-device cudaMemcpy (1 GiB): %.0f GB/s (read + write)\n", copy);
    bench_kernels(copy, quick, profile);
    if (e2e_gib > 0) bench_e2e(e2e_gib, quick);
  } catch (const Error& e) {
    std::fprintf(stderr, "qpack_bench_cuda: %s\n", e.what());
    return 1;
  }
  if (!json.empty()) {
    std::ofstream f(json);
    f << "[\n";
    for (size_t i = 0; i < rows.size(); ++i)
      f << "  {\"name\": \"" << rows[i].name << "\", \"ms\": " << rows[i].ms << ", \"gbps\": " << rows[i].gbps
        << ", \"fraction\": " << rows[i].frac << ", \"note\": \"" << rows[i].note << "\"}"
        << (i + 1 < rows.size() ? ",\n" : "\n");
    f << "]\n";
  }
  bool ok = true;
  for (const Row& r : rows) ok = ok && r.note.empty();
  return ok ? 0 : 1;
}
