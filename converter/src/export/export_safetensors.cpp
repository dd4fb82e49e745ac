#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "dequantize_output.hpp"
#include "qpack/converter/export.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/container.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "qpack/format/two_level.hpp"
#include "qpack/kernels/cuda_quant.hpp"

namespace qpack {

namespace {

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

// safetensors metadata is string -> string; the .qpack keeps the source's as
// JSON. Strings are carried as they are, anything else as its JSON text.
// "total_size" comes from a sharded source's index (Checkpoint merges the
// index's metadata): the byte count of those shards, false for this file,
// so it is not carried.
std::map<std::string, std::string> carried_metadata(const nlohmann::json& j) {
  std::map<std::string, std::string> m;
  if (!j.is_object()) return m;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "total_size") continue;
    m[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  }
  return m;
}

}  // namespace

DequantizeSummary dequantize_file(const std::string& qpack_path, const std::string& out_path,
                                  const DequantizeOptions& opt) {
  detail::check_dequantize_options(opt, qpack_path, out_path, ".qpack");
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const DeviceSelection device = resolve_device(opt.device);
  const bool use_cuda = device.kind == DeviceKind::Cuda;

  std::unique_ptr<QpackFile> qf = QpackFile::open(qpack_path);
  const auto& tensors = qf->tensors();

  const std::optional<DType> kept_dtype = detail::kept_output_dtype(opt);
  std::vector<TensorToWrite> declared;
  uint64_t total = 0;
  for (const QpackTensor& t : tensors) {
    TensorToWrite w;
    w.name = t.name;
    w.shape = t.shape;
    if (t.quantized) {
      w.dtype = opt.dtype ? *opt.dtype : t.dtype;
      w.nbytes = uint64_t(t.layout.num_elements()) * uint64_t(dtype_bytes(w.dtype));
    } else if (kept_dtype && is_quantizable(t.dtype)) {
      w.dtype = *kept_dtype;
      w.nbytes =
          (t.source_bytes() / uint64_t(dtype_bytes(t.dtype))) * uint64_t(dtype_bytes(w.dtype));
    } else {
      w.dtype = t.dtype;
      w.nbytes = t.source_bytes();
    }
    total += w.nbytes;
    declared.push_back(std::move(w));
  }

  detail::DequantizeOutput writer(
      out_path, declared, carried_metadata(qf->source_metadata()),
      opt.folder ? detail::dequantized_config(qf->source_config(), opt.dtype) : nullptr, opt);
  DequantizeSummary sum;
  if (use_cuda) {
    cuda::DeviceInfo info;
    sum.device =
        cuda::query_device(device.index, &info).ok() ? cuda::describe(info) : device_name(device);
  } else {
    sum.device = "cpu (" + count_of(uint64_t(threads), "thread") + ")";
  }
  std::vector<float> values;
  std::vector<uint8_t> converted;  // CUDA output, already in the tensor's dtype
  uint64_t done = 0;
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const QpackTensor& t = tensors[ti];
    if (opt.progress) opt.progress(ti, tensors.size(), done, total, t.name);
    writer.begin_tensor(ti);
    if (!t.quantized) {
      const SectionBytes data = qf->read(t, t.data);
      if (data.size != t.source_bytes())
        throw Error(ErrorCode::ManifestMismatch, qpack_path, t.name,
                    "raw data section holds " + std::to_string(data.size) + " bytes, expected " +
                        std::to_string(t.source_bytes()));
      if (declared[ti].dtype != t.dtype) {  // F16/BF16/F32 only: whole bytes per element
        const int64_t n = int64_t(t.source_bytes() / uint64_t(dtype_bytes(t.dtype)));
        writer.append_kept(data.data, t.dtype, n);
        ++sum.kept_converted;
      } else {
        writer.append_bytes(data.data, data.size);  // any dtype, sub-byte ones too
        if (opt.dtype && is_quantizable(t.dtype) && t.dtype != *opt.dtype) ++sum.kept_other_dtype;
      }
      qf->release(t.data);
    } else {
      const SectionBytes codes = qf->read(t, t.codes);
      SectionBytes scales = qf->read(t, t.scales);
      SectionBytes zeros;
      if (!t.scheme.symmetric) zeros = qf->read(t, t.zeros);
      // Two-level scales (quantization.md §T4): decoded through their exact
      // one-level F32 (S, M), sliced below like any tensor's.
      GroupLayout L = t.layout;
      QuantScheme scheme = t.scheme;
      if (has_two_level(t.scheme)) {
        ExpandedParams e = expand_two_level(t.layout, t.scheme, scales.data, zeros.data);
        scales.owned = std::move(e.scales);
        scales.data = scales.owned.data();
        zeros.owned = std::move(e.zeros);
        zeros.data = zeros.owned.data();
        L = e.layout;
        scheme = e.scheme;
      }
      const int sb = scale_bytes(scheme.scale_dtype);
      const DType out_dtype = declared[ti].dtype;
      // Slices of whole group rows (o, g): each is a contiguous run of the
      // output, described by a one-outer layout of its own.
      const int64_t row_elems = std::max<int64_t>(L.group_size * L.inner, 1);
      const int64_t rows_per_slice = std::max<int64_t>(1, int64_t(opt.slice_bytes / 4) / row_elems);
      for (int64_t o = 0; o < L.outer && L.num_elements() > 0; ++o) {
        for (int64_t g0 = 0; g0 < L.groups_per_axis; g0 += rows_per_slice) {
          const int64_t g1 = std::min(g0 + rows_per_slice, L.groups_per_axis);
          GroupLayout sub = L;
          sub.outer = 1;
          sub.axis_len = std::min(g1 * L.group_size, L.axis_len) - g0 * L.group_size;
          sub.groups_per_axis = g1 - g0;
          const int64_t first_group_row = o * L.groups_per_axis + g0;
          const uint8_t* c =
              codes.data + uint64_t(first_group_row) * uint64_t(L.bytes_per_group * L.inner);
          const uint8_t* s = scales.data + uint64_t(first_group_row) * uint64_t(L.inner) * sb;
          const uint8_t* z = t.scheme.symmetric
                                 ? nullptr
                                 : zeros.data + uint64_t(first_group_row) * uint64_t(L.inner) * sb;
          const int64_t n = sub.num_elements();
          if (use_cuda) {
            // Rounds to out_dtype on the device exactly as append_floats does.
            converted.resize(size_t(n) * size_t(dtype_bytes(out_dtype)));
            cuda::dequantize_on_device(device.index, c, s, z, sub, scheme, converted.data(),
                                       out_dtype);
            writer.append_bytes(converted.data(), converted.size());
          } else {
            values.resize(size_t(n));
            dequantize_cpu(c, s, z, sub, scheme, values.data(), threads);
            writer.append_floats(values.data(), n);
          }
        }
      }
      qf->release(t.codes);
      qf->release(t.scales);
      if (!t.scheme.symmetric) qf->release(t.zeros);
      ++sum.quantized;
    }
    done += declared[ti].nbytes;
    ++sum.tensors;
  }
  writer.commit();
  writer.describe(&sum);
  if (opt.progress) opt.progress(tensors.size(), tensors.size(), done, total, "");
  sum.output_bytes = done;
  // Large buffers are not kept past the call.
  return sum;
}

}  // namespace qpack
