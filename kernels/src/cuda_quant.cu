// Host side of the device-level API (qpack/cuda_quant.hpp): argument
// checking, tile geometry, launch shapes, device queries and small helpers.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "kernel_args.hpp"
#include "qpack/format/error.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/kernels/cuda_status.hpp"

namespace qpack::cuda {

// ------------------------------------------------------------ devices

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = cuda_status(err, "cudaGetDeviceCount").message;
    cudaGetLastError();  // not sticky, but leave nothing behind for the next caller
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device is visible";
    return false;
  }
  if (why) why->clear();
  return true;
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

Status query_device(int device, DeviceInfo* info) {
  if (!info) return invalid("query_device: null info");
  const int n = device_count();
  if (device < 0 || device >= n) {
    Status s;
    s.code = StatusCode::NoDevice;
    s.message = "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) +
                " visible)";
    return s;
  }
  cudaDeviceProp p{};
  QPACK_CUDA_TRY(cudaGetDeviceProperties(&p, device));
  DeviceInfo d;
  d.device = device;
  d.name = p.name;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.multiprocessors = p.multiProcessorCount;
  d.total_memory = p.totalGlobalMem;
  d.l2_cache_bytes = size_t(p.l2CacheSize);
  d.memory_bus_width_bits = p.memoryBusWidth;
  QPACK_CUDA_TRY(cudaDeviceGetAttribute(&d.memory_clock_khz, cudaDevAttrMemoryClockRate, device));
  QPACK_CUDA_TRY(cudaDriverGetVersion(&d.driver_version));
  QPACK_CUDA_TRY(cudaRuntimeGetVersion(&d.runtime_version));
  int prev = 0;
  QPACK_CUDA_TRY(cudaGetDevice(&prev));
  QPACK_CUDA_TRY(cudaSetDevice(device));
  size_t free_b = 0, total_b = 0;
  const cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
  cudaSetDevice(prev);
  QPACK_CUDA_TRY(err);
  d.free_memory = free_b;
  *info = d;
  return {};
}

namespace {

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

int pow2_at_least(int64_t n) {
  int p = 1;
  while (p < n && p < 32) p <<= 1;
  return p;
}

Status check_layout(const GroupLayout& L, const QuantScheme& s) {
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8)
    return invalid("bits must be 2, 3, 4 or 8 (got " + std::to_string(s.bits) + ")");
  if (L.bits != s.bits) return invalid("layout and scheme disagree on bits");
  if (!is_scale_dtype(s.scale_dtype))
    return invalid(std::string("scale dtype must be F16, BF16 or F32 (got ") +
                   dtype_name(s.scale_dtype) + ")");
  if (L.outer < 0 || L.axis_len < 0 || L.inner < 0 || L.group_size < 1)
    return invalid("malformed group layout");
  if (L.group_size > (int64_t(1) << 33))
    return invalid("group size " + std::to_string(L.group_size) +
                   " is too large for the CUDA kernels");
  if (L.groups_per_axis != (L.axis_len + L.group_size - 1) / L.group_size ||
      L.bytes_per_group != (L.group_size * s.bits + 7) / 8)
    return invalid("group layout is inconsistent (groups_per_axis / bytes_per_group)");
  if (L.groups_per_axis >= (int64_t(1) << 31))
    return invalid("more than 2^31 groups along the axis is not supported by the CUDA kernels");
  return {};
}

// The tile in absolute terms.
struct TileRange {
  int64_t gr_begin, gr_end, col_begin, col_end;
};

Status resolve_tile(const GroupLayout& L, const Tile& t, TileRange* r) {
  const int64_t total_gr = L.outer * L.groups_per_axis;
  r->gr_begin = t.group_row_begin;
  r->gr_end = t.group_row_end < 0 ? total_gr : t.group_row_end;
  r->col_begin = t.col_begin;
  r->col_end = t.col_end < 0 ? L.inner : t.col_end;
  if (r->gr_begin < 0 || r->gr_begin > r->gr_end || r->gr_end > total_gr)
    return invalid("tile group rows [" + std::to_string(r->gr_begin) + ", " +
                   std::to_string(r->gr_end) + ") outside [0, " + std::to_string(total_gr) + ")");
  if (r->col_begin < 0 || r->col_begin > r->col_end || r->col_end > L.inner)
    return invalid("tile columns [" + std::to_string(r->col_begin) + ", " +
                   std::to_string(r->col_end) + ") outside [0, " + std::to_string(L.inner) + ")");
  return {};
}

// TileGeometry of one launch over group rows [gr_begin, gr_end) of the tile.
kernels::TileGeometry launch_geometry(const GroupLayout& L, const TileRange& r, int64_t gr_begin,
                                      int64_t gr_end) {
  kernels::TileGeometry g{};
  g.axis_len = L.axis_len;
  g.group = L.group_size;
  g.bytes = L.bytes_per_group;
  g.inner = L.inner;
  g.gr_begin = gr_begin;
  g.o_begin = gr_begin / L.groups_per_axis;
  g.gi_begin = uint32_t(gr_begin % L.groups_per_axis);
  g.n_gr = uint32_t(gr_end - gr_begin);
  g.row_begin = tile_first_row(L, gr_begin);
  g.col_begin = r.col_begin;
  g.ncols = r.col_end - r.col_begin;
  g.groups = kernels::FastDiv(uint32_t(L.groups_per_axis));
  g.nslices = int((L.group_size + kernels::kSliceRows - 1) / kernels::kSliceRows);
  g.lanes = pow2_at_least(g.nslices);
  return g;
}

// Calls launch(geometry, first group row offset in the tile, first tensor-row
// offset in the tile) for consecutive pieces of the tile small enough that
// every 32-bit counter in the kernels stays below 2^31.
template <class F>
Status for_each_launch(const GroupLayout& L, const TileRange& r, int64_t work_per_group_row,
                       F&& launch) {
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  if (work_per_group_row > kMax)
    return invalid("tile too wide for the CUDA kernels (" +
                   std::to_string(r.col_end - r.col_begin) + " columns); use narrower tiles");
  const int64_t step = std::max<int64_t>(1, kMax / std::max<int64_t>(1, work_per_group_row));
  const int64_t tile_row0 = tile_first_row(L, r.gr_begin);
  for (int64_t b = r.gr_begin; b < r.gr_end; b += step) {
    const int64_t e = std::min(r.gr_end, b + step);
    kernels::TileGeometry g = launch_geometry(L, r, b, e);
    g.tasks = uint32_t(int64_t(g.n_gr) * work_per_group_row);
    g.per_gr = kernels::FastDiv(uint32_t(std::max<int64_t>(1, work_per_group_row)));
    if (Status s = launch(g, b - r.gr_begin, g.row_begin - tile_row0); !s.ok()) return s;
  }
  return {};
}

// Multiprocessors of the current device, cached per device: this runs on
// every launch, and kernel timings include the host time before a launch.
int current_device() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return dev;
}

int sm_count() {
  static std::atomic<int> cached[64];
  const int dev = current_device();
  const int slot = dev >= 0 && dev < 64 ? dev : 0;
  int n = cached[slot].load(std::memory_order_relaxed);
  if (n > 0) return n;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
    cudaGetLastError();
    return 132;
  }
  cached[slot].store(n, std::memory_order_relaxed);
  return n;
}

// Blocks for `threads` threads, one task each; past 64 blocks per SM the
// kernels' grid-stride loops take the rest.
int blocks_for(int64_t threads) {
  const int64_t cap = int64_t(sm_count()) * 64;
  const int64_t b = (threads + kernels::kBlockThreads - 1) / kernels::kBlockThreads;
  return int(std::max<int64_t>(1, std::min(b, cap)));
}

}  // namespace

// ------------------------------------------------------------ quantize / dequantize

Status reset_flags(QuantFlags* d_flags, cudaStream_t stream) {
  if (!d_flags) return invalid("reset_flags: null flags");
  QPACK_CUDA_TRY(cudaMemsetAsync(d_flags, 0xff, sizeof(QuantFlags), stream));
  return {};
}

Status quantize(const void* d_src, DType src_dtype, const GroupLayout& layout,
                const QuantScheme& scheme, NonFinitePolicy policy, const DeviceQuantOutput& out,
                QuantFlags* d_flags, cudaStream_t stream, const Tile& tile) {
  if (Status s = check_layout(layout, scheme); !s.ok()) return s;
  if (!is_quantizable(src_dtype))
    return invalid(std::string("source dtype must be F16, BF16 or F32 (got ") +
                   dtype_name(src_dtype) + ")");
  TileRange r;
  if (Status s = resolve_tile(layout, tile, &r); !s.ok()) return s;
  if (!d_flags) return invalid("quantize: null flags");
  const int64_t ncols = r.col_end - r.col_begin;
  if (r.gr_end == r.gr_begin || ncols == 0) return {};
  if (!d_src || !out.codes || !out.scales || (!scheme.symmetric && !out.zeros))
    return invalid("quantize: null source or output pointer");

  const int esize = src_dtype == DType::F32 ? 4 : 2;
  const int ssize = scale_bytes(scheme.scale_dtype);
  if (scheme.method != QuantMethod::Rtn) {
    // The parameter methods (quantization.md §M): one thread per group
    // (quantize_methods.cu), the reference's per-group spec code.
    if (const std::string why = validate_scheme(scheme); !why.empty()) return invalid(why);
    return for_each_launch(
        layout, r, ncols,
        [&](const kernels::TileGeometry& g, int64_t gr_off, int64_t row_off) -> Status {
          kernels::QuantArgs a{};
          a.geo = g;
          a.src = static_cast<const uint8_t*>(d_src) + row_off * ncols * esize;
          a.codes = out.codes + gr_off * layout.bytes_per_group * ncols;
          a.scales = out.scales + gr_off * ncols * ssize;
          a.zeros = out.zeros + gr_off * ncols * ssize;
          a.flags = d_flags;
          a.scale_dtype = scheme.scale_dtype;
          a.zero_nonfinite = policy == NonFinitePolicy::Zero;
          a.method = scheme.method;
          a.integer_zero = has_integer_zero(scheme);
          kernels::Launch ll{};
          ll.stream = stream;
          ll.blocks = blocks_for(int64_t(g.tasks));
          return cuda_status(
              cudaError_t(kernels::launch_quantize_method(a, src_dtype, scheme.bits, ll)),
              "quantize (method) kernel launch");
        });
  }
  const int64_t nslices = (layout.group_size + kernels::kSliceRows - 1) / kernels::kSliceRows;
  const int lanes = pow2_at_least(nslices);
  kernels::Launch l{};
  l.stream = stream;
  l.rows = ncols == 1;
  int64_t work_per_gr;  // warps per group row (cols) or group rows (rows)
  int64_t vec = 1;
  if (l.rows) {
    l.vector = layout.group_size % 8 == 0 && layout.axis_len % 8 == 0 && aligned(d_src, 16) &&
               aligned(out.codes, 8);
    // Coalesced windows: 16-bit source, whole groups of 8 * 2^k <= 256 elements.
    const int64_t slices = layout.group_size / kernels::kSliceRows;
    l.window = l.vector && esize == 2 && layout.axis_len % layout.group_size == 0 && slices <= 32 &&
               (slices & (slices - 1)) == 0;
    // Window kernel: its 32-bit unit counter needs group rows * units < 2^31.
    work_per_gr = l.window ? slices : 1;
  } else {
    const int vec_elems = src_dtype == DType::F32 ? 4 : 8;
    l.vector = ncols % vec_elems == 0 && aligned(d_src, 16) && aligned(out.codes, 8) &&
               aligned(out.scales, 16) && (scheme.symmetric || aligned(out.zeros, 16));
    vec = l.vector ? vec_elems : 1;
    const int64_t chunks_per_warp = 32 / lanes;
    work_per_gr = (ncols / vec + chunks_per_warp - 1) / chunks_per_warp;
  }
  return for_each_launch(
      layout, r, work_per_gr,
      [&](const kernels::TileGeometry& g, int64_t gr_off, int64_t row_off) -> Status {
        kernels::QuantArgs a{};
        a.geo = g;
        if (l.rows)
          a.geo.lanes = pow2_at_least((g.nslices + kernels::kRowChunks - 1) / kernels::kRowChunks);
        a.src = static_cast<const uint8_t*>(d_src) + row_off * ncols * esize;
        a.codes = out.codes + gr_off * layout.bytes_per_group * ncols;
        a.scales = out.scales + gr_off * ncols * ssize;
        a.zeros = scheme.symmetric ? nullptr : out.zeros + gr_off * ncols * ssize;
        a.flags = d_flags;
        a.scale_dtype = scheme.scale_dtype;
        a.zero_nonfinite = policy == NonFinitePolicy::Zero;
        a.integer_zero = has_integer_zero(scheme);
        kernels::Launch ll = l;
        if (l.window) {
          const int64_t slices = layout.group_size / kernels::kSliceRows;
          const int64_t per_window = std::min<int64_t>(32, kernels::kWindowUnits / slices);
          ll.blocks = blocks_for((int64_t(g.n_gr) + per_window - 1) / per_window * 32);
        } else if (l.rows) {
          const int64_t groups_per_warp = 32 / a.geo.lanes;
          ll.blocks = blocks_for((int64_t(g.n_gr) + groups_per_warp - 1) / groups_per_warp * 32);
        } else {
          ll.blocks = blocks_for(int64_t(g.tasks) * 32);
        }
        int err = 0;
        switch (src_dtype) {
          case DType::F16:
            err = kernels::launch_quantize_f16(a, scheme.bits, scheme.symmetric, ll);
            break;
          case DType::BF16:
            err = kernels::launch_quantize_bf16(a, scheme.bits, scheme.symmetric, ll);
            break;
          default:
            err = kernels::launch_quantize_f32(a, scheme.bits, scheme.symmetric, ll);
            break;
        }
        return cuda_status(cudaError_t(err), "quantize kernel launch");
      });
}

Status dequantize(const uint8_t* d_codes, const uint8_t* d_scales, const uint8_t* d_zeros,
                  const GroupLayout& layout, const QuantScheme& scheme, void* d_out,
                  DType out_dtype, cudaStream_t stream, const Tile& tile) {
  if (Status s = check_layout(layout, scheme); !s.ok()) return s;
  if (out_dtype != DType::F32 && out_dtype != DType::F16 && out_dtype != DType::BF16)
    return invalid(std::string("dequantize output dtype must be F32, F16 or BF16 (got ") +
                   dtype_name(out_dtype) + ")");
  TileRange r;
  if (Status s = resolve_tile(layout, tile, &r); !s.ok()) return s;
  const int64_t ncols = r.col_end - r.col_begin;
  if (r.gr_end == r.gr_begin || ncols == 0) return {};
  if (!d_codes || !d_scales || (!scheme.symmetric && !d_zeros) || !d_out)
    return invalid("dequantize: null input or output pointer");

  const int osize = out_dtype == DType::F32 ? 4 : 2;
  const int ssize = scale_bytes(scheme.scale_dtype);
  const int64_t nslices = (layout.group_size + kernels::kSliceRows - 1) / kernels::kSliceRows;
  kernels::Launch l{};
  l.stream = stream;
  l.rows = ncols == 1;
  int64_t nchunks = 1;  // threads per slice of a group row
  if (l.rows) {
    l.vector = layout.group_size % 8 == 0 && layout.axis_len % 8 == 0 && aligned(d_codes, 8) &&
               aligned(d_out, 16);
    if (l.vector && out_dtype == DType::F32) nchunks = kernels::kSliceRows / kernels::kF32Part;
    // Whole groups: the launch's elements form one array (dequantize_rows_whole).
    l.window = l.vector && layout.axis_len % layout.group_size == 0;
  } else {
    l.vector = ncols % 8 == 0 && aligned(d_codes, 8) && aligned(d_scales, 16) &&
               (scheme.symmetric || aligned(d_zeros, 16)) && aligned(d_out, 16);
    nchunks = ncols / (l.vector ? (out_dtype == DType::F32 ? kernels::kF32Part : 8) : 1);
  }
  const int64_t work_per_gr = nslices * nchunks;  // threads per group row
  return for_each_launch(
      layout, r, work_per_gr,
      [&](const kernels::TileGeometry& g, int64_t gr_off, int64_t row_off) -> Status {
        kernels::DequantArgs a{};
        a.geo = g;
        a.geo.chunks = kernels::FastDiv(uint32_t(nchunks));
        a.codes = d_codes + gr_off * layout.bytes_per_group * ncols;
        a.scales = d_scales + gr_off * ncols * ssize;
        a.zeros = scheme.symmetric ? nullptr : d_zeros + gr_off * ncols * ssize;
        a.out = static_cast<uint8_t*>(d_out) + row_off * ncols * osize;
        a.scale_dtype = scheme.scale_dtype;
        a.symmetric = scheme.symmetric;
        a.integer_zero = has_integer_zero(scheme);
        a.bits = scheme.bits;
        kernels::Launch ll = l;
        const int64_t items = l.rows && l.window ? kernels::kRowItems : 1;  // per thread
        ll.blocks = blocks_for((int64_t(g.tasks) + items - 1) / items);
        return cuda_status(cudaError_t(kernels::launch_dequantize(a, out_dtype, ll)),
                           "dequantize kernel launch");
      });
}

// ------------------------------------------------------------ host helpers

DeviceBuffer::~DeviceBuffer() { reset(); }

Status DeviceBuffer::allocate(size_t bytes) {
  reset();
  if (bytes == 0) return {};
  void* p = nullptr;
  QPACK_CUDA_TRY(cudaMalloc(&p, bytes));
  ptr_ = p;
  size_ = bytes;
  return {};
}

void DeviceBuffer::reset() {
  if (ptr_) cudaFree(ptr_);  // a failure here has nowhere to go; the memory is gone either way
  ptr_ = nullptr;
  size_ = 0;
}

PinnedBuffer::~PinnedBuffer() { reset(); }

Status PinnedBuffer::allocate(size_t bytes) {
  reset();
  if (bytes == 0) return {};
  void* p = nullptr;
  QPACK_CUDA_TRY(cudaMallocHost(&p, bytes));
  ptr_ = static_cast<uint8_t*>(p);
  size_ = bytes;
  return {};
}

void PinnedBuffer::reset() {
  if (ptr_) cudaFreeHost(ptr_);
  ptr_ = nullptr;
  size_ = 0;
}

Stream::~Stream() { reset(); }

Status Stream::create() {
  reset();
  cudaStream_t s = nullptr;
  QPACK_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  return {};
}

void Stream::reset() {
  if (stream_)
    cudaStreamDestroy(stream_);  // as in DeviceBuffer::reset, a failure has nowhere to go
  stream_ = nullptr;
}

Event::~Event() { reset(); }

Status Event::create() {
  reset();
  cudaEvent_t e = nullptr;
  QPACK_CUDA_TRY(cudaEventCreate(&e));
  event_ = e;
  return {};
}

void Event::reset() {
  if (event_) cudaEventDestroy(event_);
  event_ = nullptr;
}

Status Event::record(cudaStream_t stream) {
  if (!event_) return invalid("Event::record: no event");
  QPACK_CUDA_TRY(cudaEventRecord(event_, stream));
  return {};
}

Status elapsed_ms(const Event& start, const Event& stop, float* ms) {
  if (!start.get() || !stop.get() || !ms) return invalid("elapsed_ms: no event or null result");
  QPACK_CUDA_TRY(cudaEventElapsedTime(ms, start.get(), stop.get()));
  return {};
}

Status set_device(int device) {
  QPACK_CUDA_TRY(cudaSetDevice(device));
  return {};
}

Status copy_to_device(void* d_dst, const void* h_src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return {};
  if (!d_dst || !h_src) return invalid("copy_to_device: null pointer");
  QPACK_CUDA_TRY(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, stream));
  return {};
}

Status copy_2d_to_device(void* d_dst, size_t d_pitch, const void* h_src, size_t h_pitch,
                         size_t row_bytes, size_t rows, cudaStream_t stream) {
  if (row_bytes == 0 || rows == 0) return {};
  if (!d_dst || !h_src) return invalid("copy_2d_to_device: null pointer");
  if (d_pitch < row_bytes || h_pitch < row_bytes)
    return invalid("copy_2d_to_device: pitch below the row size");
  QPACK_CUDA_TRY(cudaMemcpy2DAsync(d_dst, d_pitch, h_src, h_pitch, row_bytes, rows,
                                   cudaMemcpyHostToDevice, stream));
  return {};
}

Status copy_to_host(void* h_dst, const void* d_src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return {};
  if (!h_dst || !d_src) return invalid("copy_to_host: null pointer");
  QPACK_CUDA_TRY(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, stream));
  return {};
}

Status fill_device(void* d_dst, int byte, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return {};
  if (!d_dst) return invalid("fill_device: null pointer");
  QPACK_CUDA_TRY(cudaMemsetAsync(d_dst, byte, bytes, stream));
  return {};
}

Status synchronize(cudaStream_t stream) {
  QPACK_CUDA_TRY(cudaStreamSynchronize(stream));
  return {};
}

void dequantize_on_device(int device, const uint8_t* codes, const uint8_t* scales,
                          const uint8_t* zeros, const GroupLayout& layout,
                          const QuantScheme& scheme, void* out, DType out_dtype) {
  throw_if_failed(check_layout(layout, scheme));
  const size_t n = size_t(layout.num_elements());
  if (n == 0 || layout.num_groups() == 0) return;
  const size_t params = size_t(layout.params_bytes(scheme.scale_dtype));
  const size_t out_bytes = n * (out_dtype == DType::F32 ? 4 : 2);
  throw_if_failed(set_device(device));
  DeviceBuffer d_codes, d_scales, d_zeros, d_out;
  throw_if_failed(d_codes.allocate(layout.codes_bytes()));
  throw_if_failed(d_scales.allocate(params));
  if (!scheme.symmetric) throw_if_failed(d_zeros.allocate(params));
  throw_if_failed(d_out.allocate(out_bytes));
  throw_if_failed(copy_to_device(d_codes.data(), codes, layout.codes_bytes(), nullptr));
  throw_if_failed(copy_to_device(d_scales.data(), scales, params, nullptr));
  if (!scheme.symmetric) throw_if_failed(copy_to_device(d_zeros.data(), zeros, params, nullptr));
  throw_if_failed(dequantize(d_codes.as<uint8_t>(), d_scales.as<uint8_t>(), d_zeros.as<uint8_t>(),
                             layout, scheme, d_out.data(), out_dtype, nullptr));
  throw_if_failed(copy_to_host(out, d_out.data(), out_bytes, nullptr));
  throw_if_failed(synchronize(nullptr));
}

}  // namespace qpack::cuda
