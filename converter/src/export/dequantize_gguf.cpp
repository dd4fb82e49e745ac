// `qpack dequantize X.gguf OUT.safetensors` (qpack/converter/export.hpp):
// every tensor of a GGUF file decoded by ggml's rules into one safetensors
// file or model folder. Streams slices of whole blocks (bounded memory)
// through the shared atomic output (dequantize_output.hpp), so nothing
// appears under the output name unless all of it was written.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "dequantize_output.hpp"
#include "qpack/converter/export.hpp"
#include "qpack/converter/ggml_blocks.hpp"
#include "qpack/format/error.hpp"
#include "qpack/format/gguf.hpp"
#include "qpack/format/io.hpp"
#include "qpack/format/safetensors.hpp"
#include "qpack/format/text.hpp"
#include "qpack/kernels/ggml_blocks.hpp"

namespace qpack {

namespace {

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

// The shortest decimal text that reads back as the same float (a GGUF
// float32 such as rope_freq_base), or double.
std::string float_text(double v, bool is_f32) {
  char buf[64];
  for (int p = is_f32 ? 6 : 15; p <= (is_f32 ? 9 : 17); ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (is_f32 ? std::strtof(buf, nullptr) == float(v) : std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// A scalar GGUF value as the string safetensors metadata holds.
std::string scalar_text(const GgufValue& v) {
  switch (v.type) {
    case GgufType::Uint8:
    case GgufType::Uint16:
    case GgufType::Uint32:
    case GgufType::Uint64:
      return std::to_string(v.u);
    case GgufType::Int8:
    case GgufType::Int16:
    case GgufType::Int32:
    case GgufType::Int64:
      return std::to_string(v.i);
    case GgufType::Float32:
      return float_text(v.f, true);
    case GgufType::Float64:
      return float_text(v.f, false);
    case GgufType::Bool:
      return v.b ? "true" : "false";
    case GgufType::String:
      return v.str;
    case GgufType::Array:
      break;
  }
  return {};
}

// Scalar keys as they are; arrays (the tokenizer's vocabulary, merges, ...)
// have no string form a reader would want, so they are named only.
std::map<std::string, std::string> gguf_metadata(const GgufFile& g) {
  std::map<std::string, std::string> m;
  nlohmann::json omitted = nlohmann::json::array();
  for (const GgufKv& kv : g.metadata()) {
    if (kv.value.type == GgufType::Array)
      omitted.push_back(kv.key);
    else
      m[kv.key] = scalar_text(kv.value);
  }
  m["qpack.source_format"] = "gguf";
  m["qpack.gguf_version"] = std::to_string(g.version());
  if (!omitted.empty())
    m["qpack.gguf_arrays_omitted"] =
        omitted.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return m;
}

std::string type_label(const GgufTensorInfo& t) {
  return t.name + " (" + ggml_type_name(t.type) + ")";
}

}  // namespace

DequantizeSummary dequantize_gguf_file(const std::string& gguf_path, const std::string& out_path,
                                       const DequantizeOptions& opt) {
  detail::check_dequantize_options(opt, gguf_path, out_path, "GGUF file");
  const DType block_dtype = opt.dtype ? *opt.dtype : DType::F32;
  const std::optional<DType> kept_dtype = detail::kept_output_dtype(opt);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const DeviceSelection device = resolve_device(opt.device);
  std::unique_ptr<cuda::GgmlBlocksDeviceDecoder> gpu;
  if (device.kind == DeviceKind::Cuda)
    gpu = std::make_unique<cuda::GgmlBlocksDeviceDecoder>(device.index);

  std::unique_ptr<GgufFile> g = GgufFile::open(gguf_path);
  DequantizeSummary sum;

  // Every tensor's output, decided (and every unsupported type refused)
  // before the output file exists.
  struct Plan {
    const GgufTensorInfo* t;
    bool blocks;  // decoded; else stored element by element
    DType from;   // plain tensors: their dtype
  };
  std::vector<Plan> plan;
  std::vector<TensorToWrite> declared;
  uint64_t total = 0;
  for (const GgufTensorInfo& t : g->tensors()) {
    const std::optional<DType> plain = ggml_plain_dtype(t.type);
    if (!plain && !ggml_blocks_supported(t.type)) {
      if (opt.skip_unsupported) {
        sum.skipped.push_back(type_label(t));
        continue;
      }
      throw Error(ErrorCode::UnsupportedDtype, gguf_path, t.name,
                  std::string("GGML type ") + ggml_type_name(t.type) +
                      " cannot be decoded by this build (--skip-unsupported leaves such tensors "
                      "out)");
    }
    TensorToWrite w;
    w.name = t.name;
    w.shape.assign(t.ne.rbegin(), t.ne.rend());
    const uint64_t n = t.num_elements();
    if (!plain)
      w.dtype = block_dtype;
    else if (kept_dtype && is_quantizable(*plain))
      w.dtype = *kept_dtype;
    else
      w.dtype = *plain;
    w.nbytes = n * uint64_t(dtype_bytes(w.dtype));
    total += w.nbytes;
    plan.push_back({&t, !plain, plain ? *plain : DType::F32});
    declared.push_back(std::move(w));
  }

  // A GGUF holds no config.json: a folder gets none (the CLI warns).
  detail::DequantizeOutput writer(out_path, declared, gguf_metadata(*g), nullptr, opt);
  if (gpu) {
    cuda::DeviceInfo info;
    sum.device =
        cuda::query_device(device.index, &info).ok() ? cuda::describe(info) : device_name(device);
  } else {
    sum.device = "cpu (" + count_of(uint64_t(threads), "thread") + ")";
  }

  std::vector<float> values;
  uint64_t done = 0;
  for (size_t pi = 0; pi < plan.size(); ++pi) {
    const GgufTensorInfo& t = *plan[pi].t;
    const TensorToWrite& w = declared[pi];
    if (opt.progress) opt.progress(pi, plan.size(), done, total, t.name);
    writer.begin_tensor(pi);
    const uint8_t* data = g->tensor_data(t);
    const int64_t n = int64_t(t.num_elements());
    if (!plan[pi].blocks) {
      writer.append_kept(data, plan[pi].from, n);
      if (w.dtype == plan[pi].from) {
        if (opt.dtype && is_quantizable(w.dtype) && w.dtype != *opt.dtype) ++sum.kept_other_dtype;
      } else {
        ++sum.kept_converted;
      }
    } else {
      // Slices of whole blocks, at most slice_bytes of floats each.
      const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
      const int64_t bs = info->block_size;
      const int64_t per_slice =
          std::max<int64_t>(1, int64_t(opt.slice_bytes / 4) / bs) * bs;  // elements
      const bool on_gpu = gpu && cuda::cuda_block_type_supported(uint32_t(t.type));
      if (gpu && !on_gpu) sum.decoded_on_cpu.push_back(type_label(t));
      for (int64_t e0 = 0; e0 < n; e0 += per_slice) {
        const int64_t m = std::min(per_slice, n - e0);
        const uint8_t* blocks = data + uint64_t(e0 / bs) * info->type_size;
        const uint64_t nbytes = uint64_t(m / bs) * info->type_size;
        values.resize(size_t(m));
        if (on_gpu)
          gpu->dequantize(uint32_t(t.type), blocks, nbytes, m, values.data(), t.name);
        else
          dequantize_ggml_blocks_cpu(t.type, blocks, m, values.data(), threads, t.name);
        writer.append_floats(values.data(), m);
      }
      ++sum.quantized;
    }
    g->release(t);
    done += w.nbytes;
    ++sum.tensors;
  }
  writer.commit();
  writer.describe(&sum);
  if (opt.progress) opt.progress(plan.size(), plan.size(), done, total, "");
  sum.output_bytes = done;
  return sum;
}

}  // namespace qpack
