// dequantize_hf_folder (qpack/converter/dequantize_hf.hpp): the folder
// reader's rows in qpack's layout, qpack's decode, one safetensors file.
#include "qpack/converter/dequantize_hf.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "dequantize_output.hpp"
#include "qpack/converter/quantize.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/hf_quantized.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "qpack/kernels/cuda_quant.hpp"
#include "qpack/spec/codes.hpp"

namespace qpack {

namespace {

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

void store_floats(const float* in, int64_t n, DType to, uint8_t* out, int threads) {
  if (to == DType::F32) {
    std::memcpy(out, in, size_t(n) * 4);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = to == DType::F16 ? f32_to_f16_rne(in[i]) : f32_to_bf16_rne(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// The folders' rule is the product (q - z) * s, whose zero has the sign of
// sign(q - z) xor sign(s); qpack's symmetric decode fma(q, S, +0) gives +0
// for every zero. Rows of a symmetric tensor, decoded into `out` (out_dtype),
// get the product's sign where they are zero: -0 for q < 0 with a +0 scale
// (a degenerate group), or for q = 0 with a negative scale. Every other bit
// is the decode's.
void product_zero_signs(const uint8_t* codes, const uint8_t* scales, const GroupLayout& L,
                        const QuantScheme& s, uint8_t* out, DType out_dtype) {
  const int64_t P = L.groups_per_axis, B = L.bytes_per_group, G = L.group_size;
  const int ob = dtype_bytes(out_dtype);
  const int off = sym_offset(s.bits);
  for (int64_t r = 0; r < L.outer; ++r)
    for (int64_t p = 0; p < P; ++p) {
      const float scale = spec::load_param(scales, r * P + p, s.scale_dtype);
      const bool scale_negative = std::signbit(scale);
      const uint8_t* gc = codes + uint64_t(r * P + p) * uint64_t(B);
      for (int64_t k = 0; k < L.group_len(p); ++k) {
        const int q = int(spec::get_code(gc, 1, k, s.bits)) - off;
        if ((q < 0) == scale_negative) continue;  // the product's zero is +0
        uint8_t* e = out + uint64_t(r * L.axis_len + p * G + k) * uint64_t(ob);
        if (ob == 4) {
          uint32_t v;
          std::memcpy(&v, e, 4);
          if ((v & 0x7fffffffu) == 0) v |= 0x80000000u;
          std::memcpy(e, &v, 4);
        } else {
          uint16_t v;
          std::memcpy(&v, e, 2);
          if ((v & 0x7fffu) == 0) v |= 0x8000u;
          std::memcpy(e, &v, 2);
        }
      }
    }
}

}  // namespace

DequantizeSummary dequantize_hf_folder(const std::string& folder, const std::string& out_path,
                                       const DequantizeOptions& opt) {
  detail::check_dequantize_options(opt, folder, out_path, "model folder");
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const DeviceSelection device = resolve_device(opt.device);
  const bool use_cuda = device.kind == DeviceKind::Cuda;

  const std::unique_ptr<HfQuantizedModel> m = HfQuantizedModel::open(folder);
  for (const HfQuantTensor& q : m->quantized()) require_decodable(q, m->config_file());
  for (const CheckpointTensor* t : m->kept())
    if (file_exists(out_path) && same_file(t->file->path(), out_path))
      throw Error(ErrorCode::InvalidArgument, out_path, "",
                  "the output would overwrite an input shard");

  const std::optional<DType> kept_dtype = detail::kept_output_dtype(opt);
  std::vector<TensorToWrite> declared;
  for (const HfEntry& e : m->entries()) {
    TensorToWrite w;
    if (e.quantized) {
      const HfQuantTensor& q = m->quantized()[e.index];
      w.name = q.name;
      w.shape = q.shape;
      w.dtype = opt.dtype ? *opt.dtype : q.scheme.scale_dtype;
      w.nbytes = uint64_t(q.layout.num_elements()) * uint64_t(dtype_bytes(w.dtype));
    } else {
      const CheckpointTensor& t = *m->kept()[e.index];
      w.name = t.name();
      w.shape = t.info->shape;
      w.dtype = kept_dtype && is_quantizable(t.info->dtype) ? *kept_dtype : t.info->dtype;
      w.nbytes = w.dtype == t.info->dtype ? t.info->nbytes()
                                          : t.info->num_elements() * uint64_t(dtype_bytes(w.dtype));
    }
    declared.push_back(std::move(w));
  }
  std::map<std::string, std::string> meta;
  for (auto it = m->checkpoint().metadata().begin(); it != m->checkpoint().metadata().end(); ++it)
    if (it.key() != "total_size")
      meta[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  meta["qpack.source_format"] = m->format_name();
  // A folder's config.json: the source's, less quantization_config.
  nlohmann::json config = opt.folder
                              ? detail::dequantized_config(m->checkpoint().config(), opt.dtype)
                              : nlohmann::json();
  uint64_t total = 0;
  for (const TensorToWrite& w : declared) total += w.nbytes;
  detail::DequantizeOutput writer(out_path, declared, meta, std::move(config), opt);

  DequantizeSummary sum;
  sum.source_format = m->format_name();
  if (use_cuda) {
    cuda::DeviceInfo info;
    sum.device =
        cuda::query_device(device.index, &info).ok() ? cuda::describe(info) : device_name(device);
  } else {
    sum.device = "cpu (" + count_of(uint64_t(threads), "thread") + ")";
  }
  std::vector<uint8_t> codes, scales, zeros, converted;
  std::vector<float> values;
  uint64_t done = 0;
  const size_t count = m->entries().size();
  for (size_t i = 0; i < count; ++i) {
    const HfEntry& e = m->entries()[i];
    if (opt.progress) opt.progress(i, count, done, total, declared[i].name);
    writer.begin_tensor(i);
    const DType out_dtype = declared[i].dtype;
    if (!e.quantized) {
      const CheckpointTensor& t = *m->kept()[e.index];
      if (out_dtype != t.info->dtype) {
        ++sum.kept_converted;
      } else if (opt.dtype && is_quantizable(t.info->dtype) && t.info->dtype != *opt.dtype) {
        ++sum.kept_other_dtype;
      }
      if (out_dtype == t.info->dtype)
        writer.append_bytes(t.data(), t.info->nbytes());
      else
        writer.append_kept(t.data(), t.info->dtype, int64_t(t.info->num_elements()));
      t.file->release(*t.info);
    } else {
      const HfQuantTensor& q = m->quantized()[e.index];
      const GroupLayout& L = q.layout;
      const int sb = scale_bytes(q.scheme.scale_dtype);
      const int64_t in = std::max<int64_t>(q.shape[1], 1);
      const int64_t rows_per_slice = std::max<int64_t>(1, int64_t(opt.slice_bytes / 4) / in);
      for (int64_t r0 = 0; r0 < L.outer; r0 += rows_per_slice) {
        const int64_t rows = std::min(rows_per_slice, L.outer - r0);
        GroupLayout sub = L;
        sub.outer = rows;
        codes.resize(size_t(sub.codes_bytes()));
        scales.resize(size_t(sub.num_groups()) * size_t(sb));
        zeros.resize(q.scheme.symmetric ? 0 : scales.size());
        m->unpack_rows(q, r0, rows, codes.data(), scales.data(),
                       q.scheme.symmetric ? nullptr : zeros.data());
        const uint8_t* z = q.scheme.symmetric ? nullptr : zeros.data();
        const int64_t n = sub.num_elements();
        converted.resize(size_t(n) * size_t(dtype_bytes(out_dtype)));
        if (use_cuda) {
          cuda::dequantize_on_device(device.index, codes.data(), scales.data(), z, sub, q.scheme,
                                     converted.data(), out_dtype);
        } else {
          values.resize(size_t(n));
          dequantize_cpu(codes.data(), scales.data(), z, sub, q.scheme, values.data(), threads);
          store_floats(values.data(), n, out_dtype, converted.data(), threads);
        }
        if (q.scheme.symmetric)
          product_zero_signs(codes.data(), scales.data(), sub, q.scheme, converted.data(),
                             out_dtype);
        writer.append_bytes(converted.data(), converted.size());
      }
      m->release(q);
      ++sum.quantized;
    }
    done += declared[i].nbytes;
    ++sum.tensors;
  }
  writer.commit();
  writer.describe(&sum);
  if (opt.progress) opt.progress(count, count, done, total, "");
  sum.output_bytes = done;
  return sum;
}

}  // namespace qpack
