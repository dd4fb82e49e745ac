// CPU quantize throughput of each parameter method (docs/quantization.md §M)
// next to RTN's, in the same run, at the default scheme (4-bit, g64, F16
// scales) on an F16 weight. Not a test: numbers go to stdout (and --json).
//
//   build/tools/bench/qpack_bench_methods [--threads N] [--reps N] [--rows R --cols C] [--json]
//
// Wall time is the median over the repetitions; CPU time (the process's, all
// threads) is reported beside it because the machine may be shared: a busy
// neighbour stretches wall time but not CPU time. "of rtn" is the method's
// throughput as a share of RTN's at the same axis, from the medians. "isa"
// is the CPU path's level (quantize.hpp's CpuIsa): the search runs at each
// level the CPU has, RTN and the refit at the best.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "qpack/converter/quantize.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/spec/dtype.hpp"

using namespace qpack;
using Clock = std::chrono::steady_clock;

namespace {

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

struct Timing {
  double wall, cpu;
};

Timing median_run(const QuantInput& in, const GroupLayout& L, const QuantScheme& s,
                  const QuantBuffers& out, int threads, int reps) {
  std::vector<Timing> t;
  for (int r = 0; r < reps; ++r) {
    const double c0 = cpu_seconds();
    const auto w0 = Clock::now();
    quantize_cpu(in, L, s, NonFinitePolicy::Error, out, threads);
    t.push_back({std::chrono::duration<double>(Clock::now() - w0).count(), cpu_seconds() - c0});
  }
  std::sort(t.begin(), t.end(), [](const Timing& a, const Timing& b) { return a.wall < b.wall; });
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 5;
  int64_t rows = 2048, cols = 2048;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--rows" && i + 1 < argc) {
      rows = std::max(64, std::atoi(argv[++i]));
    } else if (a == "--cols" && i + 1 < argc) {
      cols = std::max(64, std::atoi(argv[++i]));
    } else if (a == "--json") {
      json = true;
    } else {
      std::printf("usage: %s [--threads N] [--reps N] [--rows R --cols C] [--json]\n", argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  // Weight-like F16 values: Gaussian with a few outliers.
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint16_t> src(size_t(rows * cols));
  for (size_t k = 0; k < src.size(); ++k) {
    float v = nd(rng);
    if (k % 997 == 0) v *= 10.0f;
    src[k] = f32_to_f16_rne(v);
  }
  const QuantInput in{reinterpret_cast<const uint8_t*>(src.data()), DType::F16, "bench"};
  const double elements = double(rows) * double(cols);
  if (!json)
    std::printf("%-7s %-6s %5s %7s %10s %10s %12s %8s\n", "method", "isa", "axis", "threads",
                "wall s", "cpu s", "Melem/s", "of rtn");
  bool first = true;
  if (json) std::printf("[");
  const CpuIsa best = cpu_isa();
  struct Row {
    QuantMethod method;
    CpuIsa isa;
  };
  // RTN at the best level is the baseline; the search at every level this
  // CPU has (QPACK_CPU_ISA caps them); the refit has no vector path.
  std::vector<Row> rows_run = {{QuantMethod::Rtn, best}};
  for (int l = int(best); l >= 0; --l) rows_run.push_back({QuantMethod::Search, CpuIsa(l)});
  rows_run.push_back({QuantMethod::Refit, best});
  for (int axis : {0, -1}) {
    double rtn_rate = 0.0;
    for (const Row& row : rows_run) {
      const QuantMethod m = row.method;
      set_cpu_isa(row.isa);
      QuantScheme s;
      s.axis = axis;
      s.method = m;
      const GroupLayout L = make_layout({rows, cols}, s);
      std::vector<uint8_t> codes(L.codes_bytes()), scales(size_t(L.params_bytes(s.scale_dtype))),
          zeros(scales.size());
      const QuantBuffers out{codes.data(), scales.data(), zeros.data()};
      quantize_cpu(in, L, s, NonFinitePolicy::Error, out, threads);  // warm-up
      const Timing t = median_run(in, L, s, out, threads, reps);
      const double rate = elements / t.wall;
      if (m == QuantMethod::Rtn) rtn_rate = rate;
      const char* name =
          m == QuantMethod::Rtn ? "rtn" : (m == QuantMethod::Search ? "search" : "refit");
      if (json) {
        std::printf(
            "%s{\"method\":\"%s\",\"isa\":\"%s\",\"axis\":%d,\"threads\":%d,\"rows\":%lld,"
            "\"cols\":%lld,\"wall_s\":%.6f,\"cpu_s\":%.6f,\"elements_per_s\":%.1f,"
            "\"of_rtn\":%.4f}",
            first ? "" : ",", name, cpu_isa_name(row.isa), axis, threads, (long long)rows,
            (long long)cols, t.wall, t.cpu, rate, rate / rtn_rate);
        first = false;
      } else {
        std::printf("%-7s %-6s %5d %7d %10.4f %10.4f %12.1f %7.1f%%\n", name, cpu_isa_name(row.isa),
                    axis, threads, t.wall, t.cpu, rate / 1e6, 100.0 * rate / rtn_rate);
      }
    }
    set_cpu_isa(best);
  }
  if (json) std::printf("]\n");
  return 0;
}
