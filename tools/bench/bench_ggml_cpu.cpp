// ggml's legacy GGUF block types on the CPU (qpack/converter/ggml_blocks.hpp):
// quantize throughput from an F16 tensor at 1 and 2 threads (and all cores
// when there are more), next to the memory-copy bound measured in the same
// run over the same number of bytes, and next to the peer on the same shape:
// gguf-py's numpy quantizers (tools/bench/ggml_peer.py; skipped when python3
// or gguf is missing). Bytes are source read plus blocks written.
//
//   qpack_bench_ggml_cpu [--rows R] [--cols C] [--reps N] [--no-peer]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/spec/dtype.hpp"

using namespace qpack;
namespace gl = spec::ggml;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Parallel memcpy of `bytes`; seconds.
double copy_seconds(std::vector<uint8_t>& a, std::vector<uint8_t>& b, int threads) {
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num(), nt = omp_get_num_threads();
    const size_t chunk = a.size() / size_t(nt);
    const size_t begin = chunk * size_t(id);
    const size_t len = id == nt - 1 ? a.size() - begin : chunk;
    std::memcpy(b.data() + begin, a.data() + begin, len);
  }
  return seconds_since(t0);
}

// "TYPE SECONDS" lines from the peer script, or nothing.
std::map<std::string, double> run_peer(const std::string& script, int64_t rows, int64_t cols,
                                       int reps) {
  std::map<std::string, double> out;
  const std::string cmd = "python3 '" + script + "' --rows " + std::to_string(rows) + " --cols " +
                          std::to_string(cols) + " --reps " + std::to_string(reps) + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char name[16];
  double s;
  while (std::fscanf(p, "%15s %lf", name, &s) == 2) out[name] = s;
  pclose(p);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 11008, cols = 4096;
  int reps = 5;
  bool peer = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rows" && i + 1 < argc)
      rows = std::atoll(argv[++i]);
    else if (a == "--cols" && i + 1 < argc)
      cols = std::atoll(argv[++i]);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--no-peer")
      peer = false;
    else {
      std::printf("usage: %s [--rows R] [--cols C] [--reps N] [--no-peer]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  if (rows <= 0 || cols <= 0 || cols % 32 != 0) {
    std::fprintf(stderr, "cols must be a positive multiple of 32\n");
    return 2;
  }
  const int64_t n = rows * cols;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint16_t> src(static_cast<size_t>(n));
  for (auto& h : src) h = f32_to_f16_rne(nd(rng));
  std::vector<uint8_t> blocks(size_t(ggml_blocks_bytes(gl::GgmlLegacyType::Q8_0, n)));

  std::vector<int> thread_counts = {1, 2};
  if (omp_get_max_threads() > 2) thread_counts.push_back(omp_get_max_threads());
  std::map<std::string, double> peer_s;
  if (peer) {
    // The script sits in the source tree, the binary in the build tree.
    const std::string script = std::string(QPACK_SOURCE_DIR) + "/tools/bench/ggml_peer.py";
    peer_s = run_peer(script, rows, cols, std::min(reps, 3));
  }
  std::printf("tensor [%lld, %lld] F16 (%.0f MB); best of %d; peer: %s\n", (long long)rows,
              (long long)cols, double(n) * 2 / 1e6, reps,
              peer_s.empty() ? "none (python3 + gguf not available, or --no-peer)"
                             : "gguf-py numpy quantize (f16 -> f32 -> blocks), 1 thread");
  std::printf("%-5s %7s %10s %10s %8s %10s %9s\n", "type", "threads", "ms", "GB/s", "of copy",
              "peer GB/s", "vs peer");
  const gl::GgmlLegacyType types[] = {gl::GgmlLegacyType::Q4_0, gl::GgmlLegacyType::Q4_1,
                                      gl::GgmlLegacyType::Q5_0, gl::GgmlLegacyType::Q5_1,
                                      gl::GgmlLegacyType::Q8_0};
  for (const gl::GgmlLegacyType t : types) {
    const size_t out_bytes = size_t(ggml_blocks_bytes(t, n));
    const size_t moved = size_t(n) * 2 + out_bytes;
    std::vector<uint8_t> ca(moved / 2), cb(moved / 2);  // copy of the same total r+w
    for (const int threads : thread_counts) {
      double best = 1e30, best_copy = 1e30;
      for (int r = 0; r < reps; ++r) {
        best_copy = std::min(best_copy, copy_seconds(ca, cb, threads));
        const auto t0 = Clock::now();
        quantize_ggml_blocks_cpu(t, src.data(), DType::F16, n, blocks.data(), threads);
        best = std::min(best, seconds_since(t0));
      }
      const double bw = double(moved) / best, copy_bw = double(moved) / best_copy;
      const auto p = peer_s.find(gl::type_name(t));
      if (p != peer_s.end()) {
        const double peer_bw = double(moved) / p->second;
        std::printf("%-5s %7d %10.2f %10.2f %7.1f%% %10.3f %8.1fx\n", gl::type_name(t), threads,
                    best * 1e3, bw / 1e9, 100 * bw / copy_bw, peer_bw / 1e9, bw / peer_bw);
      } else {
        std::printf("%-5s %7d %10.2f %10.2f %7.1f%% %10s %9s\n", gl::type_name(t), threads,
                    best * 1e3, bw / 1e9, 100 * bw / copy_bw, "-", "-");
      }
    }
  }
  return 0;
}
