// llama.cpp importance matrices ("imatrix" files), read strictly: the legacy
// binary `imatrix.dat` and the GGUF imatrix (tensors NAME.in_sum2 and
// NAME.counts, metadata imatrix.*). docs/imatrix.md is the byte layout, the
// validation rules and the name mapping; this file holds no model data.
//
// What qpack takes from an entry is one weight per input channel of a
// weight matrix: the mean of the squared activations that reached that
// column, w_j = in_sum2_j / count (GGUF) or value_j / ncall (legacy, whose
// values are stored pre-multiplied by ncall).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace qpack {

class GgufFile;

enum class ImatrixFormat { Legacy, Gguf };
const char* imatrix_format_name(ImatrixFormat f);  // "dat" or "gguf"

struct ImatrixEntry {
  std::string name;      // as in the file: the GGUF tensor name ("blk.0.attn_q.weight")
  int64_t columns = 0;   // input channels of one matrix (ggml's ne[0] of the weight)
  int64_t matrices = 1;  // 1, or the experts of a merged MoE weight
  // Per matrix: the number of activation rows the sums are over (GGUF
  // counts), or ncall (legacy, the same for every matrix). A matrix whose
  // count is 0 had no data: its weights are 1 (uniform), as llama-quantize
  // treats it.
  std::vector<int64_t> counts;
  // Mean squared activation per channel, matrices * columns values (matrix
  // m's channel j at m * columns + j), computed in float64 from the file's
  // float32 values; finite and >= 0.
  std::vector<double> weights;
  // The stored float32 values as read (GGUF in_sum2, legacy value_j), for
  // tests and for tools that want the raw sums.
  std::vector<float> stored;
};

struct ImportanceMatrix {
  std::string path;
  ImatrixFormat format = ImatrixFormat::Legacy;
  std::vector<ImatrixEntry> entries;  // in file order
  // Optional metadata: legacy trailer (chunk count, one dataset name) or
  // GGUF imatrix.chunk_count / imatrix.chunk_size / imatrix.datasets. -1 when
  // the file does not say.
  int64_t chunk_count = -1;
  int64_t chunk_size = -1;
  std::vector<std::string> datasets;

  // The entry of this exact name, or nullptr.
  const ImatrixEntry* find(const std::string& name) const;
  // The entry for a checkpoint tensor: the exact name first, else the GGUF
  // name of an HF Llama-family name (llama_gguf_tensor_name in
  // qpack/format/gguf_llama.hpp: model.layers.0.self_attn.q_proj.weight ->
  // blk.0.attn_q.weight). nullptr when neither is there.
  const ImatrixEntry* find_for_tensor(const std::string& checkpoint_name) const;

 private:
  std::unordered_map<std::string, size_t> by_name_;
  friend ImportanceMatrix parse_imatrix_dat(const uint8_t*, uint64_t, const std::string&);
  friend ImportanceMatrix imatrix_from_gguf(const GgufFile&);
  void index();
};

// Reads either format (a GGUF by its magic, anything else as legacy).
// Throws Error naming `path`, the entry (Error::tensor) and the reason:
// Io (unreadable), Truncated (a count, name or value array runs past the
// end), BadHeader (an entry count, name length or value count that is
// negative, zero or larger than the bytes left could hold; bytes after the
// trailer; a GGUF that is no imatrix), DuplicateName, NonFinite (a NaN or
// infinite value or count), RangeOverflow (a negative value or count, a
// count that is not an integer), ShapeMismatch (GGUF: in_sum2 and counts
// that do not pair up), UnsupportedDtype (GGUF: not F32), BadMetadata
// (GGUF: an imatrix.* key of the wrong type). GGUF container faults keep the
// GGUF reader's codes (Gguf*).
ImportanceMatrix read_imatrix(const std::string& path);
// The legacy format held in memory (`name` for messages).
ImportanceMatrix parse_imatrix_dat(const uint8_t* data, uint64_t size, const std::string& name);
// A GGUF file already opened and validated as GGUF.
ImportanceMatrix imatrix_from_gguf(const GgufFile& file);

}  // namespace qpack
