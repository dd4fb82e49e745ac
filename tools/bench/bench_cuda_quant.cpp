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
//   end to end: TensorQuantizer over a multi-GB set of tensors, GB/s of
//     source bytes as a fraction of the pinned host-to-device bandwidth, from
//     pageable (anonymous) memory, from a read-only mapping of a file held in
//     the page cache (as a converter reads a checkpoint), and from pinned
//     memory, with one tensor submitted ahead of the last one's wait (as the
//     converter drives it), and from the page cache one tensor at a time;
//     then convert_checkpoint of the same tensors as a safetensors file in
//     the page cache, written to /dev/shm. Before them, what cudaHostRegister + cudaHostUnregister
//     cost per piece: the reason TensorQuantizer stages pageable sources through pinned buffers
//     instead of registering them in place (docs/kernels.md, rejected designs; file mappings only
//     with --file-registration: it hung the kernel of a machine it was measured on).
//
//   qpack_bench_cuda [--quick] [--profile] [--e2e-only] [--e2e-gib N] [--file-registration] [--json
//   FILE]
//   (--profile: one launch of each kernel, for ncu; no timing worth reading)
#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "qpack/converter/backend_cuda.hpp"
#include "qpack/converter/convert.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/converter/quantizer.hpp"
#include "qpack/format/checkpoint.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/layout.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/dtype.hpp"

using namespace qpack;

namespace {

void ck(cudaError_t e, const char* what) { bench::check_cuda(e, what, 1); }
void ck(const cuda::Status& s, const char* what) { bench::check_status(s, what, 1); }

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

void report(const std::string& name, double bytes, double ms, double ref_gbps,
            const std::string& note = {}) {
  Row r;
  r.name = name;
  r.ms = ms;
  r.gbps = bytes / (ms * 1e-3) / 1e9;
  r.frac = ref_gbps > 0 ? r.gbps / ref_gbps : 0;
  r.note = note;
  std::printf("  %-46s %9.3f ms %9.1f GB/s %6.1f%% %s\n", name.c_str(), ms, r.gbps, 100 * r.frac,
              note.c_str());
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
  const double ms = time_ms(
      3, reps, [&](int) { ck(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice), "copy"); }, 1);
  cudaFree(x);
  cudaFree(y);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

double h2d_gbps(const void* host, size_t bytes, int reps) {
  void* d = nullptr;
  ck(cudaMalloc(&d, bytes), "malloc");
  const double ms = time_ms(
      1, reps, [&](int) { ck(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice), "h2d"); }, 1);
  cudaFree(d);
  return double(bytes) / (ms * 1e-3) / 1e9;
}

// profile: one launch of each kernel on 11008x4096, 4 bits (for ncu).
void bench_kernels(double copy_gbps, bool quick, bool profile) {
  std::printf("\nkernels (fp16 source, G=64, asymmetric, F16 scales; %% of D2D copy %.0f GB/s)\n",
              copy_gbps);
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
        const GroupLayout L = make_layout(shape, s, "w");
        const size_t codes = L.codes_bytes(), params = size_t(L.params_bytes(s.scale_dtype));
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

        const std::string tag = std::to_string(shape[0]) + "x" + std::to_string(shape[1]) +
                                " axis " + std::to_string(axis) + " " + std::to_string(bits) + "b";
        const double qms = time_ms(warm, reps, quant, profile ? 1 : 10);
        report("quantize   " + tag, double(n * 2 + codes + 2 * params), qms, copy_gbps,
               same ? "" : "MISMATCH vs quantize_cpu");
        for (DType od : {DType::F32, DType::F16}) {
          const double dms = time_ms(
              warm, reps,
              [&](int i) {
                const int k = i % sets;
                ck(cuda::dequantize(cod[k].as<uint8_t>(), sc[k].as<uint8_t>(), ze[k].as<uint8_t>(),
                                    L, s, out[k].data(), od, nullptr),
                   "dequantize");
              },
              profile ? 1 : 10);
          report(std::string("dequant>") + (od == DType::F32 ? "f32 " : "f16 ") + tag,
                 double(codes + 2 * params + n * size_t(od == DType::F32 ? 4 : 2)), dms, copy_gbps);
        }
      }
  }
}

// A file of `bytes` bytes at offset `at` (as a tensor in a safetensors file
// sits after its header), unlinked at once: the open descriptor keeps it, and
// the disk space goes back when the program ends, however it ends. Each
// map() is a fresh PROT_READ MAP_PRIVATE mapping, like format's MappedFile:
// the pages are in the page cache but not yet in this process's page tables,
// as for a converter that has just opened a checkpoint.
class TempFile {
 public:
  TempFile(const uint8_t* data, size_t bytes, size_t at) : size_(at + bytes) {
    const char* dir = std::getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/tmp") + "/qpack_bench_XXXXXX";
    fd_ = mkstemp(path.data());
    if (fd_ < 0) throw Error(ErrorCode::Io, path, "", "mkstemp failed");
    unlink(path.c_str());
    struct statfs fs {};
    fstatfs(fd_, &fs);
    tmpfs_ = fs.f_type == 0x01021994;  // TMPFS_MAGIC: then "page cache" is shmem
    std::vector<uint8_t> head(at, 0x5a);
    write_all(head.data(), at);
    write_all(data, bytes);
    fdatasync(fd_);  // no writeback racing the measurements
  }
  ~TempFile() { close(fd_); }
  bool tmpfs() const { return tmpfs_; }
  struct Map {
    void* p;
    size_t n;
    ~Map() { munmap(p, n); }
    const uint8_t* data() const { return static_cast<const uint8_t*>(p); }
  };
  std::unique_ptr<Map> map() const {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) throw Error(ErrorCode::Io, "", "", "mmap of the bench file failed");
    return std::unique_ptr<Map>(new Map{p, size_});
  }

 private:
  void write_all(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t(1) << 30));
      if (w <= 0) throw Error(ErrorCode::Io, "", "", "cannot write the bench file");
      p += w;
      n -= size_t(w);
    }
  }
  int fd_ = -1;
  size_t size_;
  bool tmpfs_ = false;
};

// cudaHostRegister then cudaHostUnregister of [base, base + bytes) in
// pieces of `piece` bytes, `threads` threads at a time: GB/s of each phase
// and of both together. Empty when registration fails.
std::string register_cost(const uint8_t* base, size_t bytes, size_t piece, int threads,
                          unsigned flags) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const uintptr_t a = (reinterpret_cast<uintptr_t>(base) + page - 1) / page * page;
  bytes = (bytes - (a - reinterpret_cast<uintptr_t>(base))) / piece * piece;
  const size_t pieces = bytes / piece;
  std::vector<cudaError_t> err(pieces, cudaSuccess);
  auto phase = [&](bool reg) {
    std::vector<std::thread> ts;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        cudaSetDevice(0);
        for (size_t i = size_t(t); i < pieces; i += size_t(threads)) {
          void* p = reinterpret_cast<void*>(a + i * piece);
          if (reg)
            err[i] = cudaHostRegister(p, piece, flags);
          else if (err[i] == cudaSuccess)
            cudaHostUnregister(p);
        }
        cudaGetLastError();
      });
    for (auto& th : ts) th.join();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double r = phase(true), u = phase(false);
  for (cudaError_t e : err)
    if (e != cudaSuccess) return std::string("FAILED: ") + cudaGetErrorString(e);
  char buf[160];
  std::snprintf(buf, sizeof buf, "register %6.1f GB/s, unregister %6.1f GB/s, both %6.1f GB/s",
                double(bytes) / r / 1e9, double(bytes) / u / 1e9, double(bytes) / (r + u) / 1e9);
  return buf;
}

void bench_e2e(double e2e_gib, bool quick, bool file_registration) {
  // 11008x4096 fp16 tensors (90 MB each) up to about e2e_gib GiB.
  const std::vector<int64_t> shape = {11008, 4096};
  const size_t tensor_bytes = size_t(shape[0] * shape[1]) * 2;
  const int count = std::max(1, int(e2e_gib * double(1ull << 30) / double(tensor_bytes)));
  const size_t total = tensor_bytes * size_t(count);
  std::printf("\nend to end: TensorQuantizer, %d tensors 11008x4096 fp16 = %.2f GB of source\n",
              count, double(total) / 1e9);
  std::vector<uint8_t> pageable(total);
  fill_random_f16(pageable.data(), total / 2, 7);
  cuda::PinnedBuffer pinned;
  ck(pinned.allocate(total), "cudaMallocHost");
  std::memcpy(pinned.data(), pageable.data(), total);
  // The tensors at an odd offset in the file, as after a safetensors header.
  const size_t file_at = 4096 + 136;
  const auto w0 = std::chrono::steady_clock::now();
  const TempFile file(pageable.data(), total, file_at);
  std::printf("  (bench file written and synced in %.1f s)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
  const size_t probe = std::min(total, size_t(1) << 30);
  const double pinned_h2d = h2d_gbps(pinned.data(), probe, quick ? 3 : 5);
  const double pageable_h2d = h2d_gbps(pageable.data(), probe, quick ? 3 : 5);
  std::printf("  pinned H2D %.1f GB/s, pageable H2D %.1f GB/s (cudaMemcpy of %.2f GB)\n",
              pinned_h2d, pageable_h2d, double(probe) / 1e9);
  std::fflush(stdout);

  // What page-locking the source in place costs, against pinned H2D.
  {
    int ro = 0;
    cudaDeviceGetAttribute(&ro, cudaDevAttrHostRegisterReadOnlySupported, 0);
    const unsigned flags = ro ? cudaHostRegisterReadOnly : cudaHostRegisterDefault;
    const int cores = int(std::min(16u, std::max(1u, std::thread::hardware_concurrency())));
    const size_t bytes = std::min(total, size_t(1) << 30);
    std::printf("  register: read-only registration %s; the bench file is in %s\n",
                ro ? "supported" : "NOT supported",
                file.tmpfs() ? "tmpfs" : "a disk file system's page cache");
    struct Way {
      size_t piece;
      int threads;
    };
    for (const Way w :
         {Way{2u << 20, 1}, Way{32u << 20, 1}, Way{2u << 20, cores}, Way{32u << 20, cores}}) {
      char what[64];
      std::snprintf(what, sizeof what, "%2zu MiB pieces x %2d threads", w.piece >> 20, w.threads);
      std::printf("  register anon       %s: %s\n", what,
                  register_cost(pageable.data(), bytes, w.piece, w.threads, flags).c_str());
      std::fflush(stdout);
      if (!file_registration) continue;
      const auto m = file.map();  // fresh: the pages get mapped by the registration
      std::printf("  register file mmap  %s: %s\n", what,
                  register_cost(m->data() + file_at, bytes, w.piece, w.threads, flags).c_str());
      std::fflush(stdout);
    }
    if (!file_registration)
      std::printf(
          "  register file mmap: not tried (it hung the lent H100's kernel 6.18: "
          "--file-registration tries it)\n");
  }

  struct Source {
    const char* name;
    int kind;  // 0 pageable (anonymous), 1 page cache (fresh file mapping each pass), 2 pinned,
               // 3 page cache with one tensor at a time
  };
  for (int axis : {0, -1}) {
    QuantScheme s;
    s.axis = axis;
    const GroupLayout L = make_layout(shape, s, "w");
    const size_t params = size_t(L.params_bytes(s.scale_dtype));
    std::vector<uint8_t> codes(L.codes_bytes()), scales(params), zeros(params);
    std::memset(codes.data(), 1, codes.size());
    std::memset(scales.data(), 1, scales.size());
    std::memset(zeros.data(), 1, zeros.size());
    // A second output set: with one tensor submitted ahead, two are in flight.
    std::vector<uint8_t> codes2(codes), scales2(scales), zeros2(zeros);
    const QuantBuffers outs[2] = {{codes.data(), scales.data(), zeros.data()},
                                  {codes2.data(), scales2.data(), zeros2.data()}};
    const std::string ax = " axis " + std::to_string(axis) + " 4b";
    // As the converter drives it: tensor i submitted before tensor i-1 is
    // waited for, so the pipeline runs on across tensors.
    auto pass = [&](TensorQuantizer& q, const uint8_t* base) {
      const auto t0 = std::chrono::steady_clock::now();
      TensorQuantizer::Ticket prev = 0;
      for (int i = 0; i < count; ++i) {
        const TensorQuantizer::Ticket t =
            q.submit({base + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s,
                     NonFinitePolicy::Error, outs[i % 2]);
        if (i > 0) q.wait(prev);
        prev = t;
      }
      q.wait(prev);
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
          .count();
    };
    // One tensor at a time: the pipeline fills and drains at every tensor.
    auto pass_one_by_one = [&](TensorQuantizer& q, const uint8_t* base) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < count; ++i)
        q.quantize({base + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s, NonFinitePolicy::Error,
                   outs[0]);
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
          .count();
    };
    if (axis == 0 && !quick) {
      // Chunk size: each tensor fills and drains the pipeline once.
      for (size_t mib : {2, 32}) {
        cuda::QuantizerOptions o;
        o.chunk_bytes = mib << 20;
        auto qc = make_cuda_quantizer(0, o);
        pass(*qc, pageable.data());
        report("e2e pageable axis 0 4b, " + std::to_string(mib) + " MiB chunks", double(total),
               pass(*qc, pageable.data()), pinned_h2d);
      }
    }
    const std::vector<Source> vs = {
        {"pageable", 0}, {"page cache", 1}, {"pinned  ", 2}, {"page cache, one by one,", 3}};
    std::vector<std::unique_ptr<TensorQuantizer>> qs;
    std::vector<std::vector<double>> ms(vs.size());
    for (size_t k = 0; k < vs.size(); ++k) qs.push_back(make_cuda_quantizer(0));
    // Variants interleaved, best of a few passes each (the host's copy
    // bandwidth drifts by tens of percent over seconds on the lent machine).
    auto timed = [&](size_t k) {
      std::unique_ptr<TempFile::Map> m;
      const uint8_t* base = vs[k].kind == 0 ? pageable.data() : pinned.data();
      if (vs[k].kind == 1 || vs[k].kind == 3) base = (m = file.map())->data() + file_at;
      return vs[k].kind == 3 ? pass_one_by_one(*qs[k], base) : pass(*qs[k], base);
    };
    for (int rep = 0; rep < (quick ? 2 : 3); ++rep)
      for (size_t k = 0; k < vs.size(); ++k) {
        if (rep == 0) timed(k);  // warm-up: device buffers, the pool's threads
        ms[k].push_back(timed(k));
      }
    for (size_t k = 0; k < vs.size(); ++k)  // the bar is the page cache row
      report(std::string("e2e ") + vs[k].name + ax + " (vs pinned H2D)", double(total),
             *std::min_element(ms[k].begin(), ms[k].end()), pinned_h2d);
  }
  // The whole conversion: the same tensors as a safetensors checkpoint in the
  // page cache, converted by convert_checkpoint on the GPU into a .qpack file
  // (reading, quantizing, checksumming, writing and the final fsync). The
  // output goes to /dev/shm when there is one, so the row measures the
  // converter rather than the disk.
  {
    std::vector<TensorToWrite> tensors;
    for (int i = 0; i < count; ++i)
      tensors.push_back({"model.layers." + std::to_string(i) + ".mlp.up_proj.weight", DType::F16,
                         shape, pageable.data() + size_t(i) * tensor_bytes, tensor_bytes});
    const char* dir = std::getenv("TMPDIR");
    const std::string src =
        std::string(dir && *dir ? dir : "/tmp") + "/qpack_bench_model.safetensors";
    const std::string out_dir =
        access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (dir && *dir ? dir : "/tmp");
    const std::string out = out_dir + "/qpack_bench_out.qpack";
    write_safetensors(src, tensors, {}, false);
    {
      std::vector<char> buf(size_t(64) << 20);  // into the page cache, as a warm checkpoint is
      std::ifstream f(src, std::ios::binary);
      while (f.read(buf.data(), std::streamsize(buf.size())) || f.gcount() > 0) {
      }
    }
    // Its parts on their own: opening the checkpoint and mapping every
    // tensor's pages (will_need), and the writer with the outputs ready.
    {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ckpt = Checkpoint::open(src);
      for (const auto& t : ckpt->tensors()) t.file->will_need(*t.info);
      report(
          "e2e convert parts: open + will_need", double(total),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
          pinned_h2d);
    }
    {
      QuantScheme s;
      const GroupLayout L = make_layout(shape, s, "w");
      const size_t params = size_t(L.params_bytes(s.scale_dtype));
      std::vector<uint8_t> codes(L.codes_bytes(), 3), scales(params, 4), zeros(params, 5);
      double best = 1e30;
      for (int rep = 0; rep < 2; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        WriterOptions wo;
        wo.overwrite = true;
        QpackWriter w(out, wo);
        for (int i = 0; i < count; ++i)
          w.add_quantized(tensors[size_t(i)].name, DType::F16, shape, s, codes.data(),
                          scales.data(), zeros.data());
        w.commit();
        best = std::min(
            best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                      .count());
      }
      report("e2e convert parts: writer alone", double(total), best, pinned_h2d);
    }
    ConvertOptions o;
    o.overwrite = true;
    auto q = make_cuda_quantizer(0);
    double best = 1e30;
    for (int rep = 0; rep < (quick ? 2 : 3); ++rep) {
      const ConvertSummary sum = convert_checkpoint(src, out, o, *q);
      if (rep > 0) best = std::min(best, sum.seconds * 1e3);
    }
    report("e2e convert_checkpoint, page cache -> " + out_dir + " (vs pinned H2D)", double(total),
           best, pinned_h2d);
    std::remove(out.c_str());
    std::remove(src.c_str());
  }
  // For scale: the CPU path over the first GB, all cores.
  {
    QuantScheme s;
    const GroupLayout L = make_layout(shape, s, "w");
    const size_t params = size_t(L.params_bytes(s.scale_dtype));
    std::vector<uint8_t> codes(L.codes_bytes()), scales(params), zeros(params);
    const int n = std::min(count, 11);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
      quantize_cpu({pageable.data() + size_t(i) * tensor_bytes, DType::F16, "w"}, L, s,
                   NonFinitePolicy::Error, {codes.data(), scales.data(), zeros.data()}, 0);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    report("quantize_cpu axis 0 4b, all cores (vs pinned H2D)", double(tensor_bytes) * n, ms,
           pinned_h2d);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, profile = false, kernels = true, file_registration = false;
  double e2e_gib = 4.0;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--profile") {
      profile = true;
      e2e_gib = 0;
    } else if (a == "--file-registration") {
      file_registration = true;
    } else if (a == "--e2e-only") {
      kernels = false;
    } else if (a == "--e2e-gib" && i + 1 < argc) {
      e2e_gib = std::atof(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: qpack_bench_cuda [--quick] [--profile] [--e2e-only] [--e2e-gib N] "
                   "[--file-registration] [--json FILE]\n");
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
    if (kernels) bench_kernels(copy, quick, profile);
    if (e2e_gib > 0) bench_e2e(e2e_gib, quick, file_registration);
  } catch (const Error& e) {
    std::fprintf(stderr, "qpack_bench_cuda: %s\n", e.what());
    return 1;
  }
  if (!json.empty()) {
    std::ofstream f(json);
    f << "[\n";
    for (size_t i = 0; i < rows.size(); ++i)
      f << "  {\"name\": \"" << rows[i].name << "\", \"ms\": " << rows[i].ms
        << ", \"gbps\": " << rows[i].gbps << ", \"fraction\": " << rows[i].frac << ", \"note\": \""
        << rows[i].note << "\"}" << (i + 1 < rows.size() ? ",\n" : "\n");
    f << "]\n";
  }
  bool ok = true;
  for (const Row& r : rows) ok = ok && r.note.empty();
  return ok ? 0 : 1;
}
