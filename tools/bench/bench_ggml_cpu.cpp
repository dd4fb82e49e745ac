// ggml's GGUF block types on the CPU (qpack/converter/ggml_blocks.hpp):
// quantize throughput from an F16 tensor at 1 and 2 threads (and all cores
// when there are more), next to the memory-copy bound measured in the same
// run over the same number of bytes, and next to the peer on the same shape
// (tools/bench/ggml_peer.py; a type whose peer is missing shows "-"): for the
// legacy types gguf-py's numpy quantizers, for the K-quants ggml's own C
// (quantize_row_qN_K_ref from libggml-base.so, one thread). Bytes are source
// read plus blocks written.
//
//   qpack_bench_ggml_cpu [--rows R] [--cols C] [--reps N] [--types T,T,..]
//                        [--ggml-lib PATH] [--no-peer]
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
                                       int reps, const std::string& types,
                                       const std::string& ggml_lib) {
  std::map<std::string, double> out;
  std::string cmd = "python3 '" + script + "' --rows " + std::to_string(rows) + " --cols " +
                    std::to_string(cols) + " --reps " + std::to_string(reps) + " --types " + types;
  if (!ggml_lib.empty()) cmd += " --ggml-lib '" + ggml_lib + "'";
  cmd += " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char name[16];
  double s;
  while (std::fscanf(p, "%15s %lf", name, &s) == 2) out[name] = s;
  pclose(p);
  return out;
}

constexpr GgmlType kAllTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                  GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                                  GgmlType::Q5_K, GgmlType::Q6_K};

// The types named in a comma-separated list ("Q4_K,Q6_K"); false for an
// unknown name.
bool parse_types(const std::string& list, std::vector<GgmlType>* out) {
  out->clear();
  size_t begin = 0;
  while (begin <= list.size()) {
    const size_t end = std::min(list.find(',', begin), list.size());
    const std::string name = list.substr(begin, end - begin);
    bool found = false;
    for (const GgmlType t : kAllTypes)
      if (name == ggml_type_name(t)) {
        out->push_back(t);
        found = true;
      }
    if (!found) return false;
    begin = end + 1;
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 11008, cols = 4096;
  int reps = 5;
  bool peer = true;
  std::string type_list = "Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K";
  std::string ggml_lib;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rows" && i + 1 < argc)
      rows = std::atoll(argv[++i]);
    else if (a == "--cols" && i + 1 < argc)
      cols = std::atoll(argv[++i]);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--types" && i + 1 < argc)
      type_list = argv[++i];
    else if (a == "--ggml-lib" && i + 1 < argc)
      ggml_lib = argv[++i];
    else if (a == "--no-peer")
      peer = false;
    else {
      std::printf(
          "usage: %s [--rows R] [--cols C] [--reps N] [--types T,T,..] [--ggml-lib PATH] "
          "[--no-peer]\n"
          "  --types     ggml types to time (default all ten: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K "
          "Q3_K Q4_K Q5_K Q6_K)\n"
          "  --ggml-lib  libggml-base.so for the K-quant peer (default: llama-cpp-python's)\n",
          argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  std::vector<GgmlType> types;
  if (!parse_types(type_list, &types)) {
    std::fprintf(stderr, "--types: not a comma-separated list of ggml block types: %s\n",
                 type_list.c_str());
    return 2;
  }
  bool kquants = false;
  for (const GgmlType t : types)
    kquants = kquants || ggml_type_info(uint32_t(t))->block_size == 256;
  if (rows <= 0 || cols <= 0 || cols % (kquants ? 256 : 32) != 0) {
    std::fprintf(stderr, "cols must be a positive multiple of %d\n", kquants ? 256 : 32);
    return 2;
  }
  const int64_t n = rows * cols;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint16_t> src(static_cast<size_t>(n));
  for (auto& h : src) h = f32_to_f16_rne(nd(rng));
  std::vector<uint8_t> blocks(size_t(ggml_blocks_bytes(GgmlType::Q8_0, n)));  // the largest

  std::vector<int> thread_counts = {1, 2};
  if (omp_get_max_threads() > 2) thread_counts.push_back(omp_get_max_threads());
  std::map<std::string, double> peer_s;
  if (peer) {
    // The script sits in the source tree, the binary in the build tree.
    const std::string script = std::string(QPACK_SOURCE_DIR) + "/tools/bench/ggml_peer.py";
    peer_s = run_peer(script, rows, cols, std::min(reps, 3), type_list, ggml_lib);
  }
  std::printf(
      "tensor [%lld, %lld] F16 (%.0f MB); best of %d; peer (f16 -> f32 -> blocks, 1 "
      "thread): %s\n",
      (long long)rows, (long long)cols, double(n) * 2 / 1e6, reps,
      !peer            ? "none (--no-peer)"
      : peer_s.empty() ? "none (python3 with gguf or llama_cpp not available)"
                       : "gguf-py numpy (legacy types), ggml's C (K-quants)");
  std::printf("%-5s %7s %10s %10s %8s %10s %9s\n", "type", "threads", "ms", "GB/s", "of copy",
              "peer GB/s", "vs peer");
  for (const GgmlType t : types) {
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
      const auto p = peer_s.find(ggml_type_name(t));
      if (p != peer_s.end()) {
        const double peer_bw = double(moved) / p->second;
        std::printf("%-5s %7d %10.2f %10.2f %7.1f%% %10.3f %8.1fx\n", ggml_type_name(t), threads,
                    best * 1e3, bw / 1e9, 100 * bw / copy_bw, peer_bw / 1e9, bw / peer_bw);
      } else {
        std::printf("%-5s %7d %10.2f %10.2f %7.1f%% %10s %9s\n", ggml_type_name(t), threads,
                    best * 1e3, bw / 1e9, 100 * bw / copy_bw, "-", "-");
      }
    }
  }
  return 0;
}
