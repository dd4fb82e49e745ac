// CPU quantize throughput next to the machine's own memory-copy bandwidth,
// measured in the same run. Not a test: numbers go to stdout (and --json).
//
//   build/tools/bench/qpack_bench_cpu [--reps N] [--zero-point float|integer]
//                                     [--isa scalar|avx2|avx512] [--json]
//
// --isa caps the CPU path's level (quantize.hpp's CpuIsa; default: the best
// the CPU has, or QPACK_CPU_ISA); RTN's kernels at the avx512 level are the
// AVX2 ones.
//
// Bytes counted for "of copy": quantize reads the fp16 source once and writes
// codes + scales + zero-points once; the copy bound moves the same total
// bytes (read + write) at the measured memcpy rate. Each repetition times a
// 256 MiB memcpy right before the quantize call, so that a busy neighbour on
// a shared machine slows both alike; the medians of each are compared.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/spec/dtype.hpp"

using namespace qpack;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Parallel memcpy over buffers far larger than the caches; returns seconds.
// Plain threads, not OpenMP: libgomp's workers would spin after the probe
// and take the cores the quantizer's pool needs (converter/src/cpu/
// thread_pool.hpp says why the quantizer has its own pool).
struct CopyProbe {
  std::vector<uint8_t> a, b;
  explicit CopyProbe(size_t n) : a(n, 1), b(n, 2) {}
  double bytes_moved() const { return 2.0 * double(a.size()); }  // read + write
  double run(int threads) {
    const auto t0 = Clock::now();
    const size_t chunk = a.size() / size_t(threads);
    std::vector<std::thread> ts;
    for (int id = 1; id < threads; ++id)
      ts.emplace_back([this, id, chunk] {
        std::memcpy(b.data() + chunk * size_t(id), a.data() + chunk * size_t(id), chunk);
      });
    std::memcpy(b.data(), a.data(), chunk);
    for (auto& t : ts) t.join();
    return seconds_since(t0);
  }
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool json = false;
  ZeroPoint zero_point = ZeroPoint::Float;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--isa" && i + 1 < argc) {
      const std::string v = argv[++i];
      set_cpu_isa(v == "scalar" ? CpuIsa::Scalar : v == "avx2" ? CpuIsa::Avx2 : CpuIsa::Avx512);
    } else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--json")
      json = true;
    else if (a == "--zero-point" && i + 1 < argc && std::string(argv[i + 1]) == "integer" && ++i)
      zero_point = ZeroPoint::Integer;
    else if (a == "--zero-point" && i + 1 < argc && std::string(argv[i + 1]) == "float" && ++i)
      zero_point = ZeroPoint::Float;
    else {
      std::printf(
          "usage: %s [--reps N] [--zero-point float|integer] [--isa scalar|avx2|avx512] [--json]\n",
          argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  std::mt19937_64 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{4096, 4096}, {11008, 4096}};
  std::vector<std::string> rows_json;
  if (!json)
    std::printf("%-12s %-6s %4s %5s %7s %10s %10s %10s %8s\n", "shape", "isa", "bits", "axis",
                "threads", "GB/s src", "GB/s r+w", "copy r+w", "of copy");
  const char* isa = cpu_isa_name(cpu_isa());
  CopyProbe probe(size_t(256) << 20);
  for (int threads : {1, 2}) {
    for (const Shape& sh : shapes) {
      const int64_t n = sh.rows * sh.cols;
      // Enough copies to exceed the last-level cache, used in rotation.
      const int copies = std::max<int>(1, int((256ll << 20) / (2 * n)) + 1);
      std::vector<std::vector<uint8_t>> src(size_t(copies), std::vector<uint8_t>(size_t(2 * n)));
      for (auto& s : src)
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t h = f32_to_f16_rne(nd(rng));
          std::memcpy(&s[size_t(2 * i)], &h, 2);
        }
      for (int bits : {4, 8})
        for (int axis : {0, -1}) {
          QuantScheme scheme;
          scheme.bits = bits;
          scheme.axis = axis;
          scheme.zero_point = zero_point;
          const GroupLayout L = make_layout({sh.rows, sh.cols}, scheme);
          std::vector<uint8_t> codes(L.codes_bytes()),
              scales(size_t(L.params_bytes(scheme.scale_dtype))), zeros(scales.size());
          std::vector<double> t, tc;
          for (int r = 0; r < reps + 1; ++r) {
            const double c = probe.run(threads);
            const QuantInput in{src[size_t(r % copies)].data(), DType::F16, "bench"};
            const auto t0 = Clock::now();
            quantize_cpu(in, L, scheme, NonFinitePolicy::Error,
                         {codes.data(), scales.data(), zeros.data()}, threads);
            if (r) {
              t.push_back(seconds_since(t0));
              tc.push_back(c);
            }
          }
          const double sec = median(t);
          const double copy = probe.bytes_moved() / median(tc) / 1e9;
          const double src_bytes = 2.0 * double(n);
          const double moved = src_bytes + double(codes.size() + scales.size() + zeros.size());
          const double gbs_src = src_bytes / sec / 1e9, gbs_rw = moved / sec / 1e9;
          char name[32];
          std::snprintf(name, sizeof name, "%lldx%lld", (long long)sh.rows, (long long)sh.cols);
          if (json) {
            char row[512];
            std::snprintf(
                row, sizeof row,
                "{\"shape\":\"%s\",\"isa\":\"%s\",\"bits\":%d,\"axis\":%d,\"threads\":%d,"
                "\"seconds\":%.6f,"
                "\"gbps_source\":%.3f,\"gbps_read_write\":%.3f,\"copy_gbps_read_write\":%.3f,"
                "\"fraction_of_copy\":%.4f}",
                name, isa, bits, axis, threads, sec, gbs_src, gbs_rw, copy, gbs_rw / copy);
            rows_json.push_back(row);
          } else {
            std::printf("%-12s %-6s %4d %5d %7d %10.2f %10.2f %10.2f %7.0f%%\n", name, isa, bits,
                        axis, threads, gbs_src, gbs_rw, copy, 100.0 * gbs_rw / copy);
          }
        }
    }
  }
  if (json) {
    std::printf("[\n");
    for (size_t i = 0; i < rows_json.size(); ++i)
      std::printf("  %s%s\n", rows_json[i].c_str(), i + 1 < rows_json.size() ? "," : "");
    std::printf("]\n");
  }
  return 0;
}
