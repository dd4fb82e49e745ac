// The Hugging Face Llama family (llama, mistral, qwen2) as GGUF holds it:
// config.json to the `<arch>.*` hyper-parameter keys, HF tensor names to
// GGUF ones and back, and the Q/K row permutation that turns HF's
// rotate-half RoPE layout into ggml's interleaved pairs. The rules are
// llama.cpp's convert_hf_to_gguf.py (LlamaModel, Qwen2Model, TextModel),
// restated in docs/gguf.md "Writing GGUF"; this file holds no tensor data.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qpack/format/gguf.hpp"

namespace qpack {

// What config.json says about a Llama-family model, checked.
struct LlamaConfig {
  std::string model_type;       // HF model_type: "llama", "mistral" or "qwen2"
  std::string architecture;     // GGUF general.architecture: "llama" (llama, mistral) or "qwen2"
  std::string hf_architecture;  // architectures[0] when present ("LlamaForCausalLM")
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;         // num_key_value_heads, else num_heads (HF's default)
  int64_t head_dim = 0;             // config's head_dim, else hidden_size / num_heads
  bool head_dim_in_config = false;  // then attention.key_length/value_length are written
  int64_t context_length = 0;       // max_position_embeddings
  double rms_norm_eps = 0;
  std::optional<double> rope_theta;  // absent: llama.cpp's default (10000)
  // rope_scaling / rope_parameters: "linear", "yarn", "longrope", "llama3",
  // or empty (none). llama3 writes no keys but a rope_freqs.weight tensor.
  std::string rope_scaling_type;
  std::optional<double> rope_scaling_factor;
  std::optional<int64_t> rope_original_context;  // original_max_position_embeddings
  std::optional<double> yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
  std::optional<double> llama3_low_freq_factor, llama3_high_freq_factor;
  bool tie_word_embeddings = false;  // HF's default is false
  // Q/K rows permuted on the way to GGUF: llama and mistral (LlamaModel's
  // undo_permute), not qwen2 (ggml runs qwen2 with NEOX-style RoPE).
  bool permute_qk = true;
  // heads · head_dim: the rows of q_proj; kv_heads · head_dim of k_proj and v_proj.
  int64_t q_rows() const { return num_heads * head_dim; }
  int64_t kv_rows() const { return num_kv_heads * head_dim; }
};

// Reads config.json. Throws Error(BadMetadata, path, "", reason) naming the
// key for a family that is not llama/mistral/qwen2 (named in the message),
// a required key that is missing (hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, vocab_size, rms_norm_eps,
// max_position_embeddings), a value of the wrong JSON type or out of range
// (non-positive, over 2^32 - 1), heads that do not divide hidden_size (when
// head_dim is not given) or kv heads that do not divide heads, an odd
// head_dim where the rows are permuted, and a rope_scaling it cannot write.
LlamaConfig parse_llama_config(const nlohmann::json& config, const std::string& path);
LlamaConfig read_llama_config(const std::string& config_json_path);

// The hyper-parameter keys convert_hf_to_gguf.py writes for this config, in
// its order: general.architecture, general.name (when `name` is not empty),
// <arch>.block_count, context_length, embedding_length, feed_forward_length,
// attention.head_count, attention.head_count_kv, rope.scaling.* (linear,
// yarn, longrope), rope.freq_base (when in config), attention.
// layer_norm_rms_epsilon, attention.key_length/value_length (when head_dim
// is in config), vocab_size, rope.dimension_count (llama only). Integers are
// u32, floats f32, as gguf-py's add_* helpers write them. No file type, no
// tokenizer: the exporter adds those.
std::vector<GgufKv> llama_gguf_metadata(const LlamaConfig& config, const std::string& name);

// HF tensor name -> GGUF tensor name.
enum class LlamaTensorMapping {
  Mapped,   // `gguf_name` holds the GGUF name
  Dropped,  // a tensor convert_hf_to_gguf.py leaves out (rotary_emb.inv_freq)
  Unknown,  // not a Llama-family tensor: an exporter refuses it
};
struct LlamaTensorName {
  LlamaTensorMapping mapping = LlamaTensorMapping::Unknown;
  std::string gguf_name;
  int64_t layer = -1;  // N of model.layers.N / blk.N, -1 for the others
};
// model.embed_tokens.weight -> token_embd.weight, model.norm.weight ->
// output_norm.weight, lm_head.weight -> output.weight, and for each layer N:
// input_layernorm -> blk.N.attn_norm, post_attention_layernorm ->
// blk.N.ffn_norm, self_attn.{q,k,v}_proj -> blk.N.attn_{q,k,v} (.weight and
// .bias), self_attn.o_proj -> blk.N.attn_output, mlp.{gate,up,down}_proj ->
// blk.N.ffn_{gate,up,down}. N is a decimal number without leading zeros.
LlamaTensorName llama_gguf_tensor_name(const std::string& hf_name);
// The inverse: the HF name of a GGUF tensor name, nullopt for a name that
// has none (rope_freqs.weight, anything unknown).
std::optional<std::string> llama_hf_tensor_name(const std::string& gguf_name);

// Heads of the Q/K permutation for a GGUF tensor of this model: num_heads
// for blk.N.attn_q.weight/.bias, num_kv_heads for blk.N.attn_k.weight/.bias,
// 0 (not permuted) for every other tensor and for qwen2.
int64_t llama_permute_heads(const LlamaConfig& config, const std::string& gguf_name);

// llama.cpp's permute: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
// .reshape(rows, cols). It moves whole rows: GGUF row g is HF row
// llama_qk_hf_row(g), and HF row h lands on GGUF row llama_qk_gguf_row(h).
// Within head k (rows k·2H .. k·2H + 2H - 1, H = rows / n_head / 2), GGUF row
// k·2H + 2i + j is HF row k·2H + j·H + i (i < H, j < 2).
// Throws Error(InvalidArgument) unless rows is a positive multiple of 2·n_head.
int64_t llama_qk_hf_row(int64_t gguf_row, int64_t rows, int64_t n_head);
int64_t llama_qk_gguf_row(int64_t hf_row, int64_t rows, int64_t n_head);
// The whole map: element g = llama_qk_hf_row(g), and its inverse
// (element h = llama_qk_gguf_row(h)).
std::vector<int64_t> llama_qk_hf_rows(int64_t rows, int64_t n_head);
std::vector<int64_t> llama_qk_gguf_rows(int64_t rows, int64_t n_head);

// rope_freqs.weight of a rope_scaling type "llama3" model (Llama 3.1+): one
// factor per rotary pair, as convert_hf_to_gguf.py's generate_extra_tensors
// computes them (float64 here; the script's float32 steps can differ in the
// last bit). Empty unless config.rope_scaling_type == "llama3".
std::vector<float> llama3_rope_factors(const LlamaConfig& config);

}  // namespace qpack
