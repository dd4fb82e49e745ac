#include "dequantize_output.hpp"

#include <omp.h>

#include <cstring>

#include "qpack/format/error.hpp"
#include "qpack/format/io.hpp"

namespace qpack::detail {

namespace {

int dtype_bytes(DType d) { return dtype_bits(d) / 8; }

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

}  // namespace

void check_dequantize_options(const DequantizeOptions& opt, const std::string& in_path,
                              const std::string& out_path, const char* input_kind) {
  if (opt.dtype && !is_quantizable(*opt.dtype))
    throw Error(
        ErrorCode::InvalidArgument, "", "",
        std::string("output dtype must be f16, bf16 or f32 (got ") + dtype_name(*opt.dtype) + ")");
  if (opt.kept_dtype && !is_quantizable(*opt.kept_dtype))
    throw Error(ErrorCode::InvalidArgument, "", "",
                std::string("kept tensors' output dtype must be f16, bf16 or f32 (got ") +
                    dtype_name(*opt.kept_dtype) + ")");
  if (file_exists(out_path) && same_file(in_path, out_path))
    throw Error(ErrorCode::InvalidArgument, out_path, "",
                std::string("the output would overwrite the input ") + input_kind);
  if (opt.folder && is_directory(out_path)) {
    // --force would replace the folder, and the input with it.
    const size_t slash = in_path.find_last_of('/');
    const std::string in_dir = slash == std::string::npos ? "." : in_path.substr(0, slash + 1);
    if (same_file(in_dir, out_path))
      throw Error(ErrorCode::InvalidArgument, out_path, "",
                  std::string("the output folder holds the input ") + input_kind);
  }
  if (!opt.folder && !opt.copy_files_from.empty())
    throw Error(ErrorCode::InvalidArgument, out_path, "",
                "copying files applies to a model folder output only");
  if (opt.folder && opt.max_shard_bytes == 0)
    throw Error(ErrorCode::InvalidArgument, out_path, "", "the largest shard size must be > 0");
}

std::optional<DType> kept_output_dtype(const DequantizeOptions& opt) {
  if (opt.kept_dtype) return opt.kept_dtype;
  if (opt.folder) return opt.dtype;
  return std::nullopt;
}

nlohmann::json dequantized_config(nlohmann::json config, std::optional<DType> dtype) {
  if (!config.is_object()) return nullptr;
  config.erase("quantization_config");
  if (dtype) {
    // transformers 4 reads torch_dtype, 5 writes dtype and reads both: the
    // keys the source has are set, torch_dtype when it has neither.
    bool any = false;
    for (const char* key : {"torch_dtype", "dtype"})
      if (config.contains(key)) {
        config[key] = torch_dtype_name(*dtype);
        any = true;
      }
    if (!any) config["torch_dtype"] = torch_dtype_name(*dtype);
  }
  return config;
}

DequantizeOutput::DequantizeOutput(const std::string& out_path, std::vector<TensorToWrite> declared,
                                   const std::map<std::string, std::string>& metadata,
                                   nlohmann::json config, const DequantizeOptions& opt)
    : declared_(std::move(declared)),
      threads_(opt.threads > 0 ? opt.threads : omp_get_max_threads()) {
  if (opt.folder) {
    std::vector<FolderTensor> tensors;
    tensors.reserve(declared_.size());
    for (const TensorToWrite& t : declared_)
      tensors.push_back({t.name, t.dtype, t.shape, t.nbytes});
    ModelFolderOptions fo;
    fo.max_shard_bytes = opt.max_shard_bytes;
    fo.overwrite = opt.overwrite;
    fo.config = std::move(config);
    fo.metadata = metadata;
    fo.copy_files_from = opt.copy_files_from;
    fo.exclude_files = quantization_side_files();  // the weights are no longer quantized
    config_written_ = !fo.config.is_null();
    // The folder writer checks the free space of everything it writes.
    folder_ = std::make_unique<ModelFolderWriter>(out_path, std::move(tensors), std::move(fo));
  } else {
    file_ = std::make_unique<SafetensorsStreamWriter>(out_path, declared_, metadata, opt.overwrite);
    uint64_t total = 0;
    for (const TensorToWrite& t : declared_) total += t.nbytes;
    check_free_space(out_path, total);  // the tensor data, before any is decoded
  }
}

DequantizeOutput::~DequantizeOutput() = default;

void DequantizeOutput::begin_tensor(size_t i) {
  const bool in_order = current_ == SIZE_MAX ? i == 0 : i == current_ + 1;
  if (!in_order || i >= declared_.size() ||
      (current_ != SIZE_MAX && offset_ != declared_[current_].nbytes))
    throw Error(ErrorCode::Internal, "", i < declared_.size() ? declared_[i].name : "",
                "tensors not written in declared order, or the previous one incomplete");
  current_ = i;
  offset_ = 0;
}

void DequantizeOutput::append(const void* data, uint64_t nbytes) {
  if (current_ == SIZE_MAX || nbytes > declared_[current_].nbytes - offset_)
    throw Error(ErrorCode::Internal, "", current_ == SIZE_MAX ? "" : declared_[current_].name,
                "more bytes appended than the tensor declares");
  if (folder_)
    folder_->write(current_, offset_, data, nbytes);
  else
    file_->append(data, nbytes);
  offset_ += nbytes;
}

void DequantizeOutput::append_bytes(const void* data, uint64_t nbytes) { append(data, nbytes); }

void DequantizeOutput::append_floats(const float* in, int64_t n) {
  const DType to = declared_.at(current_).dtype;
  if (to == DType::F32) {
    append(in, uint64_t(n) * 4);
    return;
  }
  converted_.resize(size_t(n) * 2);
  uint8_t* out = converted_.data();
#pragma omp parallel for schedule(static) num_threads(threads_)
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = to == DType::F16 ? f32_to_f16_rne(in[i]) : f32_to_bf16_rne(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
  append(out, converted_.size());
}

void DequantizeOutput::append_kept(const uint8_t* in, DType from, int64_t n) {
  const DType to = declared_.at(current_).dtype;
  if (to == from) {
    append(in, uint64_t(n) * uint64_t(dtype_bytes(from)));
    return;
  }
  if (!is_quantizable(from) || !is_quantizable(to))
    throw Error(ErrorCode::Internal, "", declared_[current_].name,
                "only F16/BF16/F32 tensors are converted");
  converted_.resize(size_t(n) * size_t(dtype_bytes(to)));
  uint8_t* out = converted_.data();
#pragma omp parallel for schedule(static) num_threads(threads_)
  for (int64_t i = 0; i < n; ++i) {
    const float v = load_as_f32(in, from, uint64_t(i));
    if (to == DType::F32) {
      std::memcpy(out + 4 * i, &v, 4);
    } else {
      const uint16_t h = to == DType::F16 ? f32_to_f16_rne(v) : f32_to_bf16_rne(v);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  append(out, converted_.size());
}

void DequantizeOutput::commit() {
  if (!declared_.empty() &&
      (current_ != declared_.size() - 1 || offset_ != declared_.back().nbytes))
    throw Error(ErrorCode::Internal, "", "", "commit before every tensor was written");
  if (folder_)
    folder_->commit();
  else
    file_->commit();
}

void DequantizeOutput::describe(DequantizeSummary* s) const {
  if (!folder_) return;
  s->shards = folder_->shard_names();
  s->config_written = config_written_;
  s->files_copied = folder_->copied();
  s->files_skipped = folder_->skipped();
}

}  // namespace qpack::detail
