// CudaTensorQuantizer: quantizes tensors that sit in host memory (often a
// read-only mmap of a safetensors file) into host output buffers.
//
// The tensor is cut into chunks of whole groups (group rows; inner columns
// too when a single group row is larger than a chunk). Each chunk goes
// through one of `streams` slots, each with its own pinned staging buffers,
// device buffers, stream and events:
//
//   loader thread:  pageable source -> pinned input        (chunk n+1, n+2)
//   slot stream:    H2D, kernel, D2H of codes/scales/flags  (chunk n)
//   calling thread: pinned output -> caller's buffers       (chunk n-streams)
//
// so host copies, both DMA directions and the kernels overlap. The chunk
// sequence runs on across tensors: submit() returns once a tensor's last
// chunk is enqueued, and the loader starts staging the next submitted tensor
// while the previous one's tail is still on the device (with one tensor at
// a time the pipeline fills and drains at every tensor, which cost a tenth
// to a quarter of the end-to-end rate: docs/performance.md).
// Host copies are split over a pool of threads (one memcpy thread does not
// keep up with PCIe), and the output copies run there asynchronously so the
// calling thread only waits for the GPU. A source that is already pinned
// skips the staging copy.
//
// Errors match quantize_reference: non-finite inputs and range overflows are
// recorded by the kernels as flat / group indices and reported, once the
// whole tensor is done, through the reference's helpers (so the first index
// and the message are the same), from wait(); CUDA failures become
// Error(Cuda), and they fail every tensor still in flight.
#include "qpack/converter/backend_cuda.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/cuda_status.hpp"
#include "qpack/kernels/two_level.hpp"
#include "quant_detail.hpp"

namespace qpack {
namespace {

using cuda::QuantFlags;

void check(cudaError_t err, const char* what, const std::string& tensor = {}) {
  if (err != cudaSuccess) cuda::throw_if_failed(cuda::cuda_status(err, what), tensor);
}

// A fixed set of threads that run batches of independent tasks. A batch is
// either run to completion by the caller (run) or submitted and waited for
// later (submit/wait), so the loader thread and the output copies of
// finished chunks can share the threads.
class WorkerPool {
 public:
  struct Batch {
    std::function<void(int)> fn;
    std::mutex m;
    std::condition_variable cv;
    int remaining = 0;
  };

  explicit WorkerPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return int(threads_.size()); }

  // Queues fn(0) .. fn(count-1); fn must not throw.
  std::shared_ptr<Batch> submit(int count, std::function<void(int)> fn) {
    auto batch = std::make_shared<Batch>();
    batch->fn = std::move(fn);
    batch->remaining = count;
    if (count <= 0) return batch;
    if (count == 1 || threads_.empty()) {  // not worth a hand-over
      for (int i = 0; i < count; ++i) batch->fn(i);
      batch->remaining = 0;
      return batch;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      for (int i = 0; i < count; ++i) queue_.push_back({batch, i});
    }
    if (count >= size()) {
      cv_.notify_all();
    } else {
      for (int i = 0; i < count; ++i) cv_.notify_one();
    }
    return batch;
  }
  static void wait(const std::shared_ptr<Batch>& batch) {
    if (!batch) return;
    std::unique_lock<std::mutex> lk(batch->m);
    batch->cv.wait(lk, [&] { return batch->remaining == 0; });
  }
  void run(int count, std::function<void(int)> fn) { wait(submit(count, std::move(fn))); }

 private:
  struct Task {
    std::shared_ptr<Batch> batch;
    int index;
  };
  void work() {
    for (;;) {
      Task t;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        t = std::move(queue_.front());
        queue_.pop_front();
      }
      t.batch->fn(t.index);
      std::lock_guard<std::mutex> lk(t.batch->m);
      if (--t.batch->remaining == 0) t.batch->cv.notify_all();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// `rows` rows of `width` bytes (pitches in bytes), copied in pieces of about
// kPiece bytes: a piece per pool thread for a typical chunk.
struct Copy2D {
  uint8_t* dst;
  size_t dst_pitch;
  const uint8_t* src;
  size_t src_pitch;
  size_t width, rows;
};
constexpr size_t kPiece = size_t(256) << 10;

// Splits the copies into independent pieces (contiguous copies by bytes,
// strided ones by rows).
std::vector<Copy2D> split_copies(const std::vector<Copy2D>& copies) {
  std::vector<Copy2D> pieces;
  for (const Copy2D& c : copies) {
    if (c.rows == 0 || c.width == 0) continue;
    if (c.dst_pitch == c.width && c.src_pitch == c.width) {
      const size_t total = c.width * c.rows;
      for (size_t b = 0; b < total; b += kPiece)
        pieces.push_back({c.dst + b, 0, c.src + b, 0, std::min(kPiece, total - b), 1});
    } else {
      const size_t rows_per = std::max<size_t>(1, kPiece / c.width);
      for (size_t r = 0; r < c.rows; r += rows_per)
        pieces.push_back({c.dst + r * c.dst_pitch, c.dst_pitch, c.src + r * c.src_pitch,
                          c.src_pitch, c.width, std::min(rows_per, c.rows - r)});
    }
  }
  return pieces;
}

void copy_piece(const Copy2D& c) {
  for (size_t r = 0; r < c.rows; ++r)
    std::memcpy(c.dst + r * c.dst_pitch, c.src + r * c.src_pitch, c.width);
}

std::shared_ptr<WorkerPool::Batch> submit_copies(WorkerPool& pool,
                                                 const std::vector<Copy2D>& copies) {
  auto pieces = std::make_shared<std::vector<Copy2D>>(split_copies(copies));
  return pool.submit(int(pieces->size()), [pieces](int i) { copy_piece((*pieces)[size_t(i)]); });
}

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Chunk {
  int64_t gr_begin, gr_end;    // group rows
  int64_t col_begin, col_end;  // inner columns
  int64_t row_begin, row_end;  // tensor rows covered
};

// One submitted tensor. Its chunks hold global indices [first, end()) in the
// pipeline's chunk sequence, which runs on across tensors.
struct Job {
  TensorQuantizer::Ticket ticket = 0;
  QuantInput in;
  GroupLayout L;
  QuantScheme scheme;
  NonFinitePolicy policy = NonFinitePolicy::Error;
  QuantBuffers out;
  std::vector<Chunk> chunks;
  size_t esize = 2, ssize = 2;
  bool pinned_source = false;
  int64_t first = 0;
  // Every chunk is done and its outputs are in the caller's buffers (or the
  // pipeline broke: then `failure` says why). Set by the calling thread,
  // read by the loader (job_of).
  std::atomic<bool> complete{false};
  std::exception_ptr failure;
  unsigned long long first_nonfinite = cuda::kNoIndex, first_overflow = cuda::kNoIndex;
  int64_t end() const { return first + int64_t(chunks.size()); }
};

class CudaTensorQuantizer final : public TensorQuantizer {
 public:
  CudaTensorQuantizer(int device, const cuda::QuantizerOptions& opt) : device_(device), opt_(opt) {
    std::string why;
    if (!cuda::cuda_available(&why))
      throw Error(ErrorCode::NoDevice, "", "", "CUDA is not available: " + why);
    cuda::DeviceInfo info;
    const cuda::Status st = cuda::query_device(device, &info);
    if (!st.ok()) throw Error(ErrorCode::NoDevice, "", "", st.message);
    description_ = "cuda:" + std::to_string(device) + " (" + info.name + ")";
    if (opt_.streams < 2) opt_.streams = 2;
    if (opt_.chunk_bytes == 0) opt_.chunk_bytes = 1;
    int threads = opt_.host_threads;
    // Pageable -> pinned copies are the slowest stage (a few GB/s per thread),
    // so by default every core helps; the threads sleep between chunks.
    if (threads <= 0) threads = std::clamp(int(std::thread::hardware_concurrency()), 1, 16);
    pool_ = std::make_unique<WorkerPool>(threads);
    check(cudaSetDevice(device_), "cudaSetDevice");
    slots_.resize(size_t(opt_.streams));
    try {
      for (Slot& s : slots_) {
        check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
        check(cudaEventCreateWithFlags(&s.h2d_done, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
      }
      // Nominal capacity for chunk_bytes of 16-bit source at 8 bits; grown
      // on demand by tensors that need more (tiny groups, huge groups).
      const size_t in = round_up(opt_.chunk_bytes, 256);
      ensure_capacity(in, round_up(in / 2, 256), round_up(in / 8 + 256, 256));
    } catch (...) {
      release();
      throw;
    }
  }

  ~CudaTensorQuantizer() override {
    cancel();
    release();
  }

  std::string description() const override { return description_; }

  void quantize(const QuantInput& in, const GroupLayout& L, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override {
    wait(submit(in, L, scheme, policy, out));
  }
  Ticket submit(const QuantInput& in, const GroupLayout& L, const QuantScheme& scheme,
                NonFinitePolicy policy, const QuantBuffers& out) override;
  void wait(Ticket ticket) override;
  void cancel() noexcept override;

 private:
  void quantize_two_level_whole(Job& job);
  struct Slot {
    cudaStream_t stream = nullptr;
    cudaEvent_t h2d_done = nullptr;               // the pinned input may be refilled
    cudaEvent_t done = nullptr;                   // the pinned outputs are complete
    uint8_t* d_mem = nullptr;                     // input | codes | scales | zeros | flags
    uint8_t* h_in = nullptr;                      // pinned
    uint8_t* h_out = nullptr;                     // pinned: codes | scales | zeros | flags
    std::shared_ptr<WorkerPool::Batch> out_copy;  // h_out -> caller, in flight
    int64_t out_chunk = -1;                       // whose outputs out_copy moves
  };

  void release() noexcept {
    cudaSetDevice(device_);
    for (Slot& s : slots_) {
      if (s.stream) cudaStreamSynchronize(s.stream);
      free_buffers(s);
      if (s.h2d_done) cudaEventDestroy(s.h2d_done);
      if (s.done) cudaEventDestroy(s.done);
      if (s.stream) cudaStreamDestroy(s.stream);
      s = Slot{};
    }
    cudaGetLastError();
  }
  static void free_buffers(Slot& s) noexcept {
    if (s.d_mem) cudaFree(s.d_mem);
    if (s.h_in) cudaFreeHost(s.h_in);
    if (s.h_out) cudaFreeHost(s.h_out);
    s.d_mem = s.h_in = s.h_out = nullptr;
  }

  // Offsets inside a slot's buffers for the current capacities.
  size_t off_codes() const { return cap_in_; }
  size_t off_scales() const { return cap_in_ + cap_codes_; }
  size_t off_zeros() const { return cap_in_ + cap_codes_ + cap_params_; }
  size_t off_flags() const { return cap_in_ + cap_codes_ + 2 * cap_params_; }
  size_t out_off(size_t device_off) const { return device_off - cap_in_; }

  // Only with the pipeline drained (nothing enqueued, the loader waiting).
  void ensure_capacity(size_t in, size_t codes, size_t params) {
    in = round_up(std::max<size_t>(in, 256), 256);
    codes = round_up(std::max<size_t>(codes, 256), 256);
    params = round_up(std::max<size_t>(params, 256), 256);
    if (in <= cap_in_ && codes <= cap_codes_ && params <= cap_params_) return;
    in = std::max(in, cap_in_);
    codes = std::max(codes, cap_codes_);
    params = std::max(params, cap_params_);
    for (Slot& s : slots_) {
      check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
      free_buffers(s);
    }
    cap_in_ = cap_codes_ = cap_params_ = 0;
    const size_t dev_bytes = in + codes + 2 * params + 256;
    const size_t out_bytes = codes + 2 * params + 256;
    for (Slot& s : slots_) {
      void* p = nullptr;
      check(cudaMalloc(&p, dev_bytes), "cudaMalloc (staging)");
      s.d_mem = static_cast<uint8_t*>(p);
      check(cudaMallocHost(&p, in), "cudaMallocHost (staging)");
      s.h_in = static_cast<uint8_t*>(p);
      check(cudaMallocHost(&p, out_bytes), "cudaMallocHost (staging)");
      s.h_out = static_cast<uint8_t*>(p);
    }
    cap_in_ = in;
    cap_codes_ = codes;
    cap_params_ = params;
  }

  std::vector<Chunk> plan(const GroupLayout& L, int esize, int ssize) const;

  Slot& slot_of(int64_t g) { return slots_[size_t(g % int64_t(slots_.size()))]; }
  // The unfinished job that holds global chunk g (callers hold m_ or are the
  // calling thread, the only one that changes jobs_).
  Job* job_of(int64_t g) const {
    for (const auto& j : jobs_)
      if (!j->complete && g >= j->first && g < j->end()) return j.get();
    return nullptr;
  }

  void loader_main();
  void start_loader();
  void stop_loader() noexcept;
  void load(const Job& job, int64_t g);
  void advance(Job& job, int64_t g);
  void enqueue(const Job& job, int64_t g);
  void finish(int64_t g);
  void wait_outputs(Slot& s) {
    WorkerPool::wait(s.out_copy);
    s.out_copy.reset();
    s.out_chunk = -1;
  }
  void drain();
  void fail(const std::exception_ptr& why) noexcept;

  int device_;
  cuda::QuantizerOptions opt_;
  std::string description_;
  std::unique_ptr<WorkerPool> pool_;
  std::vector<Slot> slots_;
  size_t cap_in_ = 0, cap_codes_ = 0, cap_params_ = 0;

  // The pipeline. Chunks of all submitted tensors form one sequence; the
  // counters say how far each stage has got in it. The calling thread owns
  // jobs_ (the loader reads it under m_), finished_ and the slots' outputs;
  // the loader thread advances loaded_.
  std::deque<std::shared_ptr<Job>> jobs_;  // submitted, not yet waited
  Ticket next_ticket_ = 1;
  std::mutex m_;
  std::condition_variable cv_;
  int64_t total_ = 0;     // chunks submitted
  int64_t loaded_ = 0;    // pinned input ready (or not needed)
  int64_t enqueued_ = 0;  // H2D, kernel and D2H on the slot's stream
  int64_t finished_ = 0;  // done on the device, output copy under way
  bool stop_ = false;
  std::exception_ptr loader_error_;
  std::thread loader_;
};

std::vector<Chunk> CudaTensorQuantizer::plan(const GroupLayout& L, int esize, int ssize) const {
  const int64_t total_gr = L.outer * L.groups_per_axis;
  const uint64_t budget = std::max<uint64_t>(opt_.chunk_bytes, 1);
  // Bytes of one group column, and of one whole group row (an upper bound:
  // a partial last group has fewer rows).
  const uint64_t col_bytes =
      uint64_t(L.group_size) * uint64_t(esize) + uint64_t(L.bytes_per_group) + 2 * uint64_t(ssize);
  int64_t grs, cols;
  if (col_bytes * uint64_t(L.inner) <= budget) {
    cols = L.inner;
    grs = int64_t(std::min<uint64_t>(uint64_t(total_gr), budget / (col_bytes * uint64_t(L.inner))));
  } else {
    grs = 1;
    cols = int64_t(std::max<uint64_t>(1, budget / col_bytes));
    if (cols >= 64) cols -= cols % 64;  // keeps the tile pitch a multiple of the vector width
    cols = std::min(cols, L.inner);
  }
  grs = std::max<int64_t>(grs, 1);
  std::vector<Chunk> chunks;
  for (int64_t g = 0; g < total_gr; g += grs) {
    const int64_t ge = std::min(total_gr, g + grs);
    for (int64_t c = 0; c < L.inner; c += cols)
      chunks.push_back({g, ge, c, std::min(L.inner, c + cols), cuda::tile_first_row(L, g),
                        cuda::tile_end_row(L, ge)});
  }
  return chunks;
}

// Pageable source -> the slot's pinned input, split over the pool.
void CudaTensorQuantizer::load(const Job& job, int64_t g) {
  const Chunk& c = job.chunks[size_t(g - job.first)];
  Slot& s = slot_of(g);
  const size_t row_bytes = size_t(job.L.inner) * job.esize;
  const size_t width = size_t(c.col_end - c.col_begin) * job.esize;
  WorkerPool::wait(submit_copies(
      *pool_, {{s.h_in, width,
                job.in.data + size_t(c.row_begin) * row_bytes + size_t(c.col_begin) * job.esize,
                row_bytes, width, size_t(c.row_end - c.row_begin)}}));
}

// Runs ahead of the calling thread through the chunk sequence, across
// tensors, refilling each slot's pinned input as soon as its last H2D is done.
void CudaTensorQuantizer::loader_main() {
  const int64_t n_slots = int64_t(slots_.size());
  try {
    check(cudaSetDevice(device_), "cudaSetDevice");
    for (;;) {
      int64_t g;
      const Job* job;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || total_ > loaded_; });
        if (stop_) return;
        g = loaded_;
        job = job_of(g);
        // A pinned source's chunks are copied straight from it: the calling
        // thread enqueues them without waiting for this walk, so it may
        // have finished (and waited) their job already: none to find.
        if (!job || job->pinned_source) {
          loaded_ = g + 1;
          cv_.notify_all();
          continue;
        }
        cv_.wait(lk, [&] { return stop_ || enqueued_ > g - n_slots; });
        if (stop_) return;
      }
      // The job stays in jobs_ until waited, and it cannot be waited before
      // its chunks are enqueued, which needs this load.
      if (g >= n_slots)
        check(cudaEventSynchronize(slot_of(g).h2d_done), "cudaEventSynchronize", job->in.name);
      load(*job, g);
      {
        std::lock_guard<std::mutex> lk(m_);
        loaded_ = g + 1;
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(m_);
    loader_error_ = std::current_exception();
    cv_.notify_all();
  }
}

void CudaTensorQuantizer::start_loader() {
  if (loader_.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = false;
  }
  loader_ = std::thread([this] { loader_main(); });
}

void CudaTensorQuantizer::stop_loader() noexcept {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
  }
  cv_.notify_all();
  if (loader_.joinable()) loader_.join();
}

// Chunk g of `job` onto its slot's stream: H2D, kernel, D2H.
void CudaTensorQuantizer::enqueue(const Job& job, int64_t g) {
  const Chunk& c = job.chunks[size_t(g - job.first)];
  Slot& s = slot_of(g);
  const std::string& name = job.in.name;
  wait_outputs(s);  // chunk g - slots's outputs are out of this slot's pinned buffer
  const size_t cols = size_t(c.col_end - c.col_begin), grs = size_t(c.gr_end - c.gr_begin);
  const size_t width = cols * job.esize, rows = size_t(c.row_end - c.row_begin);
  const size_t row_bytes = size_t(job.L.inner) * job.esize;
  auto* flags = reinterpret_cast<QuantFlags*>(s.d_mem + off_flags());
  cuda::throw_if_failed(cuda::reset_flags(flags, s.stream), name);
  if (job.pinned_source) {
    const uint8_t* from =
        job.in.data + size_t(c.row_begin) * row_bytes + size_t(c.col_begin) * job.esize;
    if (width == row_bytes) {  // whole rows: one contiguous copy (a 2D copy of narrow rows crawls)
      check(cudaMemcpyAsync(s.d_mem, from, width * rows, cudaMemcpyHostToDevice, s.stream),
            "cudaMemcpyAsync (H2D)", name);
    } else {
      check(cudaMemcpy2DAsync(s.d_mem, width, from, row_bytes, width, rows, cudaMemcpyHostToDevice,
                              s.stream),
            "cudaMemcpy2DAsync (H2D)", name);
    }
  } else {
    check(cudaMemcpyAsync(s.d_mem, s.h_in, width * rows, cudaMemcpyHostToDevice, s.stream),
          "cudaMemcpyAsync (H2D)", name);
  }
  check(cudaEventRecord(s.h2d_done, s.stream), "cudaEventRecord", name);
  {
    std::lock_guard<std::mutex> lk(m_);
    enqueued_ = g + 1;
  }
  cv_.notify_all();
  cuda::DeviceQuantOutput d_out;
  d_out.codes = s.d_mem + off_codes();
  d_out.scales = s.d_mem + off_scales();
  d_out.zeros = job.scheme.symmetric ? nullptr : s.d_mem + off_zeros();
  cuda::Tile tile;
  tile.group_row_begin = c.gr_begin;
  tile.group_row_end = c.gr_end;
  tile.col_begin = c.col_begin;
  tile.col_end = c.col_end;
  cuda::throw_if_failed(cuda::quantize(s.d_mem, job.in.dtype, job.L, job.scheme, job.policy, d_out,
                                       flags, s.stream, tile),
                        name);
  const size_t codes = grs * size_t(job.L.bytes_per_group) * cols, params = grs * cols * job.ssize;
  check(cudaMemcpyAsync(s.h_out + out_off(off_codes()), d_out.codes, codes, cudaMemcpyDeviceToHost,
                        s.stream),
        "cudaMemcpyAsync (D2H)", name);
  check(cudaMemcpyAsync(s.h_out + out_off(off_scales()), d_out.scales, params,
                        cudaMemcpyDeviceToHost, s.stream),
        "cudaMemcpyAsync (D2H)", name);
  if (!job.scheme.symmetric)
    check(cudaMemcpyAsync(s.h_out + out_off(off_zeros()), d_out.zeros, params,
                          cudaMemcpyDeviceToHost, s.stream),
          "cudaMemcpyAsync (D2H)", name);
  check(cudaMemcpyAsync(s.h_out + out_off(off_flags()), flags, sizeof(QuantFlags),
                        cudaMemcpyDeviceToHost, s.stream),
        "cudaMemcpyAsync (D2H)", name);
  check(cudaEventRecord(s.done, s.stream), "cudaEventRecord", name);
}

// Waits for chunk g on the device, takes its flags, and starts moving its
// outputs into the caller's buffers on the pool (waited by wait_outputs
// before the slot is reused, so the calling thread goes on enqueueing).
void CudaTensorQuantizer::finish(int64_t g) {
  Job& job = *job_of(g);
  const Chunk& c = job.chunks[size_t(g - job.first)];
  Slot& s = slot_of(g);
  check(cudaEventSynchronize(s.done), "quantize chunk", job.in.name);
  QuantFlags f;
  std::memcpy(&f, s.h_out + out_off(off_flags()), sizeof f);
  job.first_nonfinite = std::min(job.first_nonfinite, f.first_nonfinite);
  job.first_overflow = std::min(job.first_overflow, f.first_overflow_group);
  const size_t cols = size_t(c.col_end - c.col_begin), grs = size_t(c.gr_end - c.gr_begin);
  const size_t inner = size_t(job.L.inner), B = size_t(job.L.bytes_per_group), sb = job.ssize;
  // Codes: [gr][B][cols] in the tile -> [gr][B][inner] at column col_begin;
  // scales and zeros likewise.
  const QuantBuffers& out = job.out;
  std::vector<Copy2D> copies = {
      {out.codes + size_t(c.gr_begin) * B * inner + size_t(c.col_begin), inner,
       s.h_out + out_off(off_codes()), cols, cols, grs * B},
      {out.scales + (size_t(c.gr_begin) * inner + size_t(c.col_begin)) * sb, inner * sb,
       s.h_out + out_off(off_scales()), cols * sb, cols * sb, grs}};
  if (!job.scheme.symmetric)
    copies.push_back({out.zeros + (size_t(c.gr_begin) * inner + size_t(c.col_begin)) * sb,
                      inner * sb, s.h_out + out_off(off_zeros()), cols * sb, cols * sb, grs});
  s.out_copy = submit_copies(*pool_, copies);
  s.out_chunk = g;
  finished_ = g + 1;
}

// Enqueues chunk g (the next in the sequence), first finishing the chunk
// that last used its slot.
void CudaTensorQuantizer::advance(Job& job, int64_t g) {
  const int64_t n_slots = int64_t(slots_.size());
  while (finished_ <= g - n_slots) finish(finished_);
  if (!job.pinned_source) {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [&] { return loaded_ > g || loader_error_; });
    if (loader_error_) std::rethrow_exception(loader_error_);
  }
  enqueue(job, g);
}

// Everything enqueued is finished and in the caller's buffers.
void CudaTensorQuantizer::drain() {
  while (finished_ < enqueued_) finish(finished_);
  for (Slot& s : slots_) wait_outputs(s);
  for (const auto& j : jobs_)
    if (j->end() <= finished_) j->complete = true;
}

// The pipeline broke (a CUDA call or a host copy failed): stop everything,
// mark every unfinished job with the reason, and start again from empty.
void CudaTensorQuantizer::fail(const std::exception_ptr& why) noexcept {
  stop_loader();
  cudaSetDevice(device_);
  for (Slot& s : slots_) {
    cudaStreamSynchronize(s.stream);
    wait_outputs(s);  // copies of finished chunks complete them
  }
  cudaGetLastError();
  for (const auto& j : jobs_) {
    if (j->complete) continue;
    if (j->end() > finished_) j->failure = why;
    j->complete = true;
  }
  std::lock_guard<std::mutex> lk(m_);
  total_ = loaded_ = enqueued_ = finished_ = 0;
  loader_error_ = nullptr;
}

TensorQuantizer::Ticket CudaTensorQuantizer::submit(const QuantInput& in, const GroupLayout& L,
                                                    const QuantScheme& scheme,
                                                    NonFinitePolicy policy,
                                                    const QuantBuffers& out) {
  if (!is_quantizable(in.dtype))
    throw Error(
        ErrorCode::UnsupportedDtype, "", in.name,
        std::string("cannot quantize ") + dtype_name(in.dtype) + " (F16, BF16 or F32 only)");
  if (L.bits != scheme.bits)
    throw Error(ErrorCode::InvalidArgument, "", in.name, "layout and scheme disagree on bits");
  const bool empty = L.num_elements() == 0 || L.num_groups() == 0;
  if (!empty && (!in.data || !out.codes || !out.scales || (!scheme.symmetric && !out.zeros)))
    throw Error(ErrorCode::InvalidArgument, "", in.name, "null source or output buffer");

  auto job = std::make_shared<Job>();
  job->ticket = next_ticket_++;
  job->in = in;
  job->L = L;
  job->scheme = scheme;
  job->policy = policy;
  job->out = out;
  if (empty) {
    job->complete = true;  // waited like any other, nothing to run
    std::lock_guard<std::mutex> lk(m_);
    jobs_.push_back(job);
    return job->ticket;
  }
  check(cudaSetDevice(device_), "cudaSetDevice", in.name);
  if (has_two_level(scheme)) {
    quantize_two_level_whole(*job);
    std::lock_guard<std::mutex> lk(m_);
    job->first = total_;  // no chunks: an empty range where the next job starts
    jobs_.push_back(job);
    return job->ticket;
  }
  job->esize = in.dtype == DType::F32 ? 4 : 2;
  job->ssize = size_t(scale_bytes(scheme.scale_dtype));
  job->chunks = plan(L, int(job->esize), int(job->ssize));
  {
    // A pinned (page-locked) source is copied straight to the device.
    cudaPointerAttributes a{}, b{};
    const uint8_t* last = in.data + size_t(L.num_elements()) * job->esize - 1;
    if (cudaPointerGetAttributes(&a, in.data) == cudaSuccess &&
        cudaPointerGetAttributes(&b, last) == cudaSuccess)
      job->pinned_source = a.type == cudaMemoryTypeHost && b.type == cudaMemoryTypeHost;
    cudaGetLastError();
  }
  try {
    size_t need_in = 0, need_codes = 0, need_params = 0;
    for (const Chunk& c : job->chunks) {
      const size_t cols = size_t(c.col_end - c.col_begin), grs = size_t(c.gr_end - c.gr_begin);
      need_in = std::max(need_in, size_t(c.row_end - c.row_begin) * cols * job->esize);
      need_codes = std::max(need_codes, grs * size_t(L.bytes_per_group) * cols);
      need_params = std::max(need_params, grs * cols * job->ssize);
    }
    if (need_in > cap_in_ || need_codes > cap_codes_ || need_params > cap_params_) {
      drain();  // the slots' buffers are replaced
      ensure_capacity(need_in, need_codes, need_params);
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job->first = total_;
      total_ += int64_t(job->chunks.size());
      jobs_.push_back(job);
    }
    cv_.notify_all();
    start_loader();
    for (int64_t g = job->first; g < job->end(); ++g) advance(*job, g);
  } catch (...) {
    fail(std::current_exception());
    std::lock_guard<std::mutex> lk(m_);
    jobs_.erase(std::remove(jobs_.begin(), jobs_.end(), job), jobs_.end());
    throw;
  }
  return job->ticket;
}

// Two-level scales (quantization.md §T): the whole tensor in one piece on
// the device (cuda::quantize_two_level; a super-block spans 8 group rows, so
// the chunked pipeline's tiles do not apply), synchronously, in buffers of
// its own. The flags go to the job; wait() reports them as for any job.
void CudaTensorQuantizer::quantize_two_level_whole(Job& job) {
  const GroupLayout& L = job.L;
  const size_t esize = job.in.dtype == DType::F32 ? 4 : 2;
  const size_t n = size_t(L.num_elements()) * esize,
               pbytes = L.params_bytes(job.scheme.scale_dtype);
  cuda::DeviceBuffer src, codes, scales, zeros, scratch, flags;
  const std::string& name = job.in.name;
  cuda::throw_if_failed(src.allocate(n), name);
  cuda::throw_if_failed(codes.allocate(L.codes_bytes()), name);
  cuda::throw_if_failed(scales.allocate(pbytes), name);
  cuda::throw_if_failed(zeros.allocate(pbytes), name);
  cuda::throw_if_failed(scratch.allocate(cuda::two_level_scratch_bytes(L)), name);
  cuda::throw_if_failed(flags.allocate(sizeof(cuda::QuantFlags)), name);
  check(cudaMemcpy(src.data(), job.in.data, n, cudaMemcpyHostToDevice), "cudaMemcpy", name);
  cuda::throw_if_failed(cuda::reset_flags(flags.as<cuda::QuantFlags>(), nullptr), name);
  cuda::throw_if_failed(
      cuda::quantize_two_level(src.data(), job.in.dtype, L, job.scheme, job.policy,
                               {codes.as<uint8_t>(), scales.as<uint8_t>(), zeros.as<uint8_t>()},
                               scratch.as<uint8_t>(), flags.as<cuda::QuantFlags>(), nullptr),
      name);
  cuda::QuantFlags f{};
  check(cudaMemcpy(&f, flags.data(), sizeof f, cudaMemcpyDeviceToHost), "cudaMemcpy", name);
  check(cudaMemcpy(job.out.codes, codes.data(), L.codes_bytes(), cudaMemcpyDeviceToHost),
        "cudaMemcpy", name);
  check(cudaMemcpy(job.out.scales, scales.data(), pbytes, cudaMemcpyDeviceToHost), "cudaMemcpy",
        name);
  check(cudaMemcpy(job.out.zeros, zeros.data(), pbytes, cudaMemcpyDeviceToHost), "cudaMemcpy",
        name);
  job.first_nonfinite = f.first_nonfinite;
  job.first_overflow = f.first_overflow_group;
  job.complete = true;
}

void CudaTensorQuantizer::wait(Ticket ticket) {
  auto it =
      std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->ticket == ticket; });
  if (it == jobs_.end())
    throw Error(ErrorCode::InvalidArgument, "", "",
                "wait on a ticket that is unknown or already waited");
  const std::shared_ptr<Job> job = *it;
  if (!job->complete) {
    try {
      check(cudaSetDevice(device_), "cudaSetDevice", job->in.name);
      while (finished_ < job->end()) finish(finished_);  // submit() enqueued all of them
      for (Slot& s : slots_)
        if (s.out_chunk >= 0 && s.out_chunk < job->end()) wait_outputs(s);
      job->complete = true;
    } catch (...) {
      fail(std::current_exception());
    }
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
  }
  if (job->failure) std::rethrow_exception(job->failure);
  // Same precedence as the reference: any non-finite value (policy Error)
  // before any range overflow.
  if (job->policy == NonFinitePolicy::Error && job->first_nonfinite != cuda::kNoIndex)
    detail::throw_nonfinite(job->in, job->L, int64_t(job->first_nonfinite));
  if (job->first_overflow != cuda::kNoIndex)
    detail::throw_range_overflow(job->in, job->L, job->scheme, int64_t(job->first_overflow));
}

void CudaTensorQuantizer::cancel() noexcept {
  if (jobs_.empty() && !loader_.joinable()) return;
  fail(nullptr);
  std::lock_guard<std::mutex> lk(m_);
  jobs_.clear();
}

}  // namespace

std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device,
                                                     const cuda::QuantizerOptions& options) {
  return std::make_unique<CudaTensorQuantizer>(device, options);
}

std::unique_ptr<TensorQuantizer> make_cuda_quantizer(int device) {
  return make_cuda_quantizer(device, cuda::QuantizerOptions{});
}

}  // namespace qpack
