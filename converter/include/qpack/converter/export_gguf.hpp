// qpack convert SRC OUT.gguf: a GGUF for llama.cpp, written the way
// llama-quantize writes it (docs/gguf.md "Writing GGUF").
//
// Sources: a GGUF (its F32/F16/BF16 tensors are converted or quantized,
// every other tensor is carried byte for byte, all metadata is kept with
// general.file_type and general.quantization_version set), or a Hugging
// Face safetensors checkpoint of a Llama-family model (config.json to keys,
// names mapped, Q/K rows permuted, norms F32, tokenizer keys from a vocab
// GGUF or "none"). Which tensor gets which type follows llama.cpp's
// src/llama-quant.cpp for the Llama architecture: the --type names are
// llama-quantize's file types (Q4_K_M, Q4_1, ...), --pure gives every
// quantizable tensor the file type's default type, --tensor-type overrides.
//
// Streaming (one tensor, or a slice of its rows, in memory at a time; the
// header is written first from sizes planned up front), atomic (temporary
// file + rename), and the same bytes at any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qpack/format/gguf.hpp"
#include "qpack/kernels/device.hpp"
#include "qpack/spec/scheme.hpp"

namespace qpack {

// A llama-quantize file type (llama.h's llama_ftype).
struct GgufFileType {
  const char* name;       // "Q4_K_M"
  uint32_t llama_ftype;   // general.file_type: 15
  GgmlType default_type;  // what --pure gives every quantizable tensor: Q4_K
};
// Every file type qpack writes, in llama-quantize's list order.
const std::vector<GgufFileType>& gguf_file_types();
// By name, any case; llama-quantize's aliases Q3_K, Q4_K, Q5_K name the _M
// mixes. Throws Error(InvalidArgument) listing the names for anything else.
const GgufFileType& find_gguf_file_type(const std::string& name);

// One --tensor-type PATTERN=TYPE: a tensor whose GGUF name the pattern finds
// (std::regex_search, ECMAScript, the pattern lower-cased, as
// llama-quantize matches it) gets TYPE. The first matching rule wins.
struct GgufTensorTypeRule {
  std::string pattern;
  GgmlType type = GgmlType::F16;
};
// "attn_v=q8_0" -> {"attn_v", Q8_0}; TYPE is any ggml type name, any case.
// Throws Error(InvalidArgument) for a malformed rule or an unknown type.
GgufTensorTypeRule parse_gguf_tensor_type_rule(const std::string& text);

// What the type rules read about the model (llama-quant.cpp's hparams).
struct GgufTypeModel {
  std::string architecture = "llama";
  int64_t n_layer = 0;
  int64_t n_head = 0, n_head_kv = 0;
  int64_t n_expert = 0;
};
// One tensor as the rules see it, in output order.
struct GgufTypeTensor {
  std::string name;         // GGUF name
  std::vector<int64_t> ne;  // GGUF order
  GgmlType type;  // its type in the source (for HF: F32 for 1-D tensors, as convert writes them)
};
struct GgufTypeChoice {
  GgmlType type = GgmlType::F32;
  bool quantizable = false;  // llama-quant.cpp's tensor_allows_quantization
  bool fallback = false;     // the row length forced a different type
  std::string reason;        // for the plan: which rule chose it
};
// llama_tensor_get_type over all tensors, in order (the rules count
// attn_v/ffn_down tensors as they go). Throws nothing: a type qpack cannot
// write is the caller's to refuse.
std::vector<GgufTypeChoice> choose_gguf_types(const GgufTypeModel& model,
                                              const std::vector<GgufTypeTensor>& tensors,
                                              const GgufFileType& file_type, bool pure,
                                              const std::vector<GgufTensorTypeRule>& rules);

// llama-quantize's tensor order: by layer number (blk.N.; others first),
// then by name.
bool gguf_tensor_order_less(const std::string& a, const std::string& b);

struct GgufExportProgress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // source bytes
  std::string current;
};

struct GgufExportOptions {
  std::string type = "Q4_K_M";  // a gguf_file_types() name
  bool pure = false;
  std::vector<GgufTensorTypeRule> tensor_types;
  // How Q4_1 and Q5_1 blocks are chosen (docs/quantization.md §G9): Rtn is
  // llama.cpp's bytes; Search and Refit keep a block of their own where its
  // error under ggml's decode is strictly lower. Every other type is
  // llama.cpp's whatever the method (the plan says so in a warning).
  QuantMethod method = QuantMethod::Rtn;
  // HF sources: copy the tokenizer.* keys of this GGUF (e.g. one written by
  // convert_hf_to_gguf.py --vocab-only); empty: tokenizer.ggml.model "none".
  std::string vocab_from;
  int threads = 0;  // <= 0: all cores
  // Where the ggml blocks are computed. Cpu: quantize_ggml_blocks_cpu. Cuda
  // (cuda:N): the kernels of qpack/kernels/ggml_blocks.hpp on that device,
  // byte-identical; Error(NoDevice) when unusable. Auto: CUDA device 0 when
  // usable, else the CPU. Float conversions and copies stay on the CPU.
  DeviceSelection device{DeviceKind::Cpu, 0};
  bool overwrite = false;
  uint64_t slice_bytes = 64ull << 20;  // source bytes of one slice of rows
  std::function<void(const GgufExportProgress&)> progress;
};

enum class GgufTensorAction {
  Copy,      // bytes as they are (same type, no permutation)
  Convert,   // to F32/F16/BF16 (or permuted rows of the same type)
  Quantize,  // to a ggml block type
};

struct GgufPlanEntry {
  std::string name;         // GGUF name
  std::string source_name;  // name in the source (HF or GGUF)
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the row
  std::string source_type;  // "F16", "BF16", "F32", or a ggml type name
  GgmlType type = GgmlType::F32;
  GgufTensorAction action = GgufTensorAction::Copy;
  int64_t permute_heads = 0;  // Q/K rows permuted with this many heads (HF sources)
  uint64_t bytes_in = 0, bytes_out = 0;
  std::string reason;
  // The blocks' method: the options' for a quantized Q4_1 / Q5_1 tensor,
  // Rtn (llama.cpp's bytes) for every other tensor.
  QuantMethod method = QuantMethod::Rtn;
  uint64_t num_elements() const;
  double bits_per_weight() const;  // bytes_out * 8 / elements
};

struct GgufExportPlan {
  std::string source_format;  // "gguf" or "safetensors"
  std::string file_type;      // "Q4_K_M"
  uint32_t llama_ftype = 0;
  bool pure = false;
  QuantMethod method = QuantMethod::Rtn;  // the options' --method
  std::vector<GgufPlanEntry> tensors;     // in output order
  std::vector<GgufKv> metadata;           // as written
  std::vector<std::string> warnings;
  size_t tensors_quantized = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor data
  uint64_t file_bytes = 0;               // the whole output file
  // {"format": "gguf", source_format, type, file_type, pure, method,
  //  tensors_quantized, bytes_in, bytes_out, file_bytes, warnings,
  //  metadata_keys, "tensors": [{name, source_name, ne, source_type, type,
  //  action, method, permute_heads, bytes_in, bytes_out, bits_per_weight,
  //  reason}]}
  nlohmann::json to_json() const;
};

struct GgufExportSummary {
  GgufExportPlan plan;
  double seconds = 0;
  std::string device;  // "cpu (N threads)"
  nlohmann::json to_json() const;
};

// The plan alone: reads headers and config.json only, writes nothing.
// Throws Error: BadMetadata (config.json, unknown architecture, vocab GGUF),
// ShapeMismatch / BadHeader (a tensor the model does not expect, missing),
// UnsupportedDtype, UnsupportedScheme (a type qpack cannot write, naming the
// tensor), InvalidArgument (options).
GgufExportPlan plan_gguf_export(const std::string& source, const GgufExportOptions& options);

// Plans, then writes `output` (nothing under that name unless complete).
GgufExportSummary export_gguf(const std::string& source, const std::string& output,
                              const GgufExportOptions& options);

}  // namespace qpack
