// CUDA group quantization: kernels that produce exactly the bytes of
// quantize_reference / dequantize_reference (docs/quantization.md), and the
// small device helpers that host pipelines (the converter's CUDA backend,
// the verifier), the tests and the tools need.
//
// This header compiles with a plain C++ compiler and no CUDA headers: the
// stream and event types are forward-declared the way the CUDA runtime
// declares them. Every function here checks its arguments and every CUDA
// call and launch, and reports failures as a Status (device-level API) or
// a qpack::Error (host-level API) instead of aborting. A build with
// QPACK_ENABLE_CUDA=OFF provides the same symbols; they report that no
// device is available.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "qpack/spec/dtype.hpp"
#include "qpack/spec/layout.hpp"
#include "qpack/spec/scheme.hpp"

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // same declaration as the CUDA runtime's
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;  // likewise

namespace qpack {
namespace cuda {

// ---------------------------------------------------------------- status

enum class StatusCode {
  Ok,
  InvalidArgument,  // a bad pointer, size, layout, scheme or tile
  NoDevice,         // no usable GPU, or built without CUDA
  OutOfMemory,
  CudaError,  // any other failure reported by the CUDA runtime
};

struct Status {
  StatusCode code = StatusCode::Ok;
  std::string message;
  bool ok() const { return code == StatusCode::Ok; }
};

const char* status_code_name(StatusCode code);

// Turns a failed Status into qpack::Error (NoDevice -> ErrorCode::NoDevice,
// InvalidArgument -> ErrorCode::InvalidArgument, others -> ErrorCode::Cuda),
// naming `tensor`. Does nothing for an ok status.
void throw_if_failed(const Status& status, const std::string& tensor = {});

// ---------------------------------------------------------------- devices

// True when at least one CUDA device can be used; otherwise `why` (if given)
// says what is missing (no driver, no device, built without CUDA, ...).
bool cuda_available(std::string* why = nullptr);
int device_count();  // 0 when unavailable

struct DeviceInfo {
  int device = -1;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0, free_memory = 0;
  size_t l2_cache_bytes = 0;
  int memory_bus_width_bits = 0;
  int memory_clock_khz = 0;
  int driver_version = 0, runtime_version = 0;
};
Status query_device(int device, DeviceInfo* info);
std::string describe(
    const DeviceInfo& info);  // "cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB)"

// ---------------------------------------------------------------- device-level API

// Written by the quantize kernels with atomicMin; kNoIndex when nothing was
// found. Lives in device memory; reset it with reset_flags before a launch.
struct QuantFlags {
  unsigned long long first_nonfinite;       // smallest flat index of a NaN/Inf (policy Error)
  unsigned long long first_overflow_group;  // smallest linear group index p whose S or M overflows
};
constexpr unsigned long long kNoIndex = ~0ull;

// A rectangle of the tensor in group coordinates: group rows [row_begin,
// row_end) of the outer*groups_per_axis rows (each group row covers the
// consecutive tensor rows of one (outer, group) pair), and inner columns
// [col_begin, col_end). A negative end means "to the end". The device
// buffers of a tile hold only the tile, packed:
//   source / dequantized output: tile_rows x (col_end - col_begin) elements,
//     where tile_rows are the tensor rows (outer*axis_len of them, each
//     `inner` wide) from tile_first_row() to tile_end_row();
//   codes: [group row][bytes_per_group][cols];  scales, zeros: [group row][cols].
// Flags always carry indices into the whole tensor. The default tile is the
// whole tensor, with the buffers in the layout of docs/quantization.md.
struct Tile {
  int64_t group_row_begin = 0;
  int64_t group_row_end = -1;
  int64_t col_begin = 0;
  int64_t col_end = -1;
};
// First tensor row (in [0, outer*axis_len)) of group row `group_row`, and one
// past the last row of group row `group_row_end - 1`.
int64_t tile_first_row(const GroupLayout& layout, int64_t group_row);
int64_t tile_end_row(const GroupLayout& layout, int64_t group_row_end);

struct DeviceQuantOutput {
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  uint8_t* zeros = nullptr;  // null for symmetric schemes
};

// Sets both flags to kNoIndex (an async memset on `stream`).
Status reset_flags(QuantFlags* d_flags, cudaStream_t stream);

// Enqueues the quantization of the tile of a tensor on `stream`. All pointers
// are device pointers; d_flags is required. Every output byte of the tile is
// written (padding codes are 0). Non-finite inputs: with policy Zero they are
// quantized as +0; with policy Error the smallest flat index is recorded in
// d_flags (the outputs are then meaningless). Range overflows are recorded
// likewise. The host reads the flags once the stream is done and reports
// through the reference's helpers (see CudaTensorQuantizer).
Status quantize(const void* d_src, DType src_dtype, const GroupLayout& layout,
                const QuantScheme& scheme, NonFinitePolicy policy, const DeviceQuantOutput& out,
                QuantFlags* d_flags, cudaStream_t stream, const Tile& tile = {});

// Enqueues x_hat = fma(q, S, M) for every element of the tile, written as
// out_dtype (F32: the reference's floats, bit for bit; F16/BF16: those floats
// rounded to nearest even, as f32_to_f16_rne / f32_to_bf16_rne do).
Status dequantize(const uint8_t* d_codes, const uint8_t* d_scales, const uint8_t* d_zeros,
                  const GroupLayout& layout, const QuantScheme& scheme, void* d_out,
                  DType out_dtype, cudaStream_t stream, const Tile& tile = {});

// ---------------------------------------------------------------- helpers for host code

// Owns cudaMalloc'd memory on the current device (plain device memory, never
// managed). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {  // what this held is freed with o
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  Status allocate(size_t bytes);  // frees what it held first; 0 bytes holds nothing
  void reset();
  void* data() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// Owns page-locked host memory (cudaMallocHost). A TensorQuantizer reading
// from such memory copies straight to the device, skipping its staging copy.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {  // what this held is freed with o
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  Status allocate(size_t bytes);
  void reset();
  uint8_t* data() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  uint8_t* ptr_ = nullptr;
  size_t size_ = 0;
};

// Owns a stream of the current device, created with cudaStreamNonBlocking (no
// implicit synchronization with the legacy default stream). Move-only.
class Stream {
 public:
  Stream() = default;
  ~Stream();
  Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {  // what this held is destroyed with o
    std::swap(stream_, o.stream_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Status create();  // destroys what it held first
  void reset();     // work already enqueued still completes (cudaStreamDestroy)
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Owns an event of the current device, with timing (cudaEventCreate's
// default flags). Move-only.
class Event {
 public:
  Event() = default;
  ~Event();
  Event(Event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {  // what this held is destroyed with o
    std::swap(event_, o.event_);
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  Status create();  // destroys what it held first
  void reset();
  Status record(cudaStream_t stream);  // cudaEventRecord
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Milliseconds between two recorded events whose work is done (cudaEventElapsedTime).
Status elapsed_ms(const Event& start, const Event& stop, float* ms);

Status set_device(int device);
Status copy_to_device(void* d_dst, const void* h_src, size_t bytes, cudaStream_t stream);
// `rows` rows of `row_bytes` bytes, `h_pitch` bytes apart in host memory, to
// rows `d_pitch` bytes apart in device memory (cudaMemcpy2DAsync).
Status copy_2d_to_device(void* d_dst, size_t d_pitch, const void* h_src, size_t h_pitch,
                         size_t row_bytes, size_t rows, cudaStream_t stream);
Status copy_to_host(void* h_dst, const void* d_src, size_t bytes, cudaStream_t stream);
Status fill_device(void* d_dst, int byte, size_t bytes, cudaStream_t stream);
Status synchronize(cudaStream_t stream);

// Host -> device -> host dequantization of a whole tensor on `device`
// (for `qpack dequantize --device cuda` and the tests); throws qpack::Error.
// `out` holds num_elements() values of out_dtype.
void dequantize_on_device(int device, const uint8_t* codes, const uint8_t* scales,
                          const uint8_t* zeros, const GroupLayout& layout,
                          const QuantScheme& scheme, void* out, DType out_dtype);

}  // namespace cuda

}  // namespace qpack
